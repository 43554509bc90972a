"""mypy sees through @tracks: the original signatures, sync and async, are kept."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
mypy_api = pytest.importorskip("mypy.api")


def run_mypy(source: str, tmp_path: Path) -> tuple[str, int]:
    target = tmp_path / "snippet.py"
    target.write_text(source)
    out, err, code = mypy_api.run(
        [
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--config-file",
            str(ROOT / "pyproject.toml"),
            str(ROOT / "tests" / "typing" / "check_signatures.py"),
            str(target),
        ]
    )
    return out + err, code


def test_signatures_survive_and_wrong_calls_are_caught(tmp_path: Path) -> None:
    """assert_type passes for every kind of function; a wrong call is a type error."""
    source = (
        "from tests.typing.check_signatures import create, acreate\n"
        "create(1, 't')\n"
        "pending = acreate('p', 'extra')\n"
    )
    output, code = run_mypy(source, tmp_path)
    assert code == 1, output
    errors = [line for line in output.splitlines() if ": error:" in line]
    assert all("snippet.py" in line for line in errors), output
    assert any('Argument 1 to "create" has incompatible type "int"' in e for e in errors), output
    assert any('Too many arguments for "acreate"' in e for e in errors), output

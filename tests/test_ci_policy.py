"""CI policy: with CI=true a skipped test fails the run (tests needing services must run)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("ci", "expected"), [("true", 1), ("", 0)])
def test_skips_fail_only_in_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str, expected: int
) -> None:
    """The suite's sessionfinish hook turns skips into a failure when CI=true."""
    pytester.makeconftest("from tests.conftest import pytest_sessionfinish  # noqa: F401\n")
    pytester.makepyfile(
        """
        import pytest
        def test_runs():
            pass
        def test_needs_redis():
            pytest.skip("Redis is not running on 127.0.0.1:6379")
        """
    )
    env_path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", env_path)
    monkeypatch.setenv("CI", ci)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == expected
    if expected:
        result.stdout.fnmatch_lines(["*skips fail in CI*", "*Redis is not running*"])

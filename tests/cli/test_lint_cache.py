"""The lint cache: the same output with and without it, whatever happened to the files or to it.

Every test runs the real command; the cache lives in the test's own folder (``lint_cache_dir``,
set as ``INSTRUMENTOR_CACHE_DIR`` by tests/cli/conftest.py). A few tests read or rewrite a
cache file to show that the cache is used at all, or to damage it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from instrumentor.cli._files import PARALLEL_FROM
from instrumentor.cli._lint_cache import cache_dir
from tests.cli.test_lint import CLEAN_PROJECT, ENTRY_POINTS, SHOP, json_rows, lint, write_project

Run = tuple[int, str, str]


def outcome(result: subprocess.CompletedProcess[str]) -> Run:
    return result.returncode, result.stdout, result.stderr


def same_with_and_without_cache(*args: str, cwd: Path) -> Run:
    """Lint with the cache and with ``--no-cache``; both must print and exit the same."""
    cached = outcome(lint(*args, cwd=cwd))
    assert cached == outcome(lint("--no-cache", *args, cwd=cwd))
    return cached


def cache_files(folder: Path) -> list[Path]:
    return sorted((folder / "lint").glob("*.cache"))


def rewrite(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Change what a cache file holds, and sign it again as lint does (a valid-looking file)."""
    header, _, body = path.read_bytes().partition(b"\n")
    content = json.loads(body)
    change(content)
    body = json.dumps(content).encode()
    magic, version, _ = header.split(b" ")
    digest = hashlib.sha256(body).hexdigest().encode()
    path.write_bytes(b" ".join([magic, version, digest]) + b"\n" + body)


def entry_of(content: dict[str, Any], name: str) -> list[Any]:
    """The entry of the file whose path ends with ``name`` (to change in place)."""
    (entry,) = [e for path, e in content["entries"].items() if path.endswith(f"/{name}")]
    assert isinstance(entry, list)
    return entry


def test_the_output_is_the_same_with_and_without_the_cache(lint_cache_dir: Path) -> None:
    """The shop project, every format and entry point: cold cache, then warm, then --no-cache;
    the rules across files (unused events, unused suppressions) run every time."""
    for args in (["app"], ["--format", "json"], ["--format", "github", "."]):
        for entry in ENTRY_POINTS:
            reference = outcome(lint("--no-cache", *args, entry=entry))
            assert reference[0] == 1
            assert outcome(lint(*args, entry=entry)) == reference
            assert outcome(lint(*args, entry=entry)) == reference
    assert len(cache_files(lint_cache_dir)) == 1
    for args in (["--unused", "error"], ["--unused", "off"], ["app/reports.py"]):
        same_with_and_without_cache("--format", "json", *args, cwd=SHOP)


def test_an_unchanged_file_is_not_scanned_again(lint_cache_dir: Path) -> None:
    """What the cache holds for an unchanged file is what lint reports (it is not parsed)."""
    lint("--format", "json")
    (path,) = cache_files(lint_cache_dir)

    def forge(content: dict[str, Any]) -> None:
        entry = entry_of(content, "reports.py")
        entry[5] = [[row[0], f"forged: {row[1]}", *row[2:]] for row in entry[5]]

    rewrite(path, forge)
    messages = [f["message"] for f in json.loads(lint("--format", "json").stdout)]
    assert sum(m.startswith("forged: ") for m in messages) == 4
    fresh = [f["message"] for f in json.loads(lint("--no-cache", "--format", "json").stdout)]
    assert not any(m.startswith("forged: ") for m in fresh)


def test_a_changed_file_is_scanned_again(tmp_path: Path) -> None:
    """A file's new bytes are scanned, even with its size and time unchanged; old bytes again."""
    write_project(tmp_path, CLEAN_PROJECT)
    assert same_with_and_without_cache(cwd=tmp_path) == (0, "no problems found\n", "")
    views = tmp_path / "app/views.py"
    original = views.read_text(encoding="utf-8")
    stat = views.stat()
    views.write_text(original.replace("Events.REPORT_SHARED", "Events.REPORT_SHAREX"), "utf-8")
    os.utime(views, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert views.stat().st_size == stat.st_size
    code, stdout, _ = same_with_and_without_cache("--format", "json", cwd=tmp_path)
    assert code == 1
    assert json_rows(stdout) == [
        ("unused-event", "app/events.py", 6, "warning"),
        ("unknown-event", "app/views.py", 8, "error"),
    ]
    views.write_text(original, encoding="utf-8")
    assert same_with_and_without_cache(cwd=tmp_path) == (0, "no problems found\n", "")


def test_a_changed_plan_or_configuration_invalidates_the_cache(tmp_path: Path) -> None:
    """Unchanged code, a new event in the plan: the unknown event is known now. The same for
    the analytics package (option or pyproject.toml) and for the working directory."""
    views = """
        import posthog

        from app.events import Events

        Events.REPORT_DELETED.track()
        """
    write_project(tmp_path, {**CLEAN_PROJECT, "app/views.py": views})
    first = same_with_and_without_cache("--format", "json", cwd=tmp_path)
    assert ("unknown-event", "app/views.py", 6, "error") in json_rows(first[1])
    events = tmp_path / "app/events.py"
    events.write_text(
        events.read_text(encoding="utf-8")
        + '    REPORT_DELETED = event("Report_Deleted", category="core_value")\n',
        encoding="utf-8",
    )
    second = same_with_and_without_cache("--format", "json", cwd=tmp_path)
    assert ("unknown-event", "app/views.py", 6, "error") not in json_rows(second[1])
    assert ("direct-sdk-import", "app/views.py", 2, "error") in json_rows(second[1])
    allowed = same_with_and_without_cache(
        "--format", "json", "--analytics-package", "app", cwd=tmp_path
    )
    assert [r for r in json_rows(allowed[1]) if r[0] == "direct-sdk-import"] == []
    assert same_with_and_without_cache("--format", "json", cwd=tmp_path) == second
    inside = same_with_and_without_cache("--format", "json", ".", cwd=tmp_path / "app")
    assert ("direct-sdk-import", "views.py", 2, "error") in json_rows(inside[1])


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _edited_by_hand(path: Path) -> None:  # a line number changed, the signature left alone
    data = path.read_bytes()
    assert b",15," in data
    path.write_bytes(data.replace(b",15,", b",16,", 1))


def _a_folder(path: Path) -> None:
    path.unlink()
    (path / "inside").mkdir(parents=True)


def _malformed_entries(path: Path) -> None:  # signed as lint signs, but not what lint writes
    def change(content: dict[str, Any]) -> None:
        entries = content["entries"]
        for n, key in enumerate(sorted(entries)):
            entry = entries[key]
            broken: list[Any] = [
                [1, 2, 3],
                [*entry[:5], [["rule", "message", "15", 1, "hint", "error"]], *entry[6:]],
                [*entry[:5], [["inline-event-name", "m", 1, 1, "h", "fatal"]], *entry[6:]],
                [*entry[:6], [["a", "b", "c"]], *entry[7:]],
                [*entry[:7], "Report_Created", *entry[8:]],
                [*entry[:9], [[1, 1, "not a list", ""]]],
                [*entry[:5], None, *entry[6:]],
                "an entry",
            ]
            entries[key] = broken[n % len(broken)]

    rewrite(path, change)


def _another_format(path: Path) -> None:
    header, _, body = path.read_bytes().partition(b"\n")
    path.write_bytes(header.replace(b" 1 ", b" 999 ") + b"\n" + body)


@pytest.mark.parametrize(
    "damage",
    [_garbage, _truncated, _empty, _edited_by_hand, _a_folder, _malformed_entries, _another_format],
)
def test_a_damaged_cache_is_ignored(lint_cache_dir: Path, damage: Callable[[Path], None]) -> None:
    """A cache file that is corrupt, truncated, edited, of another format or not a file: lint
    reports what a fresh scan finds, says nothing of it, and writes a good cache again."""
    reference = outcome(lint("--no-cache", "--format", "json"))
    assert outcome(lint("--format", "json")) == reference
    (path,) = cache_files(lint_cache_dir)
    whole = path.read_bytes()
    damage(path)
    assert outcome(lint("--format", "json")) == reference
    assert outcome(lint("--format", "json")) == reference
    if path.is_file():  # written again, whole and signed, with the same entries
        header, _, body = path.read_bytes().partition(b"\n")
        assert header.split(b" ")[2] == hashlib.sha256(body).hexdigest().encode()
        undated = [
            {p: e[:4] + e[5:] for p, e in json.loads(b)["entries"].items()}
            for b in (body, whole.partition(b"\n")[2])
        ]
        assert undated[0] == undated[1]  # the day each entry was last used aside


def test_no_cache_reads_and_writes_nothing(lint_cache_dir: Path) -> None:
    """``--no-cache`` leaves the folder as it was, and does not read a cache that is there."""
    reference = outcome(lint("--no-cache", "--format", "json"))
    assert list(lint_cache_dir.iterdir()) == []
    lint("--format", "json")
    (path,) = cache_files(lint_cache_dir)

    def forge(content: dict[str, Any]) -> None:
        for entry in content["entries"].values():
            entry[5] = []

    rewrite(path, forge)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in (lint_cache_dir / "lint").iterdir())
    assert outcome(lint("--no-cache", "--format", "json")) == reference
    after = sorted((p.name, p.stat().st_mtime_ns) for p in (lint_cache_dir / "lint").iterdir())
    assert after == before


@pytest.mark.parametrize("below", [True, False])
def test_a_cache_folder_that_cannot_be_made_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, below: bool
) -> None:
    """``INSTRUMENTOR_CACHE_DIR`` is a file, or below one: the lint runs, prints the same and
    says nothing about the cache (the tests run as root, for whom no folder is read-only)."""
    reference = outcome(lint("--no-cache", "--format", "json"))
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder", encoding="utf-8")
    monkeypatch.setenv("INSTRUMENTOR_CACHE_DIR", str(blocker / "cache" if below else blocker))
    assert outcome(lint("--format", "json")) == reference
    assert outcome(lint("--format", "json")) == reference
    assert blocker.read_text(encoding="utf-8") == "not a folder"


def _parallel_project(root: Path) -> None:
    files = dict(CLEAN_PROJECT)
    for n in range(PARALLEL_FROM + 20):
        call = ("'Report_Created'", "f'{x}_Done'", "x", "Events.REPORT_CREATD")[n % 4]
        files[f"app/m{n // 100}/mod_{n:04d}.py"] = f"""
            import instrumentor
            from app.events import Events

            def f(x):
                instrumentor.track({call})
            """
    write_project(root, files)


def test_concurrent_runs_and_workers_keep_the_cache_whole(
    tmp_path: Path, lint_cache_dir: Path
) -> None:
    """Four runs at once (two with worker processes) over a tree large enough for workers: each
    prints what a fresh scan prints, and the cache they leave serves the next runs right."""
    _parallel_project(tmp_path)
    reference = outcome(lint("--no-cache", "--format", "json", cwd=tmp_path))
    assert len(json_rows(reference[1])) > PARALLEL_FROM // 2
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("PYTHONPATH", None)
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "instrumentor", "lint", "--format", "json", *jobs],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for jobs in (["--jobs", "2"], [], ["--jobs", "2"], [])
    ]
    for run in runs:
        stdout, stderr = run.communicate(timeout=120)
        assert (run.returncode, stdout, stderr) == reference
    assert len(cache_files(lint_cache_dir)) == 1
    assert [p.name for p in (lint_cache_dir / "lint").iterdir() if p.name.startswith(".")] == []
    for module in ("app/m1/mod_0101.py", "app/m3/mod_0302.py"):
        (tmp_path / module).write_text("import instrumentor\ninstrumentor.track('A_B')\n")
    reference = outcome(lint("--no-cache", "--format", "json", cwd=tmp_path))
    for jobs in (["--jobs", "2"], []):
        assert outcome(lint("--format", "json", *jobs, cwd=tmp_path)) == reference


def test_entries_and_files_unused_for_30_days_are_dropped(lint_cache_dir: Path) -> None:
    """Each run that writes drops what no run used for 30 days: entries of files, cache files."""
    lint("--format", "json")
    (path,) = cache_files(lint_cache_dir)
    today = int(time.time() // 86400)

    def age(content: dict[str, Any]) -> None:
        entries = content["entries"]
        template = next(iter(entries.values()))
        entries["/gone/recently.py"] = [*template[:4], today - 29, *template[5:]]
        entries["/gone/long-ago.py"] = [*template[:4], today - 31, *template[5:]]
        for key, entry in entries.items():  # an edit of reports.py: it is scanned and stored
            if key.endswith("reports.py"):
                entry[0] = "0" * 32

    rewrite(path, age)
    old, recent = lint_cache_dir / "lint" / "old.cache", lint_cache_dir / "lint" / "recent.cache"
    for other, days in ((old, 31), (recent, 29)):
        other.write_text("another project's cache", encoding="utf-8")
        then = time.time() - days * 86400
        os.utime(other, (then, then))
    lint("--format", "json")
    assert not old.exists()
    assert recent.exists()
    _, _, body = path.read_bytes().partition(b"\n")
    kept = json.loads(body)["entries"]
    assert "/gone/recently.py" in kept
    assert "/gone/long-ago.py" not in kept


def test_where_the_cache_is(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``INSTRUMENTOR_CACHE_DIR``, else the platform's user cache folder."""
    monkeypatch.setenv("INSTRUMENTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("INSTRUMENTOR_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("USERPROFILE", str(tmp_path / "home"))
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "instrumentor"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")
    assert cache_dir() == tmp_path / "home" / ".cache" / "instrumentor"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert cache_dir() == tmp_path / "home" / "Library" / "Caches" / "instrumentor"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert cache_dir() == tmp_path / "local" / "instrumentor" / "Cache"


def test_help_tells_where_the_cache_is_and_how_to_turn_it_off() -> None:
    """``instrumentor lint --help`` names ``--no-cache``, the variable and the folders."""
    result = lint("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "--no-cache scan every file, and neither read nor write the cache" in text
    assert "$INSTRUMENTOR_CACHE_DIR/lint" in text
    assert "~/.cache/instrumentor/lint" in text

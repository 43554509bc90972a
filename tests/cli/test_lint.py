"""``instrumentor lint`` through its real entry points, run in the sample projects.

Each project under ``tests/cli/projects/`` is a small application with seeded problems; every
one of them is asserted here by rule, file and line, in each output format.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PROJECTS = Path(__file__).resolve().parent / "projects"
SHOP = PROJECTS / "shop"

_SCRIPT = shutil.which("instrumentor", path=str(Path(sys.executable).parent))
ENTRY_POINTS = {
    "console-script": [_SCRIPT or "instrumentor-console-script-not-installed"],
    "python-m": [sys.executable, "-m", "instrumentor"],
}

#: (rule, path, line, severity) of everything the shop project seeds; nothing else is reported.
SHOP_FINDINGS = [
    ("unknown-event", "app/aliases.py", 9, "error"),  # E.REPORT_SHRED (import alias)
    ("unknown-event", "app/aliases.py", 10, "error"),  # plan_module.Events.TEAMMATE_INVITD
    ("unknown-event", "app/aliases.py", 13, "error"),  # E.by_name("Webhook_Recieved")
    ("unused-event", "app/analytics/events.py", 13, "warning"),  # INVOICE_PAID
    ("syntax-error", "app/broken.py", 5, "error"),
    ("direct-sdk-import", "app/other_sdks.py", 3, "error"),  # rudderstack
    ("direct-sdk-import", "app/other_sdks.py", 4, "error"),  # amplitude
    ("direct-sdk-import", "app/other_sdks.py", 5, "error"),  # mixpanel
    ("inline-event-name", "app/other_sdks.py", 12, "error"),  # mp.track(uid, "...")
    ("dynamic-event-name", "app/other_sdks.py", 13, "error"),  # "{}_Viewed".format(page)
    ("inline-event-name", "app/other_sdks.py", 14, "error"),  # BaseEvent(event_type=...)
    ("inline-event-name", "app/other_sdks.py", 15, "error"),  # rudder_analytics.track
    ("direct-sdk-import", "app/posthog_calls.py", 5, "error"),
    ("inline-event-name", "app/posthog_calls.py", 11, "error"),  # ph.capture(uid, "...")
    ("inline-event-name", "app/posthog_calls.py", 12, "error"),  # capture("...", distinct_id=)
    ("dynamic-event-name", "app/posthog_calls.py", 13, "error"),  # "%s_Viewed" % page
    ("inline-event-name", "app/posthog_calls.py", 17, "error"),  # unresolved client.capture
    ("inline-event-name", "app/reports.py", 15, "error"),  # track("Report_Shared")
    ("dynamic-event-name", "app/reports.py", 16, "error"),  # instrumentor.track(f"...")
    ("unknown-event", "app/reports.py", 17, "error"),  # Events.REPORT_CRATED
    ("inline-event-name", "app/reports.py", 20, "error"),  # @tracks("Plan_Upgraded")
    ("direct-sdk-import", "app/segment_calls.py", 3, "error"),  # import analytics
    ("direct-sdk-import", "app/segment_calls.py", 4, "error"),  # import segment.analytics
    ("inline-event-name", "app/segment_calls.py", 8, "error"),
    ("dynamic-event-name", "app/segment_calls.py", 9, "error"),  # "Report_" + kind
    ("inline-event-name", "app/segment_calls.py", 10, "error"),
    ("suppression-without-reason", "app/suppressed.py", 8, "error"),
    ("unused-suppression", "app/suppressed.py", 9, "warning"),  # silences nothing
    ("unused-suppression", "app/suppressed.py", 10, "warning"),  # unknown rule id
]

Row = tuple[str, str, int, str]


def lint(
    *args: str, cwd: Path = SHOP, entry: str = "console-script"
) -> subprocess.CompletedProcess[str]:
    """Run ``instrumentor lint ARGS`` in ``cwd`` through a real entry point."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave no __pycache__ in the sample projects
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [*ENTRY_POINTS[entry], "lint", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def json_rows(stdout: str) -> list[Row]:
    return [(f["rule"], f["path"], f["line"], f["severity"]) for f in json.loads(stdout)]


def test_console_script_is_installed() -> None:
    """The ``instrumentor`` script sits next to the interpreter running the tests."""
    assert _SCRIPT is not None, f"no instrumentor script in {Path(sys.executable).parent}"


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_json_reports_every_seeded_problem(entry: str) -> None:
    """JSON lists each seeded problem once, by rule, file and line; errors exit 1."""
    result = lint("--format", "json", entry=entry)
    assert result.returncode == 1, result.stderr
    assert result.stderr == ""
    assert json_rows(result.stdout) == SHOP_FINDINGS


def test_text_output_has_locations_hints_and_a_summary() -> None:
    """Text: ``path:line:col: severity[rule] message``, the hint below, a count at the end."""
    result = lint("app")
    assert result.returncode == 1, result.stderr
    pattern = re.compile(r"^(\S+?):(\d+)(?::\d+)?: (error|warning)\[([a-z-]+)\] ", re.MULTILINE)
    rows = [(m[4], m[1], int(m[2]), m[3]) for m in pattern.finditer(result.stdout)]
    assert rows == SHOP_FINDINGS
    assert result.stdout.endswith("26 error(s), 3 warning(s)\n")
    expected = [
        "app/reports.py:15:11: error[inline-event-name] event name 'Report_Shared' written "
        "inline in track()\n    hint: use Events.REPORT_SHARED\n",
        "app/reports.py:17:5: error[unknown-event] Events.REPORT_CRATED is not an event of the "
        "plan (app.analytics.events.Events)\n    hint: did you mean Events.REPORT_CREATED?\n",
        "    hint: did you mean E.REPORT_SHARED?\n",
        "    hint: did you mean plan_module.Events.TEAMMATE_INVITED?\n",
        "    hint: did you mean 'Webhook_Received'?\n",
        "in ph.capture() (posthog)\n    hint: the plan calls it 'Report_Shared': use "
        "Events.REPORT_SHARED\n",
        "'Order_Completed' written inline in analytics.track() (segment)\n"
        "    hint: define it in the plan and use Events.X\n",
        "event name built at run time (an f-string) in instrumentor.track()\n",
        "event name built at run time (concatenation) in analytics.track() (segment)\n",
        "event name built at run time (%-formatting) in ph.capture() (posthog)\n",
        "event name built at run time (str.format()) in mp.track() (mixpanel)\n",
        "app/analytics/events.py:13: warning[unused-event] Events.INVOICE_PAID "
        "('Invoice_Paid') is in the plan but no scanned code refers to it\n",
        "app/broken.py:5:10: error[syntax-error] cannot parse: '(' was never closed\n",
        "imports the posthog SDK (posthog) outside the analytics package\n"
        "    hint: import SDKs only in app/analytics (the analytics package)",
        "suppression names unknown rule(s) inline-event-nam\n",
    ]
    for text in expected:
        assert text in result.stdout


def test_github_annotations() -> None:
    """GitHub: one ``::severity file=,line=,col=,title=rule::message (hint)`` per finding."""
    result = lint("--format", "github", ".")
    assert result.returncode == 1, result.stderr
    pattern = re.compile(r"^::(error|warning) file=([^,]+),line=(\d+)(?:,col=\d+)?,title=([^:]+)::")
    matches = [pattern.match(line) for line in result.stdout.splitlines()]
    rows = [(m[4], m[2], int(m[3]), m[1]) if m else ("?", "?", 0, "?") for m in matches]
    assert rows == SHOP_FINDINGS
    assert (
        "::error file=app/reports.py,line=17,col=5,title=unknown-event::Events.REPORT_CRATED is "
        "not an event of the plan (app.analytics.events.Events) (did you mean "
        "Events.REPORT_CREATED?)\n" in result.stdout
    )


def test_exclude_option_adds_to_the_configured_globs() -> None:
    """``--exclude`` globs (a path from the root, or any component) drop whole files."""
    result = lint("--format", "json", "--exclude", "app/broken.py", "--exclude", "*_calls.py")
    assert result.returncode == 1, result.stderr
    remaining = [
        row
        for row in SHOP_FINDINGS
        if row[1] not in {"app/broken.py", "app/posthog_calls.py", "app/segment_calls.py"}
    ]
    # Search_Performed was only named by posthog_calls.py: now no scanned code uses it.
    unused = ("unused-event", "app/analytics/events.py", 12, "warning")
    assert json_rows(result.stdout) == sorted([*remaining, unused], key=lambda r: (r[1], r[2]))


def test_a_named_file_is_linted_even_in_a_skipped_folder() -> None:
    """Default skips apply to folders walked into, not to a file named on the command line."""
    result = lint("--format", "json", "--unused", "off", "node_modules/sdk/tracking.py")
    assert result.returncode == 1, result.stderr
    assert json_rows(result.stdout) == [
        ("direct-sdk-import", "node_modules/sdk/tracking.py", 3, "error"),
        ("inline-event-name", "node_modules/sdk/tracking.py", 5, "error"),
    ]


@pytest.mark.parametrize(("option", "severity"), [("error", "error"), ("off", None)])
def test_unused_option(option: str, severity: str | None) -> None:
    """``--unused error`` fails on unused events; ``off`` drops them (and their suppressions)."""
    result = lint("--format", "json", "--unused", option)
    rows = json_rows(result.stdout)
    unused = [row for row in rows if row[0] == "unused-event"]
    if severity is None:
        assert unused == []
        assert [r for r in rows if r[1] == "app/analytics/events.py"] == []
    else:
        assert unused == [("unused-event", "app/analytics/events.py", 13, "error")]
    assert result.returncode == 1


def test_analytics_package_option_allows_sdk_imports_there() -> None:
    """``--analytics-package app`` allows every SDK import under ``app/``; the suppression of
    one such import in suppressed.py is now stale."""
    result = lint("--format", "json", "--analytics-package", "app")
    rows = json_rows(result.stdout)
    assert [row for row in rows if row[0] == "direct-sdk-import"] == []
    assert ("unused-suppression", "app/suppressed.py", 3, "warning") in rows
    assert "suppression of direct-sdk-import silences nothing" in result.stdout


def test_duplicate_names_across_plan_modules_name_both_sites() -> None:
    """A plan whose modules define a name twice: exit 1, both definitions named."""
    result = lint("--format", "json", cwd=PROJECTS / "split")
    assert result.returncode == 1
    message = (
        "the plan in 'app.analytics.billing' is invalid: duplicate event "
        "name 'Report_Created': defined at ReportEvents.REPORT_CREATED "
        "(app/analytics/reports.py:7) and again at app/analytics/billing.py:8. Define every "
        "event exactly once and import the registry where you need it."
    )
    assert result.stderr == f"instrumentor: error: {message}\n"
    # What reads the JSON (or the GitHub annotations) sees it too.
    (finding,) = json.loads(result.stdout)
    assert (finding["rule"], finding["message"], finding["severity"]) == (
        "invalid-plan",
        message,
        "error",
    )
    github = lint("--format", "github", cwd=PROJECTS / "split")
    assert github.stdout.startswith("::error title=invalid-plan::the plan in")


def test_without_a_plan_the_plan_free_rules_run_and_say_so_once() -> None:
    """No plan configured: inline, dynamic and import rules run; a note on stderr, once."""
    result = lint("--format", "json", cwd=PROJECTS / "noplan")
    assert result.returncode == 1
    assert json_rows(result.stdout) == [
        ("inline-event-name", "app/tracking.py", 7, "error"),
        ("direct-sdk-import", "app/views.py", 3, "error"),
        ("dynamic-event-name", "app/views.py", 9, "error"),
    ]
    assert result.stderr.count("no tracking plan configured") == 1
    assert "unknown-event, unused-event and dynamic-event-lookup do not run" in result.stderr


def write_project(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


CLEAN_PROJECT = {
    "pyproject.toml": """
        [tool.instrumentor]
        plan = "app.events:Events"
        analytics_package = "app.events"
        """,
    "app/__init__.py": "",
    "app/events.py": """
        from instrumentor import EventRegistry, event

        class Events(EventRegistry):
            REPORT_CREATED = event("Report_Created", category="core_value")
            REPORT_SHARED = event("Report_Shared", category="collaboration")
        """,
    "app/views.py": """
        from instrumentor import tracks

        from app.events import Events

        @tracks(Events.REPORT_CREATED)
        def create() -> None:
            Events.REPORT_SHARED.track()
        """,
}


def test_clean_project_exits_0(tmp_path: Path) -> None:
    """Nothing to report: exit 0 and "no problems found"; warnings alone also exit 0."""
    write_project(tmp_path, CLEAN_PROJECT)
    result = lint(cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "no problems found\n", "")
    (tmp_path / "app/views.py").write_text("", encoding="utf-8")
    result = lint(cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    assert result.stdout.endswith("0 error(s), 2 warning(s)\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no/such/dir"], "instrumentor: error: no/such/dir: no such file or directory\n"),
        (["--exclude", "app"], "instrumentor: error: no Python files to lint in ."),
        (["--format", "xml"], "invalid choice: 'xml'"),
        (["--plan", "app.nowhere:Events"], "cannot import 'app.nowhere'"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    """Bad paths, options or plans are usage errors (exit 2), told on stderr."""
    write_project(tmp_path, CLEAN_PROJECT)
    result = lint(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert message in result.stderr


def test_invalid_configuration_is_a_usage_error(tmp_path: Path) -> None:
    """A wrongly typed ``exclude`` in pyproject.toml says which key is wrong."""
    config = "[tool.instrumentor]\nexclude = 3\n"
    write_project(tmp_path, {**CLEAN_PROJECT, "pyproject.toml": config})
    result = lint(cwd=tmp_path)
    assert result.returncode == 2
    assert "[tool.instrumentor] exclude must be a string or a list of strings" in result.stderr


GOVERNANCE = Path(__file__).resolve().parents[2] / "docs" / "governance-lint.md"
_SHOWN_RUN = re.compile(
    r"^```text\n\$ instrumentor (?P<args>[^\n]*)\n(?P<output>.*?)^```$", re.M | re.S
)


def test_the_documented_output_is_what_lint_prints() -> None:
    """Each ``$ instrumentor lint ...`` block of docs/governance-lint.md is a real run's output (in
    the shop project; the bare one, with its duplicate names, in the split project)."""
    runs = list(_SHOWN_RUN.finditer(GOVERNANCE.read_text(encoding="utf-8")))
    assert len(runs) == 3
    for run in runs:
        args = run["args"].split()
        assert args[0] == "lint"
        result = lint(*args[1:], cwd=SHOP if args[1:] else PROJECTS / "split")
        assert result.stdout + result.stderr == run["output"], run["args"]


def test_exclude_globs_from_the_project_root(tmp_path: Path) -> None:
    """From ``.``: a glob with ``/`` matches from the root, a bare one any name at any depth."""
    call = 'import instrumentor\ninstrumentor.track("Report_Created")\n'
    write_project(
        tmp_path,
        {
            **CLEAN_PROJECT,
            "seed.py": call,
            "tools/gen/client.py": call,
            "tools/keep.py": call,
            "app/migrations/0001.py": call,
        },
    )
    args = ["--format", "json", "--exclude", "tools/g*", "--exclude", "migrations", "."]
    result = lint(*args, cwd=tmp_path)
    assert [(row[1], row[2]) for row in json_rows(result.stdout)] == [
        ("seed.py", 2),
        ("tools/keep.py", 2),
    ]


def test_overlapping_paths_lint_each_file_once() -> None:
    """``app`` and a file inside it: the file's findings are reported once."""
    result = lint("--format", "json", "--unused", "off", "app/reports.py", "app")
    rows = json_rows(result.stdout)
    assert len(rows) == len(set(rows))
    assert [r for r in rows if r[1] == "app/reports.py"] == [
        r for r in SHOP_FINDINGS if r[1] == "app/reports.py"
    ]

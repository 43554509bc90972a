"""``instrumentor plan show`` and ``plan check``, and how the plan is found, via the real CLI."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.support import instrumentor_command, run_cli

PLAN = """
from instrumentor import EventRegistry, event


class Events(EventRegistry):
    REPORT_CREATED = event(
        "Report_Created", category="core_value", group_level="project",
        description="A user created a report.",
    )
    SEARCH_PERFORMED = event(
        "Search_Performed", category="feature_usage", frontend=True,
        description="A user ran a search.",
    )
"""

PROBLEMS = """
from instrumentor import EventRegistry, event


class Billing(EventRegistry):
    PLAN_UPGRADED = event("Plan_Upgraded", category="billing")
    INVOICE_SENT = event(
        "Invoice_Sent", category="billing", description="An invoice went out.",
        deprecated="invoices moved to the billing provider", sunset="2020-01-31",
    )
    RECEIPT_SENT = event(
        "Receipt_Sent", category="billing", description="A receipt went out.",
        deprecated="no longer sent",
    )
    REFUND_ISSUED = event(
        "Refund_Issued", category="billing", description="A refund was issued.",
        deprecated="renamed", replaced_by="Refund_Granted",
    )
    EXPORTED_PDF = event(
        "Report_Exported_PDF", category="feature_usage", description="PDF export.",
        waive={
            "no_variant": "the PDF export is its own product line",
            "past_tense": "the variant word ends the name",
        },
    )
"""


def project(tmp_path: Path, *, pyproject: str | None = None, **modules: str) -> Path:
    """A project folder holding ``modules`` (name -> source) and an optional pyproject.toml."""
    for name, source in modules.items():
        path = tmp_path / f"{name.replace('.', '/')}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    if pyproject is not None:
        (tmp_path / "pyproject.toml").write_text(textwrap.dedent(pyproject))
    return tmp_path


def test_show_lists_every_event_with_its_level(tmp_path: Path) -> None:
    """plan show prints the hierarchy, the count and each event's category, level, frontend."""
    root = project(tmp_path, app_events=PLAN)
    result = run_cli("plan", "show", "--plan", "app_events:Events", cwd=root)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "hierarchy: account > workspace > project" in lines
    assert "2 events" in lines
    row = next(line for line in lines if line.startswith("Report_Created"))
    assert row.split()[:3] == ["Report_Created", "core_value", "project"]
    search = next(line for line in lines if line.startswith("Search_Performed"))
    assert "yes" in search.split()


@pytest.mark.parametrize("module", [False, True], ids=["console-script", "python-m"])
def test_plan_from_pyproject(tmp_path: Path, module: bool) -> None:
    """The pyproject.toml plan is found from a sub-folder, by the console script and python -m."""
    root = project(
        tmp_path,
        pyproject='[tool.instrumentor]\nplan = "app.analytics:Events"\n',
        **{"app.__init__": "", "app.analytics": PLAN},
    )
    sub = root / "app"  # the pyproject is found from a sub-folder too
    result = run_cli("plan", "show", cwd=sub, module=module)
    assert result.returncode == 0, result.stderr
    assert "plan: app.analytics:Events" in result.stdout


def test_a_plan_split_over_registries_is_one_plan(tmp_path: Path) -> None:
    """Several --plan options (a registry or a whole module) are shown as one plan."""
    root = project(tmp_path, core=PLAN, billing=PROBLEMS)
    result = run_cli("plan", "show", "--plan", "core:Events", "--plan", "billing", cwd=root)
    assert result.returncode == 0, result.stderr
    assert "7 events" in result.stdout.splitlines()


@pytest.mark.parametrize(
    ("args", "pyproject", "expected"),
    [
        ((), None, "no tracking plan named: pass --plan"),
        (("--plan", "missing_module:Events"), None, "cannot import 'missing_module'"),
        (("--plan", "app_events:Nope"), None, "has no attribute 'Nope'"),
        (("--plan", "app_events:event"), None, "not an EventRegistry subclass"),
        (("--plan", "a:b:c"), None, "is not 'package.module:Registry'"),
        ((), "[tool.instrumentor]\nplan = 3\n", "must be a string or a list"),
        ((), "[tool.instrumentor\n", "cannot read"),
    ],
)
def test_usage_errors_exit_2_with_a_clear_message(
    tmp_path: Path, args: tuple[str, ...], pyproject: str | None, expected: str
) -> None:
    """A missing, unimportable or malformed plan exits 2 with a clear message and no traceback."""
    root = project(tmp_path, pyproject=pyproject, app_events=PLAN)
    result = run_cli("plan", "show", *args, cwd=root)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_a_module_that_raises_at_import_is_a_usage_error(tmp_path: Path) -> None:
    """A plan module that raises at import exits 2 and names the exception."""
    root = project(tmp_path, broken="raise RuntimeError('settings missing')\n")
    result = run_cli("plan", "show", "--plan", "broken", cwd=root)
    assert result.returncode == 2
    assert "RuntimeError: settings missing" in result.stderr


def test_duplicate_names_across_modules_fail_naming_both_sites(tmp_path: Path) -> None:
    """One event name in two plan modules fails plan check, naming both files."""
    dup = PLAN.replace("class Events", "class Others").replace(
        '"Search_Performed"', '"Search_Finished"'
    )
    root = project(tmp_path, first=PLAN, second=dup)
    result = run_cli("plan", "check", "--plan", "first", "--plan", "second", cwd=root)
    assert result.returncode == 1
    assert "Report_Created" in result.stderr
    assert "first.py" in result.stderr
    assert "second.py" in result.stderr


def test_check_passes_a_clean_plan(tmp_path: Path) -> None:
    """plan check on a clean plan exits 0 and says no problems were found."""
    root = project(tmp_path, app_events=PLAN)
    result = run_cli("plan", "check", "--plan", "app_events", cwd=root)
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip() == "no problems found"


def test_check_reports_each_problem(tmp_path: Path) -> None:
    """plan check --format json reports each rule broken, its severity and the member's line."""
    root = project(tmp_path, billing=PROBLEMS)
    result = run_cli(
        "plan", "check", "--plan", "billing", "--format", "json", "--today", "2026-01-01", cwd=root
    )
    assert result.returncode == 1
    found = {
        (f["rule"], f["message"].split(" ")[0], f["severity"]) for f in json.loads(result.stdout)
    }
    assert found == {
        ("missing-description", "Billing.PLAN_UPGRADED", "error"),
        ("deprecation-expired", "Billing.INVOICE_SENT", "error"),
        ("deprecation-open-ended", "Billing.RECEIPT_SENT", "warning"),
        ("unknown-replacement", "Billing.REFUND_ISSUED", "error"),
        ("naming-waived", "Billing.EXPORTED_PDF", "warning"),
    }
    lines = {f["rule"]: f["line"] for f in json.loads(result.stdout)}
    source = (root / "billing.py").read_text().splitlines()
    assert "PLAN_UPGRADED" in source[lines["missing-description"] - 1]


def test_check_sunset_is_judged_against_today(tmp_path: Path) -> None:
    """A deprecation's sunset counts as expired only after the --today date."""
    root = project(tmp_path, billing=PROBLEMS)
    before = run_cli("plan", "check", "--plan", "billing", "--today", "2020-01-30", cwd=root)
    assert "deprecation-expired" not in before.stdout
    after = run_cli("plan", "check", "--plan", "billing", "--today", "2020-02-01", cwd=root)
    assert "deprecation-expired" in after.stdout


def test_check_descriptions_can_be_optional(tmp_path: Path) -> None:
    """require_descriptions = false drops missing-description and keeps the other rules."""
    root = project(
        tmp_path,
        pyproject="[tool.instrumentor]\nrequire_descriptions = false\n",
        billing=PROBLEMS,
    )
    result = run_cli("plan", "check", "--plan", "billing", cwd=root)
    assert "missing-description" not in result.stdout
    assert "unknown-replacement" in result.stdout


def test_check_github_annotations(tmp_path: Path) -> None:
    """--format github prints ::error and ::warning annotations with file, line and rule."""
    root = project(tmp_path, billing=PROBLEMS)
    result = run_cli("plan", "check", "--plan", "billing", "--format", "github", cwd=root)
    lines = result.stdout.splitlines()
    assert any(
        line.startswith("::error file=billing.py,line=") and "title=missing-description::" in line
        for line in lines
    )
    assert any(line.startswith("::warning ") for line in lines)


def test_what_the_plan_prints_at_import_does_not_corrupt_stdout(tmp_path: Path) -> None:
    """Output the plan prints at import goes to stderr, so the JSON export still parses."""
    root = project(tmp_path, noisy="print('loading the plan...')\n" + PLAN)
    result = run_cli("plan", "export", "--format", "json", "--plan", "noisy", cwd=root)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["events"][0]["name"] == "Report_Created"
    assert "loading the plan..." in result.stderr


def test_a_plan_that_exits_at_import_is_a_usage_error(tmp_path: Path) -> None:
    """A plan module calling sys.exit() at import exits 2 and names the SystemExit."""
    root = project(tmp_path, leaving="import sys\nsys.exit(3)\n")
    result = run_cli("plan", "show", "--plan", "leaving", cwd=root)
    assert result.returncode == 2
    assert "cannot import 'leaving'" in result.stderr
    assert "SystemExit: 3" in result.stderr


@pytest.mark.parametrize(
    ("source", "spec", "expected"),
    [
        ("from instrumentor import EventRegistry\n", "base:EventRegistry", "not an EventRegistry"),
        (
            "from instrumentor import EventRegistry\n\nclass Empty(EventRegistry):\n    pass\n",
            "base:Empty",
            "defines no events",
        ),
    ],
)
def test_a_registry_without_events_is_not_a_plan(
    tmp_path: Path, source: str, spec: str, expected: str
) -> None:
    """The EventRegistry base class or a registry without events is refused with exit 2."""
    root = project(tmp_path, base=source)
    result = run_cli("plan", "check", "--plan", spec, cwd=root)
    assert result.returncode == 2
    assert expected in result.stderr


def test_a_tool_key_that_is_not_a_table_is_no_plan(tmp_path: Path) -> None:
    """A pyproject 'tool' key that is not a table means no plan is named (exit 2)."""
    root = project(tmp_path, pyproject='tool = "x"\n', app_events=PLAN)
    result = run_cli("plan", "show", cwd=root)
    assert result.returncode == 2
    assert "no tracking plan named" in result.stderr


def test_a_setting_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    """A non-boolean require_descriptions in pyproject.toml exits 2 naming the setting."""
    root = project(
        tmp_path,
        pyproject='[tool.instrumentor]\nrequire_descriptions = "false"\n',
        billing=PROBLEMS,
    )
    result = run_cli("plan", "check", "--plan", "billing", cwd=root)
    assert result.returncode == 2
    assert "require_descriptions must be true or false" in result.stderr


def test_check_reports_waivers_the_name_no_longer_needs(tmp_path: Path) -> None:
    """A waiver for a rule the name already passes is a stale-waiver warning (exit 0)."""
    stale = PLAN.replace(
        'description="A user ran a search.",',
        'description="A user ran a search.", waive={"no_digits": "it used to say Search_V2"},',
    )
    root = project(tmp_path, app_events=stale)
    result = run_cli("plan", "check", "--plan", "app_events", "--format", "json", cwd=root)
    assert result.returncode == 0  # a warning
    (finding,) = json.loads(result.stdout)
    assert finding["rule"] == "stale-waiver"
    assert finding["message"].startswith("Events.SEARCH_PERFORMED ('Search_Performed') waives")


def test_a_reader_that_leaves_early_gets_the_sigpipe_status(tmp_path: Path) -> None:
    """A closed stdout pipe ends plan show with status 141 and no traceback."""

    def name(i: int) -> str:  # Item_AAA_Added, Item_BAA_Added, ...: distinct, valid names
        letters = "".join(chr(65 + i // 26**k % 26) for k in range(3))
        return f"Item_{letters}_Added"

    members = "\n".join(
        f'    E{i} = event("{name(i)}", category="core_value", description="An item." * 9)'
        for i in range(3000)
    )
    big = f"from instrumentor import EventRegistry, event\n\nclass Big(EventRegistry):\n{members}\n"
    root = project(tmp_path, big=big)
    command = [*instrumentor_command(), "plan", "show", "--plan", "big"]
    with subprocess.Popen(
        command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline()  # the first line, then the reader goes away
        proc.stdout.close()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141
    assert b"Traceback" not in err
    assert b"Exception ignored" not in err


def test_an_internal_error_is_reported_as_such(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unexpected exception in a command exits 2 as an internal error naming it."""
    from instrumentor import cli
    from instrumentor.cli import _plan as plan

    def broken(args: object) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(plan, "_show", broken)
    assert cli.main(["plan", "show"]) == 2
    err = capsys.readouterr().err
    assert "RuntimeError: a bug" in err
    assert "internal error" in err

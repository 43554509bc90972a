"""``instrumentor plan export``: every format, through the real entry points and in process."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

import instrumentor
from instrumentor.cli._document import plan_document
from instrumentor.cli._export import CSV_COLUMNS, render
from instrumentor.cli._source import Plan
from instrumentor.cli._yaml import dump_yaml
from instrumentor.testing import capture_events
from tests.cli.cli_support import PLANS, Entry, run_cli
from tests.cli.plans import kitchen

PLAN = ("--plan", "kitchen:Events")


def export(fmt: str, entry: Entry = "script") -> str:
    result = run_cli("plan", "export", *PLAN, "--format", fmt, cwd=PLANS, entry=entry)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def kitchen_document() -> dict[str, Any]:
    return plan_document(Plan((kitchen.Events,), ("tests.cli.plans.kitchen:Events",)))


@pytest.fixture(scope="module")
def exported_json() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(export("json"))
    return data


# --- json, yaml, --output ---------------------------------------------------------------------


@pytest.mark.parametrize("entry", ["script", "module"])
def test_json_is_the_plan_document(entry: Entry) -> None:
    """The JSON export holds the version, the hierarchy and every event with all its fields."""
    data = json.loads(export("json", entry))

    assert data["version"] == 1
    assert data["group_hierarchy"] == [
        {"level": "account", "parent": None},
        {"level": "workspace", "parent": "account"},
        {"level": "project", "parent": "workspace"},
    ]
    assert [e["name"] for e in data["events"]] == [m.event_name for m in kitchen.Events]
    printed = next(e for e in data["events"] if e["name"] == "Menu_Printed")
    assert printed == {
        "name": "Menu_Printed",
        "category": "collaboration",
        "group_level": "project",
        "description": "A menu was printed.",
        "frontend": True,
        "deprecated": "menus are shared as links now",
        "replaced_by": "Menu_Shared",
        "sunset": "2027-01-31",
        "waivers": {},
        "registry": "kitchen.Events",
        "member": "MENU_PRINTED",
    }


def test_json_output_is_stable() -> None:
    """The console script and python -m export byte-identical JSON."""
    assert export("json") == export("json", "module")


def test_yaml_export_reads_back_as_the_json_export(exported_json: dict[str, Any]) -> None:
    """The YAML export loads to the same document as the JSON export."""
    assert yaml.safe_load(export("yaml")) == exported_json


def test_output_writes_the_file_and_says_so(tmp_path: Path, exported_json: dict[str, Any]) -> None:
    """--output writes the file, keeps stdout empty and names the file on stderr."""
    target = tmp_path / "plan.yaml"
    result = run_cli("plan", "export", *PLAN, "-f", "yaml", "--output", str(target), cwd=PLANS)

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert f"wrote {target} (yaml," in result.stderr
    assert yaml.safe_load(target.read_text(encoding="utf-8")) == exported_json


def test_an_unknown_format_is_a_usage_error() -> None:
    """An unknown format exits 2 from the CLI and raises ValueError from render()."""
    result = run_cli("plan", "export", *PLAN, "--format", "xml", cwd=PLANS)

    assert result.returncode == 2
    assert "invalid choice: 'xml'" in result.stderr
    with pytest.raises(ValueError, match="unknown export format 'xml'"):
        render(kitchen_document(), "xml")


# --- md -----------------------------------------------------------------------------------


def test_markdown_lists_events_by_category_then_group_level() -> None:
    """The Markdown page groups events by category, then level in hierarchy order."""
    page = export("md")
    headings = [line for line in page.splitlines() if line.startswith("#")]

    assert headings == [
        "# Tracking plan",
        "## Group hierarchy",
        "## Lifecycle (`lifecycle`)",
        "### Account level",
        "## Core value (`core_value`)",
        "### Project level",
        "## Collaboration (`collaboration`)",
        "### Project level",
        "## Billing (`billing`)",
        "### Account level",
        "## Feature usage (`feature_usage`)",
        "### Workspace level",  # hierarchy order, not definition order
        "### Project level",
    ]
    assert "1. `account` (top level)\n2. `workspace`, inside `account`" in page
    assert (
        "| `Menu_Printed` | `project` | A menu was printed. | yes | **deprecated**: menus are "
        "shared as links now; use Menu_Shared; sunset 2027-01-31 |"
    ) in page


def test_markdown_cells_escape_pipes_newlines_and_html() -> None:
    """Markdown table cells escape pipes, newlines and HTML."""
    page = export("md")
    assert (
        "| `Pantry_Searched` | `workspace` | Someone searched the pantry: by name \\| by tag."
        "<br>Fires once per search. | yes |  |"
    ) in page

    document = kitchen_document()
    document["events"][0]["description"] = "<script>a & b</script>"
    assert "&lt;script&gt;a &amp; b&lt;/script&gt;" in render(document, "md")


# --- csv ----------------------------------------------------------------------------------


def test_csv_has_a_header_and_one_row_per_event() -> None:
    """The CSV has the documented columns and one row per event, waivers as JSON."""
    rows = list(csv.DictReader(io.StringIO(export("csv"))))

    assert [row["name"] for row in rows] == [m.event_name for m in kitchen.Events]
    assert list(rows[0]) == list(CSV_COLUMNS)
    pantry = next(row for row in rows if row["name"] == "Pantry_Searched")
    assert pantry["description"] == "Someone searched the pantry: by name | by tag.\n" + (
        "Fires once per search."
    )
    assert pantry["frontend"] == "true"
    assert pantry["deprecated"] == pantry["sunset"] == pantry["waivers"] == ""
    pdf = next(row for row in rows if row["name"] == "PDF_Recipe_Exported")
    assert json.loads(pdf["waivers"]) == {
        "no_variant": "the PDF export is billed separately, so it is its own event"
    }
    printed = next(row for row in rows if row["name"] == "Menu_Printed")
    assert (printed["replaced_by"], printed["sunset"]) == ("Menu_Shared", "2027-01-31")


# --- yaml emitter ---------------------------------------------------------------------------

TRICKY = [
    "",
    " leading space",
    "trailing space ",
    "key: value",
    "# not a comment",
    "a #b",
    '"quoted"',
    "'single'",
    "back\\slash",
    "yes",
    "no",
    "on",
    "null",
    "~",
    "1.0",
    "0o17",
    "1e3",
    "true",
    "- item",
    "[a, b]",
    "{a: b}",
    "&anchor",
    "*alias",
    "!tag",
    "%directive",
    "@at",
    "`tick`",
    "line\nbreak",
    "\ttab",
    "\r\n",
    "café ☕ 日本語 🍳",
    "\u0085 \u2028 \u2029 \ufeff \x7f \x00",
    "---",
    "...",
]


@pytest.mark.parametrize("text", TRICKY)
def test_yaml_strings_read_back_unchanged(text: str) -> None:
    """Strings YAML could misread (keywords, numbers, symbols, breaks) load back unchanged."""
    data = {"value": text, text or "empty": [text, {"nested": text}], "list": [[text]]}
    assert yaml.safe_load(dump_yaml(data)) == data


plain_data = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(plain_data)
def test_yaml_round_trips_any_plain_data(data: Any) -> None:
    """Any nesting of None, bools, ints, strings, lists and dicts loads back unchanged."""
    assert yaml.safe_load(dump_yaml(data)) == data


def test_yaml_refuses_what_it_cannot_represent() -> None:
    """The YAML emitter raises TypeError on floats and non-string keys."""
    with pytest.raises(TypeError, match="got float"):
        dump_yaml({"ratio": 0.5})
    with pytest.raises(TypeError, match="string keys"):
        dump_yaml({1: "one"})


# --- jsonschema -------------------------------------------------------------------------------


def _tracked_messages() -> dict[str, dict[str, Any]]:
    """The real track message of every kitchen event, as the library produces it."""
    with (
        capture_events() as captured,
        instrumentor.bound_context(
            user_id="u_1", account_id="acc_1", workspace_id="ws_1", project_id="proj_1"
        ),
    ):
        for member in kitchen.Events:
            member.track(properties={"source": "test"})
    return {message.event: message.to_dict() for message in captured.tracks}


def test_jsonschema_validates_the_messages_the_library_sends() -> None:
    """Each real track message matches exactly its own event's schema; broken ones fail."""
    schema = json.loads(render(kitchen_document(), "jsonschema"))
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    messages = _tracked_messages()
    assert set(messages) == {m.event_name for m in kitchen.Events}

    for name, message in messages.items():
        validator.validate(message)  # matches exactly one event's schema
        own = jsonschema.Draft202012Validator(
            {**schema["$defs"][name], "$schema": schema["$schema"]}
        )
        assert own.is_valid(message)
        others = [other for other in messages if other != name]
        assert not any(
            jsonschema.Draft202012Validator(schema["$defs"][other]).is_valid(message)
            for other in others
        )

    recipe = messages["Recipe_Published"]
    assert not validator.is_valid({**recipe, "event": "Recipe_Publish"})
    assert not validator.is_valid({**recipe, "context": {}})  # no group id: a data defect
    assert not validator.is_valid({**recipe, "timestamp": "yesterday"})
    assert schema["$defs"]["Menu_Printed"]["deprecated"] is True
    assert schema["$defs"]["Pantry_Searched"]["x-group-level"] == "workspace"


def test_jsonschema_through_the_cli_is_the_same_schema() -> None:
    """The CLI's jsonschema export equals render()'s schema."""
    exported = json.loads(export("jsonschema"))
    assert exported == json.loads(render(kitchen_document(), "jsonschema"))


def test_jsonschema_of_an_empty_plan_accepts_nothing() -> None:
    """The schema of a plan with no events is valid and accepts no message."""
    schema = json.loads(render({"version": 1, "group_hierarchy": [], "events": []}, "jsonschema"))
    jsonschema.Draft202012Validator.check_schema(schema)
    assert not jsonschema.Draft202012Validator(schema).is_valid({"type": "track"})


# --- ts ---------------------------------------------------------------------------------------


TS = "typescript@5"
#: Strict, and --skipLibCheck: TypeScript's own library is not ours to check (and is slow).
TSC_OPTIONS = (
    "--strict",
    "--noEmit",
    "--target",
    "es2017",
    "--module",
    "commonjs",
    "--skipLibCheck",
)


@pytest.fixture(scope="session")
def tsc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The TypeScript compiler, installed from the npm registry once per test session."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("node and npm are needed to compile the TypeScript export (install Node.js)")
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this session
    compiler = root / "typescript" / "node_modules" / ".bin" / "tsc"
    with (root / "typescript.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one worker installs, the others wait for it
        if not compiler.exists():
            installed = subprocess.run(
                [
                    npm,
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--prefix",
                    str(compiler.parents[2]),
                    TS,
                ],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if installed.returncode != 0:
                pytest.skip(f"cannot install typescript from the npm registry: {installed.stderr}")
    return compiler


def compile_ts(tsc: Path, folder: Path, usage: str) -> subprocess.CompletedProcess[str]:
    (folder / "usage.ts").write_text(usage, encoding="utf-8")
    return subprocess.run(
        [str(tsc), *TSC_OPTIONS, "plan.ts", "usage.ts"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


USAGE = """\
import { FRONTEND_EVENTS, FrontendEvent, FrontendEvents, isFrontendEvent, track } from "./plan";

const sent: FrontendEvent[] = [];
track("Pantry_Searched", (event) => { sent.push(event); });
track(FrontendEvents.Menu_Shared);
const fromServer: string = "Menu_Printed";
if (isFrontendEvent(fromServer)) { track(fromServer); }
export const count: number = FRONTEND_EVENTS.length + sent.length;
"""


def test_typescript_compiles_and_rejects_events_the_browser_may_not_send(
    tsc: Path, tmp_path: Path
) -> None:
    """The TypeScript export compiles; tracking backend-only or misspelt events does not."""
    result = run_cli(
        "plan", "export", *PLAN, "-f", "ts", "-o", str(tmp_path / "plan.ts"), cwd=PLANS
    )
    assert result.returncode == 0, result.stderr
    source = (tmp_path / "plan.ts").read_text(encoding="utf-8")
    assert 'export type FrontendEvent = "Pantry_Searched" | "Menu_Shared" | "Menu_Printed";' in (
        source
    )

    compiled = compile_ts(tsc, tmp_path, USAGE)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr

    wrong = 'track("Recipe_Published");\ntrack("Pantry_Searchd");\n'  # backend-only; a typo
    failed = compile_ts(tsc, tmp_path, USAGE + wrong)
    errors = [line for line in failed.stdout.splitlines() if "error TS" in line]
    assert failed.returncode != 0
    assert [line.split(":")[0] for line in errors] == ["usage.ts(9,7)", "usage.ts(10,7)"], errors
    assert all("error TS2345" in line for line in errors), errors


def test_typescript_without_frontend_events_is_a_valid_file(tsc: Path, tmp_path: Path) -> None:
    """With no frontend events the TypeScript compiles and refuses any event name."""
    document = kitchen_document()
    for event in document["events"]:
        event["frontend"] = False
    source = render(document, "ts")
    assert "export type FrontendEvent = never;" in source
    (tmp_path / "plan.ts").write_text(source, encoding="utf-8")

    usage = (
        'import { FRONTEND_EVENTS, track } from "./plan";\n'
        "export const n = FRONTEND_EVENTS.length;\n"
    )
    failed = compile_ts(tsc, tmp_path, usage + 'track("Any_Event");\n')
    errors = [line for line in failed.stdout.splitlines() if "error TS" in line]
    # plan.ts itself compiles; only the call with a name is refused (nothing is a FrontendEvent)
    assert [line.split(":")[0] for line in errors] == ["usage.ts(3,7)"], failed.stdout
    assert "error TS2345" in errors[0]


def test_jsonschema_refs_escape_names_that_are_not_plain_pointers() -> None:
    """Event names with '/', '~' or spaces are escaped in $ref and still resolve."""
    document = kitchen_document()
    recipe = next(e for e in document["events"] if e["name"] == "Recipe_Published")
    odd = "Legacy/Checkout~Step %1"
    recipe["name"] = odd
    schema = json.loads(render(document, "jsonschema"))
    assert {"$ref": "#/$defs/Legacy~1Checkout~0Step%20%251"} in schema["oneOf"]
    validator = jsonschema.Draft202012Validator(schema)
    message = {**_tracked_messages()["Recipe_Published"], "event": odd}
    validator.validate(message)  # the reference resolves, and the message matches it

"""``instrumentor plan lock`` / ``plan diff``: the real entry points, and the classifier."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from instrumentor.cli._diff import Change, classify, lock_content
from tests.cli.cli_support import make_project, run_cli, use_plan

BREAKING = [
    "Menu_Shared: no longer allowed from the browser",
    "Pantry_Searched: group level workspace -> project",
    "Recipe_Published: renamed to Recipe_Released",
    "Seats_Purchased: removed",
]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project on the first version of the kitchen plan, locked."""
    root = make_project(tmp_path / "app")
    locked = run_cli("plan", "lock", cwd=root)
    assert locked.returncode == 0, locked.stderr
    assert locked.stdout == "wrote instrumentor.lock.json (7 events; created)\n"
    return root


def read_lock(root: Path, name: str = "instrumentor.lock.json") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / name).read_text(encoding="utf-8"))
    return data


def test_diff_without_a_lock_says_how_to_make_one(tmp_path: Path) -> None:
    """plan diff without a lock file exits 2 and says to run plan lock."""
    root = make_project(tmp_path)
    result = run_cli("plan", "diff", cwd=root)

    assert result.returncode == 2
    assert "no lock file at instrumentor.lock.json: run `instrumentor plan lock`" in result.stderr


def test_the_lock_is_the_plan_sorted_without_paths(project: Path) -> None:
    """The lock lists events sorted by name without paths; relocking unchanged rewrites nothing."""
    lock = read_lock(project)
    text = (project / "instrumentor.lock.json").read_text(encoding="utf-8")

    assert lock["lock_version"] == 1
    assert [e["name"] for e in lock["events"]] == sorted(e["name"] for e in lock["events"])
    assert len(lock["events"]) == 7
    assert lock["approvals"] == []
    assert str(project) not in text
    assert "defined_at" not in text
    again = run_cli("plan", "lock", cwd=project)
    assert again.stdout == "instrumentor.lock.json is up to date (7 events)\n"
    assert (project / "instrumentor.lock.json").read_text(encoding="utf-8") == text


@pytest.mark.parametrize("entry", ["script", "module"])
def test_an_unchanged_plan_matches_its_lock(project: Path, entry: Any) -> None:
    """plan diff on an unchanged plan exits 0 and says it matches the lock."""
    result = run_cli("plan", "diff", cwd=project, entry=entry)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "the plan matches instrumentor.lock.json (7 events)\n"


def test_changes_that_break_nobody_leave_a_stale_lock(project: Path) -> None:
    """Non-breaking changes pass diff (fail --strict) until plan lock records them."""
    use_plan(project, "kitchen_minor")

    result = run_cli("plan", "diff", cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "instrumentor.lock.json: 5 change(s) in the plan since the lock, 0 breaking",
        "            Kitchen_Opened: deprecated (sign-up is tracked as Kitchen_Registered)",
        "            PDF_Recipe_Exported: category feature_usage -> core_value",
        "            Recipe_Published: description changed",
        "            Seats_Purchased: now allowed from the browser",
        "            Shopping_List_Printed: added (feature_usage, project level)",
        "the lock is stale: run `instrumentor plan lock` and commit instrumentor.lock.json",
    ]
    assert run_cli("plan", "diff", "--strict", cwd=project).returncode == 1

    relocked = run_cli("plan", "lock", cwd=project)
    assert relocked.returncode == 0
    assert relocked.stdout.startswith("wrote instrumentor.lock.json (8 events; updated, 5 change")
    assert read_lock(project)["approvals"] == []
    assert run_cli("plan", "diff", "--strict", cwd=project).returncode == 0


def test_breaking_changes_fail_until_approved_by_relocking(project: Path) -> None:
    """Breaking changes fail diff and lock until --approve-breaking records a reason."""
    use_plan(project, "kitchen_breaking")
    before = (project / "instrumentor.lock.json").read_bytes()

    diff = run_cli("plan", "diff", cwd=project)
    assert diff.returncode == 1
    assert [line.strip() for line in diff.stdout.splitlines() if "BREAKING" in line] == [
        f"BREAKING  {message}" for message in BREAKING
    ]
    assert 'instrumentor plan lock --approve-breaking "why"' in diff.stdout

    refused = run_cli("plan", "lock", cwd=project)
    assert refused.returncode == 1
    assert "not written: 4 breaking change(s)" in refused.stdout
    assert (project / "instrumentor.lock.json").read_bytes() == before

    blank = run_cli("plan", "lock", "--approve-breaking", " ", cwd=project)
    assert blank.returncode == 2
    assert "--approve-breaking needs a reason" in blank.stderr

    approved = run_cli(
        "plan", "lock", "--approve-breaking", "cookbook v2", "--today", "2026-01-05", cwd=project
    )
    assert approved.returncode == 0, approved.stderr
    assert "4 breaking change(s) approved: cookbook v2" in approved.stdout
    assert read_lock(project)["approvals"] == [
        {"date": "2026-01-05", "reason": "cookbook v2", "changes": BREAKING}
    ]

    after = run_cli("plan", "diff", "--format", "json", cwd=project, entry="module")
    assert after.returncode == 0, after.stderr
    report = json.loads(after.stdout)
    assert report["up_to_date"] is True
    assert report["approvals"][0]["reason"] == "cookbook v2"


def test_diff_as_json_lists_every_change(project: Path) -> None:
    """plan diff --format json gives the lock path, the breaking count and each change."""
    use_plan(project, "kitchen_breaking")
    result = run_cli("plan", "diff", "--format", "json", cwd=project)

    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["lock"] == "instrumentor.lock.json"
    assert report["breaking"] == 4
    assert [(c["kind"], c["event"]) for c in report["changes"]] == [
        ("frontend_removed", "Menu_Shared"),
        ("group_level_changed", "Pantry_Searched"),
        ("event_renamed", "Recipe_Published"),
        ("event_removed", "Seats_Purchased"),
    ]


def test_the_lock_path_comes_from_the_option_or_pyproject(tmp_path: Path) -> None:
    """The lock file path comes from --lock, else pyproject.toml, else the default."""
    root = make_project(tmp_path, lock="analytics/plan.lock.json")
    (root / "analytics").mkdir()
    assert run_cli("plan", "lock", cwd=root).returncode == 0
    assert read_lock(root, "analytics/plan.lock.json")["events"]

    assert run_cli("plan", "lock", "--lock", "other.json", cwd=root).returncode == 0
    use_plan(root, "kitchen_breaking")
    assert run_cli("plan", "diff", "--lock", "other.json", cwd=root).returncode == 1
    assert not (root / "instrumentor.lock.json").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "instrumentor.lock.json is not JSON"),
        ('{"lock_version": 99}', "is not an instrumentor lock of version 1"),
        ('{"lock_version": 1, "events": {}}', "group_hierarchy must be a list"),
        (
            '{"lock_version": 1, "group_hierarchy": ["account"], "events": []}',
            "group_hierarchy must be a list of {level, parent} objects",
        ),
        (
            '{"lock_version": 1, "group_hierarchy": [], "events": {}}',
            "events must be a list",
        ),
        (
            '{"lock_version": 1, "group_hierarchy": [], "events": [{"name": 3}]}',
            "events[0].name has the wrong type",
        ),
        (
            '{"lock_version": 1, "group_hierarchy": [], "events": [{"name": "A_B", '
            '"group_level": ["x"]}]}',
            "events[0].group_level has the wrong type",
        ),
        (
            '{"lock_version": 1, "group_hierarchy": [], "events": [], "approvals": "oops"}',
            "approvals must be a list",
        ),
    ],
)
def test_a_broken_lock_is_a_usage_error(tmp_path: Path, content: str, message: str) -> None:
    """An unreadable or malformed lock makes diff and lock exit 2, naming the defect."""
    root = make_project(tmp_path)
    (root / "instrumentor.lock.json").write_text(content, encoding="utf-8")

    for command in ("diff", "lock"):
        result = run_cli("plan", command, cwd=root)
        assert result.returncode == 2
        assert message in result.stderr
        assert "restore it from version control" in result.stderr


# --- the classifier, in process ----------------------------------------------------------------

HIERARCHY = [{"level": "account", "parent": None}, {"level": "project", "parent": "account"}]


def event(name: str, **fields: Any) -> dict[str, Any]:
    member = name.upper()
    return {
        "name": name,
        "category": "core_value",
        "group_level": "project",
        "description": "",
        "frontend": False,
        "deprecated": None,
        "replaced_by": None,
        "sunset": None,
        "waivers": {},
        "registry": "app.Events",
        "member": member,
        **fields,
    }


def changes(before: list[dict[str, Any]], after: list[dict[str, Any]], **plan: Any) -> list[Change]:
    lock = lock_content({"group_hierarchy": HIERARCHY, "events": before})
    new = lock_content({"group_hierarchy": plan.get("hierarchy", HIERARCHY), "events": after})
    return classify(lock, new)


def kinds(found: list[Change]) -> list[tuple[str, str, bool]]:
    return [(c.kind, c.event, c.breaking) for c in found]


def test_nothing_changed() -> None:
    """Identical plans classify to no change."""
    assert changes([event("Report_Created")], [event("Report_Created")]) == []


def test_a_renamed_member_is_a_rename_not_a_removal_and_an_addition() -> None:
    """A member keeping its attribute under a new name is one breaking rename."""
    found = changes([event("Report_Created")], [event("Report_Built", member="REPORT_CREATED")])
    assert kinds(found) == [("event_renamed", "Report_Created", True)]
    assert found[0].message == "Report_Created: renamed to Report_Built"


def test_a_removed_event_replaced_by_a_new_one_is_a_rename() -> None:
    """An event removed for its replaced_by event, newly added, is a rename."""
    old = event("Report_Created", deprecated="use Report_Built", replaced_by="Report_Built")
    found = changes([old], [event("Report_Built")])
    assert kinds(found) == [("event_renamed", "Report_Created", True)]


def test_a_removed_event_whose_replacement_stays_is_a_removal() -> None:
    """An event removed while its already-locked replacement stays is a removal."""
    old = event("Report_Created", deprecated="use Report_Built", replaced_by="Report_Built")
    found = changes([old, event("Report_Built")], [event("Report_Built")])
    assert kinds(found) == [("event_removed", "Report_Created", True)]
    assert found[0].message == "Report_Created: removed (its replacement Report_Built stays)"


def test_breaking_changes_come_first() -> None:
    """Breaking changes are listed before the others."""
    before = [event("Report_Created"), event("Search_Done", frontend=True)]
    after = [
        event("Report_Created", description="new", category="feature_usage"),
        event("Search_Done", group_level="account"),
        event("Tag_Added", frontend=True),
    ]
    assert kinds(changes(before, after)) == [
        ("group_level_changed", "Search_Done", True),
        ("frontend_removed", "Search_Done", True),
        ("category_changed", "Report_Created", False),
        ("description_changed", "Report_Created", False),
        ("event_added", "Tag_Added", False),
    ]


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({"frontend": True}, "frontend_added"),
        ({"deprecated": "old"}, "deprecation_changed"),
        ({"waivers": {"no_variant": "why"}}, "waivers_changed"),
        ({"registry": "app.billing.Events"}, "event_moved"),
        ({"member": "CREATED"}, "event_moved"),
    ],
)
def test_changes_that_break_nobody(fields: dict[str, Any], kind: str) -> None:
    """Frontend added, deprecation, waivers and a moved member are non-breaking changes."""
    found = changes([event("Report_Created")], [event("Report_Created", **fields)])
    assert kinds(found) == [(kind, "Report_Created", False)]


def test_deprecation_messages_say_what_happened() -> None:
    """Deprecation messages say deprecated, no longer deprecated or changed."""
    plain = event("Report_Created")
    deprecated = event("Report_Created", deprecated="use X", sunset="2027-01-01")
    later = event("Report_Created", deprecated="use X", sunset="2028-01-01")
    assert changes([plain], [deprecated])[0].message == "Report_Created: deprecated (use X)"
    assert changes([deprecated], [plain])[0].message == "Report_Created: no longer deprecated"
    assert "deprecation changed" in changes([deprecated], [later])[0].message


def test_a_level_added_below_the_others_is_not_breaking() -> None:
    """A hierarchy level added at the bottom is a non-breaking extension."""
    found = changes(
        [event("Report_Created")],
        [event("Report_Created")],
        hierarchy=[*HIERARCHY, {"level": "board", "parent": "project"}],
    )
    assert kinds(found) == [("hierarchy_extended", "", False)]
    assert found[0].message == "group hierarchy account > project -> account > project > board"


def test_a_changed_hierarchy_is_breaking() -> None:
    """A level inserted in the middle or dropped from the hierarchy is breaking."""
    inserted = [
        HIERARCHY[0],
        {"level": "workspace", "parent": "account"},
        {"level": "project", "parent": "workspace"},
    ]
    found = changes([event("Report_Created")], [event("Report_Created")], hierarchy=inserted)
    assert kinds(found) == [("hierarchy_changed", "", True)]
    assert found[0].message == "group hierarchy account > project -> account > workspace > project"
    dropped = changes([event("Report_Created")], [event("Report_Created")], hierarchy=HIERARCHY[:1])
    assert kinds(dropped) == [("hierarchy_changed", "", True)]

"""What lint takes a name in the code for: SDK, project wrapper, plan registry, or unrelated.

One case per test, in process (``scan_module`` on one module's source):
unrelated ``.track(``/``.capture(`` methods, classes that only share a registry's name, the
project's own ``analytics`` package, aliased ``event()`` in the plan, star imports, dynamic
lookups and module-level constants, unparseable files and character columns.
"""

from __future__ import annotations

import ast
import textwrap

import pytest

from instrumentor.cli._scan import ModuleScan, PlanIndex, RegistryInfo, scan_module

PLAN = PlanIndex(
    (
        RegistryInfo(
            "Events",
            "app.analytics.events",
            {"REPORT_CREATED": "Report_Created", "TEAM_JOINED": "Team_Joined"},
            frozenset({"by_name", "hierarchy"}),
        ),
    )
)


def scan(source: str, **options: object) -> ModuleScan:
    return scan_module(textwrap.dedent(source).encode(), "m.py", PLAN, **options)  # type: ignore[arg-type]


def rules(source: str, **options: object) -> list[tuple[str, int]]:
    return [(f.rule, f.line) for f in scan(source, **options).findings]


def test_track_and_capture_of_unrelated_objects_are_not_event_calls() -> None:
    """Only a receiver lint cannot resolve falls back to the method name, and then only for a
    literal that is, or looks like, an event name; other libraries' methods never do."""
    source = """
        import shipping
        from cameras import Camera

        camera = Camera()

        def f(carrier, client, shipment, uid, name):
            camera.capture("photo.jpg")
            shipping.track("Order_Shipped")
            shipment.track("1Z999AA10123456784")
            carrier.track(name, "express")
            client.capture("photo.jpg")
            client.track(uid, "Report_Created")
            client.track(uid, "report created")
            client.capture("Checkout_Started")
            client.capture("Order Completed")
            client.track(uid, "Reprot_Created")
        """
    assert rules(source) == [
        ("inline-event-name", 13),
        ("inline-event-name", 14),
        ("inline-event-name", 15),
        ("inline-event-name", 16),
        ("inline-event-name", 17),
    ]


def test_the_projects_own_wrappers_get_the_fallback_other_libraries_do_not() -> None:
    """A receiver from the project's own code (a relative import, a top-level package of the
    project or of the plan) may be its analytics wrapper: event-like literals are reported."""
    source = """
        from app.tracking import tracker
        from .client import wrapper
        from billing import meter

        tracker.track("Report_Created")
        wrapper.track("Team_Joined")
        meter.track("Invoice_Paid")
        tracker.track("photo.jpg")
        """
    assert rules(source) == [("inline-event-name", 6), ("inline-event-name", 7)]
    own = rules(source, project_modules=frozenset({"billing"}))
    assert own == [("inline-event-name", 6), ("inline-event-name", 7), ("inline-event-name", 8)]


@pytest.mark.parametrize(
    "source",
    [
        """
        import enum

        class Events(enum.Enum):
            MEETING_BOOKED = 1

        Events.MEETING_BOOKED
        """,
        """
        from calendar_app.models import Events

        Events.MEETING_BOOKED
        Events["MEETING_MOVED"]
        Events.by_name("Meeting_Moved")
        """,
        """
        from app.models import Events

        Events.MEETING_BOOKED
        """,
    ],
    ids=["local-class", "other-package", "same-top-package"],
)
def test_classes_that_only_share_a_registry_name_are_not_checked(source: str) -> None:
    """Neither a local class nor an absolute import of another module is the plan's registry."""
    result = scan(source)
    assert result.findings == []
    assert result.used_members == set()


def test_relative_imports_resolve_from_the_modules_own_name() -> None:
    """``from .events import Events`` in ``app.analytics`` is the plan's registry; in another
    package it is not; with the module unknown, lint falls back to the class name."""
    source = """
        from .events import Events

        Events.REPORT_CRATED
        """
    in_plan_package = scan(source, module="app.analytics.__init__")
    assert [(f.rule, f.hint) for f in in_plan_package.findings] == [
        ("unknown-event", "did you mean Events.REPORT_CREATED?")
    ]
    assert scan(source, module="calendar_app.views").findings == []
    assert rules(source) == [("unknown-event", 4)]
    parent = "from ..analytics.events import Events\nEvents.REPORT_CRATED\n"
    assert rules(parent, module="app.views.home") == [("unknown-event", 2)]


def test_the_plan_module_itself_refers_to_its_registry() -> None:
    """Scanned as ``app.analytics.events``, the class it defines is the plan's registry."""
    source = """
        from instrumentor import EventRegistry, event

        class Events(EventRegistry):
            REPORT_CREATED = event("Report_Created", category="core_value")

        DEFAULT = Events.REPORT_CREATED
        """
    result = scan(source, module="app.analytics.events")
    assert result.used_members == {("app.analytics.events.Events", "REPORT_CREATED")}


def test_an_own_analytics_package_is_not_segment() -> None:
    """With ``analytics`` among the project's modules, importing it is no SDK import and its
    ``track`` is the project's wrapper (fallback rules, not Segment's slots)."""
    source = """
        import analytics
        from analytics.events import Events

        analytics.track(Events.REPORT_CREATED)
        analytics.track("Report_Created")
        analytics.track(f"{Events}_x")
        """
    assert rules(source) == [
        ("direct-sdk-import", 2),
        ("direct-sdk-import", 3),
    ]
    own = scan(source, project_modules=frozenset({"analytics"}))
    assert [(f.rule, f.line, f.message) for f in own.findings] == [
        ("inline-event-name", 6, "event name 'Report_Created' written inline in analytics.track()")
    ]


@pytest.mark.parametrize(
    ("imports", "callee"),
    [
        ("from instrumentor import event as ev", "ev"),
        ("import instrumentor as i", "i.event"),
        ("import instrumentor._registry", "instrumentor._registry.event"),
        ("from instrumentor._registry import event as define", "define"),
        ("from instrumentor import *", "event"),
        ("from instrumentor.plan import event", "event"),
        ("import instrumentor.plan", "instrumentor.plan.event"),
        ("from instrumentor.plan import *", "event"),
    ],
)
def test_aliased_event_definitions_are_not_uses(imports: str, callee: str) -> None:
    """``event`` under another name is still a definition: its strings are not uses."""
    source = f"""
from instrumentor import EventRegistry
{imports}

class Events(EventRegistry):
    REPORT_CREATED = {callee}("Report_Created", category="core_value")
    TEAM_JOINED = {callee}("Team_Joined", category="x", replaced_by="Report_Created")
"""
    result = scan_module(source.encode(), "m.py", PLAN, module="app.analytics.events")
    assert result.used_names == set()
    assert result.used_members == set()


def test_an_unrelated_function_called_event_is_not_a_definition() -> None:
    """``from calendar_app import event``: its string arguments may well be uses."""
    source = """
        from calendar_app import event

        event("Team_Joined")
        """
    assert scan(source).used_names == {"Team_Joined"}


def test_star_imports_from_the_plan_bind_its_registries() -> None:
    """``from app.analytics.events import *`` (or its package) makes ``Events`` the registry."""
    for module in ("app.analytics.events", "app.analytics"):
        source = f"from {module} import *\n\nEvents.TEAM_JOINEDX\nEvents.TEAM_JOINED\n"
        result = scan(source)
        assert [(f.rule, f.line) for f in result.findings] == [("unknown-event", 3)]
        assert result.used_members == {("app.analytics.events.Events", "TEAM_JOINED")}
    assert rules("from calendar_app import *\n\nEvents.TEAM_JOINEDX\n") == []


def test_dynamic_lookups_are_warnings_and_recorded_for_unused_event() -> None:
    """``getattr(Events, name)``, ``Events[name]``, ``Events.by_name(name)``: a warning each, and
    the registry is marked looked up dynamically; literal and constant keys are checked."""
    source = """
        from app.analytics.events import Events

        MEMBER = "TEAM_JOINED"

        def f(name, other):
            getattr(Events, name)
            Events[name]
            Events.by_name(name)
            getattr(Events, "REPORT_CRATED")
            Events[MEMBER]
            getattr(other, name)
        """
    result = scan(source)
    assert [(f.rule, f.line, f.severity) for f in result.findings] == [
        ("dynamic-event-lookup", 7, "warning"),
        ("dynamic-event-lookup", 8, "warning"),
        ("dynamic-event-lookup", 9, "warning"),
        ("unknown-event", 10, "error"),
    ]
    assert "unused-event cannot see" in result.findings[0].hint
    assert result.dynamic_lookups == {"app.analytics.events.Events"}
    assert result.used_members == {("app.analytics.events.Events", "TEAM_JOINED")}


def test_module_level_string_constants_are_followed() -> None:
    """``EVENT = "Signed_Up"; analytics.track(uid, EVENT)`` is an inline name; a constant that
    is rebound anywhere (assignment, parameter, loop) is not followed."""
    source = """
        import analytics
        import instrumentor

        EVENT = "Signed_Up"
        OTHER = "Report_Created"
        LOOPED = "Team_Joined"
        SHADOWED = "Team_Joined"

        def f(uid, SHADOWED):
            analytics.track(uid, EVENT)
            instrumentor.track(OTHER)
            for LOOPED in ():
                pass
            analytics.track(uid, LOOPED)
            analytics.track(uid, SHADOWED)
        """
    found = [f for f in scan(source).findings if f.rule != "direct-sdk-import"]
    assert [(f.rule, f.line, f.message, f.hint) for f in found] == [
        (
            "inline-event-name",
            11,
            "event name 'Signed_Up' (the constant EVENT) written inline in analytics.track() "
            "(segment)",
            "define it in the plan and use Events.X",
        ),
        (
            "inline-event-name",
            12,
            "event name 'Report_Created' (the constant OTHER) written inline in "
            "instrumentor.track()",
            "use Events.REPORT_CREATED",
        ),
    ]


@pytest.mark.parametrize(
    "source",
    [b"x = " + b"-" * 300_000, b"x = " + b"-" * 5_000 + b"1\n", b"x = " + b"(" * 300 + b"\n"],
    ids=["parser-stack", "compiler-recursion", "nested-parentheses"],
)
def test_pathological_files_are_findings_not_crashes(source: bytes) -> None:
    """A file too deep for Python's parser is one finding, whatever the exception.

    How deep is too deep depends on the Python version (3.10's parser takes 5,000 unary minus
    signs, 3.12's does not): what this interpreter cannot parse must be a finding.
    """
    try:
        ast.parse(source, "deep.py")
        compiles = True
    except (SyntaxError, RecursionError, MemoryError):
        compiles = False
    for plan in (PLAN, PlanIndex()):
        result = scan_module(source, "deep.py", plan)
        if compiles:
            assert result.findings == []
            continue
        assert [f.rule for f in result.findings] in (["unparseable-file"], ["syntax-error"])
        (finding,) = result.findings
        assert finding.severity == "error"
        assert "exclude it" in finding.hint


def test_parser_stack_overflow_is_an_unparseable_file() -> None:
    """The reviewer's file: ``x = `` and 300,000 minus signs."""
    (finding,) = scan_module(b"x = " + b"-" * 300_000, "deep.py", PLAN).findings
    assert finding.rule == "unparseable-file"
    assert "too deeply nested" in finding.message


def test_columns_count_characters_not_bytes() -> None:
    """After non-ASCII text on the line, the column is the character's (what editors show)."""
    source = 'import instrumentor\nprint("déjà vu 🎉"); instrumentor.track("Report_Created")\n'
    (finding,) = scan_module(source.encode(), "m.py", PLAN).findings
    assert (finding.line, finding.column) == (2, source.splitlines()[1].index('"Report') + 1)
    latin = "# -*- coding: latin-1 -*-\nimport instrumentor\nx = 'é'; instrumentor.track('X_Y')\n"
    (finding,) = scan_module(latin.encode("latin-1"), "m.py", PLAN).findings
    assert finding.column == latin.splitlines()[2].index("'X_Y'") + 1

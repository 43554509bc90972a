"""Edge cases of the lint scan, in process: one module's source in, findings and references out."""

from __future__ import annotations

import textwrap
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from instrumentor.cli._scan import ModuleScan, PlanIndex, RegistryInfo, scan_module
from instrumentor.cli._suppress import read_suppressions

ROOT = Path(__file__).resolve().parents[2]
PLAN = PlanIndex(
    (
        RegistryInfo(
            "Events",
            "app.analytics.events",
            {"REPORT_CREATED": "Report_Created", "REPORT_SHARED": "Report_Shared"},
            frozenset({"by_name", "hierarchy", "track"}),
        ),
        RegistryInfo(
            "Events",
            "app.billing.events",
            {"PLAN_UPGRADED": "Plan_Upgraded"},
            frozenset({"by_name"}),
        ),
    )
)


def scan(source: str, plan: PlanIndex = PLAN) -> ModuleScan:
    return scan_module(textwrap.dedent(source).encode(), "m.py", plan)


def rules(source: str, plan: PlanIndex = PLAN) -> list[tuple[str, int]]:
    return [(f.rule, f.line) for f in scan(source, plan).findings]


def test_client_instances_are_resolved_through_attributes_and_chained_calls() -> None:
    """``self.client = Posthog(...)`` and ``Posthog(...).capture`` resolve to posthog."""
    source = """
        from posthog import Posthog

        class Tracker:
            def __init__(self):
                self.client = Posthog("key")

            def send(self, uid, page):
                self.client.capture(uid, f"{page}_Viewed")
                Posthog("key").capture(uid, "Page" + "_Viewed")
        """
    found = scan(source).findings
    assert [(f.rule, f.line, f.message) for f in found] == [
        ("direct-sdk-import", 2, "imports the posthog SDK (posthog) outside the analytics package"),
        (
            "dynamic-event-name",
            9,
            "event name built at run time (an f-string) in self.client.capture() (posthog)",
        ),
        (
            "dynamic-event-name",
            10,
            "event name built at run time (concatenation) in Posthog('key').capture() (posthog)",
        ),
    ]


def test_the_fallback_on_method_names_reports_literals_only() -> None:
    """Unresolved ``.track(``/``.capture(``: a literal is reported, a dynamic name is not (it
    may be any object's method); keywords ``event=``/``event_type=`` are read too."""
    source = """
        def f(tracker, uid, x):
            tracker.track("Report_Created")
            tracker.track(uid, "Report_Shared")
            tracker.track(event_type="Other_Thing_Done")
            tracker.track(f"{x}_Done")
            tracker.track(x)
            tracker.track(*x)
            tracker.track()
        """
    assert rules(source) == [
        ("inline-event-name", 3),
        ("inline-event-name", 4),
        ("inline-event-name", 5),
    ]


def test_placeholder_free_f_string_is_an_inline_name_and_join_is_dynamic() -> None:
    """``f"Report_Created"`` is a literal; ``"_".join(parts)`` builds a name."""
    source = """
        import instrumentor

        instrumentor.track(f"Report_Created")
        instrumentor.track("_".join(["Report", "Created"]))
        """
    found = scan(source).findings
    assert [(f.rule, f.hint) for f in found] == [
        ("inline-event-name", "use Events.REPORT_CREATED"),
        ("dynamic-event-name", found[1].hint),
    ]
    assert "str.join()" in found[1].message


def test_registry_classes_are_told_apart_by_the_module_they_come_from() -> None:
    """Two registries named ``Events``: the import's module picks the one checked."""
    source = """
        from app.billing.events import Events

        Events.PLAN_UPGRADED
        Events.REPORT_CREATED
        """
    result = scan(source)
    assert [(f.rule, f.line, f.hint) for f in result.findings] == [
        ("unknown-event", 5, "define it in app.billing.events first, or use one of its events")
    ]
    assert result.used_members == {("app.billing.events.Events", "PLAN_UPGRADED")}


def test_registry_api_private_names_and_unrelated_names_are_not_events() -> None:
    """``Events.by_name``, ``Events._missing_`` and an ``Events`` not from an import are fine."""
    source = """
        from app.analytics.events import Events

        Events.by_name("Report_Created")
        Events.hierarchy
        Events._missing_
        Events.REPORT_CREATED.track()

        def local():
            class Other:
                pass
            Other.ANYTHING
        """
    result = scan(source)
    assert result.findings == []
    assert result.used_members == {
        ("app.analytics.events.Events", "REPORT_CREATED"),
    }


def test_definitions_in_the_plan_do_not_count_as_uses() -> None:
    """Names inside ``event(...)`` (the name, ``replaced_by=``) are definitions, not uses;
    the same literal elsewhere is a use."""
    source = """
        from instrumentor import EventRegistry, event

        class Events(EventRegistry):
            REPORT_CREATED = event("Report_Created", category="core_value")
            REPORT_SHARED = event("Report_Shared", category="x", replaced_by="Report_Created")
        """
    assert scan(source).used_names == set()
    assert scan('LOOKUP = {"Report_Shared": 1}\n').used_names == {"Report_Shared"}


def test_without_a_plan_no_registry_rule_runs_and_hints_stay_generic() -> None:
    """An empty plan: ``Events.X`` is not checked; inline names get the generic hint."""
    source = """
        from app.analytics.events import Events
        import analytics

        Events.WHATEVER
        analytics.track("u", "Report_Created")
        """
    found = scan(source, PlanIndex()).findings
    assert [(f.rule, f.hint) for f in found] == [
        ("direct-sdk-import", ""),
        ("inline-event-name", "define it in the plan and use Events.X"),
    ]


def test_encoding_declarations_are_honoured_and_bad_bytes_do_not_crash() -> None:
    """A latin-1 module parses; null bytes and bad UTF-8 are ``syntax-error`` findings."""
    latin = '# -*- coding: latin-1 -*-\nimport instrumentor\ninstrumentor.track("Café_Opened")\n'
    found = scan_module(latin.encode("latin-1"), "m.py", PLAN).findings
    assert [(f.rule, f.message) for f in found] == [
        ("inline-event-name", "event name 'Café_Opened' written inline in instrumentor.track()")
    ]
    for source in (b"x = 1\0\n", b"x = '\xff'\n"):
        assert [f.rule for f in scan_module(source, "m.py", PLAN).findings] == ["syntax-error"]


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("track(\"X\", f'{y}') + \n.#:[]=Events\t\\")), max_size=80
    )
)
def test_any_text_is_findings_never_an_exception(text: str) -> None:
    """Whatever the bytes, the scan returns findings (possibly a syntax error), never raises."""
    scan_module(text.encode(), "m.py", PLAN)
    read_suppressions(text.encode())


def test_the_repository_itself_scans_without_crashing() -> None:
    """Every module of this repository (hundreds of real constructs) scans cleanly."""
    files = sorted((ROOT / "instrumentor").rglob("*.py")) + sorted((ROOT / "tests").rglob("*.py"))
    assert len(files) > 50
    for path in files:
        result = scan_module(path.read_bytes(), str(path), PLAN)
        syntax = [f for f in result.findings if f.rule == "syntax-error"]
        assert syntax == [] or path.name == "broken.py", syntax


def test_suppressions_live_in_comments_not_strings() -> None:
    """Only comments suppress; the rule list is optional; the reason follows ``--``."""
    source = textwrap.dedent(
        """
        s = "# instrumentor: ignore[inline-event-name] -- not a comment"
        x = 1  # instrumentor: ignore -- every rule on this line
        y = 2  # noqa: E501  # instrumentor: ignore[a, b]
        """
    ).encode()
    found = read_suppressions(source)
    assert sorted(found) == [3, 4]
    assert (found[3].rules, found[3].reason) == (frozenset(), "every rule on this line")
    assert (found[4].rules, found[4].reason) == (frozenset({"a", "b"}), "")
    assert found[3].covers("anything")
    assert not found[4].covers("c")


def test_a_space_before_the_rule_list_is_allowed() -> None:
    """``ignore [rule] -- why`` names the rule; it is not read as a blanket ignore."""
    source = b"x = 1  # instrumentor: ignore [inline-event-name, unknown-event] -- why\n"
    (suppression,) = read_suppressions(source).values()
    assert suppression.rules == frozenset({"inline-event-name", "unknown-event"})
    assert suppression.reason == "why"
    assert not suppression.covers("direct-sdk-import")

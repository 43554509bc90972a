"""The tracking plan: definition-time errors, introspection, hierarchies."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from instrumentor import EventRegistry, event
from instrumentor.exceptions import (
    DuplicateEventError,
    NamingRuleError,
    PlanError,
    UnknownCategoryError,
    UnknownGroupLevelError,
    WaiverError,
)
from instrumentor.plan import CATEGORIES, DEFAULT_HIERARCHY, GroupHierarchy, all_events, find_event
from instrumentor.testing import forget_registry
from tests.plan import Events, OrgEvents


@pytest.fixture
def scratch() -> Iterator[list[type[EventRegistry]]]:
    """Registries appended here are forgotten after the test, so names can be reused."""
    made: list[type[EventRegistry]] = []
    yield made
    for registry in made:
        forget_registry(registry)


class TestDefinition:
    def test_members_carry_their_spec(self) -> None:
        """A member exposes name, category, level, description and frontend flag."""
        member = Events.REPORT_CREATED
        assert member.event_name == "Report_Created"
        assert member.category == "core_value"
        assert member.group_level == "project"
        assert member.description == "A user created a report."
        assert member.frontend is False
        assert Events.SEARCH_PERFORMED.frontend is True

    def test_group_level_defaults_to_the_top_of_the_hierarchy(self) -> None:
        """An event without a level belongs to the account (or a custom hierarchy's top)."""
        assert Events.SEARCH_PERFORMED.group_level == "account"
        assert OrgEvents.ORGANIZATION_CREATED.group_level == "organization"

    def test_spec_records_where_it_was_defined(self) -> None:
        """The definition site is file:line of the event() call."""
        assert re.search(r"tests[/\\]plan\.py:\d+$", Events.REPORT_CREATED.spec.defined_at)

    def test_deprecation_metadata(self) -> None:
        """Deprecation reason, replacement and sunset date are kept; the date is parsed."""
        spec = Events.REPORT_EXPORTED.spec
        assert spec.deprecated == "exports are tracked as Report_Shared now"
        assert spec.replaced_by == "Report_Shared"
        assert spec.sunset == dt.date(2027, 6, 30)

    def test_repr_names_registry_member_and_event(self) -> None:
        """The repr shows where the event lives and what it sends."""
        assert repr(Events.PLAN_UPGRADED) == "<Events.PLAN_UPGRADED: 'Plan_Upgraded'>"


class TestIntrospection:
    def test_iterates_in_definition_order(self) -> None:
        """Iterating a registry yields its events in the order written."""
        assert [e.event_name for e in Events][:2] == ["Report_Created", "Search_Performed"]

    def test_lookup_by_name(self) -> None:
        """by_name and find_event find an event by its exact sent name."""
        assert Events.by_name("Plan_Upgraded") is Events.PLAN_UPGRADED
        assert Events.by_name("Team_Joined") is None  # lives in another registry
        assert find_event("Team_Joined") is OrgEvents.TEAM_JOINED
        assert find_event("team_joined") is None

    def test_all_events_spans_registries(self) -> None:
        """all_events() covers every registry in the process."""
        names = {e.event_name for e in all_events()}
        assert {"Report_Created", "Team_Joined"} <= names

    def test_hierarchy_is_on_the_registry(self) -> None:
        """Each registry knows its hierarchy; the default is account > workspace > project."""
        assert Events.hierarchy is DEFAULT_HIERARCHY
        assert OrgEvents.hierarchy.levels == ("organization", "team")
        assert OrgEvents.hierarchy.parent("team") == "organization"
        assert DEFAULT_HIERARCHY.path_to("workspace") == ("account", "workspace")


class TestDuplicates:
    def test_same_name_twice_in_one_registry(self, scratch: list[type[EventRegistry]]) -> None:
        """Two members with one name fail, naming both lines (Enum would silently alias)."""
        with pytest.raises(DuplicateEventError) as info:

            class Dup(EventRegistry):
                A = event("Widget_Created", category="core_value")
                B = event("Widget_Created", category="core_value")

        message = str(info.value)
        assert "duplicate event name 'Widget_Created'" in message
        assert message.count("test_registry.py:") == 2

    def test_near_duplicate_in_one_registry(self) -> None:
        """Names differing only in case or separators collide; both spellings are named."""
        with pytest.raises(DuplicateEventError, match="near-duplicate") as info:

            class Near(EventRegistry):
                A = event("Widget_Created", category="core_value")
                B = event(
                    "WIDGET_CREATED",
                    category="core_value",
                    waive={"title_case": "testing near duplicates", "past_tense": "same"},
                )

        message = str(info.value)
        assert "'WIDGET_CREATED' at " in message
        assert "is too close to 'Widget_Created', defined at " in message
        assert "Near.A (" in message
        assert message.count("test_registry.py:") == 2

    def test_near_duplicate_in_another_registry_names_the_existing_spelling(
        self, scratch: list[type[EventRegistry]]
    ) -> None:
        """'API_Key_Rotated' after 'Api_Key_Rotated': the message shows what A.K is spelled."""

        class Keys(EventRegistry):
            API_KEY_ROTATED = event("Api_Key_Rotated", category="configuration")

        scratch.append(Keys)
        with pytest.raises(DuplicateEventError) as info:

            class MoreKeys(EventRegistry):
                ROTATED = event("API_Key_Rotated", category="configuration")

        message = str(info.value)
        assert message.startswith("near-duplicate event name 'API_Key_Rotated' at ")
        assert "is too close to 'Api_Key_Rotated', defined at " in message
        assert "<locals>.Keys.API_KEY_ROTATED (" in message
        assert message.count("test_registry.py:") == 2
        assert "use 'Api_Key_Rotated'" in message

    def test_same_name_in_another_registry(self) -> None:
        """A name already defined in any registry fails, naming the first registry and site."""
        with pytest.raises(DuplicateEventError) as info:

            class Other(EventRegistry):
                AGAIN = event("Report_Created", category="core_value")

        message = str(info.value)
        assert "name 'Report_Created': defined at Events.REPORT_CREATED (" in message
        assert "plan.py:" in message
        assert "test_registry.py:" in message

    def test_failed_registry_leaves_no_trace(self, scratch: list[type[EventRegistry]]) -> None:
        """A registry rejected at import registers none of its events."""
        with pytest.raises(UnknownCategoryError):

            class Broken(EventRegistry):
                GOOD = event("Gadget_Created", category="core_value")
                BAD = event("Gadget_Deleted", category="nonsense")

        assert find_event("Gadget_Created") is None

        class Fixed(EventRegistry):
            GOOD = event("Gadget_Created", category="core_value")

        scratch.append(Fixed)
        assert find_event("Gadget_Created") is Fixed.GOOD

    def test_forgotten_registry_frees_its_names(self, scratch: list[type[EventRegistry]]) -> None:
        """forget_registry lets tests reuse names; the live registry is unaffected."""

        class First(EventRegistry):
            X = event("Doohickey_Created", category="core_value")

        forget_registry(First)

        class Second(EventRegistry):
            X = event("Doohickey_Created", category="core_value")

        scratch.append(Second)
        assert find_event("Doohickey_Created") is Second.X


class TestRules:
    @pytest.mark.parametrize(
        ("name", "rule"),
        [
            ("report_created", "title_case"),
            ("Report", "object_action"),
            ("Report_Create", "past_tense"),
            ("Report_V2_Created", "no_digits"),
            ("Report_PDF_Exported", "no_variant"),
            ("Report_" + "Really_" * 10 + "Created", "length"),
        ],
    )
    def test_naming_rule_breaks_fail_at_import(self, name: str, rule: str) -> None:
        """Each naming rule is enforced with its rule id and a hint to fix or waive."""
        with pytest.raises(NamingRuleError) as info:

            class Bad(EventRegistry):
                X = event(name, category="core_value")

        assert f"[{rule}]" in str(info.value)
        assert "waive=" in str(info.value)

    def test_waiver_with_reason_allows_the_name(self, scratch: list[type[EventRegistry]]) -> None:
        """A rule waived with a written reason is not enforced for that event."""

        class Legacy(EventRegistry):
            OLD = event(
                "Dashboard_View",
                category="navigation",
                waive={"past_tense": "kept for continuity with 2023 dashboards"},
            )

        scratch.append(Legacy)
        assert Legacy.OLD.spec.waivers["past_tense"].startswith("kept")

    @pytest.mark.parametrize("waive", [{"past_tense": "  "}, {"no_such_rule": "because"}])
    def test_waiver_needs_reason_and_known_rule(self, waive: dict[str, str]) -> None:
        """A blank reason or an unknown rule id is an error."""
        with pytest.raises(WaiverError):

            class Bad(EventRegistry):
                X = event("Dashboard_View", category="navigation", waive=waive)

    def test_unknown_category(self) -> None:
        """Only the eight categories are accepted, and the error lists them."""
        with pytest.raises(UnknownCategoryError, match="core_value"):

            class Bad(EventRegistry):
                X = event("Gizmo_Created", category="core")

        assert len(CATEGORIES) == 8

    def test_unknown_group_level(self) -> None:
        """A level outside the registry's hierarchy fails and says how to declare one."""
        with pytest.raises(UnknownGroupLevelError, match="hierarchy="):

            class Bad(EventRegistry):
                X = event("Gizmo_Created", category="core_value", group_level="team")

    def test_custom_hierarchy_levels_are_accepted(self, scratch: list[type[EventRegistry]]) -> None:
        """A registry may declare its own hierarchy, also inherited from a memberless base."""

        class Base(EventRegistry, hierarchy=GroupHierarchy("tenant", "site")):
            pass

        class Sites(Base):
            SITE_OPENED = event("Site_Opened", category="lifecycle", group_level="site")

        scratch.append(Sites)
        assert Sites.SITE_OPENED.group_level == "site"
        assert Sites.hierarchy.top == "tenant"

    def test_members_must_be_events(self) -> None:
        """A plain value in a registry is rejected instead of becoming a silent member."""
        with pytest.raises(PlanError, match=r"defined with\s+event"):

            class Bad(EventRegistry):
                X = 3

    def test_bad_sunset_date(self) -> None:
        """A sunset that is not an ISO date fails at definition."""
        with pytest.raises(PlanError, match="ISO date"):
            event("Gizmo_Created", category="core_value", sunset="next spring")

    def test_blank_deprecation_reason(self) -> None:
        """deprecated= needs a reason."""
        with pytest.raises(PlanError, match="needs a reason"):

            class Bad(EventRegistry):
                X = event("Gizmo_Created", category="core_value", deprecated=" ")

    @pytest.mark.parametrize("levels", [(), ("account", "account"), ("Account",), ("two words",)])
    def test_invalid_hierarchies(self, levels: tuple[str, ...]) -> None:
        """Empty, repeated or non-identifier levels are rejected."""
        with pytest.raises(PlanError):
            GroupHierarchy(*levels)


class TestDuplicateLoopholes:
    def test_reusing_a_spec_object_elsewhere_is_a_duplicate(self) -> None:
        """One event() result placed in a second registry is caught."""
        with pytest.raises(DuplicateEventError):

            class Again(EventRegistry):
                REPORT_CREATED = Events.REPORT_CREATED.spec

    def test_a_factory_minting_registries_at_one_line_is_caught(
        self, scratch: list[type[EventRegistry]]
    ) -> None:
        """Two classes made by one factory line are two definitions, not a reload."""

        def make() -> type[EventRegistry]:
            class Minted(EventRegistry):
                X = event("Factory_Made", category="lifecycle")

            return Minted

        scratch.append(make())
        with pytest.raises(DuplicateEventError):
            make()

    def test_reloading_a_module_redefines_its_plan(self, tmp_path: Path) -> None:
        """importlib.reload of a plan module is not a duplicate."""
        import importlib
        import sys

        (tmp_path / "reloadable_plan.py").write_text(
            "from instrumentor import EventRegistry, event\n"
            "class ReloadEvents(EventRegistry):\n"
            "    X = event('Plan_Reloaded', category='lifecycle')\n"
        )
        sys.path.insert(0, str(tmp_path))
        try:
            module = importlib.import_module("reloadable_plan")
            module = importlib.reload(module)
            assert find_event("Plan_Reloaded") is module.ReloadEvents.X
        finally:
            sys.path.remove(str(tmp_path))
            forget_registry(module.ReloadEvents)
            sys.modules.pop("reloadable_plan", None)

    def test_empty_group_level_is_an_error(self) -> None:
        """An empty level is not silently the top level."""
        with pytest.raises(UnknownGroupLevelError):

            class Bad(EventRegistry):
                X = event("Gizmo_Created", category="core_value", group_level="")

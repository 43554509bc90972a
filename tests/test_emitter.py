"""Bundled emission: identify + group per level + track, de-duplication, imperative API."""

from __future__ import annotations

import logging
import threading

import pytest

import instrumentor
import instrumentor.plan
import instrumentor.signals
from instrumentor import (
    Group,
    MissingContextError,
    TrackingUsageError,
    bind_context,
    bound_context,
    establish_group_hierarchy,
    stats,
    track,
    tracks,
)
from instrumentor.testing import CapturedEvents, capture_events
from instrumentor.transports import GroupMessage, IdentifyMessage, TrackMessage
from tests.plan import Events, OrgEvents


def full_identity() -> None:
    bind_context(
        user_id="u_1",
        user_traits={"email": "jane@example.com"},
        account_id="acc_1",
        account_name="Acme",
        account_traits={"plan": "pro"},
        workspace_id="ws_1",
        workspace_name="Research",
        project_id="proj_1",
        project_name="Q3 Reports",
    )


class TestBundle:
    def test_first_track_bundles_identify_groups_and_track(self, tracked: CapturedEvents) -> None:
        """Identify, then a group per level top-down with its parent, then the track."""
        full_identity()
        track(Events.REPORT_CREATED)
        kinds = [m.type for m in tracked.messages]
        assert kinds == ["identify", "group", "group", "group", "track"]
        identify, account, workspace, project, event = tracked.messages
        assert isinstance(identify, IdentifyMessage)
        assert (identify.user_id, identify.group_id) == ("u_1", "acc_1")
        assert identify.traits == {"email": "jane@example.com"}
        assert isinstance(account, GroupMessage)
        assert account.traits == {"name": "Acme", "plan": "pro", "group_type": "account"}
        assert account.parent_group_id is None
        assert isinstance(workspace, GroupMessage)
        assert workspace.traits == {
            "name": "Research",
            "group_type": "workspace",
            "parent_group_id": "acc_1",
        }
        assert isinstance(project, GroupMessage)
        assert (project.group_id, project.parent_group_id) == ("proj_1", "ws_1")
        assert isinstance(event, TrackMessage)
        assert (event.event, event.user_id, event.group_id) == ("Report_Created", "u_1", "proj_1")
        assert event.to_dict()["context"] == {"groupId": "proj_1"}

    def test_track_carries_the_group_of_its_own_level(self, tracked: CapturedEvents) -> None:
        """Account, workspace and project events each carry their level's id."""
        full_identity()
        track(Events.PLAN_UPGRADED)
        track(Events.WORKSPACE_SETTINGS_UPDATED)
        track(Events.REPORT_CREATED)
        assert [(m.group_type, m.group_id) for m in tracked.tracks] == [
            ("account", "acc_1"),
            ("workspace", "ws_1"),
            ("project", "proj_1"),
        ]

    def test_only_levels_up_to_the_event_are_grouped(self, tracked: CapturedEvents) -> None:
        """An account-level event does not group the workspace or project."""
        full_identity()
        track(Events.PLAN_UPGRADED)
        assert [m.group_id for m in tracked.groups] == ["acc_1"]

    def test_unchanged_identify_and_groups_are_not_resent(self, tracked: CapturedEvents) -> None:
        """Within bundle_ttl, repeated tracks (even from new requests) send only the track."""
        full_identity()
        track(Events.REPORT_CREATED)
        with bound_context(project_id="proj_1"):  # a new but equal context
            track(Events.REPORT_CREATED)
        track(Events.REPORT_CREATED)
        assert [m.type for m in tracked.messages] == ["identify"] + ["group"] * 3 + ["track"] * 3

    def test_muted_tracks_do_not_use_up_the_bundle(self, tracked: CapturedEvents) -> None:
        """A track while the signal is muted leaves identify/group due for the next one."""
        full_identity()
        with instrumentor.signals.event_emitted.muted():
            track(Events.PLAN_UPGRADED)
        with bound_context(user_id="u_1"):  # a fresh, equal context
            track(Events.PLAN_UPGRADED)
        assert [m.type for m in tracked.messages] == ["identify", "group", "track"]

    def test_a_new_project_sends_only_its_group(self, tracked: CapturedEvents) -> None:
        """Entering another project groups it (parent included) without re-identifying."""
        full_identity()
        track(Events.REPORT_CREATED)
        tracked.clear()
        with bound_context(project_id="proj_2"):
            track(Events.REPORT_CREATED)
        assert [m.type for m in tracked.messages] == ["group", "track"]
        assert (tracked.groups[0].group_id, tracked.groups[0].parent_group_id) == ("proj_2", "ws_1")

    def test_every_user_of_a_group_gets_its_group_call(self, tracked: CapturedEvents) -> None:
        """A group call links its user: a second user of the workspace is grouped too."""
        for user in ("u_1", "u_2"):
            with bound_context(user_id=user, account_id="acc_1", workspace_id="ws_1"):
                track(Events.WORKSPACE_SETTINGS_UPDATED)
        assert [(g.user_id, g.group_id) for g in tracked.groups] == [
            ("u_1", "acc_1"),
            ("u_1", "ws_1"),
            ("u_2", "acc_1"),
            ("u_2", "ws_1"),
        ]

    def test_changed_traits_are_resent(self, tracked: CapturedEvents) -> None:
        """New user traits mean a new identify."""
        full_identity()
        track(Events.PLAN_UPGRADED)
        bind_context(user_traits={"email": "jane@new.example"})
        track(Events.PLAN_UPGRADED)
        assert [m.traits["email"] for m in tracked.identifies] == [
            "jane@example.com",
            "jane@new.example",
        ]

    @pytest.mark.instrumentor(bundle_ttl=0)
    def test_ttl_zero_bundles_every_time(self, tracked: CapturedEvents) -> None:
        """bundle_ttl=0 forces identify and group with every track."""
        full_identity()
        track(Events.PLAN_UPGRADED)
        track(Events.PLAN_UPGRADED)
        assert [m.type for m in tracked.messages] == ["identify", "group", "track"] * 2

    def test_ttl_expiry_resends(
        self, tracked: CapturedEvents, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """After bundle_ttl seconds the identify and groups are sent again."""
        import instrumentor._emitter as emitter

        clock = [1_000_000.0]
        monkeypatch.setattr(emitter, "_now", lambda: clock[0])
        full_identity()
        track(Events.PLAN_UPGRADED)
        clock[0] += 3599
        track(Events.PLAN_UPGRADED)
        clock[0] += 2
        track(Events.PLAN_UPGRADED)
        assert [m.type for m in tracked.messages] == [
            "identify", "group", "track", "track", "identify", "group", "track",
        ]  # fmt: skip

    def test_missing_middle_level_links_to_the_nearest_parent(
        self, tracked: CapturedEvents
    ) -> None:
        """A project bound without a workspace names the account as its parent."""
        bind_context(user_id="u_1", account_id="acc_1", project_id="proj_1")
        track(Events.REPORT_CREATED)
        assert [(g.group_id, g.parent_group_id) for g in tracked.groups] == [
            ("acc_1", None),
            ("proj_1", "acc_1"),
        ]

    def test_explicit_group_id_overrides_the_context(self, tracked: CapturedEvents) -> None:
        """track(group_id=...) groups that id under the bound parent and carries it."""
        full_identity()
        track(Events.REPORT_CREATED, group_id="proj_x")
        assert tracked.tracks[0].group_id == "proj_x"
        assert tracked.groups[-1].group_id == "proj_x"
        assert tracked.groups[-1].parent_group_id == "ws_1"

    def test_identify_carries_an_explicit_account(self, tracked: CapturedEvents) -> None:
        """At user level too, an explicit account id is the identify's group."""
        bind_context(user_id="u_new")
        track(Events.PLAN_UPGRADED, group_id="acc_new")
        assert tracked.identifies[0].group_id == "acc_new"

    def test_timestamps_are_utc_and_shared_by_the_bundle(self, tracked: CapturedEvents) -> None:
        """Every message of one emission carries the same UTC timestamp."""
        full_identity()
        track(Events.PLAN_UPGRADED)
        stamps = {m.timestamp for m in tracked.messages}
        assert len(stamps) == 1
        assert next(iter(stamps)).utcoffset() is not None
        assert len({m.message_id for m in tracked.messages}) == 3


class TestBundleMemory:
    def test_the_memory_keeps_no_finished_request_or_replaced_configuration_alive(
        self,
    ) -> None:
        """The bundle memory refers to no context (no user's traits) and no runtime."""
        import gc

        from instrumentor import _bundle, _state

        with capture_events():
            with bound_context(
                user_id="u_gone", user_traits={"email": "gone@example.com"}, account_id="a_1"
            ):
                ctx = instrumentor.current_context()
                track(Events.PLAN_UPGRADED)
            runtime = _state.current()
            assert runtime is not None
            verdict = _bundle.last_verdict.get()
            state = runtime.bundles
        assert verdict is not None
        assert verdict[0] == ctx.serial
        assert verdict[1] == runtime.generation
        for held in (ctx, runtime):
            referrers = gc.get_referrers(held)
            assert not any(r is verdict for r in referrers)
            assert not any(r is state for r in referrers)

    def test_unrepresentable_traits_are_always_resent(self, tracked: CapturedEvents) -> None:
        """A fingerprint that cannot be computed never matches an earlier one."""
        from instrumentor._bundle import fingerprint

        class Opaque:
            def __repr__(self) -> str:
                raise RuntimeError("no repr")

        assert fingerprint(Opaque()) != fingerprint(Opaque())

    def test_explicit_group_ids_do_not_grow_the_context(self, tracked: CapturedEvents) -> None:
        """Thousands of explicit ids leave the (immutable) context as it was bound."""
        full_identity()
        before = instrumentor.current_context()
        fields_before = {name: getattr(before, name) for name in before.__slots__}
        for i in range(2000):
            track(Events.REPORT_CREATED, group_id=f"proj_{i}")
        assert instrumentor.current_context() is before
        assert {name: getattr(before, name) for name in before.__slots__} == fields_before
        assert len(tracked.tracks) == 2000

    def test_process_record_is_bounded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The record of users stays under its cap, forgetting the least recently active."""
        import instrumentor._bundle as bundle
        import instrumentor._emitter as emitter

        monkeypatch.setattr(bundle, "MAX_USERS", 100)
        with capture_events():
            for i in range(500):
                with bound_context(user_id=f"u_{i}", account_id="acc_1"):
                    track(Events.PLAN_UPGRADED)
            assert emitter.bundle_state().remembered() <= 100


class TestInstanceLevel:
    @pytest.mark.instrumentor(instance_level=True)
    def test_user_id_is_the_account_id(self, tracked: CapturedEvents) -> None:
        """With instance-level tracking every message names the account as the user."""
        full_identity()
        track(Events.REPORT_CREATED)
        assert {m.user_id for m in tracked.messages} == {"acc_1"}
        assert tracked.identifies[0].traits == {"name": "Acme", "plan": "pro"}

    @pytest.mark.instrumentor(instance_level=True)
    def test_works_without_a_user(self, tracked: CapturedEvents) -> None:
        """Instance-level tracking needs only the account."""
        bind_context(account_id="acc_9")
        track(Events.PLAN_UPGRADED)
        tracked.assert_tracked(Events.PLAN_UPGRADED, user_id="acc_9", group_id="acc_9")

    def test_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """ANALYTICS_INSTANCE_LEVEL=true turns it on."""
        monkeypatch.setenv("ANALYTICS_INSTANCE_LEVEL", "true")
        full_identity()
        with capture_events() as tracked:
            track(Events.PLAN_UPGRADED)
        assert tracked.tracks[0].user_id == "acc_1"

    @pytest.mark.instrumentor(instance_level=True)
    def test_custom_hierarchy_uses_its_top_level(self, tracked: CapturedEvents) -> None:
        """The top of the event's own hierarchy is the user."""
        bind_context(groups={"organization": "org_1", "team": Group("team_1", name="Red")})
        track(OrgEvents.TEAM_JOINED)
        tracked.assert_tracked(OrgEvents.TEAM_JOINED, user_id="org_1", group_id="team_1")

    @pytest.mark.instrumentor(instance_level=True)
    def test_instance_level_sign_up_names_its_account(self, tracked: CapturedEvents) -> None:
        """An account event with an explicit account id needs no bound account."""
        track(Events.PLAN_UPGRADED, group_id="acc_new")
        assert [(m.type, m.user_id) for m in tracked.messages] == [
            ("identify", "acc_new"),
            ("group", "acc_new"),
            ("track", "acc_new"),
        ]
        assert tracked.identifies[0].group_id == "acc_new"


class TestCustomHierarchy:
    def test_groups_follow_the_declared_levels(self, tracked: CapturedEvents) -> None:
        """organization > team: group_type and parent come from the registry's hierarchy."""
        bind_context(user_id="u_1", groups={"organization": "org_1", "team": "team_1"})
        track(OrgEvents.TEAM_JOINED)
        assert [(g.group_type, g.group_id, g.parent_group_id) for g in tracked.groups] == [
            ("organization", "org_1", None),
            ("team", "team_1", "org_1"),
        ]

    def test_hierarchies_do_not_share_bundle_verdicts(self, tracked: CapturedEvents) -> None:
        """Registries with different hierarchies each get their groups established."""
        from instrumentor import EventRegistry, event
        from instrumentor.testing import forget_registry

        class Tenants(EventRegistry, hierarchy=("tenant", "account")):
            ROLE_GRANTED = event("Role_Granted", category="configuration", group_level="account")

        try:
            bind_context(user_id="u_1", account_id="acc_1", groups={"tenant": "ten_1"})
            track(Events.PLAN_UPGRADED)
            track(Tenants.ROLE_GRANTED)
        finally:
            forget_registry(Tenants)
        assert [(g.group_type, g.group_id) for g in tracked.groups] == [
            ("account", "acc_1"),
            ("tenant", "ten_1"),
            ("account", "acc_1"),
        ]
        assert tracked.groups[2].parent_group_id == "ten_1"

    def test_plan_hierarchy_is_the_shared_one(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With one hierarchy in the plan, identify/group need no hierarchy= argument."""
        from instrumentor import _registry as registry

        monkeypatch.setattr(registry._catalog, "registries", [OrgEvents])
        assert instrumentor.plan.plan_hierarchy() is OrgEvents.hierarchy
        bind_context(user_id="u_1", groups={"organization": "org_1", "team": "t_1"})
        with capture_events() as tracked:
            instrumentor.group("team")
            instrumentor.identify()
            instrumentor.group()
        assert [(g.group_type, g.parent_group_id) for g in tracked.groups] == [
            ("team", "org_1"),
            ("organization", None),
        ]
        assert tracked.identifies[0].group_id == "org_1"
        monkeypatch.setattr(registry._catalog, "registries", [Events, OrgEvents])
        assert instrumentor.plan.plan_hierarchy() is instrumentor.plan.DEFAULT_HIERARCHY


class TestImperativeApi:
    def test_member_track_method(self, tracked: CapturedEvents) -> None:
        """Events.X.track() is track(Events.X)."""
        full_identity()
        Events.PLAN_UPGRADED.track(properties={"to": "enterprise"})
        tracked.assert_tracked(Events.PLAN_UPGRADED, properties={"to": "enterprise"})

    def test_track_rejects_strings_in_strict_mode(self, tracked: CapturedEvents) -> None:
        """A string is a usage error: raised in strict mode, counted otherwise."""
        full_identity()
        with pytest.raises(TrackingUsageError, match="EventRegistry"):
            track("Report_Created")  # type: ignore[arg-type]

    def test_track_ignores_strings_outside_strict_mode(self) -> None:
        """Outside strict mode a string is reported and nothing is sent."""
        full_identity()
        with capture_events(strict=False) as tracked:
            track("Report_Created")  # type: ignore[arg-type]
        tracked.assert_nothing_tracked()
        assert stats()["invalid_event"] == 1
        assert tracked.incidents[0].site is not None
        assert "test_emitter.py" in tracked.incidents[0].site

    def test_imperative_track_reports_the_calling_line(self) -> None:
        """A missing group in track() names this file and line, not the event."""
        bind_context(user_id="u_1", account_id="acc_1")
        with capture_events(strict=False) as tracked:
            track(Events.REPORT_CREATED)
        site = tracked.incidents[0].site
        assert site is not None
        assert site.startswith(__file__)
        assert "tracked at " + site in tracked.incidents[0].message

    def test_identify_sends_now_with_extra_traits(self, tracked: CapturedEvents) -> None:
        """identify() is not de-duplicated and merges extra traits."""
        full_identity()
        instrumentor.identify({"role": "admin"})
        instrumentor.identify()
        assert [dict(m.traits) for m in tracked.identifies] == [
            {"email": "jane@example.com", "role": "admin"},
            {"email": "jane@example.com"},
        ]

    def test_identify_marks_the_user_seen(self, tracked: CapturedEvents) -> None:
        """After identify(), the next track does not identify again."""
        full_identity()
        instrumentor.identify()
        track(Events.PLAN_UPGRADED)
        assert [m.type for m in tracked.messages] == ["identify", "group", "track"]

    def test_identify_with_traits_marks_the_user_seen(self, tracked: CapturedEvents) -> None:
        """identify(traits) covers what the next track would identify."""
        full_identity()
        instrumentor.identify({"role": "admin"})
        track(Events.PLAN_UPGRADED)
        assert [m.type for m in tracked.messages] == ["identify", "group", "track"]

    def test_group_call(self, tracked: CapturedEvents) -> None:
        """group() sends one group with level and parent, merging traits."""
        full_identity()
        instrumentor.group("workspace", traits={"seats": 12})
        tracked.assert_grouped("ws_1", group_type="workspace", parent_group_id="acc_1")
        assert tracked.groups[0].traits["seats"] == 12
        assert tracked.groups[0].traits["name"] == "Research"

    def test_group_unknown_level_is_a_usage_error(self, tracked: CapturedEvents) -> None:
        """An unknown level raises in strict mode."""
        full_identity()
        with pytest.raises(TrackingUsageError, match="account > workspace > project"):
            instrumentor.group("team", group_id="t")

    def test_group_without_an_id(self, tracked: CapturedEvents) -> None:
        """No id bound or given is missing context."""
        bind_context(user_id="u_1")
        with pytest.raises(MissingContextError):
            instrumentor.group("workspace")

    def test_establish_group_hierarchy(self, tracked: CapturedEvents) -> None:
        """One group per bound level, top first, then tracks skip them."""
        full_identity()
        establish_group_hierarchy()
        assert [(g.group_id, g.parent_group_id) for g in tracked.groups] == [
            ("acc_1", None),
            ("ws_1", "acc_1"),
            ("proj_1", "ws_1"),
        ]
        tracked.clear()
        track(Events.REPORT_CREATED)
        assert [m.type for m in tracked.messages] == ["identify", "track"]


class TestSilenceAndSafety:
    def test_unconfigured_sends_nothing_and_starts_no_thread(self) -> None:
        """Without configuration, tracking costs a check and emits nothing."""
        received: list[object] = []
        threads = threading.active_count()
        full_identity()

        @tracks(Events.PLAN_UPGRADED)
        def upgrade() -> str:
            return "ok"

        assert upgrade() == "ok"
        assert received == []
        assert threading.active_count() == threads
        assert instrumentor.current_settings().transports is None

    def test_disabled_sends_nothing_even_to_own_receivers(self) -> None:
        """enabled=False silences every receiver, the application's too."""
        got: list[object] = []

        def receiver(sender: object, **kw: object) -> None:
            got.append(kw)

        full_identity()
        with instrumentor.signals.event_emitted.connected_to(receiver):
            instrumentor.configure(enabled=False)
            track(Events.PLAN_UPGRADED)
            instrumentor.configure(enabled=True)
            track(Events.PLAN_UPGRADED)
        assert len(got) == 1

    def test_deprecated_event_warns_once_and_is_still_sent(
        self, caplog: pytest.LogCaptureFixture, tracked: CapturedEvents
    ) -> None:
        """Tracking a deprecated event logs which event replaces it, once."""
        full_identity()
        with caplog.at_level(logging.WARNING, "instrumentor"):
            track(Events.REPORT_EXPORTED)
            track(Events.REPORT_EXPORTED)
        tracked.assert_tracked(Events.REPORT_EXPORTED, times=2)
        warnings = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
        assert len(warnings) == 1
        assert "use Report_Shared" in warnings[0]
        assert stats()["deprecated_event"] == 2

    def test_on_error_hook_failure_is_contained(self) -> None:
        """A raising on_error hook is counted and does not reach the caller."""

        def bad_hook(incident: instrumentor.Incident) -> None:
            raise RuntimeError("hook bug")

        bind_context(account_id="acc_1")  # no user: an incident
        with capture_events(strict=False):
            instrumentor.configure(on_error=bad_hook)
            track(Events.PLAN_UPGRADED)
        assert stats()["hook_error"] == 1

    def test_non_mapping_properties_are_dropped_not_the_event(self) -> None:
        """track(properties=<not a mapping>) sends the event and reports the properties."""
        full_identity()
        with capture_events(strict=False) as tracked:
            track(Events.PLAN_UPGRADED, properties=["a", "b"])  # type: ignore[arg-type]
        tracked.assert_tracked(Events.PLAN_UPGRADED)
        assert stats()["invalid_properties"] == 1


class TestStrictMode:
    def test_strict_mode_checks_context_even_with_no_receiver(self) -> None:
        """ANALYTICS_STRICT with nothing connected still raises on missing context."""
        instrumentor.configure(strict=True, transports=[])
        bind_context(user_id="u_1")
        with pytest.raises(MissingContextError):
            track(Events.REPORT_CREATED)

    def test_strict_identify_checks_with_nothing_connected(self) -> None:
        """Strict mode checks identify() and group() like tracks, connected or not."""
        instrumentor.configure(strict=True, transports=[])
        with pytest.raises(MissingContextError):
            instrumentor.identify()
        with pytest.raises(MissingContextError):
            instrumentor.group("workspace")


class TestPickling:
    def test_plan_members_pickle_by_reference(self) -> None:
        """A member survives pickle as the very same member (Celery args, caches)."""
        import pickle

        assert pickle.loads(pickle.dumps(Events.REPORT_CREATED)) is Events.REPORT_CREATED

    def test_tracked_functions_run_in_a_process_pool(self) -> None:
        """A @tracks function pickles by reference and runs in real child processes."""
        import concurrent.futures
        import multiprocessing
        import pickle

        from tests.pickled_work import upgrade

        assert pickle.loads(pickle.dumps(upgrade)) is upgrade
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
            assert list(pool.map(upgrade, ["pro", "team"])) == ["PRO", "TEAM"]


class TestEmissionRecord:
    def test_copies_keep_the_messages_already_built(self) -> None:
        """A copied emission has the same messages, with the same message ids."""
        import copy

        full_identity()
        emissions: list[instrumentor.signals.Emission] = []

        def keep(sender: object, *, emission: instrumentor.signals.Emission) -> None:
            emissions.append(emission)

        with capture_events(), instrumentor.signals.event_emitted.connected_to(keep):
            track(Events.REPORT_CREATED)
            instrumentor.identify()
        for emission in emissions:
            ids = [m.message_id for m in emission.messages]
            assert ids
            assert [m.message_id for m in copy.copy(emission).messages] == ids

    def test_an_emission_is_itself_alone(self) -> None:
        """Two emissions of the same event at the same moment are distinct (identity)."""
        full_identity()
        ctx = instrumentor.current_context()
        first = instrumentor.signals.Emission(
            Events.REPORT_CREATED, "u_1", "proj_1", 1.0, ctx, None, (False, ())
        )
        second = instrumentor.signals.Emission(
            Events.REPORT_CREATED, "u_1", "proj_1", 1.0, ctx, None, (False, ())
        )
        assert first != second
        assert len({first, second}) == 2
        assert first.trace is None
        assert [m.type for m in first.messages] == ["track"]
        given = instrumentor.signals.Emission(
            None, "u_1", None, 1.0, ctx, None, (False, ("account",)), first.messages
        )
        assert given.messages == first.messages  # the eighth argument is the messages

"""Membership-based bundling: every track lands on the groups its user was last linked to.

Accoil attributes a track to the groups its user was last linked to (by an identify with the
account, and by group calls carrying the user). These tests replay what a provider would receive
and check that rule after switches, switches back, trait changes and lost calls.
"""

from __future__ import annotations

import contextvars
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

import instrumentor
import instrumentor._emitter
from instrumentor import bound_context, track
from instrumentor.delivery import Destination
from instrumentor.testing import CapturedEvents, capture_events
from instrumentor.transports import AccoilTransport, GroupMessage, IdentifyMessage, TrackMessage
from tests.fault_server import FaultServer
from tests.plan import Events


def replay_membership(messages: Sequence[object]) -> list[tuple[str, dict[str, str]]]:
    """Each track with the groups its user was last linked to, as Accoil sees them."""
    links: dict[str, dict[str, str]] = {}
    attributed: list[tuple[str, dict[str, str]]] = []
    for message in messages:
        if isinstance(message, IdentifyMessage) and message.group_id is not None:
            links.setdefault(message.user_id, {})["account"] = message.group_id
        elif isinstance(message, GroupMessage) and message.user_id is not None:
            links.setdefault(message.user_id, {})[message.group_type] = message.group_id
        elif isinstance(message, TrackMessage):
            attributed.append((message.event, dict(links.get(message.user_id, {}))))
    return attributed


def in_project(project: str, **traits: str) -> Any:
    """A context for user u_1 in ``project`` of ws_1 and acc_1, with ``traits``."""
    return bound_context(
        user_id="u_1",
        user_traits=traits or {"plan": "free"},
        account_id="acc_1",
        workspace_id="ws_1",
        project_id=project,
    )


class TestSwitches:
    def test_a_switch_back_relinks_the_user(self, tracked: CapturedEvents) -> None:
        """proj_1, proj_2, proj_1 again: each switch sends a group call carrying the user."""
        for project in ("proj_1", "proj_2", "proj_1", "proj_1"):
            with in_project(project):
                track(Events.REPORT_CREATED)
        project_calls = [g for g in tracked.groups if g.group_type == "project"]
        assert [(g.group_id, g.user_id) for g in project_calls] == [
            ("proj_1", "u_1"),
            ("proj_2", "u_1"),
            ("proj_1", "u_1"),
        ]
        attributed = replay_membership(tracked.messages)
        assert [links["project"] for _, links in attributed] == [
            "proj_1",
            "proj_2",
            "proj_1",
            "proj_1",
        ]

    def test_traits_changing_back_are_sent_again(self, tracked: CapturedEvents) -> None:
        """plan free, pro, free: three identifies, the last one saying free."""
        for plan in ("free", "pro", "free", "free"):
            with in_project("proj_1", plan=plan):
                track(Events.REPORT_CREATED)
        assert [i.traits["plan"] for i in tracked.identifies] == ["free", "pro", "free"]

    def test_group_traits_changing_back_are_sent_again(self, tracked: CapturedEvents) -> None:
        """An account going pro and back to free gets a group call each time."""
        for plan in ("free", "pro", "free"):
            with bound_context(user_id="u_1", account_id="acc_1", account_traits={"plan": plan}):
                track(Events.PLAN_UPGRADED)
        accounts = [g.traits["plan"] for g in tracked.groups if g.group_type == "account"]
        assert accounts == ["free", "pro", "free"]

    def test_a_switch_made_in_another_context_is_seen(self, tracked: CapturedEvents) -> None:
        """A long-lived context whose user switched elsewhere relinks on its next track."""
        first, second = contextvars.copy_context(), contextvars.copy_context()

        def track_in(project: str) -> None:
            instrumentor.bind_context(user_id="u_1", account_id="acc_1", project_id=project)
            track(Events.REPORT_CREATED)

        def track_again() -> None:
            track(Events.REPORT_CREATED)

        first.run(track_in, "proj_1")
        first.run(track_again)  # the first context's verdict is fresh now
        second.run(track_in, "proj_2")
        first.run(track_again)
        attributed = replay_membership(tracked.messages)
        assert [links["project"] for _, links in attributed] == [
            "proj_1",
            "proj_1",
            "proj_2",
            "proj_1",
        ]

    def test_users_are_linked_separately(self, tracked: CapturedEvents) -> None:
        """A second user of the same project gets his own group calls."""
        for user in ("u_1", "u_2", "u_1"):
            with bound_context(user_id=user, account_id="acc_1", project_id="proj_1"):
                track(Events.REPORT_CREATED)
        assert [(g.user_id, g.group_type) for g in tracked.groups] == [
            ("u_1", "account"),
            ("u_1", "project"),
            ("u_2", "account"),
            ("u_2", "project"),
        ]

    def test_explicit_group_ids_link_the_user(self, tracked: CapturedEvents) -> None:
        """An event naming its project relinks the user there, and back to the bound one after."""
        with in_project("proj_1"):
            track(Events.REPORT_CREATED)
            track(Events.REPORT_CREATED, group_id="proj_9")
            track(Events.REPORT_CREATED)
        attributed = replay_membership(tracked.messages)
        assert [links["project"] for _, links in attributed] == ["proj_1", "proj_9", "proj_1"]

    def test_the_ttl_still_bounds_a_record(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """After bundle_ttl the calls go out again, with no change at all."""
        clock = [1_000.0]
        monkeypatch.setattr("instrumentor._emitter._now", lambda: clock[0])
        with capture_events(bundle_ttl=60) as captured, in_project("proj_1"):
            track(Events.REPORT_CREATED)
            clock[0] += 59
            track(Events.REPORT_CREATED)
            clock[0] += 2
            track(Events.REPORT_CREATED)
        assert [m.type for m in captured.messages].count("identify") == 2


@pytest.fixture
def paused_server() -> Iterator[FaultServer]:
    with FaultServer(status=202) as server:
        yield server


def _paths(server: FaultServer) -> list[tuple[str, str | None]]:
    """(path, userId) of every request the server accepted."""
    return [(r.path, (r.json or {}).get("userId")) for r in server.received()]


class TestLostCallsAreSentAgain:
    def test_a_refused_identify_and_groups_go_out_with_the_next_track(
        self, paused_server: FaultServer
    ) -> None:
        """Calls given up are forgotten: the user's next track carries them again."""
        server = paused_server
        transport = AccoilTransport("key", endpoint=server.url)
        instrumentor.configure(transports=[transport])
        server.fail_next(4, 400)  # identify and the three group calls: refused for good
        with in_project("proj_1"):
            track(Events.REPORT_CREATED)
            assert instrumentor.flush(10).pending == 0
            track(Events.REPORT_CREATED)
            assert instrumentor.flush(10).pending == 0
        assert _paths(server) == [
            ("/v2/track", "u_1"),
            ("/v2/identify", "u_1"),
            ("/v2/group", "u_1"),
            ("/v2/group", "u_1"),
            ("/v2/group", "u_1"),
            ("/v2/track", "u_1"),
        ]

    def test_an_event_dropped_from_a_full_queue_gives_its_calls_back(
        self, paused_server: FaultServer
    ) -> None:
        """A bundle dropped by the queue is forgotten: the user's next track sends it."""
        server = paused_server
        destination = Destination(
            AccoilTransport("key", endpoint=server.url, max_in_flight=1), max_queue=1, linger=0
        )
        instrumentor.configure(transports=[destination])
        server.pause()
        for user in ("u_a", "u_b", "u_c"):  # u_a in flight, u_b queued, u_c dropped
            with bound_context(user_id=user, account_id="acc_1"):
                track(Events.PLAN_UPGRADED)
            if user == "u_a":
                assert server.wait_for_requests(1, timeout=10)
        assert destination.stats().dropped.get("queue_full") == 1
        server.resume()
        assert instrumentor.flush(10).pending == 0
        with bound_context(user_id="u_c", account_id="acc_1"):
            track(Events.PLAN_UPGRADED)
        assert instrumentor.flush(10).pending == 0
        sent_for_c = [path for path, user in _paths(server) if user == "u_c"]
        assert sent_for_c == ["/v2/identify", "/v2/track"]  # acc_1 was described by u_a


class TestConcurrencyAndExplicitCalls:
    def test_a_decision_and_its_queuing_are_one_step(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Two threads of one user switching at once queue their calls in the order recorded."""
        from instrumentor._bundle import BundleState

        decided = threading.Event()
        original = BundleState.due

        def slow_due(self: BundleState, *args: Any, **kwargs: Any) -> Any:
            bundle = original(self, *args, **kwargs)
            if threading.current_thread().name == "first":
                decided.set()
                time.sleep(0.2)  # the other thread runs now; it must not queue before this one
            return bundle

        monkeypatch.setattr(BundleState, "due", slow_due)
        with capture_events() as captured:

            def in_project(project: str) -> None:
                with bound_context(user_id="u_1", account_id="acc_1", project_id=project):
                    track(Events.REPORT_CREATED)

            first = threading.Thread(target=in_project, args=("proj_2",), name="first")
            first.start()
            assert decided.wait(10)
            in_project("proj_1")
            first.join(10)
            with bound_context(user_id="u_1", account_id="acc_1", project_id="proj_1"):
                track(Events.REPORT_CREATED)
        attributed = replay_membership(captured.messages)
        assert attributed[-1][1]["project"] == "proj_1"

    def test_an_evicted_user_is_relinked_by_a_long_lived_context(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A record evicted from the LRU makes cached verdicts stale: no switch goes unseen."""
        monkeypatch.setattr("instrumentor._bundle.MAX_USERS", 2)
        first = contextvars.copy_context()

        def track_in(user: str, project: str) -> None:
            instrumentor.bind_context(user_id=user, account_id="acc_1", project_id=project)
            track(Events.REPORT_CREATED)

        with capture_events() as captured:
            first.run(track_in, "u_1", "proj_1")
            for other in ("u_2", "u_3"):  # u_1 is evicted
                contextvars.copy_context().run(track_in, other, "proj_1")
            contextvars.copy_context().run(track_in, "u_1", "proj_2")
            first.run(lambda: track(Events.REPORT_CREATED))
        mine = [m for m in captured.messages if m.user_id == "u_1"]
        assert replay_membership(mine)[-1][1]["project"] == "proj_1"

    def test_an_explicit_account_group_call_relinks_with_accoil(
        self, paused_server: FaultServer
    ) -> None:
        """With only Accoil, group("account", group_id=...) moves the user; a track moves back."""
        server = paused_server
        instrumentor.configure(transports=[AccoilTransport("key", endpoint=server.url)])
        with bound_context(user_id="u_1", account_id="acc_1"):
            track(Events.PLAN_UPGRADED)
            instrumentor.group("account", group_id="acc_2")
            track(Events.PLAN_UPGRADED)
        assert instrumentor.flush(10).pending == 0
        links: dict[str, str] = {}
        credited = []
        for request in server.received():
            body = request.json
            if request.path in ("/v2/identify", "/v2/group") and body.get("userId") == "u_1":
                links["account"] = body["groupId"]
            elif request.path == "/v2/track":
                credited.append(links.get("account"))
        assert credited == ["acc_1", "acc_1"]

    def test_instance_level_explicit_calls_link_the_account_user(
        self, tracked: CapturedEvents
    ) -> None:
        """With instance-level tracking the 'user' is the account, for explicit calls too."""
        instrumentor.configure(instance_level=True)
        with bound_context(user_id="u_1", account_id="acc_1", project_id="proj_2"):
            instrumentor.establish_group_hierarchy()
            instrumentor.group("project")
        assert {g.user_id for g in tracked.groups} == {"acc_1"}


class TestRefusedCallsAreNotRepeated:
    def test_a_call_too_large_to_send_is_not_sent_again_with_every_track(
        self, paused_server: FaultServer
    ) -> None:
        """A group call refused as too large would be refused again: it is not retried per track."""
        from instrumentor.transports import SegmentTransport

        server = paused_server
        destination = Destination(SegmentTransport("wk", endpoint=server.url))
        instrumentor.configure(transports=[destination])
        huge = {"notes": "x" * 40_000}
        with bound_context(user_id="u_1", account_id="acc_1", account_traits=huge):
            for _ in range(3):
                track(Events.PLAN_UPGRADED)
                assert instrumentor.flush(10).pending == 0
        assert destination.stats().dropped == {"too_large": 1}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_child_forked_while_the_state_was_locked_still_tracks(tracked: CapturedEvents) -> None:
    """A real fork while another thread holds the bundle lock: the child's track goes through."""
    with bound_context(user_id="u_1", account_id="acc_1"):
        track(Events.PLAN_UPGRADED)  # the state exists now
        state = instrumentor._emitter.bundle_state()
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with state.lock:
                held.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        assert held.wait(10)
        pid = os.fork()
        if pid == 0:  # the child: track (a new user, so the slow path takes the lock) and exit
            code = 1
            try:
                with bound_context(user_id="u_child", account_id="acc_1"):
                    track(Events.PLAN_UPGRADED)
                code = 0 if tracked.tracks[-1].user_id == "u_child" else 2
            finally:
                os._exit(code)
        release.set()
        holder.join(10)
        deadline = time.monotonic() + 20
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if done[0] == 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        assert done[0] == pid, "the forked child hung on the bundle lock"
        assert os.waitstatus_to_exitcode(done[1]) == 0

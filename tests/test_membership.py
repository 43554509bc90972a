"""Membership-based bundling: every track lands on the groups its user was last linked to.

Accoil attributes a track to the groups its user was last linked to (by an identify with the
account, and by group calls carrying the user). These tests replay what a provider would receive
and check that rule after switches, switches back, trait changes and lost calls.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

import instrumentor
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

"""Incidents: counted always; the log and, for sampled ones, on_error once per key per minute."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

import instrumentor
from instrumentor import Incident
from instrumentor._diagnostics import count_quietly
from instrumentor._state import report as report_safely


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr("instrumentor._diagnostics.time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


def test_sampled_incidents_reach_on_error_once_per_key_per_interval(clock: FakeClock) -> None:
    """A sampled incident reaches on_error once per key per minute, then counts those skipped."""
    heard: list[Incident] = []
    instrumentor.configure(enabled=False, on_error=heard.append)
    for _ in range(100):
        report_safely(Incident("frontend_rejected", "415 junk"), key="415", sampled=True)
    report_safely(Incident("frontend_rejected", "405 junk"), key="405", sampled=True)
    assert [i.message for i in heard] == ["415 junk", "405 junk"]
    clock.now += 61
    report_safely(Incident("frontend_rejected", "415 junk"), key="415", sampled=True)
    assert heard[-1].message == "415 junk (99 more since last logged)"
    assert instrumentor.stats()["frontend_rejected"] == 102


def test_other_incidents_reach_on_error_every_time(clock: FakeClock) -> None:
    """Only sampled reports are thinned: the emitter's incidents all reach the hook."""
    heard: list[Incident] = []
    instrumentor.configure(enabled=False, on_error=heard.append)
    for _ in range(5):
        report_safely(Incident("missing_group", "no account"), key="site")
    assert len(heard) == 5
    assert instrumentor.stats()["missing_group"] == 5


def test_quiet_counts_are_debug_lines_without_an_incident(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """count_quietly() counts and logs at DEBUG without calling on_error."""
    heard: list[Incident] = []
    instrumentor.configure(enabled=False, on_error=heard.append)
    with caplog.at_level(logging.DEBUG, logger="instrumentor"):
        for _ in range(3):
            count_quietly("identity_missing", "an anonymous request")
    assert heard == []
    assert instrumentor.stats()["identity_missing"] == 3
    assert {r.levelno for r in caplog.records} == {logging.DEBUG}


def test_report_safely_never_raises() -> None:
    """A raising on_error hook is counted as hook_error and never reaches the reporter."""

    def broken(incident: Incident) -> None:
        raise RuntimeError("sentry down")

    instrumentor.configure(enabled=False, on_error=broken)
    report_safely(Incident("frontend_rejected", "x"), sampled=True)
    assert instrumentor.stats()["hook_error"] == 1


def test_own_kinds_become_members_and_other_kinds_stay_strings() -> None:
    """instrumentor's kinds are IncidentKind members; an application's own kind is kept as is."""
    from instrumentor import Incident, IncidentKind

    ours = Incident("missing_group", "m")
    assert ours.kind is IncidentKind.MISSING_GROUP
    kind: object = ours.kind  # a str enum: equal to, and hashed like, its plain value
    assert kind == "missing_group"
    assert {kind} == {"missing_group"}
    assert str(ours.kind) == "missing_group"
    theirs = Incident("strategy_paused", "m")
    assert theirs.kind == "strategy_paused"
    assert not isinstance(theirs.kind, IncidentKind)

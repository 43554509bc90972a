"""Helpers the delivery tests share: waiting, test messages, rows stored directly, transports."""

from __future__ import annotations

import copy
import datetime as dt
import threading
import time
from collections.abc import Callable, Sequence

from instrumentor import bound_context, configure, track
from instrumentor._messages import Message, TrackMessage
from instrumentor.delivery import OutboxDestination, RetryPolicy
from instrumentor.delivery._outbox import OutboxStore
from instrumentor.exceptions import PartialDeliveryError, RetryableDeliveryError
from instrumentor.transports import MemoryTransport, SegmentTransport
from tests.fault_server import FaultServer
from tests.plan import Events


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes; whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def messages(count: int, start: int = 0) -> list[Message]:
    """``count`` track messages with properties ``{"n": start}``, ``{"n": start + 1}``, ..."""
    return [
        TrackMessage(
            user_id="u_1",
            event="Report_Created",
            group_id="proj_1",
            group_type="project",
            category="core_value",
            properties={"n": n},
            timestamp=dt.datetime.now(dt.timezone.utc),
            context={},
        )
        for n in range(start, start + count)
    ]


def stored(path: str, channel: str, batch: Sequence[Message]) -> None:
    """Store ``batch`` in the outbox at ``path`` under ``channel``, as another process would."""
    store = OutboxStore(path, channel=channel)
    assert store.persist(batch) == (len(batch), [])
    store.close()


class Recording:
    """A transport that records every message id it delivers, optionally slowly or failing."""

    def __init__(
        self, *, delay: float = 0.0, poison: int | None = None, copies: bool = False
    ) -> None:
        self.delay, self.poison, self.copies = delay, poison, copies
        self.delivered: list[str] = []
        self.calls = 0

    def deliver(self, batch: Sequence[Message]) -> None:
        """Record ``batch``; fail as configured."""
        self.calls += 1
        time.sleep(self.delay)
        if self.copies:
            raise PartialDeliveryError("0 accepted", retry=[copy.copy(m) for m in batch], failed=[])
        if any(getattr(m, "properties", {}).get("n") == self.poison for m in batch):
            raise RetryableDeliveryError("POST /v1/batch answered 500")
        self.delivered.extend(m.message_id for m in batch)

    def close(self) -> None:
        """Nothing to release."""


class ScriptedTransport:
    """Records every attempt; each attempt may be answered by a scripted action."""

    def __init__(self, *actions: Callable[[Sequence[Message]], None]) -> None:
        self.actions = list(actions)
        self.attempts: list[list[Message]] = []
        self.delivered: list[Message] = []
        self.closed = False
        self.lock = threading.Lock()

    def deliver(self, batch: Sequence[Message]) -> None:
        """Record the attempt; run its scripted action, if any; deliver unless it raised."""
        with self.lock:
            self.attempts.append(list(batch))
            action = self.actions.pop(0) if self.actions else None
        if action is not None:
            action(batch)
        with self.lock:
            self.delivered.extend(batch)

    def close(self) -> None:
        """Remember that it was closed."""
        self.closed = True

    def delivered_ids(self) -> list[str]:
        """The ids of the messages delivered so far."""
        with self.lock:
            return [m.message_id for m in self.delivered]


FAST = RetryPolicy(base_delay=0.02, max_delay=0.1)


def outbox(server: FaultServer, path: str, **options: object) -> OutboxDestination:
    """An outbox destination delivering to ``server`` with quick retries."""
    options.setdefault("linger", 0.01)
    options.setdefault("retry", FAST)
    transport = SegmentTransport("sk_outbox_test", endpoint=server.url, timeout=2.0)
    return OutboxDestination(transport, path=path, **options)  # type: ignore[arg-type]


def send(count: int, *receivers: object) -> list[str]:
    """Track ``count`` events; return the ids of every message they became."""
    memory = MemoryTransport()
    configure(transports=[memory, *receivers])
    for n in range(count):
        with bound_context(user_id=f"u_{n % 3}", account_id="acc_1", project_id="proj_1"):
            track(Events.REPORT_CREATED, properties={"n": n})
    return [m.message_id for m in memory.messages]

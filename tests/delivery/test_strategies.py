"""The worker composed with queue strategies: the default, one of the test's own, fork and close.

The outbox strategy's own behaviour is in ``test_outbox*.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import pytest

import instrumentor
from instrumentor import bind_context, configure, track
from instrumentor.delivery import Destination, MemoryStrategy, QueueStrategy, RetryPolicy, Worker
from instrumentor.exceptions import ConfigurationError
from tests.delivery.support import ScriptedTransport
from tests.plan import Events

FAST = RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=0.02)


@pytest.fixture(autouse=True)
def identity() -> Iterator[None]:
    """A bound user and account for every test; everything shut down after it."""
    bind_context(user_id="u_1", account_id="acc_1")
    yield
    instrumentor.shutdown(1.0)


class OneByOne:
    """A strategy of the test's own: each message delivered alone, through the worker's API."""

    def __init__(self) -> None:
        self.worker: Worker | None = None
        self.runs: list[str] = []
        self.forked = self.closed = False

    def attach(self, worker: Worker) -> None:
        self.worker = worker

    def run(self) -> None:
        assert self.worker is not None
        self.runs.append(threading.current_thread().name)
        while True:
            self.worker.wait_for_work(0.01)
            while self.worker.queue_depth and not self.worker.past_deadline():
                for message in self.worker.next_batch():
                    self.worker.deliver([message])
            self.worker.notify_idle()
            if self.worker.should_stop():
                return

    def drain_inline(self, deadline: float) -> None:
        assert self.worker is not None
        self.worker.deliver_queued(deadline)

    def pending(self) -> int:
        return 0

    def threads(self) -> Sequence[threading.Thread]:
        return ()

    def after_fork(self) -> None:
        self.forked = True

    def close(self) -> None:
        self.closed = True


class TestComposition:
    def test_the_memory_strategy_is_the_default(self) -> None:
        """Destination(transport) delivers from memory: its strategy is a MemoryStrategy."""
        assert isinstance(Destination(ScriptedTransport()).strategy, MemoryStrategy)

    def test_a_strategy_serves_one_destination(self) -> None:
        """Attaching one strategy object to a second destination is a configuration error."""
        strategy = MemoryStrategy()
        first = Destination(ScriptedTransport(), name="first", strategy=strategy)
        with pytest.raises(ConfigurationError, match="serves one destination"):
            Destination(ScriptedTransport(), name="second", strategy=strategy)
        assert first.stats().name == "first"

    def test_a_strategy_of_ones_own_runs_on_the_worker_thread(self) -> None:
        """Any QueueStrategy composes with the worker: it runs on the worker thread, delivers
        through the worker's public methods, and is closed at shutdown."""
        strategy = OneByOne()
        _: QueueStrategy = strategy  # it implements the protocol
        transport = ScriptedTransport()
        destination = Destination(transport, linger=0.01, retry=FAST, strategy=strategy)
        configure(transports=[destination], bundle_ttl=0)
        track(Events.PLAN_UPGRADED)
        track(Events.PLAN_UPGRADED)
        result = destination.shutdown(5)
        assert (result.delivered, result.pending) == (6, 0)  # identify, group, track: twice
        assert [len(batch) for batch in transport.attempts] == [1] * 6
        assert strategy.runs == [f"instrumentor-{destination.name}"]
        assert strategy.closed
        assert transport.closed

    def test_after_fork_resets_the_worker_then_the_strategy(self) -> None:
        """In a forked child the worker drops the parent's queue and tells its strategy."""
        strategy = OneByOne()
        destination = Destination(ScriptedTransport(), linger=30, strategy=strategy)
        configure(transports=[destination], bundle_ttl=0)
        track(Events.PLAN_UPGRADED)
        assert destination.queue_depth == 1
        destination.after_fork()  # what the fork hook calls in the child
        assert destination.queue_depth == 0
        assert strategy.forked

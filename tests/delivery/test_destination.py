"""Destination: a real queue and worker thread, driven through a scripted transport.

The worker's behaviour with the default (memory) strategy. Its composition with other
strategies is in ``test_strategies.py``, the outbox strategy in ``test_outbox*.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

import instrumentor
from instrumentor import bind_context, configure, stats, track
from instrumentor._messages import Message
from instrumentor.delivery import (
    Destination,
    RetryPolicy,
)
from instrumentor.delivery._attempt import attempt
from instrumentor.exceptions import (
    PartialDeliveryError,
    PayloadTooLargeError,
    PermanentDeliveryError,
    RetryableDeliveryError,
)
from tests.delivery.support import ScriptedTransport, messages
from tests.plan import Events

FAST = RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=0.02)


def raise_(exc: Exception) -> Callable[[Sequence[Message]], None]:
    def act(batch: Sequence[Message]) -> None:
        raise exc

    return act


def hang(release: threading.Event) -> Callable[[Sequence[Message]], None]:
    def act(batch: Sequence[Message]) -> None:
        release.wait(30)
        raise RetryableDeliveryError("released")

    return act


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


@pytest.fixture(autouse=True)
def identity() -> Iterator[None]:
    bind_context(user_id="u_1", account_id="acc_1")
    yield
    instrumentor.shutdown(1.0)


def use(transport: Any, **options: Any) -> Destination:
    destination = Destination(transport, linger=0.01, retry=options.pop("retry", FAST), **options)
    configure(transports=[destination], bundle_ttl=0)
    return destination


class TestDelivery:
    def test_delivers_everything_in_order(self) -> None:
        """Every message of every event arrives, in emission order, in batches."""
        transport = ScriptedTransport()
        destination = use(transport, batch_size=7)
        for _ in range(20):
            track(Events.PLAN_UPGRADED)
        assert destination.flush(5).pending == 0
        kinds = [m.type for m in transport.delivered]
        assert kinds == ["identify", "group", "track"] * 20
        assert all(len(batch) <= 9 for batch in transport.attempts)  # whole events, ~7
        assert destination.stats().delivered == 60

    def test_a_single_event_is_sent_after_the_linger(self) -> None:
        """No batch needs to fill: a lone event goes out within the linger time."""
        transport = ScriptedTransport()
        use(transport)
        track(Events.PLAN_UPGRADED)
        assert wait_until(lambda: len(transport.delivered) == 3, 2.0)

    def test_worker_starts_lazily(self) -> None:
        """Creating and configuring a destination starts no thread; the first event does."""
        before = threading.active_count()
        destination = use(ScriptedTransport())
        assert threading.active_count() == before
        track(Events.PLAN_UPGRADED)
        assert threading.active_count() == before + 1
        destination.flush(2)

    def test_zero_linger_sends_at_once_without_spinning(self) -> None:
        """linger=0: each event wakes the worker; an idle worker sleeps (no busy loop)."""
        import resource

        transport = ScriptedTransport()
        destination = Destination(transport, linger=0, retry=FAST)
        configure(transports=[destination], bundle_ttl=0)
        track(Events.PLAN_UPGRADED)
        assert wait_until(lambda: len(transport.delivered) == 3, 2.0)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_utime
        time.sleep(0.5)  # the worker is idle now
        used = resource.getrusage(resource.RUSAGE_SELF).ru_utime - before
        assert used < 0.25  # a spinning worker would burn the whole half second

    def test_the_worker_survives_a_base_exception(self) -> None:
        """A transport raising BaseException loses its batch, not the destination."""

        class Interrupt(BaseException):
            pass

        transport = ScriptedTransport(raise_(Interrupt()))  # type: ignore[arg-type]
        destination = use(transport)
        track(Events.PLAN_UPGRADED)
        assert wait_until(lambda: len(transport.attempts) == 1)
        thread = f"instrumentor-{destination.name}"
        assert wait_until(lambda: all(t.name != thread for t in threading.enumerate()))
        track(Events.PLAN_UPGRADED)
        assert destination.flush(5).pending == 0
        assert [m.type for m in transport.delivered][-1] == "track"


class TestBackpressure:
    def test_a_full_queue_drops_and_counts_without_blocking(self) -> None:
        """With the worker stuck, tracking stays instant and drops beyond max_queue."""
        release = threading.Event()
        dropped: list[str] = []
        transport = ScriptedTransport(hang(release))
        use(
            transport,
            max_queue=10,
            batch_size=1,
            on_drop=lambda item, reason: dropped.append(reason),
        )
        track(Events.PLAN_UPGRADED)
        assert wait_until(lambda: len(transport.attempts) == 1)
        started = time.perf_counter()
        for _ in range(1000):
            track(Events.PLAN_UPGRADED)
        elapsed = time.perf_counter() - started
        release.set()
        assert stats()["dropped.queue_full"] == 990
        assert set(dropped) == {"queue_full"}
        assert elapsed < 5  # not a benchmark: a blocked caller would wait 30 s per call

    def test_slow_destination_does_not_starve_another(self) -> None:
        """Each destination has its own queue and worker."""
        release = threading.Event()
        slow = ScriptedTransport(hang(release))
        fast = ScriptedTransport()
        slow_destination = Destination(slow, linger=0.01, retry=FAST)
        fast_destination = Destination(fast, linger=0.01, retry=FAST)
        configure(transports=[slow_destination, fast_destination], bundle_ttl=0)
        for _ in range(5):
            track(Events.PLAN_UPGRADED)
        assert fast_destination.flush(5).pending == 0
        assert len(fast.delivered) == 15
        release.set()


class TestRetries:
    def test_retryable_errors_are_retried_with_the_same_ids(self) -> None:
        """Two failures, then success: delivered once, ids unchanged across attempts."""
        transport = ScriptedTransport(
            raise_(RetryableDeliveryError("503")), raise_(RetryableDeliveryError("timeout"))
        )
        destination = use(transport)
        track(Events.PLAN_UPGRADED)
        assert destination.flush(5).pending == 0
        first, second, third = transport.attempts
        assert [m.message_id for m in first] == [m.message_id for m in second]
        assert [m.message_id for m in first] == [m.message_id for m in third]
        assert len(transport.delivered) == 3
        assert destination.stats().retried == 6
        assert stats()["delivery_retrying"] == 2

    def test_retry_after_is_honoured(self) -> None:
        """A 429 with Retry-After pauses the destination for that long, order kept."""
        transport = ScriptedTransport(raise_(RetryableDeliveryError("429", retry_after=0.3)))
        destination = use(transport)
        track(Events.PLAN_UPGRADED)
        assert wait_until(lambda: len(transport.attempts) == 1)
        failed_at = time.monotonic()
        track(Events.WORKSPACE_SETTINGS_UPDATED, group_id="ws_1")
        assert destination.flush(5).pending == 0
        assert time.monotonic() - failed_at >= 0.25
        names = [m.event for m in transport.delivered if m.type == "track"]
        assert names == ["Plan_Upgraded", "Workspace_Settings_Updated"]

    def test_permanent_errors_are_not_retried(self) -> None:
        """A 400 fails the batch once; it is counted and reported, not retried."""
        transport = ScriptedTransport(raise_(PermanentDeliveryError("400", status=400)))
        destination = use(transport)
        track(Events.PLAN_UPGRADED)
        destination.flush(5)
        assert len(transport.attempts) == 1
        assert destination.stats().failed == 3
        assert stats()["delivery_failed"] == 1

    def test_attempts_are_bounded(self) -> None:
        """After max_attempts the batch is given up and counted as failed."""
        transport = ScriptedTransport(*[raise_(RetryableDeliveryError("down"))] * 10)
        destination = use(transport, retry=RetryPolicy(max_attempts=3, base_delay=0.001))
        track(Events.PLAN_UPGRADED)
        destination.flush(5)
        assert len(transport.attempts) == 3
        assert destination.stats().failed == 3
        assert destination.stats().last_error == "down"

    def test_too_large_splits_and_drops_only_the_oversize(self) -> None:
        """413 halves the batch until the one message too large alone is dropped."""
        huge = "x" * 1000

        def too_large_if_huge(batch: Sequence[Message]) -> None:
            if any(getattr(m, "properties", {}).get("blob") == huge for m in batch):
                raise PayloadTooLargeError("413")

        transport = ScriptedTransport(*[too_large_if_huge] * 20)
        destination = use(transport, batch_size=100)
        track(Events.PLAN_UPGRADED)
        track(Events.PLAN_UPGRADED, properties={"blob": huge})
        track(Events.PLAN_UPGRADED)
        destination.flush(5)
        assert len(transport.delivered) == 8
        assert destination.stats().dropped == {"too_large": 1}

    def test_partial_delivery_retries_only_the_rest(self) -> None:
        """Messages the transport delivered are never sent again."""

        def half(batch: Sequence[Message]) -> None:
            raise PartialDeliveryError("some", retry=batch[1:], failed=[(batch[0], "refused")])

        transport = ScriptedTransport(half)
        destination = use(transport)
        track(Events.PLAN_UPGRADED)
        destination.flush(5)
        assert [len(a) for a in transport.attempts] == [3, 2]
        assert destination.stats().failed == 1
        assert destination.stats().delivered == 2

    def test_a_buggy_transport_is_retried_then_given_up(self) -> None:
        """An unexpected exception is treated like an outage, never reaching the caller."""
        transport = ScriptedTransport(*[raise_(KeyError("bug"))] * 10)
        destination = use(transport, retry=RetryPolicy(max_attempts=2, base_delay=0.001))
        track(Events.PLAN_UPGRADED)
        destination.flush(5)
        assert destination.stats().failed == 3
        assert "KeyError" in (destination.stats().last_error or "")

    def test_no_retry_starts_after_max_elapsed(self) -> None:
        """A retry whose wait would end past max_elapsed is not scheduled."""
        transport = ScriptedTransport(
            *[raise_(RetryableDeliveryError("down", retry_after=1.0))] * 5
        )
        destination = use(transport, retry=RetryPolicy(max_attempts=10, max_elapsed=0.5))
        track(Events.PLAN_UPGRADED)
        destination.flush(3)
        assert len(transport.attempts) == 1
        assert destination.stats().failed == 3

    def test_an_unknown_id_in_a_partial_delivery_error_retries_rather_than_guesses(self) -> None:
        """Ids a partial failure names that the batch does not hold: retried, never guessed."""
        batch = messages(3)

        class Confused:
            def deliver(self, _: Sequence[Message]) -> None:
                raise PartialDeliveryError("?", retry=messages(1), failed=[(batch[0], "400")])

            def close(self) -> None:
                pass

        outcome = attempt(Confused(), batch)
        assert [m for m, _ in outcome.failed] == batch[:1]
        assert outcome.retry == batch[1:]
        assert outcome.delivered == []


class TestDeadlines:
    def test_flush_returns_within_its_timeout_and_reports_pending(self) -> None:
        """Against a transport that never answers, flush(0.3) returns in time."""
        release = threading.Event()
        transport = ScriptedTransport(hang(release))
        destination = use(transport)
        for _ in range(3):
            track(Events.PLAN_UPGRADED)
        started = time.monotonic()
        result = destination.flush(0.3)
        elapsed = time.monotonic() - started
        release.set()
        assert 0.25 <= elapsed < 1.5
        assert result.pending >= 3

    def test_shutdown_is_bounded_idempotent_and_closes(self) -> None:
        """Stuck in a request, shutdown still returns in time (twice) and drops later events."""
        release = threading.Event()
        transport = ScriptedTransport(hang(release))
        destination = use(transport)
        track(Events.PLAN_UPGRADED)
        assert wait_until(lambda: len(transport.attempts) == 1)
        started = time.monotonic()
        first = destination.shutdown(0.3)
        second = destination.shutdown(0.3)
        assert time.monotonic() - started < 1.5
        assert first.pending == 3
        assert second.pending == 3
        assert not transport.closed  # not closed under a worker still inside a request
        track(Events.PLAN_UPGRADED)
        assert destination.stats().dropped == {"shutdown": 1}
        release.set()

    def test_shutdown_of_an_idle_destination_closes_its_transport(self) -> None:
        """Once everything is delivered, shutdown closes the transport."""
        transport = ScriptedTransport()
        destination = use(transport)
        track(Events.PLAN_UPGRADED)
        result = destination.shutdown(5)
        assert (result.delivered, result.pending) == (3, 0)
        assert transport.closed

    def test_async_flush(self) -> None:
        """aflush() waits without blocking the event loop."""
        import asyncio

        transport = ScriptedTransport()
        use(transport)

        async def main() -> int:
            track(Events.PLAN_UPGRADED)
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.001)

            task = asyncio.create_task(ticker())
            result = await instrumentor.aflush(5)
            task.cancel()
            assert result.pending == 0
            return ticks

        assert asyncio.run(main()) >= 1
        assert len(transport.delivered) == 3

    def test_concurrent_shutdowns_share_the_earliest_deadline(self) -> None:
        """A short shutdown beside a long one: both return early; nothing is sent after."""
        release = threading.Event()
        transport = ScriptedTransport(*[raise_(RetryableDeliveryError("down"))] * 1000)
        destination = use(transport, retry=RetryPolicy(max_attempts=1000, base_delay=0.05))
        for _ in range(3):
            track(Events.PLAN_UPGRADED)
        assert wait_until(lambda: len(transport.attempts) >= 1)
        results: list[float] = []

        def stop(timeout: float) -> None:
            started = time.monotonic()
            destination.shutdown(timeout)
            results.append(time.monotonic() - started)

        threads = [threading.Thread(target=stop, args=(t,)) for t in (5.0, 0.3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        release.set()
        assert max(results) < 2.0
        attempts = len(transport.attempts)
        time.sleep(0.3)
        assert len(transport.attempts) == attempts  # the worker stopped; nothing after


class TestReconfiguration:
    def test_configured_restores_a_working_destination(self) -> None:
        """Leaving a configured() block puts back the previous destination, still delivering."""
        outer = ScriptedTransport()
        destination = use(outer)
        with instrumentor.configured(transports=[ScriptedTransport()]):
            track(Events.PLAN_UPGRADED)
        track(Events.PLAN_UPGRADED)
        assert destination.flush(5).pending == 0
        assert len(outer.delivered) == 3
        assert destination.stats().dropped == {}

    def test_a_destination_passed_in_is_not_shut_down_by_reconfiguring(self) -> None:
        """Only destinations instrumentor created are retired; yours stay yours."""
        transport = ScriptedTransport()
        mine = Destination(transport, linger=0.01, retry=FAST)
        configure(transports=[mine])
        configure(transports=[ScriptedTransport()])
        configure(transports=[mine])
        track(Events.PLAN_UPGRADED)
        assert mine.flush(5).pending == 0
        assert len(transport.delivered) == 3

    def test_reconfiguring_while_tracking_loses_nothing(self) -> None:
        """Events tracked on another thread during configure() reach a destination."""
        transport = ScriptedTransport()
        destination = use(transport)
        stop = threading.Event()
        tracked = 0

        def keep_tracking() -> None:
            nonlocal tracked
            bind_context(user_id="u_2", account_id="acc_1")
            while not stop.is_set():
                track(Events.PLAN_UPGRADED)
                tracked += 1

        thread = threading.Thread(target=keep_tracking)
        thread.start()
        for i in range(300):
            configure(strict=bool(i % 2))  # same transports: the destination is kept
        stop.set()
        thread.join()
        destination.flush(10)
        assert destination.stats().enqueued == tracked


class TestStats:
    def test_stats_never_go_backwards(self) -> None:
        """Counters of a replaced and collected destination stay in the totals."""
        import gc

        start = stats().get("delivered", 0)
        transport = ScriptedTransport()
        configure(transports=[transport], bundle_ttl=0)  # instrumentor wraps and owns it
        track(Events.PLAN_UPGRADED)
        instrumentor.flush(5)
        before = stats()["delivered"]
        assert before == start + 3
        configure(transports=[ScriptedTransport()])  # retires (and drops) the first one
        instrumentor.flush(1)
        gc.collect()
        assert stats()["delivered"] >= before

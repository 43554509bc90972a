"""Celery delivery end to end: real brokers (Redis and RabbitMQ), real worker processes.

The web side is this test process: ``configure(queue=CeleryQueue(app))`` publishes batches;
a ``celery worker`` process delivers them to a loopback :class:`FaultServer`. The server counts
only requests it answered 2xx, so "every message exactly once, with its original id" is a
comparison of id lists.
"""

from __future__ import annotations

import pytest

import instrumentor
from instrumentor import bound_context, configure
from instrumentor.celery import count_dead_letters
from instrumentor.celery._context import HEADER
from tests.celery.conftest import Stack, track_events, wait_until, web_side

pytestmark = pytest.mark.services


def assert_delivered_once(stack: Stack, sent: list[str], timeout: float = 60) -> None:
    assert stack.server.wait_for(len(sent), timeout), (len(stack.server.message_ids()), len(sent))
    received = stack.server.message_ids()
    assert sorted(received) == sorted(sent), "lost, duplicated or re-identified messages"


def test_every_event_reaches_the_provider_once_with_its_id(stack: Stack) -> None:
    """Batches published in the web process are delivered by the worker, ids unchanged."""
    stack.start_worker()
    memory = web_side(stack)
    published_before = instrumentor.stats().get("delivered", 0)
    track_events(60)
    result = instrumentor.flush(10)
    assert result.pending == 0
    sent = [m.message_id for m in memory.messages]
    assert_delivered_once(stack, sent)
    # In the web process "delivered" counts the messages published to the broker.
    assert instrumentor.stats()["delivered"] - published_before == len(sent)


def test_transient_failures_are_retried_by_celery(stack: Stack) -> None:
    """5xx and a 429 with Retry-After: the worker retries (Celery) what was not accepted."""
    worker = stack.start_worker()
    stack.server.fail_next(1, 429, retry_after="1")
    stack.server.fail_next(4, 503)
    memory = web_side(stack)
    track_events(12)
    sent = [m.message_id for m in memory.messages]
    assert_delivered_once(stack, sent)
    log = worker.log()
    assert "retry: Retry in 1" in log, log  # the provider's Retry-After became the countdown
    assert "delivery_retrying" in log


def test_permanent_failure_is_dead_lettered_reported_and_replayed(stack: Stack) -> None:
    """After the last retry the batch is parked on the dead-letter queue; replay delivers it."""
    worker = stack.start_worker()
    stack.server.set_status(503)
    memory = web_side(stack)
    track_events(1)  # one emission is never split: exactly one batch
    sent = [m.message_id for m in memory.messages]
    app, dead = stack.app, stack.celery_queue.dead_letter_queue
    assert wait_until(lambda: count_dead_letters(app, dead_letter_queue=dead) == 1, 60), (
        worker.log()
    )
    assert "delivery_dead_lettered" in worker.log()
    assert stack.server.message_ids() == []
    tries = [r for r in stack.server.requests() if r.path == "/v2/identify"]
    assert len(tries) == 1 + 3  # the first attempt and max_retries=3 Celery retries
    stack.server.set_status(202)
    assert stack.celery_queue.replay_dead_letters() == 1
    assert_delivered_once(stack, sent)
    assert count_dead_letters(app, dead_letter_queue=dead) == 0


def test_refused_messages_are_dead_lettered_without_retries(stack: Stack) -> None:
    """A 4xx refusal is not retried; the batch is kept (dead-lettered) for a person to look at."""
    stack.start_worker()
    stack.server.set_status(400)
    web_side(stack)
    track_events(1)
    app, dead = stack.app, stack.celery_queue.dead_letter_queue
    assert wait_until(lambda: count_dead_letters(app, dead_letter_queue=dead) >= 1, 60)
    assert len(stack.server.requests()) == 4  # identify, two groups, track: each once


def test_task_runs_with_the_context_it_was_sent_from(stack: Stack) -> None:
    """@tracks on a task function emits for the user and groups bound where it was enqueued."""
    stack.start_worker()
    configure(queue=stack.celery_queue)  # no transports here: only the context travels
    with bound_context(user_id="u_ctx", account_id="acc_ctx", project_id="proj_ctx"):
        stack.app.send_task("tests.create_report", args=("Q3",), queue=f"{stack.prefix}.tasks")
    assert stack.server.wait_for(4, 60)
    tracks = [r.json for r in stack.server.received() if r.path == "/v2/track"]
    assert tracks == [
        {
            "userId": "u_ctx",
            "event": "Report_Created",
            "timestamp": tracks[0]["timestamp"],
        }
    ]


def test_a_malformed_context_header_never_breaks_the_task(stack: Stack) -> None:
    """The task runs (untracked) and the bad header is reported as invalid_context."""
    worker = stack.start_worker()
    stack.app.send_task(
        "tests.create_report",
        args=("Q3",),
        queue=f"{stack.prefix}.tasks",
        headers={HEADER: {"v": 1, "user_id": 5, "groups": []}},
    )
    assert wait_until(lambda: "succeeded" in worker.log(), 60), worker.log()
    assert "invalid_context" in worker.log()
    assert "'Q3'" in worker.log()  # the task's own result: it ran

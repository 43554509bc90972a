"""What must not lose, misroute or loop: real brokers, real worker processes, real faults.

A worker process killed mid-delivery, a dead letter that cannot be published, a worker told to
consume the dead-letter queue, two transports of one class, a web process without an API key,
a fork while publishing, a broker that refuses a publish, an unreadable dead letter in front
of a replay, and the context between tasks.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
from pathlib import Path
from typing import Any

import kombu
import pytest
from celery import Celery

import instrumentor
from instrumentor import configure
from instrumentor._messages import IdentifyMessage, message_to_data
from instrumentor.celery import CeleryPublisher, CeleryQueue, count_dead_letters
from instrumentor.exceptions import RetryableDeliveryError
from instrumentor.transports import AccoilTransport, MemoryTransport
from tests.celery.conftest import BROKERS, Stack, track_events, wait_until, web_side
from tests.celery.worker_app import KEY
from tests.support import run_python

pytestmark = pytest.mark.services

KEY_A, KEY_B = "sk_test_route_a", "sk_test_route_b"
_kombu: Any = kombu  # untyped
Connection, Exchange, Queue = _kombu.Connection, _kombu.Exchange, _kombu.Queue


def a_message(message_id: str = "m-dead-1") -> dict[str, object]:
    return {
        "type": "identify",
        "user_id": "u_dead",
        "group_id": None,
        "traits": {},
        "timestamp": "2026-01-01T00:00:00+00:00",
        "message_id": message_id,
    }


def park(stack: Stack, payload: object, queue: str | None = None) -> None:
    """Put a batch on the dead-letter queue (or ``queue``) as the worker parks one."""
    celery_queue = stack.celery_queue
    stack.app.send_task(
        celery_queue.task_name,
        args=("default", payload),
        kwargs={"dead_letter": {"reason": "parked by the test"}},
        queue=queue or celery_queue.dead_letter_queue,
        serializer="json",
    )


def test_a_worker_process_killed_mid_delivery_has_its_batch_redelivered(stack: Stack) -> None:
    """SIGKILL the prefork child while the provider hangs: the batch comes back (same ids)."""
    stack.server.hang_next(1)
    worker = stack.start_worker(pool="prefork")
    memory = web_side(stack)
    track_events(1)
    assert instrumentor.flush(10).pending == 0
    assert stack.server.wait_for_requests(1, 60)  # the child is inside the hung request
    (child,) = worker.children()
    os.kill(child, signal.SIGKILL)
    sent = {m.message_id for m in memory.messages}
    assert wait_until(lambda: set(stack.server.message_ids()) >= sent, 60), worker.log()
    assert set(stack.server.message_ids()) == sent  # duplicates, if any, keep their ids


def test_a_dead_letter_that_cannot_be_published_is_retried_not_lost(
    rabbitmq_stack: Stack,
) -> None:
    """The dead-letter queue is declared incompatibly: the batch is retried, ids in the log."""
    stack = rabbitmq_stack
    dead = stack.celery_queue.dead_letter_queue
    with Connection(stack.broker) as connection:  # Celery's durable declaration must fail
        exchange = Exchange(dead, "direct", durable=False)
        Queue(dead, exchange, routing_key=dead, durable=False)(connection.default_channel).declare()
    stack.server.set_status(400)
    worker = stack.start_worker()
    memory = web_side(stack)
    track_events(1)
    worker.wait_log("delivery_task_error")
    log = worker.log()
    assert all(m.message_id in log for m in memory.messages), log
    with Connection(stack.broker) as connection:  # the operator fixes the queue
        connection.default_channel.queue_delete(dead)
        connection.default_channel.exchange_delete(dead)
    assert wait_until(lambda: count_dead_letters(stack.app, dead_letter_queue=dead) == 1, 60), (
        worker.log()
    )


def test_a_worker_never_consumes_the_dead_letter_queue(redis_stack: Stack) -> None:
    """-Q <dead> is refused at start (with the other set-up warnings); nothing loops."""
    stack = redis_stack
    stack.server.set_status(400)
    park(stack, [a_message()])
    dead = stack.celery_queue.dead_letter_queue
    worker = stack.start_worker(
        queues=f"{dead},{stack.prefix}.tasks", env={"TEST_CELERY_PICKLE": "1", "C_FORCE_ROOT": "1"}
    )
    worker.wait_log("stopped consuming the dead-letter queue")
    log = worker.log()
    assert "does not consume the delivery queue" in log
    assert "accept_content includes pickle" in log
    stack.app.send_task("tests.create_report", args=("Q3",), queue=f"{stack.prefix}.tasks")
    worker.wait_log("succeeded")  # it is consuming: its other queue is served
    assert stack.waiting("dead") == 1
    assert stack.server.requests() == []


def test_a_dead_letter_run_by_a_worker_is_parked_again_not_delivered(redis_stack: Stack) -> None:
    """A dead letter a worker runs is parked again (dead_letter_consumed), never delivered."""
    stack = redis_stack
    stack.server.set_status(400)
    worker = stack.start_worker()
    park(stack, [a_message()], queue=stack.celery_queue.queue)
    assert wait_until(lambda: stack.waiting("dead") == 1, 60), worker.log()
    assert "dead_letter_consumed" in worker.log()
    assert stack.server.requests() == []


def test_two_transports_of_one_class_are_two_routes(redis_stack: Stack) -> None:
    """Events of key A are delivered with key A and events of key B with key B, each once."""
    stack = redis_stack
    stack.start_worker(env={"TEST_CELERY_KEYS": f"{KEY_A},{KEY_B}"})
    memory = MemoryTransport()
    url = stack.server.url
    configure(
        transports=[
            memory,
            AccoilTransport(KEY_A, endpoint=url),
            AccoilTransport(KEY_B, endpoint=url),
        ],
        queue=stack.celery_queue,
    )
    track_events(3)
    sent = sorted(m.message_id for m in memory.messages)
    assert stack.server.wait_for(2 * len(sent), 60)
    for key in (KEY_A, KEY_B):
        with_key = [
            i
            for r in stack.server.received()
            if r.headers.get("authorization") == f"Basic {key}"
            for i in r.message_ids
        ]
        assert sorted(with_key) == sent, key


def test_a_web_process_without_an_api_key_gets_its_events_delivered(stack: Stack) -> None:
    """The web side has no key and no transport; the worker delivers with its own key."""
    stack.start_worker()
    configure(queue=stack.celery_queue)
    before = instrumentor.stats().get("delivered", 0)  # counters are process-wide
    track_events(6)
    assert instrumentor.flush(10).pending == 0
    published = instrumentor.stats()["delivered"] - before
    assert published >= 6  # every track at least, identify and groups too
    assert stack.server.wait_for(published, 60)
    assert all(r.headers.get("authorization") == f"Basic {KEY}" for r in stack.server.received())


def test_task_messages_never_carry_the_api_key(redis_stack: Stack) -> None:
    """What goes over the broker is the route and the messages, never a key."""
    stack = redis_stack
    configure(
        transports=[AccoilTransport(KEY, endpoint=stack.server.url)], queue=stack.celery_queue
    )
    track_events(3)
    assert instrumentor.flush(10).pending == 0
    raw: list[str] = []
    with stack.app.connection_for_write() as connection:
        bound = stack.app.amqp.queues[stack.celery_queue.queue](connection.default_channel)
        while (message := bound.get(no_ack=True)) is not None:
            raw.append(f"{message.body!r} {message.headers!r} {message.properties!r}")
    assert raw
    assert all("AccoilTransport" in text and "message_id" in text for text in raw)
    assert not [text for text in raw if KEY in text]


FORK_SCRIPT = """
import json, os, sys
import instrumentor
from tests.celery.proxy import HoldFirstProxy
from tests.celery.worker_app import make_app
from tests.plan import Events

proxy = HoldFirstProxy(("127.0.0.1", 6379)).start()
app, queue = make_app(f"redis://127.0.0.1:{proxy.port}/13", sys.argv[1])
instrumentor.configure(queue=queue)
context = dict(user_id="u_fork", account_id="acc_1", project_id="proj_1")
with instrumentor.bound_context(**context):
    instrumentor.track(Events.REPORT_CREATED)
assert proxy.held.wait(30), "the publisher never connected"
pid = os.fork()  # the publisher thread is inside its publish, holding its lock
if pid == 0:
    with instrumentor.bound_context(**context):
        instrumentor.track(Events.REPORT_CREATED)
    result = instrumentor.flush(20)
    print(json.dumps({"pending": result.pending, "published": result.delivered}), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
"""


def test_a_child_forked_while_the_parent_publishes_can_publish(redis_stack: Stack) -> None:
    """gunicorn --preload: fork while the parent's publisher holds its lock and socket."""
    stack = redis_stack
    before = stack.waiting("deliver")
    script = stack.tmp / "fork_publish.py"
    script.write_text(FORK_SCRIPT)
    result = run_python(str(script), stack.prefix, PYTHONPATH=str(Path.cwd()))
    assert result.returncode == 0, result.stderr
    child = json.loads(result.stdout.strip().splitlines()[-1])
    assert child["pending"] == 0, result.stderr[-2000:]
    assert child["published"] >= 1  # the track (identify and groups were the parent's)
    assert stack.waiting("deliver") > before


def test_a_publish_the_broker_refuses_is_not_counted_as_published(rabbitmq_stack: Stack) -> None:
    """Publisher confirms: a queue at its length limit nacks the publish, so it is retried."""
    stack = rabbitmq_stack
    name = f"{stack.prefix}.full"
    full = Queue(
        name,
        Exchange(name, "direct"),
        routing_key=name,
        queue_arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
    )
    app = Celery("confirms", broker=BROKERS["rabbitmq"], set_as_current=False)
    app.conf.task_queues = [full]
    publisher = CeleryPublisher(
        CeleryQueue(app, queue=name, dead_letter_queue=f"{name}.dead", propagate_context=False),
        "default",
    )
    memory = MemoryTransport()
    with instrumentor.configured(transports=[memory]):
        track_events(1)
    try:
        with Connection(stack.broker) as connection:
            full(connection.default_channel).declare()
        with pytest.raises(RetryableDeliveryError, match="could not publish"):
            publisher.deliver(memory.messages)
    finally:
        publisher.close()
        with Connection(stack.broker) as connection:
            connection.default_channel.queue_delete(name)


def test_replay_steps_over_a_dead_letter_it_cannot_read(stack: Stack) -> None:
    """An unreadable batch first in line stays there; the readable one behind it is replayed."""
    park(stack, {"not": "a list"})
    message = IdentifyMessage("u_1", None, {}, dt.datetime.now(dt.timezone.utc))
    park(stack, [message_to_data(message)])
    assert stack.celery_queue.replay_dead_letters() == 1
    assert stack.waiting("dead") == 1
    assert stack.waiting("deliver") == 1


def test_tasks_never_inherit_a_previous_tasks_context(redis_stack: Stack) -> None:
    """A task without a header runs with nothing bound; one sent from a task inherits."""
    stack = redis_stack
    worker = stack.start_worker()
    configure(queue=stack.celery_queue)
    tasks = f"{stack.prefix}.tasks"
    stack.app.send_task("tests.bind_user", args=("u_leak",), queue=tasks)
    stack.app.send_task("tests.create_report", args=("after",), queue=tasks)
    with instrumentor.bound_context(user_id="u_nested", account_id="acc_n", project_id="proj_n"):
        stack.app.send_task("tests.create_report_later", args=("nested",), queue=tasks)
    assert wait_until(
        lambda: any(
            r.path == "/v2/track" and r.json.get("userId") == "u_nested"
            for r in stack.server.received()
        ),
        60,
    ), worker.log()
    assert "u_leak" not in {r.json.get("userId") for r in stack.server.received()}
    assert "missing_user" in worker.log()

"""The Celery app of the tests: one module for the test process (web side) and the workers.

A worker runs ``python -m celery -A tests.celery.worker_app worker``; everything it needs comes
from ``TEST_CELERY_*`` variables: the broker, the queue names (unique per test run, so parallel
runs never share a queue) and the provider URL (the test's loopback :class:`FaultServer`).
Switches: ``TEST_CELERY_KEYS=a,b`` delivers through one Accoil transport per key (routes
``AccoilTransport``, ``AccoilTransport#2``) instead of the single ``KEY``;
``TEST_CELERY_PICKLE=1`` makes the worker accept pickle (to see it warn).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

import instrumentor
from instrumentor import bind_context, tracks
from instrumentor.celery import CeleryQueue
from instrumentor.delivery import RetryPolicy
from instrumentor.transports import AccoilTransport
from tests.plan import Events

KEY = "sk_test_celery_not_real"


def make_app(broker: str, prefix: str) -> tuple[Any, CeleryQueue]:
    """A Celery app on ``broker`` whose queues are named ``<prefix>.*``, and its CeleryQueue."""
    app = Celery("instrumentor_tests", broker=broker, set_as_current=False)
    app.conf.update(
        task_default_queue=f"{prefix}.tasks",
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=2,
        worker_hijack_root_logger=False,
    )
    queue = CeleryQueue(
        app,
        queue=f"{prefix}.deliver",
        dead_letter_queue=f"{prefix}.dead",
        max_retries=int(os.environ.get("TEST_CELERY_MAX_RETRIES", "3")),
        base_delay=0.05,
        max_delay=0.2,
        linger=0.02,
        publish_retry=RetryPolicy(
            max_attempts=100_000, max_elapsed=120, base_delay=0.02, max_delay=0.2
        ),
        publish_timeout=2.0,
    )
    app.task(name="tests.create_report")(create_report)
    app.task(name="tests.bind_user")(bind_user)
    app.task(name="tests.create_report_later", bind=True)(create_report_later)
    return app, queue


@tracks(Events.REPORT_CREATED)
def create_report(title: str) -> str:
    """A business function run as a Celery task; tracked in the worker."""
    return title


def bind_user(user_id: str) -> str:
    """A task that binds a user and never unbinds it (the next task must not inherit it)."""
    bind_context(user_id=user_id, account_id="acc_leak", project_id="proj_leak")
    return user_id


def create_report_later(task: Any, title: str) -> str:
    """A task that sends ``create_report`` from inside the worker (it inherits the context)."""
    task.app.send_task(
        "tests.create_report", args=(title,), queue=task.request.delivery_info.get("routing_key")
    )
    return title


if "TEST_CELERY_BROKER" in os.environ:  # a worker process
    app, celery_queue = make_app(os.environ["TEST_CELERY_BROKER"], os.environ["TEST_CELERY_PREFIX"])
    if os.environ.get("TEST_CELERY_PICKLE"):
        app.conf.accept_content = ["json", "pickle"]
    provider = os.environ["TEST_CELERY_PROVIDER"]
    keys = [k for k in os.environ.get("TEST_CELERY_KEYS", "").split(",") if k]
    if keys:
        transports = [AccoilTransport(key, endpoint=provider) for key in keys]
        instrumentor.configure(transports=transports, queue=celery_queue, bundle_ttl=0)
    else:
        instrumentor.configure(api_key=KEY, endpoint=provider, queue=celery_queue, bundle_ttl=0)

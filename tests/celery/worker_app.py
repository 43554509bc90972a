"""The Celery app of the tests: one module for the test process (web side) and the workers.

A worker runs ``python -m celery -A tests.celery.worker_app worker``; everything it needs comes
from ``TEST_CELERY_*`` variables: the broker, the queue names (unique per test run, so parallel
runs never share a queue) and the provider URL (the test's loopback :class:`FaultServer`).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

import instrumentor
from instrumentor import RetryPolicy, tracks
from instrumentor.celery import CeleryQueue
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
    return app, queue


@tracks(Events.REPORT_CREATED)
def create_report(title: str) -> str:
    """A business function run as a Celery task; tracked in the worker."""
    return title


if "TEST_CELERY_BROKER" in os.environ:  # a worker process
    app, celery_queue = make_app(os.environ["TEST_CELERY_BROKER"], os.environ["TEST_CELERY_PREFIX"])
    instrumentor.configure(
        api_key=KEY,
        endpoint=os.environ["TEST_CELERY_PROVIDER"],
        queue=celery_queue,
        bundle_ttl=0,
    )

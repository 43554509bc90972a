"""The Celery app module, imported by the web processes and by the workers alike.

Building the ``CeleryQueue`` here registers the delivery task on the app (workers need it) and
turns on context propagation (tasks run with the context they were sent from). Web processes
publish the ``default`` route and need no API key; the workers deliver it with theirs. Run a
worker on the delivery queue and the application's queue::

    ANALYTICS_API_KEY=sk_live_... celery -A examples.celery_app.tasks worker -Q instrumentor,celery
"""

from __future__ import annotations

import os

from celery import Celery

import instrumentor
from instrumentor import EventRegistry, event, tracks
from instrumentor.celery import CeleryQueue

app = Celery("example", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    broker_connection_timeout=4,
)

celery_queue = CeleryQueue(app)  # queue "instrumentor", dead letters on "instrumentor.dead"
# Workers read the API key (and endpoint) from ANALYTICS_* variables; web processes need none.
instrumentor.configure(queue=celery_queue)


class Events(EventRegistry):
    """The plan of this example."""

    EXPORT_FINISHED = event("Export_Finished", category="feature_usage", group_level="project")


@app.task(name="example.export_report")  # type: ignore[untyped-decorator]  # celery is untyped
@tracks(Events.EXPORT_FINISHED)
def export_report(report_id: str) -> str:
    """Runs in the worker, bound to the context of the request that enqueued it."""
    return f"exported {report_id}"

"""A WSGI app for the gunicorn --preload test: instrumentor is configured in the master."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import instrumentor
from instrumentor import bound_context, track
from instrumentor.transports import SegmentTransport
from tests.plan import Events

instrumentor.configure(
    transports=[SegmentTransport("sk_gunicorn", endpoint=os.environ["SINK_URL"])],
    exit_timeout=5,
    outbox=os.environ.get("OUTBOX_PATH"),  # the outbox test: every worker shares one file
)
with bound_context(user_id="master", account_id="acc_1"):
    track(Events.PLAN_UPGRADED)  # before the fork: the master's worker thread is running


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Track one event per request, as the worker process that served it."""
    pid = os.getpid()
    with bound_context(user_id=f"worker-{pid}", account_id="acc_1"):
        track(Events.PLAN_UPGRADED, properties={"pid": pid})
    body = str(pid).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

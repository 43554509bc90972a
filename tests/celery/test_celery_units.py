"""The Celery pieces that need no broker: options, secrets, the context header, imports."""

from __future__ import annotations

import datetime as dt
import socket
from typing import Any

import pytest
from celery import Celery

import instrumentor
from instrumentor import (
    AccoilTransport,
    AnalyticsContext,
    ConfigurationError,
    Group,
    MemoryTransport,
    RetryableDeliveryError,
    configure,
)
from instrumentor.celery import CeleryPublisher, CeleryQueue
from instrumentor.integrations.celery import context_from_header, context_to_header
from instrumentor.messages import IdentifyMessage
from tests.support import run_python

PASSWORD = "s3cret-broker-password"


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: nothing listens there


def app_on(url: str) -> Any:
    return Celery("units", broker=url, set_as_current=False)


def test_importing_instrumentor_does_not_import_celery() -> None:
    result = run_python(
        code="""
        import sys, instrumentor
        instrumentor.configure(api_key="k")
        print(sorted(m for m in ("celery", "kombu") if m in sys.modules))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_configure_with_a_celery_queue_puts_a_publisher_behind_each_default_destination() -> None:
    queue = CeleryQueue(app_on(f"redis://127.0.0.1:{dead_port()}/0"), propagate_context=False)
    configure(api_key="sk_units", queue=queue)
    from instrumentor.config import runtime

    (destination,) = runtime().destinations()
    assert isinstance(destination.transport, CeleryPublisher)
    assert destination.transport.kind == "AccoilTransport"
    assert instrumentor.current_settings().queue is queue


def test_inline_transports_and_your_own_destinations_are_left_alone() -> None:
    queue = CeleryQueue(app_on(f"redis://127.0.0.1:{dead_port()}/0"), propagate_context=False)
    memory = MemoryTransport()
    configure(transports=[memory], queue=queue)
    from instrumentor.config import runtime

    assert runtime().destinations() == []


@pytest.mark.parametrize(
    "options",
    [
        {"queue": "same", "dead_letter_queue": "same"},
        {"queue": ""},
        {"max_retries": -1},
        {"publish_timeout": 0},
    ],
)
def test_bad_options_raise_configuration_errors(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        CeleryQueue(app_on("memory://"), propagate_context=False, **options)


def test_an_outbox_and_a_queue_together_are_refused(tmp_path: Any) -> None:
    queue = CeleryQueue(app_on("memory://"), propagate_context=False)
    with pytest.raises(ConfigurationError, match="outbox and queue are alternatives"):
        instrumentor.configure(api_key="k", queue=queue, outbox=tmp_path / "outbox.db")
    assert instrumentor.current_settings().queue is None


def test_a_queue_that_is_not_a_backend_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="queue backend such as CeleryQueue"):
        configure(queue="redis://")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="needs a Celery app"):
        CeleryQueue(object())


def test_a_dead_broker_is_a_retryable_error_without_the_password() -> None:
    """Publishing to a port where nothing listens fails quickly, retryably, and says no secret."""
    app = app_on(f"amqp://guest:{PASSWORD}@127.0.0.1:{dead_port()}//")
    queue = CeleryQueue(app, propagate_context=False)
    publisher = CeleryPublisher(queue, AccoilTransport("sk_units"))
    message = IdentifyMessage("u_1", None, {}, dt.datetime.now(dt.timezone.utc))
    with pytest.raises(RetryableDeliveryError) as caught:
        publisher.deliver([message])
    assert "could not publish to the Celery broker" in str(caught.value)
    assert PASSWORD not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    assert PASSWORD not in repr(queue)
    assert PASSWORD not in repr(publisher)
    publisher.close()


def test_context_header_round_trip() -> None:
    context = AnalyticsContext(
        user_id="u_1",
        user_traits={"plan": "pro"},
        groups={
            "account": Group("acc_1", name="Acme", traits={"tier": 1}),
            "project": Group("p_1"),
        },
    )
    assert context_from_header(context_to_header(context)) == context
    assert context_to_header(AnalyticsContext()) is None


@pytest.mark.parametrize(
    "header",
    [
        None,
        "u_1",
        {"v": 2, "user_id": "u", "user_traits": {}, "groups": {}},
        {"v": 1, "user_id": 5, "user_traits": {}, "groups": {}},
        {"v": 1, "user_id": "u", "user_traits": [], "groups": {}},
        {"v": 1, "user_id": "u", "user_traits": {}, "groups": {"account": {"id": ""}}},
        {"v": 1, "user_id": "u", "user_traits": {}, "groups": {"account": "acc_1"}},
        {"v": 1, "user_id": "u", "user_traits": {}, "groups": {"account": {"id": "a", "name": 3}}},
    ],
)
def test_malformed_context_headers_raise_value_error(header: Any) -> None:
    with pytest.raises(ValueError):
        context_from_header(header)

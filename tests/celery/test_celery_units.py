"""The Celery pieces that need no broker: options, secrets, the context header, imports."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from celery import Celery

import instrumentor
import instrumentor.delivery
from instrumentor import AnalyticsContext, ConfigurationError, Group, configure
from instrumentor._messages import IdentifyMessage
from instrumentor._wiring import destinations, runtime
from instrumentor.celery import CeleryPublisher, CeleryQueue
from instrumentor.celery._context import context_from_header, context_to_header
from instrumentor.celery._task import transport_for
from instrumentor.exceptions import RetryableDeliveryError
from instrumentor.transports import AccoilTransport, MemoryTransport
from tests.celery.conftest import free_port
from tests.support import run_python

PASSWORD = "s3cret-broker-password"
PASSWORD_2 = "other-failover-password"


def app_on(url: str) -> Any:
    return Celery("units", broker=url, set_as_current=False)


def dead_redis() -> Any:
    """An app whose broker port has nothing listening (free_port closes it again)."""
    return app_on(f"redis://127.0.0.1:{free_port()}/0")


def routes() -> list[str]:
    return [d.transport.route for d in destinations() if isinstance(d.transport, CeleryPublisher)]


def test_importing_instrumentor_does_not_import_celery() -> None:
    """import instrumentor (even configured) never imports celery or kombu."""
    result = run_python(
        code="""
        import sys, instrumentor
        instrumentor.configure(api_key="k")
        print(sorted(m for m in ("celery", "kombu") if m in sys.modules))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_web_side_needs_no_api_key_it_publishes_the_default_route() -> None:
    """Without a key there is no transport here, yet every event is published (route default)."""
    queue = CeleryQueue(dead_redis(), propagate_context=False)
    configure(queue=queue)
    assert routes() == ["default"]
    configure(api_key="sk_units")  # a key in the web process changes nothing
    assert routes() == ["default"]
    assert instrumentor.current_settings().queue is queue


def test_each_transport_that_does_io_is_its_own_route_even_of_the_same_class() -> None:
    """Two Accoil transports (two keys) publish two routes; the memory one stays here."""
    memory = MemoryTransport()
    configure(
        transports=[memory, AccoilTransport("sk_a"), AccoilTransport("sk_b")],
        queue=CeleryQueue(dead_redis(), propagate_context=False),
    )
    assert routes() == ["AccoilTransport", "AccoilTransport#2"]
    assert [
        r.transport
        for r in runtime().receivers
        if not isinstance(r, instrumentor.delivery.Destination)
    ] == [memory]


def test_explicit_routes_and_a_queue_that_would_publish_nothing() -> None:
    """Explicit routes are published; nothing to publish is refused; debug publishes none."""
    memory = MemoryTransport()
    configure(
        transports=[memory],
        queue=CeleryQueue(dead_redis(), routes=("eu", "us"), propagate_context=False),
    )
    assert routes() == ["eu", "us"]
    with pytest.raises(ConfigurationError, match="nothing would be published"):
        configure(transports=[memory], queue=CeleryQueue(dead_redis(), propagate_context=False))
    assert routes() == ["eu", "us"]  # the refused configuration changed nothing
    configure(debug=True, transports=None)  # debug prints instead of publishing
    assert routes() == []


def test_a_worker_resolves_routes_against_its_own_transports() -> None:
    """A worker maps default, class names and #2 to its own configured transports."""
    first, second = AccoilTransport("sk_a"), AccoilTransport("sk_b")
    configure(transports=[MemoryTransport(), first, second])
    assert transport_for("default") is first
    assert transport_for("AccoilTransport") is first
    assert transport_for("AccoilTransport#2") is second
    assert transport_for("SegmentTransport") is None


def test_eager_apps_are_refused_at_configure_time() -> None:
    """An app with task_always_eager is refused by configure()."""
    app = dead_redis()
    app.conf.task_always_eager = True
    with pytest.raises(ConfigurationError, match="task_always_eager"):
        configure(queue=CeleryQueue(app, propagate_context=False))


def test_a_retry_longer_than_the_redis_visibility_timeout_is_refused() -> None:
    """On Redis, a longest retry delay not below visibility_timeout is refused."""
    app = dead_redis()
    app.conf.broker_transport_options = {"visibility_timeout": 120}
    with pytest.raises(ConfigurationError, match="visibility_timeout"):
        CeleryQueue(app, propagate_context=False)
    app.conf.broker_transport_options = {"visibility_timeout": 7200}
    CeleryQueue(app, max_delay=600, propagate_context=False)


@pytest.mark.parametrize(
    "options",
    [
        {"queue": "same", "dead_letter_queue": "same"},
        {"queue": ""},
        {"max_retries": -1},
        {"publish_timeout": 0},
        {"routes": ()},
        {"routes": ("a", "a")},
        {"routes": ("",)},
    ],
)
def test_bad_options_raise_configuration_errors(options: dict[str, Any]) -> None:
    """Invalid CeleryQueue options raise ConfigurationError."""
    with pytest.raises(ConfigurationError):
        CeleryQueue(app_on("memory://"), propagate_context=False, **options)


def test_an_outbox_and_a_queue_together_are_refused(tmp_path: Any) -> None:
    """outbox and queue are alternatives: both together are refused, nothing installed."""
    queue = CeleryQueue(app_on("memory://"), propagate_context=False)
    with pytest.raises(ConfigurationError, match="outbox and queue are alternatives"):
        instrumentor.configure(api_key="k", queue=queue, outbox=tmp_path / "outbox.db")
    assert instrumentor.current_settings().queue is None


def test_a_queue_that_is_not_a_backend_is_refused() -> None:
    """A queue that is not a backend, or a CeleryQueue without an app, is refused."""
    with pytest.raises(ConfigurationError, match="queue backend such as CeleryQueue"):
        configure(queue="redis://")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="needs a Celery app"):
        CeleryQueue(object())


def test_a_dead_broker_is_a_retryable_error_without_the_password() -> None:
    """Publishing to a port where nothing listens fails quickly, retryably, and says no secret."""
    app = app_on(f"amqp://guest:{PASSWORD}@127.0.0.1:{free_port()}//")
    queue = CeleryQueue(app, propagate_context=False)
    publisher = CeleryPublisher(queue, "default")
    message = IdentifyMessage("u_1", None, {}, dt.datetime.now(dt.timezone.utc))
    with pytest.raises(RetryableDeliveryError) as caught:
        publisher.deliver([message])
    assert "could not publish to the Celery broker" in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    assert PASSWORD not in repr(queue)
    assert PASSWORD not in repr(publisher)
    publisher.close()


def test_broker_errors_that_quote_the_urls_lose_every_password() -> None:
    """An error whose text is the (failover) broker URL comes out with both passwords masked."""
    urls = (
        f"amqp://guest:{PASSWORD}@127.0.0.1:{free_port()}//;"
        f"amqp://guest:{PASSWORD_2}@127.0.0.1:{free_port()}//"
    )
    app = app_on(urls)

    def send_task(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError(f"cannot reach {urls}")

    app.send_task = send_task
    publisher = CeleryPublisher(CeleryQueue(app, propagate_context=False), "default")
    message = IdentifyMessage("u_1", None, {}, dt.datetime.now(dt.timezone.utc))
    with pytest.raises(RetryableDeliveryError) as caught:
        publisher.deliver([message])
    text = str(caught.value)
    assert "cannot reach amqp://guest:********@127.0.0.1" in text
    assert PASSWORD not in text
    assert PASSWORD_2 not in text


def test_context_header_round_trip() -> None:
    """A context with traits survives the header round trip unchanged; an empty one sends none."""
    context = AnalyticsContext(
        user_id="u_1",
        user_traits={"plan": "pro"},
        groups={
            "account": Group("acc_1", name="Acme", traits={"tier": 1}),
            "project": Group("p_1"),
        },
    )
    assert context_from_header(context_to_header(context, traits=True)) == context
    assert context_to_header(AnalyticsContext()) is None


def test_context_headers_carry_ids_only_unless_traits_are_asked_for() -> None:
    """By default headers carry user and group ids only, never traits or names."""
    context = AnalyticsContext(
        user_id="u_1",
        user_traits={"email": "ada@example.com"},
        groups={"account": Group("acc_1", name="Acme", traits={"tier": 1})},
    )
    header = context_to_header(context)
    assert "ada@example.com" not in str(header)
    assert "Acme" not in str(header)
    assert context_from_header(header) == AnalyticsContext(
        user_id="u_1", groups={"account": Group("acc_1")}
    )


def test_a_task_run_eagerly_keeps_the_callers_context() -> None:
    """apply() runs on the caller's thread: the caller's context stays bound in it."""
    app = app_on("memory://")
    CeleryQueue(app)  # turns on propagation
    seen: list[Any] = []

    @app.task(name="units.look")  # type: ignore[untyped-decorator]
    def look() -> None:
        seen.append(instrumentor.current_context().user_id)

    with instrumentor.bound_context(user_id="u_eager"):
        look.apply()
    assert seen == ["u_eager"]


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
    """Every malformed header is a ValueError."""
    with pytest.raises(ValueError):
        context_from_header(header)


def test_a_worker_in_debug_mode_prints_instead_of_sending() -> None:
    """Debug means print, never send, in a worker too: every route gets the console."""
    from instrumentor.transports import ConsoleTransport

    with instrumentor.configured(debug=True, transports=(AccoilTransport("k"),)):
        assert isinstance(transport_for("default"), ConsoleTransport)
        assert isinstance(transport_for("AccoilTransport"), ConsoleTransport)
    with instrumentor.configured(debug=False, transports=(AccoilTransport("k"),)):
        assert isinstance(transport_for("AccoilTransport"), AccoilTransport)

"""What the Flask extension and the Django middleware cost per request, in-process, no network.

Each row calls a WSGI application directly with a prepared request (werkzeug's
``EnvironBuilder``, a fresh body stream per call), ``--calls`` times per sample, the rows
interleaved, and reports the median microseconds per request over ``--samples`` samples; the
last column is the difference to the bare app's trivial route:

- a trivial route in the bare app, and the same route with the extension/middleware installed
  (the identity resolved from a header, bound, and reset: the cost every request pays);
- ``POST /analytics/track`` accepted (202; tracked into an inline transport that discards) and
  refused as an unknown event (422).

Server, sockets and HTTP parsing are left out on purpose: they are the same with or without
instrumentor. Always exits 0.

    python benchmarks/bench_wsgi_adapters.py [--quick] [--calls 2000] [--samples 7]
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from werkzeug.test import EnvironBuilder

import instrumentor
from instrumentor import EventRegistry, event
from instrumentor.integrations import Identity, TrackEndpoint

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Events(EventRegistry):
    BENCH_CLICKED = event("Bench_Clicked", category="feature_usage", frontend=True)


class Discard:
    inline = True

    def deliver(self, batch: Sequence[object]) -> None:
        pass

    def close(self) -> None:
        pass


def _identity(user: str | None) -> Identity | None:
    return Identity(user_id=user, account_id="acc_1") if user else None


def flask_apps() -> tuple[WsgiApp, WsgiApp]:
    """The bare Flask app and the same app with the extension."""
    from flask import Flask, Request

    from instrumentor.integrations.flask import Analytics

    def build(with_extension: bool) -> WsgiApp:
        app = Flask("bench")

        @app.post("/plain")
        def plain() -> tuple[dict[str, bool], int]:
            return {"accepted": True}, 202

        if with_extension:

            def resolve(request: Request) -> Identity | None:
                return _identity(request.headers.get("x-user"))

            Analytics(app, resolver=resolve, endpoint=TrackEndpoint(rate=None))
        return app.wsgi_app

    return build(False), build(True)


def django_apps() -> tuple[WsgiApp, WsgiApp]:
    """The bare Django project and the same project with the middleware."""
    import django
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler
    from django.http import HttpRequest, JsonResponse
    from django.test import override_settings
    from django.urls import include, path
    from django.views.decorators.csrf import csrf_exempt

    from instrumentor.integrations.django import urls

    @csrf_exempt
    def plain(request: HttpRequest) -> JsonResponse:
        return JsonResponse({"accepted": True}, status=202)

    def resolve(request: HttpRequest) -> Identity | None:
        return _identity(request.META.get("HTTP_X_USER"))

    urlconf = types.ModuleType("bench_urls")
    urlconf.urlpatterns = [  # type: ignore[attr-defined]
        path("plain", plain),
        path("analytics/", include(urls)),
    ]
    sys.modules[urlconf.__name__] = urlconf
    csrf = "django.middleware.csrf.CsrfViewMiddleware"
    settings.configure(
        ALLOWED_HOSTS=["localhost"],
        ROOT_URLCONF=urlconf.__name__,
        MIDDLEWARE=[csrf, "instrumentor.integrations.django.AnalyticsMiddleware"],
        INSTRUMENTOR={"RESOLVER": resolve, "RATE": None},
    )
    django.setup()
    with override_settings(MIDDLEWARE=[csrf]):
        bare = WSGIHandler()
    return bare, WSGIHandler()


def request(app: WsgiApp, path: str, body: bytes) -> Callable[[], int]:
    """One call of ``app`` with a fresh copy of a prepared environ; returns the status."""
    environ = EnvironBuilder(
        path=path,
        method="POST",
        data=body,
        headers=[("content-type", "application/json"), ("x-user", "usr_1")],
    ).get_environ()
    statuses: list[int] = []

    def start_response(status: str, headers: object, exc_info: object = None) -> None:
        statuses.append(int(status.split()[0]))

    def call() -> int:
        statuses.clear()
        env = dict(environ)
        env["wsgi.input"] = io.BytesIO(body)
        for _ in app(env, start_response):
            pass
        return statuses[0]

    return call


def measure(rows: list[Callable[[], int]], calls: int, samples: int) -> list[float]:
    """Median microseconds per call of each row, the rows interleaved in every sample."""
    per_call: list[list[float]] = [[] for _ in rows]
    for _ in range(samples):
        for times, call in zip(per_call, rows, strict=True):
            started = time.perf_counter()
            for _ in range(calls):
                call()
            times.append((time.perf_counter() - started) / calls * 1e6)
    return [statistics.median(times) for times in per_call]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="200 calls x 3 samples")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.samples = 200, 3
    instrumentor.configure(transports=[Discard()])
    accepted, unknown = b'{"event": "Bench_Clicked"}', b'{"event": "Nothing_Happened"}'
    print(f"Python {platform.python_version()} on {platform.platform()}")
    print(f"{args.calls} calls x {args.samples} samples per row, median\n")
    print("| framework | row | status | µs/request | added by instrumentor |")
    print("|---|---|---|---|---|")
    track = "/analytics/track"
    rows: list[tuple[str, str, Callable[[], int]]] = []
    for name, build in (("Flask", flask_apps), ("Django", django_apps)):
        bare, full = build()
        rows += [
            (name, "trivial route, bare app", request(bare, "/plain", accepted)),
            (name, "trivial route, with instrumentor", request(full, "/plain", accepted)),
            (name, f"`POST {track}`, accepted", request(full, track, accepted)),
            (name, f"`POST {track}`, unknown event", request(full, track, unknown)),
        ]
    statuses = [call() for _, _, call in rows]
    results = measure([call for _, _, call in rows], args.calls, args.samples)
    table = zip(rows, statuses, results, strict=True)
    for index, ((name, label, _), status, micros) in enumerate(table):
        baseline = results[index - index % 4]
        added = "" if index % 4 == 0 else f"{micros - baseline:+.1f}"
        print(f"| {name} | {label} | {status} | {micros:.1f} | {added} |")
    instrumentor.reset_configuration()


if __name__ == "__main__":
    main()

"""A Flask app that reports the bound context from its views, for the Flask tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

from flask import Flask, Request, Response, copy_current_request_context, stream_with_context

import instrumentor
from instrumentor.integrations import Identity, TrackEndpoint
from instrumentor.integrations.flask import Analytics
from tests.integrations.login import context_seen, identity_from, sign_up


def resolve(request: Request) -> Identity | None:
    """The fake login of :mod:`tests.integrations.login`, from the request's headers."""
    return identity_from(request.headers.get)


async def aresolve(request: Request) -> Identity | None:
    """The same, as an async resolver (run by flask[async])."""
    await asyncio.sleep(0)
    return resolve(request)


def _user() -> str | None:
    user = instrumentor.current_context().user_id
    return None if user is None else str(user)


def _in_thread(func: Any) -> Any:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(func()))
    thread.start()
    thread.join(10)
    return result[0]


def build(*, async_resolver: bool = False, **endpoint: Any) -> Flask:
    """The app, with the extension serving the endpoint under ``/analytics``."""
    app = Flask(__name__)
    Analytics(
        app, resolver=aresolve if async_resolver else resolve, endpoint=TrackEndpoint(**endpoint)
    )

    @app.get("/whoami")
    def whoami() -> dict[str, Any]:
        return {"user": _user()}

    @app.get("/async")
    async def async_view() -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"user": _user()}

    @app.get("/raise")
    def fail() -> dict[str, Any]:
        raise RuntimeError(f"the view failed for {_user()}")

    @app.get("/thread")
    def thread() -> dict[str, Any]:
        copied = _in_thread(copy_current_request_context(_user))
        carried = _in_thread(instrumentor.with_current_context(_user))
        return {"copy_current_request_context": copied, "with_current_context": carried}

    @app.get("/context")
    def context() -> dict[str, Any]:
        return context_seen()

    @app.get("/signup")
    def signup() -> dict[str, Any]:
        return sign_up()

    @app.get("/asignup")
    async def asignup() -> dict[str, Any]:
        return sign_up()

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[str]:
            yield f"{_user()}\n"

        return Response(stream_with_context(chunks()))

    @app.post("/plain")
    def plain() -> dict[str, Any]:
        return {"accepted": True}

    return app

"""A FastAPI app that reports the bound context from every kind of view, for the ASGI tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import StreamingResponse

import instrumentor
from instrumentor.integrations import Identity, TrackEndpoint
from instrumentor.integrations.asgi import AnalyticsMiddleware
from tests.integrations.login import context_seen, identity_from, sign_up

#: What background work saw: (where, user id).
SEEN: list[tuple[str, str | None]] = []
_pool = ThreadPoolExecutor(max_workers=2)


def resolve(request: Request) -> Identity | None:
    """The fake login of :mod:`tests.integrations.login`, from the request's headers."""
    return identity_from(request.headers.get)


async def aresolve(request: Request) -> Identity | None:
    """The same, as an async resolver."""
    await asyncio.sleep(0)
    return resolve(request)


def _user() -> str | None:
    return instrumentor.current_context().user_id


def build(*, async_resolver: bool = False, **endpoint: Any) -> FastAPI:
    """The app, with the middleware serving the endpoint under ``/analytics``."""
    app = FastAPI()

    @app.get("/async")
    async def async_view() -> dict[str, Any]:
        return {"user": _user()}

    @app.get("/whoami")
    def whoami() -> dict[str, Any]:
        return {"user": _user()}

    @app.get("/raise")
    async def fail() -> dict[str, Any]:
        raise RuntimeError(f"the view failed for {_user()}")

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(3):
                await asyncio.sleep(0)
                yield f"{_user()}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/sync")
    def sync_view() -> dict[str, Any]:
        return {"user": _user()}

    @app.get("/background")
    async def background(tasks: BackgroundTasks) -> dict[str, Any]:
        tasks.add_task(lambda: SEEN.append(("sync task", _user())))

        async def later() -> None:
            SEEN.append(("async task", _user()))

        tasks.add_task(later)
        return {}

    @app.get("/task")
    async def task() -> dict[str, Any]:
        async def user_later() -> str | None:
            await asyncio.sleep(0)
            return _user()

        return {"user": await asyncio.create_task(user_later())}

    @app.get("/pool")
    def pool() -> dict[str, Any]:
        plain = _pool.submit(_user).result(5)
        carried = _pool.submit(instrumentor.with_current_context(_user)).result(5)
        return {"plain": plain, "carried": carried}

    @app.get("/context")
    def context() -> dict[str, Any]:
        return context_seen()

    @app.get("/signup")
    def signup() -> dict[str, Any]:
        return sign_up()

    @app.get("/asignup")
    async def asignup() -> dict[str, Any]:
        return sign_up()

    @app.post("/plain")
    async def plain() -> dict[str, Any]:
        return {"accepted": True}

    app.add_middleware(
        AnalyticsMiddleware,
        resolver=aresolve if async_resolver else resolve,
        endpoint=TrackEndpoint(**endpoint),
    )
    return app

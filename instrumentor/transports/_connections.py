"""The connections the Accoil transport sends through: a pooled ``httpx.Client``, or a transport.

Requests are built once per message and sent with ``Client.send`` (no per-call option merging);
the client applies the proxies the environment names, and TLS as httpx always does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

__all__ = ["Headers", "ThroughHttpx", "connections"]


#: Request headers, as (name, value) bytes.
Headers = list[tuple[bytes, bytes]]


class ThroughHttpx:
    """Requests through an ``httpx`` transport: ``post`` answers the status and ``Retry-After``.

    Args:
        endpoint: The base URL the paths are appended to.
        transport: The transport (an ``httpx.MockTransport`` in tests).
        timeout: Seconds for connecting, each read and write, and waiting for a connection.
    """

    def __init__(self, endpoint: str, transport: httpx.BaseTransport, timeout: float) -> None:
        self._endpoint = endpoint
        self._transport = transport
        self._extensions = _timeouts(timeout)

    def post(self, path: str, headers: Headers, body: bytes) -> tuple[int, str | None]:
        """POST ``body`` to ``path``; the status and the ``Retry-After`` header answered."""
        request = httpx.Request(
            "POST",
            self._endpoint + path,
            headers=headers,
            content=body,
            extensions=self._extensions,
        )
        response = self._transport.handle_request(request)
        try:
            response.read()
        finally:
            response.close()
        return response.status_code, response.headers.get("retry-after")

    def close(self) -> None:
        """Close the transport (as ``httpx.Client.close()`` would)."""
        self._transport.close()


class _ThroughClient(httpx.BaseTransport):
    """An ``httpx.Client`` as a transport: it applies the proxies the environment names."""

    def __init__(self, limit: int) -> None:
        limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
        self._client = httpx.Client(limits=limits)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` as built (its timeout travels in its extensions)."""
        return self._client.send(request)

    def close(self) -> None:
        """Close the client."""
        self._client.close()


def _timeouts(seconds: float) -> dict[str, Any]:
    return {"timeout": {"connect": seconds, "read": seconds, "write": seconds, "pool": seconds}}


def connections(
    endpoint: str,
    paths: Sequence[str],
    limit: int,
    timeout: float,
    transport: httpx.BaseTransport | None = None,
) -> ThroughHttpx:
    """The connections of one process: a pooled ``httpx.Client``, or the transport given.

    Args:
        endpoint: The base URL the ``paths`` are appended to.
        paths: The paths requests go to.
        limit: The most connections open at once (all kept alive).
        timeout: Seconds for connecting, each read and write, and waiting for a connection.
        transport: An ``httpx`` transport to send through instead (tests pass a
            ``MockTransport``). Without one, an ``httpx.Client`` with ``limit`` connections,
            which applies the environment's proxies and ``NO_PROXY`` as httpx always does.
    """
    return ThroughHttpx(endpoint, transport or _ThroughClient(limit), timeout)

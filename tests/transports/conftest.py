"""Shared by the transport tests: build transports that speak to an httpx handler."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import httpx
import pytest

Handler = Callable[[httpx.Request], httpx.Response]


class _Closable(Protocol):
    def close(self) -> None: ...


@pytest.fixture
def built() -> Iterator[Callable[..., Any]]:
    """``built(cls, handler, **kwargs)``: a transport on httpx.MockTransport; closed afterwards."""
    made: list[_Closable] = []

    def build(cls: Callable[..., Any], handler: Handler, **kwargs: Any) -> Any:
        transport = cls(http_transport=httpx.MockTransport(handler), **kwargs)
        made.append(transport)
        return transport

    yield build
    for transport in made:
        transport.close()

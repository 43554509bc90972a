"""Where messages go: the :class:`Transport` protocol and the built-in transports."""

from __future__ import annotations

from instrumentor.transports.base import InlineDestination, Transport
from instrumentor.transports.console import ConsoleTransport
from instrumentor.transports.memory import MemoryTransport

__all__ = ["ConsoleTransport", "InlineDestination", "MemoryTransport", "Transport"]

"""Where messages go: the :class:`Transport` protocol and the built-in transports."""

from __future__ import annotations

from instrumentor.transports.accoil import AccoilTransport
from instrumentor.transports.base import InlineDestination, Transport
from instrumentor.transports.console import ConsoleTransport
from instrumentor.transports.memory import MemoryTransport
from instrumentor.transports.segment import SegmentTransport

__all__ = [
    "AccoilTransport",
    "ConsoleTransport",
    "InlineDestination",
    "MemoryTransport",
    "SegmentTransport",
    "Transport",
]

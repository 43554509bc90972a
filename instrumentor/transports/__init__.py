"""Where messages go: the :class:`Transport` protocol, the built-in transports, and the messages.

A transport receives batches of :class:`Message` objects (identify, group and track) and
delivers them; see :class:`Transport` for the contract a custom one must keep.
"""

from __future__ import annotations

from instrumentor._messages import GroupMessage, IdentifyMessage, Message, TrackMessage
from instrumentor._protocols import Transport
from instrumentor.transports._accoil import AccoilTransport
from instrumentor.transports._console import ConsoleTransport
from instrumentor.transports._memory import MemoryTransport
from instrumentor.transports._otel import OTelTransport
from instrumentor.transports._segment import SegmentTransport

__all__ = [
    "AccoilTransport",
    "ConsoleTransport",
    "GroupMessage",
    "IdentifyMessage",
    "MemoryTransport",
    "Message",
    "OTelTransport",
    "SegmentTransport",
    "TrackMessage",
    "Transport",
]

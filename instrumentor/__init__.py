"""instrumentor: product-analytics tracking that is correct by construction.

Define every event once in an :class:`EventRegistry`, decorate the function that performs the
action with :func:`tracks`, bind who is acting with :func:`bind_context` once per request, and
the identify + group + track bundle is emitted after each success, never breaking the caller.
"""

from __future__ import annotations

from instrumentor.config import (
    Secret,
    Settings,
    configure,
    configured,
    current_settings,
    reset_configuration,
)
from instrumentor.context import (
    AnalyticsContext,
    ContextToken,
    Group,
    bind_context,
    bound_context,
    clear_context,
    current_context,
    reset_context,
    with_current_context,
)
from instrumentor.decorators import Call, tracks
from instrumentor.delivery import (
    Destination,
    FlushResult,
    OutboxDestination,
    OutboxError,
    RetryPolicy,
    aflush,
    flush,
    shutdown,
)
from instrumentor.diagnostics import Incident, reset_stats, stats
from instrumentor.emitter import Emission, establish_group_hierarchy, group, identify, track
from instrumentor.exceptions import (
    ConfigurationError,
    DeliveryError,
    DuplicateEventError,
    InstrumentorError,
    MissingContextError,
    NamingRuleError,
    PartialDeliveryError,
    PayloadTooLargeError,
    PermanentDeliveryError,
    PlanError,
    RetryableDeliveryError,
    TrackingUsageError,
    UnknownCategoryError,
    UnknownGroupLevelError,
    WaiverError,
)
from instrumentor.messages import GroupMessage, IdentifyMessage, Message, TrackMessage
from instrumentor.otel import OTelTransport
from instrumentor.registry import (
    CATEGORIES,
    CATEGORY_ORDER,
    DEFAULT_HIERARCHY,
    EventRegistry,
    EventSpec,
    GroupHierarchy,
    all_events,
    event,
    find_event,
    plan_hierarchy,
)
from instrumentor.signals import event_emitted
from instrumentor.transports import (
    AccoilTransport,
    ConsoleTransport,
    MemoryTransport,
    SegmentTransport,
    Transport,
)

__version__ = "0.1.0"

__all__ = [
    "AccoilTransport",
    "AnalyticsContext",
    "CATEGORIES",
    "CATEGORY_ORDER",
    "Call",
    "ConfigurationError",
    "ConsoleTransport",
    "ContextToken",
    "DEFAULT_HIERARCHY",
    "DeliveryError",
    "Destination",
    "DuplicateEventError",
    "Emission",
    "EventRegistry",
    "EventSpec",
    "FlushResult",
    "Group",
    "GroupHierarchy",
    "GroupMessage",
    "IdentifyMessage",
    "Incident",
    "InstrumentorError",
    "MemoryTransport",
    "Message",
    "MissingContextError",
    "NamingRuleError",
    "OTelTransport",
    "OutboxDestination",
    "OutboxError",
    "PartialDeliveryError",
    "PayloadTooLargeError",
    "PermanentDeliveryError",
    "PlanError",
    "RetryPolicy",
    "RetryableDeliveryError",
    "Secret",
    "SegmentTransport",
    "Settings",
    "TrackMessage",
    "TrackingUsageError",
    "Transport",
    "UnknownCategoryError",
    "UnknownGroupLevelError",
    "WaiverError",
    "__version__",
    "aflush",
    "all_events",
    "bind_context",
    "bound_context",
    "clear_context",
    "configure",
    "configured",
    "current_context",
    "current_settings",
    "establish_group_hierarchy",
    "event",
    "event_emitted",
    "find_event",
    "flush",
    "group",
    "identify",
    "plan_hierarchy",
    "reset_configuration",
    "reset_context",
    "reset_stats",
    "shutdown",
    "stats",
    "track",
    "tracks",
    "with_current_context",
]

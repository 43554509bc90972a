"""instrumentor: product-analytics tracking that is correct by construction.

Define every event once in an :class:`EventRegistry`, decorate the function that performs the
action with :func:`tracks`, bind who is acting with :func:`bind_context` once per request, and
the identify + group + track bundle is emitted after each success, never breaking the caller.

The top level holds what an application types daily. Advanced objects live in documented public
modules: :mod:`instrumentor.plan` (the hierarchy, specs, naming rules), :mod:`instrumentor.signals`
(the emission signal), :mod:`instrumentor.transports` (transports and the messages they carry),
:mod:`instrumentor.delivery` (destinations, retries, the outbox), :mod:`instrumentor.celery`,
:mod:`instrumentor.exceptions`, :mod:`instrumentor.testing` and :mod:`instrumentor.integrations`.
"""

from __future__ import annotations

import typing  # as a module, not its names: the package's public namespace is pinned

from instrumentor import _lazy
from instrumentor._context import (
    AnalyticsContext,
    ContextToken,
    Group,
    bind_context,
    clear_context,
    current_context,
    reset_context,
)
from instrumentor._decorators import Call, tracks
from instrumentor._diagnostics import Incident, IncidentKind, reset_stats
from instrumentor._emitter import track
from instrumentor._explicit import establish_group_hierarchy, group, identify
from instrumentor._registry import EventRegistry, event
from instrumentor._scope import bound_context, with_current_context
from instrumentor._wiring import (
    Secret,
    Settings,
    configure,
    configured,
    current_settings,
    reset_configuration,
    stats,
)
from instrumentor.exceptions import (
    ConfigurationError,
    InstrumentorError,
    MissingContextError,
    TrackingUsageError,
)

if (
    typing.TYPE_CHECKING
):  # loaded on first use (see __getattr__); type checkers and IDEs see them here
    from instrumentor.delivery import aflush, flush, shutdown

__version__ = "0.1.0"

__all__ = [
    "AnalyticsContext",
    "Call",
    "ConfigurationError",
    "ContextToken",
    "EventRegistry",
    "Group",
    "Incident",
    "IncidentKind",
    "InstrumentorError",
    "MissingContextError",
    "Secret",
    "Settings",
    "TrackingUsageError",
    "__version__",
    "aflush",
    "bind_context",
    "bound_context",
    "clear_context",
    "configure",
    "configured",
    "current_context",
    "current_settings",
    "establish_group_hierarchy",
    "event",
    "flush",
    "group",
    "identify",
    "reset_configuration",
    "reset_context",
    "reset_stats",
    "shutdown",
    "stats",
    "track",
    "tracks",
    "with_current_context",
]

#: Names of ``__all__`` that live in the delivery stack, loaded on first use: importing the
#: delivery stack (worker threads, retries, the SQLite outbox) is most of what
#: ``import instrumentor`` would otherwise cost, and only a process that delivers needs it.
_FROM_DELIVERY = dict.fromkeys(("aflush", "flush", "shutdown"), "instrumentor.delivery")
__getattr__, __dir__ = _lazy.lazy_names(__name__, _FROM_DELIVERY)

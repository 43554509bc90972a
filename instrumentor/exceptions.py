"""The one exception tree of instrumentor.

Definition-time misuse raises at import; run-time problems are logged, counted and reported
to the ``on_error`` hook instead of being raised, except in strict mode::

    InstrumentorError
    ├── PlanError (ValueError)               the tracking plan is wrong; raised at import
    │   ├── DuplicateEventError              two definitions of one (or a near-same) name
    │   ├── NamingRuleError                  a name breaks the naming rules
    │   ├── UnknownCategoryError             a category outside the eight
    │   ├── UnknownGroupLevelError           a level the hierarchy does not declare
    │   └── WaiverError                      a waiver without a reason, or of an unknown rule
    ├── TrackingUsageError (TypeError)       ``@tracks`` or ``track()`` used wrongly; at import
    ├── ConfigurationError (ValueError)      a bad setting passed to ``configure()``
    └── MissingContextError                  strict mode only: no user or group for an event
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DuplicateEventError",
    "InstrumentorError",
    "MissingContextError",
    "NamingRuleError",
    "PlanError",
    "TrackingUsageError",
    "UnknownCategoryError",
    "UnknownGroupLevelError",
    "WaiverError",
]


class InstrumentorError(Exception):
    """Base of every exception instrumentor raises."""


class PlanError(InstrumentorError, ValueError):
    """The tracking plan is invalid. Raised while the registry class is being created."""


class DuplicateEventError(PlanError):
    """Two event definitions share a name, or names that differ only in case or separators."""


class NamingRuleError(PlanError):
    """An event name breaks the naming rules (``Object_Action``, Title_Case, past tense)."""


class UnknownCategoryError(PlanError):
    """An event names a category that is not one of the eight known categories."""


class UnknownGroupLevelError(PlanError):
    """An event or decorator names a group level that the hierarchy does not declare."""


class WaiverError(PlanError):
    """A rule waiver has no written reason, or names a rule that does not exist."""


class TrackingUsageError(InstrumentorError, TypeError):
    """``@tracks`` or ``track()`` was applied to something it cannot track."""


class ConfigurationError(InstrumentorError, ValueError):
    """A setting given to ``configure()`` or read from the environment is invalid."""


class MissingContextError(InstrumentorError):
    """Raised in strict mode only: an event was tracked without the user or group it needs."""

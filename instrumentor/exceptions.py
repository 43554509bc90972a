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
    ├── MissingContextError                  strict mode only: no user or group for an event
    └── DeliveryError                        raised by transports, handled by the delivery worker
        ├── RetryableDeliveryError           try again later (connection, timeout, 408, 429, 5xx)
        ├── PermanentDeliveryError           the provider refused the batch (other 4xx)
        ├── PayloadTooLargeError             413 or over the size limit: split the batch
        └── PartialDeliveryError             some messages went through, others did not

Transports raise ``DeliveryError`` subclasses; the delivery worker catches them, retries what
can be retried, and reports the rest. None of them ever reaches business code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from instrumentor._messages import Message

__all__ = [
    "ConfigurationError",
    "DeliveryError",
    "DuplicateEventError",
    "INVALID_MESSAGE",
    "InstrumentorError",
    "MAX_RETRY_AFTER",
    "MissingContextError",
    "NamingRuleError",
    "PartialDeliveryError",
    "PayloadTooLargeError",
    "PermanentDeliveryError",
    "PlanError",
    "RetryableDeliveryError",
    "TOO_LARGE",
    "TrackingUsageError",
    "UnknownCategoryError",
    "UnknownGroupLevelError",
    "WaiverError",
]

#: The longest ``Retry-After`` honoured, in seconds; longer requests are clamped to it.
MAX_RETRY_AFTER = 300.0


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


#: Marks a failure reason (in :class:`PartialDeliveryError.failed`) as "too large to send":
#: a destination counts such messages as ``dropped.too_large`` rather than ``failed``.
TOO_LARGE = "too large"
#: Marks a failure reason (in :class:`PartialDeliveryError.failed`) as "this message cannot be
#: encoded" (e.g. as JSON): it fails alone whenever it is sent, so a destination counts it as
#: ``dropped.invalid_message`` (an ``invalid_message`` incident) and never retries it.
INVALID_MESSAGE = "invalid message"


class DeliveryError(InstrumentorError):
    """A transport could not deliver (part of) a batch. Never reaches business code."""


class RetryableDeliveryError(DeliveryError):
    """Worth trying again: a connection error, a timeout, 408, 429 or a 5xx but 501/505.

    Args:
        message: What happened (never containing the API key).
        retry_after: Seconds the provider asked to wait (``Retry-After``), if it said.
        status: The HTTP status, if there was a response.
    """

    def __init__(
        self, message: str, *, retry_after: float | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class PermanentDeliveryError(DeliveryError):
    """The provider refused the batch for good (a 4xx other than 408/413/429, or 501/505).

    Args:
        message: What happened.
        status: The HTTP status.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PayloadTooLargeError(DeliveryError):
    """The batch is too large (413, or over the transport's limit): it must be split."""


class PartialDeliveryError(DeliveryError):
    """Some messages of a batch were delivered and others were not.

    Args:
        message: What happened.
        retry: Messages to try again later, in their original order.
        failed: Messages refused for good, each with the reason.
        retry_after: Seconds the provider asked to wait before the retry, if it said.
    """

    def __init__(
        self,
        message: str,
        *,
        retry: Sequence[Message] = (),
        failed: Sequence[tuple[Message, str]] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retry = tuple(retry)
        self.failed = tuple(failed)
        self.retry_after = retry_after

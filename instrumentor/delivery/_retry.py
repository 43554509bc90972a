"""The retry policy: exponential backoff with full jitter, bounded by attempts and wall clock."""

from __future__ import annotations

import random
from dataclasses import dataclass

from instrumentor.exceptions import MAX_RETRY_AFTER, ConfigurationError

__all__ = ["MAX_RETRY_AFTER", "RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """When and how often a failed batch is tried again.

    The n-th retry waits a random time between 0 and ``min(max_delay, base_delay * 2**n)``
    ("full jitter"), or exactly what the provider asked for with ``Retry-After`` (clamped to
    five minutes). A batch is given up after ``max_attempts`` attempts or once ``max_elapsed``
    seconds have passed since its first attempt, whichever comes first.

    Attributes:
        max_attempts: Attempts per batch, the first included.
        max_elapsed: Seconds after the first attempt after which no retry starts.
        base_delay: The backoff's first step, in seconds.
        max_delay: The longest backoff, in seconds.
    """

    max_attempts: int = 10
    max_elapsed: float = 600.0
    base_delay: float = 0.5
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError("RetryPolicy.max_attempts must be at least 1")
        if not (self.max_elapsed >= 0 and self.base_delay >= 0 and self.max_delay >= 0):
            raise ConfigurationError("RetryPolicy times must be >= 0 seconds")

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_RETRY_AFTER)
        ceiling = min(self.max_delay, self.base_delay * (2 ** min(retry - 1, 30)))
        return random.uniform(0.0, ceiling)

    def gives_up(self, attempts: int, elapsed: float) -> bool:
        """Whether a batch tried ``attempts`` times over ``elapsed`` seconds is given up."""
        return attempts >= self.max_attempts or elapsed >= self.max_elapsed

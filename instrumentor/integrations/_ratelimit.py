"""A per-key token bucket with bounded memory, for the frontend track endpoint.

Each key (an identity) gets ``burst`` tokens that refill at ``rate`` per second; a request takes
one. At most ``max_keys`` buckets are kept: past that, the least recently used is forgotten
(it comes back full, which only ever favours an identity that was quiet the longest).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["TokenBucketLimiter"]


class TokenBucketLimiter:
    """Admit ``rate`` requests per second per key, with bursts of up to ``burst``. Thread-safe.

    Args:
        rate: Tokens added per second to each key's bucket.
        burst: The bucket's size: how many requests a quiet key may make at once.
        max_keys: Buckets kept at most; the least recently used is dropped beyond it.
        clock: A monotonic clock in seconds (tests pass a fake one).

    Raises:
        ValueError: If ``rate`` is not positive, or ``burst`` or ``max_keys`` is below 1.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0 requests per second, got {rate!r}")
        if burst < 1 or max_keys < 1:
            raise ValueError(f"burst and max_keys must be at least 1, got {burst!r}, {max_keys!r}")
        self.rate = float(rate)
        self.burst = int(burst)
        self.max_keys = int(max_keys)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def acquire(self, key: str) -> float:
        """Take a token for ``key``.

        Returns:
            ``0.0`` if the request is admitted, else the seconds until a token is available
            (for a ``Retry-After`` header).
        """
        now = self._clock()
        with self._lock:
            buckets = self._buckets
            held = buckets.get(key)
            if held is None:
                tokens = float(self.burst)
                if len(buckets) >= self.max_keys:
                    buckets.popitem(last=False)
            else:
                tokens = min(float(self.burst), held[0] + (now - held[1]) * self.rate)
                buckets.move_to_end(key)
            if tokens >= 1.0:
                buckets[key] = (tokens - 1.0, now)
                return 0.0
            buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def __len__(self) -> int:
        """How many keys have a bucket now."""
        with self._lock:
            return len(self._buckets)


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))

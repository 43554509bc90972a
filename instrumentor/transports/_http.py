"""What the HTTP transports share: one pooled httpx client per process, and the retry taxonomy.

Statuses map to the exception tree the delivery worker understands:

========================================== ===========================================
connection errors, timeouts, dropped        :class:`~instrumentor.exceptions.RetryableDeliveryError`
connections, 408, 429, 5xx but 501 and 505
413                                         :class:`~instrumentor.exceptions.PayloadTooLargeError`
other 4xx, 501, 505                         :class:`~instrumentor.exceptions.PermanentDeliveryError`
========================================== ===========================================

``Retry-After`` is honoured in both of its forms (seconds, or an HTTP date) and clamped.
"""

from __future__ import annotations

import datetime
import email.utils
import encodings.idna  # noqa: F401  (see below)
import json
import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Generic, Protocol, TypeVar

import httpx

from instrumentor._settings import Secret
from instrumentor.exceptions import (
    INVALID_MESSAGE,
    MAX_RETRY_AFTER,
    TOO_LARGE,
    ConfigurationError,
    DeliveryError,
    PayloadTooLargeError,
    PermanentDeliveryError,
    RetryableDeliveryError,
)

__all__ = [
    "ClientHolder",
    "MAX_RETRY_AFTER",
    "TOO_LARGE",
    "checked_secret",
    "encode_json",
    "error_for_exception",
    "error_for_response",
    "error_for_status",
    "invalid_reason",
    "library_version",
    "parse_retry_after",
]


_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode_json(data: object) -> bytes:
    """Compact UTF-8 JSON; a lone surrogate in a string becomes ``?`` instead of an error."""
    return _encoder.encode(data).encode("utf-8", "replace")


def invalid_reason(exc: BaseException) -> str:
    """The failure reason of a message that could not be encoded, marked ``INVALID_MESSAGE``.

    Such a message is refused alone (never retried: it would fail again). The reason gives the
    error's type and text, cut to 200 characters.
    """
    try:
        text = f"{type(exc).__name__}: {exc}"[:200]
    except Exception:  # an error whose __str__ raises
        text = type(exc).__name__
    return f"cannot be encoded as JSON ({text}) ({INVALID_MESSAGE})"


def library_version() -> str:
    """Instrumentor's version, for User-Agent headers and Segment's ``context.library``."""
    try:
        return version("instrumentor")
    except PackageNotFoundError:  # running from a checkout without installing
        return "0+unknown"


def checked_secret(key: str | Secret, what: str, *, header_safe: bool = False) -> Secret:
    """``key`` as a :class:`~instrumentor.Secret`, refused without echoing it when unusable.

    Args:
        key: The key, plain or already a Secret.
        what: What it is, for the error (e.g. ``"the Accoil API key"``).
        header_safe: Also refuse whitespace and unprintable characters, for a key sent as a
            header value as is (httpx would refuse it later with the value in its message).

    Raises:
        ConfigurationError: If the key is empty, of another type, or not header-safe.
    """
    if isinstance(key, Secret):
        value = key.reveal()
    elif isinstance(key, str):
        value = key
    else:
        raise ConfigurationError(f"{what} must be a str or a Secret")
    if not value.strip():
        raise ConfigurationError(f"{what} is empty")
    if header_safe and (
        not (value.isascii() and value.isprintable()) or any(ch.isspace() for ch in value)
    ):
        raise ConfigurationError(f"{what} has whitespace or unprintable characters")
    return Secret(value)


_NOT_RETRYABLE_5XX = frozenset({501, 505})


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), clamped.

    Returns:
        ``None`` when the header is absent or unreadable, else 0 to :data:`MAX_RETRY_AFTER`.
    """
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
            if when.tzinfo is None:
                when = when.replace(tzinfo=datetime.timezone.utc)
        except (TypeError, ValueError, IndexError):  # unreadable (older Pythons: may be None)
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def error_for_response(response: httpx.Response, what: str) -> DeliveryError | None:
    """The delivery error a response means, or ``None`` for success (2xx).

    Args:
        response: The provider's answer.
        what: What was being sent, for the message (e.g. ``"POST /v2/track"``).
    """
    return error_for_status(response.status_code, response.headers.get("retry-after"), what)


def error_for_status(status: int, retry_after: str | None, what: str) -> DeliveryError | None:
    """The delivery error an answer's status means, or ``None`` for success (2xx).

    Args:
        status: The status answered.
        retry_after: The answer's ``Retry-After`` header, if any.
        what: What was being sent, for the message (e.g. ``"POST /v2/track"``).
    """
    if 200 <= status < 300:
        return None
    text = f"{what} answered {status}"
    if status == 413:
        return PayloadTooLargeError(text)
    if status in (408, 429) or (500 <= status < 600 and status not in _NOT_RETRYABLE_5XX):
        wait = parse_retry_after(retry_after)
        return RetryableDeliveryError(text, retry_after=wait, status=status)
    return PermanentDeliveryError(text, status=status)


def error_for_exception(exc: Exception, what: str) -> RetryableDeliveryError:
    """A transport-level failure (refused, reset, timed out): always worth a retry."""
    return RetryableDeliveryError(f"{what} failed: {type(exc).__name__}: {exc}")


class _Closable(Protocol):
    def close(self) -> None: ...


_C = TypeVar("_C", bound=_Closable)


class ClientHolder(Generic[_C]):
    """One ``httpx.Client`` per process, created on first use and renewed after ``fork()``.

    A client (its connection pool and locks) must not cross a fork: the child gets its own.
    Anything else with a ``close()`` that must not cross a fork can be held the same way (an
    ``httpx`` transport, a pool of threads, which a child does not inherit).

    Args:
        factory: Builds the client.
    """

    def __init__(self, factory: Callable[[], _C]) -> None:
        self._factory = factory
        self._client: _C | None = None
        self._lock = threading.Lock()
        _holders.add(self)

    def get(self) -> _C:
        """The client of this process."""
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                self._client = self._factory()
            return self._client

    def close(self) -> None:
        """Close the client; a later :meth:`get` opens a new one."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- fork safety: registered with os.register_at_fork below, for every holder --------------

    def hold_for_fork(self, timeout: float) -> bool:
        """Before ``fork()``: wait until no client is being built, and keep it so.

        A client being built holds OpenSSL's locks (loading certificates): a child forked then
        would hang building its own.

        Returns:
            Whether the holder is held (then :meth:`release_after_fork` must follow); ``False``
            after ``timeout`` seconds.
        """
        return self._lock.acquire(timeout=timeout)

    def release_after_fork(self) -> None:
        """After ``fork()``, in the parent or the child: release what :meth:`hold_for_fork` held."""
        self._lock.release()

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's client, pool and lock without closing them.

        They are not the child's: the parent still uses the sockets. The next :meth:`get`
        builds the child's own client.
        """
        self._lock = threading.Lock()
        self._client = None


_holders: weakref.WeakSet[ClientHolder[Any]] = weakref.WeakSet()


# ``encodings.idna`` is imported above, not lazily by the first getaddrinfo() on a worker
# thread: a process forked while that import runs would inherit its module lock held, and hang
# at its own first connection (gunicorn --preload forks while the master's worker delivers).
_forking: list[ClientHolder[Any]] = []


def _before_fork() -> None:
    # Wait (briefly) until no client is being built (see ClientHolder.hold_for_fork).
    for holder in list(_holders):
        if holder.hold_for_fork(timeout=5.0):
            _forking.append(holder)


def _release_after_fork() -> None:
    while _forking:
        _forking.pop().release_after_fork()


def _reset_after_fork() -> None:
    _release_after_fork()
    for holder in list(_holders):
        holder.forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_release_after_fork, after_in_child=_reset_after_fork
    )

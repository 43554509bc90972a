"""The Accoil transport: one request per message, several in flight, each user's order kept.

Accoil documents no batch endpoint, so throughput comes from one pool of keep-alive connections
with up to ``max_in_flight`` requests at once. A batch is split into one sequence per user (a
group without a user is its own sequence); sequences run concurrently, the messages of one
sequence one after the other, in batch order. A retryable failure stops its sequence (the rest of
it is retried later, in order); a permanent refusal drops that message only.

Each body holds exactly the fields Accoil documents. The message id travels in an
``Idempotency-Key`` header instead (the IETF HTTP draft's name for it), the same on every retry
of that message, for a proxy or a provider that de-duplicates.

One message costs one request, so the work around each request is kept small: bodies are built
from the message's fields (not from ``to_dict()``), each request is built once and sent through a
pooled ``httpx.Client`` (``_connections``), and sequences run on a few long-lived sender threads
(``_senders.SenderThreads``) rather than on new threads for every batch.
"""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import httpx

from instrumentor._messages import (
    GroupMessage,
    IdentifyMessage,
    Message,
    TrackMessage,
    to_json_compatible,
)
from instrumentor._otel import suppress_instrumentation
from instrumentor.exceptions import (
    ConfigurationError,
    DeliveryError,
    PartialDeliveryError,
    PayloadTooLargeError,
    PermanentDeliveryError,
    RetryableDeliveryError,
)
from instrumentor.transports._http import (
    TOO_LARGE,
    ClientHolder,
    checked_secret,
    encode_json,
    error_for_exception,
    error_for_status,
    invalid_reason,
    library_version,
)
from instrumentor.transports._senders import SenderThreads

if TYPE_CHECKING:
    from instrumentor._settings import Secret
    from instrumentor.transports._connections import Headers, ThroughHttpx

__all__ = ["AccoilTransport"]

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
#: The production ingress, and the staging one that keys marked ``stg_`` belong to (the prefix
#: is a marker, not part of the key: Accoil's own integrations strip it before sending).
PRODUCTION_ENDPOINT = "https://in.accoil.com"
STAGING_ENDPOINT = "https://instaging.accoil.com"
_STAGING_PREFIX = "stg_"
_MILLISECOND = _dt.timedelta(milliseconds=1)
_PATHS = {
    "v2": ("/v2/identify", "/v2/group", "/v2/track"),
    "v1": ("/v1/users", "/v1/groups", "/v1/events"),
}


def _checked_endpoint(endpoint: str) -> str:
    url = httpx.URL(endpoint)
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError("the endpoint must be an http:// or https:// URL")
    return endpoint.rstrip("/")


def _unix_ms(ts: _dt.datetime) -> int:
    aware = ts if ts.tzinfo is not None else ts.replace(tzinfo=_dt.timezone.utc)
    return (aware - _EPOCH) // _MILLISECOND


def _iso(ts: _dt.datetime) -> str:
    """The time as ``to_dict()`` gives it: ISO 8601 to the millisecond, UTC as ``Z``."""
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _traits(traits: Mapping[str, Any]) -> dict[str, Any] | None:
    """The traits as JSON data (as ``to_dict()`` gives them), or ``None`` when there are none.

    Raises:
        Exception: Whatever reading a mapping that cannot be read raises (the message is then
            refused alone, as one that cannot be encoded).
    """
    data: dict[str, Any] = to_json_compatible(traits if type(traits) is dict else dict(traits))
    return data or None


def _check_readable(message: TrackMessage) -> None:
    """Read a track's properties and context, which Accoil is not sent, as ``to_dict()`` would.

    A mapping that raises when read marks a broken message: it is refused alone, as by every
    other transport, rather than delivered half-read.
    """
    for mapping in (message.properties, message.context):
        if type(mapping) is not dict:
            dict(mapping)


def _set(body: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        body[key] = value


def _v2_request(message: Message) -> tuple[str, dict[str, Any]]:
    """The v2 call: exactly the documented fields (``/v2/track`` takes no properties or context).

    Unset fields (a missing group or user, no traits) are left out, never sent as null.
    """
    body: dict[str, Any] = {}
    if isinstance(message, TrackMessage):
        _check_readable(message)
        _set(body, "userId", message.user_id)
        _set(body, "event", message.event)
        body["timestamp"] = _iso(message.timestamp)
        return "/v2/track", body
    if isinstance(message, IdentifyMessage):
        path = "/v2/identify"
        _set(body, "userId", message.user_id)
        _set(body, "groupId", message.group_id)
    else:
        path = "/v2/group"
        _set(body, "groupId", message.group_id)
        _set(body, "userId", message.user_id)
    _set(body, "traits", _traits(message.traits))
    body["timestamp"] = _iso(message.timestamp)
    return path, body


def _v1_request(message: Message, api_key: str) -> tuple[str, dict[str, Any]]:
    """The legacy v1 call: the key in the body, snake_case, Unix milliseconds."""
    body: dict[str, Any] = {"api_key": api_key, "timestamp": _unix_ms(message.timestamp)}
    if isinstance(message, TrackMessage):
        _check_readable(message)
        body.update(user_id=message.user_id, event=message.event)
        return "/v1/events", body
    if isinstance(message, IdentifyMessage):
        path = "/v1/users"
        body["user_id"] = message.user_id
        _set(body, "group_id", message.group_id)
    else:
        path = "/v1/groups"
        body["group_id"] = message.group_id
        _set(body, "user_id", message.user_id)  # links the user to the group, as on v2
    _set(body, "traits", _traits(message.traits))
    return path, body


def _staging(api_key: str) -> bool:
    """Whether ``api_key`` is marked for Accoil's staging ingress (a ``stg_`` prefix, any case)."""
    return api_key[: len(_STAGING_PREFIX)].lower() == _STAGING_PREFIX


def _sequence_key(message: Message) -> tuple[str, str]:
    """Whose sequence ``message`` belongs to: its user's, or its group's when it has no user."""
    if isinstance(message, GroupMessage) and message.user_id is None:
        return ("group", message.group_id)
    return ("user", str(message.user_id))


@dataclass
class _Outcome:
    """What happened to one sequence: indexes into the batch, and the errors met."""

    retry: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    errors: list[DeliveryError] = field(default_factory=list)


class AccoilTransport:
    """Delivers to the Accoil ingress API, v2 (default) or the legacy v1.

    Args:
        api_key: The Accoil API key; kept as a :class:`~instrumentor.Secret`, never shown.
        endpoint: The base URL (a trailing slash is ignored); by default Accoil's production
            ingress, or its staging ingress (``https://instaging.accoil.com``) for a key marked with
            a ``stg_`` prefix. The prefix is a marker, never sent: Accoil's own integrations
            (its Segment and PostHog destinations) strip it the same way.
        api_version: ``"v2"`` (``Authorization`` header, ISO times) or ``"v1"`` (key in the
            body, snake_case, Unix milliseconds).
        timeout: Seconds for connecting, each read and write, and waiting for a connection.
        max_in_flight: The most requests in flight at once (and connections kept alive). Up to
            ``max_in_flight - 1`` sender threads are started on first need, kept for the next
            batches and ended by :meth:`close`; the thread that calls :meth:`deliver` sends too.
        http_transport: An ``httpx`` transport to send through (tests pass a ``MockTransport``).
            By default a pooled ``httpx.Client`` (which applies the environment's proxies).

    Raises:
        ConfigurationError: If the key is empty or unusable, or another argument is invalid.
    """

    #: Accoil links a user to the account named by an identify's ``groupId``: with only Accoil
    #: destinations, the account's group call goes once per account (for its traits) rather
    #: than once per user.
    identify_links_account = True

    def __init__(
        self,
        api_key: str | Secret,
        *,
        endpoint: str | None = None,
        api_version: Literal["v2", "v1"] = "v2",
        timeout: float = 10.0,
        max_in_flight: int = 8,
        http_transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._key = checked_secret(api_key, "the Accoil API key", header_safe=True)
        if api_version not in ("v2", "v1"):
            raise ConfigurationError(f"api_version must be 'v2' or 'v1', not {api_version!r}")
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int):
            raise ConfigurationError("max_in_flight must be an int")
        if max_in_flight < 1:
            raise ConfigurationError(f"max_in_flight must be at least 1, not {max_in_flight}")
        if not timeout > 0:
            raise ConfigurationError(f"timeout must be a positive number of seconds, not {timeout}")
        staging = _staging(self._key.reveal())
        if staging:
            self._key = checked_secret(
                self._key.reveal()[len(_STAGING_PREFIX) :], "the Accoil API key after 'stg_'"
            )
        if endpoint is None:
            endpoint = STAGING_ENDPOINT if staging else PRODUCTION_ENDPOINT
        self._endpoint = _checked_endpoint(endpoint)
        self._api_version = api_version
        self._timeout = float(timeout)
        self._max_in_flight = max_in_flight
        self._http_transport = http_transport
        self._version = library_version()
        self._holder = ClientHolder(self._new_connections)
        senders = functools.partial(SenderThreads, max_in_flight - 1, "instrumentor-accoil")
        self._senders = ClientHolder(senders)

    @property
    def timeout(self) -> float:
        """Seconds for connecting, each read and write (the outbox derives its lease from it)."""
        return self._timeout

    @property
    def outbox_channel(self) -> str:
        """The outbox channel this transport's rows are stored under.

        Class, endpoint and a fingerprint of the key (never the key): a new key or endpoint
        gets its own rows, and old rows are not sent with the new key.
        """
        return (
            f"{type(self).__name__}({self._api_version})@{self._endpoint}#{self._key.fingerprint()}"
        )

    def _new_connections(self) -> ThroughHttpx:
        # Lazy on purpose: the connections load with the first delivery; under the holder's
        # lock, so a fork waits for the import (see ClientHolder).
        from instrumentor.transports._connections import connections

        paths = _PATHS[self._api_version]
        limit, timeout = self._max_in_flight, self._timeout
        return connections(self._endpoint, paths, limit, timeout, self._http_transport)

    def _headers(self) -> Headers:
        """The headers every request carries (``Host`` and ``Content-Length`` come on top)."""
        headers = [
            (b"User-Agent", f"instrumentor/{self._version}".encode("ascii", "replace")),
            (b"Content-Type", b"application/json"),
        ]
        if self._api_version == "v2":  # a header-safe key (checked_secret): printable ASCII
            headers.append((b"Authorization", b"Basic " + self._key.reveal().encode("ascii")))
        return headers

    def deliver(self, batch: Sequence[Message]) -> None:
        """Send each message of ``batch``, keeping each user's messages in order.

        Raises:
            PartialDeliveryError: If any message was not accepted: ``retry`` holds the ones
                that failed for a retryable reason and the unsent rest of their users'
                sequences, ``failed`` the ones refused for good, with the reason.
        """
        if not batch:
            return
        sequences: dict[tuple[str, str], list[int]] = {}
        for index, message in enumerate(batch):
            sequences.setdefault(_sequence_key(message), []).append(index)
        # Longest first: the batch ends sooner when the short sequences fill the gaps at the end.
        work = sorted(sequences.values(), key=len, reverse=True)
        outcomes = self._run_sequences(self._holder.get(), batch, work)
        self._raise_for(batch, outcomes)

    def _run_sequences(
        self, sender: ThroughHttpx, batch: Sequence[Message], work: list[list[int]]
    ) -> list[_Outcome]:
        """Send the users' sequences, up to max_in_flight at once (see :class:`SenderThreads`)."""
        outcomes: list[_Outcome | None] = [None] * len(work)
        headers = self._headers()

        def run(index: int) -> None:
            outcomes[index] = self._send_sequence(sender, headers, batch, work[index])

        helpers = min(self._max_in_flight, len(work)) - 1
        if helpers:
            tasks = [functools.partial(run, index) for index in range(len(work))]
            self._senders.get().run(tasks, helpers)
        else:
            with suppress_instrumentation():
                for index in range(len(work)):
                    run(index)
        return [
            o if o is not None else _Outcome(retry=list(work[i])) for i, o in enumerate(outcomes)
        ]

    def _send_sequence(
        self,
        sender: ThroughHttpx,
        headers: Headers,
        batch: Sequence[Message],
        indexes: list[int],
    ) -> _Outcome:
        outcome = _Outcome()
        for position, index in enumerate(indexes):
            try:
                error = self._send(sender, headers, batch[index])
            except Exception as exc:  # a bug: that message only, refused with the error
                error = PermanentDeliveryError(f"could not send: {type(exc).__name__}")
            if error is None:
                continue
            outcome.errors.append(error)
            if isinstance(error, RetryableDeliveryError):
                outcome.retry.extend(indexes[position:])
                break
            reason = str(error)
            if isinstance(error, PayloadTooLargeError):
                reason += f" ({TOO_LARGE})"
            outcome.failed.append((index, reason))
        return outcome

    def _send(
        self,
        sender: ThroughHttpx,
        headers: Headers,
        message: Message,
    ) -> DeliveryError | None:
        try:  # encoded before anything is sent: a message that cannot be is refused alone
            if self._api_version == "v2":
                path, body = _v2_request(message)
            else:
                path, body = _v1_request(message, self._key.reveal())
            content = encode_json(body)
            key = (b"Idempotency-Key", message.message_id.encode("ascii"))  # same on every retry
        except Exception as exc:
            return PermanentDeliveryError(f"message {message.message_id} {invalid_reason(exc)}")
        try:
            status, retry_after = sender.post(path, [*headers, key], content)
        except Exception as exc:  # refused, reset, timed out, or closed under us: retry later
            return error_for_exception(exc, f"POST {path}")
        if 200 <= status < 300:
            return None
        return error_for_status(status, retry_after, f"POST {path}")

    def _raise_for(self, batch: Sequence[Message], outcomes: list[_Outcome]) -> None:
        retry = sorted(i for o in outcomes for i in o.retry)
        failed = sorted((f for o in outcomes for f in o.failed), key=lambda f: f[0])
        if not retry and not failed:
            return
        errors = [e for o in outcomes for e in o.errors]
        waits = [
            e.retry_after
            for e in errors
            if isinstance(e, RetryableDeliveryError) and e.retry_after is not None
        ]
        delivered = len(batch) - len(retry) - len(failed)
        raise PartialDeliveryError(
            f"Accoil accepted {delivered} of {len(batch)} messages ({len(retry)} to retry, "
            f"{len(failed)} refused); first problem: {errors[0]}",
            retry=[batch[i] for i in retry],
            failed=[(batch[i], reason) for i, reason in failed],
            retry_after=max(waits) if waits else None,
        )

    def close(self) -> None:
        """Stop the sender threads and close the connections; a later :meth:`deliver` reopens."""
        self._senders.close()
        self._holder.close()

    def __repr__(self) -> str:
        return f"AccoilTransport(endpoint={self._endpoint!r}, api_version={self._api_version!r})"

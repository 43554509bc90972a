"""The Accoil transport: one request per message, several in flight, each user's order kept.

Accoil documents no batch endpoint, so throughput comes from one pooled keep-alive client with
up to ``max_in_flight`` requests at once. A batch is split into one sequence per user (a group
without a user is its own sequence); sequences run concurrently, the messages of one sequence
one after the other, in batch order. A retryable failure stops its sequence (the rest of it is
retried later, in order); a permanent refusal drops that message only.

Each body holds exactly the fields Accoil documents. The message id travels in an
``Idempotency-Key`` header instead (the IETF HTTP draft's name for it), the same on every retry
of that message, for a proxy or a provider that de-duplicates.
"""

from __future__ import annotations

import datetime as _dt
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import httpx

from instrumentor._messages import GroupMessage, IdentifyMessage, Message, TrackMessage
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
    error_for_response,
    invalid_reason,
    library_version,
)

if TYPE_CHECKING:
    from instrumentor._settings import Secret

__all__ = ["AccoilTransport"]

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
#: The production ingress, and the staging one that keys marked ``stg_`` belong to (the prefix
#: is a marker, not part of the key: Accoil's own integrations strip it before sending).
PRODUCTION_ENDPOINT = "https://in.accoil.com"
STAGING_ENDPOINT = "https://instaging.accoil.com"
_STAGING_PREFIX = "stg_"
_MILLISECOND = _dt.timedelta(milliseconds=1)


def _checked_endpoint(endpoint: str) -> str:
    url = httpx.URL(endpoint)
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError("the endpoint must be an http:// or https:// URL")
    return endpoint.rstrip("/")


def _unix_ms(ts: _dt.datetime) -> int:
    aware = ts if ts.tzinfo is not None else ts.replace(tzinfo=_dt.timezone.utc)
    return (aware - _EPOCH) // _MILLISECOND


def _pick(data: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """The ``keys`` of ``data`` that are set (empty traits are left out)."""
    return {k: data[k] for k in keys if data.get(k) is not None and data[k] != {}}


def _v2_request(message: Message) -> tuple[str, dict[str, Any]]:
    """The v2 call: exactly the documented fields (``/v2/track`` takes no properties or context)."""
    data = message.to_dict()
    if isinstance(message, TrackMessage):
        return "/v2/track", _pick(data, ("userId", "event", "timestamp"))
    if isinstance(message, IdentifyMessage):
        return "/v2/identify", _pick(data, ("userId", "groupId", "traits", "timestamp"))
    return "/v2/group", _pick(data, ("groupId", "userId", "traits", "timestamp"))


def _v1_request(message: Message, api_key: str) -> tuple[str, dict[str, Any]]:
    """The legacy v1 call: the key in the body, snake_case, Unix milliseconds."""
    body: dict[str, Any] = {"api_key": api_key, "timestamp": _unix_ms(message.timestamp)}
    if isinstance(message, TrackMessage):
        body.update(user_id=message.user_id, event=message.event)
        return "/v1/events", body
    if isinstance(message, IdentifyMessage):
        path = "/v1/users"
        body["user_id"] = message.user_id
        if message.group_id is not None:
            body["group_id"] = message.group_id
    else:
        path = "/v1/groups"
        body["group_id"] = message.group_id
        if message.user_id is not None:  # links the user to the group, as on v2
            body["user_id"] = message.user_id
    traits = message.to_dict().get("traits")
    if traits:
        body["traits"] = traits
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
        max_in_flight: The most requests in flight at once (and connections kept alive).
        http_transport: An ``httpx`` transport to send through (tests pass a ``MockTransport``).

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
        self._holder = ClientHolder(self._new_client)

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

    def _new_client(self) -> httpx.Client:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"instrumentor/{self._version}",
        }
        if self._api_version == "v2":
            headers["Authorization"] = f"Basic {self._key.reveal()}"
        limits = httpx.Limits(
            max_connections=self._max_in_flight, max_keepalive_connections=self._max_in_flight
        )
        return httpx.Client(
            headers=headers,
            timeout=self._timeout,
            limits=limits,
            transport=self._http_transport,
        )

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
        client = self._holder.get()
        work = list(sequences.values())
        outcomes = self._run_sequences(client, batch, work)
        self._raise_for(batch, outcomes)

    def _run_sequences(
        self, client: httpx.Client, batch: Sequence[Message], work: list[list[int]]
    ) -> list[_Outcome]:
        """Send the users' sequences, up to max_in_flight at once, on short-lived daemon threads.

        Not a ThreadPoolExecutor: its threads are joined (without a timeout) before any atexit
        hook runs, and it refuses work during interpreter shutdown, which is exactly when the
        bounded exit flush delivers. Daemon threads end with the process; if none can be
        started (interpreter shutdown on 3.12+), the sequences run here, one after another.
        """
        outcomes: list[_Outcome | None] = [None] * len(work)
        next_index = iter(range(len(work)))
        take = threading.Lock()

        def run() -> None:
            with suppress_instrumentation():  # a new thread: suppress here too
                while True:
                    with take:
                        index = next(next_index, None)
                    if index is None:
                        return
                    outcomes[index] = self._send_sequence(client, batch, work[index])

        threads: list[threading.Thread] = []
        for _ in range(min(self._max_in_flight, len(work)) - 1):
            thread = threading.Thread(target=run, name="instrumentor-accoil", daemon=True)
            try:
                thread.start()
            except RuntimeError:
                break
            threads.append(thread)
        run()  # this thread works too
        for thread in threads:
            thread.join()
        return [
            o if o is not None else _Outcome(retry=list(work[i])) for i, o in enumerate(outcomes)
        ]

    def _send_sequence(
        self, client: httpx.Client, batch: Sequence[Message], indexes: list[int]
    ) -> _Outcome:
        outcome = _Outcome()
        for position, index in enumerate(indexes):
            try:
                error = self._send(client, batch[index])
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

    def _send(self, client: httpx.Client, message: Message) -> DeliveryError | None:
        try:  # encoded before anything is sent: a message that cannot be is refused alone
            if self._api_version == "v2":
                path, body = _v2_request(message)
            else:
                path, body = _v1_request(message, self._key.reveal())
            content = encode_json(body)
        except Exception as exc:
            return PermanentDeliveryError(f"message {message.message_id} {invalid_reason(exc)}")
        what = f"POST {path}"
        try:
            response = client.post(
                self._endpoint + path,
                content=content,
                headers={"Idempotency-Key": message.message_id},  # the same on every retry
            )
        except Exception as exc:  # refused, reset, timed out, or closed under us: retry later
            return error_for_exception(exc, what)
        return error_for_response(response, what)

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
        """Close the connections; a later :meth:`deliver` reopens them."""
        self._holder.close()

    def __repr__(self) -> str:
        return f"AccoilTransport(endpoint={self._endpoint!r}, api_version={self._api_version!r})"

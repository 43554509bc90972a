"""The Segment-compatible transport: ``POST /v1/batch``, spoken by Segment, RudderStack and others.

Messages are sent in the Segment spec form, in order, in as few requests as the limits allow:
a message over 32 KB is refused without being sent, and each request stays under 500 KB.
"""

from __future__ import annotations

import base64
import datetime as _dt
import gzip as _gzip
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

import httpx

from instrumentor._messages import GroupMessage, Message, TrackMessage
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

__all__ = ["MAX_MESSAGE_BYTES", "MAX_REQUEST_BYTES", "SegmentTransport"]

#: The largest message accepted, as compact UTF-8 JSON (Segment: 32 KB per message).
MAX_MESSAGE_BYTES = 32 * 1024
#: The largest request body sent, before compression (Segment: 500 KB per batch; counted in
#: decimal kilobytes to stay on the safe side of either reading).
MAX_REQUEST_BYTES = 500 * 1000
_PATH = "/v1/batch"
_WHAT = f"POST {_PATH}"
_HEAD = b'{"batch":['
# The rest of the envelope: '],"sentAt":"2024-01-01T00:00:00.000Z"}' and some slack.
_ENVELOPE_BYTES = len(_HEAD) + 64


def _dumps(data: Any) -> bytes:
    return encode_json(data)


def _now_iso() -> str:
    now = _dt.datetime.now(_dt.timezone.utc)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: How a track is attributed to its groups (see :class:`SegmentTransport`).
GroupAttribution = Literal["none", "context", "posthog", "mixpanel", "amplitude"]
_ATTRIBUTIONS: tuple[str, ...] = get_args(GroupAttribution)
# Names the anonymousId of a group call made without a user (see _spec_form).
_GROUP_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:instrumentor:group")


@dataclass(frozen=True)
class _Form:
    """What the spec form of a transport's messages depends on."""

    library: dict[str, str]
    """The library named in each call's ``context.library``."""
    attribution: GroupAttribution = "none"
    """How a track is attributed to its groups."""


def _spec_form(message: Message, form: _Form) -> dict[str, Any]:
    """``message`` as a Segment spec call, with the library in ``context``.

    ``context.groupId`` is sent with ``form.attribution == "context"`` only (on the identify as
    on the track); the other attributions put the groups where their destination reads them.
    A group call made without a user gets an ``anonymousId`` derived from the group id, since
    the API takes no call without a ``userId`` or an ``anonymousId``.
    """
    data = message.to_dict()
    context: dict[str, Any] = dict(data.get("context", {}))  # a track's extra context
    context.pop("groupId", None)  # to_dict's; sent below only when asked for
    call: dict[str, Any] = {"type": message.type, "messageId": message.message_id}
    if isinstance(message, GroupMessage):
        call.update((k, data[k]) for k in ("groupId", "userId", "traits") if k in data)
        if message.user_id is None:
            call["anonymousId"] = str(uuid.uuid5(_GROUP_NAMESPACE, message.group_id))
    else:
        if form.attribution == "context" and message.group_id is not None:
            context["groupId"] = message.group_id
        keys = ("userId", "event", "properties", "traits")  # a track's, or an identify's
        call.update((k, data[k]) for k in keys if k in data)
        if isinstance(message, TrackMessage):
            _attribute(call, _track_groups(message), form.attribution)
    context["library"] = form.library
    call.update(timestamp=data["timestamp"], context=context)
    return call


def _track_groups(message: TrackMessage) -> Mapping[str, str]:
    """The track's groups, top first; the event's own level alone for a message without them."""
    if message.groups or message.group_id is None:
        return message.groups
    return {message.group_type: message.group_id}  # e.g. an outbox row written before groups


def _attribute(call: dict[str, Any], groups: Mapping[str, str], attribution: str) -> None:
    """Put ``groups`` in the track ``call`` where ``attribution``'s destination reads them."""
    if not groups or attribution in ("none", "context"):
        return
    if attribution == "amplitude":
        call["integrations"] = {"Amplitude": {"groups": dict(groups)}}
        return
    properties = dict(call.get("properties", {}))
    if attribution == "posthog":
        properties.setdefault("$groups", dict(groups))
    else:  # mixpanel: one group key per level, e.g. account_id
        for level, group_id in groups.items():
            properties.setdefault(f"{level}_id", group_id)
    call["properties"] = properties


def _chunks(encoded: list[tuple[int, bytes]]) -> list[list[tuple[int, bytes]]]:
    """Consecutive runs of encoded messages whose request bodies stay within the limit."""
    chunks: list[list[tuple[int, bytes]]] = []
    size = MAX_REQUEST_BYTES  # forces a first chunk
    for item in encoded:
        added = len(item[1]) + 1  # and a comma
        if size + added > MAX_REQUEST_BYTES:
            chunks.append([])
            size = _ENVELOPE_BYTES
        chunks[-1].append(item)
        size += added
    return chunks


def _partial(
    batch: Sequence[Message],
    delivered: int,
    retry: list[int],
    failed: list[tuple[int, str]],
    error: DeliveryError | None,
) -> PartialDeliveryError:
    failed = sorted(failed)
    text = f"{_WHAT}: {delivered} of {len(batch)} messages delivered, {len(failed)} refused"
    if error is not None:
        text += f", {len(retry)} to retry after: {error}"
    return PartialDeliveryError(
        text,
        retry=[batch[i] for i in retry],
        failed=[(batch[i], reason) for i, reason in failed],
        retry_after=error.retry_after if isinstance(error, RetryableDeliveryError) else None,
    )


class SegmentTransport:
    """Delivers to a Segment-compatible HTTP tracking API through its batch endpoint.

    Users are linked to their groups by the group calls, as Segment's spec does; how a track
    is attributed to its groups is the destination's own business, so ``group_attribution``
    chooses whose mechanism the track carries (``groups`` are the track's bound group ids, top
    level first, e.g. ``{"account": "acc_1", "workspace": "ws_1", "project": "p_1"}``):

    - ``"none"`` (the default): nothing; no call's ``context`` has a ``groupId``.
    - ``"context"``: ``context.groupId`` = the event's group id (and the account's on the
      identify), for a destination mapped to read it (e.g. Mixpanel (Actions)' default
      ``$group_id`` key).
    - ``"posthog"``: ``properties.$groups`` = ``groups``, PostHog's event-level groups.
    - ``"mixpanel"``: one Mixpanel group key per level as an event property, ``<level>_id``
      (``account_id``, ``workspace_id``, ``project_id``); a property the event already sets
      under that name is kept, never overwritten (so is a ``$groups`` under ``"posthog"``).
    - ``"amplitude"``: ``integrations.Amplitude.groups`` = ``groups``, Amplitude's event-level
      groups.

    Args:
        write_key: The source's write key; kept as a :class:`~instrumentor.Secret`.
        endpoint: The base URL, e.g. a RudderStack data plane (a trailing slash is ignored).
        gzip: Compress request bodies (``Content-Encoding: gzip``).
        timeout: Seconds for connecting, each read and write, and waiting for a connection.
        http_transport: An ``httpx`` transport to send through (tests pass a ``MockTransport``).
        group_attribution: How a track is attributed to its groups (above).

    Raises:
        ConfigurationError: If the write key is empty or another argument is invalid.
    """

    #: Messages per batch a Destination sends by default: one request holds up to 500 KB,
    #: and larger batches are split to fit.
    preferred_batch_size = 500

    def __init__(
        self,
        write_key: str | Secret,
        *,
        endpoint: str = "https://api.segment.io",
        gzip: bool = False,
        timeout: float = 10.0,
        http_transport: httpx.BaseTransport | None = None,
        group_attribution: GroupAttribution = "none",
    ) -> None:
        self._key = checked_secret(write_key, "the Segment write key")
        if group_attribution not in _ATTRIBUTIONS:
            allowed = ", ".join(repr(a) for a in _ATTRIBUTIONS)
            raise ConfigurationError(
                f"group_attribution must be one of {allowed}, not {group_attribution!r}"
            )
        url = httpx.URL(endpoint)
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigurationError("the endpoint must be an http:// or https:// URL")
        if not timeout > 0:
            raise ConfigurationError(f"timeout must be a positive number of seconds, not {timeout}")
        self._endpoint = endpoint.rstrip("/")
        self._gzip = bool(gzip)
        self._timeout = float(timeout)
        self._http_transport = http_transport
        version = library_version()
        library = {"name": "instrumentor", "version": version}
        self._form = _Form(library, group_attribution)  # what _spec_form builds with
        self._user_agent = f"instrumentor/{version}"
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
        return f"{type(self).__name__}@{self._endpoint}#{self._key.fingerprint()}"

    def _new_client(self) -> httpx.Client:
        token = base64.b64encode(f"{self._key.reveal()}:".encode()).decode("ascii")
        headers = {
            "Authorization": f"Basic {token}",
            "Content-Type": "application/json",
            "User-Agent": self._user_agent,
        }
        if self._gzip:
            headers["Content-Encoding"] = "gzip"
        return httpx.Client(headers=headers, timeout=self._timeout, transport=self._http_transport)

    def deliver(self, batch: Sequence[Message]) -> None:
        """Send ``batch`` in order, in requests within the limits.

        Raises:
            RetryableDeliveryError: If nothing was delivered or refused, and it is worth a retry.
            PartialDeliveryError: Otherwise, if anything was not delivered: ``retry`` holds the
                undelivered messages worth a retry, ``failed`` the refused ones with the reason.
        """
        failed: list[tuple[int, str]] = []
        encoded: list[tuple[int, bytes]] = []
        for index, message in enumerate(batch):
            try:  # a message that cannot be encoded is refused alone; the rest is sent
                data = _dumps(_spec_form(message, self._form))
            except Exception as exc:
                failed.append((index, invalid_reason(exc)))
                continue
            if len(data) > MAX_MESSAGE_BYTES:
                failed.append((index, f"message over 32 KB ({TOO_LARGE})"))
            else:
                encoded.append((index, data))
        work = deque(_chunks(encoded))
        delivered = 0
        while work:
            chunk = work.popleft()
            error = self._send([data for _, data in chunk])
            if error is None:
                delivered += len(chunk)
                continue
            too_large = isinstance(error, PayloadTooLargeError)
            if too_large and len(chunk) > 1:
                # The provider's limit is lower than ours: split this request and go on.
                middle = len(chunk) // 2
                work.appendleft(chunk[middle:])
                work.appendleft(chunk[:middle])
                continue
            if isinstance(error, PermanentDeliveryError) or too_large:
                # Refused for good: these are lost, the next requests may still go through.
                reason = f"{error} ({TOO_LARGE})" if too_large else str(error)
                failed.extend((index, reason) for index, _ in chunk)
                continue
            if delivered == 0 and not failed:
                raise error  # retryable, and the whole batch with it
            retry = [index for later in (chunk, *work) for index, _ in later]
            raise _partial(batch, delivered, retry, failed, error)
        if failed:
            raise _partial(batch, delivered, [], failed, None)

    def _send(self, parts: list[bytes]) -> DeliveryError | None:
        body = b"".join((_HEAD, b",".join(parts), b'],"sentAt":', _dumps(_now_iso()), b"}"))
        if self._gzip:
            body = _gzip.compress(body)
        try:
            response = self._holder.get().post(self._endpoint + _PATH, content=body)
        except Exception as exc:  # refused, reset, timed out, or closed under us: retry later
            return error_for_exception(exc, _WHAT)
        return error_for_response(response, _WHAT)

    def close(self) -> None:
        """Close the connections; a later :meth:`deliver` opens new ones."""
        self._holder.close()

    def __repr__(self) -> str:
        return (
            f"SegmentTransport(endpoint={self._endpoint!r}, gzip={self._gzip}, "
            f"group_attribution={self._form.attribution!r})"
        )

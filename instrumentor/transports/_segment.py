"""The Segment-compatible transport: ``POST /v1/batch``, spoken by Segment, RudderStack and others.

Messages are sent in the Segment spec form, in order, in as few requests as the limits allow:
a message over 32 KB is refused without being sent, and each request stays under 500 KB.
"""

from __future__ import annotations

import base64
import datetime as _dt
import gzip as _gzip
import json
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Any, Literal, get_args

import httpx

from instrumentor._messages import (
    GroupMessage,
    IdentifyMessage,
    Message,
    TrackMessage,
    to_json_compatible,
)
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
_HEAD = '{"batch":['
# The rest of the envelope: '],"sentAt":"2024-01-01T00:00:00.000Z"}' and some slack.
_ENVELOPE_BYTES = len(_HEAD) + 64
# Compact UTF-8 JSON, as json.dumps(value, separators=(",", ":"), ensure_ascii=False) writes it.
_PY_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _iso(when: _dt.datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now_iso() -> str:
    return _iso(_dt.datetime.now(_dt.timezone.utc))


#: How a track is attributed to its groups (see :class:`SegmentTransport`).
GroupAttribution = Literal["none", "context", "posthog", "mixpanel", "amplitude"]
_ATTRIBUTIONS: tuple[str, ...] = get_args(GroupAttribution)
# Names the anonymousId of a group call made without a user (see _Writer).
_GROUP_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:instrumentor:group")


@dataclass(frozen=True)
class _Form:
    """What the spec form of a transport's messages depends on."""

    library: dict[str, str]
    """The library named in each call's ``context.library``."""
    attribution: GroupAttribution = "none"
    """How a track is attributed to its groups."""


_Chunker = Callable[[Any, int], Sequence[str]]


def _c_chunker() -> Callable[[], _Chunker] | None:
    """What builds the C encoder ``json.dumps`` runs, if this Python has one that works.

    ``json.encoder.c_make_encoder`` is an implementation detail (not in typeshed, hence
    ``getattr``): it is used only if it writes a sample exactly as the documented encoder does.
    """
    make: Callable[..., _Chunker] | None = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # a Python without the C accelerator (e.g. PyPy)
        return None

    def build() -> _Chunker:  # the arguments JSONEncoder.iterencode passes it
        default = _PY_ENCODER.default
        return make({}, default, encode_basestring, None, ":", ",", False, False, True)

    sample = {"a": [1, 2.5, None, True, "é\n\ud800"], "b": {}}
    try:
        if "".join(build()(sample, 0)) == _PY_ENCODER.encode(sample):
            return build
    except Exception:  # another signature in some later Python: the documented encoder
        pass
    return None


_build_chunker = _c_chunker()


def _new_chunker() -> _Chunker:
    """A compact JSON encoder with markers of its own: called with ``(value, 0)``, the chunks.

    It encodes as ``json.dumps(value, separators=(",", ":"), ensure_ascii=False)`` does, without
    building an encoder per value. Its markers (the containers it is inside of, to refuse a
    cycle) are its own, so one serves one batch on one thread; an error may leave markers
    behind, so a new one follows it.
    """
    if _build_chunker is None:
        return lambda value, _: (_PY_ENCODER.encode(value),)
    return _build_chunker()


def _json_dict(value: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict of JSON data from a message's traits, properties or context.

    Raises:
        Exception: Whatever reading a mapping that cannot be read raises.
    """
    data = to_json_compatible(value) if type(value) is dict else None
    if type(data) is not dict:  # another mapping, or a dict another thread changed meanwhile
        data = to_json_compatible(dict(value))
    return data


def _track_groups(message: TrackMessage) -> Mapping[str, str]:
    """The track's groups, top first; the event's own level alone for a message without them."""
    if message.groups or message.group_id is None:
        return message.groups
    return {message.group_type: message.group_id}  # e.g. an outbox row written before groups


class _Writer:
    """Writes messages in the Segment spec form as compact JSON, for one batch on one thread.

    A message's text is ``json.dumps(call, separators=(",", ":"), ensure_ascii=False)`` of its
    spec call, whose fields come in this order: ``type``, ``messageId``, the type's own
    (identify: ``userId``, ``traits``; group: ``groupId``, ``userId``, ``traits``, and
    ``anonymousId`` without a user; track: ``userId``, ``event``, ``properties``,
    ``integrations``), then ``timestamp`` and ``context`` (a track's extra context, then
    ``groupId`` under ``attribution == "context"`` only, then ``library``). Unset fields are
    left out. The call is never built as a dict: fixed parts are written as they are, each
    string escaped alone, and only traits, properties and a context beyond the library go
    through the encoder. Whatever cannot be encoded raises, as ``json.dumps`` would.

    ``context.groupId`` is sent with ``attribution == "context"`` only (on the identify as on
    the track); the other attributions put the groups where their destination reads them. A
    group call made without a user gets an ``anonymousId`` derived from the group id, since the
    API takes no call without a ``userId`` or an ``anonymousId``.
    """

    def __init__(self, form: _Form) -> None:
        self._form = form
        self._chunks = _new_chunker()
        self._library = ',"context":{"library":' + self._encode(form.library) + "}}"
        self._stamp: tuple[object, str] = (None, "")  # the last timestamp and its text

    def write(self, message: Message) -> str:
        """``message``'s spec call as compact JSON text.

        Raises:
            Exception: If the message cannot be encoded (the caller refuses it alone).
        """
        try:
            if isinstance(message, TrackMessage):
                return self._track(message)
            if isinstance(message, GroupMessage):
                return self._group(message)
            if isinstance(message, IdentifyMessage):
                return self._identify(message)
            raise TypeError(f"{type(message).__name__} is not an identify, group or track")
        except Exception:
            self._chunks = _new_chunker()  # the failed encoding may have left markers behind
            raise

    def _encode(self, value: Any) -> str:
        return "".join(self._chunks(value, 0))

    def _string(self, value: Any) -> str:
        """A field meant to be a string; anything else is encoded as it is, as before."""
        return encode_basestring(value) if type(value) is str else self._encode(value)

    def _stamp_of(self, when: _dt.datetime) -> str:
        """The ``timestamp`` field; the messages of one event share theirs, written once."""
        last, stamp = self._stamp
        if when is not last:
            stamp = ',"timestamp":' + self._string(_iso(when))
            self._stamp = (when, stamp)
        return stamp

    def _end(self, stamp: str, context: dict[str, Any] | None) -> str:
        """``timestamp`` and ``context`` (``context``, then the library), closing the call."""
        if not context:
            return stamp + self._library
        context["library"] = self._form.library
        return stamp + ',"context":' + self._encode(context) + "}"

    # Each message is read (its mappings normalised, its timestamp) before it is written, so
    # that one that cannot be sent fails with the error it always did.

    def _identify(self, message: IdentifyMessage) -> str:
        traits = _json_dict(message.traits)
        stamp = self._stamp_of(message.timestamp)
        group_id = message.group_id if self._form.attribution == "context" else None
        parts = ['{"type":"identify","messageId":', self._string(message.message_id)]
        if message.user_id is not None:
            parts += (',"userId":', self._string(message.user_id))
        parts += (',"traits":', self._encode(traits))
        parts.append(self._end(stamp, None if group_id is None else {"groupId": group_id}))
        return "".join(parts)

    def _group(self, message: GroupMessage) -> str:
        traits = _json_dict(message.traits)
        stamp = self._stamp_of(message.timestamp)
        anonymous_id = None
        if message.user_id is None:
            anonymous_id = str(uuid.uuid5(_GROUP_NAMESPACE, message.group_id))
        parts = ['{"type":"group","messageId":', self._string(message.message_id)]
        if message.group_id is not None:
            parts += (',"groupId":', self._string(message.group_id))
        if message.user_id is not None:
            parts += (',"userId":', self._string(message.user_id))
        parts += (',"traits":', self._encode(traits))
        if anonymous_id is not None:
            parts += (',"anonymousId":', self._string(anonymous_id))
        parts.append(self._end(stamp, None))
        return "".join(parts)

    def _track(self, message: TrackMessage) -> str:
        context = None
        if message.context:
            context = _json_dict(message.context)
            context.pop("groupId", None)  # sent below only when asked for
        properties = _json_dict(message.properties)
        stamp = self._stamp_of(message.timestamp)
        if self._form.attribution == "context" and message.group_id is not None:
            context = context if context is not None else {}
            context["groupId"] = message.group_id
        integrations = self._attribute(message, properties)
        parts = ['{"type":"track","messageId":', self._string(message.message_id)]
        if message.user_id is not None:
            parts += (',"userId":', self._string(message.user_id))
        if message.event is not None:
            parts += (',"event":', self._string(message.event))
        parts += (',"properties":', self._encode(properties))
        if integrations is not None:
            parts += (',"integrations":', self._encode(integrations))
        parts.append(self._end(stamp, context))
        return "".join(parts)

    def _attribute(self, message: TrackMessage, properties: dict[str, Any]) -> Any:
        """Put the track's groups where the attribution's destination reads them.

        Returns:
            The track's ``integrations`` (Amplitude's), or ``None``; ``$groups`` (PostHog) and
            the ``<level>_id`` keys (Mixpanel) go in ``properties``, never over a property the
            event sets itself.
        """
        attribution = self._form.attribution
        if attribution in ("none", "context"):
            return None
        groups = _track_groups(message)
        if not groups:
            return None
        if attribution == "amplitude":
            return {"Amplitude": {"groups": dict(groups)}}
        if attribution == "posthog":
            properties.setdefault("$groups", dict(groups))
        else:  # mixpanel: one group key per level, e.g. account_id
            for level, group_id in groups.items():
                properties.setdefault(f"{level}_id", group_id)
        return None


def _chunks(encoded: list[tuple[int, str, int]]) -> list[list[tuple[int, str, int]]]:
    """Consecutive runs of ``(index, text, size)`` whose request bodies stay within the limit."""
    chunks: list[list[tuple[int, str, int]]] = []
    size = MAX_REQUEST_BYTES  # forces a first chunk
    for item in encoded:
        added = item[2] + 1  # and a comma
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
        self._form = _Form(library, group_attribution)  # what _Writer writes with
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
        encoded: list[tuple[int, str, int]] = []  # (index, text, size in UTF-8 bytes)
        writer = _Writer(self._form)
        for index, message in enumerate(batch):
            try:  # a message that cannot be encoded is refused alone; the rest is sent
                text = writer.write(message)
            except Exception as exc:
                failed.append((index, invalid_reason(exc)))
                continue
            # Its size as sent: a lone surrogate goes as "?" (see _send).
            size = len(text) if text.isascii() else len(text.encode("utf-8", "replace"))
            if size > MAX_MESSAGE_BYTES:
                failed.append((index, f"message over 32 KB ({TOO_LARGE})"))
            else:
                encoded.append((index, text, size))
        work = deque(_chunks(encoded))
        delivered = 0
        while work:
            chunk = work.popleft()
            error = self._send([text for _, text, _ in chunk])
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
                failed.extend((index, reason) for index, _, _ in chunk)
                continue
            if delivered == 0 and not failed:
                raise error  # retryable, and the whole batch with it
            retry = [index for later in (chunk, *work) for index, _, _ in later]
            raise _partial(batch, delivered, retry, failed, error)
        if failed:
            raise _partial(batch, delivered, [], failed, None)

    def _send(self, parts: list[str]) -> DeliveryError | None:
        # One encoding per request; a lone surrogate (no UTF-8 for it) is sent as "?".
        text = "".join((_HEAD, ",".join(parts), '],"sentAt":"', _now_iso(), '"}'))
        body = text.encode("utf-8", "replace")
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

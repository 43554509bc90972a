"""Configuration: from the environment, or ``configure()``; swappable and restorable in tests.

Unconfigured means silent: until ``configure()`` is called or the first event is tracked,
nothing is read, connected or started. At the first event the environment is read once:

=========================== ==========================================================
``ANALYTICS_API_KEY``        the provider key (kept in a :class:`Secret`, never printed)
``ANALYTICS_DEBUG``          ``true``: print what would be sent instead of sending
``ANALYTICS_INSTANCE_LEVEL`` ``true``: the user id sent is the account id
``ANALYTICS_STRICT``         ``true``: missing context raises (tests, development)
``ANALYTICS_ENABLED``        ``false``: track nothing at all (a kill switch)
``ANALYTICS_BUNDLE_TTL``     seconds an unchanged identify/group is not re-sent (0: always)
``ANALYTICS_ENDPOINT``       the provider's base URL (for proxies and tests)
``ANALYTICS_QUEUE_SIZE``     events a destination queues before dropping (100000)
``ANALYTICS_EXIT_TIMEOUT``   seconds the flush at interpreter exit may take (2; 0: none)
``ANALYTICS_SPAN_EVENTS``    ``false``: do not add tracked events to the current span
``ANALYTICS_OUTBOX``         an SQLite file: queue durably there (survives crashes, restarts)
``ANALYTICS_OUTBOX_MAX_ROWS`` messages the outbox holds before refusing new ones (1000000)
``ANALYTICS_OUTBOX_SYNCHRONOUS`` ``full``: survive power loss too (an fsync per commit)
=========================== ==========================================================
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from instrumentor.delivery import destination as destination_module
from instrumentor.delivery.destination import Destination
from instrumentor.delivery.outbox_destination import OutboxDestination
from instrumentor.diagnostics import Incident, _diagnostics
from instrumentor.exceptions import ConfigurationError
from instrumentor.signals import event_emitted

if TYPE_CHECKING:
    from instrumentor.delivery.queue import QueueBackend
    from instrumentor.transports.base import Transport

__all__ = [
    "ENVIRONMENT_VARIABLES",
    "Secret",
    "Settings",
    "configure",
    "configured",
    "current_settings",
    "reset_configuration",
]

_log = logging.getLogger("instrumentor")

#: Every environment variable instrumentor reads (see the table above).
ENVIRONMENT_VARIABLES = (
    "ANALYTICS_API_KEY",
    "ANALYTICS_DEBUG",
    "ANALYTICS_INSTANCE_LEVEL",
    "ANALYTICS_STRICT",
    "ANALYTICS_ENABLED",
    "ANALYTICS_BUNDLE_TTL",
    "ANALYTICS_ENDPOINT",
    "ANALYTICS_QUEUE_SIZE",
    "ANALYTICS_EXIT_TIMEOUT",
    "ANALYTICS_SPAN_EVENTS",
    "ANALYTICS_OUTBOX",
    "ANALYTICS_OUTBOX_MAX_ROWS",
    "ANALYTICS_OUTBOX_SYNCHRONOUS",
)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class Secret:
    """A secret string (the API key) that never shows itself in a repr, str or log line.

    Args:
        value: The secret.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def fingerprint(self) -> str:
        """8 hex digits that tell two secrets apart without revealing either.

        The first 8 hex digits of HMAC-SHA256 of the secret, keyed with a fixed label: it
        names a key in outbox channels and logs; it cannot be turned back into the key.
        """
        digest = hmac.new(b"instrumentor key fingerprint", self._value.encode(), "sha256")
        return digest.hexdigest()[:8]


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(f"{name}={raw!r} is not a boolean; use true or false")


def _parse_number(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number") from None


@dataclass(frozen=True)
class Settings:
    """The active configuration.

    Build it with :func:`configure`; read it with :func:`current_settings`.

    Attributes:
        api_key: The provider key, or ``None``.
        endpoint: The provider's base URL, or ``None`` for the default.
        debug: Print messages instead of sending them.
        instance_level: Send the top-level group (account) id as the user id.
        strict: Raise :class:`~instrumentor.MissingContextError` instead of logging.
        enabled: ``False`` turns all tracking off.
        bundle_ttl: Seconds during which an unchanged identify or group is not re-sent;
            ``0`` sends them with every track.
        queue_size: Events each destination queues before dropping new ones (counted).
        exit_timeout: Seconds the flush at interpreter exit may take; ``0`` disables it.
        span_events: Add each tracked event to the current OpenTelemetry span (when an SDK is
            installed and the span records), and its trace ids to the track message.
        span_event_user: Include the user id (``enduser.id``) in those span events.
        outbox: An SQLite file through which every destination the configuration builds
            queues durably (see :class:`~instrumentor.OutboxDestination`); ``None``: memory.
        outbox_max_rows: Messages the outbox holds before new ones are dropped (counted).
        outbox_synchronous: ``"normal"`` (survives a process crash) or ``"full"`` (also an
            OS crash or power loss, at an fsync per commit).
        transports: Where messages go; ``None`` chooses from the settings: the console in
            debug mode, else Accoil when an API key is set. A transport that does I/O is put
            behind a queued :class:`~instrumentor.delivery.Destination`; pass a
            ``Destination`` yourself to choose its options.
        on_error: Called with every :class:`~instrumentor.Incident`; must not block.
        queue: Where queued events go: ``None`` for the in-memory queue of each
            :class:`~instrumentor.delivery.Destination`, or a queue backend such as
            :class:`~instrumentor.celery.CeleryQueue`, which then builds the destinations
            (one per route) in place of every transport that is not inline and not a
            ``Destination`` you passed in: those are delivered by the queue's consumers,
            through *their* configuration (so this process needs no API key).
    """

    api_key: Secret | None = None
    endpoint: str | None = None
    debug: bool = False
    instance_level: bool = False
    strict: bool = False
    enabled: bool = True
    bundle_ttl: float = 3600.0
    queue_size: int = 100_000
    exit_timeout: float = 2.0
    span_events: bool = True
    span_event_user: bool = False
    outbox: str | None = None
    outbox_max_rows: int = 1_000_000
    outbox_synchronous: str = "normal"
    transports: tuple[Transport | Destination, ...] | None = None
    on_error: Callable[[Incident], None] | None = field(default=None, repr=False)
    queue: QueueBackend | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the ``ANALYTICS_*`` variables (see the module docs).

        Raises:
            ConfigurationError: If a variable holds a value that cannot be read.
        """
        env = os.environ if environ is None else environ
        key = env.get("ANALYTICS_API_KEY", "").strip()
        settings = cls(
            api_key=Secret(key) if key else None,
            endpoint=env.get("ANALYTICS_ENDPOINT") or None,
            debug=_parse_bool("ANALYTICS_DEBUG", env.get("ANALYTICS_DEBUG", "false")),
            instance_level=_parse_bool(
                "ANALYTICS_INSTANCE_LEVEL", env.get("ANALYTICS_INSTANCE_LEVEL", "false")
            ),
            strict=_parse_bool("ANALYTICS_STRICT", env.get("ANALYTICS_STRICT", "false")),
            enabled=_parse_bool("ANALYTICS_ENABLED", env.get("ANALYTICS_ENABLED", "true")),
            bundle_ttl=_parse_number(
                "ANALYTICS_BUNDLE_TTL", env.get("ANALYTICS_BUNDLE_TTL", "3600")
            ),
            queue_size=int(
                _parse_number("ANALYTICS_QUEUE_SIZE", env.get("ANALYTICS_QUEUE_SIZE", "100000"))
            ),
            exit_timeout=_parse_number(
                "ANALYTICS_EXIT_TIMEOUT", env.get("ANALYTICS_EXIT_TIMEOUT", "2")
            ),
            span_events=_parse_bool(
                "ANALYTICS_SPAN_EVENTS", env.get("ANALYTICS_SPAN_EVENTS", "true")
            ),
            outbox=env.get("ANALYTICS_OUTBOX", "").strip() or None,
            outbox_max_rows=int(
                _parse_number(
                    "ANALYTICS_OUTBOX_MAX_ROWS", env.get("ANALYTICS_OUTBOX_MAX_ROWS", "1000000")
                )
            ),
            outbox_synchronous=env.get("ANALYTICS_OUTBOX_SYNCHRONOUS", "normal").strip().lower(),
        )
        settings._validate()
        return settings

    def __post_init__(self) -> None:
        key: object = self.api_key
        if isinstance(key, str):
            object.__setattr__(self, "api_key", Secret(key) if key else None)
        elif key is not None and not isinstance(key, Secret):
            raise ConfigurationError(
                f"api_key must be a str or Secret, got {type(key).__qualname__}"
            )

    def _validate(self) -> None:
        if self.queue is not None and self.outbox is not None:
            raise ConfigurationError(
                "outbox and queue are alternatives: the outbox keeps messages on this machine's "
                "disk, a queue such as CeleryQueue hands them to a broker. Set one of them"
            )
        if not isinstance(self.bundle_ttl, (int, float)) or not self.bundle_ttl >= 0:
            raise ConfigurationError(
                f"bundle_ttl must be a number of seconds >= 0, got {self.bundle_ttl!r}"
            )
        if not self.queue_size >= 1:
            raise ConfigurationError(f"queue_size must be at least 1, got {self.queue_size!r}")
        if not (isinstance(self.exit_timeout, (int, float)) and self.exit_timeout >= 0):
            raise ConfigurationError(
                f"exit_timeout must be >= 0 seconds, got {self.exit_timeout!r}"
            )
        if self.outbox is not None and not (isinstance(self.outbox, str) and self.outbox):
            raise ConfigurationError(f"outbox must be a file path, got {self.outbox!r}")
        if not (isinstance(self.outbox_max_rows, int) and self.outbox_max_rows >= 1):
            raise ConfigurationError(
                f"outbox_max_rows must be an integer >= 1, got {self.outbox_max_rows!r}"
            )
        if self.outbox_synchronous not in ("normal", "full"):
            raise ConfigurationError(
                f"outbox_synchronous must be 'normal' or 'full', got {self.outbox_synchronous!r}"
            )
        for transport in self.transports or ():
            if isinstance(transport, Destination):
                continue
            if not callable(getattr(transport, "deliver", None)):
                raise ConfigurationError(
                    f"{transport!r} is not a transport: it needs deliver(batch) and close()"
                )
        if self.on_error is not None and not callable(self.on_error):
            raise ConfigurationError(f"on_error must be callable, got {self.on_error!r}")
        if self.queue is not None and not callable(getattr(self.queue, "destinations", None)):
            raise ConfigurationError(
                f"queue must be None or a queue backend such as CeleryQueue(app), got "
                f"{self.queue!r}"
            )


def _default_transports(settings: Settings) -> tuple[Transport, ...]:
    from instrumentor.transports.accoil import AccoilTransport
    from instrumentor.transports.console import ConsoleTransport

    if settings.debug:
        return (ConsoleTransport(),)
    if settings.api_key:
        if settings.endpoint:
            return (AccoilTransport(settings.api_key, endpoint=settings.endpoint),)
        return (AccoilTransport(settings.api_key),)
    return ()


def _receiver_for(transport: Transport | Destination, settings: Settings, *, lazy: bool) -> Any:
    from instrumentor.transports.base import InlineDestination

    if isinstance(transport, Destination):
        return transport
    if _inline(transport):
        return InlineDestination(transport)
    if settings.outbox is not None:
        return OutboxDestination(
            transport,
            path=settings.outbox,
            max_queue=int(settings.queue_size),
            max_rows=settings.outbox_max_rows,
            synchronous="full" if settings.outbox_synchronous == "full" else "normal",
            open_now=not lazy,  # at the first event (from the environment): the worker opens it
        )
    return Destination(transport, max_queue=int(settings.queue_size))


def _inline(transport: Any) -> bool:
    return bool(getattr(transport, "inline", False))


class Runtime:
    """The installed configuration: settings, connected receivers and bundle bookkeeping."""

    __slots__ = (
        "bundle_ttl",
        "enabled",
        "from_bad_env",
        "instance_level",
        "outbox_problems",
        "owned",
        "receivers",
        "seen",
        "settings",
        "span_event_user",
        "span_events",
        "strict",
    )

    def __init__(
        self, settings: Settings, reuse: Runtime | None = None, *, lazy: bool = False
    ) -> None:
        self.settings = settings
        self.strict = settings.strict
        self.enabled = settings.enabled
        self.span_events = settings.span_events
        self.span_event_user = settings.span_event_user
        #: True when the environment could not be read at first use (tracking is off).
        self.from_bad_env = False
        self.instance_level = settings.instance_level
        self.bundle_ttl = float(settings.bundle_ttl)
        #: bundle key -> expiry (time.time(), the clock the emission reads anyway); see emitter.
        self.seen: dict[Any, float] = {}
        same_transports = (
            reuse is not None
            and reuse.settings.enabled == settings.enabled
            and reuse.settings.queue_size == settings.queue_size
            and (reuse.settings.outbox, reuse.settings.outbox_max_rows)
            == (settings.outbox, settings.outbox_max_rows)
            and reuse.settings.outbox_synchronous == settings.outbox_synchronous
            and reuse.settings.queue == settings.queue
            and reuse.settings.transports == settings.transports
            and (
                settings.transports is not None
                or (reuse.settings.debug, reuse.settings.api_key, reuse.settings.endpoint)
                == (settings.debug, settings.api_key, settings.endpoint)
            )
        )
        self.receivers: tuple[Any, ...]
        #: Destinations this configuration created (and so retires); not ones passed in.
        self.owned: list[Destination] = []
        if same_transports and reuse is not None:
            self.receivers = reuse.receivers
            self.owned = reuse.owned
        elif settings.enabled:
            transports = (
                settings.transports
                if settings.transports is not None
                else _default_transports(settings)
            )
            kept = list(transports)
            if settings.queue is not None:  # it builds what does I/O; the rest stays here
                kept = [t for t in kept if isinstance(t, Destination) or _inline(t)]
            receivers = [_receiver_for(t, settings, lazy=lazy) for t in kept]
            if settings.queue is not None:
                receivers.extend(settings.queue.destinations(settings))
            self.receivers = tuple(receivers)
            given = {id(t) for t in transports}
            self.owned = [
                r for r in self.receivers if isinstance(r, Destination) and id(r) not in given
            ]
        else:
            self.receivers = ()
        #: Outboxes that could not be opened (their destinations deliver from memory).
        self.outbox_problems: list[str] = []
        served = {r.channel for r in self.receivers if isinstance(r, OutboxDestination)}
        for receiver in self.receivers:
            if isinstance(receiver, Destination):
                receiver.report = self._destination_reporter(receiver)
            if isinstance(receiver, OutboxDestination):
                receiver.served_channels |= served  # other channels of this configuration
            problem = getattr(receiver, "outbox_problem", None)
            if problem is not None and (reuse is None or receiver not in reuse.receivers):
                self.outbox_problems.append(str(problem))
                receiver.report(
                    "outbox_unavailable",
                    f"{problem}; until then events are queued in memory only",
                    problem,
                )

    def _destination_reporter(
        self, destination: Destination
    ) -> Callable[[str, str, BaseException | None], None]:
        def report(kind: str, message: str, error: BaseException | None) -> None:
            self.report(Incident(kind, message, site=destination.name, error=error))

        return report

    def destinations(self) -> list[Destination]:
        """The queued destinations this configuration delivers to."""
        return [r for r in self.receivers if isinstance(r, Destination)]

    def report(self, incident: Incident, key: str | None = None, *, sampled: bool = False) -> None:
        """Count, log (rate-limited per ``key``, by default the site) and call ``on_error``.

        ``sampled`` rate-limits the ``on_error`` call like the log line (for incidents that
        outside input can cause at any rate).
        """
        _diagnostics.report(incident, self.settings.on_error, key, sampled=sampled)


_lock = threading.RLock()
_runtime: Runtime | None = None


def _install(runtime: Runtime | None, *, retire: bool = False) -> None:
    global _runtime
    old = _runtime
    new_receivers = runtime.receivers if runtime is not None else ()
    # Connect first, then disconnect what is gone: an event tracked meanwhile on another thread
    # reaches the old or the new receivers, never none.
    for receiver in new_receivers:
        event_emitted.connect(receiver, weak=False)
    if runtime is not None:
        event_emitted.on_receiver_error = runtime.report
        destination_module.exit_timeout = float(runtime.settings.exit_timeout)
    _runtime = runtime
    if old is not None:
        kept = set(map(id, new_receivers))
        for receiver in old.receivers:
            if id(receiver) not in kept:
                event_emitted.disconnect(receiver)
        if retire:
            _retire([d for d in old.owned if id(d) not in kept], old.settings)
    if runtime is None:
        event_emitted.on_receiver_error = None


def _retire(destinations: list[Destination], settings: Settings) -> None:
    """Deliver what replaced destinations still hold and close them, off the caller's thread."""
    if not destinations:
        return
    timeout = float(settings.exit_timeout) or 2.0

    def shutdown_together() -> None:
        deadline = time.monotonic() + timeout
        for destination in destinations:
            destination._begin_shutdown(deadline)
        for destination in destinations:
            destination._finish_shutdown(deadline)

    thread = threading.Thread(target=shutdown_together, name="instrumentor-retire", daemon=True)
    try:
        thread.start()
    except RuntimeError:  # interpreter shutdown (3.12+): no threads; a short inline flush
        timeout = min(timeout, 0.5)
        shutdown_together()


def runtime() -> Runtime:
    """The installed runtime; on first use, configured once from the environment."""
    current = _runtime
    if current is not None:
        return current
    with _lock:
        if _runtime is not None:
            return _runtime
        try:
            settings = Settings.from_env()
            bad_env = False
        except ConfigurationError as exc:
            # Never raise into the first tracked call: turn tracking off, loudly. A later
            # configure() reads the environment again (and raises there, at start-up).
            settings = Settings(enabled=False)
            bad_env = True
            _diagnostics.report(
                Incident(
                    "bad_configuration",
                    f"{exc}; tracking is off until the variable is fixed or configure() is called",
                    error=exc,
                ),
                None,
            )
        runtime_ = Runtime(settings, lazy=True)  # on the caller's thread: no file opened here
        runtime_.from_bad_env = bad_env
        _install(runtime_)
        return runtime_


_UNSET: Any = object()


def configure(
    *,
    api_key: str | Secret | None = _UNSET,
    endpoint: str | None = _UNSET,
    debug: bool = _UNSET,
    instance_level: bool = _UNSET,
    strict: bool = _UNSET,
    enabled: bool = _UNSET,
    bundle_ttl: float = _UNSET,
    queue_size: int = _UNSET,
    exit_timeout: float = _UNSET,
    span_events: bool = _UNSET,
    span_event_user: bool = _UNSET,
    outbox: str | os.PathLike[str] | None = _UNSET,
    outbox_max_rows: int = _UNSET,
    outbox_synchronous: str = _UNSET,
    queue: QueueBackend | None = _UNSET,
    transports: Sequence[Transport | Destination] | None = _UNSET,
    on_error: Callable[[Incident], None] | None = _UNSET,
) -> Settings:
    """Configure instrumentor; settings not given keep their current value.

    The first call starts from the environment (see the module docs); later calls change only
    what they name. Safe to call at any time: ``@tracks`` reads the configuration per call.

    Args:
        api_key: The provider key (a string or :class:`Secret`).
        endpoint: The provider's base URL.
        debug: Print what would be sent instead of sending.
        instance_level: Send the account id as the user id.
        strict: Raise on missing context instead of logging (for tests and development).
        enabled: ``False`` turns tracking off entirely.
        bundle_ttl: Seconds an unchanged identify/group is not re-sent; ``0`` always sends.
        queue_size: Events each default destination queues before dropping new ones.
        exit_timeout: Seconds the flush at interpreter exit may take (``0``: none).
        span_events: Add tracked events to the current OpenTelemetry span (default on).
        span_event_user: Include the user id in those span events (default off: PII).
        outbox: An SQLite file through which the destinations this configuration builds queue
            durably; ``None`` queues in memory. A file that cannot be used is reported (an
            ``outbox_unavailable`` incident saying what to do) and memory is used instead;
            in strict mode ``configure()`` raises :class:`~instrumentor.ConfigurationError`.
        outbox_max_rows: Messages the outbox holds before new ones are dropped (1,000,000).
        outbox_synchronous: ``"full"`` to survive power loss as well (default ``"normal"``).
        queue: A queue backend for the destinations built here, e.g.
            :class:`~instrumentor.celery.CeleryQueue`; ``None`` (the default) queues in memory.
            An alternative to ``outbox``: setting both is a ``ConfigurationError``, and so is
            a queue through which nothing would be published.
        transports: Replace the transports (or :class:`~instrumentor.delivery.Destination`
            objects); ``None`` chooses from the other settings.
        on_error: Called with every run-time :class:`~instrumentor.Incident`.

    Returns:
        The settings now in force.

    Raises:
        ConfigurationError: If a value is invalid (nothing is changed then).
    """
    given = {
        "api_key": api_key,
        "endpoint": endpoint,
        "debug": debug,
        "instance_level": instance_level,
        "strict": strict,
        "enabled": enabled,
        "bundle_ttl": bundle_ttl,
        "queue_size": queue_size,
        "exit_timeout": exit_timeout,
        "span_events": span_events,
        "span_event_user": span_event_user,
        "outbox": os.fspath(outbox) if outbox not in (_UNSET, None) else outbox,
        "outbox_max_rows": outbox_max_rows,
        "outbox_synchronous": outbox_synchronous,
        "queue": queue,
        "transports": transports,
        "on_error": on_error,
    }
    return _configure({k: v for k, v in given.items() if v is not _UNSET}, retire=True)


def _configure(changes: dict[str, Any], *, retire: bool) -> Settings:
    with _lock:
        current = _runtime
        usable = current is not None and not current.from_bad_env
        base = current.settings if current is not None and usable else Settings.from_env()
        unknown = set(changes) - {f.name for f in fields(Settings)}
        if unknown:
            raise TypeError(f"configure() got unexpected keywords: {sorted(unknown)}")
        changes = dict(changes)
        if isinstance(changes.get("api_key"), str):
            changes["api_key"] = Secret(changes["api_key"]) if changes["api_key"] else None
        if changes.get("transports") is not None:
            changes["transports"] = tuple(changes["transports"])
        for flag in (
            "debug",
            "instance_level",
            "strict",
            "enabled",
            "span_events",
            "span_event_user",
        ):
            if flag in changes and not isinstance(changes[flag], bool):
                raise ConfigurationError(f"{flag} must be True or False, got {changes[flag]!r}")
        settings = replace(base, **changes)
        settings._validate()
        runtime_ = Runtime(settings, reuse=_runtime)
        if runtime_.outbox_problems and settings.strict:  # nothing installed, nothing started
            raise ConfigurationError("; ".join(runtime_.outbox_problems))
        _install(runtime_, retire=retire)
        return settings


def current_settings() -> Settings:
    """The settings in force (read from the environment if nothing was configured yet)."""
    return runtime().settings


def reset_configuration() -> None:
    """Forget all configuration: back to unconfigured, read from the environment on next use."""
    with _lock:
        _install(None, retire=True)


@contextlib.contextmanager
def configured(**overrides: Any) -> Iterator[Settings]:
    """Configure for a block, then restore exactly what was installed before (tests).

    Takes the keywords of :func:`configure`.
    """
    with _lock:
        previous = _runtime
        settings = _configure(overrides, retire=False)  # the previous one is coming back
    try:
        yield settings
    finally:
        with _lock:
            _install(previous, retire=True)

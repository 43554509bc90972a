"""Wiring: settings turned into receivers, installed and retired; ``configure()`` and ``stats()``.

The only module that assembles the stack. Unconfigured means silent: until ``configure()`` is
called or the first event is tracked, nothing is read, connected or started. At the first event
the environment is read once (:meth:`Settings.from_env`, through the loader registered with
:mod:`instrumentor._state`). Every setting is declared once, on :class:`Settings`.

The delivery stack (:mod:`instrumentor.delivery`), the transports and the SQLite outbox are
imported only when a configuration that needs them is built: a process that defines events,
binds context or configures no transport never loads them (``tests/test_import_cost.py``).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any, cast

from instrumentor import _diagnostics, _state
from instrumentor._diagnostics import Incident
from instrumentor._protocols import Receiver, Transport
from instrumentor._settings import ENVIRONMENT_VARIABLES, Option, Secret, Settings, SettingsChanges
from instrumentor._signals import event_emitted
from instrumentor._state import Runtime
from instrumentor.exceptions import ConfigurationError

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is 3.11+; annotations only

    from instrumentor.delivery import Destination

_log = logging.getLogger("instrumentor")

__all__ = [
    "ENVIRONMENT_VARIABLES",
    "Secret",
    "Settings",
    "configure",
    "configured",
    "current_settings",
    "default_transports",
    "destinations",
    "receiving_in_debug",
    "reset_configuration",
    "runtime",
    "stats",
]


# --- settings -> receivers --------------------------------------------------------------------


def default_transports(settings: Settings) -> tuple[Transport, ...]:
    """The transports ``settings`` choose when none are given: console, Accoil, or none."""
    if settings.debug:
        # Lazy on purpose: only a process that prints its events loads the console transport.
        from instrumentor.transports._console import ConsoleTransport

        return (ConsoleTransport(),)
    if settings.api_key:
        # Lazy on purpose: the Accoil transport imports httpx, which a process that only
        # defines events, or only prints them, never needs.
        from instrumentor.transports._accoil import AccoilTransport

        if settings.endpoint:
            return (AccoilTransport(settings.api_key, endpoint=settings.endpoint),)
        return (AccoilTransport(settings.api_key),)
    return ()


def _delivery_loaded() -> bool:
    """Whether this process imported the delivery stack (until then, no destination exists)."""
    return "instrumentor.delivery" in sys.modules


def _destination_types() -> tuple[type[Any], ...]:
    """The destination classes, once loaded; until then nothing can be one (an empty tuple)."""
    if not _delivery_loaded():
        return ()
    # Lazy on purpose: the delivery stack is loaded by whatever built a destination; this
    # import completes one in progress on another thread rather than starting one.
    from instrumentor.delivery import Destination, InlineDestination

    return (Destination, InlineDestination)


def _inline(transport: Any) -> bool:
    return bool(getattr(transport, "inline", False))


def _inner(transport: Any) -> Any:
    """The transport a destination given in ``transports`` delivers with (else ``transport``)."""
    if isinstance(transport, _destination_types()):
        return transport.transport
    return transport


def _debug_split(transports: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """``transports`` parted for debug mode: those that may receive, and those held back.

    Debug mode prints and never sends. A memory transport (the recorder of
    :func:`~instrumentor.testing.capture_events` and the ``tracked`` fixture) and a console
    transport keep what they get in this process, so they keep receiving; every other transport
    or destination given is held back, and a console prints in their place (unless one was
    given).
    """
    if not transports:
        return [], []
    # Lazy on purpose: a process that only defines events, or configures no transport, never
    # loads the transports.
    from instrumentor.transports._console import ConsoleTransport
    from instrumentor.transports._memory import MemoryTransport

    local = (ConsoleTransport, MemoryTransport)
    kept = [t for t in transports if isinstance(_inner(t), local)]
    held = [t for t in transports if not isinstance(_inner(t), local)]
    if held and not any(isinstance(_inner(t), ConsoleTransport) for t in kept):
        kept.append(ConsoleTransport())
    return kept, held


def _announce_held_back(held: Sequence[Any]) -> None:
    """Say once, at configure time, that debug mode keeps the given transports from sending."""
    names = ", ".join(type(_inner(t)).__name__ for t in held)  # class names: no keys, no URLs
    with contextlib.suppress(Exception):  # a raising log handler must not break configure()
        _log.warning(
            "instrumentor: debug mode is on (ANALYTICS_DEBUG or configure(debug=True)), so the "
            "%d transport(s) passed to configure() (%s) are held back and send nothing; every "
            "message is printed to the console instead. To send for real, unset "
            "ANALYTICS_DEBUG (or configure(debug=False)).",
            len(held),
            names,
        )


def _receiver_for(transport: Transport | Receiver, settings: Settings, *, lazy: bool) -> Any:
    # Lazy on purpose: the delivery stack loads with the first configuration that delivers.
    from instrumentor.delivery import Destination, InlineDestination

    if isinstance(transport, Destination):
        return transport
    transport = cast("Transport", transport)  # not a Destination: a transport (checked)
    if _inline(transport):
        return InlineDestination(transport)
    if settings.outbox is not None:
        # Lazy on purpose: SQLite and the outbox load only for a configuration with an outbox.
        from instrumentor.delivery._outbox_strategy import OutboxStrategy

        outbox = OutboxStrategy(
            settings.outbox,
            max_rows=settings.outbox_max_rows,
            synchronous="full" if settings.outbox_synchronous == "full" else "normal",
            open_now=not lazy,  # at the first event (from the environment): the worker opens it
        )
        return Destination(transport, max_queue=int(settings.queue_size), strategy=outbox)
    return Destination(transport, max_queue=int(settings.queue_size))


def _receivers(settings: Settings, *, lazy: bool) -> tuple[tuple[Any, ...], list[Any]]:
    """The receivers ``settings`` ask for, and those of them built here (retired with them)."""
    transports = (
        settings.transports if settings.transports is not None else default_transports(settings)
    )
    if not transports and settings.queue is None:
        return (), []  # nothing to deliver to: the delivery stack is not even imported
    # Lazy on purpose: the delivery stack loads with the first configuration that delivers.
    from instrumentor.delivery import Destination

    kept = list(transports)
    if settings.debug:  # print, never send: whatever was given, and the queue, get nothing
        kept = _debug_split(kept)[0]
    if settings.queue is not None:  # it builds what does I/O; the rest stays here
        kept = [t for t in kept if isinstance(t, Destination) or _inline(t)]
    receivers = [_receiver_for(t, settings, lazy=lazy) for t in kept]
    if settings.queue is not None and not settings.debug:
        receivers.extend(settings.queue.destinations(settings))
    given = {id(t) for t in transports}
    owned = [r for r in receivers if isinstance(r, Destination) and id(r) not in given]
    return tuple(receivers), owned


def receiving_in_debug(transports: Sequence[Any]) -> list[Any]:
    """Of ``transports``, those that receive in debug mode (a console added if any is held)."""
    return _debug_split(transports)[0]


def _same_receivers(old: Settings, new: Settings) -> bool:
    """Whether ``new`` builds what ``old`` built (then its receivers are kept)."""
    if not old.same_receivers(new):
        return False
    if old.debug == new.debug or new.transports is None:
        return True
    # The same transports given: debug changes what receives only if it holds some back.
    return new.queue is None and not _debug_split(new.transports)[1]


def build(settings: Settings, reuse: Runtime | None = None, *, lazy: bool = False) -> Runtime:
    """A runtime for ``settings``, with ``reuse``'s receivers if no ``rebuilds`` field changed."""
    if reuse is not None and _same_receivers(reuse.settings, settings):
        runtime_ = Runtime(settings, reuse.receivers, reuse.owned)
    elif settings.enabled:
        runtime_ = Runtime(settings, *_receivers(settings, lazy=lazy))
        if settings.debug and settings.transports:
            held = _debug_split(settings.transports)[1]
            if held:
                _announce_held_back(held)
    else:
        runtime_ = Runtime(settings)
    _check_outboxes(runtime_, reuse)
    return runtime_


def _outboxes(receivers: Sequence[Any]) -> list[tuple[Any, Any]]:
    """The (destination, outbox strategy) pairs among ``receivers``."""
    if "instrumentor.delivery._outbox_strategy" not in sys.modules:
        return []  # the outbox was never loaded: no receiver can have one
    # Lazy on purpose: completes an import of the outbox in progress on another thread (it is
    # never the first import of it: the check above).
    from instrumentor.delivery import Destination
    from instrumentor.delivery._outbox_strategy import OutboxStrategy

    return [
        (receiver, receiver.strategy)
        for receiver in receivers
        if isinstance(receiver, Destination) and isinstance(receiver.strategy, OutboxStrategy)
    ]


def _check_outboxes(runtime_: Runtime, reuse: Runtime | None) -> None:
    """Tell each outbox the channels of this configuration; report those that cannot open."""
    outboxes = _outboxes(runtime_.receivers)
    served = {outbox.channel for _, outbox in outboxes}
    for receiver, outbox in outboxes:
        outbox.served_channels |= served  # the other channels of this configuration
        problem = outbox.problem
        if problem is not None and (reuse is None or receiver not in reuse.receivers):
            runtime_.outbox_problems.append(str(problem))
            runtime_.report(
                Incident(
                    "outbox_unavailable",
                    f"{problem}; until then events are queued in memory only",
                    site=receiver.name,
                    error=problem,
                )
            )


# --- install and retire -----------------------------------------------------------------------


def _install(runtime_: Runtime | None, *, retire_old: bool = False) -> None:
    """Connect ``runtime_``'s receivers, make it current, then disconnect (and retire) the old."""
    new_receivers = runtime_.receivers if runtime_ is not None else ()
    # Connect first, then disconnect what is gone: an event tracked meanwhile on another thread
    # reaches the old or the new receivers, never none.
    for receiver in new_receivers:
        event_emitted.connect(receiver, weak=False)
    if runtime_ is not None and _delivery_loaded():  # else no destination exists to flush
        # Lazy on purpose: loaded by whatever built a destination (the check above); its
        # module reads the installed setting if it is loaded later.
        from instrumentor.delivery._lifecycle import set_exit_timeout

        set_exit_timeout(runtime_.settings.exit_timeout)
    old = _state.install(runtime_)
    if old is None:
        return
    kept = set(map(id, new_receivers))
    for receiver in old.receivers:
        if id(receiver) not in kept:
            event_emitted.disconnect(receiver)
    gone = [d for d in old.owned if id(d) not in kept] if retire_old else []
    if gone:
        # Lazy on purpose: these destinations were built, so the delivery stack is loaded.
        from instrumentor.delivery._lifecycle import retire

        retire(gone, float(old.settings.exit_timeout) or 2.0)


def _load_from_env() -> Runtime:
    """The first use without ``configure()``: read the environment once (never raises)."""
    try:
        settings = Settings.from_env()
        bad_env = False
    except ConfigurationError as exc:
        # Never raise into the first tracked call: turn tracking off, loudly. A later
        # configure() reads the environment again (and raises there, at start-up).
        settings = Settings(enabled=False)
        bad_env = True
        _state.report(
            Incident(
                "bad_configuration",
                f"{exc}; tracking is off until the variable is fixed or configure() is called",
                error=exc,
            )
        )
    runtime_ = build(settings, lazy=True)  # on the caller's thread: no file opened here
    runtime_.from_bad_env = bad_env
    _install(runtime_)
    return runtime_


_state.set_loader(_load_from_env)


def runtime() -> Runtime:
    """The installed runtime; on first use, configured once from the environment."""
    return _state.active()


# --- the public API ---------------------------------------------------------------------------


def _configure(changes: Mapping[str, Any], *, retire_old: bool) -> Settings:
    with _state.lock:
        current = _state.current()
        usable = current is not None and not current.from_bad_env
        base = current.settings if current is not None and usable else Settings.from_env()
        settings = base.changed(**changes)
        runtime_ = build(settings, reuse=current)
        if runtime_.outbox_problems and settings.strict:  # nothing installed, nothing started
            raise ConfigurationError("; ".join(runtime_.outbox_problems))
        _install(runtime_, retire_old=retire_old)
        return settings


def configure(**changes: Unpack[SettingsChanges]) -> Settings:
    """Configure instrumentor; settings not given keep their current value (see below)."""
    return _configure(changes, retire_old=True)


def _configure_doc() -> str:
    args = []
    for f in fields(Settings):
        option: Option = f.metadata["option"]
        env = f" (``{option.env}``)" if option.env else ""
        args.append(f"        {f.name}{env}: {option.doc.replace('`', '``')}")
    return (
        "Configure instrumentor; settings not given keep their current value.\n\n"
        "    The first call starts from the environment; later calls change only what they "
        "name.\n    Safe to call at any time: ``@tracks`` reads the configuration per call. "
        "The keywords\n    are the fields of :class:`Settings`, each declared once there.\n\n"
        "    Args:\n" + "\n".join(args) + "\n\n"
        "    Returns:\n        The settings now in force.\n\n"
        "    Raises:\n"
        "        ConfigurationError: If a value is invalid (nothing is changed then).\n"
        "        TypeError: For a keyword that is not a setting.\n"
    )


configure.__doc__ = _configure_doc()
configure.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=f.type)
        for f in fields(Settings)
    ],
    return_annotation="Settings",
)


def destinations() -> list[Destination]:
    """The queued destinations the installed configuration delivers to."""
    receivers = runtime().receivers
    if not receivers:
        return []
    # Lazy on purpose: receivers exist, so the delivery stack that built them is loaded.
    from instrumentor.delivery import Destination

    return [r for r in receivers if isinstance(r, Destination)]


def current_settings() -> Settings:
    """The settings in force (read from the environment if nothing was configured yet)."""
    return runtime().settings


def reset_configuration() -> None:
    """Forget all configuration: back to unconfigured, read from the environment on next use."""
    with _state.lock:
        _install(None, retire_old=True)


@contextlib.contextmanager
def configured(**overrides: Unpack[SettingsChanges]) -> Iterator[Settings]:
    """Configure for a block, then restore exactly what was installed before (tests).

    Takes the keywords of :func:`configure`.
    """
    with _state.lock:
        previous = _state.current()
        settings = _configure(overrides, retire_old=False)  # the previous one is coming back
    try:
        yield settings
    finally:
        with _state.lock:
            _install(previous, retire_old=True)


def stats() -> Mapping[str, int]:
    """Counters since start: incidents by kind, and delivery summed over the destinations.

    Incident kinds (``missing_group``, ``receiver_error``, ...; see
    :class:`~instrumentor.IncidentKind`) are counted since start or the last
    :func:`~instrumentor.reset_stats`; kinds that never happened are absent. Delivery counters
    are summed over the destinations of this process: ``enqueued`` (events), ``delivered``,
    ``retried`` and ``failed`` (messages), ``dropped.<reason>``, ``queue_depth`` (events waiting)
    and ``in_flight`` (messages being delivered). Per destination: ``Destination.stats()``.

    Returns:
        A snapshot such as ``{"missing_group": 3, "enqueued": 120, "delivered": 480}``.
    """
    counts = _diagnostics.snapshot()
    if not _delivery_loaded():
        return counts  # no destination was ever built: no delivery counters to add
    # Lazy on purpose: the delivery stack is loaded (the check above); nothing is imported anew.
    from instrumentor.delivery._lifecycle import counters

    for key, value in counters().items():
        counts[key] = counts.get(key, 0) + value
    return counts

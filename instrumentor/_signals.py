"""The hand-off between emission and delivery: a signal in instrumentor's private blinker namespace.

Every emission is sent on :data:`event_emitted` with the registry class as sender and the
:class:`~instrumentor._emitter.Emission` as the ``emission`` keyword. Transports are receivers;
an application may connect its own::

    from instrumentor._signals import event_emitted

    @event_emitted.connect_via(Events)          # or event_emitted.connect(fn) for every registry
    def audit(sender, *, emission): ...

Two of blinker's defaults are changed here, because they are wrong for a library: receivers are
held strongly unless ``weak=True`` is asked for (a closure connected inside a function would
otherwise vanish), and a raising receiver is logged and counted while the others still run
(``Signal.send`` would stop at the first). Receivers run on the emitting thread, so they must be
quick: enqueue, do not deliver. They are plain functions: ``connect`` refuses an ``async def``
receiver (blinker's own ``Signal.send`` raises for one, at every send).
"""

from __future__ import annotations

import functools
import inspect
import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from blinker import ANY, NamedSignal, Namespace

from instrumentor._diagnostics import Incident
from instrumentor._state import report as report_incident

__all__ = ["EmissionSignal", "event_emitted", "namespace", "receiver_name"]

_F = TypeVar("_F", bound=Callable[..., Any])
_WEAK_TYPES = (weakref.ref, weakref.WeakMethod)
_MAX_CACHED_SENDERS = 256


def _receiver_id(receiver: Any) -> Hashable:
    """The key blinker files ``receiver`` under in ``Signal.receivers`` (as its ``make_id``)."""
    if inspect.ismethod(receiver):
        return id(receiver.__func__), id(receiver.__self__)
    if isinstance(receiver, str | int):
        return receiver
    return id(receiver)


def receiver_name(receiver: Any) -> str:
    """A stable, state-free name for a receiver (for logs and rate limiting, never its repr)."""
    name = getattr(receiver, "__qualname__", None)
    if isinstance(name, str):
        return name
    transport = getattr(receiver, "transport", None)
    inner = f"({type(transport).__qualname__})" if transport is not None else ""
    return f"{type(receiver).__qualname__}{inner}"


def _refuse_async(receiver: Any, signal: str) -> None:
    """Refuse an ``async def`` receiver: a function, method, partial, or object whose call is.

    Emissions are dispatched on the caller's thread and a receiver's result is dropped, so the
    coroutine an async receiver returns would never be awaited: it would never run, with only a
    "never awaited" warning to tell. blinker's own ``Signal.send`` refuses one too, at every send
    (``RuntimeError: Cannot send to a coroutine function``, unless given ``_async_wrapper``);
    here it is refused once, at ``connect``.

    Raises:
        TypeError: If ``receiver`` is a coroutine or async generator function.
    """
    inner = receiver
    while isinstance(inner, functools.partial):
        inner = inner.func
    name = receiver_name(inner)
    if not inspect.isroutine(inner) and callable(inner):
        inner = type(inner).__call__  # an instance whose class defines ``async def __call__``
    if inspect.iscoroutinefunction(inner) or inspect.isasyncgenfunction(inner):
        raise TypeError(
            f"cannot connect the async receiver {name} to {signal}: receivers run on the "
            "emitting thread, inside the business call, and their result is dropped, so its "
            "coroutine would never run. Connect a quick plain function that hands the emission "
            "to a queue or a thread of your own (or put the work behind an "
            "instrumentor.delivery.Destination, whose worker thread delivers it), and run the "
            "async work there"
        )


class EmissionSignal(NamedSignal):
    """A blinker signal whose ``send`` never raises and keeps the hot path short.

    Receivers are called from a cached tuple that ``connect`` and ``disconnect`` refresh, instead of
    the set arithmetic blinker does on every send. ``muted()`` and ``connected_to()`` work as in
    blinker.
    """

    def __init__(self, name: str, doc: str | None = None) -> None:
        # sender -> (receivers, has_weak): receivers as blinker holds them (weak refs stay weak).
        self._cache: dict[Any, tuple[tuple[Any, ...], bool]] = {}
        # sender -> receivers, only while none is weak and the signal is not muted: dispatch's
        # one look-up. Emptied by connect, disconnect and (un)muting.
        self._strong: dict[Any, tuple[Any, ...]] = {}
        self._cache_lock = threading.Lock()
        super().__init__(name, doc)

    def connect(self, receiver: _F, sender: Any = ANY, weak: bool = False) -> _F:
        """Connect ``receiver``; held strongly unless ``weak=True``.

        ``connect_via`` and ``connected_to`` come here too.

        Raises:
            TypeError: If ``receiver`` is ``async``: receivers are called on the emitting
                thread and must be quick plain functions.
        """
        _refuse_async(receiver, repr(self.name))
        result = super().connect(receiver, sender, weak)
        self._invalidate()
        return result

    def disconnect(self, receiver: Callable[..., Any], sender: Any = ANY) -> None:
        """Disconnect ``receiver`` from ``sender`` (by default from every sender)."""
        super().disconnect(receiver, sender)
        self._invalidate()

    def _invalidate(self) -> None:
        with self._cache_lock:
            self._cache = {}
            self._strong = {}

    def dispatch(self, sender: Any, emission: Any) -> None:
        """Call every receiver with ``emission=``; the hot path of :meth:`send`, no results kept.

        A raising receiver is reported (``receiver_error``) and the others still run. Nothing
        is called while the signal is muted.
        """
        receivers = self._strong.get(sender)
        if receivers is None or self.is_muted:  # not looked up yet, weak receivers, or muted
            self._dispatch_slowly(sender, emission)
            return
        for receiver in receivers:
            try:
                receiver(sender, emission=emission)
            except Exception as exc:
                self._receiver_failed(receiver, exc)

    def _dispatch_slowly(self, sender: Any, emission: Any) -> None:
        if self.is_muted:
            return
        strong = self._strong
        entries, weak = self._cache.get(sender) or self._entries_for(sender)
        if not weak:
            with self._cache_lock:
                if self._strong is strong and not self.is_muted:
                    if len(strong) >= _MAX_CACHED_SENDERS:
                        strong.clear()
                    strong[sender] = entries
        for held in entries:
            receiver = held() if type(held) in _WEAK_TYPES else held
            if receiver is None:
                continue
            try:
                receiver(sender, emission=emission)
            except Exception as exc:
                self._receiver_failed(receiver, exc)

    def _receiver_failed(self, receiver: Any, exc: Exception) -> None:
        """Report a receiver's failure; never raises, so the remaining receivers still run."""
        try:
            name = receiver_name(receiver)
            report_incident(
                Incident(
                    "receiver_error",
                    f"receiver {name} of {self.name!r} raised {type(exc).__qualname__}; the "
                    "other receivers still ran",
                    site=name,
                    error=exc,
                )
            )
        except Exception:  # a broken repr, hook or log handler must not stop the loop
            pass

    def _entries_for(self, sender: Any) -> tuple[tuple[Any, ...], bool]:
        cache = self._cache
        entries = cache.get(sender)
        if entries is None:
            # Keep weak receivers weak: cache the reference blinker holds, not the object.
            held = tuple(
                self.receivers.get(_receiver_id(receiver), receiver)
                for receiver in self.receivers_for(sender)
            )
            entries = (held, any(type(h) in _WEAK_TYPES for h in held))
            with self._cache_lock:
                if self._cache is cache:
                    if len(cache) >= _MAX_CACHED_SENDERS:  # send() may be given any sender
                        cache.clear()
                    cache[sender] = entries
        return entries

    def send(
        self, sender: Any | None = None, /, **kwargs: Any
    ) -> list[tuple[Callable[..., Any], Any]]:
        """Call every receiver for ``sender``; a raising receiver is reported, not propagated."""
        if self.is_muted or not self.receivers:
            return []
        results: list[tuple[Callable[..., Any], Any]] = []
        for held in self._entries_for(sender)[0]:
            receiver = held() if type(held) in _WEAK_TYPES else held
            if receiver is None:
                continue
            try:
                results.append((receiver, receiver(sender, **kwargs)))
            except Exception as exc:
                self._receiver_failed(receiver, exc)
        return results


#: instrumentor's private namespace: its signals never mix with ``blinker.signal()`` users.
namespace = Namespace()

#: Sent once per emission (sender: the registry class; keyword ``emission``).
event_emitted: EmissionSignal = EmissionSignal(
    "instrumentor.event_emitted", doc="Sent once per emission with the Emission as `emission`."
)
namespace["instrumentor.event_emitted"] = event_emitted

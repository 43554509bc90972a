"""``@tracks``: emit a plan event after the decorated function returns successfully.

.. code-block:: python

    @tracks(Events.REPORT_CREATED)
    def create_report(data): ...

    @tracks(Events.TASK_CREATED, group_level="project", group_id="project_id")
    async def create_task(project_id: str, title: str) -> Task: ...

Semantics: the event is emitted after a normal return (for coroutine functions after the await
completes; the function is called when its coroutine first runs, so one closed or cancelled
before then leaves nothing "never awaited"); an exception, cancellation included, means no event
and propagates untouched; the return value is untouched; nothing instrumentor raises at run time
reaches the caller (strict mode's :class:`~instrumentor.MissingContextError` excepted), not even
at the recursion limit (where the event may be lost). Misuse, such as a group level that disagrees
with the plan or a generator function, raises at decoration, i.e. at import.

Built on wrapt, so names, signatures, ``inspect.iscoroutinefunction`` and descriptor binding
(methods, classmethods, staticmethods) are preserved. Put ``@tracks`` above ``@classmethod``.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, Union, cast

from instrumentor._emitter import STRICT_ERRORS, emit_track, internal_error, report_problem
from instrumentor._registry import EventRegistry
from instrumentor.exceptions import TrackingUsageError, UnknownGroupLevelError

__all__ = ["Call", "GroupIdArg", "PropertiesSpec", "TrackedFunction", "tracks"]

_F = TypeVar(
    "_F", bound=Union[Callable[..., Any], "classmethod[Any, Any, Any]", "staticmethod[Any, Any]"]
)
_RESULT_NAMES = ("result", "return")
_COROUTINE = types.CoroutineType


@dataclass(frozen=True)
class Call:
    """A completed call of a tracked function, given to ``group_id`` and ``properties`` callables.

    Attributes:
        arguments: The call's arguments by parameter name, defaults applied (``self``/``cls``
            included for methods).
        result: What the function returned (awaited, for coroutine functions).
    """

    arguments: Mapping[str, Any]
    result: Any


if TYPE_CHECKING:
    import wrapt

    class TrackedFunction(wrapt.FunctionWrapper[..., Any]):
        """What ``@tracks`` returns (see :func:`tracked_function_class`)."""

else:

    def __getattr__(name: str) -> Any:
        """``TrackedFunction``, made on first use: wrapt loads with the first ``@tracks``."""
        if name == "TrackedFunction":
            return tracked_function_class()
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def tracked_function_class() -> type[Any]:
    """The class of what ``@tracks`` returns: a wrapt function wrapper that pickles by reference.

    Made on first use, so that ``import instrumentor`` does not import wrapt (whose package
    imports asyncio and importlib.metadata): a module that only defines events never pays
    for it.
    """
    # Lazy on purpose: wrapt is most of what ``import instrumentor`` would otherwise cost.
    import wrapt

    class TrackedFunction(wrapt.FunctionWrapper[..., Any]):
        """What ``@tracks`` returns: a wrapt function wrapper that pickles by reference.

        Pickling it (``ProcessPoolExecutor.submit``, Celery, multiprocessing) stores its
        module and qualified name, like a plain function, and unpickles to the same tracked
        function.
        """

        __qualname__ = "TrackedFunction"  # as when it was defined at module level

        def __reduce_ex__(self, protocol: Any) -> str:
            name: str = self.__qualname__
            return name

    return TrackedFunction


GroupIdArg = Union[str, Callable[[Call], Any], None]
PropertiesSpec = Union[Mapping[str, Any], Callable[[Call], Mapping[str, Any]], None]


def _path_getter(path: str, raw: Callable[..., Any], where: str) -> Callable[[Call], Any]:
    head, *rest = path.split(".")
    try:
        params = inspect.signature(raw).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    var_kw = next(
        (p.name for p in params.values() if p.kind is inspect.Parameter.VAR_KEYWORD), None
    )
    if head not in _RESULT_NAMES and head not in params and var_kw is None:
        raise TrackingUsageError(
            f"@tracks on {where}: group_id={path!r} names no parameter of the function "
            f"(parameters: {list(params)}); use a parameter name, 'result.<attr>', or a callable"
        )

    def get(call: Call) -> Any:
        if head in _RESULT_NAMES:
            value = call.result
        elif head in call.arguments or var_kw is None:
            value = call.arguments.get(head)
        else:
            value = call.arguments.get(var_kw, {}).get(head)
        for attr in rest:
            if value is None:
                return None
            value = value.get(attr) if isinstance(value, Mapping) else getattr(value, attr, None)
        return value

    return get


def _extract(
    extractor: Callable[[Call], Any], call: Call, what: str, event: EventRegistry, site: str
) -> Any:
    """Run a user's group_id/properties callable; its failure loses only what it computes."""
    try:
        return extractor(call)
    except Exception as exc:
        fallback = "the context's group" if what == "group_id" else "no properties"
        report_problem(
            f"invalid_{what}",
            f"the {what}= callable of @tracks on {site} raised {type(exc).__qualname__}; "
            f"{event.event_name} is sent with {fallback}",
            TrackingUsageError,
            event=event,
            site=site,
            error=exc,
        )
        return None


def _as_id(value: Any) -> str | None:
    text = value if isinstance(value, str) else str(value)
    return text or None


def _site(raw: Any) -> str:
    module = getattr(raw, "__module__", None) or "?"
    return f"{module}.{getattr(raw, '__qualname__', repr(raw))}"


def _is_async(raw: Any) -> bool:
    return inspect.iscoroutinefunction(raw) or (
        not inspect.isroutine(raw) and inspect.iscoroutinefunction(type(raw).__call__)
    )


def tracks(
    event: EventRegistry,
    *,
    group_level: str | None = None,
    group_id: GroupIdArg = None,
    properties: PropertiesSpec = None,
) -> Callable[[_F], _F]:
    """Track ``event`` each time the decorated function returns successfully.

    Args:
        event: The plan member, e.g. ``Events.REPORT_CREATED``.
        group_level: Optional restatement of the event's level; it must agree with the plan
            (a cheap check that the call site and the plan tell the same story).
        group_id: Where the group id of the event's level comes from when not from the
            context: a parameter name (``"project_id"``), a dotted path into a parameter or the
            result (``"report.project_id"``, ``"result.project.id"``), or a callable taking a
            :class:`Call`.
        properties: Event properties: a mapping, or a callable taking a :class:`Call`.

    Raises:
        TrackingUsageError: At decoration, if ``event`` is not a plan member, the target is a
            generator or not callable, or ``group_id`` names no parameter.
        UnknownGroupLevelError: At decoration, if ``group_level`` disagrees with the plan.
    """
    _check_arguments(event, group_level, properties)

    def decorate(func: _F) -> _F:
        raw: Any = func.__func__ if isinstance(func, (classmethod, staticmethod)) else func
        where = _site(raw)
        _check_target(func, raw, where)
        get_group = _group_getter(group_id, raw, where)
        wrapper = _make_wrapper(
            event, where, raw, get_group, properties, isinstance(func, staticmethod)
        )
        _spare_self_lookup(raw)
        target: Any = func
        tracked: Any = tracked_function_class()(target, wrapper)
        return cast(_F, tracked)

    return decorate


def _check_arguments(
    event: EventRegistry, group_level: str | None, properties: PropertiesSpec
) -> None:
    """Refuse, at decoration, an ``event``, ``group_level`` or ``properties`` that cannot work."""
    if not isinstance(event, EventRegistry):
        raise TrackingUsageError(
            f"@tracks takes a member of an EventRegistry (e.g. Events.REPORT_CREATED), got "
            f"{event!r}; define the event in the tracking plan first"
        )
    if group_level is not None and group_level != event.group_level:
        raise UnknownGroupLevelError(
            f"@tracks({event!r}, group_level={group_level!r}) disagrees with the plan, which "
            f"puts {event.event_name} at the {event.group_level!r} level ({event.spec.defined_at})"
        )
    if properties is not None and not (callable(properties) or isinstance(properties, Mapping)):
        raise TrackingUsageError(
            f"@tracks properties= takes a mapping or a callable, got {properties!r}"
        )


def _check_target(func: Any, raw: Any, where: str) -> None:
    """Refuse a generator function (no single moment of success) or something not callable."""
    if inspect.isgeneratorfunction(raw) or inspect.isasyncgenfunction(raw):
        raise TrackingUsageError(
            f"@tracks cannot decorate the generator function {where}: it has no single moment "
            "of success. Track from the code that consumes it, or call track() inside"
        )
    if not callable(raw):
        raise TrackingUsageError(f"@tracks needs a function, got {func!r}")


def _group_getter(group_id: GroupIdArg, raw: Any, where: str) -> Callable[[Call], Any] | None:
    """What reads the group id from a call: the callable given, a path getter, or ``None``."""
    if group_id is None or callable(group_id):
        return group_id
    if isinstance(group_id, str):
        return _path_getter(group_id, raw, where)
    raise TrackingUsageError(
        f"@tracks on {where}: group_id= takes a parameter name, a dotted path or a "
        f"callable, got {group_id!r}"
    )


def _spare_self_lookup(raw: Any) -> None:
    """Give a plain function ``__self__ = None``, which spares wrapt a failing lookup per call.

    wrapt's C wrapper looks up wrapped.__self__ on every call of a plain function to find a
    bound instance; the failing lookup (an AttributeError built and cleared) costs more than
    our whole emission. None is exactly what wrapt passes when the attribute is missing, so
    this changes no behaviour, only the cost (~0.4 us).
    """
    if type(raw) is types.FunctionType and "__self__" not in raw.__dict__:
        raw.__self__ = None  # type: ignore[attr-defined]


# --- the wrapper: built once per decorated function, its body runs on every call -------------
# Each builder below returns one closure; the per-call path is the closure's body alone.


def _make_wrapper(
    event: EventRegistry,
    site: str,
    raw: Any,
    get_group: Callable[[Call], Any] | None,
    properties: PropertiesSpec,
    is_static: bool,
) -> Callable[..., Any]:
    """Build the wrapt wrapper; the common case (nothing read from the call) is the shortest."""
    needs_call = get_group is not None or callable(properties)
    constant_props = dict(properties) if isinstance(properties, Mapping) else None
    if needs_call:
        details = _details_reader(
            event, site, raw, get_group, properties, constant_props, is_static
        )
        emit = _emitter_with_details(event, site, details)
    else:
        emit = _emitter(event, site, constant_props)
    if _is_async(raw):
        return _async_wrapper(emit)
    await_then_emit = _awaiter(emit)
    if needs_call:
        return _sync_wrapper(emit, await_then_emit)
    return _fast_wrapper(event, site, constant_props, await_then_emit)


#: What emits a call's event: ``(instance, args, kwargs, result) -> None``.
_Emit = Callable[[Any, tuple[Any, ...], dict[str, Any], Any], None]
#: What reads a call's group id and properties: ``(instance, args, kwargs, result)``.
_Details = Callable[
    [Any, tuple[Any, ...], dict[str, Any], Any],
    tuple[Union[str, None], Union[Mapping[str, Any], None]],
]


def _details_reader(
    event: EventRegistry,
    site: str,
    raw: Any,
    get_group: Callable[[Call], Any] | None,
    properties: PropertiesSpec,
    constant_props: dict[str, Any] | None,
    is_static: bool,
) -> _Details:
    """Build what reads a call's group id and properties (the signature is bound on first use)."""
    signature: list[inspect.Signature] = []  # computed on first need, then cached

    def call_details(
        instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any
    ) -> tuple[str | None, Mapping[str, Any] | None]:
        if not signature:
            signature.append(inspect.signature(raw))
        full = args if instance is None or is_static else (instance, *args)
        try:
            bound = signature[0].bind(*full, **kwargs)
            bound.apply_defaults()
            arguments: Mapping[str, Any] = bound.arguments
        except TypeError:
            arguments = dict(kwargs)
        call = Call(arguments, result)
        gid = _extract(get_group, call, "group_id", event, site) if get_group else None
        if callable(properties):
            props = _extract(properties, call, "properties", event, site)
        else:
            props = constant_props
        return (_as_id(gid) if gid is not None else None), props

    return call_details


def _emitter_with_details(event: EventRegistry, site: str, details: _Details) -> _Emit:
    """Build the emission of a call whose group id or properties are read from the call."""

    def emit(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> None:
        try:
            gid, props = details(instance, args, kwargs, result)
            emit_track(event, gid, props, site)
        except STRICT_ERRORS:
            raise
        except Exception as exc:
            try:  # noqa: SIM105 - suppress() is a call, which fails at the recursion limit too
                internal_error(exc, event, site)
            except Exception:  # at the recursion limit even the report fails: never raise
                pass

    return emit


def _emitter(event: EventRegistry, site: str, constant_props: dict[str, Any] | None) -> _Emit:
    """Build the emission of a call that reads nothing from it (constant properties, if any)."""

    def emit(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> None:
        try:
            emit_track(event, None, constant_props, site)
        except STRICT_ERRORS:
            raise
        except Exception as exc:
            try:  # noqa: SIM105 - suppress() is a call, which fails at the recursion limit too
                internal_error(exc, event, site)
            except Exception:  # at the recursion limit even the report fails: never raise
                pass

    return emit


class _Pending:
    """A coroutine a sync function returned, held by the coroutine that awaits it, then emits.

    A coroutine closed or cancelled before its first step runs none of its code, so it cannot
    close the one it would have awaited; dropping this holder does, and Python does not warn
    that that one "was never awaited" (as the undecorated function's coroutine would not).
    """

    __slots__ = ("coroutine",)

    def __init__(self, coroutine: types.CoroutineType[Any, Any, Any]) -> None:
        self.coroutine = coroutine

    def __del__(self) -> None:
        if inspect.getcoroutinestate(self.coroutine) == inspect.CORO_CREATED:
            self.coroutine.close()


def _awaiter(emit: _Emit) -> Callable[..., Any]:
    """Build the coroutine that awaits the coroutine a sync function returned, then emits."""

    async def await_then_emit(
        pending: _Pending, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        result = await pending.coroutine
        emit(instance, args, kwargs, result)
        return result

    return await_then_emit


def _async_wrapper(emit: _Emit) -> Callable[..., Any]:
    """Build the wrapper of a coroutine function: a coroutine that calls it, awaits, emits.

    The function is called when that coroutine first runs, as with any ``async def`` wrapper:
    one closed or cancelled before its first step leaves no coroutine of the function behind
    that "was never awaited", and bad arguments raise at the await.
    """

    async def async_wrapper(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        result = await wrapped(*args, **kwargs)
        emit(instance, args, kwargs, result)
        return result

    return async_wrapper


def _sync_wrapper(emit: _Emit, await_then_emit: Callable[..., Any]) -> Callable[..., Any]:
    """Build the wrapper of a sync function whose group id or properties come from the call."""

    def sync_wrapper(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        result = wrapped(*args, **kwargs)
        if type(result) is _COROUTINE:
            # A function hiding its async nature: emit after the await, not before the body.
            return await_then_emit(_Pending(result), instance, args, kwargs)
        emit(instance, args, kwargs, result)
        return result

    return sync_wrapper


def _fast_wrapper(
    event: EventRegistry,
    site: str,
    constant_props: dict[str, Any] | None,
    await_then_emit: Callable[..., Any],
) -> Callable[..., Any]:
    """Build the wrapper of the common case, reading nothing from the call: emission inlined."""

    def fast_wrapper(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        result = wrapped(*args, **kwargs)
        if type(result) is _COROUTINE:
            return await_then_emit(_Pending(result), instance, args, kwargs)
        try:
            emit_track(event, None, constant_props, site)
        except STRICT_ERRORS:
            raise
        except Exception as exc:
            try:  # noqa: SIM105 - suppress() is a call, which fails at the recursion limit too
                internal_error(exc, event, site)
            except Exception:  # at the recursion limit even the report fails: never raise
                pass
        return result

    return fast_wrapper

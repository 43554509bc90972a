"""Scopes: bind a context for a block or a call, or carry it to another thread.

:class:`bound_context` binds for a ``with`` block or each call of a decorated function;
:func:`with_current_context` captures the context now and runs a function inside it elsewhere.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from instrumentor._context import (
    AnalyticsContext,
    ContextToken,
    bind_context,
    context_var,
    reset_context,
)
from instrumentor.exceptions import TrackingUsageError

__all__ = ["bound_context", "with_current_context"]

_P = ParamSpec("_P")
_R = TypeVar("_R")
#: The tokens of the ``bound_context`` blocks entered in this execution context, innermost last.
_entered: contextvars.ContextVar[tuple[tuple[int, ContextToken], ...]] = contextvars.ContextVar(
    "instrumentor_bound_context", default=()
)


class bound_context:  # noqa: N801 - a context manager named like a function, as contextlib does
    """Bind context for a ``with`` block, or for every call of a decorated function.

    Takes the same keywords as :func:`bind_context`; the previous context is restored on exit,
    also when the block raises. As a decorator it works on sync and async functions; each call
    binds afresh, so one decorated function is safe to run concurrently.

    .. code-block:: python

        with bound_context(user_id="u_1", account_id="acc_1"):
            create_report(data)

        @bound_context(account_id="acc_system")
        async def nightly_job() -> None: ...
    """

    def __init__(self, **bindings: Any) -> None:
        self._bindings = bindings

    def __enter__(self) -> AnalyticsContext:
        token = bind_context(**self._bindings)
        # Tokens live in the context that entered, so one instance may be entered from many
        # threads and tasks at once (e.g. a module-level ``SYSTEM = bound_context(...)``).
        _entered.set((*_entered.get(), (id(self), token)))
        return context_var.get()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack = _entered.get()
        for index in range(len(stack) - 1, -1, -1):
            if stack[index][0] == id(self):
                _entered.set(stack[:index] + stack[index + 1 :])
                reset_context(stack[index][1])
                return

    def __call__(self, func: Callable[_P, _R]) -> Callable[_P, _R]:
        """Decorate ``func`` so that every call runs with these bindings."""
        bindings = self._bindings
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise TrackingUsageError(
                f"@bound_context cannot decorate the generator function {func.__qualname__}: "
                "its body runs after the call returns. Use `with bound_context(...)` inside it"
            )
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                token = bind_context(**bindings)
                try:
                    return await func(*args, **kwargs)
                finally:
                    reset_context(token)

            return run_async  # type: ignore[return-value]

        @functools.wraps(func)
        def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            token = bind_context(**bindings)
            try:
                return func(*args, **kwargs)
            finally:
                reset_context(token)

        return run


def with_current_context(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Capture the context now, and run ``func`` inside it wherever it is called.

    Thread pools do not inherit context variables (``asyncio.to_thread`` does, a bare
    ``executor.submit`` or ``loop.run_in_executor`` does not). Wrap the function when handing
    it over::

        executor.submit(with_current_context(export_report), report_id)

    Every context variable is carried, not only instrumentor's: the current OpenTelemetry span
    too, so events tracked in the pool land on the request's trace. Each call runs in its own
    copy, so one wrapped function may run in several threads at once.
    """
    captured = contextvars.copy_context()

    @functools.wraps(func)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        return captured.copy().run(func, *args, **kwargs)

    return run

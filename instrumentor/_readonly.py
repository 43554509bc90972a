"""A read-only dict: ``dict``'s own fast ``get`` and iteration, and no way to change it."""

from __future__ import annotations

from typing import Any, NoReturn, TypeVar

__all__ = ["ReadOnlyDict"]

_K = TypeVar("_K")
_V = TypeVar("_V")


class ReadOnlyDict(dict[_K, _V]):
    """A dict that refuses changes once made (a context's group ids, read on every track).

    Unlike ``types.MappingProxyType`` its ``get`` is ``dict.get`` itself, with no indirection.
    """

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:  # every mutating method
        raise TypeError("this mapping is read-only (a context's group ids: bind_context() binds)")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self),))  # copies and pickles build a new one whole

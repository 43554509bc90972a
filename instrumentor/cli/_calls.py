"""The analytics SDKs ``lint`` knows: their modules, track calls, and where the event name goes."""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping

__all__ = [
    "DEFINERS",
    "FALLBACK_KEYWORDS",
    "FALLBACK_METHODS",
    "SDK_MODULES",
    "SIGNATURES",
    "dotted",
    "dynamic_kind",
    "event_argument",
    "literal",
    "looks_like_event_name",
    "posthog_slot",
    "str_constant",
]

#: Top-level modules of analytics SDKs, and the SDK each belongs to.
SDK_MODULES: Mapping[str, str] = {
    "segment": "segment",
    "analytics": "segment",  # analytics-python, segment's old package name
    "posthog": "posthog",
    "mixpanel": "mixpanel",
    "amplitude": "amplitude",
    "rudderstack": "rudderstack",
    "rudder_analytics": "rudderstack",
}

#: (SDK, callable name) -> (positional slot of the event name, keywords that may carry it).
SIGNATURES: Mapping[tuple[str, str], tuple[int, tuple[str, ...]]] = {
    ("instrumentor", "track"): (0, ("event",)),
    ("instrumentor", "tracks"): (0, ("event",)),
    ("segment", "track"): (1, ("event",)),
    ("rudderstack", "track"): (1, ("event",)),
    ("mixpanel", "track"): (1, ("event_name",)),
    ("amplitude", "track"): (0, ("event",)),
    ("amplitude", "BaseEvent"): (0, ("event_type",)),
    # posthog: capture(distinct_id, event) before 6.0, capture(event, distinct_id=...) since.
    ("posthog", "capture"): (1, ("event",)),
}
FALLBACK_METHODS = frozenset({"track", "capture"})
FALLBACK_KEYWORDS = ("event", "event_name", "event_type")
#: The callables that define an event in a plan (``from instrumentor import event``).
DEFINERS = frozenset(
    {"instrumentor.event", "instrumentor.plan.event", "instrumentor._registry.event"}
)

# Object_Action in Title_Case ("Report_Created", "API_Key_Rotated") or Title Case words
# ("Order Completed", Segment's style): two or more capitalised words, some lower case.
_EVENT_LIKE = re.compile(
    r"[A-Z][A-Za-z0-9]*(?:_[A-Z][A-Za-z0-9]*)+|[A-Z][A-Za-z0-9]*(?: [A-Z][A-Za-z0-9]*)+"
)


def looks_like_event_name(text: str) -> bool:
    """Whether ``text`` is shaped like an event name: ``Object_Action`` or ``Title Case Words``.

    ``"photo.jpg"``, ``"express"``, ``"1Z999AA10123456784"`` and ``"MAX_SIZE"`` are not.
    """
    return _EVENT_LIKE.fullmatch(text) is not None and not text.isupper()


def dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for a chain of attributes on a name, else ``None``."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def str_constant(node: ast.expr | None) -> str | None:
    """The value of a string constant, else ``None``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def dynamic_kind(node: ast.expr) -> str | None:
    """How ``node`` builds a string at run time, or ``None`` if it does not look like it."""
    if isinstance(node, ast.JoinedStr):
        return "an f-string"
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return "concatenation"
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        return "%-formatting"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr == "format":
            return "str.format()"
        if node.func.attr == "join" and str_constant(node.func.value) is not None:
            return "str.join()"
    return None


def literal(node: ast.expr) -> str | None:
    """The string ``node`` always evaluates to (a constant, or an f-string without fields)."""
    if isinstance(node, ast.JoinedStr) and all(isinstance(v, ast.Constant) for v in node.values):
        return "".join(str(v.value) for v in node.values if isinstance(v, ast.Constant))
    return str_constant(node)


def event_argument(call: ast.Call, slot: int, keywords: tuple[str, ...]) -> ast.expr | None:
    """The argument in ``slot`` or passed as one of ``keywords`` (``None`` when absent)."""
    for keyword in call.keywords:
        if keyword.arg in keywords:
            return keyword.value
    before = call.args[: slot + 1]
    if len(call.args) <= slot or any(isinstance(a, ast.Starred) for a in before):
        return None
    return call.args[slot]


def posthog_slot(call: ast.Call) -> int:
    """The event's position in ``capture()``: 1 before posthog 6 (``distinct_id`` first), else 0."""
    new_style = any(k.arg == "distinct_id" for k in call.keywords) or len(call.args) < 2
    return 0 if new_style else 1

"""One module's walk for ``lint``: what its names refer to, then the findings on its nodes."""

from __future__ import annotations

import ast
import difflib
import importlib.util
from collections import Counter
from typing import Any

from instrumentor.cli._calls import (
    DEFINERS,
    FALLBACK_KEYWORDS,
    FALLBACK_METHODS,
    SDK_MODULES,
    SIGNATURES,
    dotted,
    dynamic_kind,
    event_argument,
    literal,
    posthog_slot,
    str_constant,
)
from instrumentor.cli._common import Finding, Severity
from instrumentor.cli._index import ModuleScan, PlanIndex, RegistryInfo

__all__ = ["ModuleWalk"]

_DYNAMIC_HINT = (
    "an event name is fixed: define each event in the plan, use Events.X, and put the variable "
    "part in properties"
)


#: The nodes that bind names (the first pass), and those the second pass checks.
_BINDING = frozenset({ast.Import, ast.ImportFrom, ast.ClassDef, ast.Assign, ast.AnnAssign})
_CHECKED = frozenset({ast.Call, ast.Attribute, ast.Subscript, ast.Constant})
# Fields that never hold a node the scan needs (names, flags, contexts, operators, aliases).
_SCALAR_FIELDS = frozenset(
    {"ctx", "op", "ops", "id", "attr", "name", "names", "arg", "asname", "module", "level"}
    | {"kind", "type_comment", "is_async", "conversion", "simple", "kwd_attrs", "rest", "tag"}
)
_CHILD_FIELDS: dict[type, tuple[str, ...]] = {ast.Constant: (), ast.Name: ()}


def _nodes(tree: ast.AST) -> tuple[list[Any], list[Any]]:
    """The nodes that bind names, and those to check, breadth first (a call before its arguments).

    ``ast.walk``, about twice as fast: no generators, and fields that hold no node are skipped.
    """
    queue: list[Any] = [tree]
    binding: list[Any] = []
    checked: list[Any] = []
    for node in queue:  # grows while iterating
        cls = type(node)
        fields = _CHILD_FIELDS.get(cls)
        if fields is None:
            if not isinstance(node, ast.AST):  # None in Dict.keys, a str in a list
                continue
            fields = tuple(f for f in cls._fields if f not in _SCALAR_FIELDS)
            _CHILD_FIELDS[cls] = fields
        if cls in _CHECKED:
            checked.append(node)
        elif cls in _BINDING:
            binding.append(node)
        for name in fields:
            value = getattr(node, name, None)
            if type(value) is list:
                queue.extend(value)
            elif value is not None:
                queue.append(value)
    return binding, checked


def _callee(call: ast.Call, sdk: str | None) -> str:
    """How findings name the called function: ``analytics.track() (segment)``."""
    shown = f"{ast.unparse(call.func)}()"
    return shown if sdk in (None, "instrumentor") else f"{shown} ({sdk})"


class ModuleWalk:
    """One module's names (imports, registry classes, SDK client instances) and its walk."""

    def __init__(
        self,
        tree: ast.Module,
        source: bytes,
        path: str,
        plan: PlanIndex,
        result: ModuleScan,
        *,
        module: str | None,
        own: frozenset[str],
    ) -> None:
        self.tree = tree
        self.source = source
        self.path = path
        self.plan = plan
        self.result = result
        self.module = module.removesuffix(".__init__") if module else None
        self.package = module.rpartition(".")[0] if module else None  # for relative imports
        self.own = own | {info.module.partition(".")[0] for info in plan.registries}
        self.sdks = {name: sdk for name, sdk in SDK_MODULES.items() if name not in self.own}
        self.aliases: dict[str, str] = {}  # local name -> what it refers to, dotted
        self.instances: dict[str, str] = {}  # "ph", "self.client" -> dotted class, unresolved
        self.constants: dict[str, str] = {}  # module-level NAME = "text"
        self.bindings: Counter[str] | None = None  # how often each name is bound (lazily)
        self.imports: list[tuple[ast.stmt, str]] = []  # (statement, imported module)
        self.skip: set[int] = set()  # ids of nodes inside event definitions
        self.lines: list[bytes] | None = None  # UTF-8 lines, for columns (lazily)
        self.binding, self.checked = _nodes(tree)

    def finding(
        self, rule: str, node: ast.AST, message: str, hint: str, severity: Severity = "error"
    ) -> None:
        line = getattr(node, "lineno", 0)
        self.result.findings.append(
            Finding(
                rule,
                message,
                path=self.path,
                line=line,
                column=self.column(line, getattr(node, "col_offset", -1)),
                hint=hint,
                severity=severity,
            )
        )

    def column(self, line: int, offset: int) -> int:
        """The 1-based character column of the UTF-8 byte ``offset`` that ``ast`` reports."""
        if offset < 0:
            return 0
        if self.source.isascii():
            return offset + 1
        if self.lines is None:  # as the parser reads it: declared encoding, universal newlines
            text = importlib.util.decode_source(self.source)
            self.lines = [part.encode("utf-8", "surrogatepass") for part in text.split("\n")]
        text_line = self.lines[line - 1] if 0 < line <= len(self.lines) else b""
        return len(text_line[:offset].decode("utf-8", "replace")) + 1

    def bind(self) -> None:
        """First pass: what every name of the module refers to."""
        for node in self.binding:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    self.imports.append((node, alias.name))
                    head = alias.name.partition(".")[0]
                    self.aliases[alias.asname or head] = alias.name if alias.asname else head
            elif isinstance(node, ast.ImportFrom):
                base = self.absolute(node.module, node.level)
                if node.level == 0 and node.module:
                    self.imports.append((node, node.module))
                joiner = "" if base.endswith(".") else "."
                for alias in node.names:
                    if alias.name == "*":
                        self.star(base)
                    else:
                        self.aliases[alias.asname or alias.name] = f"{base}{joiner}{alias.name}"
            elif isinstance(node, ast.ClassDef) and self.defines_registry(node):
                self.skip.update(id(n) for n in ast.walk(node))  # its strings are definitions
                if self.module is not None:
                    self.aliases.setdefault(node.name, f"{self.module}.{node.name}")
            elif isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Call):
                cls = dotted(node.value.func)
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    name = dotted(target)
                    if cls is not None and name is not None:
                        self.instances[name] = cls
        for statement in self.tree.body:
            if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
                target, value = statement.targets[0], statement.value
            elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
                target, value = statement.target, statement.value
            else:
                continue
            text = str_constant(value)
            if isinstance(target, ast.Name) and text is not None:
                self.constants[target.id] = text

    def absolute(self, module: str | None, level: int) -> str:
        """The module an import names, a relative one resolved from this module's package.

        Left relative, with its dots, when the package is unknown.
        """
        name = module or ""
        if level == 0:
            return name
        parts = self.package.split(".") if self.package else []
        if self.package is None or level - 1 > len(parts):
            return "." * level + name
        resolved = ".".join([*parts[: len(parts) - level + 1], *([name] if name else [])])
        return resolved or "." * level

    def star(self, module: str) -> None:
        """``from MODULE import *``: instrumentor's names, or a plan module's registries."""
        if module in ("instrumentor", "instrumentor._registry"):
            for name in ("event", "track", "tracks"):
                self.aliases[name] = f"instrumentor.{name}"
        if module == "instrumentor.plan":
            self.aliases["event"] = "instrumentor.event"
        for info in self.plan.registries:
            if module in (info.module, info.module.rpartition(".")[0]):
                self.aliases[info.qualname] = info.key

    def defines_registry(self, node: ast.ClassDef) -> bool:
        """Whether ``node`` defines a registry class of the plan (this module is its home).

        With the module unknown: a class of a registry's name deriving from ``EventRegistry``.
        """
        candidates = self.plan.by_class.get(node.name, ())
        if self.module is not None:
            return any(c.module == self.module for c in candidates)
        bases = (dotted(base) or "" for base in node.bases)
        return bool(candidates) and any(b.rpartition(".")[2] == "EventRegistry" for b in bases)

    def resolve(self, node: ast.expr) -> str | None:
        """The dotted name ``node`` refers to through imports and instances, if known."""
        if isinstance(node, ast.Attribute):
            owner = node.value
            if isinstance(owner, ast.Call):  # Posthog(...).capture(...)
                cls = self.resolve(owner.func)
                return f"{cls}.{node.attr}" if cls else None
            owner_name = dotted(owner)
            if owner_name is not None and owner_name in self.instances:
                cls = self.resolve_text(self.instances[owner_name])
                return f"{cls}.{node.attr}" if cls else None
        text = dotted(node)
        return self.resolve_text(text) if text is not None else None

    def resolve_text(self, text: str) -> str | None:
        head, dot, rest = text.partition(".")
        target = self.aliases.get(head)
        return None if target is None else target + dot + rest

    def text(self, node: ast.expr) -> tuple[str | None, str | None]:
        """The string ``node`` always is, and the module-level constant it is read from."""
        text = literal(node)
        if text is not None or not isinstance(node, ast.Name) or node.id not in self.constants:
            return text, None
        if self.bindings is None:  # a constant is one that nothing rebinds
            self.bindings = Counter()
            for n in ast.walk(self.tree):
                if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load):
                    self.bindings[n.id] += 1
                elif isinstance(n, ast.arg):
                    self.bindings[n.arg] += 1
        if self.bindings[node.id] != 1:
            return None, None
        return self.constants[node.id], node.id

    def registries(self, node: ast.expr) -> tuple[RegistryInfo, ...]:
        """The plan registries ``node`` refers to, by class name and the module it comes from.

        Only a relative import that lint cannot resolve matches by the class name alone; a local
        class or an absolute import of another module is never a registry of the plan.
        """
        by_class = self.plan.by_class
        if isinstance(node, ast.Name):
            target = self.aliases.get(node.id)
        elif isinstance(node, ast.Attribute) and node.attr in by_class:
            target = self.resolve_text(dotted(node) or "")
        else:
            return ()
        if target is None:
            return ()
        module, _, name = target.rpartition(".")
        candidates = by_class.get(name, ())
        relative = module.startswith(".")
        module = module.lstrip(".")
        narrowed = tuple(
            c
            for c in candidates
            if module
            and (f"{c.module}.".startswith(f"{module}.") or module.startswith(f"{c.module}."))
        )
        return narrowed or (candidates if relative else ())

    def check_imports(self, may_import_sdks: bool, package_hint: str) -> None:
        if may_import_sdks:
            return
        for statement, module in self.imports:
            sdk = self.sdks.get(module.partition(".")[0])
            if sdk is not None:
                self.finding(
                    "direct-sdk-import",
                    statement,
                    f"imports the {sdk} SDK ({module}) outside the analytics package",
                    package_hint,
                )

    def walk(self) -> None:
        """Second pass: calls, registry references and literal event names."""
        names = self.plan.labels
        for node in self.checked:
            cls = type(node)  # the parser's classes, never subclasses: quicker than isinstance
            if cls is ast.Constant:
                value = node.value
                if type(value) is str and value in names and id(node) not in self.skip:
                    self.result.used_names.add(value)
            elif cls is ast.Call:
                self.call(node)
            elif cls is ast.Attribute:
                self.member(node.value, node.attr, node)
            elif self.registries(node.value):  # a subscript
                self.lookup(node.value, node.slice, node)

    def member(self, owner: ast.expr, attr: str, node: ast.expr) -> None:
        candidates = self.registries(owner)
        if not candidates:
            return
        known = [c for c in candidates if attr in c.members]
        for info in known:
            self.result.used_members.add((info.key, attr))
        if known or attr.startswith("_") or any(attr in c.attributes for c in candidates):
            return
        members = sorted({m for c in candidates for m in c.members})
        by_event = {n: m for c in candidates for m, n in c.members.items()}
        close = difflib.get_close_matches(attr.upper(), members, n=1) or [
            by_event[n] for n in difflib.get_close_matches(attr, list(by_event), n=1)
        ]
        owner_text = ast.unparse(owner)
        self.finding(
            "unknown-event",
            node,
            f"{owner_text}.{attr} is not an event of the plan ({candidates[0].key})",
            f"did you mean {owner_text}.{close[0]}?"
            if close
            else f"define it in {candidates[0].module} first, or use one of its events",
        )

    def call(self, call: ast.Call) -> None:
        func = call.func
        target = self.resolve(func)
        if target in DEFINERS:  # event(...) in the plan: its strings are definitions
            for part in [*call.args, *(k.value for k in call.keywords)]:
                self.skip.update(id(n) for n in ast.walk(part))
            return
        if isinstance(func, ast.Name) and func.id == "getattr" and len(call.args) >= 2:
            if target is None and self.registries(call.args[0]):
                self.lookup(call.args[0], call.args[1], call)
            return
        if isinstance(func, ast.Attribute) and func.attr == "by_name" and call.args:
            if self.registries(func.value):
                self.lookup(func.value, call.args[0], call, by_name=True)
            return
        head = (target or "").partition(".")[0]
        name = target.rpartition(".")[2] if target else ""
        sdk = "instrumentor" if head == "instrumentor" else self.sdks.get(head)
        signature = SIGNATURES.get((sdk, name)) if sdk is not None else None
        # The fallback: a .track(/.capture( whose receiver is unknown (a parameter, a relative
        # import) or the project's own code (its wrapper), never another library's object.
        fallback = (
            sdk is None
            and isinstance(func, ast.Attribute)
            and func.attr in FALLBACK_METHODS
            and (target is None or not head or head in self.own)
        )
        if signature is not None:
            slot, keywords = signature
        elif fallback:
            name = func.attr if isinstance(func, ast.Attribute) else name
            slot, keywords = (0 if len(call.args) < 2 else 1), FALLBACK_KEYWORDS
        else:
            return
        if name == "capture":
            slot = posthog_slot(call)
        argument = event_argument(call, slot, keywords)
        if argument is not None:
            self.report_argument(call, argument, sdk, fallback=fallback)

    def lookup(
        self, owner: ast.expr, key: ast.expr, node: ast.expr, *, by_name: bool = False
    ) -> None:
        """``Events[key]``, ``getattr(Events, key)`` or ``Events.by_name(key)``."""
        text, _ = self.text(key)
        if text is not None:
            (self.by_name if by_name else self.member)(owner, text, node)
            return
        candidates = self.registries(owner)
        self.result.dynamic_lookups.update(c.key for c in candidates)
        shown = ast.unparse(node)
        self.finding(
            "dynamic-event-lookup",
            node,
            f"{shown if len(shown) <= 60 else shown[:57] + '...'} looks an event up by a name "
            "known only at run time",
            "unused-event cannot see which events a dynamic lookup reaches, so it skips the "
            f"events of {', '.join(c.key for c in candidates)}; use {ast.unparse(owner)}.X where "
            "the event is known, or keep this lookup with a reasoned suppression",
            severity="warning",
        )

    def by_name(self, owner: ast.expr, event_name: str, node: ast.expr) -> None:
        candidates = self.registries(owner)
        for info in candidates:
            for member, name in info.members.items():
                if name == event_name:
                    self.result.used_members.add((info.key, member))
                    return
        close = difflib.get_close_matches(event_name, self.plan.labels, n=1)
        self.finding(
            "unknown-event",
            node,
            f"{event_name!r} is not an event name of the plan ({candidates[0].key})",
            f"did you mean {close[0]!r}?" if close else "define it in the plan first",
        )

    def report_argument(
        self, call: ast.Call, argument: ast.expr, sdk: str | None, *, fallback: bool
    ) -> None:
        text, constant = self.text(argument)
        if text is not None:
            if fallback and not self.plan.event_like(text):
                return  # another method of that name, most likely: "photo.jpg", "express"
            origin = f" (the constant {constant})" if constant else ""
            self.finding(
                "inline-event-name",
                argument,
                f"event name {text!r}{origin} written inline in {_callee(call, sdk)}",
                self.plan.inline_hint(text),
            )
            return
        kind = None if fallback else dynamic_kind(argument)
        if kind is not None:
            self.finding(
                "dynamic-event-name",
                argument,
                f"event name built at run time ({kind}) in {_callee(call, sdk)}",
                _DYNAMIC_HINT,
            )

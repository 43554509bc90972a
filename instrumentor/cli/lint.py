"""``instrumentor lint PATH...``: the application's code against the tracking plan.

Scans Python files with ``ast`` (nothing is imported but the plan) and reports, with file, line
and a hint, what :data:`RULES` describes. Exit code 0 when no error was found, 1 otherwise (and
for a plan that is invalid, e.g. a duplicate name), 2 for a usage or set-up problem.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from instrumentor.cli._common import (
    EXIT_FINDINGS,
    EXIT_OK,
    CLIError,
    Finding,
    add_plan_option,
    definition_site,
    find_pyproject,
    print_findings,
    tool_config,
)
from instrumentor.cli._scan import ModuleScan, PlanIndex, RegistryInfo, scan_module
from instrumentor.cli._source import Plan, load_plan
from instrumentor.cli._suppress import Suppression, apply_suppressions, read_suppressions

__all__ = ["DEFAULT_SKIP", "RULES", "register"]

#: Every rule ``lint`` reports, with what it finds.
RULES = {
    "inline-event-name": "an event name written as a string in a track call (instrumentor or SDK)",
    "dynamic-event-name": "an event name built at run time (f-string, +, %, .format())",
    "unknown-event": "Events.X (or Events['X'], Events.by_name('X')) that the plan does not define",
    "unused-event": "an event the plan defines that no scanned code refers to",
    "direct-sdk-import": "an analytics SDK imported outside the analytics package",
    "syntax-error": "a file that does not parse (it is not linted)",
    "unreadable-file": "a file that cannot be read",
    "suppression-without-reason": "an ignore comment without '-- reason'",
    "unused-suppression": "an ignore comment that silences nothing",
}
_NEEDS_PLAN = frozenset({"unknown-event", "unused-event"})

#: Directories never descended into.
DEFAULT_SKIP = frozenset({".venv", "venv", "node_modules", ".git", "__pycache__", "build", "dist"})


def register(commands: Any) -> None:
    """Add ``lint`` to the top-level parser."""
    lint = commands.add_parser(
        "lint",
        help="check the code against the plan: inline, dynamic and unknown event names, ...",
        description="Scan Python files for event names that bypass the tracking plan.",
        epilog="rules:\n" + "\n".join(f"  {rule:27} {text}" for rule, text in RULES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lint.add_argument("paths", nargs="*", metavar="PATH", default=["."], help="default: .")
    add_plan_option(lint)
    lint.add_argument("--format", choices=["text", "json", "github"], default="text")
    lint.add_argument(
        "--unused",
        choices=["error", "warning", "off"],
        default="warning",
        help="how to report plan events no scanned code uses (default: warning)",
    )
    lint.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="skip matching paths (repeatable; added to [tool.instrumentor] exclude)",
    )
    lint.add_argument(
        "--analytics-package",
        metavar="PATH",
        help="the package that may import analytics SDKs, e.g. app/analytics or app.analytics "
        "(default: [tool.instrumentor] analytics_package)",
    )
    lint.set_defaults(handler=_lint, prints_findings=True)


def _strings(settings: dict[str, Any], key: str) -> list[str]:
    value = settings.get(key, [])
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise CLIError(f"[tool.instrumentor] {key} must be a string or a list of strings")


def _excluded(relative: str, patterns: Sequence[str]) -> bool:
    """Whether ``relative`` (to the project root) matches an exclude glob.

    A pattern with a ``/`` matches the path or one of its parent folders, from the root
    (``app/legacy``, ``app/*/migrations``); one without matches any single component
    (``migrations``, ``*_pb2.py``).
    """
    parts = relative.split("/")
    for pattern in patterns:
        pattern = pattern.strip().removeprefix("./").rstrip("/")
        if "/" in pattern:
            prefixes = ("/".join(parts[: i + 1]) for i in range(len(parts)))
            if any(fnmatchcase(prefix, pattern) for prefix in prefixes):
                return True
        elif any(fnmatchcase(part, pattern) for part in parts):
            return True
    return False


def _relative(path: str, base: str) -> str:
    """``path`` (absolute) relative to ``base`` with ``/`` separators, else ``path`` itself."""
    if path == base:
        return ""
    if path.startswith(base + os.sep):
        path = path[len(base) + 1 :]
    return path.replace(os.sep, "/")


class _Layout:
    """Paths as the rules see them.

    Exclude globs and the analytics package are relative to the project root (the folder of
    pyproject.toml, else the working directory); findings show paths relative to the working
    directory.
    """

    def __init__(self, root: Path, patterns: Sequence[str], packages: Sequence[str]) -> None:
        self.root = str(root)
        self.cwd = os.getcwd()
        self.patterns = patterns
        self.packages = [
            (p if "/" in p or p.endswith(".py") else p.replace(".", "/")).strip("/")
            for p in packages
        ]

    def shown(self, path: str) -> str:
        """What findings show for the absolute ``path``."""
        return _relative(path, self.cwd)

    def in_package(self, path: str) -> bool:
        """Whether the absolute ``path`` belongs to the analytics package."""
        relative = _relative(path, self.root)
        return any(
            relative in (p, f"{p}.py") or relative.startswith(f"{p}/") for p in self.packages
        )

    def files(self, paths: Sequence[str]) -> Iterator[str]:
        """The absolute paths of the Python files to lint (named files always), each once."""
        seen: set[str] = set()
        for path in self._files(paths):
            if path not in seen:
                seen.add(path)
                yield path

    def _files(self, paths: Sequence[str]) -> Iterator[str]:
        for given in paths:
            start = os.path.abspath(given)
            if os.path.isfile(start):
                if not _excluded(_relative(start, self.root), self.patterns):
                    yield start
                continue
            if not os.path.isdir(start):
                raise CLIError(f"{given}: no such file or directory")
            for folder, dirs, files in os.walk(start):
                relative = _relative(folder, self.root)
                relative = f"{relative}/" if relative else ""
                dirs[:] = sorted(
                    d
                    for d in dirs
                    if d not in DEFAULT_SKIP and not _excluded(f"{relative}{d}", self.patterns)
                )
                for name in sorted(files):
                    if name.endswith(".py") and not _excluded(f"{relative}{name}", self.patterns):
                        yield os.path.join(folder, name)


def _plan_index(plan: Plan | None) -> PlanIndex:
    if plan is None:
        return PlanIndex()
    infos = []
    for registry in plan.registries:
        members = {member.name: member.event_name for member in registry}
        infos.append(
            RegistryInfo(
                registry.__qualname__,
                registry.__module__,
                members,
                frozenset(name for cls in registry.__mro__ for name in vars(cls)) - set(members),
            )
        )
    return PlanIndex(tuple(infos))


def _unused(plan: Plan, scans: Sequence[ModuleScan], severity: str) -> list[Finding]:
    members = set().union(*(s.used_members for s in scans))
    names = set().union(*(s.used_names for s in scans))
    findings = []
    for member in plan.events:
        registry = type(member)
        key = (f"{registry.__module__}.{registry.__qualname__}", member.name)
        if key in members or member.event_name in names:
            continue
        path, line = definition_site(member.spec.defined_at)
        findings.append(
            Finding(
                "unused-event",
                f"{registry.__qualname__}.{member.name} ({member.event_name!r}) is in the plan "
                "but no scanned code refers to it",
                path=path,
                line=line,
                hint="track it where the action happens, e.g. "
                f"@tracks({registry.__qualname__}.{member.name}), or remove it from the plan",
                severity="error" if severity == "error" else "warning",
            )
        )
    return findings


def _load(args: argparse.Namespace, settings: dict[str, Any]) -> Plan | None:
    if args.plan or settings.get("plan"):
        try:
            return load_plan(args.plan)
        except CLIError as exc:  # name the definition sites as findings do: relative paths
            here = f"{Path.cwd().resolve()}{os.sep}"
            raise CLIError(str(exc).replace(here, ""), exc.exit_code) from None
    print(
        "instrumentor lint: no tracking plan configured (--plan, or [tool.instrumentor] plan "
        "in pyproject.toml): unknown-event and unused-event do not run, and inline names get "
        "no Events.X hint",
        file=sys.stderr,
    )
    return None


def _lint(args: argparse.Namespace) -> int:
    pyproject = find_pyproject()
    settings = tool_config(pyproject)
    root = (pyproject.parent if pyproject else Path.cwd()).resolve()
    plan = _load(args, settings)
    index = _plan_index(plan)
    patterns = [*_strings(settings, "exclude"), *args.exclude]
    configured = [args.analytics_package] if args.analytics_package else None
    packages = configured or _strings(settings, "analytics_package")
    layout = _Layout(root, patterns, packages)
    package_hint = (
        f"import SDKs only in {', '.join(packages)} (the analytics package); track with Events.X"
        if packages
        else "track with Events.X; if this file belongs to your analytics package, set "
        "[tool.instrumentor] analytics_package (or pass --analytics-package)"
    )
    scans: list[ModuleScan] = []
    suppressions: dict[str, dict[int, Suppression]] = {}
    findings: list[Finding] = []
    for path in layout.files(args.paths):
        shown = layout.shown(path)
        try:
            with open(path, "rb") as fh:
                source = fh.read()
        except OSError as exc:
            message = f"cannot read: {exc.strerror or exc}"
            findings.append(Finding("unreadable-file", message, path=shown))
            continue
        scan = scan_module(
            source,
            shown,
            index,
            may_import_sdks=layout.in_package(path),
            package_hint=package_hint,
        )
        scans.append(scan)
        findings.extend(scan.findings)
        suppressions[shown] = read_suppressions(source)
    scanned = list(suppressions)
    if not scanned and not findings:
        raise CLIError(
            f"no Python files to lint in {' '.join(args.paths)} (check the paths and the "
            "exclude patterns)"
        )
    if plan is not None and args.unused != "off":
        for finding in _unused(plan, scans, args.unused):
            if finding.path not in suppressions:  # the plan's file was not scanned
                try:
                    suppressions[finding.path] = read_suppressions(Path(finding.path).read_bytes())
                except OSError:
                    suppressions[finding.path] = {}
            findings.append(finding)
    rules_run = set(RULES) - (_NEEDS_PLAN if plan is None else set())
    if args.unused == "off":
        rules_run.discard("unused-event")
    findings = apply_suppressions(
        findings, suppressions, scanned=scanned, rules_run=rules_run, known_rules=RULES
    )
    findings.sort(key=lambda f: (f.path, f.line, f.column, f.rule))
    print_findings(findings, args.format)
    return EXIT_FINDINGS if any(f.severity == "error" for f in findings) else EXIT_OK

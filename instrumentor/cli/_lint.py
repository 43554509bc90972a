"""``instrumentor lint PATH...``: the application's code against the tracking plan.

Scans Python files with ``ast`` (nothing is imported but the plan) and reports, with file, line
and a hint, what :data:`RULES` describes. A file whose bytes were scanned before under the same
plan is not parsed again: its scan comes from the cache (:mod:`._lint_cache`). Exit code 0 when
no error was found, 1 otherwise (and for a plan that is invalid, e.g. a duplicate name), 2 for a
usage or set-up problem.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
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
from instrumentor.cli._files import (
    DEFAULT_SKIP,
    FileScan,
    Layout,
    ScanJob,
    default_jobs,
    scan_files,
)
from instrumentor.cli._lint_cache import ENV_VAR, LintCache, scan_cached
from instrumentor.cli._scan import ModuleScan, PlanIndex, RegistryInfo
from instrumentor.cli._source import Plan, load_plan
from instrumentor.cli._suppress import Suppression, apply_suppressions, read_suppressions

__all__ = ["DEFAULT_SKIP", "RULES", "register"]

#: Every rule ``lint`` reports, with what it finds.
RULES = {
    "inline-event-name": "an event name written as a string in a track call (instrumentor or SDK)",
    "dynamic-event-name": "an event name built at run time (f-string, +, %, .format())",
    "unknown-event": "Events.X (or Events['X'], Events.by_name('X')) that the plan does not define",
    "dynamic-event-lookup": "Events[name], getattr(Events, name) or Events.by_name(name) with a "
    "run-time name (a warning; unused-event then skips that registry)",
    "unused-event": "an event the plan defines that no scanned code refers to",
    "direct-sdk-import": "an analytics SDK imported outside the analytics package",
    "syntax-error": "a file that does not parse (it is not linted)",
    "unparseable-file": "a file too deeply nested for Python's parser (it is not linted)",
    "unreadable-file": "a file that cannot be read",
    "suppression-without-reason": "an ignore comment without '-- reason'",
    "unused-suppression": "an ignore comment that silences nothing",
}
_NEEDS_PLAN = frozenset({"unknown-event", "unused-event", "dynamic-event-lookup"})


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
    lint.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="worker processes for trees of 500+ files (0: one per CPU; default 1: none, which "
        "is faster on a busy machine)",
    )
    lint.add_argument(
        "--no-cache",
        action="store_true",
        help="scan every file, and neither read nor write the cache of unchanged files' scans "
        f"(kept in ${ENV_VAR}/lint, default ~/.cache/instrumentor/lint on Linux, "
        "~/Library/Caches/instrumentor/lint on macOS, "
        "%%LOCALAPPDATA%%\\instrumentor\\Cache\\lint on Windows)",
    )
    lint.set_defaults(handler=_lint, prints_findings=True)


def _strings(settings: dict[str, Any], key: str) -> list[str]:
    value = settings.get(key, [])
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise CLIError(f"[tool.instrumentor] {key} must be a string or a list of strings")


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
    """The plan's events no scanned code refers to.

    None of a registry that code looks up by a run-time name (``dynamic-event-lookup`` warns
    there): lint cannot tell which events such a lookup reaches. Nor frontend events
    (``frontend=True``): the browser sends those through the track endpoint, and lint reads no
    JavaScript.
    """
    members = set().union(*(s.used_members for s in scans))
    names = set().union(*(s.used_names for s in scans))
    dynamic = set().union(*(s.dynamic_lookups for s in scans))
    findings = []
    for member in plan.events:
        registry = type(member)
        registry_key = f"{registry.__module__}.{registry.__qualname__}"
        if registry_key in dynamic or member.frontend:
            continue
        if (registry_key, member.name) in members or member.event_name in names:
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
        "in pyproject.toml): unknown-event, unused-event and dynamic-event-lookup do not run, "
        "and inline names get no Events.X hint",
        file=sys.stderr,
    )
    return None


def _scan(args: argparse.Namespace, layout: Layout, job: ScanJob) -> Iterable[FileScan]:
    """Every file's scan: from the cache when the file is unchanged (unless ``--no-cache``)."""
    tasks = layout.tasks(args.paths)
    jobs = args.jobs if args.jobs > 0 else default_jobs()
    cache = None if args.no_cache else LintCache.open(job, layout.root, layout.cwd)
    if cache is None:
        return scan_files(tasks, job, jobs)
    return scan_cached(tasks, job, jobs, cache)


def _lint(args: argparse.Namespace) -> int:
    pyproject = find_pyproject()
    settings = tool_config(pyproject)
    root = (pyproject.parent if pyproject else Path.cwd()).resolve()
    plan = _load(args, settings)
    index = _plan_index(plan)
    patterns = [*_strings(settings, "exclude"), *args.exclude]
    configured = [args.analytics_package] if args.analytics_package else None
    packages = configured or _strings(settings, "analytics_package")
    layout = Layout(root, patterns, packages)
    package_hint = (
        f"import SDKs only in {', '.join(packages)} (the analytics package); track with Events.X"
        if packages
        else "track with Events.X; if this file belongs to your analytics package, set "
        "[tool.instrumentor] analytics_package (or pass --analytics-package)"
    )
    job = ScanJob(index, package_hint, layout.project_modules())
    scans: list[ModuleScan] = []
    suppressions: dict[str, dict[int, Suppression]] = {}
    findings: list[Finding] = []
    for result in _scan(args, layout, job):
        findings.extend(result.scan.findings)
        if result.suppressions is not None:
            scans.append(result.scan)
            suppressions[result.path] = result.suppressions
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

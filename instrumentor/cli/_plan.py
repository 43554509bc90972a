"""``instrumentor plan show|export|check|lock|diff``: the tracking plan itself."""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path
from typing import Any

from instrumentor._naming import NAMING_RULES, check_event_name
from instrumentor._registry import EventSpec
from instrumentor.cli import _export, _lock
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
from instrumentor.cli._document import plan_document
from instrumentor.cli._source import Plan, load_plan

__all__ = ["check_plan", "register"]


def register(commands: Any) -> None:
    """Add ``plan`` and its subcommands to the top-level parser."""
    plan = commands.add_parser("plan", help="show, export, check, lock and diff the plan")
    sub = plan.add_subparsers(title="plan commands", metavar="COMMAND", required=True)

    show = sub.add_parser("show", help="print the plan as a table")
    add_plan_option(show)
    show.set_defaults(handler=_show)

    export = sub.add_parser(
        "export", help="write the plan as md, json, csv, yaml, jsonschema or ts"
    )
    add_plan_option(export)
    export.add_argument("--format", "-f", choices=_export.FORMATS, default="md")
    export.add_argument("--output", "-o", type=Path, help="write to this file (default: stdout)")
    export.set_defaults(handler=_export_command)

    check = sub.add_parser(
        "check", help="naming, descriptions, expired deprecations; exit 1 on errors"
    )
    add_plan_option(check)
    check.add_argument("--format", choices=["text", "json", "github"], default="text")
    check.add_argument(
        "--today", type=_dt.date.fromisoformat, help=argparse.SUPPRESS
    )  # tests pin the date of sunset checks
    check.set_defaults(handler=_check, prints_findings=True)

    _lock.register(sub)


def _load(args: argparse.Namespace) -> Plan:
    return load_plan(args.plan)


def _show(args: argparse.Namespace) -> int:
    plan = _load(args)
    rows = [
        (
            m.event_name + (" (deprecated)" if m.spec.deprecated else ""),
            m.category,
            m.group_level,
            "yes" if m.frontend else "",
            " ".join(m.description.split()),  # one line per event, whatever the description
        )
        for m in plan.events
    ]
    header = ("event", "category", "group level", "frontend", "description")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    print(f"plan: {', '.join(plan.sources)}")
    print(f"hierarchy: {' > '.join(plan.hierarchy.levels)}")
    print(f"{len(rows)} events\n")
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[4]]).rstrip())
    return EXIT_OK


def _export_command(args: argparse.Namespace) -> int:
    text = _export.render(plan_document(_load(args)), args.format)
    if args.output is None:
        sys.stdout.write(text)
    else:
        try:
            args.output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CLIError(f"cannot write {args.output}: {exc.strerror or exc}") from None
        print(
            f"wrote {args.output} ({args.format}, {len(text.encode('utf-8'))} bytes)",
            file=sys.stderr,
        )
    return EXIT_OK


def check_plan(
    plan: Plan, *, today: _dt.date | None = None, require_descriptions: bool = True
) -> list[Finding]:
    """Check ``plan`` beyond what the registry enforces at import.

    Finds: missing descriptions; deprecated events past their sunset (error), without a sunset
    or a replacement (warning), replaced by an event the plan does not define (error); and lists
    every waived naming rule with its reason (warning), so waivers stay visible in review, and
    waivers the name no longer needs (warning).
    """
    today = today or _dt.date.today()
    names = {m.event_name for m in plan.events}
    findings: list[Finding] = []
    for member in plan.events:
        spec = member.spec
        path, line = definition_site(spec.defined_at)
        label = f"{type(member).__qualname__}.{member.name} ({spec.name!r})"
        if require_descriptions and not spec.description.strip():
            findings.append(
                Finding(
                    "missing-description",
                    f"{label} has no description",
                    hint="say what the event means and when it fires: event(..., description=...)",
                    path=path,
                    line=line,
                )
            )
        if spec.deprecated is not None:
            findings += _deprecation_findings(label, spec, names, today, path, line)
        findings += _waiver_findings(label, spec, path, line)
    return findings


def _deprecation_findings(
    label: str, spec: EventSpec, names: set[str], today: _dt.date, path: str, line: int
) -> list[Finding]:
    """What is wrong with a deprecated event: sunset passed, open-ended, unknown replacement."""
    findings: list[Finding] = []
    if spec.sunset is not None and spec.sunset < today:
        findings.append(
            Finding(
                "deprecation-expired",
                f"{label} is deprecated and its sunset {spec.sunset.isoformat()} has passed",
                hint="remove the event and its call sites, or move the sunset date",
                path=path,
                line=line,
            )
        )
    if spec.sunset is None and spec.replaced_by is None:
        findings.append(
            Finding(
                "deprecation-open-ended",
                f"{label} is deprecated without a sunset date or a replacement",
                hint="add sunset='YYYY-MM-DD' or replaced_by='New_Event'",
                severity="warning",
                path=path,
                line=line,
            )
        )
    if spec.replaced_by is not None and spec.replaced_by not in names:
        findings.append(
            Finding(
                "unknown-replacement",
                f"{label} is replaced by {spec.replaced_by!r}, which the plan does not define",
                hint="define the replacement event, or fix the name",
                path=path,
                line=line,
            )
        )
    return findings


def _waiver_findings(label: str, spec: EventSpec, path: str, line: int) -> list[Finding]:
    """One finding per waiver: without a reason (error), in use or stale (warnings)."""
    broken = {v.rule for v in check_event_name(spec.name)}
    findings: list[Finding] = []
    for rule, reason in spec.waivers.items():
        if not str(reason).strip():  # the registry refuses these; a plan built otherwise may not
            findings.append(
                Finding(
                    "waiver-without-reason",
                    f"{label} waives {rule!r} without a reason",
                    path=path,
                    line=line,
                )
            )
        elif rule in broken:
            findings.append(
                Finding(
                    "naming-waived",
                    f"{label} breaks {rule!r} ({NAMING_RULES.get(rule, rule)}), waived: {reason}",
                    severity="warning",
                    path=path,
                    line=line,
                )
            )
        else:
            findings.append(
                Finding(
                    "stale-waiver",
                    f"{label} waives {rule!r}, but its name no longer breaks that rule",
                    hint="remove the waiver, so the rule guards the name again",
                    severity="warning",
                    path=path,
                    line=line,
                )
            )
    return findings


def _check(args: argparse.Namespace) -> int:
    plan = _load(args)
    required = tool_config(find_pyproject()).get("require_descriptions", True)
    if not isinstance(required, bool):
        raise CLIError(
            f"[tool.instrumentor] require_descriptions must be true or false, got {required!r}"
        )
    findings = check_plan(plan, today=args.today, require_descriptions=required)
    print_findings(findings, args.format)
    return EXIT_FINDINGS if any(f.severity == "error" for f in findings) else EXIT_OK

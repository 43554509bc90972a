"""``plan lock`` and ``plan diff``: a reviewed snapshot of the plan, and what changed since.

``plan lock`` writes ``instrumentor.lock.json`` (next to pyproject.toml, or ``[tool.instrumentor]
lock``). It refuses to record a breaking change unless ``--approve-breaking "why"`` is given; the
approval (its changes, reason and date) is kept in the lock, so the review sees it. ``plan diff``
compares the lock with the code's plan: exit 1 when a breaking change was not approved by
re-locking, 0 otherwise (a stale lock is reported, and fails with ``--strict``), 2 without a lock.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from instrumentor.cli._common import (
    EXIT_FINDINGS,
    EXIT_OK,
    CLIError,
    add_plan_option,
    find_pyproject,
    shown_path,
    tool_config,
)
from instrumentor.cli._diff import LOCK_VERSION, Change, classify, lock_content
from instrumentor.cli._document import plan_document
from instrumentor.cli._source import load_plan

__all__ = ["DEFAULT_LOCK", "register"]

DEFAULT_LOCK = "instrumentor.lock.json"
_APPROVE = 'instrumentor plan lock --approve-breaking "why"'


def register(sub: Any) -> None:
    """Add ``plan lock`` and ``plan diff`` to the ``plan`` subcommands."""
    lock = sub.add_parser(
        "lock", help="write the plan's lock file; breaking changes need --approve-breaking"
    )
    add_plan_option(lock)
    _add_lock_option(lock)
    lock.add_argument(
        "--approve-breaking",
        metavar="REASON",
        help="record breaking changes as approved, with this reason (kept in the lock file)",
    )
    lock.add_argument("--today", type=_dt.date.fromisoformat, help=argparse.SUPPRESS)
    lock.set_defaults(handler=_lock_command)

    diff = sub.add_parser(
        "diff", help="compare the plan with its lock file; exit 1 on unapproved breaking changes"
    )
    add_plan_option(diff)
    _add_lock_option(diff)
    diff.add_argument("--format", choices=["text", "json"], default="text")
    diff.add_argument(
        "--strict", action="store_true", help="also exit 1 when the lock is merely stale"
    )
    diff.set_defaults(handler=_diff_command)


def _add_lock_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lock",
        type=Path,
        metavar="FILE",
        help=f"the lock file (default: [tool.instrumentor] lock, or {DEFAULT_LOCK} next to "
        "pyproject.toml)",
    )


def _lock_path(given: Path | None) -> Path:
    if given is not None:
        return given
    pyproject = find_pyproject()
    configured = tool_config(pyproject).get("lock", DEFAULT_LOCK)
    if not isinstance(configured, str) or not configured:
        raise CLIError(f"{pyproject}: [tool.instrumentor] lock must be a file name")
    return (pyproject.parent if pyproject else Path.cwd()) / configured


def _read_lock(path: Path) -> dict[str, Any] | None:
    """The lock file's data, or ``None`` when there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CLIError(f"cannot read {shown_path(path)}: {exc.strerror or exc}") from None
    fix = "restore it from version control, or delete it and run `instrumentor plan lock`"
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CLIError(f"{shown_path(path)} is not JSON ({exc}): {fix}") from None
    if not isinstance(data, dict) or data.get("lock_version") != LOCK_VERSION:
        version = data.get("lock_version") if isinstance(data, dict) else None
        raise CLIError(
            f"{shown_path(path)} is not an instrumentor lock of version {LOCK_VERSION} "
            f"(lock_version {version!r}): {fix}"
        )
    problem = _lock_problem(data)
    if problem is not None:
        raise CLIError(f"{shown_path(path)} is damaged: {problem}: {fix}")
    return data


#: The fields of a locked event the diff reads, and the types they must have.
_EVENT_FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "category": (str,),
    "group_level": (str,),
    "description": (str,),
    "frontend": (bool,),
    "deprecated": (str, type(None)),
    "replaced_by": (str, type(None)),
    "sunset": (str, type(None)),
    "waivers": (dict,),
    "registry": (str,),
    "member": (str,),
}


def _lock_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with the structure of a parsed lock file, or ``None``."""
    hierarchy = data.get("group_hierarchy")
    if not isinstance(hierarchy, list) or not all(
        isinstance(entry, dict)
        and isinstance(entry.get("level"), str)
        and isinstance(entry.get("parent"), (str, type(None)))
        for entry in hierarchy
    ):
        return "group_hierarchy must be a list of {level, parent} objects"
    events = data.get("events")
    if not isinstance(events, list):
        return "events must be a list"
    for index, entry in enumerate(events):
        if not isinstance(entry, dict):
            return f"events[{index}] is not an object"
        for name, types in _EVENT_FIELDS.items():
            if name in entry and not isinstance(entry[name], types):
                return f"events[{index}].{name} has the wrong type"
        if not isinstance(entry.get("name"), str):
            return f"events[{index}] has no name"
    if not isinstance(data.get("approvals", []), list):
        return "approvals must be a list"
    return None


def _write_lock(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)  # a reader never sees half a lock
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise CLIError(f"cannot write {shown_path(path)}: {exc.strerror or exc}") from None


def _print_changes(changes: list[Change]) -> None:
    for change in changes:
        mark = "BREAKING" if change.breaking else "        "
        print(f"  {mark}  {change.message}")


def _lock_command(args: argparse.Namespace) -> int:
    path = _lock_path(args.lock)
    reason = args.approve_breaking
    if reason is not None and not reason.strip():
        raise CLIError("--approve-breaking needs a reason, e.g. --approve-breaking 'v2 launch'")
    content = lock_content(plan_document(load_plan(args.plan)))
    old = _read_lock(path)
    approvals: list[Any] = list(old.get("approvals", [])) if old else []
    changes = classify(old, content) if old else []
    if old is not None and not changes:
        print(f"{shown_path(path)} is up to date ({len(content['events'])} events)")
        return EXIT_OK
    breaking = [c for c in changes if c.breaking]
    if breaking and reason is None:
        print(f"{shown_path(path)} not written: {len(breaking)} breaking change(s)")
        _print_changes(changes)
        print(f"If they are intended, approve them: {_APPROVE}")
        return EXIT_FINDINGS
    if breaking:
        today = args.today or _dt.date.today()
        approvals.append(
            {
                "date": today.isoformat(),
                "reason": reason.strip(),
                "changes": [c.message for c in breaking],
            }
        )
    elif reason is not None:
        print("nothing breaking to approve: --approve-breaking is not recorded", file=sys.stderr)
    _write_lock(path, {**content, "approvals": approvals})
    what = "created" if old is None else f"updated, {len(changes)} change(s)"
    print(f"wrote {shown_path(path)} ({len(content['events'])} events; {what})")
    _print_changes(changes)
    if breaking:
        print(f"{len(breaking)} breaking change(s) approved: {reason.strip()}")
    return EXIT_OK


def _diff_command(args: argparse.Namespace) -> int:
    path = _lock_path(args.lock)
    old = _read_lock(path)
    if old is None:
        raise CLIError(
            f"no lock file at {shown_path(path)}: run `instrumentor plan lock` to create it, "
            "and commit it"
        )
    content = lock_content(plan_document(load_plan(args.plan)))
    changes = classify(old, content)
    breaking = sum(c.breaking for c in changes)
    stale = bool(changes) and not breaking
    code = EXIT_FINDINGS if breaking or (stale and args.strict) else EXIT_OK
    if args.format == "json":
        report = {
            "lock": shown_path(path),
            "up_to_date": not changes,
            "breaking": breaking,
            "changes": [asdict(c) for c in changes],
            "approvals": old.get("approvals", []),
        }
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return code
    if not changes:
        print(f"the plan matches {shown_path(path)} ({len(content['events'])} events)")
        return code
    print(
        f"{shown_path(path)}: {len(changes)} change(s) in the plan since the lock, "
        f"{breaking} breaking"
    )
    _print_changes(changes)
    if breaking:
        print(
            f"{breaking} breaking change(s) not approved. If they are intended, approve them "
            f"with `{_APPROVE}` and commit the lock file."
        )
    else:
        print(f"the lock is stale: run `instrumentor plan lock` and commit {shown_path(path)}")
    return code

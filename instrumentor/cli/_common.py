"""What every command shares: exit codes, errors, findings and how they are printed."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

__all__ = [
    "EXIT_FINDINGS",
    "EXIT_OK",
    "EXIT_USAGE",
    "CLIError",
    "Finding",
    "add_plan_option",
    "definition_site",
    "find_pyproject",
    "print_findings",
    "shown_path",
    "tool_config",
]

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2

Severity = Literal["error", "warning"]
OutputFormat = Literal["text", "json", "github"]


class CLIError(Exception):
    """A problem with how the command was run (not a finding): printed, then exit code 2."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Finding:
    """One problem a check found.

    Attributes:
        rule: A stable rule id, e.g. ``inline-event-name``; suppressions and docs name it.
        message: What is wrong.
        path: The file it is in (relative when possible), or ``""`` for the plan as a whole.
        line: 1-based line, or 0 when unknown.
        column: 1-based column, or 0 when unknown.
        hint: What to do about it.
        severity: ``error`` fails the command; ``warning`` is printed only.
    """

    rule: str
    message: str
    path: str = ""
    line: int = 0
    column: int = 0
    hint: str = ""
    severity: Severity = "error"

    @property
    def location(self) -> str:
        """``path:line:column`` with whatever is known."""
        parts = [self.path or "<plan>"]
        if self.line:
            parts.append(str(self.line))
            if self.column:
                parts.append(str(self.column))
        return ":".join(parts)


def _github_escape(text: str, *, property_: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if property_:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def print_findings(
    findings: list[Finding], output: OutputFormat, *, stream: TextIO | None = None
) -> None:
    """Print ``findings`` as text (one per line, then a summary), JSON, or GitHub annotations."""
    out = stream or sys.stdout
    if output == "json":
        json.dump([asdict(f) for f in findings], out, indent=2)
        out.write("\n")
        return
    for f in findings:
        if output == "github":
            props = [f"file={_github_escape(f.path, property_=True)}"] if f.path else []
            if f.line:
                props.append(f"line={f.line}")
            if f.column:
                props.append(f"col={f.column}")
            props.append(f"title={_github_escape(f.rule, property_=True)}")
            text = f.message + (f" ({f.hint})" if f.hint else "")
            out.write(f"::{f.severity} {','.join(props)}::{_github_escape(text)}\n")
        else:
            out.write(f"{f.location}: {f.severity}[{f.rule}] {f.message}\n")
            if f.hint:
                out.write(f"    hint: {f.hint}\n")
    if output == "text":
        errors = sum(f.severity == "error" for f in findings)
        warnings = len(findings) - errors
        if findings:
            out.write(f"{errors} error(s), {warnings} warning(s)\n")
        else:
            out.write("no problems found\n")


def find_pyproject(start: Path | None = None) -> Path | None:
    """The nearest ``pyproject.toml`` from ``start`` (default: the working directory) upwards."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def tool_config(pyproject: Path | None) -> dict[str, Any]:
    """The ``[tool.instrumentor]`` table of ``pyproject`` (empty when there is none).

    Raises:
        CLIError: If the file is not valid TOML, or TOML cannot be read on Python 3.10 without
            ``tomli`` (``pip install "instrumentor[cli]"``).
    """
    if pyproject is None:
        return {}
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised by the 3.10 nox session
        try:
            import tomli as tomllib
        except ImportError:
            raise CLIError(
                f"reading {pyproject} needs tomli on Python 3.10: "
                'pip install "instrumentor[cli]", or pass --plan'
            ) from None
    try:
        with pyproject.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CLIError(f"cannot read {pyproject}: {exc}") from None
    tool = data.get("tool", {})
    table = tool.get("instrumentor", {}) if isinstance(tool, dict) else {}
    if not isinstance(table, dict):
        raise CLIError(f"{pyproject}: [tool.instrumentor] must be a table")
    return table


def add_plan_option(parser: argparse.ArgumentParser) -> None:
    """Add the ``--plan`` option (repeatable) that every plan-reading command takes."""
    parser.add_argument(
        "--plan",
        action="append",
        metavar="MODULE[:REGISTRY]",
        help="the plan to load (repeat for a plan split over several registries); "
        "default: [tool.instrumentor] plan in pyproject.toml",
    )


def shown_path(path: str | Path) -> str:
    """``path`` relative to the working directory when it is below it, else as given."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def definition_site(defined_at: str) -> tuple[str, int]:
    """Split an event's ``defined_at`` (``path:line``) into a path relative to cwd and a line."""
    path, _, line = defined_at.rpartition(":")
    return shown_path(path), int(line) if line.isdigit() else 0

"""Inline suppressions: ``# instrumentor: ignore[rule, ...] -- why``, on the reported line.

Spaces are allowed around the parts: ``# instrumentor: ignore [rule] -- why`` names the rule too.

A suppression silences the named rules' findings on its own line. It needs a written reason
after ``--`` (else it is itself a ``suppression-without-reason`` error, though it still
silences); one that silences nothing is an ``unused-suppression`` warning, so stale ones go.
"""

from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from instrumentor.cli._common import Finding

__all__ = ["Suppression", "apply_suppressions", "read_suppressions"]

_MARKER = b"instrumentor:"
_COMMENT = re.compile(
    r"instrumentor:\s*ignore\b(?:\s*\[(?P<rules>[^\]]*)\])?(?:\s*--(?P<reason>.*))?"
)
_EXAMPLE = "# instrumentor: ignore[inline-event-name] -- legacy webhook, removed in Q3"


@dataclass
class Suppression:
    """One ``# instrumentor: ignore[...]`` comment.

    Attributes:
        line: The line it is on (and silences).
        column: Where the comment starts, 1-based.
        rules: The rule ids it names; empty means every rule on the line.
        reason: The text after ``--``, stripped (empty when missing).
        used: The rules it silenced a finding of.
    """

    line: int
    column: int
    rules: frozenset[str]
    reason: str
    used: set[str] = field(default_factory=set)

    def covers(self, rule: str) -> bool:
        """Whether this suppression silences ``rule``."""
        return not self.rules or rule in self.rules


def read_suppressions(source: bytes) -> dict[int, Suppression]:
    """The suppressions in ``source``'s comments (not its strings), by line."""
    if _MARKER not in source:
        return {}
    found: dict[int, Suppression] = {}
    try:
        for token in tokenize.tokenize(io.BytesIO(source).readline):
            if token.type != tokenize.COMMENT:
                continue
            match = _COMMENT.search(token.string)
            if match is None:
                continue
            rules = frozenset(
                r.strip() for r in (match.group("rules") or "").split(",") if r.strip()
            )
            reason = (match.group("reason") or "").strip()
            line, column = token.start
            found[line] = Suppression(line, column + 1, rules, reason)
    except (tokenize.TokenError, SyntaxError, UnicodeDecodeError):
        pass  # the file does not parse either: its syntax-error finding says so
    return found


def _about(path: str, suppression: Suppression, rule: str, message: str, hint: str) -> Finding:
    return Finding(
        rule,
        message,
        path=path,
        line=suppression.line,
        column=suppression.column,
        hint=hint,
        severity="error" if rule == "suppression-without-reason" else "warning",
    )


def apply_suppressions(
    findings: Iterable[Finding],
    suppressions: dict[str, dict[int, Suppression]],
    *,
    scanned: Collection[str],
    rules_run: Collection[str],
    known_rules: Collection[str],
) -> list[Finding]:
    """Drop the findings a suppression covers; add findings about the suppressions themselves.

    Args:
        findings: Everything the rules found.
        suppressions: The suppressions of each file, by path (as findings show it) and line.
        scanned: The paths that were linted; only their suppressions are reported as unused.
        rules_run: The rules that ran; a suppression of a rule that did not run is not unused.
        known_rules: Every rule id; a suppression naming another is reported.
    """
    kept: list[Finding] = []
    for finding in findings:
        suppression = suppressions.get(finding.path, {}).get(finding.line)
        if suppression is not None and suppression.covers(finding.rule):
            suppression.used.add(finding.rule)
        else:
            kept.append(finding)
    for path in scanned:
        for suppression in suppressions.get(path, {}).values():
            if not suppression.reason:
                hint = f"say why after '--', e.g. {_EXAMPLE}"
                kept.append(
                    _about(
                        path,
                        suppression,
                        "suppression-without-reason",
                        "suppression without a reason",
                        hint,
                    )
                )
            unknown = sorted(suppression.rules - set(known_rules))
            if unknown:
                message = f"suppression names unknown rule(s) {', '.join(unknown)}"
                hint = "use a rule id from `instrumentor lint --help`"
                kept.append(_about(path, suppression, "unused-suppression", message, hint))
            stale = sorted(
                r for r in suppression.rules if r in rules_run and r not in suppression.used
            )
            if stale or not (suppression.rules or suppression.used):
                message = f"suppression of {', '.join(stale) or 'every rule'} silences nothing"
                hint = "remove it, or move it to the line the finding is reported on"
                kept.append(_about(path, suppression, "unused-suppression", message, hint))
    return kept

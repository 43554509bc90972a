"""The docs list every incident kind that exists, and only those.

``docs/concepts.md`` has an "Incident kinds" table with one row per :class:`IncidentKind` member
(its name, its value and when it happens); every page that calls something "a `kind` incident"
names a real kind.
"""

from __future__ import annotations

import re
from pathlib import Path

from instrumentor import IncidentKind

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(DOCS.glob("*.md"))
#: A row of the kinds table: ``| `MEMBER` | `value` | when it happens |``.
_KIND_ROW = re.compile(r"^\| `(\w+)` \| `(\w+)` \| (.+) \|[ \t]*$")
#: Prose naming a kind: "a `missing_group` incident", "`delivery_dead_lettered` incidents".
_NAMED_KIND = re.compile(r"`(\w+)` incidents?\b")


def _kinds_section(page: str) -> list[str]:
    """The lines of the "Incident kinds" section, up to the next heading."""
    lines = page.splitlines()
    start = lines.index("### Incident kinds")
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith("#")),
        len(lines),
    )
    return lines[start + 1 : end]


def _documented_kinds(page: str) -> list[tuple[str, str, str]]:
    """The (member, value, meaning) rows of the section; raises on a row of another shape."""
    rows = []
    for line in _kinds_section(page):
        if not line.startswith("| `"):
            continue
        match = _KIND_ROW.match(line)
        assert match is not None, f"not a kinds row: {line}"
        rows.append((match.group(1), match.group(2), match.group(3)))
    return rows


def test_the_kinds_table_lists_every_member_and_no_other() -> None:
    """docs/concepts.md has one row per IncidentKind member, with its value and a meaning."""
    rows = _documented_kinds((DOCS / "concepts.md").read_text(encoding="utf-8"))
    documented = [(member, value) for member, value, _ in rows]
    assert sorted(documented) == sorted((kind.name, kind.value) for kind in IncidentKind)
    assert len(documented) == len(IncidentKind), "a kind is listed twice"
    assert all(meaning.strip() for _, _, meaning in rows)


def test_the_kinds_table_check_catches_a_missing_member() -> None:
    """A kinds table without one member's row no longer matches IncidentKind."""
    page = (DOCS / "concepts.md").read_text(encoding="utf-8")
    row = next(line for line in page.splitlines() if line.startswith("| `LOG_ERROR` |"))
    rows = _documented_kinds(page.replace(row + "\n", ""))
    assert {member for member, _, _ in rows} == {k.name for k in IncidentKind} - {"LOG_ERROR"}


def test_every_incident_the_docs_name_is_a_kind() -> None:
    """Prose of the form "a `kind` incident" on any docs page names an IncidentKind value."""
    values = {kind.value for kind in IncidentKind}
    unknown = [
        f"{page.name}: {name}"
        for page in PAGES
        for name in _NAMED_KIND.findall(page.read_text(encoding="utf-8"))
        if name not in values
    ]
    assert not unknown, f"not an IncidentKind: {unknown}"

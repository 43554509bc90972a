"""The naming rules of the tracking plan, as pure functions the registry and the CLI share.

An event name is ``Object_Action``: Title_Case words joined by underscores, the object first and
a past-tense verb last (``Report_Created``, ``Teammate_Invited``, ``User_Signed_Up``). Names
carry no digits, dates or variants: ``Report_Exported_PDF`` is ``Report_Exported`` with the format
as a property.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "NAMING_RULES",
    "NamingViolation",
    "check_event_name",
    "normalise_event_name",
]

#: Every rule id with what it asks. Waivers name these ids.
NAMING_RULES: dict[str, str] = {
    "title_case": "words are Title_Case (or an all-capitals acronym) joined by single underscores",
    "object_action": "at least two words: the object first, then the action",
    "past_tense": "the last word (before a particle such as In, Out, Up) is a past-tense verb",
    "no_digits": "no digits, versions or dates in the name",
    "no_variant": "no variant words such as PDF, Mobile or V2: send the variant as a property",
    "length": "at most 64 characters",
}

_MAX_LENGTH = 64
_WORD = re.compile(r"[A-Z][a-z]+|[A-Z]{2,6}")
_PARTICLES = frozenset({"In", "Out", "Up", "Down", "Off", "On", "Over", "Back", "Through"})
_VARIANTS = frozenset(
    {
        "PDF", "CSV", "XLS", "XLSX", "JSON", "XML", "PNG", "JPG", "SVG", "HTML",
        "Mobile", "Desktop", "Web", "IOS", "Ios", "Android", "Beta", "Legacy", "Old", "New",
        "Test", "Temp", "Tmp", "Copy", "Final", "Draft",
    }
)  # fmt: skip
_IRREGULAR_PAST = frozenset(
    """
    Arose Ate Awoke Became Began Begun Bent Bid Bled Blew Blown Bore Born Bought Bound Broke
    Broken Brought Built Burnt Caught Chose Chosen Came Cut Dealt Dove Drank Drawn Drew Driven
    Drove Drunk Dug Eaten Fed Fell Felt Fled Flew Flown Forbade Forbidden Forgave Forgiven
    Forgot Forgotten Fought Found Froze Frozen Gave Given Gone Got Gotten Grew Grown Had Heard
    Held Hid Hidden Hit Hung Kept Knew Known Laid Led Left Lent Let Lit Lost Made Meant Met
    Overdrawn Overran Overridden Overrode Overtook Paid Put Quit Ran Read Rebuilt Redid Redone
    Remade Reran Reset Resent Rewritten Rewrote Rode Rose Run Rung Said Sang Sat Saw Seen Sent
    Set Shed Shook Shot Shown Shut Slept Slid Sold Sought Spent Split Spoke Spoken Spread Sprang
    Spun Stole Stolen Stood Struck Stuck Sung Swept Swore Sworn Swum Taken Taught Tore Torn
    Thought Threw Thrown Told Took Underwent Undid Undone Understood Unset Unsubscribed Upheld
    Upset Went Withdrawn Withdrew Woke Woken Won Wore Worn Wound Written Wrote
    """.split()  # noqa: SIM905 - a word list reads better as text
)


@dataclass(frozen=True)
class NamingViolation:
    """One broken naming rule.

    Attributes:
        rule: The rule id, a key of :data:`NAMING_RULES`; waivers name it.
        message: What is wrong with this name and what to do instead.
    """

    rule: str
    message: str


def normalise_event_name(name: str) -> str:
    """Fold a name for near-duplicate detection: case, ``_``, ``-``, ``.`` and spaces removed."""
    return re.sub(r"[\s_\-.]+", "", name).casefold()


def _is_past_tense(word: str) -> bool:
    return (word.endswith("ed") and len(word) > 3) or word in _IRREGULAR_PAST


def check_event_name(name: str) -> list[NamingViolation]:
    """Check one event name against every naming rule.

    Args:
        name: The event name as it will be sent, e.g. ``"Report_Created"``.

    Returns:
        The violations found, empty when the name is good.
    """
    problems: list[NamingViolation] = []
    if len(name) > _MAX_LENGTH:
        problems.append(
            NamingViolation("length", f"{name!r} is {len(name)} characters; keep it to 64")
        )
    if re.search(r"\d", name):
        problems.append(
            NamingViolation(
                "no_digits",
                f"{name!r} contains digits; versions and dates belong in properties",
            )
        )
    words = name.split("_")
    bad = [w for w in words if not _WORD.fullmatch(w) and not re.search(r"\d", w)]
    if bad or not name:
        problems.append(
            NamingViolation(
                "title_case",
                f"{name!r} is not Title_Case words joined by single underscores "
                f"(offending parts: {bad or [name]!r}); write e.g. 'Report_Created'",
            )
        )
    if len(words) < 2:
        problems.append(
            NamingViolation(
                "object_action",
                f"{name!r} needs an object and an action, e.g. 'Report_Created'",
            )
        )
    variants = [w for w in words if w in _VARIANTS]
    if variants:
        problems.append(
            NamingViolation(
                "no_variant",
                f"{name!r} contains the variant {variants[0]!r}; track one event and send the "
                "variant as a property",
            )
        )
    verbs = list(words)
    while len(verbs) > 1 and verbs[-1] in _PARTICLES:
        verbs.pop()
    if len(words) >= 2 and not _is_past_tense(verbs[-1]):
        problems.append(
            NamingViolation(
                "past_tense",
                f"{name!r} should end in a past-tense verb saying what happened "
                f"(the last word is {verbs[-1]!r}), e.g. 'Report_Created', not 'Create_Report'",
            )
        )
    return problems

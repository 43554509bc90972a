"""The plan as plain data for ``lint``'s scan, and what the scan of one module finds.

Plain data (no registry classes) so that it travels to worker processes.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from instrumentor._naming import normalise_event_name
from instrumentor.cli._calls import FALLBACK_METHODS, SDK_MODULES, SIGNATURES, looks_like_event_name
from instrumentor.cli._common import Finding

__all__ = ["ModuleScan", "PlanIndex", "RegistryInfo"]


@dataclass(frozen=True)
class RegistryInfo:
    """What the scan needs to know about one registry class of the plan.

    Attributes:
        qualname: The class name, e.g. ``Events``; code refers to it by this name or an alias.
        module: The module defining it, e.g. ``app.analytics.events``.
        members: Member name -> event name, e.g. ``{"REPORT_CREATED": "Report_Created"}``.
        attributes: Other names ``Events.<name>`` may use (``by_name``, ``hierarchy``, ...).
    """

    qualname: str
    module: str
    members: Mapping[str, str]
    attributes: frozenset[str] = frozenset()

    @property
    def key(self) -> str:
        """``module.qualname``: identifies the registry in :attr:`ModuleScan.used_members`."""
        return f"{self.module}.{self.qualname}"


_Trie = dict[int, "_Trie"]


def _any_of(words: Iterable[bytes]) -> bytes:
    """A pattern that finds any of ``words`` in a text, as a trie of their bytes.

    About twice as quick as ``word1|word2|...``, which tries every word at every position. Only
    *whether* one occurs matters, so a word holding another (``tracks``, ``track``) is left out.
    """
    kept: list[bytes] = []
    for word in sorted(set(words), key=len):
        if not any(shorter in word for shorter in kept):
            kept.append(word)
    trie: _Trie = {}
    for word in kept:
        node = trie
        for byte in word:
            node = node.setdefault(byte, {})
    return _pattern(trie)


def _pattern(node: _Trie) -> bytes:
    branches = [re.escape(bytes([byte])) + _pattern(child) for byte, child in sorted(node.items())]
    if len(branches) <= 1:
        return b"".join(branches)
    return b"(?:" + b"|".join(branches) + b")"


@dataclass(frozen=True)
class PlanIndex:
    """The plan as plain data for the scan; empty when no plan is configured."""

    registries: tuple[RegistryInfo, ...] = ()
    by_class: Mapping[str, tuple[RegistryInfo, ...]] = field(init=False)
    labels: Mapping[str, str] = field(init=False)  # event name -> "Events.MEMBER"
    near: Mapping[str, str] = field(init=False)  # normalised name -> event name
    #: Matches the source of any module that can have a finding (all else only compiles).
    needles: re.Pattern[bytes] = field(init=False)

    def __post_init__(self) -> None:
        by_class: dict[str, tuple[RegistryInfo, ...]] = {}
        labels: dict[str, str] = {}
        for info in self.registries:
            by_class[info.qualname] = (*by_class.get(info.qualname, ()), info)
            for member, name in info.members.items():
                labels[name] = f"{info.qualname}.{member}"
        object.__setattr__(self, "by_class", by_class)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "near", {normalise_event_name(n): n for n in labels})
        words = {*SDK_MODULES, *(k[1] for k in SIGNATURES), *FALLBACK_METHODS, *by_class, *labels}
        words.add("instrumentor")  # the package, and suppression comments
        object.__setattr__(self, "needles", re.compile(_any_of(w.encode() for w in words)))

    def inline_hint(self, name: str) -> str:
        """What to write instead of the literal ``name``."""
        if name in self.labels:
            return f"use {self.labels[name]}"
        close = self.near.get(normalise_event_name(name))
        if close is not None:
            return f"the plan calls it {close!r}: use {self.labels[close]}"
        return "define it in the plan and use Events.X"

    def event_like(self, text: str) -> bool:
        """Whether ``text`` is, nearly is, or is shaped like an event name (the fallback's test)."""
        if text in self.labels or looks_like_event_name(text):
            return True
        folded = normalise_event_name(text)
        close = difflib.get_close_matches(folded, self.near, n=1, cutoff=0.85)
        return folded in self.near or bool(close)


@dataclass
class ModuleScan:
    """What one module holds: its findings and the plan events it refers to."""

    findings: list[Finding] = field(default_factory=list)
    used_members: set[tuple[str, str]] = field(default_factory=set)  # (registry key, member)
    used_names: set[str] = field(default_factory=set)  # literal event names of the plan
    dynamic_lookups: set[str] = field(default_factory=set)  # registry keys, Events[name]

"""The documentation's examples run as written.

Every fenced ``python`` block of a page under ``docs/`` runs, in order, in one fresh module
namespace per page (``py`` blocks are illustrations and are not run). Afterwards the global
state a page may have touched is restored: configuration, context, the registries it defined
(so that other pages and tests may reuse their event names) and any receiver it left connected.
The API reference is checked against every public module's ``__all__`` in
``tests/test_exported_members.py``, the configuration page in ``tests/test_settings_docs.py`` and
the incident kinds in ``tests/test_incident_kinds_docs.py``.
"""

from __future__ import annotations

import re
import sys
import textwrap
import types
import weakref
from pathlib import Path

import pytest

import instrumentor
import instrumentor.plan
import instrumentor.signals
from instrumentor._settings import ENVIRONMENT_VARIABLES
from instrumentor.testing import forget_registry

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(DOCS.glob("*.md"))

_PYTHON_BLOCK = re.compile(
    r"^(?P<indent>[ \t]*)```python[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
_TEST_FUNCTION = re.compile(r"^(?:async )?def test_\w+\(", re.MULTILINE)
_ENVIRONMENT = ENVIRONMENT_VARIABLES


def _python_blocks(page: Path) -> list[str]:
    """The page's ``python`` blocks, each padded so that its line numbers are the page's."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in _PYTHON_BLOCK.finditer(text):
        first_line = text.count("\n", 0, match.start("body"))
        blocks.append("\n" * first_line + textwrap.dedent(match.group("body")))
    return blocks


def _registries() -> set[type[instrumentor.EventRegistry]]:
    """Every registry that currently holds events in the process-wide catalog."""
    return {type(member) for member in instrumentor.plan.all_events()}


def _disconnect_new_receivers(before: set[object]) -> None:
    """Disconnect every receiver of ``event_emitted`` that was not connected ``before``."""
    signal = instrumentor.signals.event_emitted
    for receiver_id in set(signal.receivers) - before:
        held = signal.receivers.get(receiver_id)
        receiver = held() if isinstance(held, weakref.ref) else held
        if receiver is not None:
            signal.disconnect(receiver)


PAGES_WITH_TESTS = [
    page for page in PAGES if any(_TEST_FUNCTION.search(block) for block in _python_blocks(page))
]


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``python`` block of the page runs, in order, in one namespace."""
    for name in _ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    module = types.ModuleType(f"docs_{page.stem}")
    namespace = module.__dict__
    registries_before = _registries()
    receivers_before = set(instrumentor.signals.event_emitted.receivers)
    sys.modules[module.__name__] = module
    try:
        for block in _python_blocks(page):
            exec(compile(block, str(page), "exec"), namespace)
    finally:
        instrumentor.reset_configuration()
        instrumentor.clear_context()
        defined = {
            value
            for value in namespace.values()
            if isinstance(value, type)
            and issubclass(value, instrumentor.EventRegistry)
            and value is not instrumentor.EventRegistry
        }
        for registry in defined | (_registries() - registries_before):
            forget_registry(registry)
        _disconnect_new_receivers(receivers_before)
        sys.modules.pop(module.__name__, None)


@pytest.mark.parametrize("page", PAGES_WITH_TESTS, ids=[page.name for page in PAGES_WITH_TESTS])
def test_page_tests_pass_under_pytest(
    page: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test functions a page shows pass when pytest runs the page's code as a module."""
    for name in _ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    source = "\n".join(block.lstrip("\n") for block in _python_blocks(page))
    pytester.makepyfile(**{f"test_docs_{page.stem}": source})
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-W", "error", "--strict-markers", "-q"
    )
    result.assert_outcomes(passed=len(_TEST_FUNCTION.findall(source)))

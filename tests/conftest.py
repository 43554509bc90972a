"""Every test starts unconfigured, with no context bound and no incidents counted."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import instrumentor
from instrumentor._diagnostics import _diagnostics
from instrumentor._wiring import ENVIRONMENT_VARIABLES


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ENVIRONMENT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    instrumentor.reset_configuration()
    instrumentor.clear_context()
    _diagnostics.reset()
    yield
    instrumentor.reset_configuration()
    instrumentor.clear_context()
    _diagnostics.reset()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI (CI=true) a skipped test is a failure: every test must really run there."""
    if os.environ.get("CI", "").lower() not in {"1", "true", "yes"}:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped:
        reasons = sorted({str(getattr(r, "longrepr", ""))[:200] for r in skipped})
        if reporter is not None:
            reporter.write_line(
                f"CI=true: {len(skipped)} test(s) skipped; skips fail in CI:", red=True
            )
            for reason in reasons:
                reporter.write_line(f"  {reason}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

"""Plan coverage for the pytest plugin: which events of the plan did the test suite track?

Turned on with ``pytest --instrumentor-coverage`` (and ``--instrumentor-coverage-fail-under=PCT``
to fail the run below a threshold). A receiver on :data:`~instrumentor._signals.event_emitted`
notes every event emitted during the session, whatever transport the tests configured; the
plan is ``--instrumentor-plan`` or ``[tool.instrumentor] plan``, else every registry imported.
Under pytest-xdist each worker sends what it saw to the controller, which reports the union.
"""

from __future__ import annotations

from typing import Any

import pytest

from instrumentor._emitter import Emission
from instrumentor._registry import all_events
from instrumentor._signals import event_emitted
from instrumentor.cli._common import CLIError, find_pyproject, tool_config
from instrumentor.cli._source import load_plan

__all__ = ["PlanCoverage"]


class PlanCoverage:
    """The pytest plugin object that records and reports plan coverage."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.exercised: set[str] = set()
        self.plan: dict[str, str] = {}  # event name -> "Registry.MEMBER"
        self.plan_error: str | None = None
        self.fail_under: float | None = config.getoption("instrumentor_coverage_fail_under")
        event_emitted.connect(self._record, weak=False)

    def _record(self, sender: Any, *, emission: Emission) -> None:
        if emission.event is not None:
            self.exercised.add(emission.event.event_name)

    def _load_plan(self) -> None:
        specs = self.config.getoption("instrumentor_plan")
        try:
            if specs or tool_config(find_pyproject(self.config.rootpath)).get("plan"):
                events = load_plan(specs, start=self.config.rootpath).events
            else:
                events = tuple(all_events())
        except CLIError as exc:
            self.plan_error = str(exc)
            return
        self.plan.update({m.event_name: f"{type(m).__qualname__}.{m.name}" for m in events})

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Send this worker's findings to the controller, or judge the threshold."""
        self._load_plan()
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:  # an xdist worker: the controller reports
            workeroutput["instrumentor_coverage"] = {
                "exercised": sorted(self.exercised),
                "plan": self.plan,
                "error": self.plan_error,
            }
            return
        below = self.plan_error is not None or self.percent < (self.fail_under or 0.0)
        if self.fail_under is not None and below and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """Collect what an xdist worker saw."""
        report = getattr(node, "workeroutput", {}).get("instrumentor_coverage")
        if report:
            self.exercised.update(report["exercised"])
            self.plan.update(report["plan"])
            self.plan_error = self.plan_error or report["error"]

    @property
    def percent(self) -> float:
        """The share of plan events exercised, in percent (100 for an empty plan)."""
        if not self.plan:
            return 100.0
        return 100.0 * len(self.exercised & self.plan.keys()) / len(self.plan)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Print the coverage table (on the controller only)."""
        if getattr(self.config, "workeroutput", None) is not None:
            return
        write = terminalreporter.write_line
        terminalreporter.section("instrumentor plan coverage")
        if self.plan_error is not None:
            write(f"could not load the plan: {self.plan_error}", red=True)
            return
        hit = sorted(self.exercised & self.plan.keys())
        missed = sorted(self.plan.keys() - self.exercised)
        write(f"{len(hit)}/{len(self.plan)} events of the plan tracked ({self.percent:.1f}%)")
        for name in missed:
            write(f"  not tracked: {name} ({self.plan[name]})")
        if self.fail_under is not None:
            if self.percent < self.fail_under:
                write(
                    f"FAIL: plan coverage {self.percent:.1f}% is under the required "
                    f"{self.fail_under:g}%",
                    red=True,
                )
            else:
                write(f"required {self.fail_under:g}% reached", green=True)

    def close(self) -> None:
        """Disconnect the recorder."""
        event_emitted.disconnect(self._record)

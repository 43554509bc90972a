"""How fast ``instrumentor lint`` scans an application: files per second, cold and cached.

Generates a synthetic application in a temporary folder: a plan of 40 events and ``--files``
modules of about 140 lines each (imports, dataclasses, functions). Twice: once with a quarter of
the modules tracking events (``@tracks(Events.X)``, ``track(Events.Y)``), as in an application
where some modules perform tracked actions, and once with all of them. Every 10th tracking
module also holds an inline name, a dynamic name and an SDK import, so that findings are built
and printed too. Then, the median of ``--rounds`` rounds, interleaved:

* ``scan``: in process, reading and scanning every file (``scan_module``), no output;
* ``instrumentor lint``: the console script end to end in a subprocess, as CI runs it
  (interpreter start, plan import, walk, scan, suppressions, unused events, text output):
  ``--no-cache`` (one process, and ``--jobs 0``: a worker process per CPU); with an empty
  cache (cold: every file scanned, the cache written); and again with the cache it left (warm:
  every file unchanged, read and hashed but not parsed).

The cache lives in a temporary folder (``INSTRUMENTOR_CACHE_DIR``), never the user's. One
untimed run first, so that the interpreter finds its bytecode as an installed package does.

Prints the Python version, the platform and a Markdown table, then the targets with PASS/MISS;
always exits 0.

    python benchmarks/bench_lint.py [--files N] [--rounds R] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from instrumentor.cli._scan import PlanIndex, RegistryInfo, scan_module

TARGET_COLD = 1_000.0  # files/s end to end, cache empty: "a few thousand files in seconds"
TARGET_WARM = 10_000.0  # files/s end to end, every file unchanged since the cached run
_OBJECTS = ["Report", "Dashboard", "Invoice", "Teammate", "Project", "Export", "Comment", "Alert"]
_ACTIONS = ["Created", "Shared", "Deleted", "Viewed", "Updated"]
EVENTS = [(f"{o.upper()}_{a.upper()}", f"{o}_{a}") for o in _OBJECTS for a in _ACTIONS]


def _plan_module() -> str:
    lines = [
        "from instrumentor import EventRegistry, event",
        "",
        "",
        "class Events(EventRegistry):",
    ]
    lines += [f'    {member} = event("{name}", category="core_value")' for member, name in EVENTS]
    return "\n".join(lines) + "\n"


def _module(index: int, tracked: bool) -> str:
    member = EVENTS[index % len(EVENTS)][0]
    other = EVENTS[(index * 7) % len(EVENTS)][0]
    seeded = tracked and index % 10 == 0
    head = [
        f'"""Synthetic module {index}."""',
        "",
        "from __future__ import annotations",
        "",
        "import dataclasses",
        "import logging",
        "from collections.abc import Iterable",
        "",
        *(["from instrumentor import track, tracks", ""] if tracked else []),
        *(["from app.analytics.events import Events"] if tracked else []),
        *(["import posthog"] if seeded else []),
        "",
        "log = logging.getLogger(__name__)",
        "",
    ]
    body: list[str] = []
    for n in range(6):
        body += [
            "",
            "@dataclasses.dataclass",
            f"class Record{n}:",
            f'    """A record, number {n}."""',
            "",
            "    name: str",
            "    size: int = 0",
            "",
            "    def grow(self, by: int) -> int:",
            "        self.size += by",
            "        return self.size",
            "",
            "",
            *([f"@tracks(Events.{member})"] if tracked else []),
            f"def handle_{n}(items: Iterable[Record{n}], limit: int = 10) -> list[str]:",
            f'    """Handle batch {n}."""',
            "    names = [item.name for item in items if item.size < limit]",
            "    if not names:",
            '        log.info("nothing to do in %s", __name__)',
            f"        track(Events.{other})" if tracked else "        names.append('none')",
            "    return sorted(names)",
        ]
    if seeded:
        body += [
            "",
            "",
            "def legacy(user_id: str, kind: str) -> None:",
            '    track("Report_Created")',
            '    posthog.capture(user_id, f"{kind}_Viewed")',
        ]
    return "\n".join(head + body) + "\n"


def generate(root: Path, files: int, share: float) -> None:
    """Write the application: ``files`` modules, every ``1/share``-th one tracking events."""
    (root / "app" / "analytics").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[tool.instrumentor]\nplan = "app.analytics.events:Events"\n'
        'analytics_package = "app/analytics"\n'
    )
    for package in ("app", "app/analytics"):
        (root / package / "__init__.py").write_text("")
    (root / "app" / "analytics" / "events.py").write_text(_plan_module())
    for index in range(files):
        folder = root / "app" / f"domain_{index // 100:03d}"
        if not folder.exists():
            folder.mkdir()
            (folder / "__init__.py").write_text("")
        tracked = share > 0 and index % round(1 / share) == 0
        (folder / f"module_{index:05d}.py").write_text(_module(index, tracked))


def plan_index() -> PlanIndex:
    members = dict(EVENTS)
    return PlanIndex((RegistryInfo("Events", "app.analytics.events", members),))


def time_scan(root: Path) -> tuple[float, float, int, int]:
    """Wall and CPU seconds to read and scan every file in process; files and findings."""
    index = plan_index()
    paths = sorted(root.rglob("*.py"))
    started, cpu = time.perf_counter(), time.process_time()
    findings = 0
    for path in paths:
        findings += len(scan_module(path.read_bytes(), str(path), index).findings)
    return time.perf_counter() - started, time.process_time() - cpu, len(paths), findings


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_cli(root: Path, cache: Path, *options: str) -> tuple[float, float]:
    """Wall and CPU seconds for ``instrumentor lint OPTIONS app`` end to end.

    CPU time is the lint process's own: worker processes, forked by the fork server, are not
    counted, so compare wall times between ``--jobs`` settings.
    """
    script = shutil.which("instrumentor", path=str(Path(sys.executable).parent)) or "instrumentor"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["INSTRUMENTOR_CACHE_DIR"] = str(cache)
    started, cpu = time.perf_counter(), _children_cpu()
    result = subprocess.run(
        [script, "lint", *options, "app"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if result.returncode not in (0, 1) or result.stderr:
        print(result.stderr, file=sys.stderr)
    return elapsed, _children_cpu() - cpu


def _median(runs: list[tuple[float, float]], index: int) -> float:
    return statistics.median(run[index] for run in runs)


def measure(files: int, share: float, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-lint-") as folder:
        root, cache = Path(folder) / "project", Path(folder) / "cache"
        generate(root, files, share)
        lines = sum(p.read_text().count("\n") for p in root.rglob("*.py"))
        scans = [time_scan(root) for _ in range(rounds)]
        time_cli(root, cache, "--no-cache")  # untimed: bytecode written, files in the OS cache
        runs: dict[str, list[tuple[float, float]]] = {
            "nocache": [],
            "workers": [],
            "cold": [],
            "warm": [],
        }
        for _ in range(rounds):  # interleaved, so that a busy spell hits all alike
            runs["nocache"].append(time_cli(root, cache, "--no-cache"))
            runs["workers"].append(time_cli(root, cache, "--no-cache", "--jobs", "0"))
            shutil.rmtree(cache, ignore_errors=True)
            runs["cold"].append(time_cli(root, cache))
            runs["warm"].append(time_cli(root, cache))
    result: dict[str, Any] = {
        "share": share,
        "files": scans[0][2],
        "lines": lines,
        "findings": scans[0][3],
        "scan_s": statistics.median(s[0] for s in scans),
        "scan_cpu_s": statistics.median(s[1] for s in scans),
    }
    for name, timings in runs.items():
        result[f"{name}_s"] = _median(timings, 0)
        result[f"{name}_cpu_s"] = _median(timings, 1)
    return result


def _row(r: dict[str, Any]) -> str:
    def both(name: str) -> str:
        return f"{r[f'{name}_s']:.2f} s ({r[f'{name}_cpu_s']:.2f} s)"

    return (
        f"| {r['share']:.0%} | {r['lines']:,} | {r['findings']} | {both('scan')} "
        f"| {both('nocache')} | {r['workers_s']:.2f} s | {both('cold')} | {both('warm')} "
        f"| {r['files'] / r['cold_s']:,.0f} | {r['files'] / r['warm_s']:,.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="300 files, one round")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    files, rounds = (300, 1) if args.quick else (args.files, args.rounds)
    print(f"Python {platform.python_version()} on {platform.platform()}")
    results = [measure(files, share, rounds) for share in (0.25, 1.0)]
    print(f"\n{files} modules (+ the plan and packages), median of {rounds} round(s)\n")
    print(
        "| modules tracking events | lines | findings | scan, in process: wall (CPU) "
        "| `--no-cache`: wall (CPU) | `--no-cache --jobs 0`: wall | cold cache: wall (CPU) "
        "| warm cache: wall (CPU) | files/s cold | files/s warm |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(_row(r))
    realistic = results[0]
    print()
    for name, target in (("cold", TARGET_COLD), ("warm", TARGET_WARM)):
        rate = realistic["files"] / realistic[f"{name}_s"]
        cpu_rate = realistic["files"] / realistic[f"{name}_cpu_s"]
        verdict = "PASS" if rate >= target else "MISS"
        print(
            f"target: `instrumentor lint`, {name} cache, a quarter of the modules tracking, "
            f">= {target:,.0f} files/s (wall): {rate:,.0f} {verdict} "
            f"(by the lint process's CPU time: {cpu_rate:,.0f})"
        )
    print("On a busy machine wall time exceeds CPU time: the CPU figures are the steadier ones.")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""What ``import instrumentor`` costs a process, next to ``import segment.analytics`` and posthog.

Each row runs its statement in a fresh ``python -X importtime`` subprocess and adds up the
cumulative times of the modules the statement imported (the top-level lines of the report
written after it started: everything it loaded that the interpreter had not loaded at start-up).
For ``import X`` that is X's own cumulative line. Rows are interleaved round-robin, the order
rotating every round, so that noise hits every row alike; each row's figure is the median of its
runs. Prints a Markdown table and the goal with PASS/MISS; always exits 0.

    python benchmarks/bench_import.py [--runs N] [--compare-with DIR] [--json results.json]

``--compare-with DIR`` adds a row for ``import instrumentor`` from another checkout (for
example the previous release, unpacked there), measured in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARK = "@@bench_import: statement starts"
GOAL = 0.5  # import instrumentor <= 0.5x import segment.analytics


#: Modules whose own cumulative time is reported under the ``import instrumentor`` row: wrapt
#: 2.x's package imports asyncio (through ``wrapt.synchronization``) and importlib.metadata
#: (through ``wrapt.importer``) for features ``@tracks`` does not use.
BREAKDOWN = ("wrapt", "wrapt.synchronization", "wrapt.importer")


@dataclasses.dataclass(frozen=True)
class Row:
    """One measured statement, run from ``root``."""

    label: str
    statement: str
    needs: str  # the module that must be installed for the row to run ("": none)
    root: Path = ROOT


ROWS = [
    Row("import instrumentor", "import instrumentor", "instrumentor"),
    Row("import segment.analytics", "import segment.analytics", "segment.analytics"),
    Row("import posthog", "import posthog", "posthog"),
    Row(
        "import instrumentor + configure(api_key=...): a transport built",
        "import instrumentor; instrumentor.configure(api_key='bench')",
        "instrumentor",
    ),
    Row("import httpx (reference)", "import httpx", "httpx"),
]


def imported_us(row: Row) -> dict[str, int] | None:
    """Microseconds of imports ``row.statement`` caused in a fresh interpreter (or ``None``).

    ``""`` maps to the total; each module of :data:`BREAKDOWN` it imported, to its cumulative.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")}
    env["PYTHONPATH"] = str(row.root)
    code = f"import sys\nsys.stderr.write({MARK!r} + '\\n')\nsys.stderr.flush()\n{row.statement}\n"
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=row.root,
        check=False,
    )
    lines = result.stderr.splitlines()
    if result.returncode != 0 or MARK not in lines:
        return None
    found = {"": 0}
    for line in lines[lines.index(MARK) + 1 :]:
        parts = line.removeprefix("import time:").split("|")
        if not line.startswith("import time:") or not parts[1].strip().isdigit():
            continue
        cumulative, name = int(parts[1]), parts[2]
        if not name.startswith("  "):  # a top-level import (one space after the bar)
            found[""] += cumulative
        if name.strip() in BREAKDOWN:
            found[name.strip()] = cumulative
    return found


def installed(module: str) -> bool:
    """Whether ``module`` can be imported here (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def measure(rows: list[Row], runs: int) -> dict[str, list[int]]:
    """Each row's samples in microseconds, ``runs`` fresh interpreters each, interleaved.

    Also ``"<label> / <module>"`` for each module of :data:`BREAKDOWN` the row imported.
    """
    samples: dict[str, list[int]] = {row.label: [] for row in rows}
    for run in range(runs):
        shift = run % len(rows)
        for row in rows[shift:] + rows[:shift]:
            found = imported_us(row)
            if found is None:
                continue
            samples[row.label].append(found.pop(""))
            for module, value in found.items():
                samples.setdefault(f"{row.label} / {module}", []).append(value)
    return samples


def report(rows: list[Row], samples: dict[str, list[int]], skipped: list[str]) -> dict[str, float]:
    """Print the table and the goal; return each row's median in milliseconds."""
    medians = {label: statistics.median(v) / 1000 for label, v in samples.items() if v}
    segment = medians.get("import segment.analytics")
    print("| row | median ms | min ms | max ms | / segment |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        values = samples[row.label]
        if not values:
            print(f"| {row.label} | failed | | | |")
            continue
        ratio = f"{medians[row.label] / segment:.2f}x" if segment else "n/a"
        print(
            f"| {row.label} | {medians[row.label]:.1f} | {min(values) / 1000:.1f} | "
            f"{max(values) / 1000:.1f} | {ratio} |"
        )
    for label in skipped:
        print(f"| {label} | not installed | | | |")
    print()
    mine = medians.get("import instrumentor")
    parts = {m: medians.get(f"import instrumentor / {m}") for m in BREAKDOWN}
    if mine is not None and all(v is not None for v in parts.values()):
        extra = (parts["wrapt.synchronization"] or 0) + (parts["wrapt.importer"] or 0)
        print(
            f"of `import instrumentor`: wrapt {parts['wrapt']:.1f} ms, of which "
            f"{extra:.1f} ms for wrapt.synchronization (asyncio) and wrapt.importer "
            f"(importlib.metadata); without those two: {mine - extra:.1f} ms"
            + (f", {(mine - extra) / segment:.2f}x segment" if segment else "")
        )
        print()
    goal = f"goal: import instrumentor <= {GOAL}x import segment.analytics"
    if mine is None or segment is None:
        print(f"{goal}: not measured (segment-analytics-python missing?)")
    else:
        verdict = "PASS" if mine / segment <= GOAL else "MISS"
        print(f"{goal}: {mine / segment:.2f}x ({mine:.1f} ms vs {segment:.1f} ms) {verdict}")
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15, help="fresh subprocesses per row")
    parser.add_argument("--compare-with", type=Path, help="another checkout to measure too")
    parser.add_argument("--json", type=Path, help="also write the medians here")
    args = parser.parse_args()

    rows = list(ROWS)
    if args.compare_with is not None:
        other = args.compare_with.resolve()
        rows.insert(1, Row(f"import instrumentor ({other})", "import instrumentor", "", root=other))
    kept = [row for row in rows if not row.needs or installed(row.needs)]
    skipped = [row.label for row in rows if row not in kept]
    print(f"Python {platform.python_version()} on {platform.platform()}, {args.runs} runs per row")
    print()
    medians = report(kept, measure(kept, args.runs), skipped)
    if args.json:
        args.json.write_text(json.dumps({"medians_ms": medians, "runs": args.runs}, indent=2))


if __name__ == "__main__":
    main()

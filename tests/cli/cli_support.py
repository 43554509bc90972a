"""Run the real ``instrumentor`` entry points in a subprocess, against the sample plans."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Literal

from tests import support

PLANS = Path(__file__).resolve().parent / "plans"

Entry = Literal["script", "module"]


def run_cli(*args: str, cwd: Path, entry: Entry = "script") -> subprocess.CompletedProcess[str]:
    """Run ``instrumentor ARGS`` (the console script, or ``python -m instrumentor``) in ``cwd``."""
    return support.run_cli(*args, cwd=cwd, module=entry == "module")


def make_project(root: Path, plan: str = "kitchen", *, lock: str | None = None) -> Path:
    """A project in ``root`` whose pyproject names the sample ``plan``, copied as ``kitchen.py``."""
    root.mkdir(parents=True, exist_ok=True)
    use_plan(root, plan)
    settings = ['plan = "kitchen:Events"'] + ([f'lock = "{lock}"'] if lock else [])
    (root / "pyproject.toml").write_text(
        "[project]\nname = 'kitchen'\n\n[tool.instrumentor]\n" + "\n".join(settings) + "\n",
        encoding="utf-8",
    )
    return root


def use_plan(root: Path, plan: str) -> None:
    """Make the project's ``kitchen`` module the sample plan ``plan`` (a version of it)."""
    shutil.copyfile(PLANS / f"{plan}.py", root / "kitchen.py")

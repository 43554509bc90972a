"""docs/governance-plan.md shows real output: its commands are replayed on the sample project.

The page's ``console`` blocks hold ``$ instrumentor ...`` commands; the fenced block right after
one is what the command prints (standard output, then standard error). A command ending in
``# exits N`` must exit with N (else 0); ``| head -n N`` keeps the first N lines. An HTML comment
``<!-- plan: NAME -->`` switches the project to the sample plan ``tests/cli/plans/NAME.py``.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from tests.cli.cli_support import make_project, run_cli, use_plan

PAGE = Path(__file__).resolve().parents[2] / "docs" / "governance-plan.md"
_TOKEN = re.compile(
    r"<!-- plan: (?P<plan>\w+) -->"
    r"|^```console\n(?P<console>.*?)^```\n\n```\w*\n(?P<output>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)
_COMMAND = re.compile(
    r"^\$ (?P<cmd>.*?)(?: \| head -n (?P<head>\d+))?(?:\s+# exits (?P<code>\d))?$"
)
#: The sunset checks of `plan check` depend on the date: the replay pins it.
_TODAY = ("--today", "2026-01-01")


@dataclass
class Step:
    plan: str | None = None
    args: tuple[str, ...] = ()
    head: int | None = None
    code: int = 0
    output: str = ""


def steps(text: str) -> list[Step]:
    found = []
    for match in _TOKEN.finditer(text):
        if match["plan"]:
            found.append(Step(plan=match["plan"]))
            continue
        (line,) = match["console"].splitlines()
        command = _COMMAND.match(line)
        assert command is not None, line
        args = shlex.split(command["cmd"])
        assert args[0] == "instrumentor", line
        found.append(
            Step(
                args=tuple(args[1:]),
                head=int(command["head"]) if command["head"] else None,
                code=int(command["code"] or 0),
                output=match["output"],
            )
        )
    return found


def test_the_page_shows_what_the_commands_print(tmp_path: Path) -> None:
    """Each command on the governance page prints exactly the block shown and exits as stated."""
    project = make_project(tmp_path / "app")
    replayed = steps(PAGE.read_text(encoding="utf-8"))
    assert sum(bool(step.args) for step in replayed) >= 15  # the parser found the page's commands

    for step in replayed:
        if step.plan:
            use_plan(project, step.plan)
            continue
        args = (*step.args, *_TODAY) if step.args[:2] == ("plan", "check") else step.args
        result = run_cli(*args, cwd=project)
        printed = result.stdout + result.stderr
        if step.head is not None:
            printed = "".join(printed.splitlines(keepends=True)[: step.head])
        shown = " ".join(step.args)
        assert printed == step.output, f"`instrumentor {shown}` prints otherwise:\n{printed}"
        assert result.returncode == step.code, f"`instrumentor {shown}` exits {result.returncode}"

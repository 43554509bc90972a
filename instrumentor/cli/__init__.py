"""The ``instrumentor`` command line: keep the tracking plan and the code honest.

Console script ``instrumentor`` (also ``python -m instrumentor``)::

    instrumentor plan show|export|check|lock|diff   # the plan itself
    instrumentor lint PATH...                       # the code against the plan
    instrumentor doctor                             # the configuration of this environment
    instrumentor outbox status|drain|purge [PATH]   # the SQLite outbox

Exit codes: ``0`` clean, ``1`` findings (or a failed check), ``2`` a usage or set-up error (no plan
found, a module that does not import, an internal error), so CI can tell "the plan is wrong" from
"the job is wrong"; ``141`` when the reader of the output left early (``| head``).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from typing import cast

from instrumentor.cli._common import (
    EXIT_FINDINGS,
    EXIT_USAGE,
    CLIError,
    Finding,
    OutputFormat,
    print_findings,
)

__all__ = ["main"]

#: A reader that left the pipe early: the exit status of a process killed by SIGPIPE.
EXIT_BROKEN_PIPE = 141


def _parser() -> argparse.ArgumentParser:
    # Lazy on purpose: `instrumentor --help` should not import every command's dependencies.
    from instrumentor.cli import _doctor, _lint, _outbox, _plan

    parser = argparse.ArgumentParser(
        prog="instrumentor",
        description="Keep the tracking plan and the code honest.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _plan.register(commands)
    _lint.register(commands)
    _doctor.register(commands)
    _outbox.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return its exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except CLIError as exc:
        print(f"instrumentor: error: {exc}", file=sys.stderr)
        output = getattr(args, "format", "text")
        invalid_plan = exc.exit_code == EXIT_FINDINGS and getattr(args, "prints_findings", False)
        if invalid_plan and output in ("json", "github"):  # what reads stdout sees it too
            print_findings([Finding("invalid-plan", str(exc))], cast("OutputFormat", output))
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `instrumentor lint | head`: the reader left. Exit like a process killed by SIGPIPE
        # (128 + 13), so `set -o pipefail` still sees a failure, and keep Python from reporting
        # the broken stdout again at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception:
        traceback.print_exc()
        print(
            "instrumentor: internal error (the traceback above): please report it, with the "
            "command you ran",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return code

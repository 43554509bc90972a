"""``instrumentor outbox status|drain|purge``: look into and act on an SQLite outbox file.

The file is ``PATH``, else ``ANALYTICS_OUTBOX``. ``status`` opens it read-only; ``drain``
delivers one channel now through the transport the environment configures (the same
``ANALYTICS_*`` variables the application reads), showing progress; ``purge`` deletes messages
and asks first (``--yes`` in scripts). None of them creates a file.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from dataclasses import asdict
from typing import Any

from instrumentor._settings import Settings
from instrumentor._wiring import default_transports
from instrumentor.cli._common import EXIT_FINDINGS, EXIT_OK, CLIError
from instrumentor.delivery._outbox import OutboxError
from instrumentor.delivery._outbox_admin import drain, outbox_status, purge
from instrumentor.exceptions import ConfigurationError

__all__ = ["register"]


def _path(args: argparse.Namespace) -> str:
    path = args.path or os.environ.get("ANALYTICS_OUTBOX", "").strip()
    if not path:
        raise CLIError(
            "name the outbox file: instrumentor outbox COMMAND PATH, or ANALYTICS_OUTBOX"
        )
    return str(os.path.expanduser(path))


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _status(args: argparse.Namespace) -> int:
    try:
        status = outbox_status(_path(args))
    except OutboxError as exc:
        raise CLIError(str(exc)) from None
    if args.format == "json":
        json.dump(asdict(status), sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
        return EXIT_OK
    print(f"outbox:      {status.path}")
    print(f"waiting:     {status.pending} message(s), {status.leased} being delivered now")
    print(f"oldest:      {_age(status.oldest_age)}")
    dead = sum(status.dead.values())
    hint = " (delete them with: instrumentor outbox purge --dead)" if dead else ""
    print(f"dead:        {dead}{hint}")
    if status.last_error is not None:
        when = (
            _dt.datetime.fromtimestamp(status.last_error_at, _dt.timezone.utc).isoformat(
                timespec="seconds"
            )
            if status.last_error_at is not None
            else "?"
        )
        print(f"last error:  {status.last_error} (at {when})")
    else:
        print("last error:  none recorded")
    channels = sorted(set(status.channels) | set(status.dead))
    if channels:
        print("channels:")
        for channel in channels:
            note = "  (no process serves it)" if channel in status.unserved else ""
            waiting, dead = status.channels.get(channel, 0), status.dead.get(channel, 0)
            print(f"  {channel}: {waiting} waiting, {dead} dead{note}")
    return EXIT_OK


class _Progress:
    """A progress bar on a terminal; a line every few seconds otherwise (CI logs)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.tty and now - self.last < 2.0 and done < total:
            return
        self.last = now
        total = max(total, done, 1)
        if self.tty:
            filled = int(30 * done / total)
            bar = "#" * filled + "." * (30 - filled)
            self.stream.write(f"\r[{bar}] {done}/{total}")
        else:
            self.stream.write(f"drained {done}/{total}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


def _drain(args: argparse.Namespace) -> int:
    path = _path(args)
    try:
        transports = [
            t for t in default_transports(Settings.from_env()) if not getattr(t, "inline", False)
        ]
    except ConfigurationError as exc:
        raise CLIError(f"the ANALYTICS_* configuration is unusable: {exc}") from None
    if not transports:
        raise CLIError(
            "no transport to deliver with: set ANALYTICS_API_KEY (and ANALYTICS_ENDPOINT if the "
            "application sets it) as the application has them"
        )
    progress = _Progress(sys.stderr)
    try:
        result = drain(
            path, transports[0], channel=args.channel, progress=progress, timeout=args.timeout
        )
    except OutboxError as exc:
        raise CLIError(str(exc)) from None
    finally:
        progress.close()
        for transport in transports:
            transport.close()
    print(
        f"delivered {result.delivered}, failed {result.failed}, "
        f"{result.pending} still in the channel"
    )
    return EXIT_OK if result.pending == 0 and result.failed == 0 else EXIT_FINDINGS


def _purge(args: argparse.Namespace) -> int:
    path = _path(args)
    what = "dead message(s)" if args.dead else "message(s), waiting and dead,"
    try:
        status = outbox_status(path)
        count = sum(status.dead.values()) + (0 if args.dead else status.pending)
        if not args.yes:
            if not sys.stdin.isatty():
                raise CLIError(
                    f"purge deletes {count} {what} from {path} for good; add --yes to confirm"
                )
            answer = input(f"delete {count} {what} from {path} for good? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return EXIT_OK
        deleted = purge(path, dead_only=args.dead)
    except OutboxError as exc:
        raise CLIError(str(exc)) from None
    print(f"deleted {deleted} message(s) from {path}")
    return EXIT_OK


def register(commands: Any) -> None:
    """Add ``outbox`` and its subcommands to the top-level parser."""
    outbox = commands.add_parser("outbox", help="status, drain and purge of an SQLite outbox")
    sub = outbox.add_subparsers(title="outbox commands", metavar="COMMAND", required=True)

    def with_path(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("path", nargs="?", help="the outbox file (default: ANALYTICS_OUTBOX)")

    status = sub.add_parser("status", help="what the outbox holds (read-only)")
    with_path(status)
    status.add_argument("--format", choices=["text", "json"], default="text")
    status.set_defaults(handler=_status)

    drain_command = sub.add_parser("drain", help="deliver one channel now, with progress")
    with_path(drain_command)
    drain_command.add_argument(
        "--channel",
        help="the channel to drain (see status); default: the configured transport's own",
    )
    drain_command.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to try for at most (default 60)"
    )
    drain_command.set_defaults(handler=_drain)

    purge_command = sub.add_parser("purge", help="delete messages for good (asks first)")
    with_path(purge_command)
    purge_command.add_argument(
        "--dead", action="store_true", help="only the dead (poison) messages"
    )
    purge_command.add_argument("--yes", action="store_true", help="do not ask (scripts)")
    purge_command.set_defaults(handler=_purge)

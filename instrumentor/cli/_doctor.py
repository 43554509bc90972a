"""``instrumentor doctor``: is this environment configured the way you think it is?

It reads the ``ANALYTICS_*`` variables exactly as the library does at the first event, checks
each setting, and with ``--send-test`` sends one identify call and reports the answer. The key
is never printed: only whether it is set, its length, and what is wrong with it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import ipaddress
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from instrumentor._messages import IdentifyMessage
from instrumentor._settings import Settings
from instrumentor.cli._common import EXIT_FINDINGS, EXIT_OK
from instrumentor.delivery._outbox import OutboxError, check_path
from instrumentor.delivery._outbox_admin import outbox_status
from instrumentor.exceptions import ConfigurationError, DeliveryError

__all__ = ["Check", "diagnose", "register"]

Status = Literal["ok", "info", "warning", "error"]
_MARK = {"ok": "ok  ", "info": "info", "warning": "warn", "error": "FAIL"}
_DEFAULT_ENDPOINT = "https://in.accoil.com"
_STAGING_ENDPOINT = "https://instaging.accoil.com"  # for keys marked stg_ (see AccoilTransport)
ACCOIL_202_NOTE = (
    "Accoil answers 202 Accepted even for a wrong API key: a 202 proves that the endpoint is "
    "reachable and took the request, not that the key is right. Look for the test user in "
    "Accoil to be sure."
)


@dataclass(frozen=True)
class Check:
    """The verdict on one setting.

    Attributes:
        name: What was checked, e.g. ``api key``.
        status: ``ok``, ``info``, ``warning`` or ``error`` (errors make the exit code 1).
        detail: What was found, and what to do about it.
    """

    name: str
    status: Status
    detail: str


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_key(settings: Settings, environ: dict[str, str]) -> Check:
    raw = environ.get("ANALYTICS_API_KEY", "")
    if settings.api_key is None:
        if settings.debug:
            return Check("api key", "info", "not set (fine in debug mode: nothing is sent)")
        return Check(
            "api key",
            "warning",
            "not set: nothing will be sent. Set ANALYTICS_API_KEY, or ANALYTICS_DEBUG=true "
            "to print events instead",
        )
    value = settings.api_key.reveal()
    problems = []
    if raw != raw.strip():
        problems.append("it has leading or trailing whitespace (it is stripped when read)")
    if value[:1] in "\"'" or value[-1:] in "\"'":
        problems.append("it starts or ends with a quote: the quotes were probably pasted in")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        return Check(
            "api key",
            "error",
            f"set ({len(value)} characters) but it contains whitespace or unprintable "
            "characters, so it cannot be sent in a header: copy it again from Accoil",
        )
    if problems:
        return Check(
            "api key", "warning", f"set ({len(value)} characters), but " + "; ".join(problems)
        )
    return Check("api key", "ok", f"set ({len(value)} characters, not shown)")


def _url_secrets(url: str) -> list[str]:
    """The parts of ``url`` that may be credentials: the user info, the query, the fragment."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    return [s for s in (userinfo, parts.query, parts.fragment) if s]


def _redact(text: str, url: str) -> str:
    """``text`` with every credential-like part of ``url`` replaced by ``***``."""
    for secret in sorted(_url_secrets(url), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _check_endpoint(settings: Settings) -> Check:
    key = settings.api_key.reveal() if settings.api_key is not None else ""
    staging = key[:4].lower() == "stg_"
    raw = settings.endpoint or (_STAGING_ENDPOINT if staging else _DEFAULT_ENDPOINT)
    endpoint = _redact(raw, raw)
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Check(
            "endpoint",
            "error",
            f"{endpoint!r} is not an http:// or https:// URL (ANALYTICS_ENDPOINT)",
        )
    if _url_secrets(raw):
        return Check(
            "endpoint",
            "warning",
            f"{endpoint} carries credentials or a query string (shown as ***): they end up in "
            "proxy and server logs; put the key in ANALYTICS_API_KEY",
        )
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        return Check(
            "endpoint",
            "warning",
            f"{endpoint} is plain http to a remote host: the API key travels unencrypted",
        )
    default = "the default for a stg_ key, " if staging else "the default, "
    shown = default + endpoint if settings.endpoint is None else endpoint
    return Check("endpoint", "ok", shown)


def _check_outbox(path_text: str) -> Check:
    path = str(Path(path_text).expanduser())
    try:
        check_path(path)
        if not Path(path).exists():
            return Check("outbox", "ok", f"{path} (will be created)")
        status = outbox_status(path)  # read-only: writes nothing, takes no lock
    except OutboxError as exc:
        return Check("outbox", "error", str(exc))
    dead, unserved = sum(status.dead.values()), sum(status.unserved.values())
    age = f", the oldest {status.oldest_age:.0f} s old" if status.oldest_age is not None else ""
    detail = f"{path}: {status.pending} message(s) waiting{age}"
    if dead or unserved:
        detail += (
            f"; {dead} dead, {unserved} in channels no process serves: see "
            "`instrumentor outbox status`"
        )
        return Check("outbox", "warning", detail)
    return Check("outbox", "ok", detail)


def diagnose(environ: dict[str, str] | None = None) -> tuple[list[Check], Settings | None]:
    """Check the configuration that ``environ`` (default: ``os.environ``) gives the library."""
    env = dict(os.environ if environ is None else environ)
    checks: list[Check] = []
    try:
        settings = Settings.from_env(env)
    except ConfigurationError as exc:
        checks.append(Check("environment", "error", f"{exc}: tracking would be off"))
        return checks, None
    checks.append(Check("environment", "ok", "every ANALYTICS_* variable reads"))
    if not settings.enabled:
        checks.append(Check("enabled", "warning", "ANALYTICS_ENABLED is false: nothing is tracked"))
    if settings.debug:
        checks.append(
            Check(
                "debug",
                "info",
                "ANALYTICS_DEBUG is on: every message is printed to standard error and nothing "
                "is sent, not even through transports passed to configure(); unset "
                "ANALYTICS_DEBUG to send for real",
            )
        )
    checks.append(_check_key(settings, env))
    checks.append(_check_endpoint(settings))
    checks.append(
        Check(
            "instance level",
            "info",
            "on: the user id sent is the account id (one user per installation)"
            if settings.instance_level
            else "off: the user id sent is the signed-in user's id",
        )
    )
    if settings.strict:
        checks.append(
            Check(
                "strict",
                "warning",
                "ANALYTICS_STRICT is on: missing context raises; use it in tests, not production",
            )
        )
    outbox = env.get("ANALYTICS_OUTBOX", "").strip()
    if outbox:
        checks.append(_check_outbox(outbox))
    return checks, settings


def _send_test(settings: Settings, timeout: float, user_id: str) -> Check:
    # Lazy on purpose: httpx (~75 ms) loads only for --send-test, not for every command.
    from instrumentor.transports._accoil import AccoilTransport

    if settings.api_key is None:
        return Check("test call", "error", "no API key to send with (ANALYTICS_API_KEY)")
    try:
        transport = AccoilTransport(
            settings.api_key,
            endpoint=settings.endpoint or _DEFAULT_ENDPOINT,
            timeout=timeout,
            max_in_flight=1,
        )
    except ConfigurationError as exc:
        return Check("test call", "error", f"not sent: {exc}")
    message = IdentifyMessage(
        user_id=user_id,
        group_id=None,
        traits={"instrumentor_doctor": True},
        timestamp=_dt.datetime.now(_dt.timezone.utc),
    )
    # httpx bounds each connect, read and write, not the whole call (a server may dribble bytes,
    # a name may take long to resolve): the call runs on a daemon thread waited on for `timeout`.
    outcome: list[BaseException | None] = []

    def call() -> None:
        try:
            transport.deliver([message])
            outcome.append(None)
        except BaseException as exc:  # reported below, on the main thread
            outcome.append(exc)

    started = time.perf_counter()
    worker = threading.Thread(target=call, name="instrumentor-doctor", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        return Check(
            "test call",
            "error",
            f"no answer within {timeout:g} s (--timeout): the endpoint is unreachable or too slow",
        )
    transport.close()
    endpoint = settings.endpoint or _DEFAULT_ENDPOINT
    error = outcome[0]
    if isinstance(error, DeliveryError):
        return Check("test call", "error", _redact(f"refused or failed: {error}", endpoint))
    if error is not None:
        text = f"failed: {type(error).__name__}: {error}"
        return Check("test call", "error", _redact(text, endpoint))
    elapsed = (time.perf_counter() - started) * 1000
    return Check(
        "test call",
        "ok",
        f"identify of user {user_id!r} accepted in {elapsed:.0f} ms. {ACCOIL_202_NOTE}",
    )


def _run(args: argparse.Namespace) -> int:
    checks, settings = diagnose()
    if args.send_test and settings is not None:
        checks.append(_send_test(settings, args.timeout, args.test_user))
    elif not args.send_test:
        checks.append(
            Check("test call", "info", "not sent; add --send-test to send one identify call")
        )
    failed = any(c.status == "error" for c in checks)
    if args.format == "json":
        json.dump({"ok": not failed, "checks": [asdict(c) for c in checks]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            print(f"[{_MARK[c.status]}] {c.name.ljust(width)}  {c.detail}")
        print("\n" + ("problems found" if failed else "no problems found"))
    return EXIT_FINDINGS if failed else EXIT_OK


def register(commands: Any) -> None:
    """Add ``doctor`` to the top-level parser."""
    doctor = commands.add_parser(
        "doctor", help="check the analytics configuration of this environment"
    )
    doctor.add_argument(
        "--send-test", action="store_true", help="send one identify call and report the answer"
    )
    doctor.add_argument(
        "--timeout", type=float, default=5.0, help="seconds the test call may take (default 5)"
    )
    doctor.add_argument(
        "--test-user",
        default="instrumentor-doctor",
        help="the user id of the test identify call (default: instrumentor-doctor)",
    )
    doctor.add_argument("--format", choices=["text", "json"], default="text")
    doctor.set_defaults(handler=_run)

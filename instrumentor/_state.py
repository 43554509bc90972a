"""State: the installed runtime, and incident reporting. The lowest floor; it builds nothing.

The wiring (:mod:`instrumentor._wiring`) turns settings into a :class:`Runtime` and installs it
here. The layers below the wiring read it through :func:`active`, which on first use asks the
loader the wiring registered to configure from the environment (an upward call made without an
upward import). Reporting an incident (:func:`report`) never configures anything: before a
configuration exists it is counted and logged, and there is no hook to call.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
from collections.abc import Callable
from typing import Any

from instrumentor._diagnostics import Incident, report_to
from instrumentor._settings import Settings

__all__ = ["Runtime", "active", "current", "install", "report", "reporter", "set_loader"]


_generations = itertools.count(1)


class Runtime:
    """A configuration as installed: its settings, the flags the hot path reads, its receivers.

    Args:
        settings: The settings in force.
        receivers: What the wiring connected to the emission signal for these settings.
        owned: The receivers this configuration created (and so retires), not ones passed in.
    """

    __slots__ = (
        "bundle_ttl",
        "bundles",
        "enabled",
        "from_bad_env",
        "generation",
        "identify_links_top",
        "instance_level",
        "on_error",
        "outbox_problems",
        "owned",
        "receivers",
        "settings",
        "span_event_user",
        "span_events",
        "strict",
    )

    def __init__(
        self,
        settings: Settings,
        receivers: tuple[Any, ...] = (),
        owned: list[Any] | None = None,
    ) -> None:
        self.settings = settings
        self.enabled = settings.enabled
        self.strict = settings.strict
        self.instance_level = settings.instance_level
        self.bundle_ttl = float(settings.bundle_ttl)
        self.span_events = settings.span_events
        self.span_event_user = settings.span_event_user
        self.on_error = settings.on_error
        self.receivers = receivers
        #: A number no other runtime of this process has (caches key on it, not on the runtime);
        #: renewed when the bundle memory changes in a way cached verdicts cannot see.
        self.generation = next(_generations)
        #: The emitter's memory of what this runtime already sent (made on the first track).
        self.bundles: Any = None
        #: Whether every receiver's transport links a user to the account named by an identify
        #: (Accoil does): the account's group call is then needed once per account, for its
        #: traits, not once per user.
        self.identify_links_top = bool(receivers) and all(
            getattr(getattr(r, "transport", None), "identify_links_account", False)
            for r in receivers
        )
        self.owned: list[Any] = owned if owned is not None else []
        #: True when the environment could not be read at first use (tracking is off).
        self.from_bad_env = False
        #: Outboxes that could not be opened (their destinations deliver from memory).
        self.outbox_problems: list[str] = []

    def renew_generation(self) -> None:
        """Take a new generation: every verdict cached under the old one is stale at once."""
        self.generation = next(_generations)

    def report(self, incident: Incident, key: str | None = None, *, sampled: bool = False) -> None:
        """Count, log (rate-limited per ``key``, by default the site) and call ``on_error``.

        ``sampled`` rate-limits the ``on_error`` call like the log line (for incidents that
        outside input can cause at any rate).
        """
        report_to(incident, self.on_error, key, sampled=sampled)


#: Serialises installing and replacing runtimes (the wiring holds it while it builds one).
lock = threading.RLock()
#: The installed runtime, or ``None`` while unconfigured: read it (the hot path does), never
#: assign it; :func:`install` does.
installed: Runtime | None = None
_loader: Callable[[], Runtime] | None = None


def current() -> Runtime | None:
    """The installed runtime, or ``None`` while unconfigured. Reads only."""
    return installed


def active() -> Runtime:
    """The installed runtime; on first use, the one the loader builds from the environment.

    Raises:
        RuntimeError: If nothing registered a loader (``instrumentor._wiring`` was not
            imported; ``import instrumentor`` always imports it).
    """
    current_ = installed
    if current_ is not None:
        return current_
    with lock:
        if installed is not None:
            return installed
        if _loader is None:
            raise RuntimeError("instrumentor is not wired: import instrumentor first")
        return _loader()


def install(runtime: Runtime | None) -> Runtime | None:
    """Make ``runtime`` the installed one; returns the one it replaces (call with :data:`lock`)."""
    global installed
    previous, installed = installed, runtime
    return previous


def set_loader(loader: Callable[[], Runtime]) -> None:
    """Register what :func:`active` calls to configure from the environment on first use."""
    global _loader
    _loader = loader


def report(incident: Incident, key: str | None = None, *, sampled: bool = False) -> None:
    """Report ``incident`` to the installed configuration's hook (if any). Never configures.

    Args:
        incident: What happened.
        key: Rate-limit key of the log line (and of the hook, if ``sampled``); the site by
            default.
        sampled: Call ``on_error`` only when the log line is written, once per minute per key.
    """
    current_ = installed
    report_to(incident, current_.on_error if current_ is not None else None, key, sampled=sampled)


def reporter(site: str) -> Callable[[str, str, BaseException | None], None]:
    """A ``(kind, message, error)`` callable that reports incidents at ``site`` (destinations)."""
    return functools.partial(_report_at, site)


def _report_at(site: str, kind: str, message: str, error: BaseException | None) -> None:
    report(Incident(kind, message, site=site, error=error))


def _after_fork_in_child() -> None:
    # Another thread may have held the lock at fork time (configuring): not in the child.
    global lock
    lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

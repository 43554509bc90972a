"""Configuration: from the environment, or ``configure()``; swappable and restorable in tests.

Unconfigured means silent: until ``configure()`` is called or the first event is tracked,
nothing is read, connected or started. At the first event the environment is read once:

=========================== ==========================================================
``ANALYTICS_API_KEY``        the provider key (kept in a :class:`Secret`, never printed)
``ANALYTICS_DEBUG``          ``true``: print what would be sent instead of sending
``ANALYTICS_INSTANCE_LEVEL`` ``true``: the user id sent is the account id
``ANALYTICS_STRICT``         ``true``: missing context raises (tests, development)
``ANALYTICS_ENABLED``        ``false``: track nothing at all (a kill switch)
``ANALYTICS_BUNDLE_TTL``     seconds an unchanged identify/group is not re-sent (0: always)
``ANALYTICS_ENDPOINT``       the provider's base URL (for proxies and tests)
=========================== ==========================================================
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from instrumentor.diagnostics import Incident, _diagnostics
from instrumentor.exceptions import ConfigurationError
from instrumentor.signals import event_emitted

if TYPE_CHECKING:
    from instrumentor.transports.base import Transport

__all__ = [
    "Secret",
    "Settings",
    "configure",
    "configured",
    "current_settings",
    "reset_configuration",
]

_log = logging.getLogger("instrumentor")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class Secret:
    """A secret string (the API key) that never shows itself in a repr, str or log line.

    Args:
        value: The secret.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __bool__(self) -> bool:
        return bool(self._value)


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(f"{name}={raw!r} is not a boolean; use true or false")


def _parse_ttl(raw: str) -> float:
    try:
        ttl = float(raw)
    except ValueError:
        raise ConfigurationError(
            f"ANALYTICS_BUNDLE_TTL={raw!r} is not a number of seconds"
        ) from None
    return ttl


@dataclass(frozen=True)
class Settings:
    """The active configuration.

    Build it with :func:`configure`; read it with :func:`current_settings`.

    Attributes:
        api_key: The provider key, or ``None``.
        endpoint: The provider's base URL, or ``None`` for the default.
        debug: Print messages instead of sending them.
        instance_level: Send the top-level group (account) id as the user id.
        strict: Raise :class:`~instrumentor.MissingContextError` instead of logging.
        enabled: ``False`` turns all tracking off.
        bundle_ttl: Seconds during which an unchanged identify or group is not re-sent;
            ``0`` sends them with every track.
        transports: Where messages go; ``None`` chooses from the settings (console in debug).
        on_error: Called with every :class:`~instrumentor.Incident`; must not block.
    """

    api_key: Secret | None = None
    endpoint: str | None = None
    debug: bool = False
    instance_level: bool = False
    strict: bool = False
    enabled: bool = True
    bundle_ttl: float = 3600.0
    transports: tuple[Transport, ...] | None = None
    on_error: Callable[[Incident], None] | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the ``ANALYTICS_*`` variables (see the module docs).

        Raises:
            ConfigurationError: If a variable holds a value that cannot be read.
        """
        env = os.environ if environ is None else environ
        key = env.get("ANALYTICS_API_KEY", "").strip()
        settings = cls(
            api_key=Secret(key) if key else None,
            endpoint=env.get("ANALYTICS_ENDPOINT") or None,
            debug=_parse_bool("ANALYTICS_DEBUG", env.get("ANALYTICS_DEBUG", "false")),
            instance_level=_parse_bool(
                "ANALYTICS_INSTANCE_LEVEL", env.get("ANALYTICS_INSTANCE_LEVEL", "false")
            ),
            strict=_parse_bool("ANALYTICS_STRICT", env.get("ANALYTICS_STRICT", "false")),
            enabled=_parse_bool("ANALYTICS_ENABLED", env.get("ANALYTICS_ENABLED", "true")),
            bundle_ttl=_parse_ttl(env.get("ANALYTICS_BUNDLE_TTL", "3600")),
        )
        settings._validate()
        return settings

    def __post_init__(self) -> None:
        key: object = self.api_key
        if isinstance(key, str):
            object.__setattr__(self, "api_key", Secret(key) if key else None)
        elif key is not None and not isinstance(key, Secret):
            raise ConfigurationError(
                f"api_key must be a str or Secret, got {type(key).__qualname__}"
            )

    def _validate(self) -> None:
        if not isinstance(self.bundle_ttl, (int, float)) or not self.bundle_ttl >= 0:
            raise ConfigurationError(
                f"bundle_ttl must be a number of seconds >= 0, got {self.bundle_ttl!r}"
            )
        for transport in self.transports or ():
            if not callable(getattr(transport, "deliver", None)):
                raise ConfigurationError(
                    f"{transport!r} is not a transport: it needs deliver(batch) and close()"
                )
        if self.on_error is not None and not callable(self.on_error):
            raise ConfigurationError(f"on_error must be callable, got {self.on_error!r}")


_warned_no_http = False


def _default_transports(settings: Settings) -> tuple[Transport, ...]:
    global _warned_no_http
    from instrumentor.transports.console import ConsoleTransport

    if settings.debug:
        return (ConsoleTransport(),)
    if settings.api_key and not _warned_no_http:
        _warned_no_http = True
        _log.warning(
            "instrumentor: an API key is configured but this version has no HTTP transport, "
            "so nothing is sent. Set ANALYTICS_DEBUG=true (or configure(debug=True)) to see "
            "the messages."
        )
    return ()


class Runtime:
    """The installed configuration: settings, connected receivers and bundle bookkeeping."""

    __slots__ = (
        "bundle_ttl",
        "enabled",
        "from_bad_env",
        "instance_level",
        "receivers",
        "seen",
        "settings",
        "strict",
    )

    def __init__(self, settings: Settings) -> None:
        from instrumentor.transports.base import InlineDestination

        self.settings = settings
        self.strict = settings.strict
        self.enabled = settings.enabled
        #: True when the environment could not be read at first use (tracking is off).
        self.from_bad_env = False
        self.instance_level = settings.instance_level
        self.bundle_ttl = float(settings.bundle_ttl)
        #: bundle key -> expiry (time.time(), the clock the emission reads anyway); see emitter.
        self.seen: dict[Any, float] = {}
        transports = (
            settings.transports
            if settings.transports is not None
            else _default_transports(settings)
        )
        self.receivers = tuple(InlineDestination(t) for t in transports) if settings.enabled else ()

    def report(self, incident: Incident, key: str | None = None) -> None:
        """Count, log (rate-limited per ``key``, by default the site) and call ``on_error``."""
        _diagnostics.report(incident, self.settings.on_error, key)


_lock = threading.RLock()
_runtime: Runtime | None = None


def _install(runtime: Runtime | None) -> None:
    global _runtime
    old = _runtime
    if old is not None:
        for receiver in old.receivers:
            event_emitted.disconnect(receiver)
    if runtime is not None:
        for receiver in runtime.receivers:
            event_emitted.connect(receiver, weak=False)
        event_emitted.on_receiver_error = runtime.report
    else:
        event_emitted.on_receiver_error = None
    _runtime = runtime


def runtime() -> Runtime:
    """The installed runtime; on first use, configured once from the environment."""
    current = _runtime
    if current is not None:
        return current
    with _lock:
        if _runtime is not None:
            return _runtime
        try:
            settings = Settings.from_env()
            bad_env = False
        except ConfigurationError as exc:
            # Never raise into the first tracked call: turn tracking off, loudly. A later
            # configure() reads the environment again (and raises there, at start-up).
            settings = Settings(enabled=False)
            bad_env = True
            _diagnostics.report(
                Incident(
                    "bad_configuration",
                    f"{exc}; tracking is off until the variable is fixed or configure() is called",
                    error=exc,
                ),
                None,
            )
        runtime_ = Runtime(settings)
        runtime_.from_bad_env = bad_env
        _install(runtime_)
        return runtime_


_UNSET: Any = object()


def configure(
    *,
    api_key: str | Secret | None = _UNSET,
    endpoint: str | None = _UNSET,
    debug: bool = _UNSET,
    instance_level: bool = _UNSET,
    strict: bool = _UNSET,
    enabled: bool = _UNSET,
    bundle_ttl: float = _UNSET,
    transports: Sequence[Transport] | None = _UNSET,
    on_error: Callable[[Incident], None] | None = _UNSET,
) -> Settings:
    """Configure instrumentor; settings not given keep their current value.

    The first call starts from the environment (see the module docs); later calls change only
    what they name. Safe to call at any time: ``@tracks`` reads the configuration per call.

    Args:
        api_key: The provider key (a string or :class:`Secret`).
        endpoint: The provider's base URL.
        debug: Print what would be sent instead of sending.
        instance_level: Send the account id as the user id.
        strict: Raise on missing context instead of logging (for tests and development).
        enabled: ``False`` turns tracking off entirely.
        bundle_ttl: Seconds an unchanged identify/group is not re-sent; ``0`` always sends.
        transports: Replace the transports; ``None`` chooses from the other settings.
        on_error: Called with every run-time :class:`~instrumentor.Incident`.

    Returns:
        The settings now in force.

    Raises:
        ConfigurationError: If a value is invalid (nothing is changed then).
    """
    with _lock:
        current = _runtime
        usable = current is not None and not current.from_bad_env
        base = current.settings if current is not None and usable else Settings.from_env()
        changes: dict[str, Any] = {
            name: value
            for name, value in (
                ("api_key", api_key),
                ("endpoint", endpoint),
                ("debug", debug),
                ("instance_level", instance_level),
                ("strict", strict),
                ("enabled", enabled),
                ("bundle_ttl", bundle_ttl),
                ("transports", transports),
                ("on_error", on_error),
            )
            if value is not _UNSET
        }
        if isinstance(changes.get("api_key"), str):
            changes["api_key"] = Secret(changes["api_key"]) if changes["api_key"] else None
        if changes.get("transports") is not None:
            changes["transports"] = tuple(changes["transports"])
        for flag in ("debug", "instance_level", "strict", "enabled"):
            if flag in changes and not isinstance(changes[flag], bool):
                raise ConfigurationError(f"{flag} must be True or False, got {changes[flag]!r}")
        settings = replace(base, **changes)
        settings._validate()
        _install(Runtime(settings))
        return settings


def current_settings() -> Settings:
    """The settings in force (read from the environment if nothing was configured yet)."""
    return runtime().settings


def reset_configuration() -> None:
    """Forget all configuration: back to unconfigured, read from the environment on next use."""
    with _lock:
        _install(None)


@contextlib.contextmanager
def configured(**overrides: Any) -> Iterator[Settings]:
    """Configure for a block, then restore exactly what was installed before (tests).

    Takes the keywords of :func:`configure`.
    """
    with _lock:
        previous = _runtime
        settings = configure(**overrides)
    try:
        yield settings
    finally:
        with _lock:
            _install(previous)

"""Settings: every field declared once, with its environment variable, parser, default and doc.

:class:`Settings` is the single declaration. Each field carries a :class:`Option` in its
metadata; :meth:`Settings.from_env`, the keyword arguments :func:`~instrumentor.configure`
accepts, the reuse check of the wiring (``rebuilds``) and the table on the configuration docs
page (:func:`settings_table`) are all read from it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, TypedDict, runtime_checkable

from instrumentor._diagnostics import Incident
from instrumentor._protocols import Receiver, Transport
from instrumentor._secret import Secret
from instrumentor.exceptions import ConfigurationError

__all__ = [
    "ENVIRONMENT_VARIABLES",
    "Option",
    "QueueBackend",
    "Secret",
    "Settings",
    "SettingsChanges",
]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


@runtime_checkable
class QueueBackend(Protocol):
    """Builds the destinations a configuration publishes through (e.g. ``CeleryQueue``).

    By default each transport that does I/O is put behind an in-memory
    :class:`~instrumentor.delivery.Destination` that calls the provider itself. A queue backend
    replaces those: given the settings, it builds the destinations that hand the events on (for
    example one per route, publishing batches to Celery); the transports that do I/O are then the
    business of whoever consumes the queue. Inline transports and ``Destination`` objects passed
    in stay in the process.
    """

    def destinations(self, settings: Settings) -> Sequence[Receiver]:
        """The destinations for ``settings``, each queueing ``settings.queue_size`` events.

        Called whenever a configuration is installed, except in debug mode (which publishes
        nothing); must not do I/O. Raises
        :class:`~instrumentor.ConfigurationError` if nothing would be handed on.
        """


# --- parsers of environment values ---------------------------------------------------------


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(f"{name}={raw!r} is not a boolean; use true or false")


def _parse_number(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number") from None


def _parse_int(name: str, raw: str) -> int:
    return int(_parse_number(name, raw))


def _parse_secret(name: str, raw: str) -> Secret | None:
    key = raw.strip()
    return Secret(key) if key else None


def _parse_text(name: str, raw: str) -> str | None:
    return raw.strip() or None


def _parse_choice(name: str, raw: str) -> str:
    return raw.strip().lower()


def _is_transport(value: Any) -> bool:
    return callable(getattr(value, "deliver", None))


def _is_queued_receiver(value: Any) -> bool:
    """A destination given in place of a transport: a receiver that flushes and shuts down."""
    return callable(value) and all(
        callable(getattr(value, name, None)) for name in ("flush", "shutdown", "stats")
    )


# --- checks of values, however they were given ------------------------------------------------


def _non_negative(value: Any) -> bool:
    return isinstance(value, int | float) and value >= 0


def _at_least_one(value: Any) -> bool:
    try:
        return bool(value >= 1)
    except TypeError:
        return False


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and value >= 1


@dataclass(frozen=True)
class Option:
    """How one setting is read, checked and documented (the metadata of a :class:`Settings` field).

    Attributes:
        doc: One sentence on what the setting does (the docs table and docstrings show it).
        env: The environment variable it is read from, or ``None`` (``configure()`` only).
        parse: Turns the variable's text into the value; raises ``ConfigurationError``.
        values: What the docs say it accepts (``"boolean"``, ``"seconds, >= 0"``...).
        check: Whether a value is acceptable, for values given to ``configure()``.
        expect: What the error message asks for when ``check`` fails.
        rebuilds: A change needs new receivers (destinations, transports); otherwise the ones
            installed are kept and only the flags change.
        chooses_transports: The setting only chooses the default transports, so it rebuilds
            nothing while ``transports`` are given (and unchanged).
    """

    doc: str
    env: str | None = None
    parse: Callable[[str, str], Any] | None = None
    values: str = ""
    check: Callable[[Any], bool] | None = None
    expect: str = ""
    rebuilds: bool = False
    chooses_transports: bool = False


def _setting(default: Any, option: Option, *, repr_: bool = True) -> Any:
    return field(default=default, repr=repr_, metadata={"option": option})


def _flag(
    doc: str, env: str | None = None, *, rebuilds: bool = False, chooses_transports: bool = False
) -> Option:
    """The declaration of a boolean setting."""
    return Option(
        doc,
        env=env,
        parse=_parse_bool,
        values="boolean",
        check=lambda v: isinstance(v, bool),
        expect="True or False",
        rebuilds=rebuilds,
        chooses_transports=chooses_transports,
    )


@dataclass(frozen=True)
class Settings:
    """The active configuration: build it with ``configure()``, read it with ``current_settings()``.

    Every field is documented once, in its :class:`Option` (``Settings.option(name)``), and on
    the configuration docs page, which is generated from the same declarations.
    """

    api_key: Secret | None = _setting(
        None,
        Option(
            "The provider key, held in a `Secret`; alone, it turns on queued delivery to Accoil.",
            env="ANALYTICS_API_KEY",
            parse=_parse_secret,
            values="string",
            rebuilds=True,
            chooses_transports=True,
        ),
    )
    endpoint: str | None = _setting(
        None,
        Option(
            "The provider's base URL, for proxies and tests (default: Accoil's).",
            env="ANALYTICS_ENDPOINT",
            parse=_parse_text,
            values="URL",
            rebuilds=True,
            chooses_transports=True,
        ),
    )
    debug: bool = _setting(
        False,
        _flag(
            "Print every message to standard error (`ConsoleTransport`) and send nothing, "
            "whatever else is configured: transports given in `transports` are held back (only "
            "memory and console transports still receive) and a `queue` publishes nothing.",
            "ANALYTICS_DEBUG",
            rebuilds=True,
            chooses_transports=True,
        ),
    )
    instance_level: bool = _setting(
        False,
        _flag(
            "Send the account id as the user id (instance-level tracking).",
            "ANALYTICS_INSTANCE_LEVEL",
        ),
    )
    strict: bool = _setting(
        False,
        _flag(
            "Raise `MissingContextError` on a missing user or group and `TrackingUsageError` on "
            "misuse, instead of reporting them (tests, development).",
            "ANALYTICS_STRICT",
        ),
    )
    enabled: bool = _setting(
        True,
        _flag(
            "`false` is a kill switch: nothing is emitted, not even to your own receivers.",
            "ANALYTICS_ENABLED",
            rebuilds=True,
        ),
    )
    bundle_ttl: float = _setting(
        3600.0,
        Option(
            "Seconds an unchanged identify or group call is not re-sent (a switch of group, or "
            "a change of traits, sends it at once); `0` sends them with every track.",
            env="ANALYTICS_BUNDLE_TTL",
            parse=_parse_number,
            values="seconds, >= 0",
            check=_non_negative,
            expect="a number of seconds >= 0",
        ),
    )
    queue_size: int = _setting(
        100_000,
        Option(
            "Events each destination queues before dropping new ones (counted).",
            env="ANALYTICS_QUEUE_SIZE",
            parse=_parse_int,
            values="events, >= 1",
            check=_at_least_one,
            expect="at least 1",
            rebuilds=True,
        ),
    )
    exit_timeout: float = _setting(
        2.0,
        Option(
            "Seconds the flush at interpreter exit may take in total; `0` disables it.",
            env="ANALYTICS_EXIT_TIMEOUT",
            parse=_parse_number,
            values="seconds, >= 0",
            check=_non_negative,
            expect=">= 0 seconds",
        ),
    )
    span_events: bool = _setting(
        True,
        _flag(
            "Add each tracked event to the current OpenTelemetry span (when an SDK is installed "
            "and the span records), and its trace ids to the track message.",
            "ANALYTICS_SPAN_EVENTS",
        ),
    )
    span_event_user: bool = _setting(
        False,
        _flag(
            "Include the user id (`enduser.id`) in those span events (personal data: off).",
        ),
    )
    outbox: str | None = _setting(
        None,
        Option(
            "An SQLite file through which the destinations this configuration builds queue "
            "durably (survives crashes and deploys); unset: memory.",
            env="ANALYTICS_OUTBOX",
            parse=_parse_text,
            values="file path",
            check=lambda v: v is None or (isinstance(v, str) and bool(v)),
            expect="a file path",
            rebuilds=True,
        ),
    )
    outbox_max_rows: int = _setting(
        1_000_000,
        Option(
            "Messages the outbox holds before new ones are dropped (counted).",
            env="ANALYTICS_OUTBOX_MAX_ROWS",
            parse=_parse_int,
            values="messages, >= 1",
            check=_positive_int,
            expect="an integer >= 1",
            rebuilds=True,
        ),
    )
    outbox_synchronous: str = _setting(
        "normal",
        Option(
            "`full` also survives an OS crash or power loss, at an fsync per commit.",
            env="ANALYTICS_OUTBOX_SYNCHRONOUS",
            parse=_parse_choice,
            values="`normal`, `full`",
            check=lambda v: v in ("normal", "full"),
            expect="'normal' or 'full'",
            rebuilds=True,
        ),
    )
    transports: tuple[Transport | Receiver, ...] | None = _setting(
        None,
        Option(
            "Where messages go; unset chooses from the other settings (the console in debug "
            "mode, else Accoil when a key is set; in debug mode only the memory and console "
            "transports given receive). A transport that does I/O is put behind a "
            "queued `Destination`; pass a `Destination` yourself to choose its options.",
            values="transports",
            rebuilds=True,
        ),
    )
    on_error: Callable[[Incident], None] | None = _setting(
        None,
        Option(
            "Called with every run-time `Incident`; must not block.",
            values="callable",
            check=lambda v: v is None or callable(v),
            expect="callable",
        ),
        repr_=False,
    )
    queue: QueueBackend | None = _setting(
        None,
        Option(
            "A queue backend such as `CeleryQueue(app)`, which builds the destinations (one per "
            "route) in place of every transport that does I/O; an alternative to `outbox`.",
            values="queue backend",
            check=lambda v: v is None or callable(getattr(v, "destinations", None)),
            expect="None or a queue backend such as CeleryQueue(app)",
            rebuilds=True,
        ),
    )

    @staticmethod
    def option(name: str) -> Option:
        """The declaration of the setting ``name``."""
        for f in fields(Settings):
            if f.name == name:
                option: Option = f.metadata["option"]
                return option
        raise KeyError(name)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the ``ANALYTICS_*`` variables (:data:`ENVIRONMENT_VARIABLES`).

        Raises:
            ConfigurationError: If a variable holds a value that cannot be read.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            option: Option = f.metadata["option"]
            if option.env is not None and option.parse is not None and option.env in env:
                values[f.name] = option.parse(option.env, env[option.env])
        settings = cls(**values)
        settings.validate()
        return settings

    def __post_init__(self) -> None:
        key: object = self.api_key
        if isinstance(key, str):
            object.__setattr__(self, "api_key", Secret(key) if key else None)
        elif key is not None and not isinstance(key, Secret):
            raise ConfigurationError(
                f"api_key must be a str or Secret, got {type(key).__qualname__}"
            )
        outbox: object = self.outbox
        if isinstance(outbox, os.PathLike):
            object.__setattr__(self, "outbox", os.fspath(outbox))
        transports: object = self.transports
        if transports is not None and not isinstance(transports, tuple):
            object.__setattr__(self, "transports", tuple(transports))  # type: ignore[arg-type]

    def validate(self) -> None:
        """Check every value against its declaration, and the settings against each other.

        Raises:
            ConfigurationError: Naming the setting and what it accepts.
        """
        if self.queue is not None and self.outbox is not None:
            raise ConfigurationError(
                "outbox and queue are alternatives: the outbox keeps messages on this machine's "
                "disk, a queue such as CeleryQueue hands them to a broker. Set one of them"
            )
        for f in fields(self):
            option: Option = f.metadata["option"]
            value = getattr(self, f.name)
            if option.check is not None and not option.check(value):
                raise ConfigurationError(f"{f.name} must be {option.expect}, got {value!r}")
        for transport in self.transports or ():
            if not (_is_transport(transport) or _is_queued_receiver(transport)):
                raise ConfigurationError(
                    f"{transport!r} is not a transport: it needs deliver(batch) and close()"
                )

    def same_receivers(self, other: Settings) -> bool:
        """Whether ``other`` builds the same receivers (no field marked ``rebuilds`` differs).

        Settings that only choose the default transports (the key, the endpoint, debug) do not
        count while both give ``transports``: the transports given are what is built. (Debug
        also holds back the transports given that send: the wiring rebuilds for that.)
        """
        given = self.transports is not None and other.transports is not None
        for f in fields(self):
            option: Option = f.metadata["option"]
            if not option.rebuilds or (given and option.chooses_transports):
                continue
            if getattr(self, f.name) != getattr(other, f.name):
                return False
        return True

    def changed(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated.

        Raises:
            TypeError: For a keyword that is not a setting.
            ConfigurationError: For a value its declaration does not accept.
        """
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise TypeError(f"configure() got an unexpected keyword argument {unknown[0]!r}")
        settings = dataclasses.replace(self, **changes)
        settings.validate()
        return settings


#: Every environment variable instrumentor reads, in declaration order.
ENVIRONMENT_VARIABLES: tuple[str, ...] = tuple(
    f.metadata["option"].env for f in fields(Settings) if f.metadata["option"].env is not None
)


class SettingsChanges(TypedDict, total=False):
    """The keywords of ``configure()``: one per :class:`Settings` field (checked by a test).

    The declarations live on :class:`Settings`; this mirror exists for type checkers, which
    cannot read keyword arguments from a dataclass.
    """

    api_key: str | Secret | None
    endpoint: str | None
    debug: bool
    instance_level: bool
    strict: bool
    enabled: bool
    bundle_ttl: float
    queue_size: int
    exit_timeout: float
    span_events: bool
    span_event_user: bool
    outbox: str | os.PathLike[str] | None
    outbox_max_rows: int
    outbox_synchronous: str
    transports: Any
    on_error: Callable[[Incident], None] | None
    queue: QueueBackend | None


def settings_table() -> str:
    """The Markdown table of every setting: ``docs/configuration.md``'s ``settings:`` region.

    ``tests/test_settings_docs.py`` fails until the page holds exactly this table.
    """
    rows = [
        "| `configure()` keyword | Environment variable | Values | Default | Effect |",
        "|---|---|---|---|---|",
    ]
    for f in fields(Settings):
        option: Option = f.metadata["option"]
        env = f"`{option.env}`" if option.env else "—"
        default = "unset" if f.default is None else f"`{f.default!r}`"
        rows.append(f"| `{f.name}` | {env} | {option.values} | {default} | {option.doc} |")
    return "\n".join(rows) + "\n"

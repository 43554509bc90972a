"""Configuration from the environment and configure(); the debug console; secrets stay secret."""

from __future__ import annotations

import io
import json
import logging

import pytest

import instrumentor
from instrumentor import (
    ConfigurationError,
    Secret,
    Settings,
    bind_context,
    configure,
    configured,
    current_settings,
    stats,
    track,
)
from instrumentor.testing import installed_destinations
from instrumentor.transports import ConsoleTransport, MemoryTransport
from tests.plan import Events

KEY = "sk_live_4f9c2b7e"


@pytest.fixture
def identity() -> None:
    bind_context(
        user_id="u_1",
        user_traits={"password": "hunter2", "note": f"key is {KEY}", "email": "a@b.c"},
        account_id="acc_1",
    )


class TestEnvironment:
    def test_defaults(self) -> None:
        """With nothing set: no key, debug off, enabled, one hour bundle TTL."""
        settings = Settings.from_env({})
        assert settings.api_key is None
        assert (settings.debug, settings.instance_level, settings.strict) == (False, False, False)
        assert settings.enabled is True
        assert settings.bundle_ttl == 3600

    def test_reads_every_variable(self) -> None:
        """Each ANALYTICS_* variable maps to its setting."""
        settings = Settings.from_env(
            {
                "ANALYTICS_API_KEY": KEY,
                "ANALYTICS_DEBUG": "TRUE",
                "ANALYTICS_INSTANCE_LEVEL": "1",
                "ANALYTICS_STRICT": "yes",
                "ANALYTICS_ENABLED": "off",
                "ANALYTICS_BUNDLE_TTL": "60",
                "ANALYTICS_ENDPOINT": "http://127.0.0.1:9999",
            }
        )
        assert settings.api_key == Secret(KEY)
        assert (settings.debug, settings.instance_level, settings.strict) == (True, True, True)
        assert settings.enabled is False
        assert settings.bundle_ttl == 60
        assert settings.endpoint == "http://127.0.0.1:9999"

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("ANALYTICS_DEBUG", "maybe"),
            ("ANALYTICS_BUNDLE_TTL", "soon"),
            ("ANALYTICS_BUNDLE_TTL", "-1"),
        ],
    )
    def test_bad_values_are_clear_errors(self, name: str, value: str) -> None:
        """An unreadable value names the variable."""
        with pytest.raises(ConfigurationError, match=name.split("_", 1)[1].lower() + "|" + name):
            Settings.from_env({name: value})

    def test_bad_environment_at_first_track_turns_tracking_off(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Read lazily at the first event, a bad variable never raises into the caller."""
        monkeypatch.setenv("ANALYTICS_DEBUG", "maybe")
        bind_context(user_id="u_1", account_id="acc_1")
        with caplog.at_level(logging.WARNING, "instrumentor"):
            track(Events.PLAN_UPGRADED)
        assert current_settings().enabled is False
        assert stats()["bad_configuration"] == 1
        assert "ANALYTICS_DEBUG" in caplog.text

    def test_configure_after_a_bad_environment_reads_it_again(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """After the lazy fallback, configure() raises on the bad variable; fixed, it works."""
        monkeypatch.setenv("ANALYTICS_DEBUG", "maybe")
        monkeypatch.setenv("ANALYTICS_INSTANCE_LEVEL", "true")
        bind_context(user_id="u_1", account_id="acc_1")
        track(Events.PLAN_UPGRADED)
        assert current_settings().enabled is False
        with pytest.raises(ConfigurationError, match="ANALYTICS_DEBUG"):
            configure(strict=True)
        monkeypatch.setenv("ANALYTICS_DEBUG", "false")
        settings = configure(strict=True)
        assert (settings.enabled, settings.instance_level, settings.strict) == (True, True, True)

    def test_debug_from_the_environment_prints(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], identity: None
    ) -> None:
        """ANALYTICS_DEBUG=true alone prints what would be sent, on stderr."""
        monkeypatch.setenv("ANALYTICS_DEBUG", "true")
        track(Events.PLAN_UPGRADED)
        err = capsys.readouterr().err
        assert "[instrumentor debug] track:" in err
        assert '"event": "Plan_Upgraded"' in err

    def test_api_key_alone_means_queued_accoil_delivery(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """ANALYTICS_API_KEY (and ANALYTICS_ENDPOINT) configure Accoil behind a queue."""
        from instrumentor.delivery import Destination
        from instrumentor.transports import AccoilTransport

        monkeypatch.setenv("ANALYTICS_API_KEY", KEY)
        monkeypatch.setenv("ANALYTICS_ENDPOINT", "http://127.0.0.1:9")
        instrumentor.current_settings()  # the first use reads the environment
        (destination,) = installed_destinations()
        assert isinstance(destination, Destination)
        assert isinstance(destination.transport, AccoilTransport)
        assert "127.0.0.1:9" in repr(destination.transport)
        assert KEY not in repr(destination)


class TestConfigure:
    def test_later_calls_change_only_what_they_name(self) -> None:
        """configure() merges into the settings in force."""
        configure(debug=True, bundle_ttl=5)
        settings = configure(instance_level=True)
        assert (settings.debug, settings.bundle_ttl, settings.instance_level) == (True, 5, True)

    @pytest.mark.parametrize(
        "kwargs",
        [{"debug": "yes"}, {"bundle_ttl": -1}, {"transports": [object()]}, {"on_error": 3}],
    )
    def test_invalid_values_raise_and_change_nothing(self, kwargs: dict[str, object]) -> None:
        """A bad value raises ConfigurationError and the previous settings stay."""
        before = configure(debug=False)
        with pytest.raises(ConfigurationError):
            configure(**kwargs)  # type: ignore[arg-type]
        assert current_settings() == before

    def test_configured_restores_exactly(self, identity: None) -> None:
        """configured() swaps transports for a block and puts the old ones back."""
        outer = MemoryTransport()
        inner = MemoryTransport()
        configure(transports=[outer])
        with configured(transports=[inner]):
            track(Events.PLAN_UPGRADED)
        track(Events.PLAN_UPGRADED)
        assert len(inner.tracks) == 1
        assert len(outer.tracks) == 1

    @pytest.mark.parametrize(
        "change", [{"api_key": "sk_other"}, {"endpoint": "http://127.0.0.1:9"}, {"debug": True}]
    )
    def test_given_transports_outlive_a_change_of_what_chooses_defaults(
        self, identity: None, change: dict[str, object]
    ) -> None:
        """With transports given, a new key, endpoint or debug keeps (and never closes) them."""
        closed: list[int] = []

        class Closing(MemoryTransport):
            inline = False  # queued behind a destination, which the wiring owns and retires

            def close(self) -> None:
                closed.append(1)

        transport = Closing()
        configure(transports=[transport])
        (before,) = installed_destinations()
        with configured(**change):  # type: ignore[arg-type]
            assert installed_destinations() == [before]
        configure(**change)  # type: ignore[arg-type]
        assert installed_destinations() == [before]
        track(Events.PLAN_UPGRADED)
        assert instrumentor.flush(5).delivered >= 1
        assert closed == []
        assert len(transport.tracks) == 1

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"queue_size": 0}, "queue_size must be at least 1, got 0"),
            ({"exit_timeout": -1}, "exit_timeout must be >= 0 seconds, got -1"),
            ({"on_error": 3}, "on_error must be callable, got 3"),
            ({"outbox": ""}, "outbox must be a file path, got ''"),
            ({"bundle_ttl": -1}, "bundle_ttl must be a number of seconds >= 0, got -1"),
        ],
    )
    def test_invalid_values_say_which_setting_and_what_it_takes(
        self, kwargs: dict[str, object], message: str
    ) -> None:
        """Each setting's error names it, what it accepts and the value given."""
        with pytest.raises(ConfigurationError, match="^" + message.replace("(", r"\(")):
            configure(**kwargs)  # type: ignore[arg-type]

    def test_callables_that_are_not_transports_are_refused(self) -> None:
        """A plain function, or an inline receiver, is not a transport: ConfigurationError."""
        from instrumentor.delivery import InlineDestination

        def receiver(sender: object, **kwargs: object) -> None:
            pass

        for given in (receiver, InlineDestination(MemoryTransport())):
            with pytest.raises(ConfigurationError, match="is not a transport"):
                configure(transports=[given])

    def test_reset_returns_to_unconfigured(self, identity: None) -> None:
        """After reset_configuration() nothing is connected until configured again."""
        memory = MemoryTransport()
        configure(transports=[memory])
        instrumentor.reset_configuration()
        track(Events.PLAN_UPGRADED)
        assert memory.messages == []

    def test_tracks_decorated_before_configure_honour_it(self, identity: None) -> None:
        """The configuration is read per call, so import-time decoration is fine."""

        @instrumentor.tracks(Events.PLAN_UPGRADED)
        def upgrade() -> None:
            pass

        upgrade()
        memory = MemoryTransport()
        configure(transports=[memory])
        upgrade()
        assert len(memory.tracks) == 1


class TestSecrets:
    def test_secret_never_shows_itself(self) -> None:
        """repr, str and f-strings of a Secret and of Settings hide the key."""
        settings = configure(api_key=KEY)
        for text in (repr(settings.api_key), str(settings.api_key), repr(settings), f"{settings}"):
            assert KEY not in text
        assert settings.api_key is not None
        assert settings.api_key.reveal() == KEY

    def test_console_redacts_key_and_sensitive_traits(self, identity: None) -> None:
        """Debug output blanks the API key wherever it appears and sensitive trait names."""
        stream = io.StringIO()
        configure(api_key=KEY, transports=[ConsoleTransport(stream)])
        track(Events.PLAN_UPGRADED)
        out = stream.getvalue()
        assert KEY not in out
        assert "hunter2" not in out
        identify = json.loads(out.splitlines()[0].split(": ", 1)[1])
        assert identify["traits"] == {
            "password": "[REDACTED]",
            "note": "key is [REDACTED]",
            "email": "a@b.c",
        }

    @pytest.mark.parametrize(
        ("key", "redacted"),
        [
            ("password", True),
            ("access_token", True),
            ("client_secret", True),
            ("X-Api-Key", True),
            ("sessionId", True),
            ("author", False),
            ("token_count", False),
            ("secretary", False),
            ("session_count", False),
        ],
    )
    def test_redaction_by_key(self, key: str, redacted: bool) -> None:
        """Sensitive key names are redacted by their ending; innocent look-alikes are not."""
        from instrumentor.transports._console import redact

        assert (redact({key: "v"})[key] == "[REDACTED]") is redacted


class TestDebugConsole:
    def test_console_lines_are_json_per_message(self, identity: None) -> None:
        """One line per message: a prefix with its type, then its JSON."""
        stream = io.StringIO()
        configure(transports=[ConsoleTransport(stream)])
        track(Events.PLAN_UPGRADED)
        lines = stream.getvalue().splitlines()
        assert [line.split(":", 1)[0] for line in lines] == [
            "[instrumentor debug] identify",
            "[instrumentor debug] group",
            "[instrumentor debug] track",
        ]
        track_data = json.loads(lines[-1].split(": ", 1)[1])
        assert track_data["event"] == "Plan_Upgraded"
        assert track_data["context"] == {"groupId": "acc_1"}

    def test_console_can_log_instead(
        self, identity: None, caplog: pytest.LogCaptureFixture
    ) -> None:
        """With a logger, lines go to logging at INFO."""
        logger = logging.getLogger("analytics.debug")
        configure(transports=[ConsoleTransport(logger=logger)])
        with caplog.at_level(logging.INFO, "analytics.debug"):
            track(Events.PLAN_UPGRADED)
        assert [r.levelno for r in caplog.records] == [logging.INFO] * 3

    def test_console_repr_names_its_target(self) -> None:
        """The repr says where lines go."""
        assert repr(ConsoleTransport()) == "ConsoleTransport(stderr)"
        assert repr(ConsoleTransport(io.StringIO())) == "ConsoleTransport(stream='StringIO')"
        logger = logging.getLogger("dbg")
        assert repr(ConsoleTransport(logger=logger)) == "ConsoleTransport(logger='dbg')"


class TestSecretsEverywhere:
    def test_settings_built_directly_hide_the_key(self) -> None:
        """Settings(api_key=str) wraps it; other types are refused without echoing them."""
        settings = Settings(api_key=KEY)  # type: ignore[arg-type]
        assert isinstance(settings.api_key, Secret)
        assert KEY not in repr(settings)
        with pytest.raises(ConfigurationError) as info:
            configure(api_key=KEY.encode())  # type: ignore[arg-type]
        assert KEY not in str(info.value)

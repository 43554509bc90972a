"""The settings are declared once: the configuration page, configure() and the environment agree.

``Settings`` carries every setting's environment variable, parser, default and doc. The table on
``docs/configuration.md`` is generated from it (``settings_table()``), ``configure()`` takes one
keyword per field, ``SettingsChanges`` types the same keywords, and ``Settings.from_env`` reads
exactly ``ENVIRONMENT_VARIABLES``.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

import instrumentor
from instrumentor import Settings
from instrumentor._settings import ENVIRONMENT_VARIABLES, SettingsChanges, settings_table

PAGE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
BEGIN = "<!-- settings:begin -->\n"
END = "<!-- settings:end -->"

#: Each variable, the field it sets and a valid value that is not the default.
NON_DEFAULT = {
    "ANALYTICS_API_KEY": ("api_key", "sk_test_1234"),
    "ANALYTICS_ENDPOINT": ("endpoint", "http://127.0.0.1:9"),
    "ANALYTICS_DEBUG": ("debug", "true"),
    "ANALYTICS_INSTANCE_LEVEL": ("instance_level", "yes"),
    "ANALYTICS_STRICT": ("strict", "1"),
    "ANALYTICS_ENABLED": ("enabled", "off"),
    "ANALYTICS_BUNDLE_TTL": ("bundle_ttl", "60"),
    "ANALYTICS_QUEUE_SIZE": ("queue_size", "500"),
    "ANALYTICS_EXIT_TIMEOUT": ("exit_timeout", "0.5"),
    "ANALYTICS_SPAN_EVENTS": ("span_events", "false"),
    "ANALYTICS_OUTBOX": ("outbox", "/tmp/instrumentor-outbox.db"),
    "ANALYTICS_OUTBOX_MAX_ROWS": ("outbox_max_rows", "1000"),
    "ANALYTICS_OUTBOX_SYNCHRONOUS": ("outbox_synchronous", "FULL"),
}

FIELDS = [f.name for f in dataclasses.fields(Settings)]


def _changed_fields(settings: Settings) -> set[str]:
    """The fields of ``settings`` that differ from the defaults."""
    default = Settings()
    return {name for name in FIELDS if getattr(settings, name) != getattr(default, name)}


def test_the_page_table_is_the_generated_table() -> None:
    """docs/configuration.md holds exactly settings_table() between the settings markers."""
    page = PAGE.read_text(encoding="utf-8")
    assert page.count(BEGIN) == 1, "one settings:begin marker"
    assert page.count(END) == 1, "one settings:end marker"
    region = page[page.index(BEGIN) + len(BEGIN) : page.index(END)]
    assert region == settings_table(), (
        "docs/configuration.md is out of date: paste instrumentor._settings.settings_table() "
        "between the settings markers"
    )


def test_the_table_has_one_row_per_field() -> None:
    """settings_table() names every Settings field and every environment variable once."""
    table = settings_table()
    assert re.findall(r"^\| `(\w+)` \|", table, re.MULTILINE) == FIELDS
    assert re.findall(r"`(ANALYTICS_\w+)`", table) == list(ENVIRONMENT_VARIABLES)


def test_every_field_is_a_configure_keyword() -> None:
    """configure() takes exactly one keyword-only parameter per Settings field."""
    parameters = inspect.signature(instrumentor.configure).parameters
    assert list(parameters) == FIELDS
    assert {p.kind for p in parameters.values()} == {inspect.Parameter.KEYWORD_ONLY}


def test_every_field_is_a_settings_changes_key() -> None:
    """SettingsChanges, the typed keywords of configure(), has exactly the Settings fields."""
    keys = SettingsChanges.__required_keys__ | SettingsChanges.__optional_keys__
    assert keys == set(FIELDS)
    assert set(SettingsChanges.__annotations__) == set(FIELDS)


def test_the_environment_variables_are_the_declared_ones() -> None:
    """ENVIRONMENT_VARIABLES are the fields' declared variables, each naming its own field."""
    declared = {
        name: Settings.option(name).env for name in FIELDS if Settings.option(name).env is not None
    }
    assert list(ENVIRONMENT_VARIABLES) == list(declared.values())
    assert {var: field for field, var in declared.items()} == {
        var: field for var, (field, _) in NON_DEFAULT.items()
    }


@pytest.mark.parametrize("variable", sorted(NON_DEFAULT))
def test_from_env_reads_each_variable_into_its_field(variable: str) -> None:
    """Each variable set alone to a non-default value changes its field, and only it."""
    field, raw = NON_DEFAULT[variable]
    assert _changed_fields(Settings.from_env({variable: raw})) == {field}


def test_from_env_reads_exactly_the_environment_variables() -> None:
    """All variables together change every field they declare; other names are ignored."""
    environ = {variable: raw for variable, (_, raw) in NON_DEFAULT.items()}
    assert set(environ) == set(ENVIRONMENT_VARIABLES), "NON_DEFAULT needs every variable"
    expected = {field for field, _ in NON_DEFAULT.values()}
    assert _changed_fields(Settings.from_env(environ)) == expected
    others = {"ANALYTICS_SPAN_EVENT_USER": "true", "ANALYTICS_QUEUE": "celery", "API_KEY": "x"}
    assert _changed_fields(Settings.from_env(others)) == set()


def test_the_printed_settings_on_the_page_show_every_field() -> None:
    """Every ``Settings(...)`` repr the page prints names the fields a repr shows, in order."""
    shown = [f.name for f in dataclasses.fields(Settings) if f.repr]
    page = PAGE.read_text(encoding="utf-8")
    printed = [line for line in page.splitlines() if line.startswith("Settings(")]
    assert printed, "the page prints a Settings repr"
    for line in printed:
        assert re.findall(r"(?:\(|, )(\w+)=", line) == shown, line

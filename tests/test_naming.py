"""The naming rules as pure functions (shared by the registry and the CLI)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instrumentor._naming import NAMING_RULES, check_event_name, normalise_event_name


@pytest.mark.parametrize(
    "name",
    [
        "Report_Created",
        "Teammate_Invited",
        "User_Signed_Up",
        "User_Logged_In",
        "SSO_Configured",
        "Email_Sent",
        "Workspace_Settings_Updated",
        "File_Uploaded",
        "Invoice_Paid",
    ],
)
def test_good_names_pass(name: str) -> None:
    """Object_Action names in Title_Case with a past-tense verb pass every rule."""
    assert check_event_name(name) == []


@pytest.mark.parametrize(
    ("name", "rules"),
    [
        ("report created", {"title_case", "object_action"}),
        ("Report__Created", {"title_case"}),
        ("Create_Report", {"past_tense"}),
        ("Report_Exported_PDF", {"no_variant", "past_tense"}),
        ("Report_Created_2024", {"no_digits", "past_tense"}),
        ("", {"title_case", "object_action"}),
    ],
)
def test_bad_names_report_each_rule(name: str, rules: set[str]) -> None:
    """Every broken rule is reported with its id."""
    assert {v.rule for v in check_event_name(name)} == rules


def test_every_reported_rule_is_documented() -> None:
    """Rule ids used in violations are the documented ones (waivers name them)."""
    samples = ["x", "Report_V2", "Report_PDF_Exported", "A" * 80]
    for sample in samples:
        for violation in check_event_name(sample):
            assert violation.rule in NAMING_RULES


def test_normalisation_folds_case_and_separators() -> None:
    """Near-duplicates share one normalised key."""
    keys = {
        normalise_event_name(n)
        for n in ["Report_Created", "report created", "REPORT-CREATED", "ReportCreated"]
    }
    assert keys == {"reportcreated"}


@given(st.text(max_size=200))
def test_checking_any_text_never_raises(name: str) -> None:
    """Arbitrary text yields a list of violations, never an exception."""
    assert isinstance(check_event_name(name), list)

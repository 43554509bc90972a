"""A file that does not parse: a finding, never a crash."""


def half_written(user_id: str) -> None:
    track("Report_Created"

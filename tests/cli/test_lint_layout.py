"""``instrumentor lint`` on whole projects: what the project's layout and plan tell it.

The project's own ``analytics`` package, the plan file scanned with the code, registries
looked up by a run-time name, a project reached through a symlink, and the same findings
whether files are scanned in one process or several.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from instrumentor.cli._files import PARALLEL_FROM
from tests.cli.test_lint import CLEAN_PROJECT, json_rows, lint, write_project

OWN_ANALYTICS = {
    "pyproject.toml": """
        [tool.instrumentor]
        plan = "analytics.events:Events"
        """,
    "analytics/__init__.py": """
        from instrumentor import track

        __all__ = ["track"]
        """,
    "analytics/events.py": """
        from instrumentor import EventRegistry, event

        class Events(EventRegistry):
            REPORT_CREATED = event("Report_Created", category="core_value")
        """,
    "shop/__init__.py": "",
    "shop/views.py": """
        import analytics
        from analytics.events import Events

        def create(user_id: str) -> None:
            analytics.track(Events.REPORT_CREATED)
            analytics.track("Report_Created")
        """,
}


def test_a_projects_own_analytics_package_is_not_segment(tmp_path: Path) -> None:
    """``analytics/`` in the project root is the project's: importing it is fine, and its
    ``track`` is read as the project's wrapper, not with Segment's argument slots."""
    write_project(tmp_path, OWN_ANALYTICS)
    result = lint("--format", "json", cwd=tmp_path)
    assert json_rows(result.stdout) == [("inline-event-name", "shop/views.py", 7, "error")]
    assert "written inline in analytics.track()\n" in lint(cwd=tmp_path).stdout


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (  # configured, even where no such folder is in the root
            {
                "pyproject.toml": '[tool.instrumentor]\nanalytics_package = "analytics"\n',
                "lib/analytics/__init__.py": "",
                "views.py": "from analytics.events import Events\n",
            },
            [],
        ),
        (  # a folder of configuration files does not make `import posthog` local
            {
                "pyproject.toml": "[tool.instrumentor]\n",
                "posthog/values.yaml": "replicas: 2\n",
                "views.py": "import posthog\n",
            },
            [("direct-sdk-import", "views.py", 1, "error")],
        ),
    ],
    ids=["configured-analytics-package", "folder-without-python"],
)
def test_which_sdk_names_are_the_projects_own(
    tmp_path: Path, files: dict[str, str], expected: list[tuple[str, str, int, str]]
) -> None:
    """The analytics package's name is the project's; a root folder only if it holds Python."""
    write_project(tmp_path, files)
    result = lint("--format", "json", "views.py", cwd=tmp_path)
    assert json_rows(result.stdout) == expected


def test_the_plan_file_scanned_with_the_code_still_finds_unused_events(tmp_path: Path) -> None:
    """Strings of the plan's own definitions (``event`` imported as ``ev``) are not uses."""
    files = {
        "pyproject.toml": '[tool.instrumentor]\nplan = "app.events:Events"\n',
        "app/__init__.py": "",
        "app/views.py": "from app.events import Events\n\nEvents.A.track()\n",
        "app/events.py": """
            from instrumentor import EventRegistry
            from instrumentor import event as ev

            class Events(EventRegistry):
                A = ev("Report_Created", category="core_value")
                B = ev("Report_Deleted", category="core_value", replaced_by="Report_Created")
            """,
    }
    write_project(tmp_path, files)
    result = lint("--format", "json", ".", cwd=tmp_path)
    assert json_rows(result.stdout) == [("unused-event", "app/events.py", 7, "warning")]


def test_a_dynamic_lookup_is_a_warning_and_unused_event_skips_that_registry(
    tmp_path: Path,
) -> None:
    """``Events[name]`` may reach any event: one warning there, no unused-event guesses."""
    views = """
        from app.events import Events

        def handle(name: str) -> None:
            Events[name].track()
        """
    files = {**CLEAN_PROJECT, "app/views.py": views}
    write_project(tmp_path, files)
    result = lint("--format", "json", "--unused", "error", cwd=tmp_path)
    assert (result.returncode, json_rows(result.stdout)) == (
        0,
        [("dynamic-event-lookup", "app/views.py", 5, "warning")],
    )
    (tmp_path / "app/views.py").write_text("from app.events import Events\n", encoding="utf-8")
    result = lint("--format", "json", "--unused", "error", cwd=tmp_path)
    assert [row[0] for row in json_rows(result.stdout)] == ["unused-event"] * 2


def test_a_symlinked_path_keeps_the_configuration(tmp_path: Path) -> None:
    """Through a symlink to the project, exclude and analytics_package still apply."""
    files = {
        "pyproject.toml": '[tool.instrumentor]\nanalytics_package = "app/analytics"\n'
        'exclude = ["app/generated"]\n',
        "app/analytics/t.py": "import posthog\n",
        "app/generated/g.py": "import posthog\n",
        "app/views.py": "import posthog\n",
    }
    project = tmp_path / "project"
    write_project(project, files)
    link = tmp_path / "link"
    link.symlink_to(project, target_is_directory=True)
    for path in (str(link / "app"), os.path.relpath(link / "app", project)):
        result = lint("--format", "json", path, cwd=project)
        assert json_rows(result.stdout) == [("direct-sdk-import", "app/views.py", 1, "error")]


def test_columns_are_characters_for_github_annotations(tmp_path: Path) -> None:
    """After non-ASCII text on a line, ``col=`` is the character column."""
    line = 'print("café 🎉"); instrumentor.track("Report_Created")'
    write_project(tmp_path, {"m.py": f"import instrumentor\n{line}\n"})
    result = lint("--format", "github", "m.py", cwd=tmp_path)
    column = line.index('"Report') + 1
    assert f"::error file=m.py,line=2,col={column},title=inline-event-name::" in result.stdout


def test_findings_do_not_depend_on_the_process_count(tmp_path: Path) -> None:
    """A tree large enough for worker processes: the same output as scanning in one."""
    files = dict(CLEAN_PROJECT)
    for n in range(PARALLEL_FROM + 20):
        kind = ("Report_Created", "f'{x}_Done'", "'é' + x", "x")[n % 4]
        files[f"app/m{n // 100}/mod_{n:04d}.py"] = f"""
            import instrumentor
            from app.events import Events

            def f(x):  # é
                instrumentor.track({kind!r} if {n % 4} == 0 else {kind})
                Events.REPORT_CREATD{n % 2}
            """
    write_project(tmp_path, files)
    serial = lint("--format", "json", "--jobs", "1", "--no-cache", cwd=tmp_path)
    parallel = lint("--format", "json", "--jobs", "2", "--no-cache", cwd=tmp_path)
    assert serial.returncode == parallel.returncode == 1
    assert parallel.stdout == serial.stdout
    assert parallel.stderr == serial.stderr == ""
    assert len(json_rows(serial.stdout)) > PARALLEL_FROM


def test_frontend_events_are_not_unused_the_browser_sends_them(tmp_path: Path) -> None:
    """A frontend event tracked nowhere in Python is not reported as unused-event."""
    files = {
        "pyproject.toml": '[tool.instrumentor]\nplan = "app.events:Events"\n',
        "app/__init__.py": "",
        "app/views.py": "from app.events import Events\n",
        "app/events.py": """
            from instrumentor import EventRegistry, event

            class Events(EventRegistry):
                A = event("Report_Created", category="core_value")
                B = event("Search_Performed", category="feature_usage", frontend=True)
            """,
    }
    write_project(tmp_path, files)
    result = lint("--format", "json", ".", cwd=tmp_path)
    assert json_rows(result.stdout) == [("unused-event", "app/events.py", 5, "warning")]

"""Sessions for every check: tests on each Python 3.10-3.13 found, lint, types, docs, bench.

``nox`` runs tests on every supported Python it can find (pyenv installs are added to PATH),
plus lint, typecheck and docs. ``nox -s bench`` runs the benchmarks; ``nox -s example`` the
quickstart in debug mode.
"""

from __future__ import annotations

import glob
import os

import nox

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]

# pyenv keeps interpreters outside PATH; make python3.X findable when they exist.
_pyenv_bins = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[0-9]*/bin")))
if _pyenv_bins:
    os.environ["PATH"] = os.pathsep.join([*_pyenv_bins, os.environ.get("PATH", "")])

nox.options.sessions = ["tests", "lint", "imports", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True
# Locally a missing interpreter is skipped; in CI it is an error (we claim 3.10-3.13).
nox.options.error_on_missing_interpreters = os.environ.get("CI", "").lower() in {"1", "true"}


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite, the same command as the README and .ci/run."""
    session.install("-e", ".[dev]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def oldest_frameworks(session: nox.Session) -> None:
    """The integration tests on the oldest Flask, Werkzeug and Django the extras allow."""
    session.install("-e", ".[dev]")
    session.install("flask[async]==3.0.*", "werkzeug==3.0.*", "django==4.2.*")
    session.run(
        "python", "-m", "pytest", "tests/integrations", "-m", "not browser", *session.posargs
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def imports(session: nox.Session) -> None:
    """The import contracts: layers point down, transports stay independent (lint-imports)."""
    session.install("-e", ".", "import-linter>=2.1")
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, tests, examples and benchmarks."""
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, built strictly (any warning fails)."""
    session.install("-e", ".[dev]")
    session.run("mkdocs", "build", "--strict", "--site-dir", session.create_tmp() + "/site")


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmarks, with the peer SDKs they compare against."""
    session.install("-e", ".[bench]")
    session.run("python", "benchmarks/bench_caller.py", *session.posargs)
    session.run("python", "benchmarks/bench_delivery.py", *session.posargs)
    session.install("-e", ".[dev]")  # FastAPI, uvicorn, Flask and Django for the endpoint ones
    session.run("python", "benchmarks/bench_endpoint.py")
    session.run("python", "benchmarks/bench_wsgi_adapters.py")


@nox.session
def example(session: nox.Session) -> None:
    """The quickstart with the debug console on."""
    session.install("-e", ".")
    session.run("python", "examples/quickstart.py", env={"ANALYTICS_DEBUG": "true"})

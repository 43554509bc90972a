"""What every CLI test shares: a lint cache of its own, never the user's."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def lint_cache_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The folder ``instrumentor lint`` keeps its cache in for this test (empty at the start).

    Set as ``INSTRUMENTOR_CACHE_DIR``, which the commands the tests run inherit, so no test reads
    or writes the user's cache (``~/.cache/instrumentor``).
    """
    folder = tmp_path_factory.mktemp("instrumentor-cache")
    monkeypatch.setenv("INSTRUMENTOR_CACHE_DIR", str(folder))
    return folder

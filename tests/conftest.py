"""Shared test fixtures.

Real data lives beside the repository in ``../shared/data`` (or ``$ANYSEG_SHARED_DATA``);
tests that need it skip with a clear reason when it is absent (a user's fresh clone).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# the shared helper modules of the test files: their asserts get pytest's detailed messages too
pytest.register_assert_rewrite("_bounds", "_hostile_masks", "_serve_hostile", "_track_runs")

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Debian's chromium (``scripts/install_browser.sh``), driven by Playwright in the browser tests
CHROMIUM = Path("/usr/bin/chromium")
SHARED_DATA = Path(os.environ.get("ANYSEG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def shared_dataset(name: str) -> Path:
    """Path of ``../shared/data/<name>``, or skip the test when it is not there."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data set {name!r} not found at {path} (set ANYSEG_SHARED_DATA to its parent folder)")
    return path


@pytest.fixture(autouse=True)
def _isolated_model_dirs(tmp_path_factory, monkeypatch):
    """Never let a test see (or write to) the user's model folders or the network."""
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("ANYSEG_MODELS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "xdg_cache"))  # converted checkpoints (models convert / pull)


@pytest.fixture(scope="module")
def chromium():
    """A headless chromium launched through Playwright, one per test module; skips (with the
    reason) when the ``playwright`` package or :data:`CHROMIUM` is missing."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found (run scripts/install_browser.sh to install Debian's chromium)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()

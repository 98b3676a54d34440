"""Shared fixtures: the real datasets beside the project, an isolated data folder, a tiny bundle."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# A test run started in the background (`pytest &`, nohup, some CI launchers) inherits Ctrl-C
# (SIGINT) ignored, Python keeps it so, and so would every tool process a test starts: each Ctrl-C
# a test presses would be lost (five menu tests timed out that way). Give the test processes
# Python's own handler back; the processes they start then get Ctrl-C's default, as from a shell.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
# Exporting a bundle to LiteRT takes ~10 s: off unless a test is about it (tests/test_export.py),
# in this process (config reads it at import) and in the tool's processes the tests start.
os.environ["CAPTIONING_EXPORT"] = "0"

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATASETS = PROJECT_ROOT.parent / "shared" / "datasets"
FLICKR8K = SHARED_DATASETS / "flickr8k"
COCO_MINI = SHARED_DATASETS / "coco-mini"


def require_dataset(path: Path) -> Path:
    """Skip the calling test, with the reason, when a real dataset is not beside the project."""
    if not path.is_dir():
        pytest.skip(f"real dataset not found at {path} (only present in the team's workplace)")
    return path


@pytest.fixture
def flickr8k() -> Path:
    return require_dataset(FLICKR8K)


@pytest.fixture
def coco_mini() -> Path:
    return require_dataset(COCO_MINI)


@pytest.fixture(autouse=True)
def isolated_data_dirs(tmp_path_factory, monkeypatch):
    """Point the feature cache and saved models at temp folders so tests never touch the repo's."""
    root = tmp_path_factory.mktemp("workdirs")
    from captioning import config

    monkeypatch.setattr(config, "DATA_DIR", root / "data")
    monkeypatch.setattr(config, "FEATURE_CACHE_DIR", root / "data" / "features")
    monkeypatch.setattr(config, "MODELS_DIR", root / "saved_models")
    monkeypatch.setattr(config, "EXPORT_BUNDLES", False)  # as CAPTIONING_EXPORT=0 above, should config be imported
    yield root


@pytest.fixture
def kaggle_home(tmp_path, monkeypatch) -> Path:
    """A home of its own for kagglehub: no credentials, an empty cache, no Kaggle settings.

    Sets ``HOME``, ``KAGGLE_CONFIG_DIR`` (kagglehub computes its default from the real home at
    import, so ``HOME`` alone is not enough) and ``KAGGLEHUB_CACHE`` inside ``tmp_path``, and drops
    every other Kaggle variable, so no test reads or writes the user's ~/.kaggle or kagglehub cache.
    Returns the home folder; ``home / ".kaggle"`` and ``home / "kagglehub-cache"`` are the rest.
    """
    home = tmp_path / "home"
    home.mkdir()
    for name in list(os.environ):
        if name.startswith(("KAGGLE", "COLAB_")) or name == "TBE_RUNTIME_ADDR":
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / ".kaggle"))
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(home / "kagglehub-cache"))
    return home


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A session-wide tiny merge bundle: real files and graphs, random weights (tests/support/bundles.py)."""
    from tests.support.bundles import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny-merge")

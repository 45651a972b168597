"""Shared fixtures: the real data folder, tiny model bundles."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # tests/tiny_models.py


def _data_root() -> Path:
    return Path(os.environ.get("ENDOVIEW_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real endoscopy data (../shared/data or $ENDOVIEW_DATA); skips when absent."""
    root = _data_root()
    if not (root / "kvasir-seg" / "images").is_dir():
        pytest.skip(f"real data not found at {root} (set ENDOVIEW_DATA to the shared data folder)")
    return root


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A tiny trained-flagged classify bundle (3 labels, 32x32 input)."""
    from tiny_models import make_tiny_classifier_bundle

    return make_tiny_classifier_bundle(tmp_path_factory.mktemp("bundle") / "tiny",
                                       labels=("normal", "polyp", "other"), size=(32, 32))


@pytest.fixture(scope="session")
def untrained_bundle(tmp_path_factory):
    from tiny_models import make_tiny_classifier_bundle

    return make_tiny_classifier_bundle(tmp_path_factory.mktemp("bundle") / "untrained",
                                       labels=("a", "b", "c"), size=(32, 32), trained=False)

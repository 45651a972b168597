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


def _mount_tmpfs(path: Path, options: str) -> bool:
    import subprocess

    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                       capture_output=True, text=True)
    return r.returncode == 0


def _umount(path: Path) -> None:
    import subprocess

    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder nobody can write to: chmod for ordinary users, a read-only tmpfs for root."""
    folder = tmp_path / "readonly"
    if os.geteuid() != 0:
        folder.mkdir()
        folder.chmod(0o500)
        yield folder
        folder.chmod(0o700)
        return
    if not _mount_tmpfs(folder, "size=1m,ro"):
        pytest.skip("running as root and cannot mount a read-only tmpfs to test an unwritable folder")
    yield folder
    _umount(folder)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs: writing more than that fails with ENOSPC, as a full disk does."""
    folder = tmp_path / "small"
    if os.geteuid() != 0 or not _mount_tmpfs(folder, "size=2m"):
        pytest.skip("needs root and tmpfs to simulate a full disk")
    yield folder
    _umount(folder)

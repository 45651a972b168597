"""Fixtures for train/: tiny synthetic HyperKvasir data, one tiny trained run, its bundle."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="train/ needs torch (pip install 'endoview[train]')")
pytest.importorskip("torchvision", reason="train/ needs torchvision (pip install 'endoview[train]')")

from chain_args import SIZE, train_args


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """(data folder, split csv): 4 images per class (2 per fold), archive layout, 64 px."""
    from train.synthetic import make_synthetic_hyperkvasir

    return make_synthetic_hyperkvasir(tmp_path_factory.mktemp("hk"), per_class=4, size=SIZE)


@pytest.fixture(scope="session")
def trained_run(synthetic, tmp_path_factory):
    """A MobileNetV3-Large run with the hybrid loss, one epoch on the synthetic data, fold 0 held out."""
    from train.cli import main

    out = tmp_path_factory.mktemp("runs") / "mnv3"
    assert main(train_args(*synthetic, out)) == 0
    return out


@pytest.fixture(scope="session")
def exported(trained_run, tmp_path_factory):
    from train.export import export_run

    return export_run(trained_run, tmp_path_factory.mktemp("bundles") / "mnv3", latency_runs=2)

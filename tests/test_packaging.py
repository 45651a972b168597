"""Packaging: the wheel carries the default models and config and runs them from anywhere; shipped
manifests hold no machine path; a missing extra is one line naming the command that installs it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

from train.manifest import MACHINE_PATH, machine_paths

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "engine" / "assets"
SHIPPED = sorted(ASSETS.rglob("manifest.json"))
#: what the packaged config.toml names, relative to engine/assets
DEFAULT_BUNDLES = sorted(
    value for table in tomllib.loads((ASSETS / "config.toml").read_text(encoding="utf-8")).values()
    for key, value in table.items() if key in ("bundle", "segmenter") and value
)


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without what would point Python at the checkout or another assets folder."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "ENDOVIEW_ASSETS", "VIRTUAL_ENV")}
    return env | extra


# ------------------------------------------------------------------------------------------------
# shipped manifests


def test_there_are_shipped_manifests_and_the_config_names_them():
    assert len(SHIPPED) >= 2, f"no bundles under {ASSETS}"
    assert DEFAULT_BUNDLES and all((ASSETS / b / "manifest.json") in SHIPPED for b in DEFAULT_BUNDLES)


@pytest.mark.parametrize("manifest", SHIPPED, ids=lambda p: p.parent.name)
def test_a_shipped_manifest_holds_no_machine_path(manifest):
    text = manifest.read_text(encoding="utf-8")
    leaks = machine_paths(json.loads(text))
    assert not leaks, f"{manifest.relative_to(ROOT)} holds machine paths:\n" + "\n".join(leaks)
    home = str(Path.home())
    for machine_specific in {home, str(ROOT), str(ROOT.parent), "/root/", "/work/", "/home/", "/tmp/"}:
        assert machine_specific not in text, f"{manifest.relative_to(ROOT)} mentions {machine_specific}"


@pytest.mark.parametrize("text", [
    "/root/.cache/endoview/x", "--data /work/shared/data/kvasir-seg --fold 1", "-o=/tmp/b", "~/data/kvasir-seg",
    "['/home/me/data']", "C:\\data\\runs", "held-out fold 1 of /mnt/data/kvasir-seg",
])
def test_the_check_sees_machine_paths(text):
    assert MACHINE_PATH.search(text)
    assert machine_paths({"a": [{"b": text}]}) == [f"a[0].b: {text}"]


@pytest.mark.parametrize("text", [
    "$ENDOVIEW_DATA/kvasir-seg", "runs/seg-trainfold0", "./engine/assets/models/polyp-unet", "docs/models/roc.png",
    "https://datasets.simula.no/kvasir-seg/", "6 / 23 classes", "and/or", "ema:0.3", "1/2",
])
def test_the_check_leaves_portable_text_alone(text):
    assert not MACHINE_PATH.search(text)


def test_the_ship_step_refuses_to_write_a_machine_path_into_the_checkout(tiny_bundle, tmp_path):
    from engine.bundle import load_bundle
    from train.errors import TrainError
    from train.manifest import rebundle

    inside = ASSETS / "models" / "never-written-by-test_packaging"
    training = {"run": "/root/runs/x", "data": "$ENDOVIEW_DATA/kvasir-seg"}
    with pytest.raises(TrainError, match=r"holds 1 machine path\(s\), first 'training.run: /root/runs/x'"):
        rebundle(tiny_bundle, inside, name=None, training=training, metrics={}, notes="", force=False)
    assert not inside.exists()
    # outside the checkout (a user's own bundle) it is written, with a warning
    out = rebundle(tiny_bundle, tmp_path / "mine", name=None, training=training, metrics={}, notes="", force=False)
    assert load_bundle(out.path).manifest["training"]["run"] == "/root/runs/x"


# ------------------------------------------------------------------------------------------------
# a missing extra

BLOCK = textwrap.dedent("""
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {blocked!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

    sys.meta_path.insert(0, Block())
    from engine.cli import main
    sys.exit(main({argv!r}))
""")


def _without(blocked: set[str], argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    code = BLOCK.format(blocked=blocked, argv=argv)
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": path})


@pytest.mark.parametrize("argv", [
    ["train", "classify", "--data", "nowhere", "--out", "runs/x"],
    ["export-seg", "nowhere", "-o", "bundle"],
])
def test_a_train_command_without_torch_names_the_install_command(argv, tmp_path):
    proc = _without({"torch", "torchvision"}, argv, tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        f"endoview: error: '{argv[0]}' needs torch, which is not installed here; run 'EXTRAS=train bash "
        "scripts/install.sh' in the endoview checkout and use the endoview it prints"]


def test_the_torch_backend_without_torch_names_the_install_command(tmp_path):
    proc = _without({"torch"}, ["annotate", "demo:64x48@10", "--end", "0.2", "-o", "x.mp4", "--backend", "torch"],
                    tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(
        "endoview: error: torch is not installed (run 'EXTRAS=train bash scripts/install.sh' in the endoview "
        "checkout and use the endoview it prints)")


def test_the_test_command_installs_every_extra_but_gpu_and_ci_runs_exactly_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    asked = re.search(r'EXTRAS="([a-z,]+)', (ROOT / "scripts" / "test.sh").read_text(encoding="utf-8"))
    assert asked and set(asked.group(1).split(",")) == set(extras) - {"gpu"}
    assert (ROOT / ".ci" / "run").read_text(encoding="utf-8").rstrip().endswith("exec bash scripts/test.sh -q")


# ------------------------------------------------------------------------------------------------
# the wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the working tree (an in-tree build would leave build/ behind,
    and a stale build/lib could slip deleted modules into the wheel)."""
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools in this environment")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for package in ("engine", "app", "train"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                           "--no-index", "-q", "-w", str(tmp / "dist")],
                          capture_output=True, text=True, timeout=300, env=_clean_env())
    assert proc.returncode == 0, proc.stderr
    (built,) = (tmp / "dist").glob("endoview-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_holds_the_default_models_and_the_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "engine/assets/config.toml" in names
    for bundle in DEFAULT_BUNDLES:
        manifest = json.loads((ASSETS / bundle / "manifest.json").read_text(encoding="utf-8"))
        for rel in ("manifest.json", *manifest["files"]):
            assert f"engine/assets/{bundle}/{rel}" in names
    assert {"engine/cli.py", "app/cli.py", "train/cli.py"} <= names
    assert not any(n.startswith(("tests/", "scripts/", "docs/", "assets/")) for n in names)


@pytest.mark.slow
def test_the_installed_wheel_annotates_the_demo_from_another_folder(wheel, tmp_path):
    """A fresh venv gets the wheel (no dependencies: they come from this environment's
    site-packages through a .pth line, which does not run the editable install's hooks), then
    ``endoview annotate demo`` runs in a folder that is not the checkout."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True, env=_clean_env()).stdout.strip())
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "endoview-test-deps.pth").write_text("\n".join(deps) + "\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                           "--no-index", "-q", str(wheel)], capture_output=True, text=True, timeout=300,
                          env=_clean_env())
    assert proc.returncode == 0, proc.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _clean_env(ENDOVIEW_CACHE=str(tmp_path / "cache"))
    where = subprocess.run([python, "-c", "import engine, engine.config as c; print(engine.__file__); "
                            "print(c.DEFAULT_CONFIG)"], cwd=elsewhere, capture_output=True, text=True,
                           timeout=120, env=env)
    assert where.returncode == 0, where.stderr
    engine_file, config = map(Path, where.stdout.split())
    assert engine_file.is_relative_to(site) and config == site / "engine" / "assets" / "config.toml"

    proc = subprocess.run([venv / "bin" / "endoview", "annotate", "demo", "--end", "2", "-o", "demo.mp4"],
                          cwd=elsewhere, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("wrote demo.mp4 (60 frames, 1280x1024 @ 30 fps)"), proc.stdout
    rows = [json.loads(line) for line in (elsewhere / "demo.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 60
    segmenter = json.loads((config.parent / "models" / "polyp-unet" / "manifest.json").read_text(encoding="utf-8"))
    classifier = json.loads((config.parent / "models" / "hyperkvasir-mnv3" / "manifest.json").read_text("utf-8"))
    assert all(r["segmentation"]["model"] == segmenter["name"] for r in rows)
    assert all(r["label"] in classifier["labels"] for r in rows)
    import av

    with av.open(str(elsewhere / "demo.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 60

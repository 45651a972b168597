"""engine/ must work without torch, tensorrt, pycuda and Qt (STYLE.md 1, DESIGN.md "Layout").

1. In a fresh interpreter where those packages cannot be imported, every module of ``engine``
   (found by walking the package, so new modules are covered) imports, and a tiny bundle runs
   through onnxruntime.
2. A static scan: no module in engine/ or train/ imports PySide6, PyQt or shiboken at all.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("torch", "torchvision", "tensorrt", "pycuda", "PySide6", "shiboken6", "PyQt5", "PyQt6")

SCRIPT = textwrap.dedent(
    """
    import importlib, importlib.abc, pkgutil, sys, tempfile

    BLOCKED = {blocked!r}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"No module named {{name!r}} (blocked by test_import_isolation)")
            return None

    sys.meta_path.insert(0, Block())

    import engine, engine.bundle, engine.backends
    imported = []
    for info in pkgutil.walk_packages(engine.__path__, "engine."):
        importlib.import_module(info.name)
        imported.append(info.name)

    from engine.backends import available_backends, open_backend
    sys.path.insert(0, "tests")
    from tiny_models import make_tiny_classifier_bundle, random_images, reference_probs
    import numpy as np

    report = available_backends()
    assert report["onnxruntime"][0], report
    assert not report["torch"][0] and not report["tensorrt"][0], report
    with tempfile.TemporaryDirectory() as tmp:
        bundle = make_tiny_classifier_bundle(tmp + "/b", torchscript="auto")
        assert "torchscript" not in bundle.formats
        with open_backend(bundle, "auto") as backend:
            assert backend.name == "onnxruntime", backend
            images = random_images(2)
            out = backend.run({{"image": images}})["probs"]
        np.testing.assert_allclose(out, reference_probs(images), atol=1e-5)
    from engine.commands.info import collect
    info = collect()
    assert info["backends"]["onnxruntime"]["available"], info
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not leaked, leaked
    print("imported", len(imported), "modules:", " ".join(imported))
    print("torch:", report["torch"][1])
    print("tensorrt:", report["tensorrt"][1])
    """
)


def test_engine_imports_and_runs_without_torch_tensorrt_pycuda_qt() -> None:
    code = SCRIPT.format(blocked=BLOCKED)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "engine.backends.tensorrt" in proc.stdout and "engine.backends.torch" in proc.stdout
    assert "torch: torch not installed: No module named 'torch'" in proc.stdout
    assert "tensorrt: tensorrt not installed: No module named 'tensorrt'" in proc.stdout


QT_MODULES = ("PySide6", "PySide2", "PyQt5", "PyQt6", "shiboken6", "shiboken2", "qtpy")


def _qt_imports(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id == "__import__")
            )
        ):
            names = [node.args[0].value]
        found += [f"{path.relative_to(root)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in QT_MODULES]
    return found


@pytest.mark.parametrize("package", ["engine", "train"])
def test_no_qt_imports(package: str) -> None:
    folder = ROOT / package
    if not folder.is_dir():
        pytest.skip(f"{package}/ does not exist yet")
    files = sorted(folder.rglob("*.py"))
    offenders = [hit for f in files for hit in _qt_imports(f)]
    assert not offenders, "Qt imported outside app/:\n" + "\n".join(offenders)


def test_qt_scan_catches_imports(tmp_path: Path) -> None:
    """The scanner itself finds the usual spellings."""
    probe = tmp_path / "probe.py"
    probe.write_text("import PySide6.QtCore\nfrom PyQt6 import QtGui\nimportlib.import_module('shiboken6')\nimport numpy\n")
    hits = _qt_imports(probe, tmp_path)
    assert hits == ["probe.py:1: PySide6.QtCore", "probe.py:2: PyQt6", "probe.py:3: shiboken6"]

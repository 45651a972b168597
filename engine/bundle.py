"""Model bundles: a folder with ``manifest.json`` and the model files it names (DESIGN.md, "Model bundles").

Manifest (``endoview-bundle/1``)::

    {
      "format": "endoview-bundle/1",
      "name": "mobilenetv3-large-hyperkvasir-raw",
      "task": "classify",                       # "classify" | "segment" | "instances"
      "labels": ["barretts", ...],              # output class order
      "input": {"name": "image", "height": 224, "width": 224,
                "layout": "NHWC", "dtype": "uint8", "color": "RGB",
                "inset": [0.0, 0.64, 0.36, 1.0]},  # optional: a box blacked out in every input
      "outputs": {"probabilities": "probs"},    # role -> output tensor name
      "files": {"model.onnx": "<sha256>", ...}, # every model file, relative to the folder
      "formats": {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"},
      "trained": true,
      "training": {...}, "metrics": {...}, "created": "...", "notes": "..."
    }

Preprocessing (cast, scale, normalise, transpose) is inside the ONNX graph: every backend gets
uint8 RGB NHWC at the model's size. An "instances" bundle (the Cascade Mask R-CNN second pass)
may instead carry an MMDetection checkpoint and config (formats "mmdet" and "mmdet-config"),
which only the second pass's torch path runs (:mod:`engine.analysis.instances`). :func:`load_bundle` validates all of this at the edge and
raises :class:`~engine.errors.BundleError` with a message that names the file and what to do.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from engine.errors import BundleError, ContentAreaError

log = logging.getLogger(__name__)

FORMAT = "endoview-bundle/1"
MANIFEST = "manifest.json"
TASKS = ("classify", "segment", "instances")
#: Output roles each task must declare (role -> meaning). "instances" is an instance segmenter
#: (the second pass's Cascade Mask R-CNN): per-instance masks, boxes and scores.
REQUIRED_OUTPUTS = {"classify": ("probabilities",), "segment": ("mask",),
                    "instances": ("masks", "boxes", "scores")}
KNOWN_OUTPUTS = {"classify": ("probabilities",), "segment": ("mask", "probabilities"),
                 "instances": ("masks", "boxes", "scores")}
#: The only input conventions the engine produces (crop + resize, nothing else).
INPUT_LAYOUT, INPUT_DTYPE, INPUT_COLOR = "NHWC", "uint8", "RGB"
_REQUIRED_KEYS = ("format", "name", "task", "labels", "input", "outputs", "files", "formats", "trained")


@dataclass(frozen=True, eq=False)
class Bundle:
    """A validated model bundle. ``manifest`` is the raw dict as read from ``manifest.json``."""

    path: Path
    name: str
    task: str
    labels: tuple[str, ...]
    input_name: str
    input_size: tuple[int, int]  # (height, width)
    outputs: dict[str, str]  # role -> output tensor name
    files: dict[str, str]  # relative path -> sha256
    formats: dict[str, str]  # backend family ("onnx", "torchscript", ...) -> relative path
    trained: bool
    manifest: dict[str, Any] = field(repr=False)
    #: box of the model input blacked out in every image (input.inset; engine.analysis.crop.SCOPE_GUIDE_INSET)
    inset: tuple[float, float, float, float] | None = None

    def has(self, fmt: str) -> bool:
        """True when the bundle carries a model file for backend family ``fmt``."""
        return fmt in self.formats

    def file(self, fmt: str) -> Path:
        """Absolute path of the model file for backend family ``fmt`` ("onnx", "torchscript", ...)."""
        rel = self.formats.get(fmt)
        if rel is None:
            have = ", ".join(sorted(self.formats)) or "none"
            raise BundleError(
                f"model bundle {self.path} has no {fmt} model (it has: {have}); "
                f"re-export it with a {fmt} file or choose another backend"
            )
        return self.path / rel

    def sha256(self, fmt: str) -> str:
        """The manifest's sha256 of the model file for ``fmt`` (already verified at load)."""
        self.file(fmt)
        return self.files[self.formats[fmt]]

    @property
    def output_names(self) -> list[str]:
        """Output tensor names in manifest order, without duplicates."""
        return list(dict.fromkeys(self.outputs.values()))

    @property
    def num_classes(self) -> int:
        return len(self.labels)


# --------------------------------------------------------------------------------------------
# loading


def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Read and validate the bundle in folder ``path`` (manifest, file hashes, ONNX graph)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        if folder.is_file() and folder.name == MANIFEST:
            folder = folder.parent
        else:
            raise BundleError(f"model bundle not found: {folder} (expected a folder with {MANIFEST})")
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"model bundle {folder} has no {MANIFEST}; it is not an endoview model bundle")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{mpath} is not valid JSON ({err}); re-export the bundle") from err
    if not isinstance(manifest, dict):
        raise BundleError(f"{mpath} must hold a JSON object, not {type(manifest).__name__}")

    fields = _validate_manifest(manifest, mpath)
    files: dict[str, str] = fields["files"]
    for rel, expected in files.items():
        full = _safe_member(folder, rel, mpath)
        if not full.is_file():
            raise BundleError(
                f"model file {full} named in {mpath} is missing; copy the complete bundle folder"
            )
        actual = sha256_file(full)
        if actual != expected.lower():
            raise BundleError(
                f"model file {full} does not match its manifest (sha256 {actual[:16]}... but "
                f"{MANIFEST} says {expected[:16]}...): the bundle is damaged or was modified; "
                "re-export it"
            )

    bundle = Bundle(
        path=folder.resolve(),
        name=fields["name"],
        task=fields["task"],
        labels=fields["labels"],
        input_name=fields["input_name"],
        input_size=fields["input_size"],
        outputs=fields["outputs"],
        files=files,
        formats=fields["formats"],
        trained=fields["trained"],
        manifest=manifest,
        inset=fields["inset"],
    )
    if "onnx" in bundle.formats:
        check_onnx_graph(bundle)
    log.debug("loaded model bundle %s (%s, %d labels)", bundle.path, bundle.name, len(bundle.labels))
    return bundle


def check_inset(inset: object) -> tuple[float, float, float, float] | None:
    """``None`` or a box (x0, y0, x1, y1) of fractions with 0 <= x0 < x1 <= 1, 0 <= y0 < y1 <= 1."""
    if inset is None:
        return None
    try:
        x0, y0, x1, y1 = (float(v) for v in inset)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ContentAreaError(f"inset must be four fractions (x0, y0, x1, y1), not {inset!r}") from None
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        raise ContentAreaError(f"inset {inset!r} is not a box inside the image (0 <= x0 < x1 <= 1, "
                               "0 <= y0 < y1 <= 1)")
    return x0, y0, x1, y1


def _validate_manifest(m: dict[str, Any], mpath: Path) -> dict[str, Any]:
    missing = [k for k in _REQUIRED_KEYS if k not in m]
    if missing:
        raise BundleError(f"{mpath} is missing {', '.join(missing)}; re-export the bundle")
    if m["format"] != FORMAT:
        raise BundleError(
            f"{mpath} has format {m['format']!r}, but this endoview reads {FORMAT!r}; "
            "re-export the bundle or update endoview"
        )
    name = m["name"]
    if not isinstance(name, str) or not name.strip():
        raise BundleError(f"{mpath}: 'name' must be a non-empty string")
    task = m["task"]
    if task not in TASKS:
        raise BundleError(f"{mpath}: 'task' must be one of {', '.join(TASKS)}, not {task!r}")
    labels = m["labels"]
    if (
        not isinstance(labels, list)
        or not labels
        or not all(isinstance(s, str) and s for s in labels)
    ):
        raise BundleError(f"{mpath}: 'labels' must be a non-empty list of non-empty strings")
    dupes = sorted({s for s in labels if labels.count(s) > 1})
    if dupes:
        raise BundleError(f"{mpath}: 'labels' must be unique, but {', '.join(dupes)} repeat")

    inp = m["input"]
    if not isinstance(inp, dict):
        raise BundleError(f"{mpath}: 'input' must be an object with name, height, width, layout, dtype, color")
    for key in ("name", "height", "width"):
        if key not in inp:
            raise BundleError(f"{mpath}: 'input' is missing {key!r}")
    if not isinstance(inp["name"], str) or not inp["name"]:
        raise BundleError(f"{mpath}: input 'name' must be a non-empty string")
    for key in ("height", "width"):
        v = inp[key]
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise BundleError(f"{mpath}: input {key!r} must be a positive integer, not {v!r}")
    for key, want in (("layout", INPUT_LAYOUT), ("dtype", INPUT_DTYPE), ("color", INPUT_COLOR)):
        got = inp.get(key, want)
        if got != want:
            raise BundleError(
                f"{mpath}: input {key} {got!r} is not supported: endoview feeds {INPUT_DTYPE} "
                f"{INPUT_COLOR} {INPUT_LAYOUT}; put the conversion inside the ONNX graph and re-export"
            )

    try:
        inset = check_inset(inp.get("inset"))
    except ContentAreaError as err:
        raise BundleError(f"{mpath}: input {err}") from None

    outputs = m["outputs"]
    if not isinstance(outputs, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in outputs.items()
    ):
        raise BundleError(f"{mpath}: 'outputs' must map roles to output tensor names")
    need = [r for r in REQUIRED_OUTPUTS[task] if r not in outputs]
    if need:
        raise BundleError(f"{mpath}: a {task} bundle needs output role(s) {', '.join(need)} in 'outputs'")
    unknown = [r for r in outputs if r not in KNOWN_OUTPUTS[task]]
    if unknown:
        raise BundleError(
            f"{mpath}: unknown output role(s) {', '.join(unknown)} for a {task} bundle "
            f"(known: {', '.join(KNOWN_OUTPUTS[task])})"
        )

    files = m["files"]
    if not isinstance(files, dict) or not files or not all(
        isinstance(k, str) and isinstance(v, str) and len(v) == 64 for k, v in files.items()
    ):
        raise BundleError(f"{mpath}: 'files' must map each model file to its sha256 (64 hex digits)")
    formats = m["formats"]
    if not isinstance(formats, dict) or not formats or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in formats.items()
    ):
        raise BundleError(f"{mpath}: 'formats' must map backend families (onnx, torchscript) to files")
    for fmt, rel in formats.items():
        if rel not in files:
            raise BundleError(f"{mpath}: format {fmt!r} names {rel!r}, which is not listed in 'files'")
    if task == "classify" and "onnx" not in formats:
        raise BundleError(f"{mpath}: a classify bundle must have an ONNX model ('formats': {{'onnx': ...}})")
    if task == "instances" and not ("onnx" in formats or {"mmdet", "mmdet-config"} <= formats.keys()):
        raise BundleError(f"{mpath}: an instances bundle needs an ONNX model or an MMDetection checkpoint and "
                          "config ('formats': {'mmdet': 'model.pth', 'mmdet-config': 'config.py'})")
    trained = m["trained"]
    if not isinstance(trained, bool):
        raise BundleError(f"{mpath}: 'trained' must be true or false")
    return {
        "name": name,
        "task": task,
        "labels": tuple(labels),
        "input_name": inp["name"],
        "input_size": (inp["height"], inp["width"]),
        "outputs": dict(outputs),
        "files": {k: v.lower() for k, v in files.items()},
        "formats": dict(formats),
        "trained": trained,
        "inset": inset,
    }


def _safe_member(folder: Path, rel: str, mpath: Path) -> Path:
    """``folder / rel``, refusing paths that leave the bundle folder (absolute, ``..``, symlinks)."""
    pure = PurePosixPath(rel)
    if not rel or "\\" in rel or pure.is_absolute() or Path(rel).is_absolute() or ".." in pure.parts:
        raise BundleError(
            f"{mpath} names the file {rel!r}, which is outside the bundle folder; "
            "a bundle may only name files inside its own folder"
        )
    full = folder / Path(*pure.parts)
    try:
        inside = full.resolve().is_relative_to(folder.resolve())
    except OSError as err:
        raise BundleError(f"cannot resolve model file {full} named in {mpath}: {err}") from err
    if not inside:
        raise BundleError(
            f"{mpath} names the file {rel!r}, which points outside the bundle folder "
            f"(to {full.resolve()}); a bundle may only name files inside its own folder"
        )
    return full


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


# --------------------------------------------------------------------------------------------
# ONNX graph check


def _fmt_dims(dims: list[int | str | None]) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in dims) + "]"


def _dims(value_info: Any) -> list[int | str | None] | None:
    tt = value_info.type.tensor_type
    if not tt.HasField("shape"):
        return None
    out: list[int | str | None] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def check_onnx_graph(bundle: Bundle) -> None:
    """Check the ONNX model's declared input and outputs against the manifest."""
    import onnx  # lazy: keeps ``import engine.bundle`` light

    path = bundle.file("onnx")
    rel = bundle.formats["onnx"]
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (OSError, ValueError, DecodeError) as err:
        raise BundleError(f"{path} is not a readable ONNX model ({err}); re-export the bundle") from err
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    inputs = {vi.name: vi for vi in graph.input if vi.name not in inits}
    h, w = bundle.input_size
    if bundle.input_name not in inputs:
        raise BundleError(
            f"{rel} in {bundle.path} has no input {bundle.input_name!r} (it has: "
            f"{', '.join(inputs) or 'none'}); the manifest and the model disagree, re-export the bundle"
        )
    extra = [n for n in inputs if n != bundle.input_name]
    if extra:
        raise BundleError(
            f"{rel} in {bundle.path} has extra inputs {', '.join(extra)}; endoview models take one "
            f"image input ({bundle.input_name!r})"
        )
    vi = inputs[bundle.input_name]
    elem = vi.type.tensor_type.elem_type
    if elem != onnx.TensorProto.UINT8:
        raise BundleError(
            f"input {bundle.input_name!r} of {rel} is {onnx.helper.tensor_dtype_to_np_dtype(elem) if elem else 'untyped'}"
            f" but the manifest says uint8; put the cast inside the graph and re-export"
        )
    dims = _dims(vi)
    want = [None, h, w, 3]
    if dims is None or len(dims) != 4 or any(
        not (isinstance(d, int) and d == x) for d, x in zip(dims[1:], want[1:])
    ) or (isinstance(dims[0], int) and dims[0] < 1):
        shown = "unknown" if dims is None else _fmt_dims(dims)
        raise BundleError(
            f"input shape of {rel} is {shown} but the manifest says NHWC Nx{h}x{w}x3 "
            f"(in {bundle.path}); re-export the model or fix the manifest"
        )

    outs = {vi.name: vi for vi in graph.output}
    for role, tname in bundle.outputs.items():
        if tname not in outs:
            raise BundleError(
                f"{rel} in {bundle.path} has no output {tname!r} (role {role!r}; it has: "
                f"{', '.join(outs) or 'none'}); re-export the bundle"
            )
        odims = _dims(outs[tname])
        if odims is None:
            continue
        if role == "probabilities":
            if len(odims) != 2 or (isinstance(odims[1], int) and odims[1] != len(bundle.labels)):
                raise BundleError(
                    f"output {tname!r} of {rel} has shape {_fmt_dims(odims)} but the manifest has "
                    f"{len(bundle.labels)} labels (expected [N,{len(bundle.labels)}]); re-export the bundle"
                )
        elif role == "mask":
            if len(odims) != 4 or (isinstance(odims[1], int) and odims[1] != 1):
                raise BundleError(
                    f"output {tname!r} of {rel} has shape {_fmt_dims(odims)} but a mask must be "
                    "[N,1,H,W]; re-export the bundle"
                )


# --------------------------------------------------------------------------------------------
# writing


def write_bundle(
    folder: str | os.PathLike[str],
    *,
    name: str,
    task: str,
    labels: list[str] | tuple[str, ...],
    input_size: tuple[int, int],
    files: Mapping[str, Path | bytes],
    formats: Mapping[str, str],
    outputs: Mapping[str, str],
    trained: bool,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    notes: str | None = None,
    input_name: str = "image",
    inset: tuple[float, float, float, float] | None = None,
    extra: Mapping[str, Any] | None = None,
    force: bool = False,
) -> Bundle:
    """Write a bundle atomically (temp folder renamed on success) and return it, loaded and checked.

    ``files`` maps each relative file name to its content (bytes) or to an existing file to copy.
    ``extra``: more top-level manifest keys (a segmenter's ``presence`` rule).
    Refuses to replace an existing non-empty ``folder`` unless ``force``.
    """
    dest = Path(folder).expanduser()
    if dest.exists() and not dest.is_dir():
        raise BundleError(f"cannot write model bundle to {dest}: it exists and is not a folder")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise BundleError(f"{dest} exists and is not empty; choose another folder or pass force=True (--force)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a bundle is an ordinary folder
    try:
        hashes: dict[str, str] = {}
        for rel, content in files.items():
            target = _safe_member(tmp, rel, dest / MANIFEST)
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, (bytes, bytearray, memoryview)):
                target.write_bytes(content)
            else:
                src = Path(content)
                if not src.is_file():
                    raise BundleError(f"cannot write model bundle {dest}: {src} is not a file")
                shutil.copyfile(src, target)
            hashes[rel] = sha256_file(target)
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "name": name,
            "task": task,
            "labels": list(labels),
            "input": {
                "name": input_name,
                "height": int(input_size[0]),
                "width": int(input_size[1]),
                "layout": INPUT_LAYOUT,
                "dtype": INPUT_DTYPE,
                "color": INPUT_COLOR,
                **({"inset": list(inset)} if inset is not None else {}),
            },
            "outputs": dict(outputs),
            "files": hashes,
            "formats": dict(formats),
            "trained": bool(trained),
            "training": training or {},
            "metrics": metrics or {},
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "notes": notes or "",
            **dict(extra or {}),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        try:
            load_bundle(tmp)
        except BundleError as err:
            raise BundleError(str(err).replace(str(tmp.resolve()), str(dest)).replace(str(tmp), str(dest))) from err
        if dest.exists():
            old = dest.with_name(f".{dest.name}.{os.getpid()}.old")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote model bundle %s to %s", name, dest)
    return load_bundle(dest)

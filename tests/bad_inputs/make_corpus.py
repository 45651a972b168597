"""Generate the bad-input corpus: inputs, model bundles and output targets that break things.

Run as a script (``python tests/bad_inputs/make_corpus.py OUT_DIR``) to write every kind into
``OUT_DIR`` and print what was made, or import it: :data:`KINDS` lists each kind with the
commands it applies to and what a correct outcome is, :func:`make` builds one kind.

Each kind is ``Kind(name, role, commands, expect, build)``:

- ``role``: ``"input"`` (the SOURCE / INPUT argument), ``"model"`` (a bundle for ``--model`` /
  ``eval`` / ``build-engine``) or ``"output"`` (where ``-o`` points, with a good input).
- ``commands``: which of ``annotate``, ``crop``, ``view``, ``eval``, ``build-engine`` it is run
  through.
- ``expect``: ``"ok"`` (must succeed with a correct output), ``"partial"`` (may write what could
  be decoded and exit 0 or 3 with a warning line, or fail with one error line) or an error
  fragment: the run must fail with exactly one ``endoview: error:`` line containing it.
- ``build(folder) -> Path``: writes the thing and returns the path to pass.

Big inputs stay small in bytes: the 8K clip is three flat frames of fast H.264.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/tiny_models.py

ALL_CMDS = ("annotate", "crop", "view")
MODEL_CMDS = ("annotate", "eval", "build-engine")


@dataclass(frozen=True)
class Kind:
    name: str
    role: str
    commands: tuple[str, ...]
    expect: str
    build: Callable[[Path], Path]
    note: str = ""


# ------------------------------------------------------------------------------------ videos


def _frame(i: int, w: int, h: int) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    if w >= 16 and h >= 16:
        cv2.circle(img, (w // 2, h // 2), int(min(w, h) * 0.45), (60 + 5 * i % 100, 80, 170), -1)
    else:
        img[:] = (60, 80, 170)
    return img


def write_clip(path: Path, n: int = 12, w: int = 160, h: int = 128, *, fmt: str = "mp4",
               codec: str = "libx264", rate: int = 10, options: dict | None = None,
               frames: list[np.ndarray] | None = None, metadata: dict | None = None) -> Path:
    with av.open(str(path), "w", format=fmt, options=options or {}) as out:
        if metadata:
            out.metadata.update(metadata)
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "30"}
        for i in range(n):
            image = frames[i] if frames is not None else _frame(i, w, h)
            vf = av.VideoFrame.from_ndarray(image, format="bgr24")
            vf.pts = i
            vf.time_base = Fraction(1, rate)
            for p in stream.encode(vf):
                out.mux(p)
        for p in stream.encode(None):
            out.mux(p)
    return path


def zero_byte(folder: Path) -> Path:
    p = folder / "zero.mp4"
    p.write_bytes(b"")
    return p


def truncated_mp4(folder: Path) -> Path:
    data = write_clip(folder / "_whole.mp4", 30).read_bytes()
    (folder / "_whole.mp4").unlink()
    p = folder / "truncated.mp4"
    p.write_bytes(data[: len(data) // 2])  # moov at the end: no index left
    return p


def truncated_mkv(folder: Path) -> Path:
    data = write_clip(folder / "_whole.mkv", 40, fmt="matroska").read_bytes()
    (folder / "_whole.mkv").unlink()
    p = folder / "truncated.mkv"
    p.write_bytes(data[: len(data) // 2])
    return p


def bitflip(folder: Path, name: str, fmt: str) -> Path:
    data = bytearray(write_clip(folder / f"_clean.{name}", 30, fmt=fmt).read_bytes())
    (folder / f"_clean.{name}").unlink()
    rng = np.random.default_rng(11)
    for pos in rng.integers(len(data) // 4, len(data), 80):
        data[pos] ^= 0xA5
    p = folder / f"bitflipped.{name}"
    p.write_bytes(bytes(data))
    return p


def text_as_mp4(folder: Path) -> Path:
    p = folder / "notes.mp4"
    p.write_text("this is a text file, not a video\n" * 40, encoding="utf-8")
    return p


def unsupported_codec(folder: Path) -> Path:
    clean = write_clip(folder / "_clean.avi", 10, fmt="avi", codec="mpeg4")
    p = folder / "unsupported_codec.avi"
    p.write_bytes(clean.read_bytes().replace(b"FMP4", b"ZZZ9"))
    clean.unlink()
    return p


def audio_only(folder: Path) -> Path:
    p = folder / "audio_only.mp4"
    with av.open(str(p), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return p


def tiny_1x1(folder: Path) -> Path:
    # yuv420p needs even sizes; a 1x1 picture is stored losslessly as RGB in FFV1
    p = folder / "one_pixel.mkv"
    with av.open(str(p), "w", format="matroska") as out:
        stream = out.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = 1, 1, "bgr0"
        for i in range(5):
            vf = av.VideoFrame.from_ndarray(np.full((1, 1, 3), 40 * i, np.uint8), format="bgr24")
            vf.pts = i
            for pk in stream.encode(vf.reformat(format="bgr0")):
                out.mux(pk)
        for pk in stream.encode(None):
            out.mux(pk)
    return p


def huge_8k(folder: Path) -> Path:
    w, h = 7680, 4320
    img = _frame(0, w, h)
    return write_clip(folder / "eight_k.mp4", 3, w, h, frames=[img] * 3, rate=5)


def size_change(folder: Path) -> Path:
    """MPEG-TS: 8 frames at 160x128 then 8 at 320x256 in one H.264 stream (new SPS mid-stream)."""
    a = write_clip(folder / "_a.ts", 8, 160, 128, fmt="mpegts")
    b = write_clip(folder / "_b.ts", 8, 320, 256, fmt="mpegts")
    p = folder / "size_change.ts"
    p.write_bytes(a.read_bytes() + b.read_bytes())
    a.unlink()
    b.unlink()
    return p


def non_ascii_path(folder: Path) -> Path:
    sub = folder / "Bilder Ümlaut 内視鏡"
    sub.mkdir(exist_ok=True)
    return write_clip(sub / "vidéo_胃カメラ.mp4", 10)


def empty_folder(folder: Path) -> Path:
    p = folder / "empty_folder"
    p.mkdir(exist_ok=True)
    return p


# ------------------------------------------------------------------------------------ images


def image_1x1(folder: Path) -> Path:
    p = folder / "one_pixel.png"
    cv2.imwrite(str(p), np.full((1, 1, 3), 128, np.uint8))
    return p


def image_gray(folder: Path) -> Path:
    p = folder / "gray.png"
    img = np.zeros((120, 160), np.uint8)
    cv2.circle(img, (80, 60), 50, 150, -1)
    cv2.imwrite(str(p), img)
    return p


def image_16bit(folder: Path) -> Path:
    p = folder / "deep16.png"
    img = np.zeros((120, 160, 3), np.uint16)
    cv2.circle(img, (80, 60), 50, (20000, 30000, 50000), -1)
    cv2.imwrite(str(p), img)
    return p


def image_truncated(folder: Path) -> Path:
    p = folder / "cut.jpg"
    ok, data = cv2.imencode(".jpg", _frame(0, 160, 120))
    p.write_bytes(data.tobytes()[:40])
    return p


# ------------------------------------------------------------------------------------ models


def _labels() -> tuple[str, ...]:
    try:
        from train.labels import RAW_CLASSES
        return tuple(RAW_CLASSES)
    except ImportError:  # train/ needs torch; the engine commands do not care about the labels
        return ("normal", "polyp", "other")


def _bundle(folder: Path, name: str) -> Path:
    from tiny_models import make_tiny_classifier_bundle

    return make_tiny_classifier_bundle(folder / name, labels=_labels(), size=(32, 32),
                                       torchscript=False).path


def make_good_bundle(folder: Path) -> Path:
    """A correct tiny bundle with the 23 HyperKvasir labels (the control case for eval)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    return _bundle(folder.parent, folder.name)


def _rehash(bundle: Path) -> None:
    """Make the manifest's sha256 agree with the (damaged) files again: only the content is bad."""
    from engine.bundle import sha256_file

    mpath = bundle / "manifest.json"
    m = json.loads(mpath.read_text())
    m["files"] = {rel: sha256_file(bundle / rel) for rel in m["files"]}
    mpath.write_text(json.dumps(m, indent=2))


def _edit_manifest(bundle: Path, fn) -> None:
    mpath = bundle / "manifest.json"
    m = json.loads(mpath.read_text())
    fn(m)
    mpath.write_text(json.dumps(m, indent=2))


def model_missing(folder: Path) -> Path:
    b = _bundle(folder, "model_missing")
    (b / "model.onnx").unlink()
    return b


def model_empty(folder: Path) -> Path:
    b = _bundle(folder, "model_empty")
    (b / "model.onnx").write_bytes(b"")
    _rehash(b)
    return b


def model_truncated(folder: Path) -> Path:
    b = _bundle(folder, "model_truncated")
    data = (b / "model.onnx").read_bytes()
    (b / "model.onnx").write_bytes(data[: len(data) // 2])
    _rehash(b)
    return b


def model_foreign(folder: Path) -> Path:
    b = _bundle(folder, "model_foreign")
    ok, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    (b / "model.onnx").write_bytes(png.tobytes() * 50)
    _rehash(b)
    return b


def model_tampered(folder: Path) -> Path:
    b = _bundle(folder, "model_tampered")
    data = bytearray((b / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (b / "model.onnx").write_bytes(bytes(data))
    return b


def manifest_disagrees(folder: Path) -> Path:
    b = _bundle(folder, "manifest_disagrees")

    def bigger(m):
        m["input"]["height"] = m["input"]["width"] = 64

    _edit_manifest(b, bigger)
    return b


def manifest_missing(folder: Path) -> Path:
    b = _bundle(folder, "manifest_missing")
    (b / "manifest.json").unlink()
    return b


def manifest_garbage(folder: Path) -> Path:
    b = _bundle(folder, "manifest_garbage")
    (b / "manifest.json").write_text("{not json", encoding="utf-8")
    return b


def path_escape(folder: Path) -> Path:
    b = _bundle(folder, "path_escape")
    outside = folder / "outside.onnx"
    outside.write_bytes((b / "model.onnx").read_bytes())

    def escape(m):
        sha = m["files"].pop("model.onnx")
        m["files"]["../outside.onnx"] = sha
        m["formats"]["onnx"] = "../outside.onnx"

    _edit_manifest(b, escape)
    return b


# ------------------------------------------------------------------------------------ outputs


def output_readonly(folder: Path) -> Path:
    ro = folder / "readonly_out"
    ro.mkdir(exist_ok=True)
    ro.chmod(0o555)  # root ignores this: the test mounts a read-only tmpfs there instead
    return ro / "out.mp4"


def output_exists(folder: Path) -> Path:
    p = folder / "exists.mp4"
    p.write_bytes(b"an earlier result that must be kept")
    return p


def output_is_folder(folder: Path) -> Path:
    p = folder / "out_is_a_folder.mp4"
    p.mkdir(exist_ok=True)
    return p


def output_disk_full(folder: Path) -> Path:
    """The output of a run under a 300 kB file-size limit (RLIMIT_FSIZE, set by the runner)."""
    return folder / "disk_full.mp4"


FSIZE_LIMIT = 300_000  # bytes: RLIMIT_FSIZE for the disk-full kind


KINDS: tuple[Kind, ...] = (
    Kind("zero_byte", "input", ALL_CMDS, "file is empty", zero_byte),
    Kind("truncated_mp4", "input", ALL_CMDS, "incomplete", truncated_mp4),
    Kind("truncated_mkv", "input", ALL_CMDS, "partial", truncated_mkv),
    Kind("bitflip_mp4", "input", ALL_CMDS, "partial", lambda f: bitflip(f, "mp4", "mp4")),
    Kind("bitflip_mkv", "input", ALL_CMDS, "partial", lambda f: bitflip(f, "mkv", "matroska")),
    Kind("text_as_mp4", "input", ALL_CMDS, "not a video", text_as_mp4),
    Kind("unsupported_codec", "input", ALL_CMDS, "not supported", unsupported_codec),
    Kind("audio_only", "input", ALL_CMDS, "no video stream", audio_only),
    Kind("video_1x1", "input", ALL_CMDS, "ok", tiny_1x1),
    Kind("video_8k", "input", ALL_CMDS, "ok", huge_8k),
    Kind("size_change", "input", ("annotate", "view"), "ok", size_change,
         "frames after the change are scaled to the first size (logged once)"),
    Kind("non_ascii_path", "input", ALL_CMDS, "ok", non_ascii_path),
    Kind("empty_folder", "input", ("annotate", "view"), "no images", empty_folder),
    Kind("image_1x1", "input", ALL_CMDS, "ok", image_1x1),
    Kind("image_gray", "input", ALL_CMDS, "ok", image_gray),
    Kind("image_16bit", "input", ALL_CMDS, "ok", image_16bit),
    Kind("image_truncated", "input", ALL_CMDS, "cut.jpg", image_truncated),
    Kind("model_missing", "model", MODEL_CMDS, "is missing", model_missing),
    Kind("model_empty", "model", MODEL_CMDS, "model.onnx", model_empty),
    Kind("model_truncated", "model", MODEL_CMDS, "not a readable ONNX model", model_truncated),
    Kind("model_foreign", "model", MODEL_CMDS, "not a readable ONNX model", model_foreign),
    Kind("model_tampered", "model", MODEL_CMDS, "does not match its manifest", model_tampered),
    Kind("manifest_disagrees", "model", MODEL_CMDS, "manifest says", manifest_disagrees),
    Kind("manifest_missing", "model", ("annotate", "build-engine"), "no manifest.json", manifest_missing),
    Kind("manifest_garbage", "model", MODEL_CMDS, "not valid JSON", manifest_garbage),
    Kind("path_escape", "model", MODEL_CMDS, "outside the bundle folder", path_escape),
    Kind("output_readonly", "output", ("annotate",), "not writable", output_readonly),
    Kind("output_exists", "output", ("annotate",), "output exists", output_exists),
    Kind("output_is_folder", "output", ("annotate",), "is a folder", output_is_folder),
    Kind("output_disk_full", "output", ("annotate",), "too large", output_disk_full,
         f"run with RLIMIT_FSIZE={FSIZE_LIMIT} bytes"),
)

BY_NAME = {k.name: k for k in KINDS}


def make(name: str, folder: Path) -> Path:
    """Build kind ``name`` inside ``folder`` (created) and return the path to pass."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return BY_NAME[name].build(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write the endoview bad-input corpus (bad videos, images, model bundles and "
                    "output targets) into OUT_DIR and list each kind with the commands it is run "
                    "through and the expected outcome.")
    parser.add_argument("out_dir", type=Path, help="folder to write into (created)")
    parser.add_argument("--only", nargs="*", metavar="KIND", choices=sorted(BY_NAME),
                        help="build only these kinds")
    args = parser.parse_args(argv)
    for kind in KINDS:
        if args.only and kind.name not in args.only:
            continue
        path = make(kind.name, args.out_dir / kind.name)
        print(f"{kind.name:20s} {kind.role:6s} {','.join(kind.commands):28s} expect {kind.expect!r:32s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

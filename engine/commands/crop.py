"""``endoview crop``: the detected endoscopic field (black-border crop) of images and videos."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from ..analysis.content_area import detect_content_area
from ..errors import EndoviewError, SourceError
from ..sources import open_source
from ..types import ContentArea

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "crop",
        help="show the detected endoscopic field (black-border crop) of images or videos",
        description="Detect the visible endoscopic field inside the processor's black frame "
                    "(circle, octagon, rectangle or full frame) of each image, or of a few frames "
                    "spread over each video, and print its bounding box, shape and confidence.",
        epilog="examples:\n  endoview crop frame.jpg\n"
               "  endoview crop images/*.jpg --json > areas.json\n"
               "  endoview crop case.mp4 --samples 10 --preview previews/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_VIDEO", help="image or video files")
    p.add_argument("--json", action="store_true",
                   help='print one JSON document {"results": [...]} instead of text lines')
    p.add_argument("--preview", type=Path, metavar="DIR",
                   help="write a picture per result: the original beside the outlined field")
    p.add_argument("--samples", type=int, default=5, metavar="N",
                   help="frames analysed per video, evenly spread (default: 5)")
    p.set_defaults(func=run)


def _read_image(path: Path) -> np.ndarray:
    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else None
    if data is None:
        raise SourceError(f"{path}: no such file")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise SourceError(f"{path}: not a readable image (corrupt or unsupported format)")
    return image


def _video_frames(path: Path, samples: int) -> Iterator[tuple[int, np.ndarray]]:
    """(index, BGR image) for ``samples`` frames spread evenly over the video."""
    with open_source(str(path)) as source:
        total = source.info.frame_count or 0
        if total > 0:
            for index in _spread(total, samples):
                source.seek(index)
                frame = source.read()
                if frame is None:
                    raise SourceError(f"{path}: frame {index} of {total} could not be read")
                yield frame.index, frame.image
        else:  # length unknown: the first frames
            for n, frame in enumerate(source):
                if n >= samples:
                    break
                yield frame.index, frame.image


def _spread(total: int, samples: int) -> list[int]:
    n = max(1, min(samples, total))
    return sorted({int(round(v)) for v in np.linspace(0, total - 1, n)})


def _preview(image: np.ndarray, area: ContentArea) -> np.ndarray:
    drawn = image.copy()
    thick = max(2, round(max(image.shape[:2]) / 400))
    x, y, w, h = area.bbox
    cv2.rectangle(drawn, (x, y), (x + w - 1, y + h - 1), (255, 160, 0), thick)
    cv2.polylines(drawn, [area.polygon.reshape(-1, 1, 2)], True, (0, 255, 0), thick)
    label = f"{area.shape} {area.confidence:.2f}"
    cv2.putText(drawn, label, (x + 10, y + 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 255, 0), 2)
    gap = np.zeros((image.shape[0], 8, 3), np.uint8)
    return np.hstack([image, gap, drawn])


def _line(result: dict) -> str:
    where = result["path"] if result["frame"] is None else f"{result['path']} [frame {result['frame']}]"
    x, y, w, h = result["bbox"]
    return f"{where}: {result['shape']} x={x} y={y} w={w} h={h} confidence={result['confidence']:.3f}"


def run(args) -> int:
    if args.samples < 1:
        raise EndoviewError(f"--samples must be at least 1, not {args.samples}")
    if args.preview is not None:
        try:
            args.preview.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EndoviewError(f"cannot create the preview folder {args.preview}: {exc.strerror}") from exc
    results: list[dict] = []
    failed = 0
    used_names: set[str] = set()
    for spec in args.inputs:
        path = Path(spec)
        try:
            if path.suffix.lower() in IMAGE_SUFFIXES:
                items = [(None, _read_image(path))]
            else:
                if not path.exists():
                    raise SourceError(f"{path}: no such file")
                items = list(_video_frames(path, args.samples))
            for index, image in items:
                area = detect_content_area(image)
                result = {"path": str(path), "frame": index, **area.to_dict()}
                results.append(result)
                if not args.json:
                    print(_line(result), flush=True)
                if args.preview is not None:
                    _write_preview(args.preview, path, index, image, area, used_names)
        except EndoviewError as exc:
            failed += 1
            message = str(exc)
            if str(path) not in message:
                message = f"{path}: {message}"
            print(f"endoview: error: {message}", file=sys.stderr, flush=True)
    if args.json:
        json.dump({"results": results}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 1 if failed else 0


def _write_preview(folder: Path, path: Path, index: int | None, image: np.ndarray,
                   area: ContentArea, used: set[str]) -> None:
    stem = path.stem if index is None else f"{path.stem}_frame{index:06d}"
    name, n = f"{stem}.jpg", 1
    while name in used:
        n += 1
        name = f"{stem}_{n}.jpg"
    used.add(name)
    out = folder / name
    if not cv2.imwrite(str(out), _preview(image, area), [cv2.IMWRITE_JPEG_QUALITY, 90]):
        raise EndoviewError(f"cannot write the preview {out}")
    logger.info("preview written: %s", out)

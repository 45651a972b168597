"""Thumbnails of each polyp track's best frame, grabbed from the video a log was made from.

A log has no pixels; its rows name frames by their index in the *source* video. The video given
may be that source, or the clip ``endoview annotate`` wrote from it: when the clip has exactly as
many frames as the log has rows and the log starts after frame 0 (``annotate --start``), its frame
k is the log's frame ``first index + k``; otherwise indices are taken as they are.

The log keeps the field's box but not its outline, so each grabbed frame's field is detected
again and everything outside it blacked out before the thumbnail is cut (the processor's
on-screen text lies there). Text the processor draws inside the field, as in many Kvasir-SEG
frames, stays: a thumbnail is not guaranteed free of burned-in text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import EndoviewError, SourceError
from .report import make_thumbnail

logger = logging.getLogger(__name__)


def frame_offset(rows: Sequence[Mapping], frame_count: int | None) -> int:
    """How far the video's frame numbers lag the log's (see the module's docstring)."""
    if not rows:
        return 0
    first = int(rows[0]["index"])
    if first > 0 and frame_count is not None and frame_count == len(rows):
        return first
    return 0


def grab_frames(video: str | Path, indices: Sequence[int], rows: Sequence[Mapping] = (), *,
                open_source: Callable) -> dict[int, np.ndarray]:
    """The frames of ``video`` at the log's frame ``indices`` (BGR), missing ones left out (logged).

    ``open_source``: :func:`engine.sources.open_source` (passed in: the pipeline imports this
    package, and the sources package imports the pipeline's outputs)."""
    path = Path(video)
    if not (path.is_file() or path.is_dir() or str(video).startswith("demo")):  # a folder of images, the demo
        raise SourceError(f"video not found: {path}")
    out: dict[int, np.ndarray] = {}
    with open_source(str(path)) as source:
        offset = frame_offset(rows, source.info.frame_count)
        for index in sorted(set(int(i) for i in indices)):
            k = index - offset
            try:
                source.seek(k)
                frame = source.read()
            except EndoviewError as exc:
                logger.warning("%s: frame %d could not be read: %s", path, k, exc)
                continue
            if frame is None:
                logger.warning("%s: has no frame %d", path, k)
                continue
            out[index] = frame.image
    return out


def blacken_outside_field(image: np.ndarray) -> np.ndarray:
    """A copy of ``image`` with everything outside its detected endoscopic field black."""
    from ..analysis.content_area import detect_content_area
    from ..analysis.crop import deidentify

    try:
        return deidentify(image, detect_content_area(image))
    except EndoviewError as exc:
        logger.warning("no field found in a thumbnail's frame (%s): kept whole", exc)
        return image.copy()


def track_thumbnails(video: str | Path, summary: Mapping, rows: Sequence[Mapping],
                     width: int = 320, *, open_source: Callable) -> dict[int, np.ndarray]:
    """Track id -> thumbnail of its best frame: the field (from that frame's row) cropped, the box drawn.
    ``open_source``: see :func:`grab_frames`."""
    tracks = summary.get("tracks") or []
    if not tracks:
        return {}
    by_index = {int(r["index"]): r for r in rows}
    frames = grab_frames(video, [t["best_frame"] for t in tracks], rows, open_source=open_source)
    thumbs: dict[int, np.ndarray] = {}
    for t in tracks:
        image = frames.get(int(t["best_frame"]))
        if image is None:
            continue
        field = ((by_index.get(int(t["best_frame"])) or {}).get("content_area") or {}).get("bbox")
        box = t.get("best_bbox")
        h, w = image.shape[:2]
        if any(b and (b[0] + b[2] > w or b[1] + b[3] > h) for b in (field, box)):
            logger.warning("%s: frame %d is %dx%d, smaller than the boxes of the log: no box drawn",
                           video, t["best_frame"], w, h)
            field = box = None  # not the video (or not the size) the log was made from
        thumbs[int(t["id"])] = make_thumbnail(blacken_outside_field(image), box, field, width)
    return thumbs

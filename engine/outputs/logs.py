"""Per-frame logs: one row per analysed frame in JSONL or CSV (by the file's extension), written
under a temporary name and renamed when complete, like every output (:mod:`engine.files`).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from engine.errors import ExportError
from engine.files import PendingFile, write_error
from engine.types import FrameResult

CSV_FIELDS = ("index", "timestamp", "polyp", "label", "confidence", "top1", "p1", "top2", "p2", "top3", "p3",
              "bbox_x", "bbox_y", "bbox_w", "bbox_h", "area_shape", "area_confidence",
              "decode_ms", "crop_ms", "resize_ms", "inference_ms", "overlay_ms", "encode_ms",
              "mask_area", "mask_x", "mask_y", "mask_w", "mask_h",  # the segmenter's mask (empty without one)
              # procedure (engine.procedure.stage): confirmed polyps so far, confirmed tracks on this frame,
              # image quality ("ok" or the issue: dark, overexposed, blurred)
              "polyps", "tracks", "quality",
              "polyp_score")  # the verdict's score where the segmenter's score rule weighs both models


class FrameLog:
    """Per-frame log rows written to ``.jsonl`` or ``.csv`` (by extension), temp name then rename."""

    def __init__(self, path: Path, *, force: bool = False) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in (".jsonl", ".csv"):
            raise ExportError(f"log file must end in .jsonl or .csv: {self.path}")
        self._file = PendingFile(self.path, force=force)
        self._tmp = self._file.tmp
        self._csv = self.path.suffix.lower() == ".csv"
        try:
            self._fh: io.TextIOBase | None = open(self._tmp, "w", encoding="utf-8", newline="")
        except OSError as exc:
            raise write_error(exc, self.path) from None
        self._writer = csv.writer(self._fh) if self._csv else None
        if self._writer is not None:
            self._writer.writerow(CSV_FIELDS)
        self.rows = 0

    def write(self, result: FrameResult) -> None:
        self.write_row(result.to_log_row())

    def write_row(self, row: dict) -> None:
        """Write one row of :meth:`FrameResult.to_log_row` (built once for every log of a frame)."""
        try:
            if self._writer is not None:
                self._writer.writerow(self._csv_row(row))
            else:
                self._fh.write(json.dumps(row, separators=(",", ":")) + "\n")
        except OSError as exc:
            self.abort()
            raise write_error(exc, self.path) from None
        self.rows += 1

    @staticmethod
    def _csv_row(row: dict) -> list:
        top = [v for pair in (row["topk"] + [[None, None]] * 3)[:3] for v in pair]
        area = row["content_area"]
        t = row["timings_ms"]
        seg = row.get("segmentation")
        mask = [seg["area"], *(seg["bbox"] or [None] * 4)] if seg else [None] * 5
        polyp = None if row.get("polyp") is None else int(row["polyp"])
        tracks = row.get("tracks")
        q = row.get("quality")
        quality = None if q is None else ("ok" if q["ok"] else q["issue"])
        return [row["index"], row["timestamp"], polyp, row["label"], row["confidence"], *top,
                *area["bbox"], area["shape"], area["confidence"],
                *(t.get(k) for k in ("decode", "crop", "resize", "inference", "overlay", "encode")), *mask,
                row.get("polyps"), None if tracks is None else len(tracks), quality, row.get("polyp_score")]

    def close(self) -> Path:
        try:
            self._fh.close()
        except OSError as exc:
            self.abort()
            raise write_error(exc, self.path) from None
        return self._file.commit()

    def abort(self) -> None:
        if self._fh is not None and not self._fh.closed:
            try:
                self._fh.close()
            except OSError:
                pass
        self._file.discard()

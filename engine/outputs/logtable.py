"""The per-frame logs of many videos as one Parquet table (pyarrow: the ``batch`` extra).

One row per frame; ``video`` names the source. The nested fields of a JSONL row become flat
columns, named as in the CSV log where the CSV has them:

- ``polyp_score`` (the verdict's score where the segmenter's score rule weighs both models; null otherwise)
- ``topk`` -> ``top1, p1, top2, p2, top3, p3``
- ``content_area`` -> ``bbox_x, bbox_y, bbox_w, bbox_h, area_shape, area_confidence``
- ``segmentation`` -> ``mask_area, mask_x, mask_y, mask_w, mask_h, seg_label, seg_confidence,
  seg_peak, seg_present, seg_model`` (null on rows without a segmenter)
- ``second_pass`` -> ``second_pass_frame_index, _model, _label, _confidence, _instances``
- ``polyps`` (confirmed polyps so far), ``tracks`` (how many on the frame), ``quality`` ->
  ``quality_ok, quality_issue``
- ``timings_ms`` -> ``<stage>_ms`` for every stage found in any of the logs

pyarrow is imported only here, inside the functions that need it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from ..errors import ExportError, ExtraMissingError
from ..procedure.log import iter_log
from ..files import check_output, replacing, write_error

logger = logging.getLogger(__name__)

PYARROW_INSTALL = 'pip install "pyarrow>=15"'
#: the timing columns in pipeline order; stages not listed here follow, sorted
STAGES = ("decode", "crop", "resize", "inference", "classifier", "segmenter", "mask", "overlay", "encode")

# (name, pyarrow type name) of the fixed columns, in order
COLUMNS = (
    ("video", "string"), ("index", "int64"), ("timestamp", "float64"), ("polyp", "bool_"),
    ("polyp_score", "float64"), ("label", "string"), ("confidence", "float64"), ("smoothed", "bool_"),
    ("top1", "string"), ("p1", "float64"), ("top2", "string"), ("p2", "float64"),
    ("top3", "string"), ("p3", "float64"),
    ("bbox_x", "int32"), ("bbox_y", "int32"), ("bbox_w", "int32"), ("bbox_h", "int32"),
    ("area_shape", "string"), ("area_confidence", "float64"),
    ("mask_area", "int64"), ("mask_x", "int32"), ("mask_y", "int32"), ("mask_w", "int32"),
    ("mask_h", "int32"), ("seg_label", "string"), ("seg_confidence", "float64"),
    ("seg_peak", "float64"), ("seg_present", "bool_"), ("seg_model", "string"),
    ("second_pass_frame_index", "int64"), ("second_pass_model", "string"),
    ("second_pass_label", "string"), ("second_pass_confidence", "float64"),
    ("second_pass_instances", "int32"),
    ("polyps", "int64"), ("tracks", "int32"), ("quality_ok", "bool_"), ("quality_issue", "string"),
)


def import_pyarrow():
    """``(pyarrow, pyarrow.parquet)``, or ExtraMissingError naming the install command."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ExtraMissingError(f"Parquet output needs pyarrow, which is not installed: {PYARROW_INSTALL} "
                                "(or the extra: pip install 'endoview[batch]')") from None
    return pyarrow, pyarrow.parquet


def flatten(row: dict, video: str) -> dict:
    """One JSONL log row as flat columns (see the module docstring)."""
    top = [*(row.get("topk") or []), *[[None, None]] * 3]
    area = row.get("content_area") or {}
    bbox = area.get("bbox") or [None] * 4
    seg = row.get("segmentation") or {}
    mask = seg.get("bbox") or [None] * 4
    sp = row.get("second_pass") or {}
    flat = {
        "video": video, "index": row["index"], "timestamp": row.get("timestamp"),
        "polyp": row.get("polyp"), "polyp_score": row.get("polyp_score"), "label": row.get("label"),
        "confidence": row.get("confidence"),
        "smoothed": row.get("smoothed"),
        "bbox_x": bbox[0], "bbox_y": bbox[1], "bbox_w": bbox[2], "bbox_h": bbox[3],
        "area_shape": area.get("shape"), "area_confidence": area.get("confidence"),
        "mask_area": seg.get("area"), "mask_x": mask[0], "mask_y": mask[1], "mask_w": mask[2],
        "mask_h": mask[3], "seg_label": seg.get("label"), "seg_confidence": seg.get("confidence"),
        "seg_peak": seg.get("peak"), "seg_present": seg.get("present"), "seg_model": seg.get("model"),
    }
    for k in range(3):
        flat[f"top{k + 1}"], flat[f"p{k + 1}"] = top[k]
    for key in ("frame_index", "model", "label", "confidence", "instances"):
        flat[f"second_pass_{key}"] = sp.get(key)
    tracks, quality = row.get("tracks"), row.get("quality") or {}
    flat["polyps"] = row.get("polyps")
    flat["tracks"] = None if tracks is None else len(tracks)
    flat["quality_ok"], flat["quality_issue"] = quality.get("ok"), quality.get("issue")
    for stage, ms in (row.get("timings_ms") or {}).items():
        flat[f"{stage}_ms"] = ms
    return flat


def read_log(path: Path, video: str) -> list[dict]:
    """The flattened rows of one JSONL log, read by the one log reader
    (:func:`engine.procedure.log.iter_log`: LogError naming the file and line if it is not one)."""
    path = Path(path)
    if path.suffix.lower() != ".jsonl":
        raise ExportError(f"only .jsonl logs can be merged (the CSV lacks fields): {path}")
    rows = []
    for n, row in enumerate(iter_log(path), 1):
        try:
            rows.append(flatten(row, video))
        except (KeyError, TypeError, ValueError) as exc:
            raise ExportError(f"{path}: row {n}: not an endoview log row ({exc})") from None
    return rows


def video_name(log: Path) -> str:
    """The video a log belongs to, from its name: ``case1_annotated.jsonl`` -> ``case1``."""
    stem = Path(log).stem
    return stem[: -len("_annotated")] if stem.endswith("_annotated") else stem


def merge_logs(logs: Sequence[tuple[str, Path]], output: Path, *, force: bool = False) -> int:
    """Write the ``(video, jsonl log)`` pairs into one Parquet file (zstd, one row group per
    video), under a temporary name then renamed; return the number of rows."""
    pa, pq = import_pyarrow()
    output = Path(output)
    if output.suffix.lower() != ".parquet":
        raise ExportError(f"the merged log must end in .parquet: {output}")
    check_output(output, force=force)
    if not logs:
        raise ExportError("no logs to merge")
    tables = [read_log(path, video) for video, path in logs]
    seen = {key for rows in tables for row in rows for key in row if key.endswith("_ms")}
    stages = [f"{s}_ms" for s in STAGES if f"{s}_ms" in seen] + sorted(seen - {f"{s}_ms" for s in STAGES})
    schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in COLUMNS]
                       + [(name, pa.float64()) for name in stages])
    total = 0
    try:
        with replacing(output, force=force) as tmp, \
                pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for rows in tables:
                if rows:
                    writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                    total += len(rows)
    except pa.ArrowException as exc:  # an ArrowException that is an OSError came out mapped
        raise write_error(exc, output) from None
    return total


__all__ = ["COLUMNS", "flatten", "import_pyarrow", "merge_logs", "read_log", "video_name"]

"""Reading an ``endoview annotate`` JSONL log back into per-frame rows.

One JSON object per line, as ``FrameResult.to_log_row()`` writes it (``index``, ``timestamp``,
``polyp``, ``label``, ``confidence``, ``topk``, ``content_area``, ``timings_ms``, and
``segmentation`` / ``second_pass`` when there was one). Every problem is a :class:`LogError`
naming the file and, where it helps, the line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from ..errors import EndoviewError

REQUIRED = ("index", "timestamp")


class LogError(EndoviewError):
    """A per-frame log is missing, empty or not a log."""


def iter_log(path: str | Path) -> Iterator[dict]:
    """The rows of a JSONL log, one by one (blank lines skipped)."""
    path = Path(path)
    if not path.exists():
        raise LogError(f"{path}: no such file")
    if not path.is_file():
        raise LogError(f"{path}: not a file")
    rows = 0
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise LogError(f"{path}, line {number}: not JSON ({exc.msg}); expected the JSONL log of "
                                   "'endoview annotate'") from None
                if not isinstance(row, dict) or any(k not in row for k in REQUIRED):
                    raise LogError(f"{path}, line {number}: not a per-frame row (it needs 'index' and "
                                   "'timestamp'); expected the JSONL log of 'endoview annotate'")
                if not isinstance(row["index"], int) or isinstance(row["index"], bool) \
                        or not isinstance(row["timestamp"], (int, float)) or isinstance(row["timestamp"], bool):
                    raise LogError(f"{path}, line {number}: 'index' must be a whole number and 'timestamp' "
                                   "a number")
                rows += 1
                yield row
    except UnicodeDecodeError:
        raise LogError(f"{path}: not a text file; expected the JSONL log of 'endoview annotate'") from None
    except OSError as exc:
        raise LogError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    if rows == 0:
        raise LogError(f"{path}: empty log (no rows)")


def read_log(path: str | Path) -> list[dict]:
    """All rows of a JSONL log (see :func:`iter_log`)."""
    return list(iter_log(path))

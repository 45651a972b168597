"""HyperKvasir's official split file: ``file-name;class-name;split-index``, one image a line."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError
from .labels import RAW_CLASSES

SPLIT_HEADER = ("file-name", "class-name", "split-index")


@dataclass(frozen=True)
class SplitRow:
    label: str
    fold: int


def read_split(csv_path: str | os.PathLike[str]) -> dict[str, SplitRow]:
    """``file-name -> SplitRow`` from an official split file; DataError on anything malformed."""
    path = Path(csv_path).expanduser()
    if not path.is_file():
        raise DataError(f"split file not found: {path} (HyperKvasir's official_splits/2_fold_split.csv)")
    rows: dict[str, SplitRow] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, delimiter=";")
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != SPLIT_HEADER:
            raise DataError(
                f"{path} does not start with the header {';'.join(SPLIT_HEADER)} (got {header!r}); "
                "pass HyperKvasir's official split file"
            )
        for line, row in enumerate(reader, start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 3:
                raise DataError(f"{path}:{line}: expected 3 fields separated by ';', got {len(row)}: {row!r}")
            name, label, fold = (v.strip() for v in row)
            if label not in RAW_CLASSES:
                raise DataError(
                    f"{path}:{line}: class {label!r} is not one of the 23 HyperKvasir classes "
                    f"({', '.join(RAW_CLASSES)})"
                )
            try:
                k = int(fold)
            except ValueError:
                raise DataError(f"{path}:{line}: split-index {fold!r} is not an integer") from None
            if name in rows:
                raise DataError(f"{path}:{line}: {name} is listed twice")
            rows[name] = SplitRow(label, k)
    if not rows:
        raise DataError(f"{path} lists no images")
    return rows

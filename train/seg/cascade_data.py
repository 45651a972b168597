"""The COCO instance files a Cascade Mask R-CNN run reads: one per official fold.

They are written by ``endoview data kvasir-coco`` (:mod:`train.seg.coco`); ``--data`` may also be
the kvasir-seg folder, converted into ``RUN_DIR/coco`` once. ``--fold K`` holds out fold K
(validated every epoch) and trains on the other fold(s).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..errors import DataError
from .cascade_config import CascadeConfig, CocoSplit

log = logging.getLogger(__name__)


def _fold_files(root: Path) -> dict[int, Path]:
    out = {}
    for p in sorted((root / "annotations").glob("fold*.json")):
        stem = p.stem[4:]
        if stem.isdigit():
            out[int(stem)] = p
    return out


def read_coco(path: Path, images: Path) -> dict[str, Any]:
    """A COCO instances file whose images are all in ``images``; DataError otherwise."""
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path} is not a readable COCO file ({err}); write it again with 'endoview data "
                        "kvasir-coco'") from err
    if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in ("images", "annotations")):
        raise DataError(f"{path} is not a COCO instances file (it needs 'images' and 'annotations' lists)")
    missing = [im.get("file_name") for im in coco["images"] if not (images / str(im.get("file_name"))).is_file()]
    if missing:
        raise DataError(f"{len(missing)} image(s) named in {path} are not in {images} (first: {missing[0]})")
    return coco


def _subset(coco: dict[str, Any], dst: Path, limit: int) -> Path:
    coco = dict(coco)
    images = coco["images"][:limit]
    ids = {im["id"] for im in images}
    coco.update(images=images, annotations=[a for a in coco["annotations"] if a["image_id"] in ids])
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(coco), encoding="utf-8")
    return dst


def resolve_data(cc: CascadeConfig, run: Path) -> CocoSplit:
    """The COCO files of ``cc.data`` (a COCO folder, or kvasir-seg converted into RUN/coco once)."""
    data = Path(cc.data).expanduser()
    if not data.is_dir():
        raise DataError(f"--data {data} is not a folder; give the COCO folder written by 'endoview data "
                        "kvasir-coco' (images/, annotations/fold<K>.json) or the kvasir-seg folder")
    root = data
    if not _fold_files(data):
        if not ((data / "masks").is_dir() or (data / "kvasir-seg" / "masks").is_dir()):
            raise DataError(f"--data {data} holds neither annotations/fold<K>.json (COCO, from 'endoview data "
                            "kvasir-coco') nor Kvasir-SEG's images/ and masks/")
        root = run / "coco"
        if not _fold_files(root):
            from .coco import write_coco

            log.info("converting %s to COCO instances per fold in %s (once)", data, root)
            write_coco(data, root, split_csv=cc.split_csv, mapping_csv=cc.mapping_csv)
    folds = _fold_files(root)
    if cc.fold not in folds:
        raise DataError(f"--fold {cc.fold}: {root / 'annotations'} has folds {sorted(folds)} only")
    train = [folds[k] for k in sorted(folds) if k != cc.fold]
    if not train:
        raise DataError(f"{root / 'annotations'} has only fold {cc.fold}: nothing left to train on")
    images = root / "images"
    if not images.is_dir():
        raise DataError(f"{images} is missing (the COCO folder needs images/ beside annotations/)")
    val = folds[cc.fold]
    docs = {p: read_coco(p, images) for p in (*train, val)}
    if cc.limit:
        sub = run / "annotations"
        train = [_subset(docs[p], sub / f"{p.stem}-first{cc.limit}.json", cc.limit) for p in train]
        val = _subset(docs[val], sub / f"{val.stem}-first{cc.limit}.json", cc.limit)
    return CocoSplit(images=images.resolve(), train=tuple(p.resolve() for p in train), val=val.resolve())

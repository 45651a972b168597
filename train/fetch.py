"""``endoview data fetch hyperkvasir|kvasir-seg DIR``: download, verify and unpack a public dataset.

Downloads resume: the bytes received so far are kept in ``DIR/<archive>.part`` and the next run
asks the server for the rest (HTTP Range); a server that ignores the range starts over. The
archive's sha256 is checked against the known value (or ``--sha256``) and written beside it as
``<archive>.sha256``; a mismatch deletes the download and says so. The archive is unpacked through
a temporary folder (no member may leave it) and the layout checked: HyperKvasir's labeled images
must map onto the 23 classes (the same reader training uses), Kvasir-SEG must have images/ and
masks/ with the same names. ``DIR/.<dataset>.complete`` marks a finished fetch; running again is
then a no-op.

HyperKvasir's official 2-fold split file is fetched too (pinned to the commit whose copy is in
../shared/data, sha256 known).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from engine.bundle import sha256_file

from .errors import FetchError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
SPLIT_URL = ("https://raw.githubusercontent.com/simula/hyper-kvasir/"
             "5ae933bb612b25046b10e86b01660d2d7909ab65/official_splits/2_fold_split.csv")
SPLIT_SHA256 = "e9bc264da8dd4ce5ebd6654080eb9ec8a00fd28c3d03a75a2c80b1eb5a096c06"


@dataclass(frozen=True)
class Source:
    url: str
    sha256: str | None  # None: no published checksum known; the computed one is recorded
    layout: str  # "hyperkvasir" | "kvasir-seg"


DATASETS: dict[str, Source] = {
    "hyperkvasir": Source("https://datasets.simula.no/downloads/hyper-kvasir/hyper-kvasir-labeled-images.zip",
                          None, "hyperkvasir"),
    "kvasir-seg": Source("https://datasets.simula.no/downloads/kvasir-seg.zip", None, "kvasir-seg"),
}


def download(url: str, dest: Path, *, sha256: str | None = None, timeout: float = 30.0,
             progress: bool = True) -> str:
    """Download ``url`` to ``dest`` with resume; returns the file's sha256. FetchError on failure."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    side = dest.with_name(dest.name + ".sha256")
    if dest.is_file():
        digest = side.read_text().split()[0] if side.is_file() else sha256_file(dest)
        if sha256 is None or digest == sha256.lower():
            log.info("%s is already downloaded (sha256 %s)", dest, digest)
            return digest
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "endoview-data-fetch"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing left to send: the .part file may be complete
            total = _total_from_content_range(err.headers.get("Content-Range"))
            if total == offset:
                response = None
            else:
                part.unlink()
                raise FetchError(f"{url}: the server refused to resume ({err}); the partial download "
                                 "was deleted, run the command again") from err
        else:
            raise FetchError(f"cannot download {url}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        raise FetchError(f"cannot download {url}: {getattr(err, 'reason', err)}; check the network "
                         "and run the command again (it resumes)") from err

    if response is not None:
        with response:
            if offset and response.status == 206:
                start = _start_from_content_range(response.headers.get("Content-Range"))
                if start != offset:
                    raise FetchError(f"{url}: the server resumed at byte {start}, not {offset}; delete {part} "
                                     "and run again")
                total = _total_from_content_range(response.headers.get("Content-Range"))
                mode = "ab"
                log.info("resuming %s at byte %d", url, offset)
            else:
                if offset:
                    log.info("%s does not resume downloads (HTTP %d); starting over", url, response.status)
                offset = 0
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                mode = "wb"
            bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=dest.name,
                       disable=not progress, leave=False)
            received = offset
            try:
                with open(part, mode) as fh:
                    while True:
                        chunk = response.read(CHUNK)
                        if not chunk:
                            break
                        fh.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
            except (OSError, urllib.error.URLError) as err:
                raise FetchError(f"download of {url} interrupted after {received} bytes ({err}); run the "
                                 "command again to resume") from err
            finally:
                bar.close()
            if total is not None and received != total:
                raise FetchError(f"download of {url} stopped at {received} of {total} bytes; run the "
                                 "command again to resume")
    digest = sha256_file(part)
    if sha256 is not None and digest != sha256.lower():
        part.unlink()
        raise FetchError(f"checksum mismatch for {url}: sha256 {digest}, expected {sha256.lower()}; the "
                         "download was deleted, run the command again")
    os.replace(part, dest)
    side.write_text(f"{digest}  {dest.name}\n")
    if sha256 is None:
        log.warning("no published sha256 is known for %s; recorded %s in %s (pass --sha256 to verify)",
                    url, digest, side)
    return digest


def _total_from_content_range(value: str | None) -> int | None:
    if not value or "/" not in value:
        return None
    total = value.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def _start_from_content_range(value: str | None) -> int | None:
    try:
        return int(value.split()[1].split("-")[0])  # "bytes START-END/TOTAL"
    except (AttributeError, IndexError, ValueError):
        return None


def _safe_name(name: str, archive: Path) -> PurePosixPath:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts:
        raise FetchError(f"{archive} holds the member {name!r}, which would leave the target folder; "
                         "refusing to unpack it")
    return p


def unpack(archive: Path, target: Path) -> list[Path]:
    """Unpack a zip or tar archive into ``target`` (via a temporary folder); returns its top entries."""
    tmp = target / f".unpack-{archive.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for info in z.infolist():
                    _safe_name(info.filename, archive)
                z.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                for m in t.getmembers():
                    _safe_name(m.name, archive)
                    if not (m.isfile() or m.isdir()):
                        raise FetchError(f"{archive} holds {m.name!r}, which is not a plain file or folder")
                t.extractall(tmp, filter="data")
        else:
            raise FetchError(f"{archive} is neither a zip nor a tar archive")
        tops = []
        for entry in sorted(tmp.iterdir()):
            if entry.name == "__MACOSX":
                continue
            final = target / entry.name
            if final.exists():
                shutil.rmtree(final) if final.is_dir() else final.unlink()
            os.replace(entry, final)
            tops.append(final)
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as err:
        raise FetchError(f"cannot unpack {archive}: {err}; delete it and fetch again") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tops


def _check_hyperkvasir(target: Path) -> tuple[Path, str]:
    from .data import scan_images

    candidates = [p for p in [target / "labeled-images", *target.glob("*/labeled-images")] if p.is_dir()]
    root = candidates[0] if candidates else target
    found = scan_images(root)
    classes = sorted({label for _, label in found.values()})
    return root, f"{len(found)} labeled images in {len(classes)} classes"


def _check_kvasir_seg(target: Path) -> tuple[Path, str]:
    for images in sorted(target.rglob("images")):
        masks = images.parent / "masks"
        if images.is_dir() and masks.is_dir():
            names = {p.name for p in images.iterdir() if p.is_file()}
            mnames = {p.name for p in masks.iterdir() if p.is_file()}
            if names and names == mnames:
                return images.parent, f"{len(names)} images with masks"
            raise FetchError(f"{images.parent}: images/ and masks/ do not hold the same files "
                             f"({len(names)} vs {len(mnames)})")
    raise FetchError(f"no images/ and masks/ folders found under {target} after unpacking")


def fetch(dataset: str, target: str | Path, *, url: str | None = None, sha256: str | None = None,
          split_url: str | None = SPLIT_URL, split_sha256: str | None = SPLIT_SHA256,
          keep_archive: bool = True, progress: bool = True, timeout: float = 30.0) -> dict:
    """Fetch ``dataset`` into ``target``; returns what is where (also written to the .complete file)."""
    if dataset not in DATASETS:
        raise FetchError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    src = DATASETS[dataset]
    target = Path(target).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    marker = target / f".{dataset}.complete"
    if marker.is_file():
        info = json.loads(marker.read_text())
        log.info("%s is already fetched into %s", dataset, target)
        return {**info, "already": True}
    url = url or src.url
    expected = sha256 or src.sha256
    archive = target / (PurePosixPath(url.split("?")[0]).name or f"{dataset}.zip")
    digest = download(url, archive, sha256=expected, timeout=timeout, progress=progress)
    unpack(archive, target)
    root, what = (_check_hyperkvasir if src.layout == "hyperkvasir" else _check_kvasir_seg)(target)
    info = {"dataset": dataset, "url": url, "sha256": digest, "verified": expected is not None,
            "data": str(root), "contents": what}
    if dataset == "hyperkvasir" and split_url:
        split = target / "2_fold_split.csv"
        download(split_url, split, sha256=split_sha256 if split_url == SPLIT_URL else None,
                 timeout=timeout, progress=False)
        info["split_csv"] = str(split)
    if not keep_archive:
        archive.unlink()
    marker.write_text(json.dumps(info, indent=2) + "\n")
    return info

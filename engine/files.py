"""Writing a file: the one output check, the one temporary-name rule and the one write-error
mapping, for every file endoview writes (clips and recordings, per-frame logs, Parquet tables,
snapshots, reports, DICOM files, the batch name table).

- :func:`check_output` refuses, before any work, an output that is a folder, in a folder that is
  missing or not writable, that is one of the inputs, or that exists (unless ``force``).
- A file is written under :func:`temporary_name` (``.NAME.partial.EXT``: hidden, and with the
  final extension, so that tools which go by it still work) and renamed to its final name only
  when complete (:class:`PendingFile`, or the :func:`replacing` context manager), so a crash, a
  full disk or a cancel never leaves a half-written file under a final name. A recording is the
  one exception: it is written in place (``in_place=True``), as fragmented MP4, so that what was
  written survives the process being killed.
- :func:`write_error` turns an ``OSError`` (disk full, file too large, permission denied...) into
  the one-line :class:`~engine.errors.ExportError` the user sees.

This module depends only on :mod:`engine.errors`, so that every package may use it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path
from typing import Iterable, Iterator

from .errors import EndoviewError, ExportError, OutputExistsError

logger = logging.getLogger(__name__)

FORCE_HINT = "use --force to overwrite"


def temporary_name(path: str | os.PathLike) -> Path:
    """The name ``path`` is written under until it is complete: ``dir/.NAME.partial.EXT``."""
    final = Path(path)
    stem = final.stem if final.stem.startswith(".") else f".{final.stem}"
    return final.with_name(f"{stem}.partial{final.suffix}")


def check_folder(folder: str | os.PathLike, *, what: str = "output", create: bool = False) -> Path:
    """Refuse a missing (unless ``create``: it is made) or unwritable folder; return it."""
    folder = Path(folder)
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExportError(f"cannot create the {what} folder {folder}: {exc.strerror or exc}") from None
    if not folder.is_dir():
        raise ExportError(f"{what} folder does not exist: {folder} (create it first)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ExportError(f"{what} folder is not writable: {folder} (choose another folder)")
    return folder


def check_output(path: str | os.PathLike, *, force: bool = False, inputs: Iterable = (),
                 what: str = "output", force_hint: str | None = FORCE_HINT) -> Path:
    """Refuse an output that cannot or must not be written; return it as a Path.

    In this order: a folder given as the file name, a missing or unwritable folder, one of
    ``inputs`` (paths; anything that is not an existing file is passed over), an existing file
    (unless ``force``; the message ends with ``force_hint`` when there is one). ``what`` names
    the output in the messages ("output", "recording", "snapshot").
    """
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"{what} is a folder, not a file name: {path}")
    check_folder(path.parent, what=what)
    if not path.exists():
        return path
    for item in inputs:
        with contextlib.suppress(OSError, TypeError, ValueError):
            if os.path.samefile(item, path):
                raise ExportError(f"{what} is the input: {path} (choose another name)")
    if not force:
        raise OutputExistsError(f"{what} exists: {path}" + (f" ({force_hint})" if force_hint else ""))
    return path


def write_error(exc: BaseException, path: str | os.PathLike, *, in_place: bool = False) -> ExportError:
    """The one-line error for ``exc`` raised while writing ``path``.

    ``in_place``: the file is written under its final name (a recording), and what was written
    so far is kept; otherwise nothing is kept under that name.
    """
    doing, verb = ("recording", "record to") if in_place else ("writing", "write")
    kept = "what was written so far is kept" if in_place else "nothing was kept under that name"
    code = getattr(exc, "errno", None)
    if code == errno.ENOSPC:
        return ExportError(f"disk full while {doing} {path}; free some space and try again ({kept})")
    if code == errno.EFBIG:
        return ExportError(f"file too large while {doing} {path}: the file system or a size limit "
                           f"allows no more ({kept})")
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return ExportError(f"cannot {verb} {path}: {reason}")


class PendingFile:
    """An output being written: checked (:func:`check_output`), written at :attr:`tmp` (its
    :func:`temporary_name`), and put in place by :meth:`commit`; :meth:`discard` removes it.

    ``in_place``: :attr:`tmp` is the final name itself (an existing file, allowed by ``force``,
    is overwritten when writing starts), :meth:`commit` has nothing to rename, and
    :meth:`discard` removes the file under the final name.
    """

    def __init__(self, path: str | os.PathLike, *, force: bool = False, inputs: Iterable = (),
                 what: str = "output", force_hint: str | None = FORCE_HINT, in_place: bool = False) -> None:
        self.path = check_output(path, force=force, inputs=inputs, what=what, force_hint=force_hint)
        self.in_place = in_place
        self.tmp = self.path if in_place else temporary_name(self.path)

    def commit(self) -> Path:
        """Rename the finished file to its final name (an ``OSError`` becomes :func:`write_error`)."""
        if not self.in_place:
            try:
                os.replace(self.tmp, self.path)
            except OSError as exc:
                self.discard()
                raise write_error(exc, self.path) from exc
        return self.path

    def discard(self) -> None:
        """Remove what was written (a warning, never an error, when that fails)."""
        try:
            self.tmp.unlink(missing_ok=True)
        except OSError as exc:
            logger.warning("could not delete the unfinished file %s: %s", self.tmp, exc)


@contextlib.contextmanager
def replacing(path: str | os.PathLike, *, force: bool = False, inputs: Iterable = (),
              what: str = "output", error: type[EndoviewError] = ExportError) -> Iterator[Path]:
    """``with replacing(path, force=...) as tmp:`` write ``tmp``; on leaving, it is renamed to
    ``path``, or removed if the block raised (an ``OSError`` as :func:`write_error`).

    ``error``: the class of the refusals and write errors raised (a module with an error type of
    its own, such as a report's, keeps it); the messages are the same."""
    try:
        pending = PendingFile(path, force=force, inputs=inputs, what=what)
        try:
            yield pending.tmp
        except OSError as exc:
            pending.discard()
            raise write_error(exc, pending.path) from exc
        except BaseException:
            pending.discard()
            raise
        pending.commit()
    except ExportError as exc:
        if isinstance(exc, error):
            raise
        raise error(str(exc)) from exc


__all__ = ["FORCE_HINT", "PendingFile", "check_folder", "check_output", "replacing", "temporary_name",
           "write_error"]

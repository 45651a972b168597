"""engine.files: the one output check, temporary-name rule and write-error mapping."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from engine.errors import ExportError, OutputExistsError
from engine.files import PendingFile, check_folder, check_output, replacing, temporary_name, write_error


def test_temporary_name_is_hidden_and_keeps_the_extension(tmp_path: Path) -> None:
    assert temporary_name(tmp_path / "clip.mp4") == tmp_path / ".clip.partial.mp4"
    assert temporary_name(tmp_path / "a.jsonl") == tmp_path / ".a.partial.jsonl"
    assert temporary_name(tmp_path / "notes") == tmp_path / ".notes.partial"
    assert temporary_name(tmp_path / ".claims.json") == tmp_path / ".claims.partial.json"


def test_check_output_refusals_in_order(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=rf"^output is a folder, not a file name: {tmp_path}$"):
        check_output(tmp_path)
    missing = tmp_path / "nope"
    with pytest.raises(ExportError, match=rf"^output folder does not exist: {missing} \(create it first\)$"):
        check_output(missing / "x.mp4")
    old = tmp_path / "x.mp4"
    old.write_bytes(b"old")
    with pytest.raises(OutputExistsError, match=rf"^output exists: {old} \(use --force to overwrite\)$"):
        check_output(old)
    with pytest.raises(OutputExistsError, match=rf"^recording exists: {old}$"):
        check_output(old, what="recording", force_hint=None)
    assert check_output(str(old), force=True) == old
    assert check_output(tmp_path / "new.mp4") == tmp_path / "new.mp4"


def test_the_input_is_never_an_output_even_with_force(tmp_path: Path) -> None:
    video = tmp_path / "case.mp4"
    video.write_bytes(b"the only copy")
    for force in (False, True):
        with pytest.raises(ExportError, match=rf"^output is the input: {video} \(choose another name\)$"):
            check_output(tmp_path / "." / "case.mp4", force=force, inputs=["demo", None, str(video)])
    assert check_output(video, force=True, inputs=[tmp_path / "other.mp4", "0"]) == video


def test_check_folder_creates_or_refuses(tmp_path: Path, readonly_dir: Path) -> None:
    assert check_folder(tmp_path / "a" / "b", create=True).is_dir()
    with pytest.raises(ExportError, match=rf"^snapshot folder is not writable: {readonly_dir} \(choose another folder\)$"):
        check_folder(readonly_dir, what="snapshot")


def test_replacing_renames_on_success_and_removes_on_failure(tmp_path: Path) -> None:
    final = tmp_path / "r.txt"
    with replacing(final) as tmp:
        assert tmp == temporary_name(final)
        tmp.write_text("one")
        assert not final.exists()
    assert final.read_text() == "one" and list(tmp_path.iterdir()) == [final]
    with pytest.raises(RuntimeError, match="boom"):
        with replacing(final, force=True) as tmp:
            tmp.write_text("two")
            raise RuntimeError("boom")
    assert final.read_text() == "one" and list(tmp_path.iterdir()) == [final]
    with pytest.raises(ExportError, match=rf"^disk full while writing {final}; free some space"):
        with replacing(final, force=True) as tmp:
            tmp.write_text("three")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert final.read_text() == "one" and list(tmp_path.iterdir()) == [final]


def test_write_error_messages(tmp_path: Path) -> None:
    path = tmp_path / "x.mp4"
    assert str(write_error(OSError(errno.ENOSPC, "No space left on device"), path)) == (
        f"disk full while writing {path}; free some space and try again (nothing was kept under that name)")
    assert str(write_error(OSError(errno.ENOSPC, "No space left on device"), path, in_place=True)) == (
        f"disk full while recording {path}; free some space and try again (what was written so far is kept)")
    assert str(write_error(OSError(errno.EFBIG, "File too large"), path)).startswith(
        f"file too large while writing {path}: ")
    assert str(write_error(OSError(errno.EACCES, "Permission denied"), path)) == (
        f"cannot write {path}: Permission denied")
    assert str(write_error(ValueError("bad"), path, in_place=True)) == f"cannot record to {path}: bad"


def test_pending_file_in_place(tmp_path: Path) -> None:
    final = tmp_path / "rec.mp4"
    pending = PendingFile(final, in_place=True)
    assert pending.tmp == final
    final.write_bytes(b"x")
    assert pending.commit() == final and final.exists()
    pending.discard()
    assert not final.exists()


def test_replacing_can_raise_a_modules_own_error(tmp_path: Path) -> None:
    from engine.errors import EndoviewError

    class ReportError(EndoviewError):
        pass

    old = tmp_path / "r.html"
    old.write_text("keep")
    with pytest.raises(ReportError, match=rf"^output exists: {old} \(use --force to overwrite\)$"):
        with replacing(old, error=ReportError):
            pass
    with pytest.raises(ReportError, match="^disk full while writing"):
        with replacing(old, force=True, error=ReportError):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert old.read_text() == "keep" and list(tmp_path.iterdir()) == [old]

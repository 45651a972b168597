"""Where results go: H.264 files (:mod:`~engine.outputs.writer`), annotated export
(:mod:`~engine.outputs.export`) with its per-frame JSONL/CSV logs (:mod:`~engine.outputs.logs`),
crash-safe recording (:mod:`~engine.outputs.recorder`) and PNG snapshots
(:mod:`~engine.outputs.snapshot`). Every file is checked, written under a temporary name and renamed
when complete, with the write errors of :mod:`engine.files`; a recording is the one file written in
place (fragmented MP4)."""

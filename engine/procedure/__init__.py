"""Procedure intelligence: what a whole examination says, built from the per-frame answers.

- :mod:`.tracking`: polyp detections (mask components on positive frames) joined into tracks
  across frames; a track counts only once it has held for a few frames.
- :mod:`.hints`: which edge of the field a box touches (for a direction marker).
- :mod:`.quality`: per-frame image quality (blurred, dark, overexposed) on the cropped field.
- :mod:`.summary`: cecum reached, withdrawal time, bowel-prep and quality shares, polyp count.
- :mod:`.log`: reading an ``annotate`` JSONL log back into rows.
- :mod:`.report`: a self-contained HTML report (and a report page as an image).
- :mod:`.thumbnails`: each track's best frame grabbed from the video a log was made from.
- :mod:`.dicom`: snapshots and report pages as DICOM Secondary Capture.

``endoview report`` (:mod:`engine.commands.report`) puts them together for an ``annotate`` log.

Nothing here imports Qt, torch or the pipeline: each piece takes plain rows, arrays and boxes, so
the pipeline, the log writer and the window can call it without this package knowing them.
Research use only: none of this is a diagnosis.
"""

"""The per-frame procedure stage the Analyzer runs after the verdict: image quality, polyp
detections and tracks, attached to the :class:`engine.types.FrameResult`.

- **quality** (:class:`.quality.QualityChecker`): the field cropped and shrunk to 256 pixels, on
  every frame (with or without a model), starting from the model inputs' shared 2 x 2 average of
  the field when the Analyzer passes them.
- **detections** (:func:`.tracking.detections_from_mask`), on frames whose verdict is positive
  only (the verdict decides, the mask shows where): the connected components of the segmenter's
  probabilities *at the model's size* over the content area's box (a fraction of a millisecond;
  the frame-sized mask would cost tens), each with its peak probability, less the fragments
  (:data:`FRAGMENT_SHARE`). With a classifier alone
  there is no "where": one detection, the field's box, with the polyp classes' probability.
  With a segmenter whose mask is empty on a positive frame, none (a field-sized box would start a
  second track beside the mask's).
- **tracks** (:class:`.tracking.PolypTracker`): ``result.tracks`` (the confirmed tracks on the
  frame, those missing from it, the "confirmed" events) and ``result.polyps``, the running count
  of confirmed tracks. :meth:`reset` (a seek, a source change) ends every live track and keeps
  the count; frames that do not come in order end them too.

The stage is cheap (measured in the README's "Procedure intelligence"); its times go into the
result's timings as "quality" and "track". Not thread-safe: one stage per Analyzer.
"""

from __future__ import annotations

import logging
import time

from ..analysis.verdict import polyp_probability
from ..types import FrameResult
from .quality import QualityChecker

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5  # a segmenter's mask threshold when none is given
#: A component smaller than this share of the frame's largest one is taken for a fragment of it and
#: dropped. The shipped segmenter often splits one polyp into pieces (on the real clip of the README,
#: 19 of the 41 positive frames of one polyp had 2 or 3 components), and each piece would start a
#: track of its own: 12 tracks for 5 polyps there, 9 with this rule. The price: a second polyp under
#: a quarter of the size of one beside it is not tracked while both are in view.
FRAGMENT_SHARE = 0.25


class ProcedureStage:
    """Quality, detections and tracks for each analysed frame, in order (see the module).

    ``tracking``: run the detector and tracker (an Analyzer without a model has no verdict, so it
    passes False). ``threshold``: the segmenter's mask threshold. ``tracker``: a
    :class:`.tracking.TrackerConfig` (None: its defaults). ``min_area``: the smallest component,
    a share of the model's mask (None: the tracking module's default).
    """

    def __init__(self, *, quality: bool = True, tracking: bool = True, threshold: float = DEFAULT_THRESHOLD,
                 tracker=None, min_area: float | None = None) -> None:
        self.quality = QualityChecker() if quality else None
        self.threshold = float(threshold)
        self.tracker = None
        if tracking:  # norfair (scipy) takes a second or two to import: only when a model runs
            from .tracking import DEFAULT_MIN_AREA, PolypTracker

            self.tracker = PolypTracker(tracker)
            self.min_area = DEFAULT_MIN_AREA if min_area is None else float(min_area)
        self._last: int | None = None

    @property
    def count(self) -> int:
        """Confirmed polyp tracks so far."""
        return self.tracker.count if self.tracker is not None else 0

    def __call__(self, result: FrameResult, inputs=None) -> FrameResult:
        """Attach quality, detections, tracks and the polyp count to ``result`` (in place).
        ``inputs``: the frame's :class:`engine.analysis.crop.ModelInputs`, whose shrunk field
        the quality check starts from (None: it shrinks the frame itself)."""
        timings = result.timings
        if self.quality is not None:
            t0 = time.perf_counter()
            result.quality = self.quality.check(result.frame.image, result.area, inputs)
            timings["quality"] = (time.perf_counter() - t0) * 1000.0
        if self.tracker is not None and result.polyp is not None:
            t0 = time.perf_counter()
            index = result.frame.index
            if self._last is not None and index <= self._last:
                self.tracker.end_tracks()  # not in order: a seek nobody announced, a restarted device
            self._last = index
            detections = self.detect(result)
            result.detections = tuple(detections)
            result.tracks = self.tracker.update(index, result.frame.timestamp, detections)
            result.polyps = self.tracker.count
            timings["track"] = (time.perf_counter() - t0) * 1000.0
        return result

    def detect(self, result: FrameResult) -> list:
        """The polyp detections of one analysed frame (see the module)."""
        from .tracking import Detection, detections_from_mask

        if not result.polyp:
            return []
        seg, area = result.segmentation, result.area
        if seg is not None:
            if seg.probability is not None:
                prob = seg.probability
                found = detections_from_mask(prob >= self.threshold, prob, box=area.bbox, min_area=self.min_area)
            elif seg.mask.any():
                found = detections_from_mask(seg.mask, min_area=self.min_area, confidence=seg.confidence)
            else:
                return []
            return without_fragments(found)
        if result.prediction is not None:
            return [Detection(tuple(area.bbox), polyp_probability(result.prediction))]
        return []

    def reset(self) -> None:
        """A seek or a cut: every live track ends; the confirmed ones still count."""
        if self.tracker is not None:
            self.tracker.end_tracks()
        self._last = None

    def summaries(self) -> list:
        """One :class:`.tracking.TrackSummary` per confirmed track (call from the analysing thread)."""
        return self.tracker.summaries() if self.tracker is not None else []


def without_fragments(detections: list, share: float = FRAGMENT_SHARE) -> list:
    """``detections`` less those whose box is smaller than ``share`` of the largest box's."""
    if len(detections) < 2:
        return detections
    largest = max(d.bbox[2] * d.bbox[3] for d in detections)
    return [d for d in detections if d.bbox[2] * d.bbox[3] >= share * largest]

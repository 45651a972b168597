"""A scripted segmenter for procedure tests: a round "polyp" where and when a test says, so
tracks, counts and alerts are known in advance (shared by tests/procedure and tests/app)."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import cv2
import numpy as np

from engine.analysis.segmenter import to_frame
from engine.pipeline import Analyzer
from engine.types import SegmentationResult

MODEL = (40, 40)  # the scripted segmenter's "model size" (h, w)


class ScriptedSegmenter:
    """A segmenter stand-in: ``blob(index)`` -> (cx, cy, r) as fractions of the model input, or
    None; ``index`` is the frame being analysed (set by :class:`ScriptedAnalyzer`)."""

    def __init__(self, blob):
        self.blob = blob
        self.bundle = SimpleNamespace(name="scripted", task="segment", trained=True, inset=None,
                                      manifest={"created": "2026-01-02"})
        self.input_size = MODEL
        self.threshold = 0.5
        self.label = "polyp"
        self.name = "scripted"
        self.labels = ("no polyp", "polyp")
        self.backend = SimpleNamespace(description="test")
        self.index = 0

    def segment(self, x, area, smooth=True, computed=None):
        h, w = MODEL
        prob = np.zeros(MODEL, np.float32)
        spec = self.blob(self.index)
        if spec is not None:
            cx, cy, r = spec
            cv2.circle(prob, (round(cx * w), round(cy * h)), round(r * w), 0.9, -1)
        peak = float(prob.max())
        return SegmentationResult(to_frame(prob, area, 0.5), peak, "polyp", "scripted", 0.1, peak,
                                  detected=peak >= 0.5, probability=prob)

    def reset(self):
        pass


class ScriptedAnalyzer(Analyzer):
    """An Analyzer over a :class:`ScriptedSegmenter` that tells it which frame it is looking at."""

    def __init__(self, blob, **kw):
        super().__init__(None, segmenter=ScriptedSegmenter(blob), smooth=False, **kw)

    def finish(self, started):
        self.segmenter.index = started.frame.index
        return super().finish(started)


@contextlib.contextmanager
def scripted_analyzer(blob, **kw):
    yield ScriptedAnalyzer(blob, **kw)

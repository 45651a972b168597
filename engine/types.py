"""Data contracts between the pipeline stages (see DESIGN.md, "Data flow").

source -> Frame -> ContentArea -> model input -> backend -> Prediction -> smoothing
-> (second pass) -> FrameResult -> overlay -> sink

All are small typed dataclasses; images are numpy arrays, H x W x 3 uint8 BGR unless stated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property

import numpy as np

Shape = str  # "circle" | "octagon" | "rectangle" | "full"
SHAPES = ("circle", "octagon", "rectangle", "full")


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded picture.

    index: 0-based position in the source (for devices: count of frames delivered so far).
    timestamp: seconds, from the source (presentation time for files, capture clock for devices).
    image: H x W x 3 uint8 BGR, C-contiguous.
    arrival: ``time.perf_counter()`` when the frame left the source (the start of every delay).
    """

    index: int
    timestamp: float
    image: np.ndarray
    arrival: float

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.image.shape[1], self.image.shape[0]


def to_fraction(rate: Fraction | float | int) -> Fraction:
    """Exact frame rate: 29.97 -> 30000/1001, 30.0 -> 30, Fractions unchanged."""
    if isinstance(rate, Fraction):
        value = rate
    else:
        value = Fraction(rate).limit_denominator(1001)
        for ntsc in (24, 30, 60, 120):
            exact = Fraction(ntsc * 1000, 1001)
            if abs(float(rate) - float(exact)) < 5e-4:
                value = exact
    if value <= 0:
        raise ValueError(f"frame rate must be positive, not {rate!r}")
    return value


@dataclass(frozen=True, eq=False)
class ContentArea:
    """The visible endoscopic field inside the processor's black frame.

    bbox: (x, y, w, h) in frame pixels. shape: one of SHAPES ("full" means no border at all).
    polygon: N x 2 int32 outline in frame pixels (closed implicitly). confidence: 0..1.
    frame_size: (width, height) of the frame it was estimated on.
    """

    bbox: tuple[int, int, int, int]
    shape: Shape
    polygon: np.ndarray
    confidence: float
    frame_size: tuple[int, int]

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"ContentArea.shape must be one of {SHAPES}, not {self.shape!r}")
        x, y, w, h = self.bbox
        fw, fh = self.frame_size
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > fw or y + h > fh:
            raise ValueError(f"ContentArea.bbox {self.bbox} does not fit a {fw}x{fh} frame")

    @classmethod
    def full_frame(cls, width: int, height: int, confidence: float = 1.0) -> ContentArea:
        poly = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], np.int32)
        return cls((0, 0, width, height), "full", poly, confidence, (width, height))

    @cached_property
    def mask(self) -> np.ndarray:
        """H x W uint8 mask of the whole frame: 255 inside the field, 0 outside."""
        import cv2

        w, h = self.frame_size
        m = np.zeros((h, w), np.uint8)
        cv2.fillPoly(m, [self.polygon.reshape(-1, 1, 2).astype(np.int32)], 255)
        return m

    def same_as(self, other: ContentArea | None, tolerance: int = 0) -> bool:
        """True when ``other`` has the same shape and a bbox within ``tolerance`` pixels."""
        if other is None or other.shape != self.shape or other.frame_size != self.frame_size:
            return False
        return all(abs(a - b) <= tolerance for a, b in zip(self.bbox, other.bbox))

    def to_dict(self) -> dict:
        return {
            "bbox": [int(v) for v in self.bbox],
            "shape": self.shape,
            "confidence": round(float(self.confidence), 4),
        }


@dataclass(frozen=True, eq=False)
class Prediction:
    """What the fast model said about one frame (after smoothing when smoothing is on)."""

    labels: tuple[str, ...]
    probabilities: np.ndarray  # float32, one per label, sums to ~1
    model: str
    latency_ms: float
    smoothed: bool = False

    def __post_init__(self) -> None:
        if self.probabilities.shape != (len(self.labels),):
            raise ValueError(
                f"Prediction has {len(self.labels)} labels but probabilities of shape "
                f"{self.probabilities.shape}"
            )

    @cached_property
    def _order(self) -> np.ndarray:
        return np.argsort(-self.probabilities, kind="stable")

    @property
    def label(self) -> str:
        return self.labels[int(self._order[0])]

    @property
    def confidence(self) -> float:
        return float(self.probabilities[self._order[0]])

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        return [(self.labels[int(i)], float(self.probabilities[i])) for i in self._order[:k]]


@dataclass(frozen=True, eq=False)
class SecondPassResult:
    """A slower model's answer for one earlier frame (``frame_index``).

    Masks are H x W bool in frame pixels; boxes are N x 4 float (x1, y1, x2, y2); scores N floats.
    """

    frame_index: int
    model: str
    latency_ms: float
    label: str | None = None
    confidence: float | None = None
    masks: np.ndarray | None = None
    boxes: np.ndarray | None = None
    scores: np.ndarray | None = None


#: The classes that count as a polyp finding (timeline findings, second-pass hold trigger): a
#: classifier's polyp-related HyperKvasir classes, and the real-time segmenter's "polyp".
POLYP_CLASSES = ("polyp", "dyed-lifted-polyps", "dyed-resection-margins")


def absent_label(label: str) -> str:
    """What a segmenter's frame is called when it finds no ``label``: "no polyp"."""
    return f"no {label}"


@dataclass(frozen=True, eq=False)
class SegmentationResult:
    """The real-time segmenter's answer for one frame.

    mask: H x W bool in frame pixels (inside the visible field only). confidence: 0..1, the mean
    probability inside the mask (the largest probability anywhere when the mask is empty).
    """

    mask: np.ndarray
    confidence: float
    label: str = "polyp"
    model: str = ""
    latency_ms: float = 0.0
    peak: float = 0.0  # the largest probability anywhere (what the image-level rule and an ROC look at)
    #: the segmenter's image-level presence rule said "polyp" (None: no rule, any mask pixel counts).
    #: ``mask`` keeps every pixel over the threshold either way, to be drawn where the verdict says polyp.
    detected: bool | None = None
    #: the (smoothed) probabilities at the model's size, over the content area's bounding box: what
    #: polyp detections are cut from (engine.procedure.stage); None for results made by hand
    probability: np.ndarray | None = field(default=None, repr=False)
    #: the segmenter's "sure" rule (its manifest's ``sure``: a large, near-certain mask) said polyp,
    #: which the frame's verdict takes even where the classifier does not (engine.analysis.verdict);
    #: None: the bundle has no such rule
    sure: bool | None = None

    def __post_init__(self) -> None:
        if self.mask.ndim != 2 or self.mask.dtype != np.bool_:
            raise ValueError(f"SegmentationResult.mask must be H x W bool, not {self.mask.dtype} {self.mask.shape}")

    @cached_property
    def area(self) -> int:
        """Mask pixels."""
        return int(np.count_nonzero(self.mask))

    @property
    def present(self) -> bool:
        """The segmenter's own answer: its presence rule, else any mask pixel."""
        return self.area > 0 if self.detected is None else bool(self.detected and self.area > 0)

    @property
    def finding(self) -> str:
        """The frame's class as the segmenter sees it: the label ("polyp") or "no polyp"."""
        return self.label if self.present else absent_label(self.label)

    @cached_property
    def bbox(self) -> tuple[int, int, int, int] | None:
        """(x, y, w, h) of the mask, None when empty."""
        if not self.present:
            return None
        import cv2

        x, y, w, h = cv2.boundingRect(self.mask.view(np.uint8))
        return int(x), int(y), int(w), int(h)

    def to_dict(self) -> dict:
        return {"label": self.label, "confidence": round(float(self.confidence), 6),
                "peak": round(float(self.peak), 6), "present": self.present, "sure": self.sure, "area": self.area,
                "bbox": list(self.bbox) if self.bbox else None, "model": self.model}


@dataclass(eq=False)
class FrameResult:
    """Everything known about one frame when it is drawn or written.

    timings: milliseconds per stage ("decode", "crop", "resize", "inference", "overlay",
    "encode", ...), filled in as the frame moves along the pipeline.
    """

    frame: Frame
    area: ContentArea
    prediction: Prediction | None = None
    second_pass: SecondPassResult | None = None
    segmentation: SegmentationResult | None = None
    timings: dict[str, float] = field(default_factory=dict)
    untrained: bool = False
    fps: float | None = None  # analysis rate when this result was made, for the overlay
    #: the frame's polyp verdict (engine.analysis.verdict: one rule over classifier and segmenter); None: no model
    polyp: bool | None = None
    # Procedure intelligence (engine.procedure.stage), None where it did not run:
    #: image quality of the field (engine.procedure.quality.Quality: .ok, .issue, .to_dict())
    quality: object | None = None
    #: polyp detections on this frame (engine.procedure.tracking.Detection: bbox, confidence)
    detections: tuple | None = None
    #: the tracker's answer (engine.procedure.tracking.FrameTracks: tracks, missing, events)
    tracks: object | None = None
    #: confirmed polyp tracks so far in this stream: the running polyp count
    polyps: int | None = None
    #: the models that made this result: ``{"name", "task", "version"}`` each (shared, do not change)
    models: tuple = ()
    #: the verdict's score where the segmenter's score rule weighs both models (0.5 decides, the mask
    #: must also be non-empty: engine.analysis.verdict.ScoreRule); None without such a rule
    polyp_score: float | None = None

    @property
    def top(self) -> tuple[str, float] | None:
        """The frame's class and its confidence, as the verdict has it (None without a model).

        A positive verdict: "polyp" (with the classifier's confidence when there is one, else the
        segmenter's; where the segmenter's score rule weighed both, that score; where its "sure"
        rule holds, the larger of the two, so a polyp the classifier missed does not read "polyp 10%"). Otherwise the classifier's best class that is not polyp-related, or "no
        polyp" from a segmenter alone. Without a verdict (results made by hand): the classifier's
        top-1, else the segmenter's finding. The timeline, findings and triggers read this."""
        p, seg = self.prediction, self.segmentation
        if self.polyp is not None and (p is not None or seg is not None):
            if self.polyp:
                if p is None:
                    return (seg.label if seg.label in POLYP_CLASSES else "polyp"), seg.confidence
                polyp = [(n, v) for n, v in p.top(len(p.labels)) if n in POLYP_CLASSES]
                name, value = polyp[0] if polyp else (p.label, p.confidence)
                if self.polyp_score is not None:  # both models weighed together made it: that score
                    value = self.polyp_score
                elif seg is not None and seg.sure:  # the segmenter's sure rule may have made it: its confidence
                    value = max(value, seg.confidence)
                return name, value
            if p is not None:
                return next(((n, v) for n, v in p.top(len(p.labels)) if n not in POLYP_CLASSES),
                            (p.label, p.confidence))
            return absent_label(seg.label), 1.0 - seg.confidence
        if p is not None:
            return p.label, p.confidence
        if seg is not None:
            return seg.finding, (seg.confidence if seg.present else 1.0 - seg.confidence)
        return None

    def to_log_row(self, k: int = 3) -> dict:
        """One row of the per-frame log (JSONL / CSV)."""
        p = self.prediction
        seg = self.segmentation
        if p is not None:
            label, confidence = p.label, round(p.confidence, 6)
        elif seg is not None:  # a segment bundle alone: its label when it finds something
            label = seg.label if seg.present else None
            confidence = round(float(seg.confidence), 6)
        else:
            label = confidence = None
        row = {
            "index": self.frame.index,
            "timestamp": round(self.frame.timestamp, 6),
            "polyp": self.polyp,
            **({"polyp_score": round(self.polyp_score, 6)} if self.polyp_score is not None else {}),
            "label": label,
            "confidence": confidence,
            "topk": [[name, round(prob, 6)] for name, prob in p.top(k)] if p else [],
            "smoothed": p.smoothed if p else False,
            "content_area": self.area.to_dict(),
            "timings_ms": {k_: round(v, 3) for k_, v in self.timings.items()},
        }
        if seg is not None:
            row["segmentation"] = seg.to_dict()
        if self.models:
            row["models"] = list(self.models)
        if self.quality is not None:
            row["quality"] = self.quality.to_dict()
        if self.detections is not None:
            row["detections"] = [d.to_dict() for d in self.detections]
        if self.tracks is not None:
            row["tracks"] = [t.to_dict() for t in self.tracks.tracks]
            if self.tracks.events:
                row["events"] = [e.to_dict() for e in self.tracks.events]
        if self.polyps is not None:
            row["polyps"] = self.polyps
        if self.second_pass is not None:
            sp = self.second_pass
            row["second_pass"] = {
                "frame_index": sp.frame_index,
                "model": sp.model,
                "label": sp.label,
                "confidence": sp.confidence,
                "instances": 0 if sp.scores is None else int(len(sp.scores)),
            }
        return row

"""The paper's label sets (He et al., EndoTect 2020), spelled as in HyperKvasir's split file.

The hybrid loss trains four heads on one trunk: ``raw`` (the 23 classes) and three auxiliary
heads whose labels are listed in the paper's section 2.3. A raw class that an auxiliary head does
not name is that head's ``other``. After training the model is trimmed to the raw head.
"""

from __future__ import annotations

#: The 23 raw HyperKvasir classes, in the order of the raw head's outputs (alphabetical).
RAW_CLASSES: tuple[str, ...] = (
    "barretts", "bbps-0-1", "bbps-2-3", "dyed-lifted-polyps", "dyed-resection-margins",
    "hemorroids", "ileum", "impacted-stool", "normal-cecum", "normal-pylorus", "normal-z-line",
    "oesophagitis-a", "oesophagitis-b-d", "polyp", "retroflex-rectum", "retroflex-stomach",
    "short-segment-barretts", "ulcerative-colitis-grade-0-1", "ulcerative-colitis-grade-1",
    "ulcerative-colitis-grade-1-2", "ulcerative-colitis-grade-2", "ulcerative-colitis-grade-2-3",
    "ulcerative-colitis-grade-3",
)

OTHER = "other"

#: Macro head (11), in the paper's order.
MACRO_CLASSES: tuple[str, ...] = (
    OTHER, "bbps-0-1", "bbps-2-3", "dyed-lifted-polyps", "dyed-resection-margins", "impacted-stool",
    "normal-cecum", "normal-pylorus", "polyp", "retroflex-rectum", "retroflex-stomach",
)

#: Oesophagus head (6), in the paper's order.
OESOPHAGUS_CLASSES: tuple[str, ...] = (
    OTHER, "barretts", "normal-z-line", "oesophagitis-a", "oesophagitis-b-d", "short-segment-barretts",
)

#: Ulcer head (7), in the paper's order.
ULCER_CLASSES: tuple[str, ...] = (
    OTHER, "ulcerative-colitis-grade-0-1", "ulcerative-colitis-grade-1-2",
    "ulcerative-colitis-grade-2-3", "ulcerative-colitis-grade-1", "ulcerative-colitis-grade-2",
    "ulcerative-colitis-grade-3",
)

#: Head name -> its labels. ``raw`` first: it is the head kept after trimming.
HEADS: dict[str, tuple[str, ...]] = {
    "raw": RAW_CLASSES,
    "macro": MACRO_CLASSES,
    "oesophagus": OESOPHAGUS_CLASSES,
    "ulcer": ULCER_CLASSES,
}
HEAD_NAMES: tuple[str, ...] = tuple(HEADS)
TRIMMED_HEAD = "raw"


def head_label(head: str, raw_class: str) -> str:
    """The label of ``raw_class`` in ``head`` (``other`` when the head does not name it)."""
    if raw_class not in RAW_CLASSES:
        raise KeyError(f"{raw_class!r} is not one of the 23 raw classes")
    labels = HEADS[head]
    return raw_class if raw_class in labels else OTHER


def head_targets(head: str) -> tuple[int, ...]:
    """For each raw class index, its index in ``head``: the lookup table the hybrid loss uses."""
    labels = HEADS[head]
    return tuple(labels.index(head_label(head, c)) for c in RAW_CLASSES)


def parse_heads(spec: str) -> tuple[str, ...]:
    """``"all"`` or a comma list of head names (must include ``raw``) -> ordered head names."""
    if spec.strip() in ("all", "hybrid"):
        return HEAD_NAMES
    names = tuple(dict.fromkeys(s.strip() for s in spec.split(",") if s.strip()))
    unknown = [n for n in names if n not in HEADS]
    if unknown:
        raise ValueError(f"unknown head(s) {', '.join(unknown)}; choose from {', '.join(HEAD_NAMES)} or 'all'")
    if TRIMMED_HEAD not in names:
        raise ValueError(f"the heads must include {TRIMMED_HEAD!r} (the head kept after trimming)")
    return tuple(n for n in HEAD_NAMES if n in names)

"""The paper's label sets (He et al., EndoTect 2020), spelled as in HyperKvasir's split file."""

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

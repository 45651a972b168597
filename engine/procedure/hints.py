"""Which edge of the endoscopic field a box touches: for a marker that points where a polyp went.

A track that is missing (:attr:`engine.procedure.tracking.FrameTracks.missing`) and was last seen
touching the left edge has most likely slid out of view to the left. The field is the content
area's rectangle (x, y, w, h); for a round or octagonal field its bounding box is the edge that
counts, since a polyp leaving a round field leaves that box too.
"""

from __future__ import annotations

from collections.abc import Sequence

EDGES = ("left", "right", "top", "bottom")

#: How close to an edge (a share of the field's width or height) a box must come to touch it.
DEFAULT_MARGIN = 0.03


def touching_edges(bbox: Sequence[float], field: Sequence[float], margin: float = DEFAULT_MARGIN) -> tuple[str, ...]:
    """The edges of ``field`` that ``bbox`` touches, in the order of :data:`EDGES`.

    bbox, field: (x, y, w, h) in frame pixels. margin: how near counts as touching, as a share of
    the field's width (left, right) or height (top, bottom). A box in a corner touches two edges;
    a box as large as the field touches all four; a box inside touches none.
    """
    bx, by, bw, bh = (float(v) for v in bbox)
    fx, fy, fw, fh = (float(v) for v in field)
    if fw <= 0 or fh <= 0:
        raise ValueError(f"field must be (x, y, w, h) with w, h > 0, not {tuple(field)}")
    if bw < 0 or bh < 0:
        raise ValueError(f"bbox must be (x, y, w, h) with w, h >= 0, not {tuple(bbox)}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, not {margin}")
    mx, my = margin * fw, margin * fh
    touched = {
        "left": bx <= fx + mx,
        "right": bx + bw >= fx + fw - mx,
        "top": by <= fy + my,
        "bottom": by + bh >= fy + fh - my,
    }
    return tuple(e for e in EDGES if touched[e])

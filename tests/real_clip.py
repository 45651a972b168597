"""A withdrawal-like clip made of real images (no video exists in ../shared/data).

Every shot is one real image of the default models' held-out fold 1 (HyperKvasir's official 2-fold
split; Kvasir-SEG polyps through its HyperKvasir ids), seen through a fixed octagonal field on a
640 x 512 frame at 25 fps while a "camera" pans and zooms over it: each frame is a window of the
image's own field, moved a little from frame to frame, so a polyp drifts across the view and, in
the polyp shots, slides out at an edge. In order:

1. normal-cecum: 5 images, 1.6 s each (8 s: the cecum is reached);
2. bbps-2-3: 3 images, 1.2 s each;
3. a polyp, blurred (Gaussian, sigma 1 % of its side: unusable frames), 1.5 s;
4. four polyps (Kvasir-SEG), 3 s each, the window (60 % of the picture) sliding the longest way
   the picture allows, so the polyp drifts to an edge of the view (and out, where there is room);
5. bbps-2-3: 2 images, 1.2 s each.

``python tests/real_clip.py OUT.mp4`` writes it (and prints the shot list as JSON).
The images are real; the motion is made here (a pan over a still picture, not a moving scope).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT, FPS = 640, 512, 25
FIELD = (64, 16, 512, 480)  # x, y, w, h of the fixed octagonal field on the frame


def data_root() -> Path:
    return Path(os.environ.get("ENDOVIEW_DATA", ROOT.parent / "shared" / "data"))


def octagon_mask() -> np.ndarray:
    x, y, w, h = FIELD
    c = int(0.18 * min(w, h))
    pts = np.array([[x + c, y], [x + w - c, y], [x + w, y + c], [x + w, y + h - c], [x + w - c, y + h],
                     [x + c, y + h], [x, y + h - c], [x, y + c]], np.int32)
    m = np.zeros((HEIGHT, WIDTH), np.uint8)
    cv2.fillPoly(m, [pts], 255)
    return m


def heldout(data: Path, cls: str, n: int, fold: int = 1) -> list[Path]:
    """The first ``n`` images of ``cls`` in the held-out ``fold`` (sorted names)."""
    split = data / "hyperkvasir-official-splits" / "official_splits" / "2_fold_split.csv"
    with open(split, newline="") as fh:
        names = sorted(r["file-name"] for r in csv.DictReader(fh, delimiter=";")
                       if r["class-name"] == cls and int(r["split-index"]) == fold)
    folder = {"normal-cecum": "anatomical-landmarks/cecum"}.get(cls, f"quality-of-mucosal-views/{cls}")
    base = data / "hyperkvasir-lower-gi" / "labeled-images" / "lower-gi-tract" / folder
    return [base / name for name in names if (base / name).is_file()][:n]


def heldout_polyps(data: Path, n: int, fold: int = 1) -> list[tuple[Path, tuple[int, int, int, int]]]:
    """``n`` held-out Kvasir-SEG images with the box of their largest polyp (x, y, w, h)."""
    sys.path.insert(0, str(ROOT))
    from train.seg.data import load_kvasir_seg  # torch-free

    boxes = json.loads((data / "kvasir-seg" / "kavsir_bboxes.json").read_text())
    out = []
    for s in load_kvasir_seg(data / "kvasir-seg"):
        if s.fold != fold:
            continue
        b = max(boxes[s.image.stem]["bbox"], key=lambda b: (b["xmax"] - b["xmin"]) * (b["ymax"] - b["ymin"]))
        w, h = b["xmax"] - b["xmin"], b["ymax"] - b["ymin"]
        img = cv2.imread(str(s.image))
        # a polyp of a sensible size that does not fill the picture, so it can slide out of view
        if img is None or not 0.08 < (w * h) / (img.shape[0] * img.shape[1]) < 0.3:
            continue
        out.append((s.image, (b["xmin"], b["ymin"], w, h)))
        if len(out) == n:
            break
    return out


def field_of(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """The image's endoscopic field (its bounding box, black border cut away) and that box's origin."""
    from engine.analysis.content_area import detect_content_area

    x, y, w, h = detect_content_area(image).bbox
    return image[y:y + h, x:x + w], (x, y)


def shot(image: np.ndarray, frames: int, start: tuple[float, float, float], end: tuple[float, float, float],
         mask: np.ndarray) -> list[np.ndarray]:
    """``frames`` frames of a window over ``image`` moving from ``start`` to ``end``: (centre x,
    centre y, side), fractions of the image's width, height and smaller side; eased in and out."""
    h, w = image.shape[:2]
    fx, fy, fw, fh = FIELD
    out = []
    for k in range(frames):
        t = 0.5 - 0.5 * np.cos(np.pi * k / max(1, frames - 1))
        cx, cy, side = (a + (b - a) * t for a, b in zip(start, end))
        half_w = side * min(w, h) / 2 * (fw / fh) ** 0.5
        half_h = side * min(w, h) / 2 / (fw / fh) ** 0.5
        # the window's corners -> the field's box (an affine map; outside the picture stays black)
        src = np.float32([[cx * w - half_w, cy * h - half_h], [cx * w + half_w, cy * h - half_h],
                          [cx * w - half_w, cy * h + half_h]])
        dst = np.float32([[fx, fy], [fx + fw, fy], [fx, fy + fh]])
        frame = cv2.warpAffine(image, cv2.getAffineTransform(src, dst), (WIDTH, HEIGHT), flags=cv2.INTER_AREA,
                               borderMode=cv2.BORDER_CONSTANT)
        frame[mask == 0] = 0
        out.append(frame)
    return out


SIDE = 0.6  # the window's side in the polyp shots, a share of the picture's smaller side


def polyp_pan(px: float, py: float, w: int, h: int) -> tuple[tuple, tuple]:
    """A pan that starts with the polyp (centre ``px``, ``py``) as near the middle of the view as
    the picture allows and moves the view, never past the picture's edges, the longest way it can:
    the polyp drifts to the opposite edge of the view (and out of it when there is room)."""
    hx = SIDE * min(w, h) / 2 / w * 1.03  # the window's half width and height, as shares of the picture
    hy = SIDE * min(w, h) / 2 / h / 1.03
    clamp = lambda v, half: min(max(v, half), 1 - half)  # noqa: E731
    start = (clamp(px, hx), clamp(py, hy))
    ends = [(hx, start[1]), (1 - hx, start[1]), (start[0], hy), (start[0], 1 - hy)]
    end = max(ends, key=lambda e: max(abs(e[0] - px) / hx, abs(e[1] - py) / hy))
    return (*start, SIDE), (*end, SIDE)


def build(out: Path, data: Path | None = None, *, frames: int | None = None) -> tuple[Path, list[dict]]:
    """Write the clip to ``out`` (H.264 MP4), its first ``frames`` only when given; returns the
    path and the shot list."""
    from engine.outputs.writer import VideoWriter

    data = data or data_root()
    mask = octagon_mask()
    shots: list[tuple[str, str, list[np.ndarray]]] = []
    for path in heldout(data, "normal-cecum", 5):
        field, _ = field_of(cv2.imread(str(path)))
        shots.append(("normal-cecum", path.name, shot(field, 40, (0.5, 0.5, 0.95), (0.5, 0.5, 0.8), mask)))
    for path in heldout(data, "bbps-2-3", 3):
        field, _ = field_of(cv2.imread(str(path)))
        shots.append(("bbps-2-3", path.name, shot(field, 30, (0.45, 0.5, 0.9), (0.55, 0.5, 0.85), mask)))
    polyps = heldout_polyps(data, 5)
    if len(polyps) > 4:
        path, _ = polyps[4]
        field, _ = field_of(cv2.imread(str(path)))
        sigma = 0.01 * max(field.shape[:2])
        blurred = cv2.GaussianBlur(field, (0, 0), sigma)
        shots.append(("polyp, blurred", path.name, shot(blurred, 38, (0.5, 0.5, 0.9), (0.5, 0.5, 0.85), mask)))
    for k, (path, (bx, by, bw, bh)) in enumerate(polyps[:4]):
        field, (ox, oy) = field_of(cv2.imread(str(path)))
        h, w = field.shape[:2]
        px, py = (bx - ox + bw / 2) / w, (by - oy + bh / 2) / h  # the polyp's centre in the field
        start, end = polyp_pan(px, py, w, h)
        shots.append((f"polyp {k + 1}", path.name, shot(field, 75, start, end, mask)))
    for path in heldout(data, "bbps-2-3", 5)[3:]:
        field, _ = field_of(cv2.imread(str(path)))
        shots.append(("bbps-2-3", path.name, shot(field, 30, (0.5, 0.45, 0.9), (0.5, 0.55, 0.85), mask)))
    listing, frame = [], 0
    with VideoWriter(Path(out), WIDTH, HEIGHT, FPS, force=True) as writer:
        for what, name, pictures in shots:
            listing.append({"shot": what, "image": name, "first_frame": frame, "frames": len(pictures),
                            "start_s": round(frame / FPS, 2)})
            for f in pictures[:None if frames is None else max(0, frames - frame)]:
                writer.write(f)
            frame += len(pictures)
            if frames is not None and frame >= frames:
                break
    return Path(out), listing


if __name__ == "__main__":
    path, listing = build(Path(sys.argv[1]), frames=int(sys.argv[2]) if len(sys.argv) > 2 else None)
    print(json.dumps(listing, indent=1))

"""The procedure report: one self-contained HTML file (and the same facts as a page image).

:func:`render_html` takes a summary (:mod:`engine.procedure.summary`), optional thumbnails (track
id -> BGR image, see :func:`make_thumbnail`) and the models' names and versions, and returns one
HTML document with everything inside it: the timeline is a PNG drawn here with OpenCV
(:func:`timeline_image`) and every picture is a ``data:`` URI, so the file can be mailed or
archived alone. All text is escaped. :func:`render_page` draws the main facts, the timeline and
the thumbnails onto one image, for a DICOM Secondary Capture (:mod:`engine.procedure.dicom`),
since an archive cannot show HTML.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from .. import __version__
from ..errors import EndoviewError
from ..files import replacing

RESEARCH_ONLY = ("Research use only. Not a diagnostic device: these figures come from models that "
                 "can be wrong and must not be used to diagnose, treat or grade a patient.")

#: Timeline colours (BGR) of the lower-GI classes the default models know; others are grey.
PALETTE = {
    "polyp": (60, 230, 255),  # the overlay's polyp yellow
    "normal-cecum": (90, 170, 60),
    "bbps-2-3": (190, 140, 40),
    "bbps-0-1": (40, 110, 200),
    "impacted-stool": (30, 60, 110),
    "ileum": (170, 80, 160),
}
OTHER = (150, 150, 150)
EMPTY = (235, 235, 235)
QUALITY_COLOURS = {None: (200, 215, 200), "blurred": (180, 100, 200), "dark": (40, 40, 40),
                   "overexposed": (250, 250, 255)}


class ReportError(EndoviewError):
    """A report cannot be written."""


def class_colour(label: str | None) -> tuple[int, int, int]:
    return EMPTY if label is None else PALETTE.get(label, OTHER)


def clock(seconds: float | None) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour), or an em dash for None."""
    if seconds is None:
        return "\u2014"
    s = int(round(max(0.0, float(seconds))))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _text(img, text, org, scale=0.45, colour=(40, 40, 40), thickness=1) -> None:
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)


def _tick_step(span: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if span / step <= 10:
            return float(step)
    return 7200.0


def timeline_image(summary: Mapping, width: int = 960) -> np.ndarray:
    """The summary's timeline as a BGR image: class, polyp and quality bands, tracks, cecum, a time axis."""
    tl = summary.get("timeline") or {}
    bins = int(tl.get("bins") or 0)
    start, end = float(tl.get("start_s", 0.0)), float(tl.get("end_s", 0.0))
    left, right = 78, 16
    plot_w = max(50, width - left - right)
    top_tracks, h_class, h_polyp, h_quality = 22, 30, 14, 14
    y_class = top_tracks + 12
    y_polyp = y_class + h_class + 4
    y_quality = y_polyp + h_polyp + 4
    y_axis = y_quality + h_quality + 6
    img = np.full((y_axis + 26, width, 3), 255, np.uint8)
    span = max(end - start, 1e-9)

    def x_of(t: float) -> int:
        return left + int(round((t - start) / span * plot_w))

    def band(y: int, h: int, colours: Sequence[tuple[int, int, int]]) -> None:
        for i, c in enumerate(colours):
            x0 = left + int(i * plot_w / bins)
            x1 = left + int((i + 1) * plot_w / bins)
            cv2.rectangle(img, (x0, y), (max(x0, x1 - 1), y + h - 1), c, -1)

    for y, h, name in ((y_class, h_class, "class"), (y_polyp, h_polyp, "polyp"), (y_quality, h_quality, "quality")):
        _text(img, name, (6, y + h // 2 + 5), 0.42)
        cv2.rectangle(img, (left, y), (left + plot_w - 1, y + h - 1), EMPTY, -1)
    if bins:
        band(y_class, h_class, [class_colour(c) for c in tl.get("classes", [])[:bins]])
        yellow = np.array(PALETTE["polyp"], float)
        band(y_polyp, h_polyp, [tuple(int(v) for v in (np.array(EMPTY) * (1 - p) + yellow * p))
                                for p in tl.get("polyp", [])[:bins]])
        if summary.get("quality") is not None:
            band(y_quality, h_quality, [QUALITY_COLOURS.get(q, OTHER) for q in tl.get("quality", [])[:bins]])
    cv2.rectangle(img, (left, y_quality), (left + plot_w - 1, y_quality + h_quality - 1), (180, 180, 180), 1)
    for t in summary.get("tracks") or []:
        x0, x1 = x_of(float(t["first_s"])), x_of(float(t["last_s"]))
        cv2.rectangle(img, (x0, top_tracks), (max(x0 + 1, x1), top_tracks + 6), (0, 140, 230), -1)
        _text(img, f"#{t['id']}", (x0, top_tracks - 4), 0.38, (0, 90, 170))
    cecum = summary.get("cecum_s")
    if cecum is not None:
        x = x_of(float(cecum))
        cv2.line(img, (x, top_tracks - 2), (x, y_quality + h_quality), (20, 120, 20), 2)
        _text(img, "cecum", (min(x + 4, width - 50), top_tracks + 7), 0.4, (20, 110, 20))
    step = _tick_step(span)
    t = np.ceil(start / step) * step
    while t <= end + 1e-9:
        x = x_of(t)
        cv2.line(img, (x, y_axis - 3), (x, y_axis + 2), (90, 90, 90), 1)
        _text(img, clock(t), (max(0, x - 14), y_axis + 16), 0.38, (70, 70, 70))
        t += step
    return img


def encode_image(image: np.ndarray, fmt: str = ".jpg", quality: int = 85) -> str:
    """A ``data:`` URI of a BGR image (JPEG by default, PNG for drawings)."""
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == ".jpg" else []
    ok, buf = cv2.imencode(fmt, np.ascontiguousarray(image), params)
    if not ok:
        raise ReportError(f"cannot encode an image of shape {np.shape(image)} as {fmt}")
    mime = "image/jpeg" if fmt == ".jpg" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(buf.tobytes()).decode('ascii')}"


def make_thumbnail(frame: np.ndarray, bbox: Sequence[int] | None = None, field: Sequence[int] | None = None,
                   width: int = 320) -> np.ndarray:
    """A thumbnail of a track's best frame: cropped to the field (leaving the processor's burned-in
    text outside), the polyp's box drawn, scaled to ``width`` pixels."""
    image = np.asarray(frame)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"frame must be H x W x 3, not {image.shape}")
    img = image.copy()
    fx, fy = 0, 0
    if field is not None:
        fx, fy, fw, fh = (int(v) for v in field)
        fx, fy = max(0, fx), max(0, fy)
        img = img[fy:fy + fh, fx:fx + fw].copy()
    scale = width / img.shape[1]
    img = cv2.resize(img, (width, max(1, round(img.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    if bbox is not None:
        x, y, w, h = (float(v) for v in bbox)
        p0 = (int((x - fx) * scale), int((y - fy) * scale))
        p1 = (int((x + w - fx) * scale), int((y + h - fy) * scale))
        cv2.rectangle(img, p0, p1, (0, 0, 0), 4)
        cv2.rectangle(img, p0, p1, PALETTE["polyp"], 2)
    return img


def _pct(share: float | None) -> str:
    return "\u2014" if share is None else f"{100.0 * share:.1f} %"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1000px;color:#222;padding:0 1em}
h1{margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
.ruo{background:#fff3cd;border:1px solid #e0c060;padding:.6em 1em;font-weight:600}
table{border-collapse:collapse}td,th{padding:.3em .8em;border-bottom:1px solid #eee;text-align:left;vertical-align:middle}
.facts th{font-weight:normal;color:#555}.num{text-align:right;font-variant-numeric:tabular-nums}
.legend span{display:inline-block;margin-right:1em}.sw{width:.9em;height:.9em;display:inline-block;vertical-align:middle;margin-right:.3em;border:1px solid #999}
.note{color:#666}img.thumb{border:1px solid #ccc}
"""


def _swatch(bgr: tuple[int, int, int]) -> str:
    b, g, r = bgr
    return f'<i class="sw" style="background:#{r:02x}{g:02x}{b:02x}"></i>'


def render_html(summary: Mapping, *, thumbnails: Mapping[int, np.ndarray] | None = None,
                models: Sequence[Mapping] = (), source: str | None = None,
                generated: _dt.datetime | None = None, thumbnails_note: str | None = None) -> str:
    """The report as one HTML document (see the module's docstring).

    thumbnails: track id -> BGR image (None: the report says thumbnails are unavailable, with
    ``thumbnails_note`` as the reason). models: ``{"name": ..., "version": ...}`` per model
    (any further keys are shown too). source: what the summary was made from (a file name).
    """
    s = summary
    when = (generated or _dt.datetime.now().astimezone()).strftime("%Y-%m-%d %H:%M %Z").strip()
    rules = s.get("rules") or {}
    hold = rules.get("cecum_hold_s")
    out: list[str] = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>endoview procedure report</title>", f"<style>{CSS}</style></head><body>",
        f'<p class="ruo" id="research-use-only">{_e(RESEARCH_ONLY)}</p>',
        "<h1>Procedure report</h1>",
        '<table class="facts">',
    ]

    def fact(name: str, value: str, ident: str) -> None:
        out.append(f'<tr><th>{_e(name)}</th><td id="{ident}">{value}</td></tr>')

    if source:
        fact("Source", _e(source), "source")
    fact("Generated", _e(f"{when} by endoview {__version__}"), "generated")
    fact("Video", _e(f"{clock(s.get('duration_s'))} ({s.get('frames', 0)} frames"
                      + (f", {s['fps']:g} fps)" if s.get("fps") else ")")), "video")
    fact("Polyps (confirmed tracks)", f"<strong>{int(s.get('polyps', 0))}</strong>", "polyps")
    if s.get("cecum_s") is not None:
        fact("Cecum reached", _e(f"{clock(s['cecum_s'])} ({s['cecum_s']:.1f} s)"), "cecum")
    else:
        why = f"normal-cecum never held {hold:g} s" if hold else "not determined"
        fact("Cecum reached", _e(f"not determined ({why})"), "cecum")
    if s.get("withdrawal_s") is not None:
        fact("Withdrawal time", _e(f"{clock(s['withdrawal_s'])} ({s['withdrawal_s']:.1f} s, from the cecum to the "
                                   f"{s.get('withdrawal_end', 'end of video')})"), "withdrawal")
    else:
        fact("Withdrawal time", _e("not determined (the cecum was not reached)"), "withdrawal")
    out.append("</table>")

    out.append("<h2>Timeline</h2>")
    out.append(f'<img id="timeline" alt="timeline" src="{encode_image(timeline_image(s), ".png")}">')
    classes = [c for c in PALETTE if c != "polyp"]
    legend = "".join(f"<span>{_swatch(class_colour(c))}{_e(c)}</span>" for c in classes)
    legend += f"<span>{_swatch(OTHER)}other</span><span>{_swatch(PALETTE['polyp'])}polyp verdict</span>"
    if s.get("quality") is not None:
        legend += "".join(f"<span>{_swatch(QUALITY_COLOURS[q])}{_e(q or 'quality ok')}</span>"
                          for q in QUALITY_COLOURS)
    out.append(f'<p class="legend">{legend}</p>')

    out.append("<h2>Polyps</h2>")
    tracks = s.get("tracks") or []
    if not tracks:
        out.append('<p id="no-polyps">No polyp track was confirmed.</p>')
    else:
        if thumbnails is None:
            out.append(f'<p class="note" id="no-thumbnails">Thumbnails unavailable: '
                       f'{_e(thumbnails_note or "no video was given")}.</p>')
        out.append('<table id="polyp-table"><tr><th>#</th><th>first seen</th><th>last seen</th><th>duration</th>'
                   "<th>frames</th><th>max confidence</th><th>best frame</th><th>thumbnail</th></tr>")
        for t in tracks:
            thumb = (thumbnails or {}).get(int(t["id"]))
            cell = (f'<img class="thumb" alt="polyp {int(t["id"])}, frame {int(t["best_frame"])}" '
                    f'src="{encode_image(thumb)}">' if thumb is not None else '<span class="note">unavailable</span>')
            out.append(
                f'<tr id="polyp-{int(t["id"])}"><td>{int(t["id"])}</td><td>{_e(clock(t["first_s"]))}</td>'
                f'<td>{_e(clock(t["last_s"]))}</td><td class="num">{float(t["duration_s"]):.1f} s</td>'
                f'<td class="num">{int(t["frames"])}</td><td class="num">{100 * float(t["max_confidence"]):.0f} %</td>'
                f'<td class="num">{int(t["best_frame"])} ({_e(clock(t["best_s"]))})</td><td>{cell}</td></tr>')
        out.append("</table>")

    out.append("<h2>Bowel preparation</h2>")
    prep = s.get("bbps") or {}
    over = "the withdrawal" if prep.get("over") == "withdrawal" else "the whole video (the cecum was not reached)"
    out.append(f'<p>Share of usable frames of {_e(over)} whose class is (frames: {int(prep.get("frames") or 0)}):</p>')
    out.append('<table id="bbps">')
    for name in ("bbps-0-1", "bbps-2-3", "impacted-stool"):
        out.append(f'<tr><th>{_swatch(class_colour(name))}{_e(name)}</th><td class="num">{_pct(prep.get(name))}</td></tr>')
    out.append("</table>")

    out.append("<h2>Image quality</h2>")
    quality = s.get("quality")
    if quality is None:
        out.append('<p class="note" id="quality">Not recorded in this log.</p>')
    else:
        out.append(f'<table id="quality"><tr><th>frames rated</th><td class="num">{int(quality["frames"])}</td></tr>')
        for name in ("ok", "blurred", "dark", "overexposed"):
            out.append(f'<tr><th>{_e(name)}</th><td class="num">{_pct(quality.get(name))}</td></tr>')
        out.append("</table>")

    out.append("<h2>Models and rules</h2><ul id=\"models\">")
    if not models:
        out.append("<li>not recorded</li>")
    for m in models:
        name = m.get("name", "unknown")
        extra = ", ".join(f"{k}: {v}" for k, v in m.items() if k not in ("name",) and v not in (None, ""))
        out.append(f"<li><strong>{_e(name)}</strong>{(' (' + _e(extra) + ')') if extra else ''}</li>")
    out.append("</ul>")
    if rules:
        out.append(f'<p class="note">Rules: cecum reached when {_e(rules.get("cecum_label"))} holds '
                   f'{_e(rules.get("cecum_hold_s"))} s (breaks up to {_e(rules.get("cecum_max_break_s"))} s); '
                   f'a polyp counts once its track holds {_e(rules.get("track_confirm_frames"))} frames and ends '
                   f'after {_e(rules.get("track_max_gap"))} frames unseen; withdrawal ends at the '
                   f'{_e(s.get("withdrawal_end", "end of video"))}.</p>')
    out.append(f'<p class="ruo">{_e(RESEARCH_ONLY)}</p></body></html>')
    return "\n".join(out) + "\n"


def render_page(summary: Mapping, *, thumbnails: Mapping[int, np.ndarray] | None = None,
                models: Sequence[Mapping] = (), source: str | None = None, width: int = 1200) -> np.ndarray:
    """The report's main facts, timeline and polyp thumbnails on one BGR image (for DICOM)."""
    s = summary
    lines = ["endoview procedure report - RESEARCH USE ONLY, NOT A DIAGNOSTIC DEVICE", ""]
    if source:
        lines.append(f"source: {source}")
    lines += [
        f"video: {clock(s.get('duration_s'))} ({s.get('frames', 0)} frames)",
        f"polyps (confirmed tracks): {int(s.get('polyps', 0))}",
        f"cecum reached: {clock(s['cecum_s']) if s.get('cecum_s') is not None else 'not determined'}",
        f"withdrawal time: {clock(s['withdrawal_s']) if s.get('withdrawal_s') is not None else 'not determined'}"
        + (f" (to the {s.get('withdrawal_end', 'end of video')})" if s.get("withdrawal_s") is not None else ""),
    ]
    prep = s.get("bbps") or {}
    lines.append("bowel prep (" + str(prep.get("over", "")) + "): " + ", ".join(
        f"{k} {_pct(prep.get(k))}" for k in ("bbps-0-1", "bbps-2-3", "impacted-stool")))
    q = s.get("quality")
    lines.append("image quality: " + ("not recorded" if q is None else ", ".join(
        f"{k} {_pct(q.get(k))}" for k in ("ok", "blurred", "dark", "overexposed"))))
    lines.append("models: " + (", ".join(f"{m.get('name')} {m.get('version', '')}".strip() for m in models)
                               or "not recorded"))
    line_h = 30
    timeline = timeline_image(s, width - 40)
    thumbs = [(t, (thumbnails or {}).get(int(t["id"]))) for t in (s.get("tracks") or [])]
    thumbs = [(t, im) for t, im in thumbs if im is not None][:8]
    tw = (width - 40 - 3 * 20) // 4
    thumb_rows = (len(thumbs) + 3) // 4
    thumb_h = max((round(im.shape[0] * tw / im.shape[1]) for _, im in thumbs), default=0) + 26
    height = 20 + len(lines) * line_h + 20 + timeline.shape[0] + 20 + thumb_rows * (thumb_h + 10) + 20
    page = np.full((height, width, 3), 255, np.uint8)
    y = 20
    for i, text in enumerate(lines):
        y += line_h
        _text(page, text, (20, y), 0.7 if i == 0 else 0.6, (0, 0, 160) if i == 0 else (30, 30, 30),
              2 if i == 0 else 1)
    y += 20
    page[y:y + timeline.shape[0], 20:20 + timeline.shape[1]] = timeline
    y += timeline.shape[0] + 20
    for k, (t, im) in enumerate(thumbs):
        small = cv2.resize(im, (tw, max(1, round(im.shape[0] * tw / im.shape[1]))), interpolation=cv2.INTER_AREA)
        x0 = 20 + (k % 4) * (tw + 20)
        y0 = y + (k // 4) * (thumb_h + 10)
        _text(page, f"polyp {t['id']} at {clock(t['best_s'])}", (x0, y0 + 18), 0.55)
        page[y0 + 26:y0 + 26 + small.shape[0], x0:x0 + tw] = small
    return page


def write_text(path: str | Path, text: str, *, force: bool = False) -> Path:
    """Write ``text`` under a temporary name, then rename; an existing file is kept unless ``force``."""
    with replacing(path, force=force, error=ReportError) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)

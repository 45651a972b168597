"""Many videos at once: one annotate per video, in worker processes or as Ray tasks.

    inputs = expand_inputs(["a.mp4", "videos/"])
    jobs = plan(inputs, Path("out"))           # out/a_annotated.mp4 (+ .jsonl, .csv), ...
    todo, skipped = pending(jobs)              # finished ones are skipped
    outcomes = run_local(todo, settings, workers=2)   # or run_ray(todo, settings, "local")
    print(summary(outcomes, wall_s))

Each video is one :class:`Job` (its input and its final output and log names), run by
:func:`annotate_one`, which opens its own source and analyzer and does not raise for a bad video:
it returns an :class:`Outcome` with status "failed" and the one-line reason, so one broken file
does not stop the others. Export writes every file under a temporary name and renames it when
complete, so a job whose final files all exist is finished, and a killed run leaves none of an
unfinished video's final names: :func:`pending` skips the finished ones (unless ``force``).

Ray is optional (the ``batch`` extra) and imported only by :func:`run_ray`.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import logging
import multiprocessing
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import cv2

from ..config import Config
from ..errors import EndoviewError, ExportError, ExtraMissingError
from ..files import replacing
from ..outputs.export import annotate
from ..runtime import make_overlay, open_analyzer
from ..sources import open_source
from ..sources.base import natural_key

logger = logging.getLogger(__name__)

#: what a folder of videos is made of (anything else in it, images included, is left out)
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
     ".wmv", ".flv", ".3gp", ".ogv"}
)
#: OUTDIR/<name>_annotated.mp4, .jsonl and .csv
SUFFIX = "_annotated"
RAY_INSTALL = 'pip install "ray>=2.9"'
STATUSES = ("done", "partial", "skipped", "failed")


# ------------------------------------------------------------------------------ the inputs


def _is_video(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in VIDEO_EXTENSIONS


def is_video_folder(item: str | os.PathLike) -> bool:
    """``item`` is a folder holding at least one video file (a folder of images is one input)."""
    path = Path(item)
    try:
        return path.is_dir() and any(_is_video(p) for p in path.iterdir())
    except OSError:  # unreadable: open_source says why when it is tried as one input
        return False


def batch_folder(inputs: Sequence[str], output: str | os.PathLike) -> Path | None:
    """The folder that several outputs go to, or None when ``output`` is the one output file.

    ``-o`` names a folder when there are several inputs or a folder of videos among them, or when
    it is an existing folder or ends in a path separator; ``-o NAME.mp4`` is always a file, as
    before (so a folder of videos with ``-o x.mp4`` is an error, not a surprise).
    """
    text = os.fspath(output)
    path = Path(text)
    several = len(inputs) > 1 or any(is_video_folder(item) for item in inputs)
    if path.suffix.lower() == ".mp4":
        if several:
            raise ExportError(f"several videos need an output folder, not the file {path} "
                              f"(e.g. -o {path.with_suffix('')}/)")
        return None
    if several or path.is_dir() or text.endswith(("/", os.sep)):
        if path.exists() and not path.is_dir():
            raise ExportError(f"output folder {path} is a file; give -o a folder for several videos")
        return path
    return None


def expand_inputs(items: Sequence[str], *, skip_outputs_in: Path | None = None) -> list[str]:
    """The inputs that ``items`` stand for, in order, each once.

    A folder holding video files stands for those videos (natural order, not recursive; hidden
    files, and our own ``*_annotated.*`` outputs when the folder is ``skip_outputs_in``, left
    out). Anything else (a video file, a folder of images, ``demo``) stands for itself.
    """
    out: list[str] = []
    seen: set[str] = set()
    for item in items:
        path = Path(item)
        if is_video_folder(path):
            videos = sorted((p for p in path.iterdir() if _is_video(p)), key=lambda p: natural_key(p.name))
            if skip_outputs_in is not None and _same_folder(path, skip_outputs_in):
                videos = [p for p in videos if not p.stem.endswith(SUFFIX)]
            names = [str(p) for p in videos]
        else:
            names = [str(item)]
        for name in names:
            key = _identity(name)
            if key in seen:
                logger.warning("%s is given twice; annotating it once", name)
                continue
            seen.add(key)
            out.append(name)
    return out


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _identity(item: str) -> str:
    path = Path(item)
    return str(path.resolve()) if path.exists() else item


# ------------------------------------------------------------------------------- the jobs


@dataclass(frozen=True)
class Job:
    """One video: the input as ``open_source`` takes it, and its final output and log names."""

    input: str
    output: Path
    logs: tuple[Path, ...] = ()

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.output, *self.logs)

    def finished(self) -> bool:
        """Every final file exists (export renames each one into place only when complete)."""
        return all(p.is_file() for p in self.files)

    def started(self) -> bool:
        """Some final file exists: an earlier run stopped between renames, or the files were edited."""
        return any(p.exists() for p in self.files)


def output_stem(item: str) -> str:
    """The name part of an input: a file's stem, a folder's name, ``demo:640x480`` -> demo_640x480."""
    path = Path(item.rstrip("/" + os.sep) or item)
    name = path.stem if path.suffix else path.name
    return re.sub(r"[^\w.-]+", "_", name).strip("_.") or "video"


#: in the output folder: which input each output name belongs to, so that names stay the same
#: from run to run and another video with the same stem is never taken for a finished one
CLAIMS = ".endoview-batch.json"


def plan(inputs: Sequence[str], folder: Path, *, logs: bool = True,
         claims: dict[str, str] | None = None) -> list[Job]:
    """One :class:`Job` per input: ``folder/<stem>_annotated.mp4`` (+ ``.jsonl`` and ``.csv``).

    ``claims`` (output name -> the input's absolute path, see :func:`load_claims`; updated in
    place) keeps each input's name from earlier runs. A stem already claimed by another input
    (``a/x.mp4`` and ``b/x.mp4``, ``x.mp4`` and ``x.avi``, compared without case for
    case-insensitive disks) gets ``-<8 hex digits of the input's absolute path>`` added, so no
    output overwrites another, and no other video's output is taken for this one's.
    """
    claims = {} if claims is None else claims
    owner = {ident: name for name, ident in claims.items()}
    taken = {name.casefold() for name in claims}
    jobs = []
    for item in inputs:
        ident = _identity(item)
        name = owner.get(ident)
        if name is None:
            name = output_stem(item)
            if name.casefold() in taken:
                name = f"{name}-{hashlib.sha1(ident.encode()).hexdigest()[:8]}"
            claims[name], owner[ident] = ident, name
            taken.add(name.casefold())
        out = Path(folder) / f"{name}{SUFFIX}.mp4"
        jobs.append(Job(item, out, (out.with_suffix(".jsonl"), out.with_suffix(".csv")) if logs else ()))
    return jobs


def load_claims(folder: Path) -> dict[str, str]:
    """The output names claimed in ``folder`` by earlier runs (empty when none)."""
    path = Path(folder) / CLAIMS
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"cannot read {path} ({exc}); delete it to start the names afresh") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ExportError(f"{path} is not a name -> input table; delete it to start the names afresh")
    return data


def save_claims(folder: Path, claims: dict[str, str]) -> None:
    with replacing(Path(folder) / CLAIMS, force=True) as tmp:
        tmp.write_text(json.dumps(claims, indent=1, sort_keys=True, ensure_ascii=False) + "\n",
                       encoding="utf-8")


@dataclass(frozen=True)
class Settings:
    """What every job shares; picklable, so it travels to worker processes and Ray tasks."""

    config: Config
    model: bool = True
    overlay: bool = True
    deidentify: bool = False
    start_s: float | None = None
    end_s: float | None = None
    lossless: bool = False
    preset: str = "ultrafast"
    force: bool = False
    #: inference (onnxruntime / torch) and OpenCV threads of each job; None: their defaults (all cores)
    threads: int | None = None
    source_options: dict = field(default_factory=dict)


def threads_per_job(workers: int, cpus: int | None = None) -> int | None:
    """Inference threads for each of ``workers`` jobs at once, so that together they fill the
    cores without oversubscribing them; None for one job (the backend's default: every core)."""
    if workers <= 1:
        return None
    return max(1, (cpus or os.cpu_count() or 1) // workers)


def backend_options(backend: str, threads: int | None) -> dict:
    """``threads=`` for the backends that take it (onnxruntime, torch; ``auto`` drops it for TensorRT)."""
    if not threads:
        return {}
    if backend == "auto":
        return {"threads": threads}
    from ..backends import backend_class

    return {"threads": threads} if "threads" in backend_class(backend).option_names else {}


@dataclass
class Outcome:
    """What became of one video. ``seconds``: its whole time, source and model loading included."""

    input: str
    status: str  # one of STATUSES
    output: Path | None = None
    frames: int = 0
    seconds: float = 0.0
    reason: str = ""  # why it failed, or where decoding stopped (partial)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def pending(jobs: Sequence[Job], force: bool = False) -> tuple[list[Job], list[Outcome]]:
    """The jobs still to do, and a "skipped" outcome for each finished one (none with ``force``)."""
    todo, skipped = [], []
    for job in jobs:
        if job.finished() and not force:
            skipped.append(Outcome(job.input, "skipped", job.output, frames=_logged_frames(job)))
        else:
            todo.append(job)
    return todo, skipped


def _logged_frames(job: Job) -> int:
    jsonl = next((p for p in job.logs if p.suffix == ".jsonl"), None)
    if jsonl is None:
        return 0
    try:
        with open(jsonl, "rb") as fh:
            return sum(1 for _ in fh)
    except OSError:
        return 0


# ------------------------------------------------------------------------------ running


def annotate_one(job: Job, settings: Settings,
                 progress: Callable[[int], None] | None = None) -> Outcome:
    """Annotate one video with its own source and analyzer; a failure is returned, not raised."""
    t0 = time.perf_counter()
    config = settings.config
    if settings.threads:
        cv2.setNumThreads(settings.threads)  # process-wide: this runs in a worker of its own
    try:
        with open_source(job.input, **settings.source_options) as source, \
                open_analyzer(config, still=source.info.still, model=settings.model,
                              backend_options=backend_options(config.backend, settings.threads)) as analyzer:
            report = annotate(source, job.output, analyzer,
                              overlay=make_overlay(config) if settings.overlay else None,
                              logs=list(job.logs), deidentify=settings.deidentify,
                              start_s=settings.start_s, end_s=settings.end_s,
                              force=settings.force or job.started(), lossless=settings.lossless,
                              preset=settings.preset, progress=progress)
    except EndoviewError as exc:
        return Outcome(job.input, "failed", seconds=time.perf_counter() - t0, reason=str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug shows in this video's row; the others go on
        logger.debug("internal error on %s", job.input, exc_info=True)
        return Outcome(job.input, "failed", seconds=time.perf_counter() - t0,
                       reason=f"internal error: {exc!r} (run with -vv for the traceback)")
    status = "partial" if report.stopped_early else "done"
    return Outcome(job.input, status, report.output, report.frames, time.perf_counter() - t0,
                   report.stopped_early or "")


def _init_worker(level: int) -> None:
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def run_local(jobs: Sequence[Job], settings: Settings, *, workers: int = 1,
              on_done: Callable[[Outcome], None] | None = None,
              progress: Callable[[Job], Callable[[int], None] | None] | None = None) -> list[Outcome]:
    """Annotate ``jobs`` here (``workers`` 1) or in ``workers`` processes; outcomes in job order.

    With several workers each job gets :func:`threads_per_job` inference threads (unless
    ``settings.threads`` says otherwise). ``on_done`` is called as each video finishes;
    ``progress(job)`` may return a per-frame callback (used only in this process).
    """
    on_done = on_done or (lambda outcome: None)
    workers = max(1, min(workers, len(jobs)))
    if workers == 1:
        outcomes = []
        for job in jobs:
            outcomes.append(annotate_one(job, settings, progress(job) if progress else None))
            on_done(outcomes[-1])
        return outcomes
    if settings.threads is None:
        settings = replace(settings, threads=threads_per_job(workers))
    results: dict[int, Outcome] = {}
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                initializer=_init_worker, initargs=(logging.getLogger().level,)) as pool:
        futures = {pool.submit(annotate_one, job, settings): i for i, job in enumerate(jobs)}
        try:
            for future in cf.as_completed(futures):
                i = futures[future]
                try:
                    results[i] = future.result()
                except cf.process.BrokenProcessPool as exc:
                    results[i] = Outcome(jobs[i].input, "failed",
                                         reason=f"its worker process died ({exc})")
                on_done(results[i])
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return [results[i] for i in range(len(jobs))]


def import_ray():
    """The ``ray`` module, or ExtraMissingError naming the install command."""
    try:
        import ray
    except ImportError:
        raise ExtraMissingError(f"--ray needs Ray, which is not installed: {RAY_INSTALL} "
                                "(or the extra: pip install 'endoview[batch]')") from None
    return ray


def run_ray(jobs: Sequence[Job], settings: Settings, address: str, *, cpus: int | None = None,
            on_done: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Each job one Ray task (one CPU, one inference thread) running :func:`annotate_one`.

    ``address``: a cluster (``ray://host:10001``, ``host:6379``, ``auto``), or ``local`` to start
    a local instance with ``cpus`` CPUs (None: all). The inputs, outputs and model bundles must
    be at the same paths on every node (a shared disk), with endoview installed there.
    """
    ray = import_ray()
    on_done = on_done or (lambda outcome: None)
    started = not ray.is_initialized()
    if started:
        try:
            if address == "local":
                ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)
            else:
                ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise EndoviewError(f"cannot reach the Ray cluster at {address}: {exc}") from None
    try:
        task = ray.remote(num_cpus=1)(annotate_one)
        one_thread = replace(settings, threads=settings.threads or 1)
        refs = {task.remote(job, one_thread): i for i, job in enumerate(jobs)}
        results: dict[int, Outcome] = {}
        waiting = list(refs)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            for ref in ready:
                i = refs[ref]
                try:
                    results[i] = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the worker died, the node went away
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    results[i] = Outcome(jobs[i].input, "failed", reason=f"Ray task failed: {first}")
                on_done(results[i])
    finally:
        if started:
            ray.shutdown()
    return [results[i] for i in range(len(jobs))]


# ------------------------------------------------------------------------------ reporting


def exit_status(outcomes: Sequence[Outcome]) -> int:
    """1 when a video failed, 3 when one was written only as far as it decoded (as ``annotate``
    of one video), else 0."""
    if any(o.status == "failed" for o in outcomes):
        return 1
    return 3 if any(o.status == "partial" for o in outcomes) else 0


def summary(outcomes: Sequence[Outcome], wall_s: float) -> str:
    """A table, one row per video (status, frames, seconds, frames/s, output or the reason it
    failed), and the totals: videos by status, frames annotated in this run, wall time, frames/s."""
    header = ("video", "status", "frames", "seconds", "frames/s", "output")
    rows = []
    for o in outcomes:
        ran = o.status in ("done", "partial")
        note = o.reason if o.status == "failed" else str(o.output or "")
        if o.status == "partial":
            note += f" ({o.reason})"
        rows.append((o.input, o.status, str(o.frames) if o.frames or ran else "-",
                     f"{o.seconds:.1f}" if o.status != "skipped" else "-",
                     f"{o.fps:.1f}" if ran and o.seconds > 0 else "-", note))
    widths = [max(len(r[c]) for r in (header, *rows)) for c in range(len(header) - 1)]
    numeric = (False, False, True, True, True)

    def line(r: tuple[str, ...]) -> str:
        cells = [r[c].rjust(w) if numeric[c] else r[c].ljust(w) for c, w in enumerate(widths)]
        return "  ".join([*cells, r[-1]]).rstrip()

    counts = Counter(o.status for o in outcomes)
    frames = sum(o.frames for o in outcomes if o.status in ("done", "partial"))
    fps = frames / wall_s if wall_s > 0 else 0.0
    by_status = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s])
    total = (f"{len(outcomes)} video{'s' if len(outcomes) != 1 else ''}: {by_status}; "
             f"{frames} frames annotated in {wall_s:.1f} s wall time ({fps:.1f} frames/s)")
    return "\n".join([line(header), *(line(r) for r in rows), total])


__all__ = [
    "CLAIMS", "Job", "Outcome", "Settings", "SUFFIX", "VIDEO_EXTENSIONS", "annotate_one", "backend_options",
    "batch_folder", "exit_status", "expand_inputs", "import_ray", "is_video_folder", "load_claims",
    "output_stem", "pending", "plan", "run_local", "run_ray", "save_claims", "summary", "threads_per_job",
]

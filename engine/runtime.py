"""Assembling the pipeline from a configuration: one short function per mode's needs."""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from .analysis.classifier import Classifier, make_smoother
from .analysis.second_pass import ClassifierPass, SecondPassWorker, Triggers
from .analysis.segmenter import Segmenter
from .analysis.tracker import ContentAreaTracker
from .backends import open_backend, precision_option
from .bundle import load_bundle
from .config import Config
from .errors import BundleError
from .overlay import Overlay
from .pipeline import Analyzer
from .types import SecondPassResult

logger = logging.getLogger(__name__)


_collecting = threading.Event()  # a collection runs now, in some thread (see _track_collections)
_settle_lock = threading.Lock()


def _track_collections(phase: str, _info: dict) -> None:
    if phase == "start":
        _collecting.set()
    else:
        _collecting.clear()


gc.callbacks.append(_track_collections)


def settle_heap() -> None:
    """Once the models are loaded, before frames flow: collect what loading left behind, then move
    every object alive now (modules, models, the window) out of the cyclic garbage collector's
    reach (``gc.freeze``). A full collection then walks only what was made since, not the whole
    heap: measured in the window, full collections paused every thread for 28-31 ms (92 ms with
    torch imported), the longest event-loop stalls. Objects frozen by an earlier call go back
    first (``gc.unfreeze``), so a source opened again lets the one before it be collected.

    Call it from the thread that owns the objects it may free: the viewer calls it on the GUI
    thread (a collection in a worker thread finalised Qt objects there: a segfault). It waits
    for a collection another thread is running (one that released the interpreter lock inside
    a finalizer), with automatic collection off meanwhile, so the generations are never moved
    under a collection's feet."""
    with _settle_lock:
        enabled = gc.isenabled()
        gc.disable()  # no automatic collection starts from here on
        try:
            while _collecting.is_set():
                time.sleep(0.001)
            gc.unfreeze()
            gc.collect()
            gc.freeze()
        finally:
            if enabled:
                gc.enable()


@contextlib.contextmanager
def open_analyzer(config: Config, *, still: bool = False, model: bool = True,
                  backend_options: dict | None = None,
                  on_second_pass: Callable[[SecondPassResult], None] | None = None) -> Iterator[Analyzer]:
    """An Analyzer with its backend entered for the duration of the ``with`` block.

    ``still``: the source is a set of unrelated images, so temporal smoothing is off.
    ``model=False``: content area only (no classifier, e.g. ``--no-model``).
    ``backend_options``: passed to both models' backends (e.g. ``threads=`` for onnxruntime);
    onnxruntime also gets ``config.precision`` (int8 models on the CPU where a bundle has them).
    ``on_second_pass``: called with each second-pass result, from the second pass's own thread.
    A bundle with task "segment" gives an Analyzer that runs the segmenter on every frame; a
    classify bundle runs with ``config.segmenter`` beside it (both on every frame, one verdict).
    """
    # Unrelated still images: estimate each one afresh, no hysteresis.
    tracker = (ContentAreaTracker(every=1, tolerance=0.0, confirm=1) if still
               else ContentAreaTracker(every=config.reestimate_every))
    if not model:
        yield Analyzer(None, tracker=tracker)
        return
    bundle = load_bundle(Path(config.bundle))
    with contextlib.ExitStack() as stack:
        options = {**precision_option(config.backend, config.precision), **(backend_options or {})}
        backend = stack.enter_context(open_backend(bundle, config.backend, **options))
        logger.info("model %s on %s", bundle.name, backend.description)
        worker = (stack.enter_context(open_second_pass(config, on_result=on_second_pass))
                  if config.second_pass else None)
        triggers = Triggers(every_n=config.second_pass_every or None,
                            hold_seconds=config.second_pass_hold or None)
        smoother = make_smoother(None if still else config.smoothing)
        if bundle.task == "segment":  # the real-time segmenter on every frame
            classifier, segmenter = None, Segmenter(bundle, backend, smoother)
        else:
            classifier, segmenter = Classifier(bundle, backend, smoother), None
            if config.segmenter is not None:  # the default: the polyp segmenter beside the classifier
                seg_bundle = load_bundle(Path(config.segmenter))
                if seg_bundle.task != "segment":
                    raise BundleError(f"segmenter {seg_bundle.path} has task {seg_bundle.task!r}, not 'segment'")
                seg_backend = stack.enter_context(open_backend(seg_bundle, config.backend, **options))
                logger.info("segmenter %s on %s", seg_bundle.name, seg_backend.description)
                segmenter = Segmenter(seg_bundle, seg_backend, make_smoother(None if still else config.smoothing))
        yield Analyzer(classifier, segmenter=segmenter, tracker=tracker, smooth=not still,
                       second_pass=worker, triggers=None if still else triggers)


@contextlib.contextmanager
def open_second_pass(config: Config, *, on_result: Callable[[SecondPassResult], None] | None = None
                     ) -> Iterator[SecondPassWorker]:
    """The second-pass worker over ``config.second_pass``, started (``on_result``: see
    :class:`SecondPassWorker`).

    A classify bundle (e.g. the trimmed ResNet-152) runs on the configured backend; an instances
    bundle (the Cascade Mask R-CNN) runs through MMDetection on torch, on CUDA when available.
    """
    bundle = load_bundle(Path(config.second_pass))
    if bundle.task == "instances":
        from .analysis.instances import InstancePass

        with SecondPassWorker(InstancePass.from_bundle(bundle), on_result=on_result) as worker:
            yield worker
        return
    if bundle.task != "classify":
        raise BundleError(f"second pass {bundle.path} has task {bundle.task!r}; a second pass is a "
                          "classify bundle (ResNet-152) or an instances bundle (Cascade Mask R-CNN)")
    with open_backend(bundle, config.backend) as backend:
        logger.info("second pass %s on %s", bundle.name, backend.description)
        with SecondPassWorker(ClassifierPass(Classifier(bundle, backend)), on_result=on_result) as worker:
            yield worker


def make_overlay(config: Config) -> Overlay:
    return Overlay.default(outline=config.outline, names=config.layers, style=config.style,
                           edge_hint=config.edge_hint)

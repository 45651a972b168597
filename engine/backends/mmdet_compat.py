"""MMDetection 3.3 (mmengine 0.10.7, mmcv 2.1.0) on numpy 2 and torch 2.14: the one place that imports it.

:func:`import_mmdet` imports mmengine, mmcv (with its compiled ``mmcv.ops``) and mmdet, registers
mmdet's modules in its registries with ``mmdet`` as the default scope, and applies the fixes
below. It is idempotent and cheap after the first call. Nothing here is imported when
``engine.backends.mmdet_compat`` itself is imported: torch and mmdet load on the first call, so the engine
imports without them. When the ``seg`` extra is missing it raises :class:`MMDetUnavailable` with
the command that installs it.

Fixes (all at runtime, nothing on disk is edited):

1. ``torch.load`` defaults to ``weights_only=True`` since torch 2.6, and mmengine 0.10.7 calls it
   without the argument, so loading a Runner checkpoint (``resume``, ``load_from``,
   ``init_detector``) fails on what its message hub and meta pickle besides tensors: mmengine's
   ``HistoryBuffer``, and numpy 2's ``numpy._core.multiarray._reconstruct``, ``ndarray``, ``dtype``
   with the ``Float64DType`` and ``Int64DType`` it rebuilds, and ``numpy._core.multiarray.scalar``
   (the last two also under their numpy-1 names ``numpy.core.multiarray.*``). Exactly these are
   allow-listed with ``torch.serialization.add_safe_globals`` (:data:`SAFE_GLOBALS`);
   ``weights_only`` stays on everywhere.
2. ``HistoryBuffer.__getstate__`` pickles its statistics functions (``HistoryBuffer.min``, ...),
   which pickle protocol 2 writes as ``getattr(HistoryBuffer, "min")``: loading them would need
   ``builtins.getattr`` allow-listed. It is replaced by one that leaves the four default functions
   out (``__setstate__`` registers them again), so checkpoints written here load with fix 1 alone.
   A full Runner checkpoint written by an unpatched mmengine still fails to load here: strip it
   to ``meta`` and ``state_dict`` first (MMDetection's ``tools/model_converters/publish_model.py``
   does; published COCO checkpoints hold only those).

Checked, not patched: the numpy-1 aliases left in mmdet 3.3 (``np.float`` in
``evaluation/functional/ytviseval.py``, ``np.long`` in ``datasets/transforms/text_transformers.py``)
and mmcv 2.1 (``np.float`` in ``ops/pixel_group.py``) sit in video, grounding and text-detection
code that Cascade Mask R-CNN never reaches; training, validation (CocoMetric, pycocotools),
checkpoints, resume and inference run under numpy 2.4 and torch 2.14.1 with fixes 1 and 2 only.
pycocotools 2.0.11 warns (DeprecationWarning, numpy 2's ``copy`` keyword of ``__array__``) when it
decodes masks; it still works.
"""

from __future__ import annotations

import importlib
import logging
import threading
from typing import Any

from engine.errors import BackendUnavailable, install_hint

log = logging.getLogger(__name__)

#: The versions endoview is tested with (mmdet 3.3.0 accepts mmcv >= 2.0.0rc4, < 2.2.0).
VERSIONS = {"mmengine": "0.10.7", "mmcv": "2.1.0", "mmdet": "3.3.0"}
INSTALL_HINT = f"{install_hint('train,seg')}; the first time it builds mmcv 2.1.0, about 10 minutes"

_lock = threading.Lock()
_ready: dict[str, str] = {}


class MMDetUnavailable(BackendUnavailable):
    """MMDetection, mmengine or mmcv (with its compiled ops) cannot be imported here."""


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as err:  # ModuleNotFoundError, or mmcv.ops built for another torch
        raise MMDetUnavailable(f"Cascade Mask R-CNN needs {name}, which cannot be imported ({err}); "
                               f"{INSTALL_HINT}") from err


def safe_globals() -> list[Any]:
    """What a Runner checkpoint pickles besides tensors and builtins (fix 1)."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    multiarray = np._core.multiarray  # numpy 2 pickles by the numpy._core names
    return [
        HistoryBuffer,  # the message hub's log_scalars
        multiarray._reconstruct,  # ndarray.__reduce__ (HistoryBuffer._log_history / _count_history)
        (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),  # ... as numpy 1 wrote it
        np.ndarray,
        np.dtype,  # dtype.__reduce__ (np.dtype("f8", False, True)) ...
        np.dtypes.Float64DType,  # ... then BUILD on the dtype: float64 (_log_history, the eta scalar)
        np.dtypes.Int64DType,  # ... and int64 (_count_history)
        multiarray.scalar,  # numpy scalars (np.float64 in meta and the message hub)
        (multiarray.scalar, "numpy.core.multiarray.scalar"),
    ]


def _history_buffer_getstate(self) -> dict:
    """Fix 2: HistoryBuffer's state without its default statistics functions.

    mmengine 0.10.7 adds ``statistics_methods`` (the functions ``HistoryBuffer.min``, ``max``,
    ``mean``, ``current``) to the pickled state, and pickle protocol 2 (torch.save's) writes
    them as ``getattr(HistoryBuffer, "min")``. Loading that with ``weights_only=True`` would
    need ``builtins.getattr`` allow-listed, which opens every attribute of every allowed object.
    ``__setstate__`` registers the defaults again anyway, so only methods registered on top of
    them are kept (none in endoview); the instance itself is left untouched (the original also
    wrote the functions into the instance's ``__dict__``).
    """
    state = dict(self.__dict__)
    state.pop("statistics_methods", None)
    defaults = {name: getattr(type(self), name) for name in ("min", "max", "current", "mean")}
    custom = {k: v for k, v in self._statistics_methods.items() if defaults.get(k) is not v}
    if custom:
        state["statistics_methods"] = custom
    return state


#: Filled by :func:`import_mmdet`: the objects allow-listed for ``torch.load(weights_only=True)``.
SAFE_GLOBALS: list[Any] = []


def import_mmdet() -> dict[str, str]:
    """Import and prepare mmdet (idempotent); returns the versions. Raises MMDetUnavailable."""
    if _ready:
        return dict(_ready)
    with _lock:
        if _ready:
            return dict(_ready)
        torch = _import("torch")
        mmengine = _import("mmengine")
        mmcv = _import("mmcv")
        _import("mmcv.ops")  # compiled: fails when mmcv was built without ops or for another torch
        mmdet = _import("mmdet")
        from mmdet.utils import register_all_modules

        register_all_modules(init_default_scope=True)
        if not SAFE_GLOBALS:
            SAFE_GLOBALS.extend(safe_globals())
            torch.serialization.add_safe_globals(SAFE_GLOBALS)
        from mmengine.logging.history_buffer import HistoryBuffer

        HistoryBuffer.__getstate__ = _history_buffer_getstate  # fix 2
        versions = {"torch": torch.__version__, "mmengine": mmengine.__version__, "mmcv": mmcv.__version__,
                    "mmdet": mmdet.__version__}
        off = {k: v for k, v in versions.items() if k in VERSIONS and v != VERSIONS[k]}
        if off:
            log.warning("MMDetection packages differ from the tested versions %s: %s", VERSIONS, off)
        _ready.update(versions)
        log.debug("mmdet ready: %s", versions)
        return dict(_ready)


prepare = import_mmdet

"""The project's own exception types.

Every failure a user can cause (a bad file, a missing device, a wrong model, a full disk) is raised
as one of these, with a message that names the thing and says what to do. The command line prints
``endoview: error: <message>`` and exits non-zero; the GUI shows the message. Anything else that
escapes is a bug.
"""

from __future__ import annotations


class EndoviewError(Exception):
    """Base class: a problem the user can act on. ``str(err)`` is the one-line message."""

    exit_code = 1


class SourceError(EndoviewError):
    """A video file, image folder or capture device cannot be opened or read."""


class DeviceLostError(SourceError):
    """A capture device stopped delivering frames (unplugged, switched off, driver error)."""


class ContentAreaError(EndoviewError):
    """An image cannot be analysed for its visible field (wrong shape or dtype)."""


class BundleError(EndoviewError):
    """A model bundle is missing, incomplete, tampered with or inconsistent with its manifest."""


class BackendError(EndoviewError):
    """An inference backend is not installed, cannot load a model or fails while running it."""


class BackendUnavailable(BackendError):
    """The requested backend's libraries (or its device) are not present on this machine."""


class ExportError(EndoviewError):
    """An annotated clip or log cannot be written (output exists, folder not writable, disk full)."""


class OutputExistsError(ExportError):
    """The output file exists and ``--force`` was not given."""


class PipelineError(EndoviewError):
    """A pipeline stage failed; the message names the stage and the cause."""


class ExtraMissingError(EndoviewError):
    """An optional feature needs a package of an extra that is not installed (the message names
    the install command)."""


#: a third-party module that only an optional extra installs -> the extras that bring it (pyproject.toml)
EXTRAS_FOR_MODULE = {
    "torch": "train", "torchvision": "train", "matplotlib": "train",
    "mmdet": "train,seg", "mmcv": "train,seg", "mmengine": "train,seg", "pycocotools": "train,seg",
    "ray": "batch", "pyarrow": "batch",
    "tensorrt": "gpu", "pycuda": "gpu",
}


def install_hint(extras: str) -> str:
    """What to run to get the optional ``extras`` ("train,seg"): the exact command of this project.
    It builds (once) a separate environment with them and prints the path of its ``endoview``."""
    return f"run 'EXTRAS={extras} bash scripts/install.sh' in the endoview checkout and use the endoview it prints"

"""train/'s own errors: user problems reported by the CLI as one line (``endoview: error: ...``)."""

from __future__ import annotations

from engine.errors import EndoviewError


class TrainError(EndoviewError):
    """A training, evaluation or export run cannot go on (bad option, run folder, checkpoint, weights)."""


class DataError(TrainError):
    """The dataset is missing, laid out wrongly, or disagrees with the split file."""


class FetchError(DataError):
    """A dataset download or unpack failed (network, checksum, archive)."""

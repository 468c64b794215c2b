"""Domain errors of the ML core. Each carries a machine ``code`` and a message that says the fix."""

from __future__ import annotations


class MLError(Exception):
    """Base class: ``code`` is a stable snake_case name, ``str(err)`` says what to do."""

    code = "ml_error"


class UnknownBackboneError(MLError, ValueError):
    code = "unknown_backbone"


class WeightsUnavailableError(MLError, RuntimeError):
    code = "weights_unavailable"


class InvalidImageError(MLError, ValueError):
    code = "invalid_image"


class InvalidDatasetError(MLError, ValueError):
    code = "invalid_dataset"


class CheckpointError(MLError, ValueError):
    code = "invalid_checkpoint"


class TrainingCancelled(MLError):
    code = "cancelled"


class UnsupportedFormatError(InvalidImageError):
    code = "unsupported_format"


class ImageTooLargeError(InvalidImageError):
    code = "image_too_large"

"""Errors meant for users.

Every error that bad input can cause derives from :class:`YofoError`. The command line prints such an
error as one line (``error: <message>``) and exits with code 2; anything else is a bug and keeps its
traceback. Messages name the file and the field and say what was expected, e.g.
``DatasetError: meta_expressions.json: video '0062f687f1' expression '3' has no obj_id``.
"""

from __future__ import annotations


class YofoError(Exception):
    """Base class of every user-facing error."""


class ConfigError(YofoError, ValueError):
    """A configuration file or ``key=value`` override is invalid."""


class InputError(YofoError, ValueError):
    """A tensor, text or argument passed to the library has the wrong form."""


class DatasetError(YofoError):
    """A dataset file is missing or malformed."""


class CheckpointError(YofoError):
    """A checkpoint is missing, not a yofo checkpoint, or incompatible."""


class VideoError(YofoError):
    """A video or image input cannot be read or written."""


class TrainingError(YofoError):
    """Training cannot go on (a non-finite loss); the last good checkpoint is kept."""

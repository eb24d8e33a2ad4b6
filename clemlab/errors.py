"""Exceptions a user can cause, each with a message that says what to do.

Every error that bad input can trigger derives from :class:`ClemlabError` and from the
builtin that fits (``ValueError`` for bad values, ``OSError`` for files), so callers can
catch either.
"""

from __future__ import annotations

__all__ = [
    "ClemlabError",
    "ImageError",
    "UnitError",
    "MissingPixelSizeError",
    "FileFormatError",
    "FileExistsRefusedError",
    "LandmarkError",
    "RegistrationError",
    "TransformError",
]


class ClemlabError(Exception):
    """Base class of every error clemlab raises on user input."""


class ImageError(ClemlabError, ValueError):
    """An image (array, dims, coordinates, pixel size) is not usable as given."""


class UnitError(ImageError):
    """A physical unit string is not known."""


class MissingPixelSizeError(ImageError):
    """A file or array carries no physical pixel size; pass ``pixel_size=``."""


class FileFormatError(ClemlabError, OSError):
    """A file is missing, unreadable, truncated or of an unknown format."""

    def __init__(self, message: str):
        # OSError's two-argument form would reorder the message; keep it a plain message.
        super().__init__(message)

    def __str__(self) -> str:  # OSError formats (errno, strerror) pairs otherwise
        return str(self.args[0]) if self.args else ""


class FileExistsRefusedError(FileFormatError, FileExistsError):
    """A writer was asked to replace an existing file or store without ``overwrite=True``, or to
    replace one of another format than it writes; the existing one is kept untouched."""


class LandmarkError(ClemlabError, ValueError):
    """A landmark table or landmark file is malformed."""


class RegistrationError(ClemlabError, ValueError):
    """Landmarks do not support the requested transform model."""


class TransformError(ClemlabError, ValueError):
    """A transform cannot be built, composed or applied as asked."""

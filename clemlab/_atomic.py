"""Atomic file writes: a temporary file in the target folder, then ``os.replace``.

A reader never sees a half-written file, and a failed write leaves the old file intact.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import FileFormatError


def check_writable(path: str | os.PathLike) -> Path:
    """Check that ``path``'s folder exists and accepts new files; return ``Path(path)``.

    Raises :class:`FileFormatError` naming the folder, so a caller can fail at set-up time
    rather than when the first edit is saved.
    """
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise FileFormatError(f"cannot write {p}: folder {folder} does not exist; create it first")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{p.name}.", suffix=".check")
    except OSError as exc:
        raise FileFormatError(
            f"cannot write {p}: folder {folder} is not writable ({exc.strerror}); choose another path"
        ) from None
    os.close(fd)
    os.unlink(tmp)
    return p


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` to produce the file, then move it over ``path`` atomically.

    Parameters
    ----------
    path : path-like
        Final destination.
    write : callable
        Writes the whole file to the temporary path it is given.
    """
    p = check_writable(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent if str(p.parent) else ".", prefix=f".{p.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes owner-only files; give the result the old file's mode, or rw-r--r--
        os.chmod(tmp, p.stat().st_mode & 0o777 if p.exists() else 0o644)
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, flushed to disk before the rename."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    return atomic_write(path, write)

"""Atomic file writes: the one helper every clemlab writer uses.

A file is written whole under a temporary name in its destination folder, flushed to disk,
then moved onto its name in one step (``os.replace``, or ``os.link`` where an existing file
must not be replaced). A reader never sees a half-written file, and a write that fails or is
interrupted leaves the old file (if any) as it was and no temporary file behind. A writer
killed outright (SIGKILL) cannot clean up: its temporary, named with its process id, is
removed by the next write to the same path.

Permissions. The result has the permissions a plain ``open(path, "w")`` would give it:

- a new file gets ``0o666`` less the process umask (and the folder's default ACL, where one
  is set). The temporary file is created with ``os.open(..., 0o666)``, so the operating system
  applies the umask (or ACL) itself at creation. This reads no umask: ``os.umask`` can only
  be read by setting it, a process-wide change other threads would see meanwhile, and
  ``/proc/self/status`` exists on Linux only; nor does it depend on the umask staying what
  it was when clemlab was imported.
- a file that replaces another keeps the permission bits of the file it replaces.

``tempfile.mkstemp`` is not used for the temporary file: it creates owner-only (0600) files,
which would have to be widened afterwards by guessing the umask.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from .errors import FileExistsRefusedError, FileFormatError

__all__ = ["FileExistsRefusedError", "atomic_write", "atomic_write_text", "check_writable", "FORMATS"]


def _strip_text_start(head: bytes) -> bytes:
    return head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")


def _is_text(head: bytes) -> bool:
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut by the sniffed length is still text
        return exc.start >= len(head) - 3
    return True


#: What each writer's format looks like in its first bytes: ``overwrite=True`` replaces only a
#: file that already looks like the format being written (an empty file always may be replaced).
FORMATS = {
    "TIFF": lambda h: h[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"),
    "PNG": lambda h: h.startswith(b"\x89PNG\r\n\x1a\n"),
    "JSON": lambda h: _is_text(h) and _strip_text_start(h)[:1] in (b"{", b"["),
    "XML": lambda h: _is_text(h) and _strip_text_start(h)[:1] == b"<",
    "CSV": _is_text,
    "text": _is_text,
    "SerialEM navigator": lambda h: _is_text(h) and (_strip_text_start(h)[:11].lower() == b"adocversion"
                                                    or _strip_text_start(h)[:1] == b"<"),
}

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)


def _destination(path: str | os.PathLike) -> Path:
    """``path`` as a Path; a symbolic link stands for the file it points to (as for ``open``)."""
    p = Path(path)
    return Path(os.path.realpath(p)) if p.is_symlink() else p


def _folder(p: Path) -> Path:
    return p.parent if str(p.parent) else Path(".")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only (POSIX)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _remove_stale_temporaries(p: Path) -> None:
    """Delete temporaries of ``p`` left by writers that were killed (SIGKILL, power loss): their
    names carry the writer's process id, and that process no longer exists. POSIX only (on
    Windows, signal 0 is not an existence check)."""
    if os.name != "posix":
        return
    prefix = f".{p.name}."
    try:
        names = os.listdir(_folder(p))
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid = name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            try:
                os.unlink(os.path.join(_folder(p), name))
            except OSError:
                pass


def _create_temp(p: Path, suffix: str) -> str:
    """Create an empty, closed file beside ``p`` with mode 0o666 less the umask; its path.
    The name carries this process's id (see :func:`_remove_stale_temporaries`)."""
    folder = _folder(p)
    for _ in range(100):
        tmp = os.path.join(folder, f".{p.name}.{os.getpid()}-{secrets.token_hex(6)}{suffix}")
        try:
            fd = os.open(tmp, _CREATE_FLAGS, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileFormatError(f"cannot write {p}: no free temporary name in {folder}")  # pragma: no cover


def _exists_error(p: Path) -> FileExistsRefusedError:
    return FileExistsRefusedError(f"{p} exists; pass overwrite=True to replace it (--overwrite on the "
                                  "command line), or choose another path")


def _check_same_format(p: Path, fmt: str | None) -> None:
    """Refuse to replace an existing non-empty file that does not look like ``fmt``."""
    if fmt is None or not p.is_file():
        return
    with open(p, "rb") as fh:
        head = fh.read(512)
    if head and not FORMATS[fmt](head):
        raise FileExistsRefusedError(
            f"{p} exists and is not a {fmt} file; overwrite=True replaces only a file of the format being "
            "written, so this one is kept: choose another path, or move it away first"
        )


def check_writable(path: str | os.PathLike, *, overwrite: bool = True, fmt: str | None = None) -> Path:
    """Check that ``path`` can be written; return ``Path(path)``.

    Parameters
    ----------
    path : path-like
        The file to be written.
    overwrite : bool
        If False, an existing ``path`` is refused.
    fmt : str, optional
        A key of :data:`FORMATS`: an existing non-empty ``path`` that does not look like it is
        refused even with ``overwrite=True``.

    Raises
    ------
    FileFormatError
        Naming the problem and the fix: the folder is missing or not writable, ``path`` is a
        folder, or it exists and ``overwrite`` is False (then a :class:`FileExistsRefusedError`,
        also a ``FileExistsError``), or it is a file of another format. Callers check at set-up time, so a
        long computation is not lost to a path that cannot be written.
    """
    p = _destination(path)
    folder = _folder(p)
    if not folder.is_dir():
        raise FileFormatError(f"cannot write {p}: folder {folder} does not exist; create it first")
    if p.is_dir():
        raise FileFormatError(f"cannot write {p}: it is a folder; give a file name")
    if not overwrite and os.path.lexists(p):
        raise _exists_error(p)
    _check_same_format(p, fmt)
    try:
        probe = _create_temp(p, ".check")
    except OSError as exc:
        raise FileFormatError(
            f"cannot write {p}: folder {folder} is not writable ({exc.strerror}); choose another path"
        ) from None
    os.unlink(probe)
    return Path(path)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: str, p: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` onto ``p`` in one step."""
    if overwrite:
        if p.exists():
            os.chmod(tmp, stat.S_IMODE(p.stat().st_mode))
        os.replace(tmp, p)
        return
    try:
        os.link(tmp, p)  # atomic and never replaces: fails if p appeared meanwhile
    except FileExistsError:
        raise _exists_error(p) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # a file system without hard links: check, then rename (a file created in between is lost)
        if os.path.lexists(p):
            raise _exists_error(p) from None
        os.replace(tmp, p)
    else:
        os.unlink(tmp)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *, overwrite: bool = True,
                 fmt: str | None = None) -> Path:
    """Call ``write(tmp_path)`` to produce the file, then move it onto ``path`` atomically.

    Parameters
    ----------
    path : path-like
        Final destination (a symbolic link is followed: the file it points to is replaced).
    write : callable
        Writes the whole file to the temporary path it is given (an existing, empty file in
        the destination folder).
    overwrite : bool
        If False, an existing ``path`` is refused before ``write`` is called, and the final
        step never replaces a file that appeared meanwhile. Public writers pass the user's
        choice, which defaults to False there.
    fmt : str, optional
        The format written, a key of :data:`FORMATS` (see :func:`check_writable`).

    Returns
    -------
    pathlib.Path
        ``Path(path)``.

    Raises
    ------
    FileFormatError
        See :func:`check_writable`; whatever ``write`` raises passes through, with the
        temporary file removed and the old file untouched.
    """
    check_writable(path, overwrite=overwrite, fmt=fmt)
    p = _destination(path)
    _remove_stale_temporaries(p)
    tmp = _create_temp(p, ".tmp")
    try:
        write(tmp)
        _fsync(tmp)
        _publish(tmp, p, overwrite)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = True,
                      fmt: str | None = "text") -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically; see :func:`atomic_write`."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)

    return atomic_write(path, write, overwrite=overwrite, fmt=fmt)

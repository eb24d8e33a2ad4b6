"""Autosave shared between processes: a lock around each save and a merge of concurrent edits.

Two pickers (two Jupyter kernels, say) may autosave the same landmarks file. Each save takes
an exclusive lock (the ``filelock`` library: ``fcntl`` on POSIX, ``msvcrt`` on Windows), reads
the file, and when another process changed it since this one last read or wrote it, merges
the two sets of edits before writing, so no click of either side is lost:

- a pair this side added is appended (renamed when the other side added a different pair
  under the same name);
- a pair this side moved or switched keeps this side's values;
- a pair this side deleted is deleted, unless the other side changed it meanwhile (then the
  other side's version stays: a deletion never discards someone else's edit);
- everything else is the file's content, i.e. the other side's edits.

Each autosaving table also holds a *session* lock for its lifetime, so the second one to open
a file is told that another one is writing to it.
"""

from __future__ import annotations

import os
import warnings
import weakref
from pathlib import Path

import pandas as pd
from filelock import FileLock, Timeout

from .errors import FileFormatError

__all__ = ["AutosaveLock", "merge_tables", "same_table"]

#: Seconds a save waits for another process's save to finish before giving up with an error.
LOCK_TIMEOUT_S = 30.0


def _lock_path(path: Path, kind: str) -> str:
    return os.path.join(path.parent, f".{path.name}.{kind}.lock")


def _rows(table: pd.DataFrame) -> dict[str, tuple]:
    """``{name: row values}`` in table order."""
    return {str(rec[0]): tuple(rec) for rec in table.itertuples(index=False)}


def same_table(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Same columns and the same rows in the same order (dtypes of empty tables aside)."""
    return list(a.columns) == list(b.columns) and list(_rows(a).items()) == list(_rows(b).items())


def _free_name(taken: set[str]) -> str:
    i = len(taken) + 1
    while f"P{i}" in taken:
        i += 1
    return f"P{i}"


def merge_tables(base: pd.DataFrame, ours: pd.DataFrame, theirs: pd.DataFrame) -> pd.DataFrame:
    """Three-way merge of landmark tables by pair name (see the module docstring).

    Parameters
    ----------
    base : pandas.DataFrame
        The table as this side last read or wrote the file.
    ours : pandas.DataFrame
        This side's table now (``base`` plus this side's edits).
    theirs : pandas.DataFrame
        The file's content now (``base`` plus the other side's edits).

    Returns
    -------
    pandas.DataFrame
        Columns of ``ours``; rows of ``theirs`` with this side's edits applied.
    """
    cols = list(ours.columns)
    theirs = theirs.reindex(columns=cols, fill_value=0.0)
    base = base.reindex(columns=cols, fill_value=0.0)
    b, o, merged = _rows(base), _rows(ours), _rows(theirs)
    for name, row in o.items():
        if name not in b:  # added here
            if name in merged and merged[name][1:] != row[1:]:
                new = _free_name(set(merged) | set(o))
                merged[new] = (new, *row[1:])
            else:
                merged[name] = row
        elif row != b[name]:  # changed here (re-added if the other side deleted it)
            merged[name] = row
    for name in set(b) - set(o):  # deleted here
        if name in merged and merged[name] == b[name]:
            del merged[name]
    return pd.DataFrame(list(merged.values()), columns=cols)


class AutosaveLock:
    """The locks of one autosave file: a session lock held while a table autosaves to it, and
    a save lock held during each read-merge-write.

    Parameters
    ----------
    path : path-like
        The autosave file. The lock files sit beside it, hidden: ``.NAME.session.lock`` goes
        when the table is released; ``.NAME.save.lock`` stays (removing a lock file that others
        may be waiting on would let two writers in at once).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._save = FileLock(_lock_path(self.path, "save"), timeout=LOCK_TIMEOUT_S, thread_local=False)
        self._session = FileLock(_lock_path(self.path, "session"), timeout=0, thread_local=False)
        try:
            self._session.acquire()
            self.shared = False
            # at garbage collection or interpreter exit: the session lock file goes with the lock
            self._finalizer = weakref.finalize(self, _end_session, self._session)
        except Timeout:
            self.shared = True
            warnings.warn(
                f"another picker or process is already autosaving to {self.path}; both write to it and their "
                "edits are merged, so no click is lost, but each side sees the other's pairs only after its "
                "next edit (or Landmarks.read of the file). Use another autosave path to keep them apart.",
                UserWarning, stacklevel=4,
            )

    def __enter__(self) -> AutosaveLock:
        try:
            self._save.acquire()
        except Timeout:
            raise FileFormatError(
                f"cannot autosave {self.path}: another process has held its lock "
                f"({self._save.lock_file}) for over {LOCK_TIMEOUT_S:g} s; if no other clemlab is running, "
                "delete that lock file"
            ) from None
        return self

    def __exit__(self, *exc) -> None:
        self._save.release()

    def close(self) -> None:
        """Release the session lock (also done when the object is garbage-collected)."""
        _end_session(self._session)


def _end_session(lock: FileLock) -> None:
    """Remove the session lock file, then release it. Removing it first is safe: the session
    lock is only ever tried without waiting, so at worst a picker opening the file at that
    instant is told about a writer that is just leaving."""
    if lock.is_locked:
        try:
            os.unlink(lock.lock_file)
        except OSError:
            pass
        lock.release()

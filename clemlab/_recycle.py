"""Large arrays whose memory is handed to the next request once they are garbage.

Memory a process touches for the first time is expensive on virtual machines: the kernel
zeroes every fresh page and the hypervisor backs it (measured on the project's 2-core
machines: 0.2 to 3 ms per MB, as much as resampling the same pixels). A lazy warp or read
allocates one chunk-sized array per task and drops it a few tasks later, so instead of
returning those pages to the system (glibc does for blocks above its mmap threshold) and
faulting fresh ones in again, :func:`empty` takes the memory from a small pool of anonymous
mappings and puts it back when the array and every view of it are gone.

How it stays safe: the array handed out is a view of a private anonymous ``mmap`` made by
``numpy.frombuffer``; numpy stops collapsing view chains at an array whose base is not an
array, so every slice, reshape or dtype view of it keeps that one array alive (its ``.base``;
tested), and the mapping returns to the pool only from that array's ``weakref.finalize``
callback. Up to :data:`KEEP_BYTES` of free mappings are kept; beyond that they are released.
Mappings are made 1/16 larger than asked and serve any request up to 1/8 smaller, so a chunk
file read (the chunk plus a codec header) and a decoded chunk share them.
Arrays under :data:`MIN_BYTES` come from ``numpy.empty`` (malloc reuses those cheaply).
"""

from __future__ import annotations

import mmap
import os
import threading
import weakref
from typing import Any

import numpy as np

__all__ = ["empty", "with_lead", "MIN_BYTES", "KEEP_BYTES"]

#: Arrays smaller than this come from numpy.empty.
MIN_BYTES = 1 << 20
#: Free memory kept for reuse (bytes): 256 MiB, or 1/16 of the machine's memory if less.
KEEP_BYTES = 256 * 2**20
try:
    KEEP_BYTES = min(KEEP_BYTES, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 16)
except (AttributeError, ValueError, OSError):  # no sysconf (Windows): keep the default
    pass

_LOCK = threading.RLock()  # re-entrant: a finalizer may run inside a locked section (gc)
_FREE: dict[int, list] = {}
_FREE_BYTES = [0]
_LEAD: dict[int, int] = {}  # id(owner array) -> bytes reserved before it, for with_lead


def _after_fork() -> None:  # a lock held by another thread at fork time would never be released
    global _LOCK
    _LOCK = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _new_mapping(size: int) -> mmap.mmap:
    flags = getattr(mmap, "MAP_PRIVATE", None)
    if flags is not None and hasattr(mmap, "MAP_ANONYMOUS"):
        return mmap.mmap(-1, size, flags=flags | mmap.MAP_ANONYMOUS)
    return mmap.mmap(-1, size)


def _give_back(mapping: mmap.mmap, size: int, key: int) -> None:
    with _LOCK:
        _LEAD.pop(key, None)
        if _FREE_BYTES[0] + size <= KEEP_BYTES:
            _FREE.setdefault(size, []).append(mapping)
            _FREE_BYTES[0] += size
    # otherwise the mapping is dropped here and unmapped once the array's buffer is released


def empty(shape: Any, dtype: Any, lead: int = 0) -> np.ndarray:
    """An uninitialised writable C-contiguous array, on recycled memory when it is large.

    Parameters
    ----------
    shape : int or tuple of int
        Array shape.
    dtype : numpy dtype
        Element type.
    lead : int
        Bytes reserved before the array in its (page-aligned) mapping, for :func:`with_lead`
        (e.g. a 16-byte codec header written in front of the data); a multiple of 16.

    Returns
    -------
    numpy.ndarray
        Like ``numpy.empty(shape, dtype)``; contents undefined.
    """
    dtype = np.dtype(dtype)
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(n) for n in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes < MIN_BYTES or dtype.hasobject:
        return np.empty(shape, dtype)
    if lead < 0 or lead % 16:
        raise ValueError(f"lead must be a non-negative multiple of 16 bytes, got {lead}")
    size = -(-(nbytes + lead) // mmap.PAGESIZE) * mmap.PAGESIZE
    mapping = None
    with _LOCK:
        # the exact size, else the smallest free mapping up to 1/8 larger (a chunk file read
        # with its codec header, say, takes the memory of a decoded chunk)
        fits = [n for n, free in _FREE.items() if free and size <= n <= size + size // 8]
        if fits:
            size = size if size in fits else min(fits)
            mapping = _FREE[size].pop()
            _FREE_BYTES[0] -= size
    if mapping is None:  # 1/16 headroom, so slightly larger requests (a codec header more) fit later
        size = -(-(size + size // 16) // mmap.PAGESIZE) * mmap.PAGESIZE
        mapping = _new_mapping(size)
    owner = np.frombuffer(mapping, np.uint8, nbytes, lead)  # .base: the mapping; views keep `owner` alive
    if lead:
        with _LOCK:
            _LEAD[id(owner)] = lead
    weakref.finalize(owner, _give_back, mapping, size, id(owner))
    return owner.view(dtype).reshape(shape)


def with_lead(arr: np.ndarray, n: int) -> memoryview | None:
    """The ``n`` bytes reserved before ``arr`` followed by ``arr``'s own bytes, as one buffer.

    Only for a whole array made by :func:`empty` with ``lead >= n`` (any reshape or dtype view
    of it); the buffer then starts ``lead - n`` bytes into a page-aligned mapping. None for
    anything else (slices, copies, other arrays). ``arr`` must be kept alive while the buffer
    is in use.
    """
    owner = arr.base
    if not isinstance(owner, np.ndarray) or not arr.flags.c_contiguous or arr.nbytes != owner.nbytes:
        return None
    with _LOCK:
        lead = _LEAD.get(id(owner))
    if lead is None or lead < n or arr.ctypes.data != owner.ctypes.data:
        return None
    return owner.base[lead - n : lead + owner.nbytes]  # owner.base: a memoryview of the whole mapping


def pool_bytes() -> int:
    """Bytes of free memory currently kept for reuse."""
    with _LOCK:
        return _FREE_BYTES[0]

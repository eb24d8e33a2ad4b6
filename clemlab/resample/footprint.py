"""The source footprint of an output chunk: the region of the source that chunk reads,
assembled from the dask blocks that cover it, in a per-thread scratch buffer.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

#: Bytes of scratch buffers each thread keeps for reuse, all keys together. A request that
#: would take a thread above it gets a fresh array that is not kept.
SCRATCH_BYTES_PER_THREAD = 64 * 2**20
_SCRATCH = threading.local()  # .buffers: {key: uint8 buffer}, per thread


def source_bounds(points: np.ndarray, margin: float, src_shape: tuple) -> tuple[list, list]:
    """The source index range ``[lo, hi)`` per axis that an output region reads: ``margin`` px
    beyond the source positions ``points`` (N, D) of its samples, clipped to the image of
    ``src_shape``; the whole image where a position is not finite (a projective horizon
    crosses the region)."""
    lo, hi = regions_bounds(np.asarray(points)[None], margin, src_shape)
    return lo[0].tolist(), hi[0].tolist()


def regions_bounds(points: np.ndarray, margin: float, src_shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """:func:`source_bounds` of many regions at once: ``points`` (R, N, D) -> ``lo``, ``hi`` (R, D) int64."""
    src = np.asarray(src_shape, np.int64)
    finite = np.isfinite(points).all(axis=(1, 2))[:, None]
    with np.errstate(invalid="ignore"):
        lo = np.where(finite, np.maximum(0, np.floor(points.min(axis=1) - margin)), 0).astype(np.int64)
        hi = np.where(finite, np.minimum(src, np.ceil(points.max(axis=1) + margin) + 1), src).astype(np.int64)
    return lo, hi


def _scratch(key: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A per-thread reusable work buffer of ``shape`` (contents undefined).

    Memory a process touches for the first time is expensive, on virtual machines most (the
    kernel zeroes every fresh page and the hypervisor backs it), and every output chunk would
    otherwise take fresh buffers for its source footprint and its coordinate maps. Each thread
    keeps one buffer per ``key``, at most :data:`SCRATCH_BYTES_PER_THREAD` bytes for all keys
    together, for as long as the thread lives (dask's worker threads: the process). A task
    uses the buffers only while it runs and returns none of them, and different buffers of one
    task take different keys.
    """
    dtype = np.dtype(dtype)
    n = math.prod(shape) * dtype.itemsize
    buffers = getattr(_SCRATCH, "buffers", None)
    if buffers is None:
        buffers = _SCRATCH.buffers = {}
    buf = buffers.get(key)
    if buf is None or buf.nbytes < n:
        others = sum(b.nbytes for k, b in buffers.items() if k != key)
        if others + n > SCRATCH_BYTES_PER_THREAD:
            return np.empty(shape, dtype)
        buf = buffers[key] = np.empty(max(n, 1), np.uint8)
    return buf[:n].view(dtype).reshape(shape)


def _assemble(blocks: list, starts: list, lo: tuple[int, ...], hi: tuple[int, ...], nlead: int) -> np.ndarray:
    """Cut the region ``[lo, hi)`` (spatial, global source indices) out of source blocks.

    ``blocks`` are arrays ``(lead..., spatial...)`` whose spatial part starts at ``starts[i]``.
    """
    if len(blocks) == 1:
        b, s = np.asarray(blocks[0]), starts[0]
        sl = tuple(slice(l - o, h - o) for l, h, o in zip(lo, hi, s))
        return b[(Ellipsis,) + sl]
    rows = _RowAssembly(blocks, starts, lo, hi, nlead)
    rows(hi[0] - lo[0])
    return rows.out


class _RowAssembly:
    """The region ``[lo, hi)`` of source blocks (see :func:`_assemble`) in a per-thread scratch
    buffer, filled in rows of its first spatial axis on request.

    Cells (:func:`clemlab.resample.kernel._warp_cells`) fill the rows each needs just before
    warping it, so the rows copied from the blocks are still in the core's cache when OpenCV
    reads them: cells, which read the source in many small pieces, suffer more than one whole
    warp from a source that is not in cache.
    """

    def __init__(self, blocks: list, starts: list, lo: tuple[int, ...], hi: tuple[int, ...], nlead: int):
        self.blocks, self.starts, self.lo, self.hi = [np.asarray(b) for b in blocks], starts, lo, hi
        shape = tuple(h - l for l, h in zip(lo, hi))
        first = self.blocks[0]
        self.out = _scratch("footprint", first.shape[:nlead] + shape, first.dtype)  # consumed by _resample only
        self.nlead, self.done = nlead, 0

    def __call__(self, upto: int) -> None:
        """Make sure rows ``[0, upto)`` (relative to ``lo``) are filled."""
        upto = min(int(upto), self.hi[0] - self.lo[0])
        if upto <= self.done:
            return
        lo = (self.lo[0] + self.done,) + tuple(self.lo[1:])
        hi = (self.lo[0] + upto,) + tuple(self.hi[1:])
        for b, s in zip(self.blocks, self.starts):
            src_sl, dst_sl = [], []
            for l, h, o, n, l0 in zip(lo, hi, s, b.shape[self.nlead:], self.lo):
                a0, a1 = max(l, o), min(h, o + n)
                if a0 >= a1:
                    break
                src_sl.append(slice(a0 - o, a1 - o))
                dst_sl.append(slice(a0 - l0, a1 - l0))
            else:
                self.out[(Ellipsis,) + tuple(dst_sl)] = b[(Ellipsis,) + tuple(src_sl)]
        self.done = upto


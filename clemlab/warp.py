"""Resampling an image onto another grid, lazily and chunk by chunk, and :func:`correlate`.

``warp(image, transform, like=target)`` puts ``image`` (in the transform's source frame) onto
the pixel grid of ``target`` (in the transform's target frame). The transform maps points
forward (source -> target); the resampler pulls each output pixel from the source through the
inverse, so users never choose a direction.

The engine builds one dask task per output chunk. At graph-construction time each chunk's
footprint (its corners for affine maps, a dense sample of its boundary and interior for
others) is mapped through the inverse transform; the task then receives only the source
chunks that cover that footprint, assembles them and resamples. Non-linear maps resampled by
OpenCV get one more task per group of 4 x 4 output chunks that plans them (:func:`_plan`:
affine cells or coarse nodes, below), shared by all channels:

- 2-D, order 0/1, dtypes uint8, uint16, int16, float32: OpenCV (``cv2.warpAffine`` /
  ``cv2.warpPerspective`` with ``WARP_INVERSE_MAP`` and a chunk-relative matrix). Non-linear
  maps (thin-plate splines, ...) are smooth, so each chunk is first tiled with cells (a
  quadtree from 512 px, at most one OpenCV call per 128² px on average) on which the map is affine
  to within :func:`map_tolerance`, checked on a 5 x 5 lattice per cell, and resampled with one
  ``cv2.warpAffine`` per cell (:func:`cell_affines`). Where that fails (near a spline's
  landmarks, where its curvature peaks), the map is evaluated exactly on a coarse node grid
  and bilinearly upsampled for ``cv2.remap``, a strip of rows at a time so the
  full-resolution map never exists (:func:`_remap_strips`): for the boxes the cells leave,
  or for the whole chunk when they leave more than half of it. The node spacing (120 px at
  most) shrinks until the deviation at every cell centre (where bilinear interpolation errs
  most for smooth maps) is within the tolerance. Measured with OpenCV 5.1, single-threaded,
  per 2048² uint8 chunk of ``benchmarks/bench_warp.py``'s spline: one affine warp 4.6 ms
  (5.2 ms with the source not in cache), its ~60 cells 5.6 ms (8.5 ms: cells suffer most
  from a cold source, so they run in raster order and the footprint is assembled row by row
  just ahead of them, :class:`_RowAssembly`), the remap path 12.2 ms (its map alone is 8
  bytes per pixel, written and read again).
  Sampled positions sit within :data:`POSITION_BOUND_PX` = 0.05 px of the exact transform:
  the tolerance is what is left of it after OpenCV's own sampling error, measured once per
  dtype (:func:`clemlab._opencv.sampling_error`: 0 for uint8, uint16 and float32 in
  OpenCV 5.1, which interpolate at the exact position, so the tolerance is 0.04 px; 1/64 px
  per axis for 1/32-px tables, which leave 0.0249 px), and after float32 rounding (tested
  for both paths).
- everything else (float64 and other dtypes, order >= 2, 3-D): ``scipy.ndimage`` on the same
  footprint, with exact float64 coordinates.

All matrices and coordinates are taken relative to the output chunk and to the footprint's
first source pixel, so stage coordinates of 10^5 µm keep sub-pixel exactness.

Memory: OpenCV writes each output chunk into memory from :mod:`clemlab._recycle` (pages reused
once the chunk is dropped, with 16 bytes free in front where the zarr writer puts a Blosc
header to send the chunk to disk without a copy); footprints and coordinate maps use per-thread
scratch buffers. OpenCV is imported through :mod:`clemlab._opencv` (idle pool threads sleep).

Pixel conventions: integer indices are pixel centres in both OpenCV and scipy. Inside the
source they agree to within 1 grey level (integer dtypes: both round; float32 to ~1e-4
relative); within one pixel of the source edge OpenCV blends with ``fill`` where scipy
(``mode="constant"``) returns ``fill`` outright.
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
import warnings
from typing import Any

import numpy as np
import xarray as xr

from . import _opencv, _recycle
from . import transforms as _tf
from .errors import ImageError
from .image import as_image, check_image

__all__ = ["warp", "correlate", "stack_channels", "map_tolerance", "POSITION_BOUND_PX", "DEFAULT_CHUNK"]

#: Bound (px) on the distance between the source position a warp through OpenCV or scipy
#: samples for an output pixel and the exact transform's (non-linear maps; see map_tolerance).
POSITION_BOUND_PX = 0.05
_FLOAT32_PX = 0.003  # float32 coordinates (a few ulps) in footprints up to _FOOTPRINT_SIDE = 8192 px
_MAP_TOLERANCE_MAX = 0.04  # a fifth of the bound kept for deviations between the points checked
#: Default output chunk side per spatial dim (2-D, 3-D).
DEFAULT_CHUNK = {2: 2048, 3: 128}
_CV_DTYPES = (np.uint8, np.uint16, np.int16, np.float32)
_CV_MAX_SIDE = 32767  # OpenCV's limit on image sides (SHRT_MAX)
_FOOTPRINT_SIDE = 8192  # default chunks shrink so that footprints stay below this side
#: node spacings tried (px), coarsest first: 8 x an odd number, so that upsampling the nodes
#: by g/8 and then by 8 is exact bilinear interpolation (see :func:`_remap_strips`), then 4, 2
_SPACINGS = (120, 56, 24, 8, 4, 2)
_SUB = 8  # second-stage upsampling factor of the coarse map (px)
_STRIP_ROWS = 256  # output rows per remap strip (its map, ~4 MB, stays in cache)
_PLAN_GROUP = 4  # non-linear maps: chunks are planned in groups of up to 4 x 4 (see _plan)
_CELL_MAX = 512  # largest cell of the piecewise-affine path for non-linear maps (px)
_CELL_MIN = 32  # smallest cell side (px)
#: OpenCV calls per chunk for the cells (and regions left to cv2.remap): one per this many
#: output px on average (256 per 2048² chunk), at least 4. Small cells cost more per pixel
#: (OpenCV 5.1, uint8, source in cache: 1.1 ns/px for 256² cells as for whole chunks, 1.4 for
#: 128², 2.0 for 64²), and each call hands the GIL over to the other dask thread.
_CELL_AREA = 128 * 128
_REMAP_SHARE = 0.5  # a chunk whose cells leave more than this share of it to cv2.remap is remapped whole
# a cell's 5 x 5 lattice in normalised coordinates (row, col in 0, 1/4, .., 1)
_LATTICE = np.linspace(0.0, 1.0, 5)
#: Bytes kept free in front of each output chunk's memory: room for a Blosc header, so the
#: zarr writer can send an incompressible chunk to disk with no copy (clemlab._recycle.with_lead)
_OUT_LEAD = 16
_SCRATCH_MAX = 64 * 2**20  # largest per-thread scratch buffer kept for reuse (bytes)
_SCRATCH = threading.local()


def _scratch(key: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A per-thread reusable work buffer of ``shape`` (contents undefined).

    Memory a process touches for the first time is expensive on virtual machines (measured on
    the project's 2-core machines: ~3 ms per MB, more than the interpolation that fills it), and
    every output chunk would otherwise take fresh buffers for its source footprint and its
    coordinate maps. The buffers live as long as the (dask worker) thread; each task uses
    them only while it runs and returns none of them. Above ``_SCRATCH_MAX`` a fresh array is
    returned instead.
    """
    dtype = np.dtype(dtype)
    n = math.prod(shape) * dtype.itemsize
    if n > _SCRATCH_MAX:
        return np.empty(shape, dtype)
    buf = getattr(_SCRATCH, key, None)
    if buf is None or buf.nbytes < n:
        buf = np.empty(max(n, 1), np.uint8)
        setattr(_SCRATCH, key, buf)
    return buf[:n].view(dtype).reshape(shape)


def map_tolerance(dtype: Any = None) -> float:
    """Largest deviation (px) allowed between a non-linear map as resampled (bilinear between
    coarse nodes, or affine per cell) and the exact transform.

    What is left of :data:`POSITION_BOUND_PX` (0.05 px) once OpenCV's sampling error for
    ``dtype`` (sqrt(2) x :func:`clemlab._opencv.sampling_error`, measured on the installed
    OpenCV) and 0.003 px for float32 coordinates are taken off, and at most 0.04 px. With
    OpenCV 5.1: 0.04 px for uint8, uint16 and float32, whose kernels sample at the exact
    position, 0.0249 px for int16, sampled to 1/32 px.

    Parameters
    ----------
    dtype : numpy dtype, optional
        The source dtype OpenCV resamples; None for exact sampling (scipy).

    Returns
    -------
    float
        Tolerance in source pixels.
    """
    sampling = 0.0 if dtype is None else math.sqrt(2) * _opencv.sampling_error(np.dtype(dtype))
    return min(_MAP_TOLERANCE_MAX, POSITION_BOUND_PX - _FLOAT32_PX - sampling)


def _as_transform(transform: Any) -> _tf.Transform:
    tf = getattr(transform, "transform", transform)  # a Registration carries one
    if not isinstance(tf, _tf.Transform):
        raise ImageError(f"transform must be a clemlab Transform or Registration, got {type(transform).__name__}")
    return tf


def _grid_matrix(img: xr.DataArray) -> np.ndarray:
    size, origin = img.clem._xyz()
    return _tf.index_to_physical_matrix(size, origin)


# ---------------------------------------------------------------------------------------
# the map from output array indices to source array indices
# ---------------------------------------------------------------------------------------
class _IndexMap:
    """Output array index ``(z, y, x)`` -> continuous source array index, exact (float64).

    ``matrix`` is the homogeneous index-to-index matrix for linear transforms (``None``
    otherwise); ``affine`` says whether its last row is ``(0, .., 0, 1)``.
    """

    def __init__(self, tf: _tf.Transform, src_m: np.ndarray, dst_m: np.ndarray):
        self.tf, self.src_m, self.dst_m = tf, src_m, dst_m
        self.inverse = tf.inverse  # built once: non-linear inverses may be costly to set up
        self._src_inv = np.linalg.inv(src_m)  # physical -> source index
        self.d = src_m.shape[0] - 1
        self.matrix = None
        self.affine = False
        if isinstance(tf, _tf.LinearTransform):
            self.matrix = np.linalg.inv(src_m) @ np.linalg.inv(tf.matrix) @ dst_m
            self.affine = bool(np.allclose(self.matrix[-1], np.eye(self.d + 1)[-1], atol=0, rtol=0))

    def __call__(self, idx: np.ndarray, start: Any = 0) -> np.ndarray:
        """Source indices (P, D) for output indices ``idx + start`` (P, D), array order."""
        idx = np.asarray(idx, np.float64)
        d = self.d
        if self.matrix is not None:
            m = self.matrix @ _shift(np.asarray(start, np.float64) * np.ones(d))
            h = idx @ m[:d, :d].T + m[:d, d]
            if not self.affine:
                w = idx @ m[d, :d] + m[d, d]
                h = h / w[:, None]
            return h
        glob = idx + start
        phys = glob @ self.dst_m[:d, :d].T + self.dst_m[:d, d]  # (P, D) in (x, y, z)
        src_phys = self.inverse(phys)
        inv = self._src_inv  # physical -> source index: the inverse of index_to_physical_matrix
        return src_phys @ inv[:d, :d].T + inv[:d, d]


def _shift(offset: np.ndarray) -> np.ndarray:
    d = offset.size
    m = np.eye(d + 1)
    m[:d, d] = offset
    return m


def _box_samples(shape: tuple[int, ...], dense: bool) -> np.ndarray:
    """Sample points (P, D) of the index box ``[0, n-1]`` per axis: corners, or a dense grid."""
    axes = []
    for n in shape:
        if dense:
            k = max(2, min(n, 9))
            axes.append(np.unique(np.linspace(0, n - 1, k)))
        else:
            axes.append(np.array([0.0, n - 1.0]))
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(shape))


# ---------------------------------------------------------------------------------------
# kernels (module-level functions: picklable for dask.distributed)
# ---------------------------------------------------------------------------------------
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

    Cells (:func:`_warp_cells`) fill the rows each needs just before warping it: rows copied
    from the blocks are still in the core's cache when OpenCV reads them (measured on 2048²
    uint8 chunks of the benchmark's spline with a source not in cache: 7.1-7.5 ms per chunk
    against 8.1-8.6 ms for assembling the whole footprint first).
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


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if values.dtype == dtype:  # OpenCV results: already rounded and saturated
        return values
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype, copy=False)


def node_positions(n: int, spacing: int) -> np.ndarray:
    """Positions of coarse-grid nodes along one axis of ``n`` output pixels.

    Node ``k`` sits at ``(k - 1) * g + (g - 1) / 2`` for ``k = 0 .. ceil(n / g) + 1``: the
    layout for which ``cv2.resize(..., INTER_LINEAR)`` by the factor ``g`` is exact bilinear
    interpolation, with one node beyond each end so no output pixel is extrapolated.
    """
    m = -(-n // spacing) + 2
    return (np.arange(m) - 1) * spacing + (spacing - 1) / 2


def _upsample(nodes: np.ndarray, spacing: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of node values ``(my, mx, C)`` to ``shape`` pixels (see node_positions)."""
    cv2 = _opencv.load()

    my, mx = nodes.shape[:2]
    full = cv2.resize(nodes, (mx * spacing, my * spacing), interpolation=cv2.INTER_LINEAR)
    if full.ndim == 2:
        full = full[..., None]
    return full[spacing : spacing + shape[0], spacing : spacing + shape[1]]


def _chunk_rows(*chunks: tuple) -> np.ndarray:
    """Chunks ``(start, shape, origin)`` of a 2-D output as the rows ``(n, 6)`` the planners take:
    first row, column, rows, columns, and the source origin row, column subtracted from the map."""
    return np.array([[*start, *shape, *origin] for start, shape, origin in chunks], np.float64)


def _coarse_nodes(index_map: _IndexMap, start: tuple[int, int], shape: tuple[int, int],
                  origin: np.ndarray, tol: float) -> tuple[np.ndarray, int, float]:
    """Exact source indices at the coarse nodes of a 2-D chunk (see :func:`coarse_map`).

    Returns the node values ``(my, mx, 2)`` (source ``(row, col)`` minus ``origin``, float64,
    laid out as :func:`node_positions`), the spacing and the error; for spacing 1 the values
    are those of the ``shape`` pixels themselves.
    """
    return _plan_nodes(index_map, _chunk_rows((start, shape, origin)), tol)[0]


def _plan_nodes(index_map: _IndexMap, chunks: np.ndarray, tol: float) -> list:
    """:func:`_coarse_nodes` of several chunks (rows of :func:`_chunk_rows`); every round of the
    spacing search evaluates the map once for all of them, and chunks of one shape and spacing
    share their node layout."""
    shapes = chunks[:, 2:4].astype(np.int64)
    spacing = np.full(len(chunks), _SPACINGS[0])
    result: list = [None] * len(chunks)
    todo = np.arange(len(chunks))
    while len(todo):
        g = np.maximum(1, np.minimum(spacing[todo], shapes[todo].max(axis=1)))
        layouts, kind = np.unique(np.c_[shapes[todo], g], axis=0, return_inverse=True)
        parts, meta = [], []
        for j, (hh, ww, gj) in enumerate(layouts.tolist()):
            sel = todo[kind.ravel() == j]
            ry, rx = node_positions(hh, gj), node_positions(ww, gj)
            pts = np.stack(np.meshgrid(ry, rx, indexing="ij"), axis=-1).reshape(-1, 2)
            cy = cx = np.empty(0)  # cell centres, where the nodes are checked (g = 1: every pixel, exact)
            if gj > 1:
                cy, cx = (ry[:-1] + ry[1:]) / 2, (rx[:-1] + rx[1:]) / 2
                pts = np.concatenate([pts, np.stack(np.meshgrid(cy, cx, indexing="ij"), axis=-1).reshape(-1, 2)])
            parts.append((pts[None] + chunks[sel, None, :2]).reshape(-1, 2))
            meta.append((sel, gj, (hh, ww), (ry.size, rx.size), (cy.size, cx.size), len(pts)))
        both = index_map(np.concatenate(parts), 0)  # absolute output indices: one evaluation per round
        left, k = [], 0
        for sel, gj, (hh, ww), (ny, nx), (my, mx), npts in meta:
            block = both[k : k + len(sel) * npts].reshape(len(sel), npts, 2) - chunks[sel, None, 4:]
            k += len(sel) * npts
            vals = block[:, : ny * nx].reshape(len(sel), ny, nx, 2)
            if gj == 1:
                for t, i in enumerate(sel):
                    result[i] = (vals[t, 1 : 1 + hh, 1 : 1 + ww], 1, 0.0)
                continue
            exact = block[:, ny * nx :].reshape(len(sel), my, mx, 2)
            interp = (vals[:, :-1, :-1] + vals[:, 1:, :-1] + vals[:, :-1, 1:] + vals[:, 1:, 1:]) / 4
            err = np.linalg.norm(exact - interp, axis=-1).reshape(len(sel), -1).max(axis=1)  # NaN stays
            for t, i in enumerate(sel):
                e = float(err[t])
                if e <= tol:
                    result[i] = (vals[t], gj, e)
                    continue
                left.append(i)
                if gj <= _SPACINGS[-1]:  # the finest spacing is still too coarse: evaluate every pixel
                    spacing[i] = 1
                else:  # bilinear error grows as g^2: jump to the spacing predicted to pass (20 % slack)
                    predicted = gj * math.sqrt(tol / e) / 1.2
                    spacing[i] = next((c for c in _SPACINGS if c < gj and c <= predicted), _SPACINGS[-1])
        todo = np.array(left, np.int64)
    return result


def coarse_map(index_map: _IndexMap, start: tuple[int, int], shape: tuple[int, int],
               origin: np.ndarray, dtype: Any = np.float32,
               tol: float | None = None) -> tuple[np.ndarray, int, float]:
    """Source indices of every pixel of a 2-D output chunk from a coarse grid of exact values.

    Parameters
    ----------
    index_map : _IndexMap
        Output index -> source index map.
    start, shape : tuple of int
        First output index ``(row, col)`` and size of the chunk.
    origin : numpy.ndarray, shape (2,)
        Subtracted from the source indices (the footprint's first pixel), so the result is
        chunk-relative and small enough for float32.
    dtype : numpy dtype
        float32 for ``cv2.remap``, float64 for scipy.
    tol : float, optional
        Maximum deviation (px) allowed at cell centres; default :func:`map_tolerance` for
        exact sampling (give ``map_tolerance(dtype)`` for the dtype ``cv2.remap`` samples).

    Returns
    -------
    maps : numpy.ndarray, shape (rows, cols, 2)
        Source ``(row, col)`` indices relative to ``origin``.
    spacing : int
        Node spacing used (px): one of :data:`_SPACINGS`, or 1.
    err : float
        Largest deviation found at cell centres (px).
    """
    vals, g, err = _coarse_nodes(index_map, start, shape, origin, map_tolerance() if tol is None else tol)
    if g == 1:
        return vals.astype(dtype), 1, err
    return _upsample(vals.astype(dtype), g, shape), g, err


def _remap_strips(cv2: Any, flat: np.ndarray, nodes: np.ndarray, g: int, shape: tuple[int, int],
                  interp: int, border: dict, out: np.ndarray | None = None) -> np.ndarray:
    """``cv2.remap`` of each plane through the bilinearly upsampled node map, a strip of rows at a time.

    The full-resolution map takes 8 bytes per output pixel, 8 times the output of a uint8
    chunk, so it is never made whole. The nodes (spacing ``g``, laid out as
    :func:`node_positions`) are first upsampled by ``g / 8`` for the whole chunk (a small
    array), then each strip of :data:`_STRIP_ROWS` rows by 8 into a buffer that stays in cache
    and that ``cv2.remap`` reads in place. For ``g`` = 8 x an odd number every node line is a
    line of the intermediate grid, so both stages together are exactly the bilinear
    interpolation of the nodes (other ``g``: one stage). A strip costs 8 rows more than it
    gives (one upsampling interval), where upsampling the nodes per strip would cost ``g``
    rows (2 ``g`` with whole node intervals). Written into ``out`` (planes, rows, cols: a
    region of a chunk) if given, else into a new chunk.
    """
    if out is None:
        out = _recycle.empty((len(flat),) + tuple(shape), flat.dtype, _OUT_LEAD)
    xy = np.ascontiguousarray(nodes[..., ::-1], dtype=np.float32)  # OpenCV wants (x, y) = (col, row)
    if g == 1:
        for k, pl in enumerate(flat):
            view = out[k]
            _into(cv2.remap(pl, xy, None, interp, dst=view, **border), view)
        return out
    sub = _SUB if g % (2 * _SUB) == _SUB else g  # g = 8 x odd: two stages
    f1 = g // sub
    if f1 > 1:
        xy = cv2.resize(xy, (xy.shape[1] * f1, xy.shape[0] * f1), interpolation=cv2.INTER_LINEAR)
    # intermediate node j sits at pixel (j + 1/2) sub - g - 1/2; upsampling its rows [b, b + n)
    # by ``sub`` gives pixel row i + b sub - g as row i, exact for i in [sub/2, (n - 1/2) sub)
    bc = (g - sub // 2) // sub
    c_first = g - bc * sub
    cols = xy[:, bc : bc + -(-(c_first + shape[1]) // sub) + 1]
    wide = cols.shape[1] * sub
    up = _scratch("map", (_STRIP_ROWS + 4 * sub, wide, 2), np.float32)
    for r0 in range(0, shape[0], _STRIP_ROWS):
        h = min(shape[0], r0 + _STRIP_ROWS) - r0
        b = (r0 + g - sub // 2) // sub
        first = r0 + g - b * sub
        rows = cols[b : b + -(-(first + h) // sub) + 1]
        n = rows.shape[0] * sub
        cv2.resize(rows, (wide, n), dst=up[:n], interpolation=cv2.INTER_LINEAR)
        window = up[first : first + h, c_first : c_first + shape[1]]
        for k, pl in enumerate(flat):
            view = out[k, r0 : r0 + h]
            _into(cv2.remap(pl, window, None, interp, dst=view, **border), view)
    return out


def _cell_lattice(r0: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Lattice coordinates ``(n, L)`` along one axis of cells ``[r0, r0 + h)``: from the first pixel to one past the last."""
    return r0[:, None] + h[:, None] * _LATTICE


@functools.cache
def _lattice_pinv(ly: int, lx: int) -> np.ndarray:
    """Pseudo-inverse (3, ly * lx) of the design ``[u_row, u_col, 1]`` of a uniform ly x lx
    lattice over the unit square (row-major): the least-squares affine fit of its values."""
    u, v = np.linspace(0.0, 1.0, ly), np.linspace(0.0, 1.0, lx)
    return np.linalg.pinv(np.c_[np.repeat(u, lx), np.tile(v, ly), np.ones(ly * lx)])


def _affine_fits(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray,
                 size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Affine fits of cells to the map's values at their lattice points.

    Parameters
    ----------
    rows, cols : numpy.ndarray, shape (n, Ly), (n, Lx)
        Lattice lines of each cell, px from its first row and column: uniform from 0 to the
        cell's side, or (merged pairs of odd side) the union of two such lattices.
    vals : numpy.ndarray, shape (n, Ly * Lx, 2)
        Source ``(row, col)`` at the lattice points, row-major.
    size : numpy.ndarray, shape (n, 2)
        The cells' height and width (px).

    Returns
    -------
    matrices : numpy.ndarray, shape (n, 2, 3)
        OpenCV matrices (``WARP_INVERSE_MAP``, ``(x, y)`` order) from cell-relative output
        pixel to source pixel: the least-squares fit on the uniform lattice (exact for even
        sides, within a fraction of a percent of it otherwise), its offset moved to the middle
        of the residuals' range along each axis (which lowers the largest deviation).
    err : numpy.ndarray, shape (n,)
        Largest distance (px) between fit and values over the lattice points where they are
        (NaN where a value is).
    """
    n, ly, lx = len(vals), rows.shape[1], cols.shape[1]
    h, w = size[:, 0], size[:, 1]
    coef = _lattice_pinv(ly, lx) @ vals  # (n, 3, 2): d(row, col)/d(u_row), d(..)/d(u_col), offset
    ur = np.repeat(rows / h[:, None], lx, axis=1)  # (n, L) normalised lattice coordinates
    uc = np.tile(cols / w[:, None], (1, ly))
    resid = np.empty((2, n, ly * lx))  # per component, points last: reductions run along rows
    for k in range(2):
        np.subtract(vals[..., k], coef[:, 2, k, None], out=resid[k])
        resid[k] -= ur * coef[:, 0, k, None]
        resid[k] -= uc * coef[:, 1, k, None]
    mid = (resid.max(axis=2) + resid.min(axis=2)) / 2  # (2, n): centre the residual range
    resid -= mid[:, :, None]
    resid *= resid
    err = np.sqrt((resid[0] + resid[1]).max(axis=1))
    m = np.empty((n, 2, 3))
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = coef[:, 1, 1] / w, coef[:, 0, 1] / h, coef[:, 2, 1] + mid[1]
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = coef[:, 1, 0] / w, coef[:, 0, 0] / h, coef[:, 2, 0] + mid[0]
    return m, err


def cell_affines(index_map: _IndexMap, start: tuple[int, int], shape: tuple[int, int], origin: np.ndarray,
                 tol: float | None = None) -> tuple[list, np.ndarray, list] | None:
    """Tile a 2-D output chunk with cells on each of which a non-linear map is affine within ``tol``.

    Cells start at :data:`_CELL_MAX` px and are split in four (a quadtree) while the map
    deviates by more than ``tol`` from its affine fit at any point of a 5 x 5 lattice spanning
    the cell (:func:`_affine_fits`: least squares, then the offset moved to the middle of the
    residuals' range along each axis, which lets more cells pass), down to :data:`_CELL_MIN` px,
    and siblings are merged in pairs where they can be (:func:`_split_cells`). The lattices of a cell's four
    children share the parent's points and their common edges (a 9 x 9 grid), so each split
    evaluates the map at 56 new points. A cell is not split but left to ``cv2.remap`` when it
    has the smallest size, when a deviation scaled by side² down to the smallest side the
    budget allows would still exceed 2 ``tol`` (a smooth map's deviation from affine shrinks
    ~ side²; near a thin-plate spline's landmark it shrinks more slowly), or when its chunk's
    splits would take more OpenCV calls than one per :data:`_CELL_AREA` px (each call hands the GIL
    over to the other dask thread; a chunk's worst cells are the ones left). The chunk is
    refused when more than :data:`_REMAP_SHARE` of it is left.

    Parameters
    ----------
    index_map : _IndexMap
        Output index -> source index map (non-linear).
    start, shape : tuple of int
        First output index ``(row, col)`` and size of the chunk.
    origin : numpy.ndarray, shape (2,)
        Subtracted from the source indices (the footprint's first pixel).
    tol : float, optional
        Largest deviation allowed (px); default :func:`map_tolerance` for exact sampling
        (give ``map_tolerance(dtype)`` for the dtype ``cv2.warpAffine`` samples).

    Returns
    -------
    (boxes, matrices, rest) or None
        ``boxes``: list of ``[r0, c0, h, w]`` (chunk-relative first row and column, height,
        width); ``matrices``: ``(n, 2, 3)`` float64, per cell the OpenCV matrix
        (``WARP_INVERSE_MAP``, ``(x, y)`` order) from cell-relative output pixel to source
        pixel relative to ``origin``; ``rest``: boxes ``[r0, c0, h, w]`` left to ``cv2.remap``
        (those where the map is not finite among them). Cells and rest cover the chunk once.
        None if the chunk is refused.
    """
    return _plan_cells(index_map, _chunk_rows((start, shape, origin)), map_tolerance() if tol is None else tol)[0]


def _plan_cells(index_map: _IndexMap, chunks: np.ndarray, tol: float) -> list:
    """:func:`cell_affines` of several chunks (rows of :func:`_chunk_rows`), every quadtree
    level evaluated once for all of them. Cells are kept in absolute output indices with the
    index of their chunk (``owner``) and made chunk-relative at the end."""
    n_l, nchunk = _LATTICE.size, len(chunks)
    side = max(_CELL_MAX, _CELL_MIN)
    origins = chunks[:, 4:]
    area = chunks[:, 2] * chunks[:, 3]
    budget = np.maximum(4, area // _CELL_AREA).astype(np.int64)
    floors = np.maximum(_CELL_MIN, np.sqrt(area / budget))  # smallest side within budget
    # top level: a chunk's cell lattices form one grid (neighbours share their common edge);
    # chunks of one shape share it, shifted
    shapes, kind = np.unique(chunks[:, 2:4], axis=0, return_inverse=True)
    parts, tops = [], []
    for j, (hh, ww) in enumerate(shapes):
        idx = np.flatnonzero(kind.ravel() == j)
        r0, c0 = np.arange(0, hh, side), np.arange(0, ww, side)
        h, w = np.minimum(side, hh - r0), np.minimum(side, ww - c0)
        ry = np.append(_cell_lattice(r0, h)[:, :-1], hh)
        cx = np.append(_cell_lattice(c0, w)[:, :-1], ww)
        grid = np.stack(np.meshgrid(ry, cx, indexing="ij"), -1).reshape(-1, 2)
        cells = np.stack(np.broadcast_arrays(r0[:, None], c0[None, :], h[:, None], w[None, :]), -1).reshape(-1, 4)
        parts.append((grid[None] + chunks[idx, None, :2]).reshape(-1, 2))
        tops.append((idx, (ry.size, cx.size), cells))
    evaluated = index_map(np.concatenate(parts), 0)
    boxes, vals, owner, k = [], [], [], 0
    for idx, (ny, nx), cells in tops:
        grid = (evaluated[k : k + len(idx) * ny * nx].reshape(len(idx), ny, nx, 2) - origins[idx, None, None])
        k += len(idx) * ny * nx
        win = np.lib.stride_tricks.sliding_window_view(grid, (n_l, n_l), axis=(1, 2))[:, :: n_l - 1, :: n_l - 1]
        vals.append(np.moveaxis(win, 3, -1).reshape(-1, n_l * n_l, 2))  # (chunk, cell row, cell col): cells
        corner = np.zeros((len(idx), 1, 4))
        corner[:, 0, :2] = chunks[idx, :2]
        boxes.append((cells[None] + corner).reshape(-1, 4))
        owner.append(np.repeat(idx, len(cells)))
    boxes, vals, owner = np.concatenate(boxes), np.concatenate(vals), np.concatenate(owner)
    done_boxes, done_mats, done_owner, rest_boxes, rest_owner = [], [], [], [], []
    ncells = np.zeros(nchunk, np.int64)  # OpenCV calls so far: cells, and regions left to cv2.remap
    mats, err = _affine_fits(boxes[:, 2:3] * _LATTICE, boxes[:, 3:4] * _LATTICE, vals, boxes[:, 2:])
    while len(boxes):
        ok = err <= tol  # NaN fails too
        if ok.any():
            done_boxes.append(boxes[ok])
            done_mats.append(mats[ok])
            done_owner.append(owner[ok])
            ncells += np.bincount(owner[ok], minlength=nchunk)
        bad = ~ok
        if not bad.any():
            break
        boxes, vals, owner, err = boxes[bad], vals[bad], owner[bad], err[bad]
        big = boxes[:, 2:].max(axis=1)
        # left to cv2.remap: cells of the smallest size, hopeless deviations (side² scaling down
        # to the smallest side the cell budget allows, 2x slack) or NaN, and the worst cells of
        # a chunk whose splits would take more OpenCV calls than the budget (a split adds 3)
        hopeless = (big <= _CELL_MIN) | ~(err * (floors[owner] / big) ** 2 <= 2 * tol)
        order = np.lexsort((np.where(hopeless, np.inf, err), owner))  # per chunk, best first
        pending = np.bincount(owner, minlength=nchunk)
        first = np.cumsum(pending) - pending
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order)) - first[owner[order]]
        splits = np.maximum(0, (budget - ncells - pending) // 3)  # per chunk
        split = ~hopeless & (rank < splits[owner])
        if (~split).any():
            rest_boxes.append(boxes[~split])
            rest_owner.append(owner[~split])
            ncells += np.bincount(owner[~split], minlength=nchunk)
        if not split.any():
            break
        boxes, vals, owner, mats, err, pairs = _split_cells(index_map, origins, boxes[split], vals[split],
                                                            owner[split], tol)
        if len(pairs[0]):
            done_boxes.append(pairs[0])
            done_mats.append(pairs[1])
            done_owner.append(pairs[2])
            ncells += np.bincount(pairs[2], minlength=nchunk)
    result: list = [None] * nchunk
    b, m, o = (np.concatenate(x) if x else np.empty((0,) + s)
               for x, s in ((done_boxes, (4,)), (done_mats, (2, 3)), (done_owner, ())))
    rb, ro = (np.concatenate(x) if x else np.empty((0,) + s) for x, s in ((rest_boxes, (4,)), (rest_owner, ())))
    left = np.bincount(ro.astype(np.int64), rb[:, 2] * rb[:, 3], minlength=nchunk)
    for i in np.flatnonzero(left <= _REMAP_SHARE * chunks[:, 2] * chunks[:, 3]):
        sel, rsel = np.flatnonzero(o == i), ro == i
        sel = sel[np.lexsort((b[sel, 1], b[sel, 0]))]  # raster order: the source is read in bands of rows
        corner = np.r_[chunks[i, :2], 0, 0]
        result[i] = ((b[sel] - corner).astype(np.int64).tolist(), m[sel], (rb[rsel] - corner).astype(np.int64).tolist())
    return result


def _split_cells(index_map: _IndexMap, origins: np.ndarray, boxes: np.ndarray, vals: np.ndarray,
                 owner: np.ndarray, tol: float) -> tuple:
    """Quadtree children of cells ``boxes`` (n, 4; absolute first row, column, height, width) with
    their lattice values ``vals`` (n, L², 2) and chunk indices ``owner`` (n,) into ``origins``.

    The children's lattices make a (2L - 1)² grid per parent whose even rows and columns are
    the parent's lattice where the split is exact (even sides); only the other points are
    evaluated. Two children side by side that are both affine within ``tol``, and whose union
    is too on their common L x (2L - 1) lattice (the points both children's checks cover),
    become one cell: fewer OpenCV calls, and wider rows (on the benchmark's spline, ~30 %
    fewer cells). Per parent, the pairing (two wide halves or two tall ones) that merges more
    is taken, wide ones on a tie.

    Returns the children left ``(boxes, vals, owner, matrices, err)`` with their fits
    (:func:`_affine_fits`), and the merged pairs ``(boxes, matrices, owner)``.
    """
    n, n_l = len(boxes), _LATTICE.size
    n_g = 2 * n_l - 1
    r0, c0, h, w = boxes.T
    h2, w2 = np.ceil(h / 2), np.ceil(w / 2)
    rows = np.concatenate([_cell_lattice(r0, h2)[:, :-1], _cell_lattice(r0 + h2, h - h2)], axis=1)  # (n, 2L-1)
    cols = np.concatenate([_cell_lattice(c0, w2)[:, :-1], _cell_lattice(c0 + w2, w - w2)], axis=1)
    g = np.empty((n, n_g, n_g, 2))
    g[:, ::2, ::2] = vals.reshape(n, n_l, n_l, 2)
    need = np.ones((n, n_g, n_g), bool)
    need[:, ::2, ::2] = False
    # odd side: only the first and last lattice lines are the parent's
    need[np.ix_(h % 2 == 1, np.arange(2, n_g - 1, 2), np.arange(0, n_g, 2))] = True
    need[np.ix_(w % 2 == 1, np.arange(0, n_g, 2), np.arange(2, n_g - 1, 2))] = True
    pts = np.stack(np.broadcast_arrays(rows[:, :, None], cols[:, None, :]), -1)[need]
    g[need] = index_map(pts, 0) - np.broadcast_to(origins[owner][:, None, None, :], g.shape)[need]
    kids_boxes, kids_vals = [], []
    lo, hi, every = slice(0, n_l), slice(n_l - 1, n_g), slice(0, n_g)
    for dr, hh, sr in ((0, h2, lo), (h2, h - h2, hi)):
        for dc, ww, sc in ((0, w2, lo), (w2, w - w2, hi)):
            kids_boxes.append(np.stack([r0 + dr, c0 + dc, hh, ww], axis=1))
            kids_vals.append(g[:, sr, sc].reshape(n, n_l * n_l, 2))
    kb, kv = np.concatenate(kids_boxes), np.concatenate(kids_vals)  # kid q of parent i at q * n + i
    km, ke = _affine_fits(kb[:, 2:3] * _LATTICE, kb[:, 3:4] * _LATTICE, kv, kb[:, 2:])
    kid_ok = ((ke <= tol) & (kb[:, 2] > 0) & (kb[:, 3] > 0)).reshape(4, n)
    # pairs of children (quadrants 0 1 / 2 3): top, bottom (wide), left, right (tall)
    pairs = [((0, 1), (0, 0, h2, w), lo, every), ((2, 3), (h2, 0, h - h2, w), hi, every),
             ((0, 2), (0, 0, h, w2), every, lo), ((1, 3), (0, w2, h, w - w2), every, hi)]
    merged = np.zeros((4, n), bool)
    fits = []
    for p, ((qa, qb), (dr, dc, hh, ww), sr, sc) in enumerate(pairs):
        i = np.flatnonzero(kid_ok[qa] & kid_ok[qb])
        box = np.stack([r0 + dr, c0 + dc, hh, ww], axis=1)[i]
        v = g[i][:, sr, sc]  # (m, Ly, Lx, 2)
        mats, err = _affine_fits(rows[i][:, sr] - box[:, :1], cols[i][:, sc] - box[:, 1:2],
                                 v.reshape(len(v), v.shape[1] * v.shape[2], 2), box[:, 2:])
        merged[p, i] = err <= tol
        fits.append((i, box, mats))
    use_wide = merged[0].astype(int) + merged[1] >= merged[2].astype(int) + merged[3]
    merged[:2] &= use_wide
    merged[2:] &= ~use_wide
    taken = np.zeros((4, n), bool)
    done: tuple[list, list, list] = ([], [], [])
    for p, (((qa, qb), *_), (i, box, mats)) in enumerate(zip(pairs, fits)):
        taken[[qa, qb]] |= merged[p]
        use = merged[p, i]
        done[0].append(box[use])
        done[1].append(mats[use])
        done[2].append(owner[i[use]])
    keep = (kb[:, 2] > 0) & (kb[:, 3] > 0) & ~taken.ravel()  # a side of 1 px has one child along it
    ko = np.tile(owner, 4)
    return kb[keep], kv[keep], ko[keep], km[keep], ke[keep], tuple(np.concatenate(x) for x in done)


def _plan(index_map: _IndexMap, chunks: np.ndarray, tol: float) -> list:
    """How each 2-D chunk (rows of :func:`_chunk_rows`) of a non-linear map is resampled.

    Per chunk ``("cells", (boxes, matrices, remaps))`` (:func:`cell_affines`; ``remaps``: per
    box left to ``cv2.remap``, ``(box, values, spacing)`` of its own coarse nodes) or
    ``("nodes", (values, spacing))`` (:func:`_coarse_nodes`, for :func:`_remap_strips`), the
    whole chunk through ``cv2.remap``. Planned for a group of
    chunks in one task: each step evaluates the map once for the whole group, so the
    per-call overhead of numpy (which holds the GIL, while OpenCV calls in the other dask
    thread wait for it) is paid per group, not per chunk.
    """
    cells = _plan_cells(index_map, chunks, tol)
    whole = [i for i, c in enumerate(cells) if c is None]
    parts = [(i, box) for i, c in enumerate(cells) if c is not None for box in c[2]]
    rows = [chunks[i] for i in whole] + [np.r_[chunks[i, :2] + box[:2], box[2:], chunks[i, 4:]] for i, box in parts]
    nodes = _plan_nodes(index_map, np.array(rows).reshape(-1, 6), tol)
    plans: list = [None] * len(chunks)
    for i, (vals, g, _) in zip(whole, nodes):
        plans[i] = ("nodes", (vals, g))
    remaps: dict = {}
    for (i, box), (vals, g, _) in zip(parts, nodes[len(whole):]):
        remaps.setdefault(i, []).append((box, vals, g))
    for i, c in enumerate(cells):
        if c is not None:
            plans[i] = ("cells", (c[0], c[1], remaps.get(i, [])))
    return plans


def _warp_cells(cv2: Any, flat: np.ndarray, cells: tuple[list, np.ndarray, list], shape: tuple[int, int],
                interp: int, border: dict, rows: _RowAssembly | None = None) -> np.ndarray:
    """``cv2.warpAffine`` of each plane, cell by cell (:func:`cell_affines`), into one output
    chunk, and ``cv2.remap`` (:func:`_remap_strips`) of the regions the cells leave (:func:`_plan`).

    With ``rows``, ``flat`` is its buffer, filled just before each cell with the source rows
    the cell reads (its corners' rows, + 2 for the bilinear neighbour and rounding)."""
    out = _recycle.empty((len(flat),) + tuple(shape), flat.dtype, _OUT_LEAD)
    flags = interp | cv2.WARP_INVERSE_MAP
    boxes, mats, remaps = cells
    need = itertools.repeat(None)
    if rows is not None and len(mats):
        hw = np.array(boxes, np.float64)[:, 2:] - 1  # last pixel of each cell (row, col)
        m1 = mats[:, 1]  # source row = m10 col + m11 row + m12
        corners = m1[:, 2:] + np.stack([np.zeros(len(hw)), m1[:, 0] * hw[:, 1], m1[:, 1] * hw[:, 0],
                                        m1[:, 0] * hw[:, 1] + m1[:, 1] * hw[:, 0]], axis=1)
        need = (np.ceil(corners.max(axis=1)) + 2).tolist()
    for (r0, c0, h, w), m, upto in zip(boxes, mats, need):
        if upto is not None:
            rows(min(upto, flat.shape[1]))
        for k, pl in enumerate(flat):
            view = out[k, r0 : r0 + h, c0 : c0 + w]
            _into(cv2.warpAffine(pl, m, (w, h), dst=view, flags=flags, **border), view)
    if rows is not None and remaps:
        rows(flat.shape[1])
    for (r0, c0, h, w), nodes, g in remaps:
        _remap_strips(cv2, flat, nodes, g, (h, w), interp, border, out[:, r0 : r0 + h, c0 : c0 + w])
    return out


def _into(got: np.ndarray, view: np.ndarray) -> None:
    """Make sure an OpenCV result asked for with ``dst=view`` is in ``view`` (copied if OpenCV wrote elsewhere)."""
    if got is not view:
        view[...] = got


def _warp_task(blocks: list, spec: dict, plans: list | None = None) -> np.ndarray:
    """Resample one output chunk from the source blocks covering its footprint (with its group's
    :func:`_plan` for non-linear maps)."""
    plan = None if plans is None else plans[spec["plan_index"]]
    if plan is not None and plan[0] == "cells" and len(blocks) > 1:  # filled row by row as cells need them
        rows = _RowAssembly(blocks, spec["starts"], spec["lo"], spec["hi"], spec["nlead"])
        return _resample(rows.out, spec, plan, rows)
    return _resample(_assemble(blocks, spec["starts"], spec["lo"], spec["hi"], spec["nlead"]), spec, plan)


def _swap_matrix() -> np.ndarray:
    """Homogeneous 3x3 permutation that swaps the two spatial axes ((row, col) <-> (x, y))."""
    p = np.eye(3)
    p[:2, :2] = np.eye(2)[_tf.xy_to_rc(np.arange(2))]
    return p


def _opencv_planes(cv2: Any, flat: np.ndarray, imap: _IndexMap, start: tuple, shape: tuple,
                   lo: np.ndarray, order: int, fill: float, plan: tuple | None = None,
                   rows: _RowAssembly | None = None) -> np.ndarray:
    """OpenCV resampling of each plane of ``flat`` (P, rows, cols) onto one output chunk (P,
    rows, cols); with ``rows`` (cells plans only), ``flat`` is its buffer, filled as the cells need it."""
    interp = cv2.INTER_NEAREST if order == 0 else cv2.INTER_LINEAR
    border = dict(borderMode=cv2.BORDER_CONSTANT, borderValue=float(fill))
    if imap.matrix is None:
        if plan is None:
            plan = _plan(imap, _chunk_rows((start, shape, lo)), map_tolerance(flat.dtype))[0]
        kind, data = plan
        if kind == "cells":  # smooth enough to be affine, cell by cell, within the tolerance
            return _warp_cells(cv2, flat, data, shape, interp, border, rows)
        nodes, g = data
        return _remap_strips(cv2, flat, nodes, g, shape, interp, border)
    # chunk-relative index matrix, then (row, col) -> (x, y) for OpenCV
    m = _shift(-lo) @ imap.matrix @ _shift(np.asarray(start, np.float64))
    p = _swap_matrix()
    mcv = p @ m @ p
    dsize = (shape[1], shape[0])
    out = _recycle.empty((len(flat),) + tuple(shape), flat.dtype, _OUT_LEAD)
    for pl, view in zip(flat, out):
        if imap.affine:
            got = cv2.warpAffine(pl, mcv[:2], dsize, dst=view, flags=interp | cv2.WARP_INVERSE_MAP, **border)
        else:
            got = cv2.warpPerspective(pl, mcv, dsize, dst=view, flags=interp | cv2.WARP_INVERSE_MAP, **border)
        _into(got, view)
    return out


def _resample(src: np.ndarray, spec: dict, plan: tuple | None = None,
              rows: _RowAssembly | None = None) -> np.ndarray:
    """Resample ``src`` (the footprint) onto one output chunk; with ``rows`` (OpenCV cells
    plans only, see :func:`_warp_task`), ``src`` is ``rows.out``, filled as the cells need it."""
    imap: _IndexMap = spec["map"]
    start, shape, lo = spec["out_start"], spec["out_shape"], np.asarray(spec["lo"], np.float64)
    order, fill, dtype, method = spec["order"], spec["fill"], spec["dtype"], spec["method"]
    lead = src.shape[: spec["nlead"]]
    flat = src.reshape((-1,) + src.shape[len(lead):])
    if method == "opencv":
        # OpenCV keeps its own thread pool (cv2.setNumThreads is left alone): two dask threads
        # do not oversubscribe it, since a second concurrent caller runs serially in its own
        # thread, and the pool fills a core while the other dask thread reads or writes
        # (measured: forcing 1 OpenCV thread per task was 10-30 % slower, benchmarks/bench_warp.py;
        # so was splitting calls into bands small enough for OpenCV to run them serially);
        # _opencv.load() makes idle pool threads sleep instead of spinning
        cv2 = _opencv.load()
        out = _opencv_planes(cv2, flat, imap, start, shape, lo, order, fill, plan, rows)
    else:
        from scipy import ndimage

        d = len(shape)
        if imap.matrix is not None and imap.affine:
            m = _shift(-lo) @ imap.matrix @ _shift(np.asarray(start, np.float64))
            planes = [ndimage.affine_transform(np.asarray(pl, np.float64), m, output_shape=shape, order=order,
                                               mode="constant", cval=fill, prefilter=order > 1) for pl in flat]
        else:
            if d == 2:
                maps, _, _ = coarse_map(imap, start, shape, lo, np.float64)
                coords = np.moveaxis(maps, -1, 0)
            else:
                idx = np.indices(shape, dtype=np.float64).reshape(d, -1).T
                coords = (imap(idx, start) - lo).T.reshape((d,) + tuple(shape))
            planes = [ndimage.map_coordinates(np.asarray(pl, np.float64), coords, order=order, mode="constant",
                                              cval=fill, prefilter=order > 1) for pl in flat]
        out = np.stack(planes)
    return _cast(out, dtype).reshape(lead + tuple(shape))


# ---------------------------------------------------------------------------------------
# graph construction
# ---------------------------------------------------------------------------------------
def _normalize_out_chunks(chunks: Any, sdims: tuple[str, ...], shape: tuple[int, ...],
                          like: xr.DataArray | None, scale: float) -> tuple[tuple[int, ...], ...]:
    import dask.array as da

    if chunks is None:
        if like is not None and hasattr(like.data, "chunks"):
            return tuple(like.data.chunks[like.dims.index(d)] for d in sdims)
        side = DEFAULT_CHUNK[len(sdims)]
        side = max(64, min(side, int(_FOOTPRINT_SIDE / max(scale, 1e-9))))
        chunks = (side,) * len(sdims)
    elif isinstance(chunks, dict):
        unknown = set(chunks) - set(sdims)
        if unknown:
            raise ImageError(f"chunks has entries for {sorted(unknown)}, which are not output dims {sdims}")
        chunks = tuple(chunks.get(d, DEFAULT_CHUNK[len(sdims)]) for d in sdims)
    elif isinstance(chunks, int):
        chunks = (chunks,) * len(sdims)
    try:
        return da.core.normalize_chunks(chunks, shape)
    except (ValueError, TypeError) as exc:
        raise ImageError(f"chunks={chunks!r} does not fit the output shape {shape} of dims {sdims}: {exc}") from None


def _method(dtype: np.dtype, order: int, ndim: int) -> str:
    if ndim == 2 and order <= 1 and any(dtype == np.dtype(t) for t in _CV_DTYPES):
        return "opencv"
    return "scipy"


def _build(src_data: Any, nlead: int, imap: _IndexMap, out_chunks: tuple, order: int, fill: float,
           dtype: np.dtype, method: str) -> tuple[Any, int]:
    """The lazy output array (lead dims + spatial) and the number of chunks that hit the source."""
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    if not isinstance(src_data, da.Array):
        src_data = da.from_array(src_data, chunks=src_data.shape, name=False)
    src_shape = src_data.shape[nlead:]
    lead_chunks = src_data.chunks[:nlead]
    bounds = [np.concatenate([[0], np.cumsum(c)]) for c in src_data.chunks[nlead:]]
    d = len(src_shape)
    margin = 1 + (order if order > 1 else 0) * 4
    name = "clemlab-warp-" + tokenize(src_data.name, imap.tf.to_dict(), imap.src_m, imap.dst_m, out_chunks,
                                      order, fill, str(dtype), method)
    layer: dict = {}
    hits = 0
    out_starts = [np.concatenate([[0], np.cumsum(c)[:-1]]) for c in out_chunks]
    dense = imap.matrix is None or not imap.affine
    # non-linear maps through OpenCV: one planning task per group of chunks (see _plan)
    planned = method == "opencv" and imap.matrix is None
    tol = map_tolerance(src_data.dtype) if planned else None  # for the source dtype OpenCV samples
    groups: dict = {}
    blocks = list(itertools.product(*(range(len(c)) for c in out_chunks)))
    # every chunk's footprint samples mapped in one evaluation (one call per chunk costs more
    # than the samples themselves for a spline)
    by_shape: dict = {}  # chunks of one shape share their samples
    samples = []
    for bidx in blocks:
        sh = tuple(int(out_chunks[k][i]) for k, i in enumerate(bidx))
        if sh not in by_shape:
            by_shape[sh] = _box_samples(sh, dense)
        samples.append(by_shape[sh])
    mapped = imap(np.concatenate([sm + [out_starts[k][i] for k, i in enumerate(bidx)]
                                  for sm, bidx in zip(samples, blocks)]), 0)
    ends = np.cumsum([len(sm) for sm in samples])
    for bidx, pts in zip(blocks, np.split(mapped, ends[:-1])):
        start = tuple(int(out_starts[k][i]) for k, i in enumerate(bidx))
        shape = tuple(int(out_chunks[k][i]) for k, i in enumerate(bidx))
        lo_f, hi_f = pts.min(axis=0), pts.max(axis=0)
        extra = 0.0
        if imap.matrix is None:  # curvature between samples: 4 px plus 2 % of the span
            extra = 4 + 0.02 * float(np.max(hi_f - lo_f))
        if np.all(np.isfinite(pts)):
            lo = [max(0, int(math.floor(v - margin - extra))) for v in lo_f]
            hi = [min(n, int(math.ceil(v + margin + extra)) + 1) for v, n in zip(hi_f, src_shape)]
        else:  # a projective horizon crosses the chunk: read everything
            lo, hi = [0] * d, list(src_shape)
        empty = any(h <= l for l, h in zip(lo, hi))
        if planned and not empty:
            gkey = tuple(i // _PLAN_GROUP for i in bidx)
            rows = groups.setdefault(gkey, [])
            plan_key, plan_index = ("plan-" + name,) + gkey, len(rows)
            rows.append((start, shape, lo))
        for lidx in itertools.product(*(range(len(c)) for c in lead_chunks)):
            lshape = tuple(int(lead_chunks[k][i]) for k, i in enumerate(lidx))
            key = (name,) + lidx + bidx
            if empty:
                layer[key] = (np.full, lshape + shape, fill, dtype)
                continue
            if method == "opencv" and max(h - l for l, h in zip(lo, hi)) > _CV_MAX_SIDE:
                raise ImageError(
                    f"an output chunk of {shape} px reads a source region of "
                    f"{[h - l for l, h in zip(lo, hi)]} px, more than OpenCV handles; pass smaller "
                    "chunks= or warp from a coarser pyramid level"
                )
            ranges = [range(int(np.searchsorted(b, l, "right") - 1), int(np.searchsorted(b, h, "left")))
                      for b, l, h in zip(bounds, lo, hi)]
            keys, starts = [], []
            for sidx in itertools.product(*ranges):
                keys.append((src_data.name,) + lidx + sidx)
                starts.append(tuple(int(bounds[k][i]) for k, i in enumerate(sidx)))
            spec = dict(starts=starts, lo=tuple(lo), hi=tuple(hi), nlead=nlead, map=imap, out_start=start,
                        out_shape=shape, order=order, fill=fill, dtype=dtype, method=method)
            if planned:
                spec["plan_index"] = plan_index
                layer[key] = (_warp_task, keys, spec, plan_key)
            else:
                layer[key] = (_warp_task, keys, spec)
        hits += not empty
    for gkey, rows in groups.items():
        layer[("plan-" + name,) + gkey] = (_plan, imap, _chunk_rows(*rows), tol)
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[src_data] if hits else [])
    return da.Array(graph, name, lead_chunks + tuple(out_chunks), dtype=dtype), hits


def _rewrite_attrs(attrs: dict, tf: _tf.Transform, like: xr.DataArray) -> dict:
    """Attrs of the warped image: new frame, and transforms re-expressed from it."""
    out = dict(attrs)
    old_frame = attrs.get("frame") or tf.source_frame
    new_frame = like.attrs.get("frame") or tf.target_frame
    back = tf.inverse  # new frame -> old frame
    new_tfs: dict[str, Any] = {}
    for name, d in (attrs.get("clem:transforms") or {}).items():
        if name == new_frame:
            continue
        new_tfs[name] = back.then(_tf.transform_from_dict(d).with_frames(None, name)).with_frames(new_frame, name).to_dict()
    if old_frame and old_frame != new_frame:
        new_tfs[old_frame] = back.with_frames(new_frame, old_frame).to_dict()
    out["clem:transforms"] = new_tfs
    if new_frame is not None:
        out["frame"] = new_frame
    else:
        out.pop("frame", None)
    out["clem:warped_from"] = old_frame
    return out


def _grid_image(grid: Any, tf: _tf.Transform) -> xr.DataArray:
    """A coordinate-only target image from ``grid={dim: pixel-centre coords in µm}``."""
    import dask.array as da

    if not isinstance(grid, dict) or not {"y", "x"} <= set(grid) or not set(grid) <= {"z", "y", "x"}:
        raise ImageError("grid must be a dict {'y': coords, 'x': coords[, 'z': coords]} of pixel-centre "
                         f"positions in µm, got {grid!r:.80}")
    sdims = tuple(d for d in ("z", "y", "x") if d in grid)
    sizes, origins, shape = {}, {}, []
    for d in sdims:
        v = np.asarray(grid[d], np.float64).reshape(-1)
        if v.size < 2 or not np.all(np.isfinite(v)) or not np.allclose(np.diff(v), (v[-1] - v[0]) / (v.size - 1), rtol=1e-6, atol=0) or v[-1] <= v[0]:
            raise ImageError(f"grid[{d!r}] must hold at least 2 uniformly increasing finite positions (µm)")
        sizes[d], origins[d] = (v[-1] - v[0]) / (v.size - 1), v[0]
        shape.append(v.size)
    return as_image(da.zeros(shape, dtype=np.uint8, chunks=-1), pixel_size=sizes, origin=origins,
                    dims=sdims, frame=tf.target_frame)


def warp(image: xr.DataArray, transform: Any = None, like: xr.DataArray | None = None, *,
         grid: dict | None = None, chunks: Any = None, order: int = 1, fill: float = 0) -> xr.DataArray:
    """Resample ``image`` onto the pixel grid of ``like`` (or ``grid``), lazily.

    Parameters
    ----------
    image : xarray.DataArray
        Image in the transform's source frame, dims ``([c,] [z,] y, x)``, numpy- or
        dask-backed. Only the source chunks under each output chunk's footprint are read.
    transform : Transform or Registration, optional
        Maps ``image``-frame points to target-frame points (µm, ``(x, y[, z])``).
        Default: the transform stored in ``image.attrs["clem:transforms"]`` for ``like``'s frame.
    like : xarray.DataArray, optional
        Target image whose spatial grid (coords, µm) the output takes. Its pixels are never read.
    grid : dict, optional
        Instead of ``like``: ``{"y": coords, "x": coords[, "z": coords]}``, pixel-centre
        positions in µm in the target frame (uniform, increasing).
    chunks : int, tuple or dict, optional
        Output chunks per spatial dim. Default: ``like``'s dask chunks, else 2048 px (2-D) /
        128 px (3-D), made smaller for strongly shrinking transforms so that a chunk's source
        footprint stays below 8192 px a side. Channels keep the source's chunks.
    order : int
        Spline order: 0 nearest, 1 (bi/tri)linear (default), 2-5 spline (scipy).
    fill : float
        Value for output pixels that map outside ``image``.

    Returns
    -------
    xarray.DataArray
        Dims ``([c,] <target spatial dims>)``, ``image``'s dtype, the target coords, dask-backed
        with one task per output chunk (call ``.compute()`` for numpy). Attrs: ``frame`` set
        to the target frame, ``clem:transforms`` re-expressed from it, ``clem:warped_from``.

    Warns
    -----
    UserWarning
        When no output pixel maps inside ``image`` (the result is all ``fill``).

    Examples
    --------
    >>> import numpy as np, clemlab as cl
    >>> src = cl.as_image(np.arange(12.0).reshape(3, 4), pixel_size=1.0)
    >>> out = cl.warp(src, cl.Translation([1.0, 0.0]), like=src)
    >>> out.values[0].tolist()
    [0.0, 0.0, 1.0, 2.0]
    """
    image = check_image(image, "image")
    if like is None and grid is None:
        raise ImageError("warp() needs like=<target image> whose grid the output takes (or grid={'y': ..., 'x': ...})")
    if like is not None and grid is not None:
        raise ImageError("give either like= or grid=, not both")
    if like is not None:
        like = check_image(like, "like")
        tf = _as_transform(transform) if transform is not None else image.clem.transform_to(like.clem.frame)
    else:
        if transform is None:
            raise ImageError("warp(..., grid=...) needs the transform (there is no target image to name the frame)")
        tf = _as_transform(transform)
        like = _grid_image(grid, tf)
    if tf.ndim != image.clem.ndim or tf.ndim != like.clem.ndim:
        raise ImageError(
            f"a {tf.ndim}-D transform cannot map a {image.clem.ndim}-D image onto a "
            f"{like.clem.ndim}-D grid; for a z-stack onto a 2-D image select a plane "
            "(image.isel(z=k)) or project it (image.max('z')) first"
        )
    if order not in (0, 1, 2, 3, 4, 5):
        raise ImageError(f"order must be an integer 0-5, got {order!r}")
    try:
        fill = float(fill)
    except (TypeError, ValueError):
        raise ImageError(f"fill must be a number, got {fill!r}") from None
    sdims = image.clem.spatial_dims
    out_sdims = like.clem.spatial_dims
    out_shape = tuple(like.sizes[d] for d in out_sdims)
    imap = _IndexMap(tf, _grid_matrix(image), _grid_matrix(like))
    lead = [d for d in image.dims if d not in sdims]  # at most "c"
    dtype = image.dtype
    # how much the map shrinks: source pixels per output pixel (largest singular value)
    probe = imap(np.vstack([np.zeros(len(sdims)), np.eye(len(sdims))]), [n // 2 for n in out_shape])
    scale = float(np.linalg.svd(probe[1:] - probe[0], compute_uv=False).max()) if np.all(np.isfinite(probe)) else 1.0
    out_chunks = _normalize_out_chunks(chunks, out_sdims, out_shape, like if grid is None else None, scale)
    result, hits = _build(image.data, len(lead), imap, out_chunks, order, fill, dtype,
                          _method(dtype, order, len(sdims)))
    if hits == 0:
        warnings.warn(
            f"warp: the {type(tf).__name__} transform ({tf.source_frame} -> {tf.target_frame}) maps "
            "the whole output grid outside the source image "
            f"(frame {image.clem.frame!r}); the result is all fill={fill:g}. Check the transform "
            "direction (source -> target) and the frames of image and like",
            UserWarning, stacklevel=2,
        )
    coords = {d: like.coords[d] for d in out_sdims}
    if "c" in lead:
        coords["c"] = image.coords["c"]
    return xr.DataArray(result, dims=tuple(lead) + out_sdims, coords=coords, name=image.name,
                        attrs=_rewrite_attrs(image.attrs, tf, like))


# ---------------------------------------------------------------------------------------
# correlate
# ---------------------------------------------------------------------------------------
def _level_image(obj: Any, level: int | None, argname: str, finer_than: float | None = None) -> xr.DataArray:
    """An image from a DataArray or one level of a multiscale DataTree (``scale{k}``)."""
    if not isinstance(obj, xr.DataTree):
        return obj
    names = sorted((k for k in obj.children if k.startswith("scale")), key=lambda k: int(k[5:]))
    if not names:
        raise ImageError(f"{argname}: a multiscale DataTree needs children scale0, scale1, ...; got {list(obj.children)}")

    def img(k):
        ds = obj[k].to_dataset()
        return ds["image"] if "image" in ds else next(iter(ds.data_vars.values()))

    if level is None and finer_than is not None:  # coarsest level still at least as fine
        pick = names[0]
        for k in names:
            if min(img(k).clem.pixel_size.values()) <= finer_than * (1 + 1e-6):
                pick = k
        return img(pick)
    k = f"scale{level or 0}"
    if k not in names:
        raise ImageError(f"{argname} has levels {names}; level={level!r} is not one of them")
    return img(k)


def correlate(em: Any, lm: Any, transform: Any, *, frame: str = "EM", level: int | None = None,
              order: int = 1, chunks: Any = None) -> xr.Dataset:
    """Put EM and LM on one grid: a lazy :class:`xarray.Dataset`.

    Parameters
    ----------
    em : xarray.DataArray or xarray.DataTree
        EM image, dims ``(y, x)``, or a multiscale tree (children ``scale0``, ``scale1``, ...).
    lm : xarray.DataArray or xarray.DataTree
        LM image, dims ``([c,] y, x)``, or a multiscale tree.
    transform : Transform or Registration
        Maps LM-frame points to EM-frame points (µm, ``(x, y)``).
    frame : {"EM", "LM"}
        Grid of the result: the EM grid (LM warped onto it) or the LM grid (EM warped).
    level : int, optional
        Pyramid level of the tree that gives the grid; only that level is read. The other
        modality, if a tree, is read at its coarsest level still as fine as that grid.
        Default 0 for the grid.
    order : int
        Interpolation order of the warped modality.
    chunks : optional
        Output chunks, as for :func:`warp`.

    Returns
    -------
    xarray.Dataset
        Variables ``"EM"`` and ``"LM"`` (dims ``([c,] y, x)``) on the chosen grid, lazy;
        attrs ``frame`` and ``clem:transform_lm_to_em``; given a Registration, also
        ``clem:registration`` and ``clem:landmarks`` (its ``to_dict()`` and its landmarks'
        JSON form), which :func:`clemlab.write_ome_zarr` stores in the group attrs.
    """
    if frame not in ("EM", "LM"):
        raise ImageError(f"frame must be 'EM' or 'LM', got {frame!r}")
    tf = _as_transform(transform)
    if frame == "EM":
        em = check_image(_level_image(em, level, "em"), "em")
        lm = check_image(_level_image(lm, None, "lm", min(em.clem.pixel_size.values())), "lm")
        fixed, moved = em, warp(lm, tf, like=em, order=order, chunks=chunks)
        data = {"EM": fixed, "LM": moved}
        name = em.attrs.get("frame", "EM")
    else:
        lm = check_image(_level_image(lm, level, "lm"), "lm")
        em = check_image(_level_image(em, None, "em", min(lm.clem.pixel_size.values())), "em")
        moved = warp(em, tf.inverse, like=lm, order=order, chunks=chunks)
        data = {"EM": moved, "LM": lm}
        name = lm.attrs.get("frame", "LM")
    attrs = {"frame": name, "clem:transform_lm_to_em": tf.to_dict()}
    if tf is not transform and hasattr(transform, "to_dict") and hasattr(transform, "landmarks"):
        # a Registration: keep it (and its landmarks) with the data, so write_ome_zarr stores them
        attrs["clem:registration"] = transform.to_dict()
        attrs["clem:landmarks"] = transform.landmarks.to_json_dict()
    return xr.Dataset(data, attrs=attrs)


def stack_channels(corr: xr.Dataset, dtype: Any = None) -> xr.DataArray:
    """One multi-channel image ``(c, y, x)`` from a correlated dataset, EM first.

    Parameters
    ----------
    corr : xarray.Dataset
        Output of :func:`correlate`.
    dtype : numpy dtype, optional
        Common dtype; default the one numpy promotes the variables to.

    Returns
    -------
    xarray.DataArray
        Channels ``"EM"`` then the LM channel names, grid coords, the grid frame's attrs and
        the LM colours. Lazy when the inputs are.
    """
    em, lm = corr["EM"], corr["LM"]
    if "c" not in lm.dims:
        lm = lm.expand_dims(c=[lm.name or "LM"])
    em = em.expand_dims(c=["EM"])
    dtype = np.result_type(em.dtype, lm.dtype) if dtype is None else np.dtype(dtype)
    out = xr.concat([em.astype(dtype), lm.astype(dtype)], dim="c", coords="minimal",
                    compat="override", combine_attrs="override")
    base = corr["EM"] if corr.attrs.get("frame", "EM") == corr["EM"].attrs.get("frame", "EM") else corr["LM"]
    out.attrs = dict(base.attrs)
    colors = {"EM": "#ffffff"} | dict(lm.attrs.get("colors") or {})
    out.attrs["colors"] = colors
    out.attrs["modality"] = "CLEM"
    out.name = "correlated"
    return out

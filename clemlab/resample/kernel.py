"""The OpenCV kernel: one output chunk resampled from its source footprint by
``cv2.warpAffine`` / ``cv2.warpPerspective`` (linear maps, one call per plane), or for
non-linear maps by the plan of :mod:`clemlab.resample.plan`: ``cv2.warpAffine`` per affine
cell and ``cv2.remap`` through the upsampled coarse nodes, a strip of rows at a time.

All calls use ``WARP_INVERSE_MAP`` with chunk-relative matrices and coordinates (output pixel
-> footprint pixel, ``(x, y)`` order) and write into the output chunk through ``dst=``.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from .. import transforms as _tf
from .footprint import _RowAssembly, _scratch, regions_bounds
from .index_map import _chunk_rows, _IndexMap, _shift, map_tolerance
from .plan import _plan
from .spline import footprint_radius

#: dtypes OpenCV resamples (others go to scipy)
_CV_DTYPES = (np.uint8, np.uint16, np.int16, np.float32)
_CV_MAX_SIDE = 32767  # OpenCV's limit on image sides (SHRT_MAX)
_SUB = 8  # second-stage upsampling factor of the coarse map (px)
_TILE = 512  # side of the output grid whose tiles OpenCV's linear-map calls compute (px)
_STRIP_ROWS = 256  # output rows per remap strip: its map (8 bytes per pixel) stays in cache


def _remap_strips(cv2: Any, flat: np.ndarray, nodes: np.ndarray, g: int, shape: tuple[int, int],
                  interp: int, border: dict, out: np.ndarray | None = None) -> np.ndarray:
    """``cv2.remap`` of each plane through the bilinearly upsampled node map, a strip of rows at a time.

    The full-resolution map takes 8 bytes per output pixel, 8 times the output of a uint8
    chunk, so it is never made whole. The nodes (spacing ``g``, laid out as
    :func:`~clemlab.resample.nodes.node_positions`) are first upsampled by ``g / 8`` for the whole chunk (a small
    array), then each strip of :data:`_STRIP_ROWS` rows by 8 into a buffer that stays in cache
    and that ``cv2.remap`` reads in place. For ``g`` = 8 x an odd number every node line is a
    line of the intermediate grid, so both stages together are exactly the bilinear
    interpolation of the nodes (other ``g``: one stage). A strip costs 8 rows more than it
    gives (one upsampling interval), where upsampling the nodes per strip would cost ``g``
    rows (2 ``g`` with whole node intervals). Written into ``out`` (planes, rows, cols: a
    region of a chunk) if given, else into a new chunk.
    """
    if out is None:
        out = np.empty((len(flat),) + tuple(shape), flat.dtype)
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


def _warp_cells(cv2: Any, flat: np.ndarray, cells: tuple[list, np.ndarray, list], shape: tuple[int, int],
                interp: int, border: dict, rows: _RowAssembly | None = None) -> np.ndarray:
    """``cv2.warpAffine`` of each plane, cell by cell (:func:`~clemlab.resample.cells.cell_affines`),
    into one output chunk, and ``cv2.remap`` (:func:`_remap_strips`) of the regions the cells
    leave (:func:`~clemlab.resample.plan._plan`).

    With ``rows``, ``flat`` is its buffer, filled just before each cell with the source rows
    the cell reads (its corners' rows, + 2 for the bilinear neighbour and rounding)."""
    out = np.empty((len(flat),) + tuple(shape), flat.dtype)
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


def _swap_matrix() -> np.ndarray:
    """Homogeneous 3x3 permutation that swaps the two spatial axes ((row, col) <-> (x, y))."""
    p = np.eye(3)
    p[:2, :2] = np.eye(2)[_tf.xy_to_rc(np.arange(2))]
    return p


def _opencv_planes(cv2: Any, flat: np.ndarray, imap: _IndexMap, start: tuple, shape: tuple,
                   lo: np.ndarray, src_shape: tuple, out_total: tuple, order: int, fill: float,
                   plan: tuple | None = None, rows: _RowAssembly | None = None) -> np.ndarray:
    """OpenCV resampling of each plane of ``flat`` (P, rows, cols), the footprint from source
    index ``lo`` of a source image of ``src_shape`` (rows, cols), onto one output chunk (P,
    rows, cols) of an output of ``out_total`` (rows, cols); with ``rows`` (cells plans only),
    ``flat`` is its buffer, filled as the cells need it."""
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
    out = np.empty((len(flat),) + tuple(shape), flat.dtype)
    p = _swap_matrix()
    flags = interp | cv2.WARP_INVERSE_MAP
    tiles = _canonical_tiles(flat, imap.matrix, start, shape, lo, src_shape, out_total)
    for t0, size, box, patch, t_lo in tiles:
        # tile-relative index matrix, then (row, col) -> (x, y) for OpenCV
        mcv = p @ _shift(-t_lo) @ imap.matrix @ _shift(np.asarray(t0, np.float64)) @ p
        (r0, r1), (c0, c1) = box  # the part of the tile inside the chunk, tile-relative
        gr, gc = t0[0] + r0 - start[0], t0[1] + c0 - start[1]
        whole = (r0, c0, r1, c1) == (0, 0, *size)
        for k, pl in enumerate(patch):
            view = out[k, gr : gr + r1 - r0, gc : gc + c1 - c0]
            # the whole tile (a pixel's value depends on the call's origin and size), then cropped
            dst = view if whole else None
            if imap.affine:
                got = cv2.warpAffine(pl, mcv[:2], size[::-1], dst=dst, flags=flags, **border)
            else:
                got = cv2.warpPerspective(pl, mcv, size[::-1], dst=dst, flags=flags, **border)
            _into(got if whole else got[r0:r1, c0:c1], view)
    return out


def _canonical_tiles(flat: np.ndarray, matrix: np.ndarray, start: tuple, shape: tuple, lo: np.ndarray,
                     src_shape: tuple, out_total: tuple):
    """The tiles of the global output grid of side :data:`_TILE` that meet one output chunk.

    OpenCV rounds each output pixel's source position to 1/32 px in fixed point from the
    matrix and the pixel's position relative to the first pixel of the call, and its float
    kernels near the source's edges depend on the call's size and source patch, so a pixel's
    value depends on the call. Every call therefore computes one whole tile of a grid fixed in
    the output (independent of the chunking) from the source patch fixed by that tile alone
    (its footprint, clipped to the image): a pixel gets the same bits in every chunking. A
    tile cut by the chunk is computed whole and cropped.

    Yields ``(t0, size, box, patch, t_lo)``: the tile's first output index (row, col); its
    size (rows, cols: :data:`_TILE`, clipped to the output of ``out_total``); the rows and
    columns ``((r0, r1), (c0, c1))`` of the tile inside the chunk (tile-relative); the source
    planes of the tile's footprint (P, rows, cols), zero where the chunk's footprint ``flat``
    (from source index ``lo``) does not reach, which only pixels outside the chunk read; and
    the footprint's first source index ``t_lo`` (row, col).
    """
    lo = np.asarray(lo, np.int64)
    hi = lo + np.array(flat.shape[1:])
    firsts = [np.arange(s // _TILE * _TILE, s + n, _TILE) for s, n in zip(start, shape)]
    t0s = np.stack(np.meshgrid(*firsts, indexing="ij"), axis=-1).reshape(-1, 2)  # (T, 2)
    sizes = np.minimum(_TILE, np.asarray(out_total) - t0s)
    # every tile's four corners mapped at once, each with the same operations whatever the
    # chunk, so a tile's source footprint does not depend on the chunk that computes it
    r = (t0s[:, :1] + np.array([0, 0, 1, 1]) * (sizes[:, :1] - 1)).astype(np.float64)  # (T, 4)
    c = (t0s[:, 1:] + np.array([0, 1, 0, 1]) * (sizes[:, 1:] - 1)).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = matrix[2, 0] * r + matrix[2, 1] * c + matrix[2, 2]  # 1 for affine maps
        mapped = np.stack([(matrix[0, 0] * r + matrix[0, 1] * c + matrix[0, 2]) / w,
                           (matrix[1, 0] * r + matrix[1, 1] * c + matrix[1, 2]) / w], axis=-1)  # (T, 4, 2)
    t_los, t_his = regions_bounds(mapped, footprint_radius(1), src_shape)
    t_his = np.maximum(t_his, t_los + 1)  # a tile that reads nothing still gets a 1-px source
    lo, hi = lo.tolist(), hi.tolist()
    for t0, size, t_lo, t_hi in zip(t0s.tolist(), sizes.tolist(), t_los.tolist(), t_his.tolist()):
        box = tuple((max(s, t) - t, min(s + n, t + _TILE) - t) for s, n, t in zip(start, shape, t0))
        a = [max(x, y) for x, y in zip(t_lo, lo)]
        b = [min(x, y) for x, y in zip(t_hi, hi)]
        if a == t_lo and b == t_hi:
            patch = flat[:, a[0] - lo[0] : b[0] - lo[0], a[1] - lo[1] : b[1] - lo[1]]
        else:
            patch = np.zeros((len(flat), t_hi[0] - t_lo[0], t_hi[1] - t_lo[1]), flat.dtype)
            if b[0] > a[0] and b[1] > a[1]:
                patch[:, a[0] - t_lo[0] : b[0] - t_lo[0], a[1] - t_lo[1] : b[1] - t_lo[1]] = \
                    flat[:, a[0] - lo[0] : b[0] - lo[0], a[1] - lo[1] : b[1] - lo[1]]
        yield tuple(t0), size, box, patch, np.array(t_lo, np.float64)

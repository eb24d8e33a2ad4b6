"""The coarse node field of a non-linear map: exact source indices on a coarse grid of
output pixels, bilinearly interpolated in between.

A smooth map (thin-plate spline, polynomial, ...) need not be evaluated at every output
pixel: it is evaluated exactly on nodes :func:`node_positions` apart and interpolated
bilinearly in between, at a spacing chosen per chunk (:func:`_plan_nodes`, coarsest first) so
that the interpolation deviates from the exact map by no more than a tolerance
(:func:`clemlab.resample.map_tolerance`) at every cell centre, where bilinear interpolation of
a smooth map errs most. ``cv2.remap`` then samples through the interpolated field
(:func:`clemlab.resample.kernel._remap_strips`); scipy through :func:`coarse_map`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _opencv
from .index_map import _chunk_rows, _IndexMap, map_tolerance

#: node spacings tried (px), coarsest first: 8 x an odd number, so that upsampling the nodes
#: by g/8 and then by 8 is exact bilinear interpolation (see kernel._remap_strips), then 4, 2
_SPACINGS = (120, 56, 24, 8, 4, 2)


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

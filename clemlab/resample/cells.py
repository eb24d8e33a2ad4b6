"""Piecewise-affine planning of a non-linear map: cells of an output chunk on each of which
the map is affine within a tolerance.

A smooth map is nearly affine over small enough regions, and one ``cv2.warpAffine`` per
region costs about as much per pixel as one for a whole chunk, far less than ``cv2.remap``
through a per-pixel map (8 bytes per pixel written and read again). Each chunk is tiled by a
quadtree of cells (:func:`cell_affines`), each checked against the exact map on a 5 x 5
lattice and fitted by :func:`_affine_fits`; what the cells cannot cover within the OpenCV-call
budget is left to ``cv2.remap`` through coarse nodes (:mod:`clemlab.resample.nodes`).
"""

from __future__ import annotations

import functools

import numpy as np

from .index_map import _chunk_rows, _IndexMap, map_tolerance

#: largest cell side (px): the quadtree starts here
_CELL_MAX = 512
#: smallest cell side (px): a cell this small that is still not affine goes to cv2.remap
_CELL_MIN = 32
#: OpenCV calls per chunk for the cells (and the regions left to cv2.remap): one per this many
#: output px on average (256 per 2048² chunk), at least 4. Small cells cost more per pixel
#: than large ones (per-call overhead, shorter rows), and each call hands the GIL over to the
#: other dask thread, so the budget bounds both.
_CELL_AREA = 128 * 128
#: a chunk whose cells leave more than this share of it to cv2.remap is remapped whole
_REMAP_SHARE = 0.5
#: a cell's 5 x 5 lattice in normalised coordinates (row, col in 0, 1/4, .., 1)
_LATTICE = np.linspace(0.0, 1.0, 5)
#: distinct lattice shapes fitted: 5 x 5 cells, and merged pairs of 9 x 5 or 5 x 9
_PINV_CACHE = 4


def _cell_lattice(r0: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Lattice coordinates ``(n, L)`` along one axis of cells ``[r0, r0 + h)``: from the first pixel to one past the last."""
    return r0[:, None] + h[:, None] * _LATTICE


@functools.lru_cache(maxsize=_PINV_CACHE)
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
    become one cell: fewer OpenCV calls, and wider rows. Per parent, the pairing (two wide halves or two tall ones) that merges more
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


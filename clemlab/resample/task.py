"""One output chunk's task: assemble its source footprint and resample it, through OpenCV
(2-D, order 0/1, the dtypes of :data:`~clemlab.resample.kernel._CV_DTYPES`) or
``scipy.ndimage`` (everything else, exact float64 coordinates), then cast to the output dtype.

Tasks are module-level functions, so dask.distributed can pickle them.
"""

from __future__ import annotations

import numpy as np

from .. import _opencv
from . import spline
from .footprint import _assemble, _RowAssembly
from .index_map import _IndexMap
from .kernel import _CV_DTYPES, _opencv_planes
from .nodes import coarse_map


def _warp_task(blocks: list, spec: dict, plans: list | None = None) -> np.ndarray:
    """Resample one output chunk from the source blocks covering its footprint (with its group's
    :func:`~clemlab.resample.plan._plan` for non-linear maps)."""
    plan = None if plans is None else plans[spec["plan_index"]]
    if plan is not None and plan[0] == "cells" and len(blocks) > 1:  # filled row by row as cells need them
        rows = _RowAssembly(blocks, spec["starts"], spec["lo"], spec["hi"], spec["nlead"])
        return _resample(rows.out, spec, plan, rows)
    return _resample(_assemble(blocks, spec["starts"], spec["lo"], spec["hi"], spec["nlead"]), spec, plan)


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
        # OpenCV's thread count is left alone: a second concurrent caller runs serially in its
        # own thread, so two dask threads do not oversubscribe its pool, and the pool fills a
        # core while the other dask thread reads or writes (one OpenCV thread per task, or
        # calls split into bands small enough to run serially, are slower: bench_warp.py)
        cv2 = _opencv.load()
        out = _opencv_planes(cv2, flat, imap, start, shape, lo, spec["src_shape"], spec["out_total"],
                             order, fill, plan, rows)
    else:
        out = _scipy_planes(flat, imap, start, shape, lo, order, fill)
    return _cast(out, dtype).reshape(lead + tuple(shape))


def _linear_coords(matrix: np.ndarray, affine: bool, start: tuple, shape: tuple, lo: np.ndarray) -> list:
    """Footprint-relative source indices of every pixel of an output chunk, per axis, from a
    linear index map ``matrix`` (D+1, D+1).

    Each index is computed from the pixel's global output index with the same operations in
    the same order whatever the chunk, then the footprint's first pixel (an integer, at most
    the index) is subtracted, which is exact: a pixel's position, hence its interpolation
    weights, are the same bits in every chunking.
    """
    d = len(shape)
    axes = np.meshgrid(*[np.arange(s, s + n, dtype=np.float64) for s, n in zip(start, shape)],
                       indexing="ij", sparse=True)

    def row(i: int) -> np.ndarray:
        acc = matrix[i, 0] * axes[0]
        for k in range(1, d):
            acc = acc + matrix[i, k] * axes[k]
        return np.broadcast_to(acc + matrix[i, d], tuple(shape))

    coords = [row(i) for i in range(d)]
    if not affine:
        w = row(d)
        coords = [c / w for c in coords]
    return [c - l for c, l in zip(coords, lo)]


def _scipy_planes(flat: np.ndarray, imap: _IndexMap, start: tuple, shape: tuple, lo: np.ndarray,
                  order: int, fill: float) -> np.ndarray:
    """``scipy.ndimage.map_coordinates`` of each plane of ``flat`` (P, footprint...) onto one
    output chunk (P, shape...), float64; orders 2-5 through the finite prefilter of
    :mod:`~clemlab.resample.spline`."""
    from scipy import ndimage

    d = len(shape)
    if imap.matrix is not None:
        coords = np.stack(_linear_coords(imap.matrix, imap.affine, start, shape, lo))
    elif d == 2:
        maps, _, _ = coarse_map(imap, start, shape, lo, np.float64)
        coords = np.moveaxis(maps, -1, 0)
    else:
        idx = np.indices(shape, dtype=np.float64).reshape(d, -1).T
        coords = (imap(idx, start) - lo).T.reshape((d,) + tuple(shape))
    planes = [spline.coefficients(pl, order) if order > 1 else np.asarray(pl, np.float64) for pl in flat]
    return np.stack([ndimage.map_coordinates(pl, coords, order=order, mode="constant", cval=fill, prefilter=False)
                     for pl in planes])


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` as ``dtype``: integers rounded and saturated, as OpenCV's results already are."""
    if values.dtype == dtype:  # OpenCV results: already rounded and saturated
        return values
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype, copy=False)



def _method(dtype: np.dtype, order: int, ndim: int) -> str:
    """``"opencv"`` for 2-D, order 0/1 and a dtype OpenCV resamples; ``"scipy"`` otherwise."""
    if ndim == 2 and order <= 1 and any(dtype == np.dtype(t) for t in _CV_DTYPES):
        return "opencv"
    return "scipy"


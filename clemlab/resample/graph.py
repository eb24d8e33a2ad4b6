"""The dask graph of a warp: one task per output chunk, fed only the source blocks under its
footprint, and for non-linear maps resampled by OpenCV one planning task per group of chunks.

At graph-construction time each chunk's footprint (its corners for affine maps, a dense
sample of its boundary and interior for others, with a margin for the curvature in between)
is mapped through the exact index map; the task then receives only the source blocks that
cover it (:func:`clemlab.resample.task._warp_task`).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from .._dask_view import dask_view
from ..errors import ImageError
from .footprint import source_bounds
from .index_map import _chunk_rows, _IndexMap, map_tolerance
from .kernel import _CV_MAX_SIDE
from .plan import _plan
from .spline import footprint_radius
from .task import _warp_task

#: non-linear maps through OpenCV: chunks are planned in groups of up to 4 x 4, one planning
#: task per group shared by every channel (see plan._plan)
_PLAN_GROUP = 4


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


def _build(src_data: Any, nlead: int, imap: _IndexMap, out_chunks: tuple, order: int, fill: float,
           dtype: np.dtype, method: str) -> tuple[Any, int]:
    """The lazy output array (lead dims + spatial) and the number of chunks that hit the source."""
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    if not isinstance(src_data, da.Array):
        src_data = dask_view(src_data)
    src_shape = src_data.shape[nlead:]
    lead_chunks = src_data.chunks[:nlead]
    bounds = [np.concatenate([[0], np.cumsum(c)]) for c in src_data.chunks[nlead:]]
    margin = footprint_radius(order)  # source px an output pixel's value depends on, per axis
    name = "clemlab-warp-" + tokenize(src_data.name, imap.tf.to_dict(), imap.src_m, imap.dst_m, out_chunks,
                                      order, fill, str(dtype), method)
    layer: dict = {}
    hits = 0
    out_starts = [np.concatenate([[0], np.cumsum(c)[:-1]]) for c in out_chunks]
    dense = imap.matrix is None or not imap.affine
    # non-linear maps through OpenCV: one planning task per group of chunks
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
        lo, hi = source_bounds(pts, margin + extra, src_shape)
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
            spec = dict(starts=starts, lo=tuple(lo), hi=tuple(hi), src_shape=tuple(src_shape), nlead=nlead,
                        out_total=tuple(int(sum(c)) for c in out_chunks), map=imap, out_start=start,
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


"""How each output chunk of a non-linear map is resampled through OpenCV: affine cells, with
coarse nodes for what the cells leave, or coarse nodes for the whole chunk.
"""

from __future__ import annotations

import numpy as np

from .cells import _plan_cells
from .index_map import _IndexMap
from .nodes import _plan_nodes


def _plan(index_map: _IndexMap, chunks: np.ndarray, tol: float) -> list:
    """How each 2-D chunk (rows of :func:`~clemlab.resample.index_map._chunk_rows`) of a
    non-linear map is resampled.

    Per chunk ``("cells", (boxes, matrices, remaps))``
    (:func:`~clemlab.resample.cells.cell_affines`; ``remaps``: per box left to ``cv2.remap``,
    ``(box, values, spacing)`` of its own coarse nodes) or
    ``("nodes", (values, spacing))`` (:func:`~clemlab.resample.nodes._coarse_nodes`, for
    :func:`~clemlab.resample.kernel._remap_strips`), the whole chunk through ``cv2.remap``.
    Planned for a group of chunks in one task: each step evaluates the map once for the whole
    group, so the per-call overhead of numpy (which holds the GIL, while OpenCV calls in the
    other dask thread wait for it) is paid per group, not per chunk.
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


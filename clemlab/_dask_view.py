"""An in-memory array seen as a dask array without copying it."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np


def dask_view(arr: Any) -> Any:
    """``arr`` as a dask array of one block that is the array itself, not a copy.

    ``dask.array.from_array`` copies an in-memory input whole, which costs as much time and
    memory as the array; clemlab's lazy operations only read their input, so the caller's
    array serves directly. It is read when the result is computed, as a numpy view would be:
    change it in place only after computing.

    Parameters
    ----------
    arr : array_like
        Any shape and dtype (``numpy.asarray`` of it, which copies only what is not yet an
        ndarray).

    Returns
    -------
    dask.array.Array
        Same shape and dtype, one chunk.
    """
    import dask.array as da
    from dask.highlevelgraph import HighLevelGraph

    arr = np.asarray(arr)
    name = f"clemlab-in-memory-{uuid.uuid4().hex}"  # hashing the values would cost a pass over them
    graph = HighLevelGraph.from_collections(name, {(name,) + (0,) * arr.ndim: arr}, dependencies=[])
    return da.Array(graph, name, tuple((n,) for n in arr.shape), meta=arr[(slice(0, 0),) * arr.ndim])

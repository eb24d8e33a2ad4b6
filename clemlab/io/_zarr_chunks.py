"""Whole-chunk I/O for local zarr v2 arrays, without zarr-python's per-call machinery.

zarr-python 3 sends every ``array[region]`` read or write through its asyncio event loop
thread and codec pipeline. For the access pattern of clemlab's streaming writer and lazy
reader (one dask task = one whole chunk of a local folder) that hop costs more than the
codec itself (``benchmarks/bench_warp.py``, row ``io-floor``). A zarr v2 chunk is simply a
file ``<array>/<i>/<j>`` (or ``<i>.<j>``) holding ``compressor.encode(chunk)``, the chunk in
C order padded to the full chunk shape with ``fill_value`` at the array's far edges; this
module reads and writes exactly that, with the same numcodecs codec, so zarr (any version)
reads what is written here and the bytes equal zarr's own (tested). Anything this module
does not cover (filters, F order, object or structured dtypes, partial chunks, zarr v3
arrays) returns ``None`` / falls back to zarr.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["v2_layout", "read_dask", "ChunkWriter"]


def v2_layout(array_path: str | os.PathLike) -> dict | None:
    """The chunk layout of a local zarr v2 array, or None if this module cannot handle it.

    Parameters
    ----------
    array_path : path-like
        The array's folder (holding ``.zarray``).

    Returns
    -------
    dict or None
        ``shape``, ``chunks`` (tuples of int, array order), ``dtype`` (numpy dtype),
        ``fill_value``, ``codec`` (numcodecs codec or None), ``sep`` ("/" or ".").
    """
    p = Path(array_path) / ".zarray"
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.get("zarr_format") != 2 or meta.get("order", "C") != "C" or meta.get("filters"):
        return None
    try:
        dtype = np.dtype(meta["dtype"])
    except (TypeError, KeyError):
        return None
    if dtype.kind not in "biuf" or dtype.fields:
        return None
    codec = None
    if meta.get("compressor"):
        from numcodecs import get_codec

        try:
            codec = get_codec(dict(meta["compressor"]))
        except (ValueError, KeyError, TypeError):
            return None
    fill = meta.get("fill_value")
    return {
        "shape": tuple(int(n) for n in meta["shape"]),
        "chunks": tuple(int(n) for n in meta["chunks"]),
        "dtype": dtype,
        "fill_value": 0 if fill is None else fill,
        "codec": codec,
        "sep": meta.get("dimension_separator", "."),
    }


def _chunk_file(root: str, idx: tuple[int, ...], sep: str) -> str:
    if not idx:
        return os.path.join(root, "0")
    if sep == "/":
        return os.path.join(root, *(str(i) for i in idx))
    return os.path.join(root, ".".join(str(i) for i in idx))


def _read_chunk(root: str, idx: tuple[int, ...], layout: dict) -> np.ndarray:
    """One chunk as a writable array, trimmed at the array's far edges."""
    chunks, shape, dtype = layout["chunks"], layout["shape"], layout["dtype"]
    trim = tuple(slice(0, min(c, n - i * c)) for i, c, n in zip(idx, chunks, shape))
    try:
        with open(_chunk_file(root, idx, layout["sep"]), "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:  # never written: the fill value, as zarr reads it
        return np.full(tuple(s.stop for s in trim), layout["fill_value"], dtype)
    full = np.empty(chunks, dtype)
    codec = layout["codec"]
    if codec is None:
        full.reshape(-1).view(np.uint8)[:] = np.frombuffer(raw, np.uint8)
    else:
        codec.decode(raw, out=full)
    return full if all(s.stop == c for s, c in zip(trim, chunks)) else full[trim]


def read_dask(array_path: str | os.PathLike, layout: dict, name: str | None = None):
    """A dask array reading the zarr v2 array chunk by chunk (dask chunks = zarr chunks).

    Parameters
    ----------
    array_path : path-like
        The array's folder.
    layout : dict
        From :func:`v2_layout`.
    name : str, optional
        Dask name; default derived from the path, the layout and the ``.zarray`` file's
        modification time (so a rewritten array gets a new name).

    Returns
    -------
    dask.array.Array
        Shape ``layout["shape"]``, dtype ``layout["dtype"]``.
    """
    import itertools

    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    root = str(Path(array_path))
    shape, chunks = layout["shape"], layout["chunks"]
    dchunks = tuple(tuple(min(c, n - k) for k in range(0, n, c)) if n else (0,) for n, c in zip(shape, chunks))
    if name is None:
        stamp = os.stat(os.path.join(root, ".zarray")).st_mtime_ns
        name = "clemlab-zarr-" + tokenize(root, stamp, shape, chunks, str(layout["dtype"]))
    layer = {
        (name,) + idx: (_read_chunk, root, idx, layout)
        for idx in itertools.product(*(range(len(c)) for c in dchunks))
    }
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[])
    return da.Array(graph, name, dchunks, dtype=layout["dtype"])


class ChunkWriter:
    """A ``dask.array.store`` target writing whole chunks of a local zarr v2 array directly.

    ``writer[region] = block`` for a region that is exactly one chunk (the far-edge chunks
    may be short) encodes and writes that chunk's file; any other region goes through the
    zarr array (opened on first need, so the writer pickles to dask.distributed workers as
    a path and a layout).

    Parameters
    ----------
    array_path : path-like
        The array's folder (created by zarr, so ``.zarray`` exists).
    layout : dict
        From :func:`v2_layout`.
    """

    def __init__(self, array_path: str | os.PathLike, layout: dict):
        self.root = str(Path(array_path))
        self.layout = layout
        self.shape = layout["shape"]
        self.dtype = layout["dtype"]
        self.ndim = len(self.shape)
        self._zarr = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_zarr"] = None
        return state

    def _chunk_index(self, key: Any) -> tuple[int, ...] | None:
        if not isinstance(key, tuple) or len(key) != self.ndim:
            return None
        idx = []
        for s, c, n in zip(key, self.layout["chunks"], self.shape):
            if not isinstance(s, slice) or s.step not in (None, 1):
                return None
            start, stop = s.start or 0, n if s.stop is None else s.stop
            if start % c or stop != min(start + c, n):
                return None
            idx.append(start // c)
        return tuple(idx)

    def __setitem__(self, key: Any, value: Any) -> None:
        idx = self._chunk_index(key)
        value = np.asarray(value)
        if idx is None or value.dtype != self.dtype:
            if self._zarr is None:
                import zarr

                self._zarr = zarr.open_array(self.root, mode="r+")
            self._zarr[key] = value
            return
        chunks = self.layout["chunks"]
        if value.shape != chunks:  # far-edge chunk: zarr v2 stores it padded to full size
            full = np.full(chunks, self.layout["fill_value"], self.dtype)
            full[tuple(slice(0, s) for s in value.shape)] = value
            value = full
        value = np.ascontiguousarray(value)
        codec = self.layout["codec"]
        data = value if codec is None else codec.encode(value)
        path = _chunk_file(self.root, idx, self.layout["sep"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(memoryview(data).cast("B") if isinstance(data, np.ndarray) else data)

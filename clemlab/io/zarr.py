"""OME-Zarr: streaming multiscale writer (NGFF 0.5, zarr v3, sharded) and lazy reader (0.4-0.6).

Layout written by :func:`write_ome_zarr` (zarr format 3, through zarr-python)::

    name.ome.zarr/
        zarr.json             attributes: ome: {"version": "0.5", "multiscales": [axes with
                              units, scale + translation per level], "omero": channel labels
                              and colours}, clemlab: {"version": 1, "attrs": image attrs
                              (frame, clem:transforms, ...), "registration":
                              Registration.to_dict() (optional), "landmarks": Landmarks JSON
                              document (optional)}
        0/ 1/ 2/ ...          levels; level k downsampled by f_k in y and x (block mean)
        coordinateTransformations/...   fields of a non-linear registration (optional)

With ``registration=``, the root becomes NGFF 0.6 and carries the registration as coordinate
transformations between the named systems ``"lm"`` and ``"em"`` (µm); see
:func:`clemlab.io.ngff_transforms_write.write_registration`. The ``clemlab`` sidecar keeps
what NGFF cannot say (landmarks, uncertainties, fit statistics).

Level ``k`` has pixel size ``f_k * s0`` and its first pixel centre at
``origin0 + (f_k - 1) / 2 * s0``: the convention of :func:`clemlab.io.open_multiscale`
(NGFF puts pixel centres at ``scale * index + translation``). z and c are never downsampled.

Chunks and shards. Each array is stored in shards (one object per shard) of
``SHARD_CHUNKS x SHARD_CHUNKS`` inner chunks in y and x, so a large mosaic is a few dozen
objects while a reader can still fetch one small chunk; chunks are Blosc-LZ4 compressed and
carry a CRC-32C checksum. zarr-python creates the group and the arrays' metadata everywhere;
the chunks of a local store are written through tensorstore (its C++ zarr v3 engine encodes
and writes on its own threads while dask computes the next blocks), those of other URLs
through zarr-python. The group's ``clemlab.complete`` attribute is set once every chunk is
written, so the reader reports an absent chunk of such a store as damage.
Each level's dask chunks are cut on that level's shard grid, so no two tasks ever write the
same shard. The pyramid is written in passes (``dask.array.store``), one per square block of
level-0 shards of at most STORE_BLOCK_BYTES, every level's share of the block at once; a
pass's level-0 shards are written while the next pass computes, so peak memory is bounded by
two blocks, whatever the image size. Coarser levels whose shards span several blocks are
completed pass after pass (zarr merges a partial shard write with what is stored). Levels are
read back as dask chunks of at most READ_CHUNK_SIDE px a side, so a computation reads only the
parts of shards it needs.

Local targets (a path or ``file://`` URL) are written into a temporary folder beside the
target and renamed into place at the end, so a reader never sees a half-written pyramid;
other URLs (``memory://``, ``s3://``, ...) are written in place.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from .._dask_view import dask_view
from ..errors import FileExistsRefusedError, FileFormatError, ImageError

__all__ = ["write_ome_zarr", "read_ome_zarr", "open_multiscale", "is_ome_zarr", "NGFF_VERSION"]

#: The NGFF version written (without a registration; with one, 0.6).
NGFF_VERSION = "0.5"
_AXIS_TYPES = {"c": "channel", "z": "space", "y": "space", "x": "space"}
_NGFF_UNIT = "micrometer"
#: Default inner chunk side in y and x, pixels (256 kB for uint8).
DEFAULT_CHUNK = 512
#: Inner chunks per shard side, in y and x.
SHARD_CHUNKS = 8
#: Level-0 bytes of the blocks that write_ome_zarr stores one after another (at least one shard).
STORE_BLOCK_BYTES = 128 * 2**20
#: Largest default dask chunk side (y, x) of a level read from a sharded store, px: a shard is
#: read in parts of whole inner chunks, so a lazy computation over a region reads only the
#: parts it needs and holds blocks of a few MB.
READ_CHUNK_SIDE = 2048


def _fmt(path: Any) -> str:
    return f"'{os.fspath(path)}'"


def _is_url(path: Any) -> bool:
    return isinstance(path, str) and "://" in path


def _local_path(path: Any) -> Path | None:
    """The local folder ``path`` names (a path or a ``file://`` URL), else None (a remote URL)."""
    if isinstance(path, os.PathLike) or not _is_url(path):
        return Path(path)
    url = urlparse(path)
    if url.scheme == "file":
        return Path(unquote(url.path))
    return None


def is_ome_zarr(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder that looks like a zarr group (v2 or v3), or a URL
    (other than ``file://``), which only zarr can open."""
    p = _local_path(path)
    if p is None:
        return True
    return p.is_dir() and any((p / n).exists() for n in (".zgroup", ".zattrs", "zarr.json"))


# ---------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------
def _as_writable_image(obj: Any):
    import xarray as xr

    from ..image import check_image

    if isinstance(obj, xr.Dataset):
        from ..correlate import stack_channels

        if not {"EM", "LM"} <= set(obj.data_vars):
            raise ImageError("a Dataset to write must come from clemlab.correlate (variables 'EM' and 'LM')")
        img = stack_channels(obj)
        img.attrs["clem:transform_lm_to_em"] = obj.attrs.get("clem:transform_lm_to_em")
        for key in _DOC_ATTRS.values():  # a registration / landmarks the Dataset carries
            if obj.attrs.get(key) is not None:
                img.attrs[key] = obj.attrs[key]
        return img
    return check_image(obj, "image")


#: group-attrs key under "clemlab" -> image attr that holds the same document when read back
_DOC_ATTRS = {"registration": "clem:registration", "landmarks": "clem:landmarks"}


def _documents(attrs: dict, registration: Any, landmarks: Any) -> dict[str, Any]:
    """The registration / landmarks documents to store: from the arguments, else from attrs.

    ``attrs`` loses the ``clem:registration`` / ``clem:landmarks`` entries (they are stored
    once, beside the image attrs, not inside them).
    """
    from ..errors import LandmarkError, RegistrationError
    from ..landmarks import Landmarks
    from ..registration import Registration

    docs = {}
    for key, attr in _DOC_ATTRS.items():
        value = attrs.pop(attr, None)
        if value is not None:
            docs[key] = value
    given = {
        "registration": (registration, Registration, Registration.to_dict, RegistrationError,
                         "a clemlab Registration (the result of clemlab.register(landmarks, ...))",
                         "; a bare transform goes in with image.clem.with_transform(...)"),
        "landmarks": (landmarks, Landmarks, Landmarks.to_json_dict, LandmarkError,
                      "a clemlab Landmarks table (clemlab.Landmarks.from_points(...) or Landmarks.read(path))", ""),
    }
    for key, (value, cls, to_doc, error, what, hint) in given.items():
        if value is None:
            continue
        if not isinstance(value, cls):
            raise error(f"{key}= must be {what}, got {type(value).__name__}{hint}")
        docs[key] = to_doc(value)
    return docs


def _codecs() -> list:
    """The inner-chunk codecs written: Blosc LZ4 (level 5, byte shuffle), then a CRC-32C checksum.

    LZ4 encodes at several GB/s per core, so compressing never dominates a warp-and-write
    pass (zstd, zarr's default, does), and it still shrinks fill regions and smooth images.
    Blosc stores incompressible data (most EM) as a plain copy, so a damaged byte would read
    as a wrong pixel: the checksum makes every damaged chunk fail to decode instead.
    Every chunk is written (``write_empty_chunks``), so a store marked complete
    (``clemlab.complete``) has no absent chunk: the reader reports one as damage.
    """
    from zarr.codecs import BloscCodec, Crc32cCodec

    return [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"), Crc32cCodec()]


def _default_factors(shape_yx: tuple[int, int], chunk: int) -> list[int]:
    factors, f = [], 2
    while max(shape_yx) / (f // 2) > chunk and min(shape_yx) // f >= 1:
        factors.append(f)
        f *= 2
    return factors


def _downsample(arr, dims: tuple[str, ...], r: int):
    """Block mean by ``r`` over y and x (trailing partial blocks dropped), same dtype."""
    import dask.array as da

    axes = {dims.index(d): r for d in ("y", "x")}
    sl = tuple(slice(0, (n // r) * r) if i in axes else slice(None) for i, n in enumerate(arr.shape))
    arr = arr[sl]
    arr = arr.rechunk({i: max(r, (c[0] // r) * r) for i, c in ((i, arr.chunks[i]) for i in axes)})
    dtype = arr.dtype
    out = da.coarsen(np.mean, arr.astype(np.float64) if dtype.kind in "iub" else arr, axes, trim_excess=True)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        out = da.clip(da.rint(out), info.min, info.max)
    return out.astype(dtype)


def _level_grid(shape: tuple[int, ...], dims: tuple[str, ...], csize: dict) -> tuple[tuple, tuple]:
    """``(inner chunk shape, shard shape)`` of one level: one channel per chunk; y and x
    chunks of ``csize`` (at most the level) in shards of SHARD_CHUNKS chunks (at most the
    chunks covering the level); z shards of one chunk."""
    chunk, shard = [], []
    for d, n in zip(dims, shape):
        c = 1 if d == "c" else max(1, min(csize[d], n))
        s = min(SHARD_CHUNKS * c, -(-n // c) * c) if d in ("y", "x") else c
        chunk.append(c)
        shard.append(s)
    return tuple(chunk), tuple(shard)


def _aligned_chunks(start: int, n: int, c: int) -> tuple[int, ...]:
    """Chunk sizes of ``n`` elements starting at global index ``start``, cut at multiples of ``c``."""
    if n == 0:
        return (0,)
    first = min(n, c - start % c)
    rest = n - first
    return (first,) + (c,) * (rest // c) + ((rest % c,) if rest % c else ())


def _pyramid(data, dims: tuple[str, ...], factors: list[int], shards: list[tuple], offset: dict | None = None) -> list:
    """Levels (level 0 = ``data``, then block means by each factor), dask-chunked on each
    level's shard grid (``shards[k]``, the shard shape of level ``k``).

    ``offset`` ({"y": int, "x": int}, level-0 pixels, multiples of every factor) places
    ``data`` inside the whole image: the chunks then break where the whole image's shards do,
    so no two tasks write one shard.
    """
    offset = offset or {"y": 0, "x": 0}
    levels, cur, cur_f = [], data, 1
    for k, f in enumerate([1] + factors):
        if f > 1:
            cur = _downsample(cur, dims, f // cur_f)
            cur_f = f
        chunks = tuple(_aligned_chunks(offset.get(d, 0) // f, n, s) for d, n, s in zip(dims, cur.shape, shards[k]))
        levels.append(cur.rechunk(chunks))
    return levels


class _TensorStoreTarget:
    """A local zarr v3 array written through tensorstore, as a ``dask.array.store`` target.

    ``target[region] = block`` hands the block to tensorstore and returns at once: tensorstore
    encodes (Blosc, checksum, shard index) and writes on its own threads while dask's threads
    compute the next blocks, so compute and compression/IO overlap. :meth:`wait`, called after
    every pass, blocks until the writes handed over are on disk (raising the first write
    error), so at most two passes' blocks are held.
    """

    def __init__(self, path: Path):
        import tensorstore as ts

        self._array = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}},
                              open=True).result()
        self._pending: list = []
        self._pass = 0  # the pass whose writes are being handed over (see wait)
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        # a copy sent to another process (a dask.distributed worker) writes each block before its
        # task ends: this process cannot wait for the writes of another
        return {"_array": self._array, "_pass": 0, "_pending": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __setitem__(self, region: tuple, block: np.ndarray) -> None:
        # the block is not modified after the hand-over, so tensorstore may keep it without a copy
        future = self._array[region].write(np.asarray(block), can_reference_source_data_indefinitely=True)
        if self._pending is None:  # a copy in another process
            future.result()
            return
        with self._lock:  # dask's threads hand blocks over concurrently
            # a future keeps its block until it is dropped: finished writes are checked and let go
            self._pending = [(p, f) for p, f in self._pending if not _finished(f)] + [(self._pass, future)]

    def wait(self, *, but_last_pass: bool = False) -> None:
        """Block until the writes handed over are on disk (raising the first write error); with
        ``but_last_pass``, only those handed over before the previous call, so the writes of
        the pass just computed go on while the next pass computes. Called between passes."""
        keep = []
        for p, future in self._pending:
            if but_last_pass and p == self._pass:
                keep.append((p, future))
            else:
                future.result()
        self._pending = keep
        self._pass += 1


def _finished(future: Any) -> bool:
    """Whether a tensorstore write is done (raising its error, if it failed)."""
    if future.done():
        future.result()
        return True
    return False


def _store_blocks(data, targets: list, dims: tuple[str, ...], factors: list[int], shards: list[tuple]) -> None:
    """Compute and write the pyramid, one level-0 block of ``n x n`` shards at a time.

    One ``dask.array.store`` over a large lazy image (e.g. a warp) lets dask's ordering read
    inputs for far-away output chunks long before they are used, so peak memory would grow
    with the image. Storing block by block (every level's share of the block in the same pass)
    bounds it by one block's inputs and results, plus the previous block's results that
    tensorstore is still writing (level 0's, which no other block shares). Inputs on a block
    edge are computed (read) once per block that needs them, so blocks are as large as STORE_BLOCK_BYTES allows and square, the shape
    with the shortest edge for their area. Blocks start on level-0 shards and on every level's
    pixels.
    """
    import dask.array as da

    iy, ix = dims.index("y"), dims.index("x")
    fmax = max([1] + factors)
    shard_bytes = data.dtype.itemsize * math.prod(n if i in (iy, ix) else data.shape[i] for i, n in enumerate(shards[0]))
    n = max(1, math.isqrt(STORE_BLOCK_BYTES // shard_bytes))
    step = {}
    for d, i in (("y", iy), ("x", ix)):
        unit = math.lcm(shards[0][i], fmax)
        step[d] = -(-n * shards[0][i] // unit) * unit
    ny, nx = data.shape[iy], data.shape[ix]
    for y0 in range(0, ny, step["y"]):
        for x0 in range(0, nx, step["x"]):
            sl = [slice(None)] * data.ndim
            sl[iy], sl[ix] = slice(y0, min(ny, y0 + step["y"])), slice(x0, min(nx, x0 + step["x"]))
            block = _pyramid(data[tuple(sl)], dims, factors, shards, {"y": y0, "x": x0})
            keep, regions = [], []
            for k, (lev, f) in enumerate(zip(block, [1] + factors)):
                if lev.shape[iy] == 0 or lev.shape[ix] == 0:
                    continue
                reg = [slice(None)] * data.ndim
                reg[iy] = slice(y0 // f, y0 // f + lev.shape[iy])
                reg[ix] = slice(x0 // f, x0 // f + lev.shape[ix])
                keep.append(k)
                regions.append(tuple(reg))
            da.store([block[k] for k in keep], [targets[k] for k in keep], regions=regions,
                     lock=False, compute=True)
            for k in keep:  # coarser levels read back shards this pass wrote in part
                if hasattr(targets[k], "wait"):
                    # level-0 shards belong to one block each, so the next pass computes while this
                    # one's are written; peak memory then holds at most two blocks' writes
                    targets[k].wait(but_last_pass=k == 0)
    for target in targets:
        if hasattr(target, "wait"):
            target.wait()


def _jsonable(obj: Any) -> Any:
    try:
        return json.loads(json.dumps(obj, allow_nan=False, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    except ValueError as exc:
        raise ImageError(f"attrs must hold plain JSON-able values to be written to OME-Zarr ({exc})") from None


def write_ome_zarr(image: Any, path: str | os.PathLike, *, scale_factors: Sequence[int] | None = None,
                   chunks: int | Sequence[int] | None = None, overwrite: bool = False, registration: Any = None,
                   landmarks: Any = None) -> Path | str:
    """Write an image (or a correlated Dataset) as a multiscale OME-Zarr 0.5, streamed with dask.

    Parameters
    ----------
    image : xarray.DataArray or xarray.Dataset
        A clemlab image, dims ``([c,] [z,] y, x)``, numpy- or dask-backed (never loaded whole),
        or the Dataset of :func:`clemlab.correlate` (written as channels ``EM`` + LM channels).
    path : str or os.PathLike
        Folder to create (conventionally ``*.ome.zarr``), or a URL zarr/fsspec opens
        (``file://``, ``memory://``, ``s3://``, ...).
    scale_factors : sequence of int, optional
        Downsampling factor of each level after the first, relative to full resolution,
        increasing, each a multiple of the previous (e.g. ``(2, 4, 8)``). Default: powers of 2
        until the image fits in one chunk. Only y and x are downsampled.
    chunks : int or sequence of int, optional
        Inner zarr chunk side for the spatial dims (a sequence in array order), pixels.
        Default: 512 in y and x, 1 in z. Chunks are grouped in shards of SHARD_CHUNKS² (8 x 8)
        chunks in y and x; channels are chunked one by one.
    overwrite : bool
        Replace an existing OME-Zarr image at ``path`` (default False: refuse). Anything else
        at ``path`` (a file, a folder that is not an OME-Zarr image) is never replaced.
    registration : clemlab.registration.Registration, optional
        Written as NGFF 0.6 coordinate transformations ``"lm"`` -> ``"em"`` (the root becomes
        NGFF 0.6; :func:`clemlab.read_transform` reads it back; the image lives in ``"em"``,
        or in ``"lm"`` when its frame is the registration's source frame: then a non-linear
        map is sampled to 0.05 of the image's own pixel) and, in full, in the group
        attrs as ``clemlab.registration`` (:meth:`Registration.to_dict`: model, transform,
        landmarks, diagnostics). Default: the image's (or Dataset's) ``clem:registration``
        attr, if any.
    landmarks : clemlab.landmarks.Landmarks, optional
        Stored as ``clemlab.landmarks`` (the versioned landmarks JSON document). Default: the
        ``clem:landmarks`` attr, if any.

    Returns
    -------
    pathlib.Path or str
        ``path`` (a Path for a local folder, the URL otherwise).

    Raises
    ------
    FileExistsError
        Something exists at ``path`` and ``overwrite`` is False, or (even with ``overwrite``)
        it is not an OME-Zarr image: a file or another folder is never replaced.
    FileFormatError
        The folder of ``path`` does not exist or is not writable.
    ImageError
        Bad ``scale_factors``/``chunks`` or attrs that are not JSON-able.
    RegistrationError, LandmarkError
        ``registration=`` / ``landmarks=`` of the wrong type.

    Notes
    -----
    Reading back (:func:`clemlab.io.open_image`, :func:`open_multiscale`) puts the documents in
    the attrs ``clem:registration`` and ``clem:landmarks`` of every level, as plain dicts:
    ``Registration.from_dict(img.attrs["clem:registration"])`` and
    ``Landmarks.from_json_dict(img.attrs["clem:landmarks"])`` rebuild them exactly.

    Examples
    --------
    >>> reg = cl.register(landmarks, model="affine")                     # doctest: +SKIP
    >>> cl.write_ome_zarr(cl.correlate(em, lm, reg), "corr.ome.zarr", registration=reg)  # doctest: +SKIP
    """
    import dask.array as da

    img = _as_writable_image(image)
    local = _local_path(path)
    _check_replaceable(path, overwrite)
    if local is not None:
        parent = local.parent if str(local.parent) else Path(".")
        if not parent.is_dir():
            raise FileFormatError(f"cannot write {_fmt(local)}: folder {_fmt(parent)} does not exist; create it first")
    dims = tuple(img.dims)
    sdims = img.clem.spatial_dims
    shape_yx = (img.sizes["y"], img.sizes["x"])
    data = img.data if isinstance(img.data, da.Array) else dask_view(img.data)
    if chunks is None:
        csize = {d: 1 if d == "z" else DEFAULT_CHUNK for d in sdims}
    else:
        vals = [chunks] * len(sdims) if np.ndim(chunks) == 0 else list(chunks)
        if len(vals) != len(sdims) or not all(isinstance(v, (int, np.integer)) and v > 0 for v in vals):
            raise ImageError(f"chunks must be a positive int or one per spatial dim {sdims}, got {chunks!r}")
        csize = dict(zip(sdims, (int(v) for v in vals)))
    factors = list(scale_factors) if scale_factors is not None else _default_factors(shape_yx, max(csize["y"], csize["x"]))
    prev = 1
    for f in factors:
        if not isinstance(f, (int, np.integer)) or f <= prev or f % prev or min(shape_yx) // f < 1:
            raise ImageError(
                f"scale_factors must be increasing integers, each a multiple of the previous and "
                f"at most the image size {shape_yx}, e.g. (2, 4, 8); got {list(factors)}"
            )
        prev = f
    factors = [int(f) for f in factors]
    attrs = _jsonable(dict(img.attrs))
    docs = _jsonable(_documents(attrs, registration, landmarks))
    if registration is None and "registration" in docs:
        from ..registration import Registration

        registration = Registration.from_dict(docs["registration"])

    shapes = []
    for f in [1] + factors:
        shapes.append(tuple(n // f if d in ("y", "x") else n for d, n in zip(dims, data.shape)))
    grids = [_level_grid(s, dims, csize) for s in shapes]
    group_attrs = _group_metadata(img, dims, factors, attrs, docs)

    # the image lives in the registration's target ("em") unless its frame is the source's
    in_source = registration is not None and attrs.get("frame") is not None \
        and attrs.get("frame") == registration.transform.source_frame
    reg_args = None if registration is None else {
        "registration": registration, "image_frame": "lm" if in_source else "em",
        "pixel_size": min(img.clem.pixel_size[d] for d in ("y", "x")) if in_source else None}
    if local is None:
        _write_store(str(path), "w" if overwrite else "w-", data, dims, factors, shapes, grids, group_attrs,
                     reg_args)
        return path
    tmp = parent / f".{local.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        _write_store(str(tmp), "w-", data, dims, factors, shapes, grids, group_attrs, reg_args)
        if local.exists():  # overwrite: swap in the new folder, then drop the old one
            old = parent / f".{local.name}.{uuid.uuid4().hex[:8]}.old"
            os.replace(local, old)
            os.replace(tmp, local)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, local)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return local if isinstance(path, os.PathLike) or not _is_url(path) else path


def _group_metadata(img, dims: tuple[str, ...], factors: list[int], attrs: dict, docs: dict) -> dict:
    """The root group's attributes: ``ome`` (NGFF 0.5 multiscales, omero) and ``clemlab``."""
    size0, org0 = img.clem.pixel_size, img.clem.origin

    def transforms_for(f: int) -> list[dict]:
        scale = [1.0 if d == "c" else size0[d] * (f if d in ("y", "x") else 1) for d in dims]
        trans = [0.0 if d == "c" else org0[d] + ((f - 1) / 2 * size0[d] if d in ("y", "x") else 0.0) for d in dims]
        return [{"type": "scale", "scale": scale}, {"type": "translation", "translation": trans}]

    multiscale = {
        "name": str(img.name or attrs.get("modality") or "image"),
        "axes": [{"name": d, "type": _AXIS_TYPES[d], **({"unit": _NGFF_UNIT} if d != "c" else {})} for d in dims],
        "datasets": [{"path": str(k), "coordinateTransformations": transforms_for(f)}
                     for k, f in enumerate([1] + factors)],
        "type": "mean",
        "metadata": {"method": "block mean over y and x (dask.array.coarsen)", "writer": "clemlab"},
    }
    ome: dict[str, Any] = {"version": NGFF_VERSION, "multiscales": [multiscale]}
    if "c" in dims:
        info = np.iinfo(img.dtype) if img.dtype.kind in "iu" else None
        lo, hi = (float(info.min), float(info.max)) if info else (0.0, 1.0)
        colors = attrs.get("colors") or {}
        ome["omero"] = {"channels": [
            {"label": str(c), "color": str(colors.get(str(c), "#FFFFFF")).lstrip("#").upper()[:6],
             "active": True, "window": {"min": lo, "max": hi, "start": lo, "end": hi}}
            for c in img.coords["c"].values]}
    return {"ome": ome, "clemlab": {"version": 1, "attrs": attrs, **docs}}


def _exists_message(where: Any) -> str:
    return f"{_fmt(where)} exists; pass overwrite=True to replace it or choose another path"


def _exists(path: Any) -> bool:
    """Whether anything (a file, a folder, an object prefix) is stored at ``path``."""
    local = _local_path(path)
    if local is not None:
        return local.exists() or local.is_symlink()
    import fsspec

    fs, root = fsspec.core.url_to_fs(path)
    return fs.exists(root)


def _check_replaceable(path: Any, overwrite: bool) -> None:
    """Refuse to replace what is at ``path`` unless ``overwrite`` and it is an OME-Zarr image.

    The rule: nothing is ever replaced by default, and ``overwrite=True`` replaces only an
    OME-Zarr image (a zarr group with ``multiscales`` metadata), never a file or an unrelated
    folder, whose contents a user may need.
    """
    if not _exists(path):
        return
    if not overwrite:
        raise FileExistsRefusedError(_exists_message(path))
    local = _local_path(path)
    if local is not None and not local.is_dir():
        raise FileExistsRefusedError(f"{_fmt(path)} is a file, not an OME-Zarr folder; overwrite=True replaces only an "
                              "OME-Zarr image: remove the file yourself or choose another path")
    try:
        _multiscales(_open_group(path), path)
    except FileFormatError:
        raise FileExistsRefusedError(f"{_fmt(path)} exists and is not an OME-Zarr image (no zarr group with "
                              "'multiscales' metadata); overwrite=True replaces only an OME-Zarr image, never "
                              "another folder: move its contents away or choose another path") from None


def _write_store(where: str, mode: str, data, dims, factors, shapes, grids, group_attrs, reg_args) -> None:
    """Create the group and its level arrays at ``where``, write the pyramid, then the
    registration (``reg_args``: keyword arguments of ``write_registration``, or None); the
    metadata naming a registration is written last."""
    import zarr

    try:
        group = zarr.open_group(where, mode=mode, zarr_format=3)
    except FileExistsError:
        raise FileExistsRefusedError(_exists_message(where)) from None
    except (OSError, ValueError) as exc:
        raise FileFormatError(f"cannot write {_fmt(where)}: {exc}") from None
    targets = []
    for k, (shape, (chunk, shard)) in enumerate(zip(shapes, grids)):
        targets.append(group.create_array(
            str(k), shape=shape, dtype=data.dtype, chunks=chunk, shards=shard, dimension_names=dims,
            fill_value=0, compressors=_codecs(), config={"write_empty_chunks": True}, overwrite=True,
        ))
    group.attrs.update(group_attrs)
    local = _local_path(where)
    if local is not None:  # the arrays' metadata is written; tensorstore writes their chunks
        targets = [_TensorStoreTarget(local / str(k)) for k in range(len(targets))]
    _store_blocks(data, targets, dims, factors, [shard for _, shard in grids])
    if reg_args is not None:
        from .ngff_transforms_write import write_registration

        write_registration(group, **reg_args)
    # last: every chunk is now stored, so the reader may treat an absent one as damage
    group.attrs.update({"clemlab": {**group.attrs["clemlab"], "complete": True}})


# ---------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------
def _open_group(path: Any):
    """The zarr group at ``path`` (folder or URL), read-only; FileFormatError naming the problem."""
    import zarr

    local = _local_path(path)
    where = str(local) if local is not None else str(path)
    try:
        node = zarr.open(where, mode="r")
    except Exception as exc:  # zarr raises several kinds for a missing or damaged store
        raise FileFormatError(f"cannot read {_fmt(where)} as a zarr group ({type(exc).__name__}: {exc}); "
                              "the store is missing or damaged: rewrite the OME-Zarr (formats other than "
                              "OME-Zarr are read from local files only)") from None
    if not isinstance(node, zarr.Group):
        raise FileFormatError(f"{_fmt(where)} is a zarr array, not a group; OME-Zarr images are groups "
                              "whose metadata lists their levels")
    return node


def _multiscales(group, path: Any) -> tuple[dict, dict]:
    attrs = dict(group.attrs)
    ome = attrs.get("ome", attrs)  # NGFF 0.5 and later nest under "ome"
    ms = ome.get("multiscales") if isinstance(ome, dict) else None
    if not ms or not isinstance(ms, list) or not isinstance(ms[0], dict):
        raise FileFormatError(
            f"{_fmt(path)} is a zarr group without OME-Zarr 'multiscales' metadata, so its axes and "
            "pixel size are unknown; open the array with zarr/dask and build the image with "
            "clemlab.as_image(data, pixel_size=...)"
        )
    return ms[0], attrs


def _scale_translation(t: dict, n: int, path: Any) -> tuple[list, list]:
    """``(scale, translation)`` of a dataset transformation made of scales and translations
    (pixel centre = scale * index + translation)."""
    scale, trans = [1.0] * n, [0.0] * n
    steps = t.get("transformations") if t.get("type") == "sequence" else [t]
    for s in steps or []:
        if s.get("type") == "scale":
            scale = [a * b for a, b in zip(scale, s["scale"])]
            trans = [a * b for a, b in zip(trans, s["scale"])]
        elif s.get("type") == "translation":
            trans = [a + b for a, b in zip(trans, s["translation"])]
        elif s.get("type") != "identity":
            raise FileFormatError(f"{_fmt(path)}: a level's coordinate transformation of type "
                                  f"{s.get('type')!r} is not a scale and translation; not supported")
    return scale, trans


def _level_geometry(ms: dict, k: int, path: Any) -> tuple[tuple[str, ...], dict, dict]:
    from ..image import unit_to_um
    from .ngff_transforms import _dataset_transform, _intrinsic_axes

    axes = _intrinsic_axes(ms) or []
    names = tuple(a["name"] if isinstance(a, dict) else str(a) for a in axes)
    if not names or not set(names) <= {"c", "z", "y", "x"}:
        raise FileFormatError(f"{_fmt(path)}: OME-Zarr axes {list(names)} are not a subset of (c, z, y, x); "
                              "time series and other axes are not supported")
    # the level's transformation, then (NGFF 0.4/0.5) the multiscale-level ones
    scale, trans = _scale_translation(_dataset_transform(ms["datasets"][k]), len(names), path)
    if "coordinateSystems" not in ms and ms.get("coordinateTransformations"):
        s2, t2 = _scale_translation({"type": "sequence", "transformations": ms["coordinateTransformations"]},
                                    len(names), path)
        scale = [a * b for a, b in zip(scale, s2)]
        trans = [a * b + c for a, b, c in zip(trans, s2, t2)]
    sizes, origins = {}, {}
    for i, a in enumerate(axes):
        d = names[i]
        if d == "c":
            continue
        unit = a.get("unit", "micrometer") if isinstance(a, dict) else "micrometer"
        f = unit_to_um(unit)
        sizes[d], origins[d] = scale[i] * f, trans[i] * f
    return names, sizes, origins


class _CheckedArray:
    """A zarr array read region by region for dask, every damaged or missing chunk reported.

    A chunk that fails to decode (a truncated shard, a checksum mismatch) raises
    FileFormatError naming the store and the chunk's key instead of the codec's own error.
    In a store marked complete (clemlab writes every chunk), a region read as all fill value
    is checked for absent or empty chunk objects, which zarr would otherwise read as fill.
    """

    def __init__(self, arr: Any, store: str, complete: bool):
        self.arr, self.store, self.complete = arr, store, complete
        self.shape, self.dtype, self.ndim = arr.shape, arr.dtype, arr.ndim
        local = _local_path(store)
        # a local zarr v3 array is decoded by tensorstore (C++, on its own threads), others by zarr
        self._ts_path = local / arr.path if local is not None and arr.metadata.zarr_format == 3 else None
        self._ts = None

    def __getstate__(self) -> dict:  # the tensorstore handle is reopened where the task runs
        return {**self.__dict__, "_ts": None}

    def _decode(self, region: tuple) -> np.ndarray:
        if self._ts_path is None:
            return np.asarray(self.arr[region])
        if self._ts is None:
            import tensorstore as ts

            self._ts = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(self._ts_path)}},
                               read=True).result()
        return self._ts[region].read().result()

    def __dask_tokenize__(self):
        return (self.store, self.arr.path, self.shape, str(self.dtype), self.complete)

    def _keys(self, region: tuple) -> list[str]:
        """Storage keys (zarr v3 default encoding ``c/i/j``) of the objects under ``region``."""
        grid = self.arr.shards or self.arr.chunks
        ranges = [range(sl.start // g, -(-sl.stop // g)) for sl, g in zip(region, grid)]
        return [f"{self.arr.path}/c/" + "/".join(map(str, idx)) for idx in itertools.product(*ranges)]

    def _absent(self, key: str) -> bool:
        local = _local_path(self.store)
        if local is not None:
            target = local / key
            return not target.is_file() or target.stat().st_size == 0
        import fsspec

        fs, root = fsspec.core.url_to_fs(self.store)
        where = f"{root.rstrip('/')}/{key}"
        return not fs.exists(where) or fs.size(where) == 0

    def __getitem__(self, key: Any) -> np.ndarray:
        # dask passes slices, or integers where a selection dropped an axis (no fancy indexing)
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        region, within = [], []
        for k, n in zip(key, self.shape):
            if isinstance(k, slice):
                start, stop, step = k.indices(n)
                region.append(slice(start, max(start, stop)))
                within.append(slice(None, None, step))
            else:
                i = int(k) % n
                region.append(slice(i, i + 1))
                within.append(0)
        region = tuple(region)
        return self._read(region)[tuple(within)]

    def _read(self, region: tuple) -> np.ndarray:
        try:
            block = self._decode(region)
        except Exception as exc:  # codecs raise ValueError, RuntimeError, ... for damaged bytes
            self._check_present(region)
            raise FileFormatError(
                f"{_fmt(self.store)}: chunk {' or '.join(self._keys(region))} is damaged and cannot be "
                f"decoded ({type(exc).__name__}: {exc}); copy the store again from its source or rewrite it"
            ) from None
        if self.complete and _all_equal(block, self.arr.fill_value):
            self._check_present(region)
        return block

    def _check_present(self, region: tuple) -> None:
        """In a store marked complete, raise naming every absent or empty chunk object."""
        if not self.complete:
            return
        missing = [k for k in self._keys(region) if self._absent(k)]
        if missing:
            raise FileFormatError(
                f"{_fmt(self.store)}: chunk {', '.join(missing)} is missing or empty, but clemlab wrote "
                "this store complete, so it was damaged or copied incompletely; copy it again from its "
                "source or rewrite it")


def _all_equal(block: np.ndarray, value: Any) -> bool:
    """Whether every element of ``block`` equals ``value`` (a spread sample first: a block that
    holds an image differs from the fill somewhere in it, and is told so without a full pass)."""
    flat = block.reshape(-1)
    if flat.size > 4096 and np.any(flat[:: flat.size // 1024] != value):
        return False
    return not np.any(block != value)


def _read_chunks(arr: Any) -> tuple[int, ...]:
    """Default dask chunks of a stored array: its shards (else its chunks), split in y and x
    into parts of at most READ_CHUNK_SIDE px that are whole inner chunks."""
    grid = arr.shards or arr.chunks
    if arr.shards is None:
        return tuple(grid)
    out = []
    for g, c in zip(grid, arr.chunks):
        if g > READ_CHUNK_SIDE and c < g:  # the largest multiple of c dividing g, at most the side
            parts = [k * c for k in range(1, g // c + 1) if g % (k * c) == 0 and k * c <= READ_CHUNK_SIDE]
            g = max(parts) if parts else c
        out.append(g)
    return tuple(out)


def read_ome_zarr(path: str | os.PathLike, *, level: int = 0, chunks: Any = None, group: Any = None):
    """Read one level of an OME-Zarr image (NGFF 0.4-0.6, folder or URL) lazily as a
    :class:`clemlab.io.RawImage`; one dask chunk per shard, or per part of a shard of at most
    READ_CHUNK_SIDE px a side (zarr v3), or per chunk (v2), unless ``chunks`` says otherwise.

    Used by :func:`clemlab.io.open_image` (which applies the user's overrides).
    """
    import dask.array as da
    from dask.base import tokenize as dask_tokenize

    from . import RawImage

    group = _open_group(path) if group is None else group
    ms, attrs = _multiscales(group, path)
    datasets = ms.get("datasets") or []
    if not 0 <= level < len(datasets):
        raise FileFormatError(f"{_fmt(path)} has {len(datasets)} levels; level={level} does not exist")
    dims, sizes, origins = _level_geometry(ms, level, path)
    sub = str(datasets[level].get("path", ""))
    try:
        arr = group[sub]
    except Exception as exc:  # zarr raises several kinds for a missing or damaged array
        raise FileFormatError(f"level {level} of {_fmt(path)} ({sub!r}) is not a readable zarr array "
                              f"({type(exc).__name__}: {exc}); the OME-Zarr is incomplete or damaged") from None
    complete = (attrs.get("clemlab") or {}).get("complete") is True and arr.metadata.zarr_format == 3
    source = _CheckedArray(arr, str(path), complete)
    data = da.from_array(source, chunks=chunks if chunks is not None else _read_chunks(arr),
                         asarray=False, fancy=False, name=f"clemlab-ome-zarr-{dask_tokenize(source)}")
    clem = (attrs.get("clemlab") or {}).get("attrs") or {}
    channels = None
    if "c" in dims:
        omero = (attrs.get("ome", attrs).get("omero") or {}).get("channels") or []
        labels = [ch.get("label") for ch in omero]
        if len(labels) == data.shape[dims.index("c")] and all(labels):
            channels = [str(x) for x in labels]
    extra = {k: v for k, v in clem.items() if k not in ("modality", "frame", "colors", "source")}
    for key, attr in _DOC_ATTRS.items():
        if isinstance((attrs.get("clemlab") or {}).get(key), dict):
            extra[attr] = attrs["clemlab"][key]
    return RawImage(data=data, dims=dims, pixel_size=sizes, origin=origins, channels=channels,
                    colors=clem.get("colors"), modality=clem.get("modality"), frame=clem.get("frame"),
                    attrs=extra)


def open_multiscale(path: str | os.PathLike, **kwargs: Any):
    """Every level of an OME-Zarr image as an ``xarray.DataTree`` (``scale0``, ``scale1``, ...).

    Parameters
    ----------
    path : path-like or str
        OME-Zarr folder or URL.
    **kwargs
        As :func:`clemlab.io.open_image` (``modality=``, ``frame=``, ``channels=``, ``chunks=``);
        ``pixel_size=``/``origin=`` override level 0 and scale to the others.

    Returns
    -------
    xarray.DataTree
        Child ``scale{k}`` holds a Dataset with the variable ``"image"`` (lazy), in the same
        physical frame as ``scale0``.
    """
    import xarray as xr

    from . import finish

    group = _open_group(path)
    ms, _ = _multiscales(group, path)
    chunks = kwargs.pop("chunks", None)
    tree = {}
    base = None
    for k in range(len(ms["datasets"])):
        raw = read_ome_zarr(path, level=k, chunks=chunks, group=group)
        kw = dict(kwargs)
        if base is not None and ("pixel_size" in kw or "origin" in kw):
            # scale the user's level-0 overrides with this level's factor
            f = {d: raw.pixel_size[d] / base.pixel_size[d] for d in raw.pixel_size}
            img0 = tree["scale0"]["image"]
            kw["pixel_size"] = {d: img0.clem.pixel_size[d] * f[d] for d in f}
            kw["origin"] = {d: img0.clem.origin[d] + (f[d] - 1) / 2 * img0.clem.pixel_size[d] for d in f}
            kw["units"] = "µm"
        img = finish(raw, path, **kw)
        if base is None:
            base = raw
        tree[f"scale{k}"] = xr.Dataset({"image": img})
    return xr.DataTree.from_dict(tree)

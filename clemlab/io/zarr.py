"""OME-Zarr (NGFF 0.4): streaming multiscale writer and lazy reader.

Layout written by :func:`write_ome_zarr` (zarr format 2, ``/`` chunk keys, as NGFF 0.4 asks)::

    name.ome.zarr/
        .zgroup, .zattrs      multiscales (axes with units, scale + translation per level),
                              omero (channel labels, colours), clemlab: {"version": 1,
                              "attrs": image attrs (frame, clem:transforms, ...),
                              "registration": Registration.to_dict() (optional),
                              "landmarks": Landmarks JSON document (optional)}
        0/ 1/ 2/ ...          levels; level k downsampled by f_k in y and x (block mean)

Level ``k`` has pixel size ``f_k * s0`` and its first pixel centre at
``origin0 + (f_k - 1) / 2 * s0``: the convention of :func:`clemlab.io.open_multiscale`
(NGFF puts pixel centres at ``scale * index + translation``). z and c are never downsampled.
Zarr chunks equal the dask chunks written, level by level; the pyramid is computed in streamed
passes (``dask.array.store``), one per block of 8 x 8 level-0 chunks (all levels' share of the
block at once), so peak memory does not grow with the image; chunks are Blosc-LZ4 compressed
(chunks that a sampled probe finds incompressible, as noisy EM data is, are stored verbatim in
the Blosc frame without a full compression attempt). Chunk files of 1 MiB and more are
compressed straight into reusable staging buffers and written by background threads with
direct I/O (``O_DIRECT``, where the filesystem has it; ``CLEMLAB_DIRECT_IO=0`` turns it off),
so the compute threads never copy the output into the page cache (see
:mod:`clemlab.io._zarr_chunks`).
Everything goes into a temporary folder beside ``path`` that is renamed into place at the end,
so a reader never sees a half-written pyramid.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FileFormatError, ImageError
from ._zarr_chunks import BackgroundWriter, ChunkWriter, read_dask, v2_layout

__all__ = ["write_ome_zarr", "read_ome_zarr", "open_multiscale", "is_ome_zarr", "NGFF_VERSION"]

#: The NGFF version written.
NGFF_VERSION = "0.4"
_AXIS_TYPES = {"c": "channel", "z": "space", "y": "space", "x": "space"}
_NGFF_UNIT = "micrometer"
_DEFAULT_CHUNK = 1024


def _fmt(path: Any) -> str:
    return f"'{os.fspath(path)}'"


def is_ome_zarr(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder that looks like a zarr group (v2 or v3)."""
    p = Path(path)
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


def _codec():
    """The chunk codec written: Blosc LZ4 (level 5, byte shuffle).

    Measured on 2048² EM-like chunks (benchmarks/bench_warp.py): it encodes at several GB/s
    per core (zstd, zarr's default, at ~1 GB/s took a third of a warp-and-write pass) and still
    shrinks fill regions and smooth images. Every chunk is written (``write_empty_chunks``):
    zarr's test for all-fill chunks costs ~10 ms per 4 MB chunk, while LZ4 stores an all-fill
    chunk in a few kB.
    """
    from numcodecs import Blosc

    return Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE)


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


#: Level-0 chunks per side (y, x) of the blocks that write_ome_zarr stores one after another.
STORE_BLOCK_CHUNKS = 8


def _aligned_chunks(start: int, n: int, c: int) -> tuple[int, ...]:
    """Chunk sizes of ``n`` elements starting at global index ``start``, cut at multiples of ``c``."""
    first = min(n, c - start % c)
    rest = n - first
    return (first,) + (c,) * (rest // c) + ((rest % c,) if rest % c else ())


def _pyramid(data, dims: tuple[str, ...], factors: list[int], csize: dict, offset: dict | None = None,
             zc: list[dict] | None = None) -> list:
    """Levels (level 0 = ``data``, then block means by each factor), chunked on the zarr grid.

    ``offset`` ({"y": int, "x": int}, level-0 pixels, multiples of every factor) places
    ``data`` inside a larger image whose level-``k`` zarr chunk sides are ``zc[k]``; the chunks
    then break where the whole image's zarr chunks do, so no two tasks write one zarr chunk.
    """
    offset = offset or {"y": 0, "x": 0}
    levels, cur, cur_f = [], data, 1
    for k, f in enumerate([1] + factors):
        if f > 1:
            cur = _downsample(cur, dims, f // cur_f)
            cur_f = f
        sides = zc[k] if zc else {d: min(csize[d], cur.shape[i]) for i, d in enumerate(dims) if d != "c"}
        chunks = tuple(1 if d == "c" else _aligned_chunks(offset.get(d, 0) // f, n, sides[d])
                       for d, n in zip(dims, cur.shape))
        levels.append(cur.rechunk(chunks))
    return levels


def _store_blocks(data, levels: list, targets: list, dims: tuple[str, ...], factors: list[int], csize: dict) -> None:
    """Compute and write the pyramid, one level-0 block of STORE_BLOCK_CHUNKS² chunks at a time.

    A single ``dask.array.store`` over a large lazy image (e.g. a warp) lets dask's ordering read
    inputs for far-away output chunks long before they are used: peak memory then grows with the
    image (measured for a 16384² warp: 32 source chunks held; 32768²: 127). Storing block by
    block (every level's share of the block in the same pass) bounds it by one block's inputs;
    inputs on a block edge are computed once per block that needs them.
    """
    import math

    import dask.array as da

    iy, ix = dims.index("y"), dims.index("x")
    fmax = max([1] + factors)
    step = {}
    for d in ("y", "x"):
        unit = math.lcm(csize[d], fmax)  # blocks start on level-0 chunks and on every level's pixels
        step[d] = -(-STORE_BLOCK_CHUNKS * csize[d] // unit) * unit
    ny, nx = data.shape[iy], data.shape[ix]
    if ny <= step["y"] and nx <= step["x"]:
        da.store(levels, targets, lock=False, compute=True)
        return
    zc = [{d: c[0] for d, c in zip(dims, lev.chunks) if d != "c"} for lev in levels]
    for y0 in range(0, ny, step["y"]):
        for x0 in range(0, nx, step["x"]):
            sl = [slice(None)] * data.ndim
            sl[iy], sl[ix] = slice(y0, min(ny, y0 + step["y"])), slice(x0, min(nx, x0 + step["x"]))
            block = _pyramid(data[tuple(sl)], dims, factors, csize, {"y": y0, "x": x0}, zc)
            keep = [k for k, lev in enumerate(block) if lev.shape[iy] and lev.shape[ix]]
            regions = []
            for k in keep:
                f = ([1] + factors)[k]
                reg = [slice(None)] * data.ndim
                reg[iy] = slice(y0 // f, y0 // f + block[k].shape[iy])
                reg[ix] = slice(x0 // f, x0 // f + block[k].shape[ix])
                regions.append(tuple(reg))
            da.store([block[k] for k in keep], [targets[k] for k in keep], regions=regions,
                     lock=False, compute=True)


def _jsonable(obj: Any) -> Any:
    try:
        return json.loads(json.dumps(obj, allow_nan=False, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    except ValueError as exc:
        raise ImageError(f"attrs must hold plain JSON-able values to be written to OME-Zarr ({exc})") from None


def write_ome_zarr(image: Any, path: str | os.PathLike, *, scale_factors: Sequence[int] | None = None,
                   chunks: int | Sequence[int] | None = None, overwrite: bool = False, registration: Any = None,
                   landmarks: Any = None) -> Path:
    """Write an image (or a correlated Dataset) as a multiscale OME-Zarr, streamed with dask.

    Parameters
    ----------
    image : xarray.DataArray or xarray.Dataset
        A clemlab image, dims ``([c,] [z,] y, x)``, numpy- or dask-backed (never loaded whole),
        or the Dataset of :func:`clemlab.correlate` (written as channels ``EM`` + LM channels).
    path : str or os.PathLike
        Folder to create (conventionally ``*.ome.zarr``).
    scale_factors : sequence of int, optional
        Downsampling factor of each level after the first, relative to full resolution,
        increasing, each a multiple of the previous (e.g. ``(2, 4, 8)``). Default: powers of 2
        until the image fits in one chunk. Only y and x are downsampled.
    chunks : int or sequence of int, optional
        Zarr (= dask) chunk side for the spatial dims (a sequence in array order). Default:
        the input's dask chunks, else 1024 px; channels are chunked one by one.
    overwrite : bool
        Replace an existing ``path``.
    registration : clemlab.registration.Registration, optional
        Stored in the group attrs as ``clemlab.registration`` (:meth:`Registration.to_dict`:
        model, transform, landmarks, diagnostics). Default: the image's (or Dataset's)
        ``clem:registration`` attr, if any.
    landmarks : clemlab.landmarks.Landmarks, optional
        Stored as ``clemlab.landmarks`` (the versioned landmarks JSON document). Default: the
        ``clem:landmarks`` attr, if any.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    FileFormatError
        ``path`` exists (and not ``overwrite``) or its folder is not writable.
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
    import zarr

    img = _as_writable_image(image)
    p = Path(path)
    if p.exists() and not overwrite:
        raise FileFormatError(f"{_fmt(p)} exists; pass overwrite=True to replace it or choose another path")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise FileFormatError(f"cannot write {_fmt(p)}: folder {_fmt(parent)} does not exist; create it first")
    dims = tuple(img.dims)
    sdims = img.clem.spatial_dims
    shape_yx = (img.sizes["y"], img.sizes["x"])
    data = img.data if isinstance(img.data, da.Array) else da.from_array(img.data, chunks=-1, name=False)
    if chunks is None:
        if isinstance(img.data, da.Array):
            csize = {d: data.chunks[dims.index(d)][0] for d in sdims}
        else:
            csize = {d: _DEFAULT_CHUNK for d in sdims}
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
    size0, org0 = img.clem.pixel_size, img.clem.origin
    attrs = _jsonable(dict(img.attrs))
    docs = _jsonable(_documents(attrs, registration, landmarks))

    levels = _pyramid(data, dims, factors, csize)
    paths = [str(k) for k in range(len(levels))]

    def transforms_for(f: int) -> list[dict]:
        scale = [1.0 if d == "c" else size0[d] * (f if d in ("y", "x") else 1) for d in dims]
        trans = [0.0 if d == "c" else org0[d] + ((f - 1) / 2 * size0[d] if d in ("y", "x") else 0.0) for d in dims]
        return [{"type": "scale", "scale": scale}, {"type": "translation", "translation": trans}]

    multiscale = {
        "version": NGFF_VERSION,
        "name": str(img.name or attrs.get("modality") or "image"),
        "axes": [{"name": d, "type": _AXIS_TYPES[d], **({"unit": _NGFF_UNIT} if d != "c" else {})} for d in dims],
        "datasets": [{"path": pth, "coordinateTransformations": transforms_for(f)}
                     for pth, f in zip(paths, [1] + factors)],
        "type": "mean",
        "metadata": {"method": "block mean over y and x (dask.array.coarsen)", "writer": "clemlab"},
    }
    group_attrs: dict[str, Any] = {"multiscales": [multiscale], "clemlab": {"version": 1, "attrs": attrs, **docs}}
    if "c" in dims:
        info = np.iinfo(img.dtype) if img.dtype.kind in "iu" else None
        lo, hi = (float(info.min), float(info.max)) if info else (0.0, 1.0)
        colors = attrs.get("colors") or {}
        group_attrs["omero"] = {"version": NGFF_VERSION, "channels": [
            {"label": str(c), "color": str(colors.get(str(c), "#FFFFFF")).lstrip("#").upper()[:6],
             "active": True, "window": {"min": lo, "max": hi, "start": lo, "end": hi}}
            for c in img.coords["c"].values]}

    tmp = parent / f".{p.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        try:
            group = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        except OSError as exc:
            raise FileFormatError(f"cannot write {_fmt(p)}: {exc}") from None
        targets = []
        for pth, lev in zip(paths, levels):
            targets.append(group.create_array(
                pth, shape=lev.shape, dtype=lev.dtype, chunks=tuple(c[0] for c in lev.chunks),
                chunk_key_encoding={"name": "v2", "separator": "/"}, fill_value=0, overwrite=True,
                compressors=_codec(), config={"write_empty_chunks": True},
            ))
        group.attrs.update(group_attrs)
        # whole chunks are written straight to their files (same bytes as zarr), large ones by
        # background threads with direct I/O (see _zarr_chunks); all are on disk after close()
        writer = BackgroundWriter()
        try:
            targets = [ChunkWriter(tmp / pth, lay, writer) if (lay := v2_layout(tmp / pth)) else t
                       for pth, t in zip(paths, targets)]
            _store_blocks(data, levels, targets, dims, factors, csize)
            writer.close()
        finally:
            writer.close(raise_error=False)
        if p.exists():  # overwrite: swap in the new folder, then drop the old one
            old = parent / f".{p.name}.{uuid.uuid4().hex[:8]}.old"
            os.replace(p, old)
            os.replace(tmp, p)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, p)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return p


# ---------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FileFormatError(f"cannot read zarr metadata {_fmt(path)} ({type(exc).__name__}: {exc}); "
                              "the file is damaged: rewrite the OME-Zarr") from None
    if not isinstance(doc, dict):
        raise FileFormatError(f"zarr metadata {_fmt(path)} is not a JSON object; the file is damaged: "
                              "rewrite the OME-Zarr")
    return doc


def _group_attrs(path: Path) -> dict:
    """A local zarr group's attributes, read from its JSON documents (v3 ``zarr.json``, v2
    ``.zgroup`` + ``.zattrs``): opening an image needs no zarr-python, whose import alone
    takes longer than reading a large pyramid's metadata."""
    if (path / "zarr.json").is_file():
        meta = _read_json(path / "zarr.json")
        if meta.get("node_type") != "group":
            raise FileFormatError(f"{_fmt(path)} is a zarr {meta.get('node_type', 'node')}, not a group; "
                                  "OME-Zarr images are groups whose metadata lists their levels")
        attrs = meta.get("attributes") or {}
    elif (path / ".zgroup").is_file() or (path / ".zattrs").is_file():
        attrs = _read_json(path / ".zattrs") if (path / ".zattrs").is_file() else {}
    else:
        raise FileFormatError(f"{_fmt(path)} is a folder but not a zarr group; OME-Zarr folders "
                              "hold .zgroup/.zattrs (zarr v2) or zarr.json (v3)")
    if not isinstance(attrs, dict):
        raise FileFormatError(f"the attributes of zarr group {_fmt(path)} are not a JSON object; rewrite the OME-Zarr")
    return attrs


def _multiscales(path: Path) -> tuple[dict, dict]:
    attrs = _group_attrs(path)
    ome = attrs.get("ome", attrs)  # NGFF 0.5 nests under "ome"
    ms = ome.get("multiscales") if isinstance(ome, dict) else None
    if not ms or not isinstance(ms, list) or not isinstance(ms[0], dict):
        raise FileFormatError(
            f"{_fmt(path)} is a zarr group without OME-Zarr 'multiscales' metadata, so its axes and "
            "pixel size are unknown; open the array with zarr/dask and build the image with "
            "clemlab.as_image(data, pixel_size=...)"
        )
    return ms[0], attrs


def _level_geometry(ms: dict, k: int, path: Path) -> tuple[tuple[str, ...], dict, dict]:
    from ..image import unit_to_um

    axes = ms.get("axes") or []
    names = tuple(a["name"] if isinstance(a, dict) else str(a) for a in axes)
    if not names or not set(names) <= {"c", "z", "y", "x"}:
        raise FileFormatError(f"{_fmt(path)}: OME-Zarr axes {list(names)} are not a subset of (c, z, y, x); "
                              "time series and other axes are not supported")
    scale = [1.0] * len(names)
    trans = [0.0] * len(names)
    # pixel centre = scale * index + translation; dataset-level transforms first, then the
    # multiscale-level ones
    for group in (ms["datasets"][k].get("coordinateTransformations") or [], ms.get("coordinateTransformations") or []):
        for t in group:
            if t.get("type") == "scale":
                scale = [a * b for a, b in zip(scale, t["scale"])]
                trans = [a * b for a, b in zip(trans, t["scale"])]
            elif t.get("type") == "translation":
                trans = [a + b for a, b in zip(trans, t["translation"])]
    sizes, origins = {}, {}
    for i, a in enumerate(axes):
        d = names[i]
        if d == "c":
            continue
        unit = a.get("unit", "micrometer") if isinstance(a, dict) else "micrometer"
        f = unit_to_um(unit)
        sizes[d], origins[d] = scale[i] * f, trans[i] * f
    return names, sizes, origins


def read_ome_zarr(path: str | os.PathLike, *, level: int = 0, chunks: Any = None):
    """Read one level of an OME-Zarr image lazily as a :class:`clemlab.io.RawImage`.

    Used by :func:`clemlab.io.open_image` (which applies the user's overrides).
    """
    import dask.array as da

    from . import RawImage

    p = Path(path)
    ms, attrs = _multiscales(p)
    datasets = ms.get("datasets") or []
    if not 0 <= level < len(datasets):
        raise FileFormatError(f"{_fmt(p)} has {len(datasets)} levels; level={level} does not exist")
    dims, sizes, origins = _level_geometry(ms, level, p)
    where = p / str(datasets[level].get("path", ""))
    layout = v2_layout(where)
    if layout is not None and chunks is None:
        data = read_dask(where, layout)  # chunk files read directly, as written
    else:  # zarr v3, codecs this module does not read, or other chunks: through zarr-python
        import zarr

        try:
            arr = zarr.open_array(str(where), mode="r")
        except Exception as exc:  # zarr raises several kinds for a missing or damaged array
            raise FileFormatError(f"level {level} of {_fmt(p)} ({_fmt(where)}) is not a readable zarr array "
                                  f"({type(exc).__name__}: {exc}); the OME-Zarr is incomplete or damaged") from None
        data = da.from_zarr(arr, chunks=chunks if chunks is not None else arr.chunks)
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
    path : path-like
        OME-Zarr folder.
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

    p = Path(path)
    ms, _ = _multiscales(p)
    chunks = kwargs.pop("chunks", None)
    tree = {}
    base = None
    for k in range(len(ms["datasets"])):
        raw = read_ome_zarr(p, level=k, chunks=chunks)
        kw = dict(kwargs)
        if base is not None and ("pixel_size" in kw or "origin" in kw):
            # scale the user's level-0 overrides with this level's factor
            f = {d: raw.pixel_size[d] / base.pixel_size[d] for d in raw.pixel_size}
            img0 = tree["scale0"]["image"]
            kw["pixel_size"] = {d: img0.clem.pixel_size[d] * f[d] for d in f}
            kw["origin"] = {d: img0.clem.origin[d] + (f[d] - 1) / 2 * img0.clem.pixel_size[d] for d in f}
            kw["units"] = "µm"
        img = finish(raw, p, **kw)
        if base is None:
            base = raw
        tree[f"scale{k}"] = xr.Dataset({"image": img})
    return xr.DataTree.from_dict(tree)

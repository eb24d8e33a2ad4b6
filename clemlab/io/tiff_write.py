"""The OME-TIFF writer: a clemlab image to an OME-TIFF that :func:`clemlab.io.tiff.read_tiff`
reads back exactly (pixel size, origin and attrs in a ``clemlab`` MapAnnotation besides the
standard OME-XML), written atomically.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_write, check_writable
from ..errors import ImageError
from . import fmt_path
from .tiff import _ANNOTATION_KEY, _ANNOTATION_VERSION, CLEMLAB_NAMESPACE, _hex_to_ome_color

__all__ = ["write_ome_tiff"]


def _jsonable(obj: Any, where: str) -> Any:
    try:
        return json.loads(json.dumps(obj, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ImageError(f"{where}: attrs must hold plain JSON-able values to be written ({exc})") from None


def write_ome_tiff(image: Any, path: str | os.PathLike, *, compression: str | None = None,
                   tile: tuple[int, int] | None = None, overwrite: bool = False) -> Path:
    """Write a clemlab image to an OME-TIFF, atomically (see :func:`clemlab._atomic.atomic_write`).

    Parameters
    ----------
    image : xarray.DataArray
        A clemlab image, dims a subset of ``("c", "z", "y", "x")``, coords in µm; numpy- or
        dask-backed (dask data is written plane by plane, never all in memory).
    path : path-like
        Output file, conventionally ``*.ome.tif``.
    compression : str, optional
        tifffile compression (``"zlib"``, ``"zstd"``, ...); default none.
    tile : (int, int), optional
        Tile shape (multiples of 16); default strips.
    overwrite : bool
        Replace an existing file at ``path`` (default: refuse it).

    Returns
    -------
    pathlib.Path
        The written file; a new file's permissions follow the umask, a replaced file's are kept.

    Raises
    ------
    FileFormatError
        The folder is missing or not writable, or ``path`` exists and ``overwrite`` is False
        (checked before any pixel is computed).

    Notes
    -----
    Standard OME-XML holds ``PhysicalSizeX/Y/Z`` (µm), channel ``Name`` and ``Color``, and
    per plane ``PositionX/Y/Z`` (µm) = position of the first pixel centre of that plane.
    A ``MapAnnotation`` in namespace ``"clemlab"`` (key ``"clemlab:image"``) holds JSON with
    the exact pixel sizes and origin and every attr except ``source`` (``modality``,
    ``frame``, ``colors``, ``clem:transforms``, ...), so :func:`clemlab.io.open_image` gives
    back the same coords and attrs. Bool images are stored as uint8 and restored.
    """
    import tifffile

    from ..image import check_image

    out = Path(os.fspath(path))
    img = check_image(image, "image")
    where = fmt_path(out)
    check_writable(out, overwrite=overwrite, fmt="TIFF")
    dims = tuple(img.dims)
    sdims = tuple(d for d in dims if d != "c")
    sizes = {d: float(img.coords[d].attrs.get("pixel_size") or img.clem._step(d)) for d in sdims}
    if any(img.sizes[d] >= 2 for d in sdims):
        step = img.clem.pixel_size
        for d in sdims:
            if img.sizes[d] >= 2 and not math.isclose(sizes[d], step[d], rel_tol=1e-9):
                sizes[d] = step[d]
    origins = {d: float(img.coords[d].values[0]) for d in sdims}
    attrs = {k: v for k, v in img.attrs.items() if k != "source"}
    channels = [str(c) for c in img.coords["c"].values] if "c" in dims else None
    dtype = np.dtype(img.dtype)
    if dtype.kind == "c":
        raise ImageError(f"cannot write {where}: complex images are not supported; take abs() or .real first")
    exact = {
        "version": _ANNOTATION_VERSION,
        "dims": list(dims),
        "units": "µm",
        "pixel_size": sizes,
        "origin": origins,
        "channels": channels,
        "dtype": "bool" if dtype == bool else str(dtype),
        "attrs": _jsonable(attrs, where),
    }
    store_dtype = np.uint8 if dtype == bool else dtype
    axes = "".join(d.upper() for d in dims)
    meta: dict[str, Any] = {"axes": axes}
    for d in sdims:
        meta[f"PhysicalSize{d.upper()}"] = sizes[d]
        meta[f"PhysicalSize{d.upper()}Unit"] = "µm"
    nc = img.sizes.get("c", 1)
    nz = img.sizes.get("z", 1)
    if channels is not None:
        ch: dict[str, Any] = {"Name": channels}
        colors = attrs.get("colors") or {}
        ome_colors = [_hex_to_ome_color(str(colors[c])) if c in colors else None for c in channels]
        if all(v is not None for v in ome_colors):
            ch["Color"] = ome_colors
        meta["Channel"] = ch
    plane: dict[str, list] = {k: [] for k in ("PositionX", "PositionXUnit", "PositionY", "PositionYUnit")}
    if "z" in dims:
        plane.update({"PositionZ": [], "PositionZUnit": []})
    for _c in range(nc):
        for k in range(nz):
            plane["PositionX"].append(origins["x"])
            plane["PositionXUnit"].append("µm")
            plane["PositionY"].append(origins["y"])
            plane["PositionYUnit"].append("µm")
            if "z" in dims:
                plane["PositionZ"].append(origins["z"] + k * sizes["z"])
                plane["PositionZUnit"].append("µm")
    meta["Plane"] = plane
    meta["MapAnnotation"] = {
        "Namespace": CLEMLAB_NAMESPACE,
        "Value": {_ANNOTATION_KEY: json.dumps(exact, allow_nan=False, ensure_ascii=False)},
    }
    for key in ("modality", "frame"):
        if isinstance(attrs.get(key), str):
            meta.setdefault("Description", f"clemlab image; {key}={attrs[key]}")

    data = img.data
    is_dask = not isinstance(data, np.ndarray) and hasattr(data, "compute")

    def write(tmp: str) -> None:
        with tifffile.TiffWriter(tmp, ome=True, bigtiff=img.nbytes > 2**32 - 2**25) as tw:
            kw = dict(photometric="minisblack", metadata=meta, compression=compression, tile=tile)
            if is_dask:
                ny, nx = img.sizes["y"], img.sizes["x"]
                lead = data.reshape((-1, ny, nx))

                def planes():
                    for i in range(lead.shape[0]):
                        yield np.asarray(lead[i].compute(), dtype=store_dtype)

                if tile is None:
                    tw.write(planes(), shape=tuple(data.shape), dtype=store_dtype, **kw)
                else:
                    tw.write(_tiles(planes(), tile), shape=tuple(data.shape), dtype=store_dtype, **kw)
            else:
                tw.write(np.asarray(data, dtype=store_dtype), **kw)

    return atomic_write(out, write, overwrite=overwrite, fmt="TIFF")


def _tiles(planes: Any, tile: tuple[int, int]) -> Any:
    for pl in planes:
        ty, tx = tile
        for y in range(0, pl.shape[0], ty):
            for x in range(0, pl.shape[1], tx):
                t = np.zeros((ty, tx), pl.dtype)
                blk = pl[y : y + ty, x : x + tx]
                t[: blk.shape[0], : blk.shape[1]] = blk
                yield t

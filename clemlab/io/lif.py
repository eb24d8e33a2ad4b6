"""Leica LIF files (also LOF / XLIF / XLEF), read through liffile (Christoph Gohlke's reader).

A LIF file is a container of named images. What is read, and from where:

- pixel size: the spacing of liffile's ``X`` / ``Y`` / ``Z`` coords (from the image's
  ``DimensionDescription`` ``Length / (NumberOfElements - 1)``, metres);
- axes: ``Y X`` -> ``y x``, ``Z`` -> ``z``; one channel-like axis becomes ``c``: ``C``
  (channels, named by their look-up table), ``λ`` (emission sweep, channels named
  ``"λem 550 nm"``...) or ``Λ`` (excitation sweep, ``"λex 490 nm"``...);
  ``attrs["channel_axis"]`` says which; ``T`` is chosen with ``timepoint=``;
- origin: the first coordinate of ``X`` / ``Y`` / ``Z`` (µm); a dim stored in descending
  order (a z stack taken top-down) is flipped so that coords ascend;
- stage position (``attrs["stage_position"]``, µm): ``StagePosX`` / ``StagePosY`` (metres)
  of the acquisition's hardware setting (``refers_to``: the scan field's position).

Images that are not x-y (an x-z or x-t scan, a line scan) and tile scans are refused in words:
their axes are never relabelled as y-x.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FileFormatError, ImageError
from . import RawImage, fmt_path, want_lazy
from ._containers import choose, pick_timepoint, unique_names

__all__ = ["read_lif", "list_lif"]

_CHANNEL_AXES = {"C": "channels", "λ": "emission wavelength (λ sweep)", "Λ": "excitation wavelength (Λ sweep)"}
_KNOWN = {"X", "Y", "Z", "T", "S", *_CHANNEL_AXES}
_SOURCE = "LIF DimensionDescription (X/Y coords, m)"


def _open(path: Path) -> Any:
    import liffile  # a dependency, loaded on first use so `import clemlab` stays light

    where = fmt_path(path)
    try:
        lif = liffile.LifFile(os.fspath(path))
    except Exception as exc:  # LifFileError, struct.error, OSError on bad files
        raise FileFormatError(f"{where} is not a readable Leica image file (truncated or corrupt?): {exc}") from None
    try:
        images = list(lif.images)
    except Exception as exc:
        lif.close()
        raise FileFormatError(f"{where}: cannot list the images in this Leica file (truncated or corrupt?): {exc}") from None
    return lif, images


def _step_um(coords: Any, dim: str) -> float | None:
    values = coords.get(dim) if coords is not None else None
    if values is None or len(values) < 2:
        return None
    step = abs(float(values[1]) - float(values[0])) * 1e6
    return step if np.isfinite(step) and step > 0 else None


def _describe(im: Any) -> str:
    sizes = ", ".join(f"{k} {v}" for k, v in im.sizes.items())
    return f"{im.name!r} ({sizes}, {im.dtype})"


def _pixel_sizes(im: Any) -> dict[str, float]:
    coords = im.coords
    out = {}
    for dim in ("X", "Y", "Z"):
        if dim in im.sizes:
            v = _step_um(coords, dim)
            if v is not None:
                out[dim.lower()] = v
    return out


def _origins(im: Any) -> tuple[dict[str, float], list[str]]:
    """Position (µm) of the first pixel centre per dim, and the dims stored in descending order."""
    coords = im.coords or {}
    origin, descending = {}, []
    for dim in ("X", "Y", "Z"):
        values = coords.get(dim)
        if dim not in im.sizes or values is None or len(values) == 0:
            continue
        first, last = float(values[0]) * 1e6, float(values[-1]) * 1e6
        if not (np.isfinite(first) and np.isfinite(last)):
            continue
        if last < first:
            descending.append(dim.lower())
        origin[dim.lower()] = min(first, last)
    return origin, descending


def list_lif(path: str | os.PathLike) -> list[dict[str, Any]]:
    """One row per image: name, dims (the file's), sizes, dtype, pixel size (µm), channels.

    Returns
    -------
    list of dict
        Keys ``name``, ``path`` (the image's path inside the file), ``dims`` (liffile's axis
        codes, e.g. ``("λ", "Y", "X")``), ``sizes``, ``dtype``, ``pixel_size_um``,
        ``pixel_size_source``, ``channels``.
    """
    path = Path(path)
    lif, images = _open(path)
    with lif:
        rows = []
        for im in images:
            sizes = dict(im.sizes)
            px = _pixel_sizes(im)
            rows.append({
                "name": im.name,
                "path": im.path,
                "dims": tuple(sizes),
                "sizes": sizes,
                "dtype": str(im.dtype),
                "pixel_size_um": px,
                "pixel_size_source": _SOURCE if px else "none",
                "channels": _channel_names(im, next((a for a in sizes if a in _CHANNEL_AXES), None)),
            })
    return rows


def _channel_names(im: Any, axis: str | None) -> list[str] | None:
    if axis is None:
        return None
    n = im.sizes[axis]
    if axis in ("λ", "Λ"):
        values = im.coords.get(axis)
        label = "λem" if axis == "λ" else "λex"
        if values is not None and len(values) == n:
            return unique_names([f"{label} {float(v) * 1e9:.4g} nm" for v in values], label)
        return [f"{label} {i}" for i in range(n)]
    luts = [ch.get("LUTName") for ch in im.xml_element.iter("ChannelDescription")]
    if len(luts) == n and all(luts):
        return unique_names(luts, "C")
    return [f"C{i}" for i in range(n)]


def _stage_position(im: Any) -> dict[str, Any] | None:
    for el in im.xml_element.iter():
        if "StagePosX" in el.attrib and "StagePosY" in el.attrib:
            try:
                x, y = float(el.get("StagePosX")) * 1e6, float(el.get("StagePosY")) * 1e6
            except (TypeError, ValueError):
                continue
            if np.isfinite(x) and np.isfinite(y):
                return {"x": x, "y": y, "units": "µm", "source": f"LIF {el.tag} StagePosX/StagePosY (m)",
                        "refers_to": "stage position of the scan field"}
    return None


def _frame(path: str, index: int, selection: tuple) -> np.ndarray:
    """Read the frames of image ``index`` selected by ``selection`` ((axis, value) pairs)."""
    lif, images = _open(Path(path))
    with lif:
        try:
            return np.asarray(images[index].frames(**dict(selection)).asarray())
        except Exception as exc:
            raise FileFormatError(
                f"{fmt_path(path)}: could not read the pixels of image {images[index].name!r} "
                f"(the file is truncated or corrupt): {exc}"
            ) from None


def _lazy_stack(path: Path, index: int, sizes: dict, chan: str | None, ti: int, dtype: np.dtype) -> Any:
    """(c, z, y, x[, s]) dask array, one task per frame (time point fixed)."""
    import dask
    import dask.array as da

    frame_shape = (sizes["Y"], sizes["X"]) + ((sizes["S"],) if "S" in sizes else ())
    planes = []
    for c in range(sizes[chan] if chan else 1):
        zs = []
        for z in range(sizes.get("Z", 1)):
            sel: list[tuple[str, int]] = []
            if "T" in sizes:
                sel.append(("T", ti))
            if chan:
                sel.append((chan, c))
            if "Z" in sizes:
                sel.append(("Z", z))
            task = dask.delayed(_frame, pure=True)(os.fspath(path), index, tuple(sel))
            zs.append(da.from_delayed(task, shape=frame_shape, dtype=dtype))
        planes.append(da.stack(zs))
    return da.stack(planes)


def read_lif(path: str | os.PathLike, *, image: int | str | None = None, timepoint: int | None = None,
             lazy: bool | None = None, chunks: Any = None) -> RawImage:
    """Read one image of a Leica LIF file.

    Parameters
    ----------
    path : path-like
        The ``.lif`` (or ``.lof``, ``.xlif``, ``.xlef``) file.
    image : int or str, optional
        Image index or name (or its path inside the file); required when the file holds several.
    timepoint : int, optional
        Time point to read; required for a time series.
    lazy, chunks : see :func:`clemlab.io.open_image`.

    Returns
    -------
    RawImage
        dims a subset of ``(c, z, y, x)``; pixel size in µm; ``attrs`` with ``image`` (name),
        ``image_path``, ``channel_axis``, ``stage_position`` where the file has them.
    """
    import dask.array as da

    path = Path(path)
    where = fmt_path(path)
    lif, images = _open(path)
    with lif:
        names = [im.name for im in images]
        if isinstance(image, str) and image not in names and image in [im.path for im in images]:
            image = [im.path for im in images].index(image)
        index = choose(names, image, where, kind="image", keyword="image", described=[_describe(im) for im in images])
        im = images[index]
        label = f"{where} image {im.name!r}"
        sizes = dict(im.sizes)
        axes = tuple(sizes)
        unknown = [a for a in axes if a not in _KNOWN]
        if "M" in unknown:
            raise ImageError(
                f"{label} is a tile scan of {sizes['M']} tiles, which clemlab does not assemble for LIF "
                "files; export the merged mosaic from LAS X, or open the tiles yourself with liffile"
            )
        if unknown:
            raise ImageError(f"{label} has axes {axes}; clemlab reads X, Y, Z, T and one channel axis (C, λ or Λ) only")
        if "Y" not in axes or "X" not in axes:
            raise ImageError(
                f"{label} is not an x-y image: its axes are {axes} (an x-z, x-t or line scan); clemlab "
                "images are y-x planes and its axes are not relabelled"
            )
        if axes[-2:] != ("Y", "X") and axes[-3:] != ("Y", "X", "S"):
            raise ImageError(f"{label} stores its axes as {axes}, with Y and X not innermost; clemlab cannot read it")
        chan_axes = [a for a in axes if a in _CHANNEL_AXES]
        if len(chan_axes) + ("S" in axes) > 1:
            raise ImageError(
                f"{label} has several channel-like axes {chan_axes + (['S'] if 'S' in axes else [])}; "
                "clemlab images hold one channel axis"
            )
        ti = pick_timepoint(sizes.get("T", 1), timepoint, label)
        chan = chan_axes[0] if chan_axes else None
        channels = _channel_names(im, chan)
        pixel_size = _pixel_sizes(im)
        origin, descending = _origins(im)
        stage = _stage_position(im)
        dtype = np.dtype(im.dtype)
        image_path = im.path
        nbytes = int(np.prod([v for k, v in sizes.items() if k != "T"])) * dtype.itemsize
        lazy = want_lazy(lazy, chunks, nbytes)
        if not lazy:
            try:
                arr = np.asarray(im.frames(T=ti).asarray() if "T" in sizes else im.asarray())
            except Exception as exc:
                raise FileFormatError(f"{label}: could not read its pixels (the file is truncated or corrupt): {exc}") from None
            kept = [a for a in axes if a != "T"]
            order = [a for a in (chan, "Z", "Y", "X", "S") if a in kept]
            arr = np.transpose(arr, [kept.index(a) for a in order])
            if chan is None:
                arr = arr[np.newaxis]
            if "Z" not in sizes:
                arr = arr[:, np.newaxis]
            data = arr  # (c, z, y, x[, s])

    if lazy:
        data = _lazy_stack(path, index, sizes, chan, ti, dtype)
    xp = da if lazy else np
    # a dim stored in descending order (a z stack taken top-down) is flipped so coords ascend
    flips = tuple(slice(None, None, -1) if d in descending else slice(None) for d in ("c", "z", "y", "x"))
    data = data[flips]
    dims = ["c", "z", "y", "x"]
    if "S" in sizes:
        if sizes["S"] != 3:
            raise ImageError(f"{label} has {sizes['S']} samples per pixel; clemlab reads grey or RGB frames")
        data = xp.moveaxis(data[0], -1, 0)
        channels, chan = ["R", "G", "B"], "S"
    if data.shape[1] == 1:
        data, dims = data[:, 0], ["c", "y", "x"]
    attrs: dict[str, Any] = {"image": im.name, "image_index": index, "image_path": image_path}
    if data.shape[0] == 1:
        if channels:
            attrs["channel"] = channels[0]
        data, dims, channels = data[0], dims[1:], None
    elif chan:
        attrs["channel_axis"] = _CHANNEL_AXES.get(chan, "RGB samples")
    if "T" in sizes:
        attrs["timepoint"] = ti
    if stage is not None:
        attrs["stage_position"] = stage
    attrs["pixel_size_source"] = _SOURCE if pixel_size else "none"
    if chunks is not None:
        data = data.rechunk(chunks)
    return RawImage(
        data=data,
        dims=tuple(dims),
        pixel_size={d: v for d, v in pixel_size.items() if d in dims},
        origin={d: v for d, v in origin.items() if d in dims},
        channels=channels,
        modality="LM",
        attrs=attrs,
        missing_reason="its LIF image has no X/Y dimension lengths",
    )

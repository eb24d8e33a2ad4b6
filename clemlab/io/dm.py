"""Gatan DigitalMicrograph DM3/DM4 reader, through ``rsciio.digitalmicrograph``.

Conventions
-----------
- Pixel size: the scale and units of the image's spatial calibration (``"µm"``, ``"nm"``,
  ...), converted to µm. Units ``""`` (DM's "uncalibrated") give a
  :class:`~clemlab.errors.MissingPixelSizeError` unless ``pixel_size=`` is passed.
- Reciprocal-space calibrations (``"1/nm"``, ``"1/µm"``: diffraction patterns, FFTs) are not
  pixel sizes: :class:`~clemlab.errors.MissingPixelSizeError` says so; pass ``pixel_size=`` if
  you really want to treat the pattern as an image with a given real-space pixel size.
- Origin: DM stores per dimension an ``Origin`` in pixels with
  ``calibrated = (index - Origin) * Scale``, so the first pixel (index 0) sits at
  ``-Origin * Scale``. For the shared TEM image (Origin -828 / -760 px, scale 0.16867 µm) the
  first pixel centre is at x = +139.66 µm, y = +128.19 µm. It is kept in pixels, so it follows
  a ``pixel_size=`` override. (This is the offset rosettasciio reports.)
- Data types: every real DM type loads; bool becomes uint8; RGB(A) becomes channels
  ``R, G, B`` (alpha dropped) with dims ``(c, y, x)``; complex data are refused with a
  message asking for ``abs()`` / ``.real`` (clemlab images are real-valued).
- Stacks (3-D with one navigation axis) become ``(z, y, x)``; the stack axis spacing is used
  when it is a length, else reported as unknown. 1-D spectra and spectrum images are refused.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FileFormatError, ImageError
from . import RawImage, fmt_path, want_lazy

__all__ = ["read_dm"]


def _is_reciprocal(unit: str) -> bool:
    u = unit.replace(" ", "")
    return u.startswith("1/") or u.endswith("^-1") or u.endswith("⁻¹")


def read_dm(path: str | os.PathLike, *, lazy: bool | None = None, chunks: Any = None, series: int = 0) -> RawImage:
    """Read a DM3/DM4 image with its calibration.

    Parameters
    ----------
    path : path-like
        ``.dm3`` / ``.dm4`` file.
    lazy, chunks : see :func:`clemlab.io.open_image`.
    series : int
        Which image of the file (DM files may hold several).

    Returns
    -------
    RawImage
        dims ``(y, x)``, ``(c, y, x)`` for RGB, or ``(z, y, x)`` for stacks.
    """
    from ..image import unit_to_um

    path = Path(path)
    where = fmt_path(path)
    try:
        from rsciio.digitalmicrograph import file_reader
    except ImportError as exc:  # pragma: no cover
        raise FileFormatError(f"reading {where} needs rosettasciio (pip install rosettasciio): {exc}") from None
    size_hint = path.stat().st_size
    use_lazy = want_lazy(lazy, chunks, size_hint)
    try:
        items = file_reader(os.fspath(path), lazy=use_lazy)
    except Exception as exc:
        raise FileFormatError(f"{where} is not a readable DM3/DM4 file (truncated or corrupt?): {exc}") from None
    if not items:
        raise FileFormatError(f"{where} holds no image")
    if not 0 <= series < len(items):
        raise ImageError(f"{where} holds {len(items)} images; series={series} does not exist")
    item = items[series]
    data = item["data"]
    axes = item["axes"]
    if len(axes) != data.ndim:
        raise FileFormatError(f"{where}: {len(axes)} calibrated axes for data of shape {data.shape}")

    signal = [i for i, a in enumerate(axes) if not a.get("navigate", False)]
    nav = [i for i, a in enumerate(axes) if a.get("navigate", False)]
    if len(signal) != 2:
        raise ImageError(
            f"{where} holds a {len(signal)}-D signal (shape {data.shape}), e.g. a spectrum or "
            "spectrum image, not a 2-D image"
        )
    if len(nav) > 1:
        raise ImageError(f"{where} has {len(nav)} navigation axes (shape {data.shape}); clemlab reads 2-D images and stacks")

    # --- pixel type -----------------------------------------------------------------------
    dtype = data.dtype
    channels = None
    if dtype.names:
        names = [n for n in ("R", "G", "B") if n in dtype.names]
        if len(names) != 3:
            raise ImageError(f"{where}: structured pixel type {dtype} is not RGB")
        parts = [data[n] for n in names]
        if use_lazy:
            import dask.array as da

            data = da.stack(parts, axis=0)
        else:
            data = np.stack([np.asarray(p) for p in parts], axis=0)
        channels = ["R", "G", "B"]
    elif dtype.kind == "c":
        raise ImageError(
            f"{where} holds complex pixels ({dtype}), e.g. an FFT or exit wave; clemlab images are "
            "real-valued: take np.abs() (magnitude) or .real of the data first, e.g. with "
            "rsciio.digitalmicrograph.file_reader, then clemlab.as_image(...)"
        )
    elif dtype == bool:
        data = data.astype(np.uint8)

    # --- calibration ----------------------------------------------------------------------
    sizes: dict[str, float] = {}
    origin: dict[str, float] = {}
    origin_px: dict[str, float] = {}
    missing = ""
    attrs: dict[str, Any] = {"instrument": "Gatan DigitalMicrograph"}
    dim_of = {signal[0]: "y", signal[1]: "x"}
    if nav:
        dim_of[nav[0]] = "z"
    for i, ax in enumerate(axes):
        dim = dim_of[i]
        unit = str(ax.get("units") or "").strip()
        scale = float(ax.get("scale", 1.0))
        offset = float(ax.get("offset", 0.0))
        if dim in ("y", "x") and unit and _is_reciprocal(unit):
            missing = (
                f"it is a diffraction pattern (or FFT) calibrated in reciprocal units ({unit!r}, "
                f"{scale:g} {unit} per pixel), which is not a real-space pixel size. If you really "
                "want to treat it as an image, pass pixel_size= (and units=) yourself"
            )
            attrs["reciprocal_calibration"] = {"scale": scale, "units": unit}
            continue
        if not unit:
            if dim in ("y", "x") and not missing:
                missing = "its DM calibration has no units (DigitalMicrograph's 'uncalibrated')"
            continue
        try:
            factor = unit_to_um(unit)
        except ImageError:
            if dim == "z":
                attrs["stack_axis"] = {"scale": scale, "units": unit}
                continue
            missing = f"its DM calibration unit {unit!r} is not a length unit"
            continue
        if not (math.isfinite(scale) and scale > 0):
            continue
        sizes[dim] = scale * factor
        if math.isfinite(offset):
            origin[dim] = offset * factor
            origin_px[dim] = offset / scale  # = -DM Origin
    # move the stack axis first, signal (y, x) last; channels (RGB) are already first
    order = (nav + signal) if nav else signal
    if order != list(range(len(order))):
        data = data.transpose(order if channels is None else [0] + [o + 1 for o in order])
    dims: tuple[str, ...] = tuple(dim_of[i] for i in order)
    if channels is not None:
        dims = ("c",) + dims
        if "z" in dims:
            raise ImageError(f"{where}: RGB stacks are not supported")
    if chunks is not None and hasattr(data, "rechunk"):
        data = data.rechunk(chunks)
    attrs["pixel_size_source"] = "DM calibration" if sizes else "none"
    return RawImage(
        data=data,
        dims=dims,
        pixel_size=sizes,
        origin=origin,
        origin_px=origin_px,
        channels=channels,
        attrs=attrs,
        missing_reason=missing or "its DM file stores no spatial calibration",
    )

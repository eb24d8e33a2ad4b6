"""PNG / JPEG / BMP / GIF reader (pillow). These formats carry no trustworthy physical pixel
size, so :func:`clemlab.io.open_image` opens them only when ``pixel_size=`` is given.

Grayscale (also with alpha) -> ``(y, x)``; RGB / RGBA / palette / CMYK -> channels ``R, G, B``
with dims ``(c, y, x)`` (alpha dropped). 16-bit and float grayscale keep their precision.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FileFormatError
from . import RawImage, fmt_path, want_lazy

__all__ = ["read_plain"]


def read_plain(path: str | os.PathLike, *, lazy: bool | None = None, chunks: Any = None) -> RawImage:
    """Read a PNG/JPEG/BMP/GIF picture (first frame).

    Returns
    -------
    RawImage
        dims ``(y, x)`` or ``(c, y, x)`` with channels ``R, G, B``; no pixel size (the caller
        supplies ``pixel_size=``).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    where = fmt_path(path)
    try:
        with Image.open(os.fspath(path)) as im:
            im.load()
            mode = im.mode
            if mode in ("1", "L", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"):
                arr = np.asarray(im)
                channels = None
            elif mode in ("LA", "La"):
                arr = np.asarray(im.getchannel("L"))
                channels = None
            else:
                rgb = im.convert("RGB")
                arr = np.moveaxis(np.asarray(rgb), -1, 0)
                channels = ["R", "G", "B"]
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise FileFormatError(f"{where} could not be decoded as a picture (truncated or corrupt?): {exc}") from None
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    arr = np.ascontiguousarray(arr)
    if want_lazy(lazy, chunks, arr.nbytes):
        import dask.array as da

        arr = da.from_array(arr, chunks=chunks if chunks is not None else "auto")
    dims = ("c", "y", "x") if channels else ("y", "x")
    return RawImage(
        data=arr,
        dims=dims,
        channels=channels,
        attrs={"pixel_size_source": "pixel_size= argument", "picture_mode": mode},
        missing_reason="PNG/JPEG/BMP pictures store no physical pixel size",
    )

"""``clemlab info PATH``: what a microscope file holds and where its numbers come from."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["info"]


def _fmt_number(v: Any) -> str:
    try:
        return f"{float(v):.6g}"
    except (TypeError, ValueError):
        return str(v)


def info(path: str | os.PathLike, *, scene: int | str | None = None, image: int | str | None = None,
         timepoint: int | None = None) -> str:
    """A readable summary of a microscope file, for the terminal or a notebook.

    Lists the images the file holds (:func:`clemlab.list_images`); for the chosen image (or
    the only one) adds its dims and shape, pixel size with ``pixel_size_source`` (the tag or
    key it came from), origin, channels and the stage position where the file records one.
    Pixels are not read.

    Parameters
    ----------
    path : str or os.PathLike
        Any file :func:`clemlab.open_image` reads.
    scene, image, timepoint :
        As for :func:`clemlab.open_image`, to describe one image of a container.

    Returns
    -------
    str
        Several lines of text.

    Raises
    ------
    FileFormatError
        Missing, unreadable, truncated or unknown file.
    """
    import pandas as pd

    from ..errors import ImageError, MissingPixelSizeError
    from . import detect_format, list_images, open_image

    table = list_images(path)
    lines = [f"{os.fspath(path)}: {detect_format(path).upper()} file, {len(table)} image(s)"]
    with pd.option_context("display.width", 200, "display.max_colwidth", 60, "display.max_columns", 20):
        lines.append(table.to_string())
    try:
        img = open_image(path, scene=scene, image=image, timepoint=timepoint, lazy=True)
    except MissingPixelSizeError as exc:
        lines.append(f"pixel size: none ({exc})")
        return "\n".join(lines)
    except ImageError as exc:
        lines.append(f"(no single image to describe: {exc})")
        return "\n".join(lines)
    attrs = img.attrs
    label = attrs.get("scene") or attrs.get("image")
    lines.append("")
    lines.append(f"image{f' {label!r}' if label else ''}: dims {img.dims}, shape {tuple(img.shape)}, {img.dtype}")
    sizes = ", ".join(f"{d} {_fmt_number(v)}" for d, v in img.clem.pixel_size.items())
    lines.append(f"pixel size (µm): {sizes}")
    lines.append(f"pixel size from: {attrs.get('pixel_size_source', 'not recorded')}")
    origin = ", ".join(f"{d} {_fmt_number(img.coords[d].values[0])}" for d in img.dims if d != "c")
    lines.append(f"first pixel centre (µm): {origin}")
    if "c" in img.dims:
        lines.append(f"channels: {', '.join(map(str, img.coords['c'].values))}")
    elif attrs.get("channel"):
        lines.append(f"channel: {attrs['channel']}")
    for name, entry in (attrs.get("channel_info") or {}).items():
        lines.append(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in entry.items()))
    stage = attrs.get("stage_position")
    if isinstance(stage, dict):
        where = ", ".join(f"{k} {_fmt_number(stage[k])}" for k in ("x", "y", "z") if k in stage)
        lines.append(f"stage position ({stage.get('units', 'µm')}): {where}")
        lines.append(f"  from {stage.get('source', '?')}; refers to the {stage.get('refers_to', '?')}")
    if attrs.get("mosaic"):
        lines.append(f"mosaic: {attrs['mosaic']}")
    return "\n".join(lines)

"""EM and LM on one grid: :func:`correlate` (a lazy two-variable Dataset) and
:func:`stack_channels` (one multi-channel image from it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from .errors import ImageError
from .image import check_image, frame_of, same_frame
from .resample import warp
from .resample.index_map import as_transform

__all__ = ["correlate", "stack_channels"]


def _level_image(obj: Any, level: int | None, argname: str, finer_than: float | None = None) -> xr.DataArray:
    """An image from a DataArray or one level of a multiscale DataTree (``scale{k}``)."""
    if not isinstance(obj, xr.DataTree):
        return obj
    names = sorted((k for k in obj.children if k.startswith("scale")), key=lambda k: int(k[5:]))
    if not names:
        raise ImageError(f"{argname}: a multiscale DataTree needs children scale0, scale1, ...; got {list(obj.children)}")

    def img(k):
        ds = obj[k].to_dataset()
        return ds["image"] if "image" in ds else next(iter(ds.data_vars.values()))

    if level is None and finer_than is not None:  # coarsest level still at least as fine
        pick = names[0]
        for k in names:
            if min(img(k).clem.pixel_size.values()) <= finer_than * (1 + 1e-6):
                pick = k
        return img(pick)
    k = f"scale{level or 0}"
    if k not in names:
        raise ImageError(f"{argname} has levels {names}; level={level!r} is not one of them")
    return img(k)


def _check_pair(em: xr.DataArray, lm: xr.DataArray, tf: Any) -> None:
    """Refuse an em/lm pair whose frames do not match the transform's target/source frames
    (frameless sides pass), naming the frames and the fix."""
    e, l, src, dst = frame_of(em), frame_of(lm), tf.source_frame, tf.target_frame
    if same_frame(e, dst) and same_frame(l, src):
        return
    arrow = f"{src} -> {dst}"
    if same_frame(e, src) and same_frame(l, dst):
        swapped = em.attrs.get("modality") == "LM" or lm.attrs.get("modality") == "EM"
        if swapped:
            fix = "the images are swapped: correlate(em, lm, transform) takes the EM image first"
        else:
            fix = ("the transform points the other way: pass transform.inverse (or swap em and lm "
                   "if they are the other way round)")
        raise ImageError(
            f"correlate: em is in frame {e!r} and lm in frame {l!r}, but the transform maps "
            f"{arrow} (it must map lm's frame to em's); {fix}; pass check_frames=False only "
            "if the frame names are wrong"
        )
    which = ("em", e, dst, "into") if not same_frame(e, dst) else ("lm", l, src, "from")
    raise ImageError(
        f"correlate: {which[0]} is in frame {which[1]!r} but the transform maps {which[3]} frame "
        f"{which[2]!r} ({arrow}); give the {which[0].upper()} image of this registration, or the "
        "registration of these images; pass check_frames=False only if the frame names are wrong"
    )


def _single_channel_em(em: xr.DataArray) -> xr.DataArray:
    """Refuse an EM with a channel axis (an RGB(A) export): EM is one grey level per pixel."""
    if "c" in em.dims:
        raise ImageError(
            f"em has a channel axis 'c' of length {em.sizes['c']} (an RGB or RGBA export?); correlate needs a "
            "single-channel EM image: take one channel, em.isel(c=0), or the grey level, em.mean('c')"
        )
    return em


def correlate(em: Any, lm: Any, transform: Any, *, frame: str = "EM", level: int | None = None,
              order: int = 1, chunks: Any = None, check_frames: bool = True) -> xr.Dataset:
    """Put EM and LM on one grid: a lazy :class:`xarray.Dataset`.

    Parameters
    ----------
    em : xarray.DataArray or xarray.DataTree
        EM image, dims ``(y, x)``, or a multiscale tree (children ``scale0``, ``scale1``, ...).
    lm : xarray.DataArray or xarray.DataTree
        LM image, dims ``([c,] y, x)``, or a multiscale tree.
    transform : Transform or Registration
        Maps LM-frame points to EM-frame points (µm, ``(x, y)``).
    frame : {"EM", "LM"}
        Grid of the result: the EM grid (LM warped onto it) or the LM grid (EM warped).
    level : int, optional
        Pyramid level of the tree that gives the grid; only that level is read. The other
        modality, if a tree, is read at its coarsest level still as fine as that grid.
        Default 0 for the grid.
    order : int
        Interpolation order of the warped modality.
    chunks : optional
        Output chunks, as for :func:`warp`.
    check_frames : bool
        Refuse images whose ``frame`` attrs are not the transform's target (``em``) and
        source (``lm``) frames (default; a side without a frame is not checked). ``False``
        skips the check, for data whose frame names are wrong.

    Returns
    -------
    xarray.Dataset
        Variables ``"EM"`` and ``"LM"`` (dims ``([c,] y, x)``) on the chosen grid, lazy;
        attrs ``frame`` and ``clem:transform_lm_to_em``; given a Registration, also
        ``clem:registration`` and ``clem:landmarks`` (its ``to_dict()`` and its landmarks'
        JSON form), which :func:`clemlab.write_ome_zarr` stores in the group attrs.

    Raises
    ------
    ImageError
        When the frames of ``em`` and ``lm`` are not the transform's target and source
        frames (both names and the fix in the message), and as :func:`warp`.
    """
    if frame not in ("EM", "LM"):
        raise ImageError(f"frame must be 'EM' or 'LM', got {frame!r}")
    tf = as_transform(transform)
    if frame == "EM":
        em = check_image(_level_image(em, level, "em"), "em")
        lm = check_image(_level_image(lm, None, "lm", min(em.clem.pixel_size.values())), "lm")
    else:
        lm = check_image(_level_image(lm, level, "lm"), "lm")
        em = check_image(_level_image(em, None, "em", min(lm.clem.pixel_size.values())), "em")
    # swapped or foreign images are named first: an LM passed as em would otherwise be
    # refused only for its channel axis
    if check_frames:
        _check_pair(em, lm, tf)
    em = _single_channel_em(em)
    if hasattr(transform, "landmarks") and hasattr(transform.landmarks, "check_units"):
        transform.landmarks.check_units(lm, em, "correlate with a registration")
    if frame == "EM":
        moved = warp(lm, tf, like=em, order=order, chunks=chunks, check_frames=False)
        data = {"EM": em, "LM": moved}
        name = em.attrs.get("frame", "EM")
    else:
        moved = warp(em, tf.inverse, like=lm, order=order, chunks=chunks, check_frames=False)
        data = {"EM": moved, "LM": lm}
        name = lm.attrs.get("frame", "LM")
    attrs = {"frame": name, "clem:transform_lm_to_em": tf.to_dict()}
    if tf is not transform and hasattr(transform, "to_dict") and hasattr(transform, "landmarks"):
        # a Registration: keep it (and its landmarks) with the data, so write_ome_zarr stores them
        attrs["clem:registration"] = transform.to_dict()
        attrs["clem:landmarks"] = transform.landmarks.to_json_dict()
    return xr.Dataset(data, attrs=attrs)


def stack_channels(corr: xr.Dataset, dtype: Any = None) -> xr.DataArray:
    """One multi-channel image ``(c, y, x)`` from a correlated dataset, EM first.

    Parameters
    ----------
    corr : xarray.Dataset
        Output of :func:`correlate`.
    dtype : numpy dtype, optional
        Common dtype; default the one numpy promotes the variables to.

    Returns
    -------
    xarray.DataArray
        Channels ``"EM"`` then the LM channel names, grid coords, the grid frame's attrs and
        the LM colours. Lazy when the inputs are.
    """
    em, lm = corr["EM"], corr["LM"]
    if "c" not in lm.dims:
        lm = lm.expand_dims(c=[lm.name or "LM"])
    em = em.expand_dims(c=["EM"])
    dtype = np.result_type(em.dtype, lm.dtype) if dtype is None else np.dtype(dtype)
    out = xr.concat([em.astype(dtype), lm.astype(dtype)], dim="c", coords="minimal",
                    compat="override", combine_attrs="override")
    base = corr["EM"] if corr.attrs.get("frame", "EM") == corr["EM"].attrs.get("frame", "EM") else corr["LM"]
    out.attrs = dict(base.attrs)
    colors = {"EM": "#ffffff"} | dict(lm.attrs.get("colors") or {})
    out.attrs["colors"] = colors
    out.attrs["modality"] = "CLEM"
    out.name = "correlated"
    return out

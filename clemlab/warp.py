"""Resampling an image onto another image's grid, and :func:`correlate`.

``warp(image, transform, like=target)`` puts ``image`` (in the transform's source frame) onto
the pixel grid of ``target`` (in the transform's target frame). The transform maps points
forward (source -> target); the resampler pulls each output pixel from the source through the
inverse, so users never choose a direction.

This is the eager engine (scipy.ndimage); dask inputs give a lazy result computed in one task.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from . import transforms as _tf
from .errors import ImageError
from .image import check_image

__all__ = ["warp", "correlate", "stack_channels"]


def _as_transform(transform: Any) -> _tf.Transform:
    tf = getattr(transform, "transform", transform)  # a Registration carries one
    if not isinstance(tf, _tf.Transform):
        raise ImageError(f"transform must be a clemlab Transform or Registration, got {type(transform).__name__}")
    return tf


def _grid_matrix(img: xr.DataArray) -> np.ndarray:
    size, origin = img.clem._xyz()
    return _tf.index_to_physical_matrix(size, origin)


def _resample_plane(plane: np.ndarray, tf: _tf.Transform, src_m: np.ndarray, dst_m: np.ndarray,
                    out_shape: tuple[int, ...], order: int, fill: float) -> np.ndarray:
    """Resample one spatial block ``plane`` (array order) onto ``out_shape``; float64 out."""
    from scipy import ndimage

    data = np.asarray(plane, dtype=np.float64)
    if isinstance(tf, _tf.LinearTransform):
        # output index -> output physical -> source physical -> source index, one matrix
        k = np.linalg.inv(src_m) @ np.linalg.inv(tf.matrix) @ dst_m
        return ndimage.affine_transform(data, k, output_shape=out_shape, order=order,
                                        mode="constant", cval=fill, prefilter=order > 1)
    d = len(out_shape)
    idx = np.indices(out_shape, dtype=np.float64).reshape(d, -1)  # (D, P) in (z, y, x)
    phys = (dst_m[:d, :d] @ idx + dst_m[:d, d:]).T  # (P, D) in (x, y, z)
    src_phys = tf.inverse(phys)
    src_idx = np.linalg.solve(src_m[:d, :d], (src_phys - src_m[:d, d]).T)
    return ndimage.map_coordinates(data, src_idx, order=order, mode="constant", cval=fill,
                                   prefilter=order > 1).reshape(out_shape)


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def _rewrite_attrs(attrs: dict, tf: _tf.Transform, like: xr.DataArray) -> dict:
    """Attrs of the warped image: new frame, and transforms re-expressed from it."""
    out = dict(attrs)
    old_frame = attrs.get("frame") or tf.source_frame
    new_frame = like.attrs.get("frame") or tf.target_frame
    back = tf.inverse  # new frame -> old frame
    new_tfs: dict[str, Any] = {}
    for name, d in (attrs.get("clem:transforms") or {}).items():
        if name == new_frame:
            continue
        new_tfs[name] = back.then(_tf.transform_from_dict(d).with_frames(None, name)).with_frames(new_frame, name).to_dict()
    if old_frame and old_frame != new_frame:
        new_tfs[old_frame] = back.with_frames(new_frame, old_frame).to_dict()
    out["clem:transforms"] = new_tfs
    if new_frame is not None:
        out["frame"] = new_frame
    else:
        out.pop("frame", None)
    out["clem:warped_from"] = old_frame
    return out


def warp(image: xr.DataArray, transform: Any = None, like: xr.DataArray | None = None, *,
         order: int = 1, fill: float = 0) -> xr.DataArray:
    """Resample ``image`` onto the pixel grid of ``like``.

    Parameters
    ----------
    image : xarray.DataArray
        Image in the transform's source frame, dims ``([c,] [z,] y, x)``.
    transform : Transform or Registration, optional
        Maps ``image``-frame points to ``like``-frame points (µm, ``(x, y[, z])``).
        Default: the transform stored in ``image.attrs["clem:transforms"]`` for ``like``'s frame.
    like : xarray.DataArray
        Target image whose spatial grid (coords, µm) the output takes.
    order : int
        Spline order: 0 nearest, 1 (bi/tri)linear (default), 3 cubic.
    fill : float
        Value for output pixels that map outside ``image``.

    Returns
    -------
    xarray.DataArray
        Dims ``([c,] <like's spatial dims>)``, ``image``'s dtype, coords of ``like``, attrs with
        ``frame`` set to ``like``'s frame and ``clem:transforms`` re-expressed from it.
        Lazy (dask) when ``image`` is dask-backed.
    """
    image = check_image(image, "image")
    if like is None:
        raise ImageError("warp() needs like=<target image> whose grid the output takes")
    like = check_image(like, "like")
    tf = _as_transform(transform) if transform is not None else image.clem.transform_to(like.clem.frame)
    if tf.ndim != image.clem.ndim or tf.ndim != like.clem.ndim:
        raise ImageError(
            f"a {tf.ndim}-D transform cannot map a {image.clem.ndim}-D image onto a "
            f"{like.clem.ndim}-D grid; for a z-stack onto a 2-D image select a plane "
            "(image.isel(z=k)) or project it (image.max('z')) first"
        )
    if order not in (0, 1, 2, 3, 4, 5):
        raise ImageError(f"order must be an integer 0-5, got {order!r}")
    sdims = image.clem.spatial_dims
    out_sdims = like.clem.spatial_dims
    out_shape = tuple(like.sizes[d] for d in out_sdims)
    src_m, dst_m = _grid_matrix(image), _grid_matrix(like)
    lead = [d for d in image.dims if d not in sdims]  # at most "c"
    dtype = image.dtype

    def compute(block: np.ndarray) -> np.ndarray:
        block = np.asarray(block)
        flat = block.reshape((-1,) + block.shape[len(lead):])
        out = np.stack([_resample_plane(p, tf, src_m, dst_m, out_shape, order, fill) for p in flat])
        return _cast(out, dtype).reshape(block.shape[: len(lead)] + out_shape)

    data = image.data
    if hasattr(data, "dask"):
        import dask
        import dask.array as da

        shape = tuple(image.sizes[d] for d in lead) + out_shape
        result = da.from_delayed(dask.delayed(compute)(data), shape=shape, dtype=dtype)
    else:
        result = compute(data)
    coords = {d: like.coords[d] for d in out_sdims}
    if "c" in lead:
        coords["c"] = image.coords["c"]
    return xr.DataArray(result, dims=tuple(lead) + out_sdims, coords=coords, name=image.name,
                        attrs=_rewrite_attrs(image.attrs, tf, like))


def correlate(em: xr.DataArray, lm: xr.DataArray, transform: Any, *, order: int = 1) -> xr.Dataset:
    """Put the LM channels onto the EM grid: one :class:`xarray.Dataset` in the EM frame.

    Parameters
    ----------
    em : xarray.DataArray
        EM image (target), dims ``(y, x)``.
    lm : xarray.DataArray
        LM image, dims ``([c,] y, x)``.
    transform : Transform or Registration
        Maps LM-frame points to EM-frame points (µm, ``(x, y)``).
    order : int
        Interpolation order for the LM channels.

    Returns
    -------
    xarray.Dataset
        Variables ``"EM"`` (the EM image) and ``"LM"`` (the warped LM channels, dims
        ``([c,] y, x)``) on the EM coords; attrs ``frame`` and the LM->EM transform.
    """
    em = check_image(em, "em")
    lm = check_image(lm, "lm")
    tf = _as_transform(transform)
    warped = warp(lm, tf, like=em, order=order)
    frame = em.attrs.get("frame", "EM")
    return xr.Dataset(
        {"EM": em, "LM": warped},
        attrs={"frame": frame, "clem:transform_lm_to_em": tf.to_dict()},
    )


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
        Channels ``"EM"`` then the LM channel names, EM grid coords, EM frame attrs and the
        LM colours. Lazy when the inputs are.
    """
    em, lm = corr["EM"], corr["LM"]
    if "c" not in lm.dims:
        lm = lm.expand_dims(c=[lm.name or "LM"])
    em = em.expand_dims(c=["EM"])
    dtype = np.result_type(em.dtype, lm.dtype) if dtype is None else np.dtype(dtype)
    out = xr.concat([em.astype(dtype), lm.astype(dtype)], dim="c", coords="minimal",
                    compat="override", combine_attrs="override")
    out.attrs = dict(corr["EM"].attrs)
    colors = {"EM": "#ffffff"} | dict(lm.attrs.get("colors") or {})
    out.attrs["colors"] = colors
    out.attrs["modality"] = "CLEM"
    out.name = "correlated"
    return out

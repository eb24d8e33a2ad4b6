"""The public :func:`warp`: arguments checked, the output grid and chunks chosen, the lazy
result built (:mod:`clemlab.resample.graph`) and its attrs re-expressed in the target frame.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import xarray as xr

from .. import transforms as _tf
from ..errors import ImageError, TransformError
from ..image import as_image, check_image
from .checks import check_fill, check_jacobian
from .checks import check_frames as _check_frames
from .graph import _build
from .index_map import _grid_matrix, _IndexMap, as_transform
from .task import _method

__all__ = ["warp", "DEFAULT_CHUNK"]

#: Default output chunk side per spatial dim (2-D, 3-D).
DEFAULT_CHUNK = {2: 2048, 3: 128}

#: default chunks shrink so that a chunk's source footprint stays below this side (px)
_FOOTPRINT_SIDE = 8192


def _normalize_out_chunks(chunks: Any, sdims: tuple[str, ...], shape: tuple[int, ...],
                          like: xr.DataArray | None, scale: float) -> tuple[tuple[int, ...], ...]:
    """Output chunks per spatial dim, from ``chunks`` as :func:`warp` takes it; ``scale`` is the
    map's largest source-pixels-per-output-pixel, by which default chunks shrink."""
    import dask.array as da

    if chunks is None:
        if like is not None and hasattr(like.data, "chunks"):
            return tuple(like.data.chunks[like.dims.index(d)] for d in sdims)
        side = DEFAULT_CHUNK[len(sdims)]
        side = max(64, min(side, int(_FOOTPRINT_SIDE / max(scale, 1e-9))))
        chunks = (side,) * len(sdims)
    elif isinstance(chunks, dict):
        unknown = set(chunks) - set(sdims)
        if unknown:
            raise ImageError(f"chunks has entries for {sorted(unknown)}, which are not output dims {sdims}")
        chunks = tuple(chunks.get(d, DEFAULT_CHUNK[len(sdims)]) for d in sdims)
    elif isinstance(chunks, int):
        chunks = (chunks,) * len(sdims)
    try:
        return da.core.normalize_chunks(chunks, shape)
    except (ValueError, TypeError) as exc:
        raise ImageError(f"chunks={chunks!r} does not fit the output shape {shape} of dims {sdims}: {exc}") from None


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


def _grid_image(grid: Any, tf: _tf.Transform) -> xr.DataArray:
    """A coordinate-only target image from ``grid={dim: pixel-centre coords in µm}``."""
    import dask.array as da

    if not isinstance(grid, dict) or not {"y", "x"} <= set(grid) or not set(grid) <= {"z", "y", "x"}:
        raise ImageError("grid must be a dict {'y': coords, 'x': coords[, 'z': coords]} of pixel-centre "
                         f"positions in µm, got {grid!r:.80}")
    sdims = tuple(d for d in ("z", "y", "x") if d in grid)
    sizes, origins, shape = {}, {}, []
    for d in sdims:
        v = np.asarray(grid[d], np.float64).reshape(-1)
        if v.size < 2 or not np.all(np.isfinite(v)) or not np.allclose(np.diff(v), (v[-1] - v[0]) / (v.size - 1), rtol=1e-6, atol=0) or v[-1] <= v[0]:
            raise ImageError(f"grid[{d!r}] must hold at least 2 uniformly increasing finite positions (µm)")
        sizes[d], origins[d] = (v[-1] - v[0]) / (v.size - 1), v[0]
        shape.append(v.size)
    return as_image(da.zeros(shape, dtype=np.uint8, chunks=-1), pixel_size=sizes, origin=origins,
                    dims=sdims, frame=tf.target_frame)


def _index_map(tf: _tf.Transform, image: xr.DataArray, like: xr.DataArray) -> _IndexMap:
    """The output -> source index map; a singular linear transform is refused."""
    try:
        return _IndexMap(tf, _grid_matrix(image), _grid_matrix(like))
    except (np.linalg.LinAlgError, TransformError) as exc:
        raise ImageError(
            f"warp: the transform {type(tf).__name__} ({tf.source_frame} -> {tf.target_frame}) "
            "cannot be inverted: its Jacobian determinant is 0 (it collapses an axis), so no "
            f"source pixel belongs to an output pixel ({exc}); check the landmarks and the model"
        ) from None


def warp(image: xr.DataArray, transform: Any = None, like: xr.DataArray | None = None, *,
         grid: dict | None = None, chunks: Any = None, order: int = 1, fill: float = 0,
         check_frames: bool = True) -> xr.DataArray:
    """Resample ``image`` onto the pixel grid of ``like`` (or ``grid``), lazily.

    Parameters
    ----------
    image : xarray.DataArray
        Image in the transform's source frame, dims ``([c,] [z,] y, x)``, numpy- or
        dask-backed. Only the source chunks under each output chunk's footprint are read.
        A numpy-backed image is not copied: it is read when the result is computed, so
        change its pixels in place only after computing the result.
    transform : Transform or Registration, optional
        Maps ``image``-frame points to target-frame points (µm, ``(x, y[, z])``).
        Default: the transform stored in ``image.attrs["clem:transforms"]`` for ``like``'s frame.
    like : xarray.DataArray, optional
        Target image whose spatial grid (coords, µm) the output takes. Its pixels are never read.
    grid : dict, optional
        Instead of ``like``: ``{"y": coords, "x": coords[, "z": coords]}``, pixel-centre
        positions in µm in the target frame (uniform, increasing).
    chunks : int, tuple or dict, optional
        Output chunks per spatial dim. Default: ``like``'s dask chunks, else 2048 px (2-D) /
        128 px (3-D), made smaller for strongly shrinking transforms so that a chunk's source
        footprint stays below 8192 px a side. Channels keep the source's chunks.
    order : int
        Spline order: 0 nearest, 1 (bi/tri)linear (default), 2-5 spline (scipy).
    fill : float
        Value for output pixels that map outside ``image``; it must fit ``image``'s dtype
        (a whole number within range for integer dtypes; NaN only for float dtypes).
    check_frames : bool
        Refuse a transform whose source frame is not ``image``'s frame or whose target frame
        is not ``like``'s (default). A side without a frame (no ``frame`` attr, or a transform
        without frame names) is never checked; ``False`` skips the check for data whose frame
        names are wrong.

    Returns
    -------
    xarray.DataArray
        Dims ``([c,] <target spatial dims>)``, ``image``'s dtype, the target coords, dask-backed
        with one task per output chunk (call ``.compute()`` for numpy). Attrs: ``frame`` set
        to the target frame, ``clem:transforms`` re-expressed from it, ``clem:warped_from``.

    Raises
    ------
    ImageError
        On a frame mismatch (both frame names and the fix in the message), a fill outside
        the dtype's range, or a transform that folds, collapses an axis or scales µm by more
        than 1000x over the output grid (the range of its Jacobian determinant in the message).

    Warns
    -----
    UserWarning
        When no output pixel maps inside ``image`` (the result is all ``fill``).

    Examples
    --------
    >>> import numpy as np, clemlab as cl
    >>> src = cl.as_image(np.arange(12.0).reshape(3, 4), pixel_size=1.0)
    >>> out = cl.warp(src, cl.Translation([1.0, 0.0]), like=src)
    >>> out.values[0].tolist()
    [0.0, 0.0, 1.0, 2.0]
    """
    image = check_image(image, "image")
    if like is None and grid is None:
        raise ImageError("warp() needs like=<target image> whose grid the output takes (or grid={'y': ..., 'x': ...})")
    if like is not None and grid is not None:
        raise ImageError("give either like= or grid=, not both")
    if like is not None:
        like = check_image(like, "like")
        tf = as_transform(transform) if transform is not None else image.clem.transform_to(like.clem.frame)
    else:
        if transform is None:
            raise ImageError("warp(..., grid=...) needs the transform (there is no target image to name the frame)")
        tf = as_transform(transform)
        like = _grid_image(grid, tf)
    if check_frames:
        _check_frames(image.clem.frame, like.clem.frame, tf)
    if hasattr(transform, "landmarks") and hasattr(transform.landmarks, "check_units"):
        transform.landmarks.check_units(image, like, "warp with a registration")
    if tf.ndim != image.clem.ndim or tf.ndim != like.clem.ndim:
        raise ImageError(
            f"a {tf.ndim}-D transform cannot map a {image.clem.ndim}-D image onto a "
            f"{like.clem.ndim}-D grid; for a z-stack onto a 2-D image select a plane "
            "(image.isel(z=k)) or project it (image.max('z')) first"
        )
    if order not in (0, 1, 2, 3, 4, 5):
        raise ImageError(f"order must be an integer 0-5, got {order!r}")
    fill = check_fill(fill, image.dtype)
    sdims = image.clem.spatial_dims
    out_sdims = like.clem.spatial_dims
    out_shape = tuple(like.sizes[d] for d in out_sdims)
    imap = _index_map(tf, image, like)
    check_jacobian(imap, out_shape, tf)
    lead = [d for d in image.dims if d not in sdims]  # at most "c"
    dtype = image.dtype
    # how much the map shrinks: source pixels per output pixel (largest singular value)
    probe = imap(np.vstack([np.zeros(len(sdims)), np.eye(len(sdims))]), [n // 2 for n in out_shape])
    scale = float(np.linalg.svd(probe[1:] - probe[0], compute_uv=False).max()) if np.all(np.isfinite(probe)) else 1.0
    out_chunks = _normalize_out_chunks(chunks, out_sdims, out_shape, like if grid is None else None, scale)
    result, hits = _build(image.data, len(lead), imap, out_chunks, order, fill, dtype,
                          _method(dtype, order, len(sdims)))
    if hits == 0:
        warnings.warn(
            f"warp: the {type(tf).__name__} transform ({tf.source_frame} -> {tf.target_frame}) maps "
            "the whole output grid outside the source image "
            f"(frame {image.clem.frame!r}); the result is all fill={fill:g}. Check the transform "
            "direction (source -> target) and the frames of image and like",
            UserWarning, stacklevel=2,
        )
    coords = {d: like.coords[d] for d in out_sdims}
    if "c" in lead:
        coords["c"] = image.coords["c"]
    return xr.DataArray(result, dims=tuple(lead) + out_sdims, coords=coords, name=image.name,
                        attrs=_rewrite_attrs(image.attrs, tf, like))

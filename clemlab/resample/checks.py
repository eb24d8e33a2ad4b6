"""What :func:`~clemlab.resample.warp` refuses before it builds anything: a transform whose
frames do not match the images, a fill value the output dtype cannot hold, and a map that
folds, collapses an axis or scales µm absurdly over the output grid.

Each refusal names the problem and the fix; none of these inputs can give a right result.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import transforms as _tf
from ..errors import ImageError
from ..image import same_frame
from .index_map import _IndexMap

#: linear scale |det J|^(1/D) of a µm -> µm transform beyond which it is refused (both frames
#: are in µm, so a correlative transform scales by about 1; 1000x either way is a unit error)
SCALE_LIMIT = 1.0e3
#: ratio of the smallest to the largest singular value of the transform's Jacobian below which
#: an axis counts as collapsed
COLLAPSE_RATIO = 1.0e-3
#: sample points per axis of the output grid at which the Jacobian is evaluated
_JACOBIAN_SAMPLES = 33


def check_frames(image_frame: str | None, like_frame: str | None, tf: _tf.Transform,
                 who: str = "warp") -> None:
    """Refuse a transform whose frames are not those of the image (source) and ``like`` (target).

    Frameless sides (None) are not checked. Raises :class:`~clemlab.errors.ImageError` naming
    the frames and the fix: the inverse when the transform points the other way.
    """
    src, dst = tf.source_frame, tf.target_frame
    if same_frame(image_frame, src) and same_frame(like_frame, dst):
        return
    arrow = f"{src} -> {dst}"
    if same_frame(image_frame, dst) and same_frame(like_frame, src):
        raise ImageError(
            f"{who}: the transform maps frame {src!r} to {dst!r} ({arrow}), but the image is in "
            f"frame {image_frame!r} and like in frame {like_frame!r}: it points the other way. "
            "Use its inverse (transform.inverse, or registration.transform.inverse), or swap "
            "image and like; pass check_frames=False only if the frame names are wrong"
        )
    if not same_frame(image_frame, src):
        raise ImageError(
            f"{who}: the image is in frame {image_frame!r} but the transform maps from frame "
            f"{src!r} ({arrow}); give an image in frame {src!r} or a transform from "
            f"{image_frame!r}; pass check_frames=False only if the frame names are wrong"
        )
    raise ImageError(
        f"{who}: like is in frame {like_frame!r} but the transform maps into frame {dst!r} "
        f"({arrow}); give a target grid in frame {dst!r} or a transform into {like_frame!r}; "
        "pass check_frames=False only if the frame names are wrong"
    )


def check_fill(fill: Any, dtype: np.dtype) -> float:
    """``fill`` as a float the output ``dtype`` holds exactly; refused otherwise.

    Integer dtypes take whole numbers within their range (no NaN, no inf); float dtypes take
    any number within their range, NaN and ±inf; bool takes 0 and 1.
    """
    if isinstance(fill, (str, bytes)) or np.ndim(fill) != 0:
        raise ImageError(f"fill must be a number, got {fill!r:.60}")
    try:
        value = float(fill)
    except (TypeError, ValueError):
        raise ImageError(f"fill must be a number, got {fill!r:.60}") from None
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        if value not in (0.0, 1.0):
            raise ImageError(f"fill={fill!r} does not fit the image's dtype bool (0 or 1); pass fill=0 or fill=1")
        return value
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if not np.isfinite(value) or value != round(value) or not info.min <= value <= info.max:
            raise ImageError(
                f"fill={fill!r} does not fit the image's dtype {dtype} (whole numbers from "
                f"{info.min} to {info.max}); pass a fill in that range, or convert the image "
                "first (image.astype('float32')) to fill with NaN or other values"
            )
        return value
    finfo = np.finfo(dtype)
    if np.isfinite(value) and abs(value) > float(finfo.max):
        raise ImageError(
            f"fill={fill!r} does not fit the image's dtype {dtype} (magnitude up to "
            f"{float(finfo.max):.4g}); pass a smaller fill, or convert the image to float64 first"
        )
    return value


def _grid_samples(shape: tuple[int, ...]) -> np.ndarray:
    """Output indices (P, D) on a lattice of at most :data:`_JACOBIAN_SAMPLES` per axis."""
    axes = [np.unique(np.linspace(0, n - 1, min(n, _JACOBIAN_SAMPLES))) for n in shape]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(shape))


def forward_jacobians(imap: _IndexMap, shape: tuple[int, ...]) -> np.ndarray:
    """Determinants and singular values of the forward transform's Jacobian (target µm per
    source µm) at a lattice of output pixels.

    Returns an array (P, D + 1): per sample its determinant, then its singular values
    (largest first); NaN where the map is not finite there.
    """
    d = len(shape)
    # an affine map has one Jacobian everywhere: the grid's centre stands for it
    pts = np.array([[(n - 1) / 2 for n in shape]]) if imap.affine else _grid_samples(shape)
    step = 0.5  # output px: central differences of a smooth map
    probes = np.concatenate([pts] + [pts + s * step * np.eye(d)[k] for k in range(d) for s in (-1, 1)])
    vals = imap(probes, 0).reshape(2 * d + 1, len(pts), d)
    jac_index = np.stack([(vals[2 + 2 * k] - vals[1 + 2 * k]) / (2 * step) for k in range(d)], axis=-1)
    # index map = src_index <- inverse transform <- dst_physical: undo the grids' scales
    src_scale = imap.src_m[:d, :d]  # source index -> µm
    dst_scale = imap.dst_m[:d, :d]  # output index -> µm
    out = np.full((len(pts), d + 1), np.nan)
    ok = np.all(np.isfinite(jac_index.reshape(len(pts), -1)), axis=1)
    if ok.any():
        # inverse transform's Jacobian in µm: d(src µm)/d(dst µm) = S_src J_index S_dst^-1
        inv_jac = src_scale @ jac_index[ok] @ np.linalg.inv(dst_scale)
        det_inv = np.linalg.det(inv_jac)
        sv_inv = np.linalg.svd(inv_jac, compute_uv=False)  # largest first
        with np.errstate(divide="ignore"):
            out[ok, 0] = 1.0 / det_inv
            out[ok, 1:] = 1.0 / sv_inv[:, ::-1]
    return out


def check_jacobian(imap: _IndexMap, shape: tuple[int, ...], tf: _tf.Transform) -> None:
    """Refuse a transform that folds, collapses an axis or scales µm by more than
    :data:`SCALE_LIMIT` over the output grid ``shape``, naming the range of its Jacobian
    determinant there.

    A uniform mirror (determinant negative everywhere) is a valid transform and passes. A
    projective map's horizon, where the map is not finite, is left to the resampler.
    """
    jac = forward_jacobians(imap, shape)
    good = np.isfinite(jac).all(axis=1)
    if not good.any():
        return
    det, sv = jac[good, 0], jac[good, 1:]
    name = type(tf).__name__
    what = f"{name} ({tf.source_frame} -> {tf.target_frame})"
    span = f"its Jacobian determinant ranges from {det.min():.3g} to {det.max():.3g} over the output grid"
    fix = "check the landmarks and the model (a fold or a collapsed axis is never a valid registration)"
    if det.min() < 0 < det.max() or np.any(det == 0):
        raise ImageError(
            f"warp: the transform {what} folds the image over itself: {span} (it changes sign, "
            f"so parts of the image would land mirrored on others); {fix}, e.g. a smoother "
            "model (affine) or corrected landmarks"
        )
    ratio = sv[:, -1] / sv[:, 0]
    if ratio.min() < COLLAPSE_RATIO:
        raise ImageError(
            f"warp: the transform {what} collapses an axis: {span} and its scales differ by "
            f"{1 / ratio.min():.3g}x; {fix}"
        )
    scale = np.abs(det) ** (1.0 / len(shape))
    if scale.max() > SCALE_LIMIT or scale.min() < 1.0 / SCALE_LIMIT:
        raise ImageError(
            f"warp: the transform {what} scales µm by {scale.min():.3g} to {scale.max():.3g}: "
            f"{span}; both frames are in µm, so a correlative transform scales by about 1: "
            "check the units of the landmarks or the pixel sizes of the images"
        )

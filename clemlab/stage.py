"""Stage positions as a first placement: two images from one stage -> an initial transform.

Integrated light/electron microscopes, or two microscopes sharing a sample holder, record
where the stage was when each image was taken (``attrs["stage_position"]``, µm, as the
CZI, LIF, ND2, OME-TIFF and SEM-TIFF readers keep it). From those alone,
:func:`stage_placement` places the moving image (e.g. LM) in the fixed image's frame (EM);
:func:`clemlab.register_images` then refines it from the image content::

    start = cl.stage_placement(lm, em)
    match = cl.register_images(lm, em, initial=start)

Convention
----------
Each image's frame (µm, its own coords) is mapped to stage coordinates (µm) by::

    stage = stage_position + S (p - anchor)

- ``anchor`` is the image point the stage position refers to: the centre of the field
  (CZI ``CenterPosition`` or tile stage position, LIF ``StagePosX/Y``, ND2
  ``stagePositionUm``, FEI / OpenFIBSEM stage), except where the image's coords already
  start at its stage position (OME-TIFF ``Plane PositionX/Y``: the first pixel centre), in
  which case the image frame *is* the stage frame.
- ``S = diag(±1, ±1)``: image x and y are assumed to point along stage x and y (``+1``).
  Stages differ: a camera mounted mirrored, or a stage whose y counts against the image
  rows, gives ``-1``; say so with ``flip_moving="y"`` (or ``"x"``, ``"xy"``), and the same
  for the fixed image. No rotation between camera and stage is assumed.
- The scale is 1: both frames are in µm, and the pixel sizes enter through each image's
  coords (its anchor and extent), so images of different pixel sizes are placed correctly.

Where the axes are not aligned with the stage (a SerialEM map with its ``MapScaleMat``),
give the image's frame -> stage transform instead (``fixed_to_stage=``, e.g.
:func:`clemlab.stage_transform` of a navigator item's ``pixel_to_stage()``).

Uncertainty
-----------
The placement is as good as the stages: motorised light-microscope stages repeat to about
1-5 µm, but two microscopes only share coordinates when their stages are calibrated
against each other (an integrated CLEM, or a holder with a reference mark); otherwise
offsets of tens to hundreds of µm and scale errors near 1 % are common, and an unknown
rotation of 1° moves the edge of a 100 µm field by 1.7 µm. Treat the result as a start:
:func:`clemlab.register_images` searches rotations within ±6°, scales within ±8 % and
shifts within about a fifth of the fixed field around it.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from . import transforms as _tf
from .errors import ImageError
from .image import check_image, unit_to_um

__all__ = ["stage_placement", "image_to_stage"]

_ANCHORS = ("auto", "centre", "origin")


def _signs(flip: str, which: str) -> np.ndarray:
    flip = str(flip).lower()
    if set(flip) - set("xy"):
        raise ImageError(f"flip_{which} must be '', 'x', 'y' or 'xy' (the image axes that point against "
                         f"the stage's), got {flip!r}")
    return np.array([-1.0 if "x" in flip else 1.0, -1.0 if "y" in flip else 1.0])


def _stage_xy(img: Any, which: str) -> np.ndarray:
    pos = img.attrs.get("stage_position")
    if not isinstance(pos, dict) or "x" not in pos or "y" not in pos:
        raise ImageError(
            f"the {which} image has no stage position (attrs['stage_position'] with 'x' and 'y' "
            "in µm): its file did not record one. Set it by hand, e.g. img.attrs['stage_position'] "
            f"= {{'x': 1250.0, 'y': -830.0, 'units': 'µm'}} (the centre of the field), or pass "
            f"{which}_to_stage= (the image frame -> stage transform)"
        )
    try:
        factor = unit_to_um(str(pos.get("units", "µm")))
        xy = np.array([float(pos["x"]), float(pos["y"])]) * factor
    except (TypeError, ValueError) as exc:
        raise ImageError(f"the {which} image's stage position {pos!r} is not a pair of numbers ({exc})") from None
    if not np.all(np.isfinite(xy)):
        raise ImageError(f"the {which} image's stage position {pos!r} is not finite")
    return xy


def _centre(img: Any) -> np.ndarray:
    ext = img.clem.extent
    return np.array([(ext["x"][0] + ext["x"][1]) / 2, (ext["y"][0] + ext["y"][1]) / 2])


def image_to_stage(img: Any, flip: str = "", anchor: str = "auto", which: str = "image") -> _tf.Affine:
    """The image frame (µm) -> stage (µm) map from ``attrs["stage_position"]``.

    Parameters
    ----------
    img : xarray.DataArray
        A clemlab image with ``attrs["stage_position"]`` (``x``, ``y``, ``units``).
    flip : str
        ``""``, ``"x"``, ``"y"`` or ``"xy"``: the image axes that point against the stage's.
    anchor : str
        The image point the stage position refers to: ``"centre"`` of the field,
        ``"origin"`` (the first pixel centre), or ``"auto"``: ``"origin"`` when the image's
        coords already start at its stage position (OME-TIFF planes), else ``"centre"``.
    which : str
        Name of the image in messages (``"moving"``, ``"fixed"``).

    Returns
    -------
    clemlab.transforms.Affine
        2-D, ``source_frame`` the image's frame, ``target_frame="stage"``; its linear part
        is ``diag(±1, ±1)``.
    """
    check_image(img)
    if anchor not in _ANCHORS:
        raise ImageError(f"anchor must be one of {_ANCHORS}, got {anchor!r}")
    s = _stage_xy(img, which)
    signs = _signs(flip, which)
    origin = np.array([img.clem.origin["x"], img.clem.origin["y"]])
    if anchor == "auto":
        step = min(img.clem.pixel_size["x"], img.clem.pixel_size["y"])
        anchor = "origin" if np.all(np.abs(origin - s) <= step) else "centre"
    a = origin if anchor == "origin" else _centre(img)
    m = np.eye(3)
    m[:2, :2] = np.diag(signs)
    m[:2, 2] = s - signs * a
    return _tf.Affine(m, source_frame=img.attrs.get("frame"), target_frame="stage")


def stage_placement(moving: Any, fixed: Any, *, flip_moving: str = "", flip_fixed: str = "",
                    anchor: str = "auto", moving_to_stage: _tf.Transform | None = None,
                    fixed_to_stage: _tf.Transform | None = None) -> _tf.Affine:
    """Initial transform moving -> fixed from the stage positions of two images.

    Parameters
    ----------
    moving, fixed : xarray.DataArray
        Clemlab images (e.g. LM and EM) taken on the same stage, each with
        ``attrs["stage_position"]`` (µm) unless its ``*_to_stage`` transform is given.
    flip_moving, flip_fixed : str
        ``""`` (default: image x, y along stage x, y), ``"x"``, ``"y"`` or ``"xy"``: the
        image axes that point against the stage's (see the module docstring).
    anchor : str
        What the stage positions refer to: ``"auto"`` (default), ``"centre"`` or
        ``"origin"``; see :func:`image_to_stage`.
    moving_to_stage, fixed_to_stage : Transform, optional
        The image frame (µm) -> stage (µm) map, when known better than from the stage
        position alone (e.g. :func:`clemlab.stage_transform` of a SerialEM map).

    Returns
    -------
    clemlab.transforms.Affine
        Moving frame (µm) -> fixed frame (µm), 2-D; usable as ``initial=`` in
        :func:`clemlab.register_images`. A translation (with axis flips when asked), scale 1.

    Warns
    -----
    UserWarning
        When the placed moving field does not overlap the fixed field: the images were
        then not taken on the same stage, or the stage coordinates do not correspond.
    """
    m2s = moving_to_stage if moving_to_stage is not None else image_to_stage(moving, flip_moving, anchor, "moving")
    f2s = fixed_to_stage if fixed_to_stage is not None else image_to_stage(fixed, flip_fixed, anchor, "fixed")
    for name, t in (("moving_to_stage", m2s), ("fixed_to_stage", f2s)):
        if not isinstance(t, _tf.LinearTransform) or t.ndim != 2:
            raise ImageError(f"{name} must be a 2-D linear clemlab transform (image µm -> stage µm)")
    matrix = np.linalg.inv(f2s.matrix) @ m2s.matrix
    out = _tf.Affine(matrix, source_frame=moving.attrs.get("frame"), target_frame=fixed.attrs.get("frame"))
    _warn_if_apart(out, moving, fixed)
    return out


def _warn_if_apart(t: _tf.Affine, moving: Any, fixed: Any) -> None:
    ext_m, ext_f = moving.clem.extent, fixed.clem.extent
    corners = np.array([[x, y] for x in ext_m["x"] for y in ext_m["y"]])
    placed = t(corners)
    lo, hi = placed.min(axis=0), placed.max(axis=0)
    f_lo = np.array([ext_f["x"][0], ext_f["y"][0]])
    f_hi = np.array([ext_f["x"][1], ext_f["y"][1]])
    gap = np.maximum(np.maximum(f_lo - hi, lo - f_hi), 0.0)
    if np.any(gap > 0):
        warnings.warn(
            f"the stage positions place the moving field {float(np.hypot(*gap)):.1f} µm beside the fixed "
            "field, with no overlap: the images were not taken on the same stage or holder, their stage "
            "coordinates do not correspond, or an axis is flipped (flip_moving= / flip_fixed=)",
            UserWarning, stacklevel=3,
        )

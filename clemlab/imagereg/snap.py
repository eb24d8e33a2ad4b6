"""Snap one click to the image content: a local patch match around a clicked pair.

A user clicks a structure in the moving image (LM) and roughly the same structure in the
fixed image (EM). :func:`snap_point` takes the moving patch around the moving click, brings
the fixed image onto the moving grid through the local linear part of the current mapping
(re-centred so that the moving click lands on the fixed click), and finds where the patch
matches best within a search radius, by masked NCC or mutual information (the same
representations and peak analysis as :func:`clemlab.register_images`' refinement). The answer is the fixed-frame
partner of the moving click and its uncertainty, or a refusal in words when the patch has no
texture or no clear peak.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import RegistrationError
from .refine import match_patches
from .represent import Plane, plane_of, represent

__all__ = ["Snap", "snap_point"]


@dataclass(frozen=True)
class Snap:
    """Result of :func:`snap_point`.

    Attributes
    ----------
    point : numpy.ndarray, shape (2,)
        The fixed-frame partner of the moving click, µm ``(x, y)``.
    sigma : float
        Its 1-sigma uncertainty per axis, µm (from the NCC peak's height and sharpness).
    ncc : float
        Peak normalised cross-correlation, -1..1 (for ``representation="mi"``, the MI score
        as a correlation, 0..1: :func:`clemlab.imagereg.mi.correlation`).
    moved : float
        Distance from the fixed click to ``point``, µm.
    """

    point: np.ndarray
    sigma: float
    ncc: float
    moved: float


def _local_linear(transform, xy: np.ndarray, h: float) -> np.ndarray:
    """(3, 3) matrix of the first-order expansion of ``transform`` at ``xy`` (µm)."""
    pts = np.array([xy, xy + [h, 0.0], xy + [0.0, h]])
    out = np.asarray(transform(pts), float)
    lin = np.column_stack([(out[1] - out[0]) / h, (out[2] - out[0]) / h])
    m = np.eye(3)
    m[:2, :2] = lin
    m[:2, 2] = out[0] - lin @ xy
    return m


def _crop(plane: Plane, centre: np.ndarray, half: int) -> Plane | None:
    """The ``(2 half + 1)``-pixel square of ``plane`` centred on the pixel nearest ``centre``."""
    col, row = (plane.pixel_from_point() @ [centre[0], centre[1], 1.0])[:2]
    r, c = int(round(row)), int(round(col))
    ny, nx = plane.shape
    if r - half < 0 or c - half < 0 or r + half >= ny or c + half >= nx:
        return None
    data = plane.data[r - half:r + half + 1, c - half:c + half + 1]
    return Plane(np.ascontiguousarray(data), plane.x0 + (c - half) * plane.step,
                 plane.y0 + (r - half) * plane.step, plane.step)


def snap_point(moving, fixed, point, near, transform, *, channel=None, fixed_channel=None,
               patch_um: float | None = None, radius_um: float | None = None,
               invert: bool | None = None, representation: str = "intensity") -> Snap:
    """Where the structure around ``point`` (moving frame) lies in ``fixed``, near ``near``.

    Parameters
    ----------
    moving, fixed : xarray.DataArray
        2-D clemlab images (``(y, x)``, or ``(c, y, x)`` with ``channel`` /
        ``fixed_channel``), coordinates in µm, square pixels.
    point : array_like, shape (2,)
        The click in the moving image, µm ``(x, y)``.
    near : array_like, shape (2,)
        The rough click in the fixed image, µm ``(x, y)``: the search is centred here.
    transform : callable
        The current moving -> fixed mapping (a clemlab Transform, or any function of
        ``(N, 2)`` µm points); only its local rotation, scale and shear at ``point`` are used.
    patch_um : float, optional
        Side of the matched patch, moving µm (default: 12 pixels of the coarser image).
    radius_um : float, optional
        How far from ``near`` the partner is searched, moving µm (default: a third of the patch).
    invert : bool, optional
        Invert the fixed image's intensities (default: when the modalities differ, as for
        LM -> EM, where bright stains meet dark membranes).
    representation : {"intensity", "gradient", "mind", "mi"}
        What is matched (see :mod:`clemlab.imagereg.represent` for when each serves): the
        maps by NCC (``"intensity"``, the default, which relies on ``invert``;
        ``"gradient"``), their MIND descriptors by NCC (``"mind"``, when the intensities are
        related by no single function), or the maps by mutual information (``"mi"``; only
        the local shift is searched, no pose refinement).

    Returns
    -------
    Snap
        The partner position, its uncertainty, the peak NCC and how far the click moved.

    Raises
    ------
    RegistrationError
        When the patch leaves either image, holds no structure, or has no clear match; the
        message says which and what to do.
    """
    p = np.asarray(point, float).reshape(-1)
    q = np.asarray(near, float).reshape(-1)
    if p.shape != (2,) or q.shape != (2,) or not (np.all(np.isfinite(p)) and np.all(np.isfinite(q))):
        raise RegistrationError(f"snap needs finite 2-D points (x, y) in µm, got {point!r} and {near!r}")
    mv_full, fx_full = plane_of(moving, channel), plane_of(fixed, fixed_channel)
    if invert is None:
        a, b = moving.attrs.get("modality"), fixed.attrs.get("modality")
        invert = bool(a and b and str(a).upper() != str(b).upper()) or not (a and b)
    matrix = _local_linear(transform, p, max(mv_full.step, 1e-6))
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:2, :2])))) or 1.0
    step = max(mv_full.step, fx_full.step / scale)  # matched at the coarser pixel size, moving µm
    patch = float(patch_um) if patch_um is not None else 12 * step
    radius = float(radius_um) if radius_um is not None else patch / 3
    radius_px = max(int(np.ceil(radius / scale / step)), 2)
    half = max(int(round(patch / step / 2)), 4)
    matrix[:2, 2] += q - (matrix @ [p[0], p[1], 1.0])[:2]  # the moving click lands on the fixed click
    mv = represent(mv_full, step, representation, False)
    window = _crop(mv, p, half + radius_px)
    if window is None:
        raise RegistrationError(
            f"cannot snap at ({p[0]:.2f}, {p[1]:.2f}) µm: the {patch:.1f} µm patch plus the "
            f"{radius:.1f} µm search reaches past the moving image's edge; click further inside, or "
            "pass a smaller patch_um")
    fx = represent(fx_full, step * scale, representation, invert)
    lo, hi = fx.extent()
    wlo, whi = window.extent()
    box = np.array([[wlo[0], wlo[1], 1], [whi[0], wlo[1], 1], [wlo[0], whi[1], 1], [whi[0], whi[1], 1]])
    reach = (matrix @ box.T).T[:, :2]  # the searched window's corners in the fixed frame
    if np.any(reach < lo) or np.any(reach > hi):
        raise RegistrationError(
            f"cannot snap near ({q[0]:.2f}, {q[1]:.2f}) µm: the search region reaches past the fixed "
            "image's edge; snap clicks further inside, or pass a smaller patch_um")
    m = match_patches(window, fx, matrix, patch, radius_px, kind=representation)
    if m.n_tried == 0:
        raise RegistrationError(
            f"cannot snap at ({p[0]:.2f}, {p[1]:.2f}) µm: the patch around the click is flat (no "
            "structure to match); click on a textured structure such as a bead or a nucleus edge")
    if len(m.src) == 0:
        raise RegistrationError(
            f"cannot snap at ({p[0]:.2f}, {p[1]:.2f}) µm: no clear match within {radius:.1f} µm of "
            f"the fixed click (peak correlation below the threshold, or on the search border); place "
            "the click closer to its partner, or keep it as clicked")
    # the window holds exactly one patch, centred on the click's pixel: shift to the click itself
    centre = m.src[0]
    partner = m.dst[0] + matrix[:2, :2] @ (p - centre)
    # match_patches doubles each sigma for patches that overlap by half; one patch stands alone
    return Snap(point=partner, sigma=float(m.sigma[0]) / 2, ncc=float(m.ncc[0]),
                moved=float(np.hypot(*(partner - q))))

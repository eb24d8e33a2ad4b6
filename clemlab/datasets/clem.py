"""The synthetic CLEM sample: a fluorescence (LM) image and an electron micrograph (EM) of
one simulated specimen, with the exact LM -> EM transform and the true positions of the
fiducial beads seen in both.

The specimen (cells, nuclei, GFP-labelled vesicles, fluorescent beads) is defined in the LM
frame. The LM image samples it directly; the EM image samples it through the inverse of the
true transform, so every object appears in the EM frame at ``transform(position_lm)``.
This module draws the geometry (transform, beads, puncta) and assembles the result;
``_render_lm`` and ``_render_em`` make the images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from .. import transforms as _tf
from ..errors import ImageError
from ._checks import (check_int, check_non_negative, check_pair, check_positive, check_seed,
                      check_shape)
from ._placement import place_points
from ._render_em import render_em
from ._render_lm import EMISSION_UM, LM_CHANNELS, LM_COLORS, render_lm
from ._specimen import Specimen

__all__ = ["SyntheticCLEM", "synthetic_clem", "synthetic_clem_small", "LM_CHANNELS", "LM_COLORS"]


@dataclass(frozen=True)
class SyntheticCLEM:
    """A synthetic LM/EM pair and its ground truth.

    Attributes
    ----------
    lm : xarray.DataArray, dims (c, y, x), uint16
        Fluorescence image; channels ``"nuclei"``, ``"GFP"``, ``"beads"``; coords in µm
        (LM frame); ``attrs["modality"] == attrs["frame"] == "LM"``.
    em : xarray.DataArray, dims (y, x), uint8
        Electron micrograph; coords in µm (EM frame); ``attrs["modality"] == attrs["frame"]
        == "EM"``. Dark = electron dense.
    transform : clemlab.transforms.Affine
        True map from LM-frame points to EM-frame points (``source_frame="LM"``,
        ``target_frame="EM"``), both in µm.
    fiducials_lm : numpy.ndarray, shape (N, 2)
        True centres, µm, columns ``(x, y)`` in the LM frame, of the N beads inside the EM
        field (visible in both images).
    fiducials_em : numpy.ndarray, shape (N, 2)
        The same beads in the EM frame, µm, ``(x, y)``: ``transform(fiducials_lm)``.
    beads_lm_all : numpy.ndarray, shape (M, 2)
        Centres of all beads in the LM image (M >= N; the first N rows are ``fiducials_lm``),
        µm, ``(x, y)``, LM frame.
    targets_lm : numpy.ndarray, shape (K, 2)
        Held-out points (centres of isolated GFP puncta inside the EM field, away from the
        beads), µm, ``(x, y)``, LM frame. K may be 0 for very small fields.
    targets_em : numpy.ndarray, shape (K, 2)
        ``transform(targets_lm)``: centres of the matching vesicles in the EM frame, µm.
    params : dict
        Rendering parameters (JSON-able): photon counts, PSF sigmas, noise levels, camera
        gain/offset, EM dose, transform parameters, sizes. ``params["puncta_radius_um"]``
        lists the vesicle radius of every GFP punctum; the first K belong to the targets.
    """

    lm: xr.DataArray
    em: xr.DataArray
    transform: _tf.Affine
    fiducials_lm: np.ndarray
    fiducials_em: np.ndarray
    beads_lm_all: np.ndarray
    targets_lm: np.ndarray
    targets_em: np.ndarray
    params: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"SyntheticCLEM(lm={dict(self.lm.sizes)}, em={dict(self.em.sizes)}, "
            f"fiducials={len(self.fiducials_lm)}, beads_lm={len(self.beads_lm_all)}, "
            f"targets={len(self.targets_lm)})"
        )




def synthetic_clem(
    seed: int = 0,
    *,
    mirror: bool = False,
    n_beads: int = 16,
    n_beads_outside: int | None = None,
    n_targets: int = 6,
    lm_shape: tuple[int, int] = (512, 512),
    em_shape: tuple[int, int] = (2048, 2048),
    lm_pixel_size: float = 0.1,
    em_pixel_size: float = 0.01,
    em_origin: tuple[float, float] = (0.0, 0.0),
    bead_diameter: float = 0.2,
    rotation: float | None = None,
    scale: tuple[float, float] | None = None,
    shear: float | None = None,
    numerical_aperture: float = 1.3,
    bead_photons: float = 3000.0,
    puncta_photons: float = 1200.0,
    background_photons: float = 20.0,
    read_noise: float = 1.6,
    gain: float = 2.0,
    offset: float = 100.0,
    em_dose: float = 60.0,
) -> SyntheticCLEM:
    """Render a deterministic synthetic LM/EM pair of one specimen with known ground truth.

    The specimen is a layer of cells (curved plasma membranes, elliptical nuclei),
    GFP-labelled vesicles (scattered and in a Golgi-like cluster beside each nucleus) and
    fluorescent beads of diameter ``bead_diameter`` on the section. The LM image
    (``lm_shape`` at ``lm_pixel_size``) shows it through a Gaussian PSF with a
    photon-counting camera model; the EM image (``em_shape`` at ``em_pixel_size``, a
    smaller field lying wholly inside the LM field) shows membranes, nuclear envelope and
    heterochromatin, vesicles, mitochondria with cristae and the beads as dark spheres.

    Parameters
    ----------
    seed : int
        Random seed; the same seed and arguments give identical arrays.
    mirror : bool
        If True the LM frame is mirrored with respect to the EM frame (the LM x axis is
        flipped before rotation), so ``det(transform.linear) < 0``.
    n_beads : int
        Number of fiducial beads inside the EM field (>= 3). They are at least
        ``params["bead_min_distance_um"]`` apart and at least ``bead_diameter / 2 + 0.5`` µm
        inside the EM field edges.
    n_beads_outside : int, optional
        Number of further beads in the LM field outside the EM field (never cut by the EM
        field edge). Default: the same density as inside. Fewer are placed if they do not fit.
    n_targets : int
        Maximum number of held-out target points (isolated GFP puncta inside the EM field).
    lm_shape, em_shape : (int, int)
        Image shapes (rows, columns).
    lm_pixel_size, em_pixel_size : float
        Pixel sizes, µm (square pixels).
    em_origin : (float, float)
        EM-frame position (µm, ``(x, y)``) of the centre of the first EM pixel, e.g. a stage
        position. The LM image's first pixel centre is at (0, 0) in the LM frame.
    bead_diameter : float
        Physical bead diameter, µm (>= 3 EM pixels).
    rotation : float, optional
        Rotation of the LM -> EM transform in degrees (counter-clockwise in ``(x, y)``).
        Default: uniform random in [0, 360).
    scale : (float, float), optional
        Scale factors ``(sx, sy)`` along the LM x and y axes. Default: each uniform in
        [0.95, 1.05].
    shear : float, optional
        Shear factor (x += shear * y in the LM frame before rotation). Default: uniform in
        [-0.02, 0.02].
    numerical_aperture : float
        Objective NA; the PSF is a Gaussian of std ``0.21 * wavelength / NA`` per channel.
    bead_photons : float
        Mean detected photons per bead in the beads channel (log-normal, 25 % spread).
    puncta_photons : float
        Mean detected photons per GFP punctum (log-normal, 40 % spread).
    background_photons : float
        Mean background photons per LM pixel (uniform); scaled by 0.8 / 1.0 / 0.75 in the
        nuclei / GFP / beads channels (per-channel values in ``params["background_photons"]``).
    read_noise : float
        Camera read noise, electrons (Gaussian) per pixel.
    gain : float
        Camera gain, ADU per electron (one detected photon = one electron).
    offset : float
        Camera offset, ADU.
    em_dose : float
        Electrons per EM pixel at zero specimen density (sets EM shot noise; the noise is
        the Gaussian approximation of Poisson noise).

    Returns
    -------
    SyntheticCLEM
        Images and ground truth; see :class:`SyntheticCLEM`.

    Raises
    ------
    ImageError
        (a ``ValueError``) on invalid arguments, naming the argument: non-positive pixel
        sizes, ``n_beads < 3``, an EM field that does not fit inside the LM field at every
        rotation, too many beads for the EM field, ...

    Notes
    -----
    LM model, per channel: expected photons ``lambda = background + sum of objects``;
    point-like objects (beads, puncta) are pixel-integrated Gaussians of std
    ``sqrt(psf_sigma**2 + object_variance)`` centred at their exact (sub-pixel) position;
    nuclei and diffuse cytoplasm are sampled fields blurred with the PSF. Detected electrons
    ``e ~ Poisson(lambda) + Normal(0, read_noise)``; ``ADU = offset + gain * e``, rounded
    and clipped to uint16. Beads bleed 3 % into the GFP channel.

    EM model: a stain density ``D`` (membranes, heterochromatin, vesicles, mitochondria,
    cytoplasmic granularity; beads as spheres of projected thickness
    ``2 sqrt(R**2 - r**2)``, supersampled 4x4) gives ``counts ~ em_dose * exp(-D)`` with
    Gaussian shot noise; stored as uint8 (``255 / (1.15 * em_dose)`` grey levels per
    electron).

    Examples
    --------
    >>> d = synthetic_clem_small(seed=1)
    >>> d.lm.dims, d.em.dims
    (('c', 'y', 'x'), ('y', 'x'))
    >>> import numpy as np
    >>> bool(np.allclose(d.transform(d.fiducials_lm), d.fiducials_em))
    True
    """
    # ---- arguments ------------------------------------------------------------------
    seed = check_seed(seed)
    if not isinstance(mirror, (bool, np.bool_)):
        raise ImageError(f"mirror must be True or False, got {mirror!r}")
    n_beads = check_int(n_beads, "n_beads", 3)
    if n_beads_outside is not None:
        n_beads_outside = check_int(n_beads_outside, "n_beads_outside", 0)
    n_targets = check_int(n_targets, "n_targets", 0)
    lm_shape = check_shape(lm_shape, "lm_shape", 16)
    em_shape = check_shape(em_shape, "em_shape", 32)
    lm_ps = check_positive(lm_pixel_size, "lm_pixel_size")
    em_ps = check_positive(em_pixel_size, "em_pixel_size")
    em_origin = check_pair(em_origin, "em_origin")
    bead_d = check_positive(bead_diameter, "bead_diameter")
    if bead_d < 3 * em_ps:
        raise ImageError(
            f"bead_diameter={bead_diameter!r} µm is less than 3 EM pixels "
            f"(em_pixel_size={em_ps!r} µm); beads must be resolved in EM"
        )
    na = check_positive(numerical_aperture, "numerical_aperture")
    bead_photons = check_positive(bead_photons, "bead_photons")
    puncta_photons = check_positive(puncta_photons, "puncta_photons")
    background_photons = check_non_negative(background_photons, "background_photons")
    read_noise = check_non_negative(read_noise, "read_noise")
    gain = check_positive(gain, "gain")
    offset = check_non_negative(offset, "offset")
    em_dose = check_positive(em_dose, "em_dose")

    lm_lo = np.array([-lm_ps / 2, -lm_ps / 2])
    lm_hi = np.array([lm_ps * (lm_shape[1] - 0.5), lm_ps * (lm_shape[0] - 0.5)])
    em_lo = np.array(em_origin) - em_ps / 2
    em_hi = np.array(em_origin) + em_ps * (np.array([em_shape[1], em_shape[0]]) - 0.5)
    em_size = em_hi - em_lo
    lm_margin = 1.0
    # the EM field must fit inside the LM field at any rotation (diagonal, with distortion)
    diag = float(np.hypot(*em_size))
    if diag * 1.1 + 2 * lm_margin > float(np.min(lm_hi - lm_lo)):
        raise ImageError(
            f"the EM field ({em_size[0]:.3g} x {em_size[1]:.3g} µm from em_shape={em_shape} "
            f"and em_pixel_size={em_ps}) is too large for the LM field "
            f"({lm_hi[0] - lm_lo[0]:.3g} x {lm_hi[1] - lm_lo[1]:.3g} µm from lm_shape="
            f"{lm_shape} and lm_pixel_size={lm_ps}): its diagonal x 1.1 + {2 * lm_margin} µm "
            "must fit in the smaller LM side; use a smaller em_shape or a larger lm_shape"
        )

    ss = np.random.SeedSequence(int(seed))
    (rng_tf, rng_cells, rng_beads, rng_puncta, rng_lm, rng_em_obj, rng_em_tex,
     rng_em_noise) = (np.random.default_rng(s) for s in ss.spawn(8))

    # ---- true transform LM -> EM -----------------------------------------------------
    theta_deg = float(rng_tf.uniform(0, 360)) if rotation is None else float(rotation)
    sx, sy = rng_tf.uniform(0.95, 1.05, 2) if scale is None else check_pair(scale, "scale")
    if sx <= 0 or sy <= 0:
        raise ImageError(f"scale must hold two positive factors (sx, sy), got {scale!r}")
    sh = float(rng_tf.uniform(-0.02, 0.02)) if shear is None else float(shear)
    if not math.isfinite(theta_deg):
        raise ImageError(f"rotation must be a finite angle in degrees, got {rotation!r}")
    if not math.isfinite(sh) or abs(sh) > 0.5:
        raise ImageError(f"shear must be a finite number in [-0.5, 0.5], got {shear!r}")
    th = math.radians(theta_deg)
    rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    flip = np.diag([-1.0, 1.0]) if mirror else np.eye(2)
    lin = rot @ flip @ np.array([[sx, sh], [0.0, sy]])
    lin_inv = np.linalg.inv(lin)
    em_centre = (em_lo + em_hi) / 2
    corners = np.array([[em_lo[0], em_lo[1]], [em_hi[0], em_lo[1]],
                        [em_hi[0], em_hi[1]], [em_lo[0], em_hi[1]]])
    foot = (corners - em_centre) @ lin_inv.T  # EM field corners relative to its LM centre
    half = np.abs(foot).max(axis=0)
    c_lo = lm_lo + lm_margin + half
    c_hi = lm_hi - lm_margin - half
    if np.any(c_lo > c_hi):
        raise ImageError(
            f"with scale={scale!r} and shear={shear!r} the EM field (em_shape={em_shape}) "
            "does not fit inside the LM field; use a smaller em_shape or scale closer to 1"
        )
    lm_centre = rng_tf.uniform(c_lo, c_hi)
    mat = np.eye(3)
    mat[:2, :2] = lin
    mat[:2, 2] = em_centre - lin @ lm_centre
    transform = _tf.Affine(matrix=mat, source_frame="LM", target_frame="EM")
    inv = transform.inverse

    # ---- specimen --------------------------------------------------------------------
    spec = Specimen(rng_cells, lm_lo, lm_hi)

    # ---- beads -----------------------------------------------------------------------
    bead_r = bead_d / 2
    min_sep = max(1.0, 10 * lm_ps, 4 * bead_d)
    edge_em = bead_r + 0.5
    fid_em = place_points(rng_beads, n_beads, em_lo + edge_em, em_hi - edge_em, min_sep)
    if len(fid_em) < n_beads:
        raise ImageError(
            f"n_beads={n_beads} beads at least {min_sep:.3g} µm apart do not fit in the "
            f"{em_size[0]:.3g} x {em_size[1]:.3g} µm EM field; use fewer beads or a larger "
            "em_shape"
        )
    fid_lm = inv(fid_em)
    if n_beads_outside is None:
        lm_area = float(np.prod(lm_hi - lm_lo))
        n_out = int(round(n_beads * (lm_area - float(np.prod(em_size))) / float(np.prod(em_size))))
    else:
        n_out = n_beads_outside
    keep_out = bead_r + 0.3

    def outside_em(p):
        q = transform(p)
        return ~np.all((q > em_lo - keep_out) & (q < em_hi + keep_out), axis=1)

    out_lm = place_points(rng_beads, n_out, lm_lo + lm_margin, lm_hi - lm_margin, min_sep,
                    existing=fid_lm, accept=outside_em, max_tries=40 * n_out + 200)
    beads_lm = np.vstack([fid_lm, out_lm])
    beads_em_all = transform(beads_lm)
    bead_flux = bead_photons * rng_beads.lognormal(0.0, 0.25, len(beads_lm))
    bead_flux *= bead_photons / max(float(np.mean(bead_flux)), 1e-12) if len(beads_lm) > 2 else 1.0

    # ---- GFP puncta (labelled vesicles), LM frame ------------------------------------
    clear_beads = bead_r + 0.35

    def cyto_ok(p, margin=0.35):
        good = spec.cytoplasm_clearance(p) > margin
        if len(beads_lm):
            d = np.min(np.hypot(p[:, None, 0] - beads_lm[None, :, 0],
                                p[:, None, 1] - beads_lm[None, :, 1]), axis=1)
            good &= d > clear_beads
        return good

    def _far_from(p, q, dist):
        if not len(q):
            return np.ones(len(p), bool)
        d = np.hypot(p[:, None, 0] - q[None, :, 0], p[:, None, 1] - q[None, :, 1])
        return d.min(axis=1) > dist

    # targets first: isolated puncta well inside the EM field, in cytoplasm, away from beads
    tm = min(1.0, 0.1 * float(np.min(em_size)))
    isolation = 0.8
    targets_em0 = place_points(
        rng_puncta, n_targets, em_lo + tm, em_hi - tm, 2 * isolation,
        accept=lambda q: cyto_ok(inv(q)) & _far_from(inv(q), beads_lm, isolation),
        max_tries=100 * n_targets + 100,
    ) if n_targets else np.empty((0, 2))
    targets_lm = inv(targets_em0) if len(targets_em0) else np.empty((0, 2))
    targets_em = transform(targets_lm) if len(targets_lm) else np.empty((0, 2))
    n_scatter = int(round(0.05 * float(np.prod(lm_hi - lm_lo))))
    scattered = place_points(rng_puncta, n_scatter, lm_lo + 0.5, lm_hi - 0.5, 0.5,
                       existing=targets_lm,
                       accept=lambda p: cyto_ok(p) & _far_from(p, targets_lm, isolation))
    cluster_pts: list[np.ndarray] = []
    for i in range(len(spec.centres)):
        ang = rng_puncta.uniform(0, 2 * np.pi)
        ctr = spec.nuc_centre[i] + (spec.nuc_a[i] + 1.4) * np.array([np.cos(ang), np.sin(ang)])
        if np.any(ctr < lm_lo) or np.any(ctr > lm_hi):
            continue
        got = place_points(rng_puncta, 12, ctr - 1.2, ctr + 1.2, 0.34,
                     existing=list(targets_lm) + list(scattered) + cluster_pts,
                     accept=lambda p: cyto_ok(p, 0.2) & _far_from(p, targets_lm, isolation),
                     max_tries=400)
        cluster_pts.extend(got)
    cluster = np.array(cluster_pts).reshape(-1, 2)
    puncta_lm = np.vstack([targets_lm, scattered, cluster])
    puncta_r = rng_puncta.uniform(0.07, 0.13, len(puncta_lm))
    puncta_flux = puncta_photons * rng_puncta.lognormal(0.0, 0.4, len(puncta_lm))
    puncta_em = transform(puncta_lm) if len(puncta_lm) else puncta_lm

    # ---- images ----------------------------------------------------------------------
    lm, lm_info = render_lm(
        spec, lm_shape=lm_shape, lm_ps=lm_ps, na=na, beads_lm=beads_lm, bead_r=bead_r,
        bead_flux=bead_flux, puncta_lm=puncta_lm, puncta_r=puncta_r, puncta_flux=puncta_flux,
        background_photons=background_photons, read_noise=read_noise, gain=gain, offset=offset,
        rng_lm=rng_lm, seed=seed)
    em, em_info = render_em(
        spec, transform, em_shape=em_shape, em_ps=em_ps, em_origin=em_origin, lm_centre=lm_centre,
        diag=diag, beads_em_all=beads_em_all, bead_r=bead_r, puncta_em=puncta_em, puncta_r=puncta_r,
        em_dose=em_dose, rng_em_obj=rng_em_obj, rng_em_tex=rng_em_tex, rng_em_noise=rng_em_noise,
        seed=seed)

    params = {
        "seed": int(seed),
        "mirror": bool(mirror),
        "rotation_deg": theta_deg,
        "scale_xy": [float(sx), float(sy)],
        "shear": sh,
        "lm_shape": list(lm_shape),
        "em_shape": list(em_shape),
        "lm_pixel_size_um": lm_ps,
        "em_pixel_size_um": em_ps,
        "em_origin_um": list(em_origin),
        "em_field_centre_lm_um": lm_centre.tolist(),
        "bead_diameter_um": bead_d,
        "bead_min_distance_um": min_sep,
        "n_beads_em": int(len(fid_lm)),
        "n_beads_lm": int(len(beads_lm)),
        "n_puncta": int(len(puncta_lm)),
        "n_cells": int(len(spec.centres)),
        "numerical_aperture": na,
        "emission_wavelength_um": dict(EMISSION_UM),
        "psf_sigma_um": lm_info["psf_sigma_um"],
        "bead_sigma_um": lm_info["bead_sigma_um"],
        "bead_photons_mean": bead_photons,
        "bead_photons": bead_flux.tolist(),
        "bead_bleedthrough_gfp": 0.03,
        "puncta_photons_mean": puncta_photons,
        "puncta_radius_um": puncta_r.tolist(),
        "background_photons": lm_info["background_photons"],
        "read_noise_e": read_noise,
        "gain_adu_per_e": gain,
        "offset_adu": offset,
        "em_dose_e_per_px": em_dose,
        "em_grey_per_e": em_info["em_grey_per_e"],
        "em_bead_density": em_info["em_bead_density"],
        "em_noise": "gaussian approximation of poisson shot noise",
    }
    return SyntheticCLEM(
        lm=lm,
        em=em,
        transform=transform,
        fiducials_lm=fid_lm,
        fiducials_em=transform(fid_lm),
        beads_lm_all=beads_lm,
        targets_lm=targets_lm,
        targets_em=targets_em,
        params=params,
    )


def synthetic_clem_small(seed: int = 0, *, mirror: bool = False, **kwargs: Any) -> SyntheticCLEM:
    """A tiny, fast :func:`synthetic_clem` for tests and doctests (well under a second).

    Defaults: LM 128 x 128 at 0.1 µm (12.8 µm), EM 512 x 512 at 0.01 µm (5.12 µm),
    6 fiducial beads of 200 nm, 3 targets at most. Any :func:`synthetic_clem` keyword
    overrides them.

    Examples
    --------
    >>> d = synthetic_clem_small(seed=3, mirror=True)
    >>> d.lm.shape, d.em.shape, len(d.fiducials_lm)
    ((3, 128, 128), (512, 512), 6)
    """
    opts: dict[str, Any] = dict(n_beads=6, n_targets=3, lm_shape=(128, 128), em_shape=(512, 512),
                                lm_pixel_size=0.1, em_pixel_size=0.01)
    opts.update(kwargs)
    return synthetic_clem(seed, mirror=mirror, **opts)


# ---------------------------------------------------------------------------------------
# cryo-CLEM: a 3-D LM stack and a tilted 2-D FIB view

"""The synthetic cryo-CLEM sample: a 3-D LM stack of beads and target spots, and the 2-D
ion-beam (FIB) view of the same sample tilted by the milling angle, a 3-D-to-2-D
correlation problem with known ground truth."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from .. import transforms as _tf
from ..errors import ImageError
from ..image import as_image
from ._checks import check_int, check_positive
from ._drawing import add_gaussian_blob, smooth_noise
from ._placement import place_points

__all__ = ["SyntheticCryo", "synthetic_cryo"]


@dataclass(frozen=True)
class SyntheticCryo:
    """A synthetic 3-D LM stack, a 2-D FIB image of the same sample, and the ground truth.

    Attributes
    ----------
    lm : xarray.DataArray, dims (c, z, y, x), uint16
        Confocal-like stack; channels ``"beads"`` and ``"target"``; µm, LM frame.
    fib : xarray.DataArray, dims (y, x), uint8
        Ion-beam image of the tilted sample; beads bright; µm, FIB frame.
    transform : clemlab.transforms.RigidProjection
        True map from LM-frame 3-D points to FIB-frame 2-D points.
    beads_lm, beads_fib : numpy.ndarray, shapes (N, 3) and (N, 2)
        True bead centres, µm, ``(x, y, z)`` and ``(x, y)``.
    targets_lm, targets_fib : numpy.ndarray, shapes (K, 3) and (K, 2)
        True centres of the target spots, µm.
    target_depth : numpy.ndarray, shape (K,)
        True depth of each target below the mean bead depth along the ion beam, µm.
    params : dict
        Rendering parameters.
    """

    lm: xr.DataArray
    fib: xr.DataArray
    transform: _tf.RigidProjection
    beads_lm: np.ndarray
    beads_fib: np.ndarray
    targets_lm: np.ndarray
    targets_fib: np.ndarray
    target_depth: np.ndarray
    params: dict = field(default_factory=dict)


def synthetic_cryo(seed: int = 0, *, n_beads: int = 10, n_targets: int = 2, tilt_deg: float = 52.0,
                   lm_shape: tuple[int, int, int] = (32, 160, 160),
                   lm_pixel_size: tuple[float, float] = (0.25, 0.1), fib_shape: tuple[int, int] = (512, 512),
                   fib_pixel_size: float = 0.03, bead_photons: float = 4000.0,
                   background_photons: float = 8.0) -> SyntheticCryo:
    """Render a cryo-CLEM pair: 3-D LM stack with beads at several depths and a target, and
    the 2-D FIB view of the sample tilted by ``tilt_deg`` (a 3-D-to-2-D correlation problem).

    Parameters
    ----------
    seed : int
        Deterministic per seed.
    n_beads, n_targets : int
        Beads (>= 4) and target spots.
    tilt_deg : float
        Angle between the ion beam and the LM optical axis, degrees.
    lm_shape : (nz, ny, nx)
    lm_pixel_size : (dz, dxy)
        µm.
    fib_shape : (ny, nx)
    fib_pixel_size : float
        µm.
    bead_photons, background_photons : float
        Photons per bead and per background voxel (Poisson noise).

    Returns
    -------
    SyntheticCryo
    """
    from scipy.spatial.transform import Rotation

    n_beads = check_int(n_beads, "n_beads", 4)
    n_targets = check_int(n_targets, "n_targets", 0)
    dz, dxy = (check_positive(v, "lm_pixel_size") for v in lm_pixel_size)
    fps = check_positive(fib_pixel_size, "fib_pixel_size")
    rng = np.random.default_rng(seed)
    nz, ny, nx = (int(v) for v in lm_shape)
    ext = np.array([nx * dxy, ny * dxy, nz * dz])  # (x, y, z) µm
    lo, hi = np.array([1.5, 1.5, 1.2]), ext - np.array([1.5, 1.5, 1.2])
    if np.any(hi <= lo):
        raise ImageError(f"lm_shape {lm_shape} is too small for beads away from the borders")
    pts = place_points(rng, n_beads + n_targets, lo, hi, 1.0)
    if len(pts) < n_beads + n_targets:
        raise ImageError("could not place that many well-separated beads; use a larger lm_shape")
    beads, targets = pts[:n_beads], pts[n_beads:]
    # LM: anisotropic PSF (confocal-like), Poisson noise, camera offset
    sig = np.array([0.35, 0.12, 0.12]) / np.array([dz, dxy, dxy])  # (z, y, x) px
    stack = np.full((2, nz, ny, nx), background_photons, dtype=np.float64)
    for c, group in ((0, beads), (1, targets)):
        for x, y, z in group:
            add_gaussian_blob(stack[c], (z / dz, y / dxy, x / dxy), sig, bead_photons)
    counts = rng.poisson(stack).astype(np.float64) + 100.0
    lm = as_image(np.clip(counts, 0, 65535).astype(np.uint16), pixel_size=(dz, dxy, dxy),
                  dims=("c", "z", "y", "x"), channels=["beads", "target"], modality="LM", frame="LM",
                  colors={"beads": "#ff00ff", "target": "#00ff00"})
    # FIB: the sample tilted about x by the milling angle and turned in plane
    rot = Rotation.from_euler("xz", [tilt_deg, rng.uniform(-30, 30)], degrees=True).as_matrix()
    fy, fx = (int(v) for v in fib_shape)
    centre_proj = ((ext / 2) @ rot.T)[:2]
    truth = _tf.RigidProjection(rot, 1.0, np.array([fx, fy]) * fps / 2 - centre_proj,
                                source_frame="LM", target_frame="FIB")
    beads_fib, targets_fib = truth(beads), truth(targets) if len(targets) else np.zeros((0, 2))
    fib = 100 + 15 * smooth_noise(rng, (fy, fx), 20.0).astype(np.float64)  # ice/organelle texture
    bs = 0.1 / fps  # bead image sigma, px
    for x, y in beads_fib:
        add_gaussian_blob(fib, (y / fps, x / fps), (bs, bs), 90 * 2 * np.pi * bs**2)  # peak +90
    fib = np.clip(fib + rng.normal(0, 8, fib.shape), 0, 255).astype(np.uint8)
    fib_img = as_image(fib, pixel_size=fps, modality="FIB", frame="FIB")
    depth = truth.depth(targets) - truth.depth(beads).mean() if len(targets) else np.zeros(0)
    params = {"tilt_deg": float(tilt_deg), "psf_sigma_um_zyx": [0.35, 0.12, 0.12],
              "bead_photons": float(bead_photons), "background_photons": float(background_photons),
              "camera_offset_adu": 100.0, "fib_pixel_size_um": fps}
    return SyntheticCryo(lm, fib_img, truth, beads, beads_fib, targets, targets_fib, depth, params)

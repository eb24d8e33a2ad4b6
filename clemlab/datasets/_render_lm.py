"""The fluorescence (LM) image of the synthetic CLEM sample: a widefield microscope with a
Gaussian PSF and a photon-counting camera.

Channels ``"nuclei"``, ``"GFP"`` and ``"beads"``: nuclei and the diffuse cytoplasmic GFP are
fields of the :class:`~clemlab.datasets._specimen.Specimen` blurred by the PSF; beads and GFP
puncta are pixel-integrated Gaussians at their exact positions, widened by their own size.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr
from scipy import ndimage as ndi

from .. import transforms as _tf
from ..image import as_image
from ._drawing import add_gaussian_spot
from ._specimen import Specimen

#: Channel names of the synthetic LM image, in ``c`` order.
LM_CHANNELS = ("nuclei", "GFP", "beads")
#: Display colours of the LM channels.
LM_COLORS = {"nuclei": "#0080ff", "GFP": "#00ff00", "beads": "#ff00ff"}
#: Emission wavelength per channel, µm (DAPI-like, GFP, far-red beads).
EMISSION_UM = {"nuclei": 0.461, "GFP": 0.510, "beads": 0.680}


def render_lm(spec: Specimen, *, lm_shape: tuple[int, int], lm_ps: float, na: float,
              beads_lm: np.ndarray, bead_r: float, bead_flux: np.ndarray,
              puncta_lm: np.ndarray, puncta_r: np.ndarray, puncta_flux: np.ndarray,
              background_photons: float, read_noise: float, gain: float, offset: float,
              rng_lm: np.random.Generator, seed: int) -> tuple[xr.DataArray, dict]:
    """Render the three-channel LM image of ``spec`` with its beads and GFP puncta.

    Parameters
    ----------
    spec : Specimen
        Cells and nuclei, LM frame.
    lm_shape : (int, int)
        Image shape (rows, columns); the first pixel centre is at (0, 0) µm.
    lm_ps : float
        Pixel size, µm.
    na : float
        Numerical aperture; the PSF is a Gaussian of std ``0.21 * wavelength / na``.
    beads_lm : numpy.ndarray, shape (M, 2)
        Bead centres, µm, ``(x, y)``; ``bead_r`` their radius, µm, ``bead_flux`` (M,) their
        detected photons (3 % of which bleed into the GFP channel).
    puncta_lm : numpy.ndarray, shape (P, 2)
        GFP punctum centres, µm, ``(x, y)``; ``puncta_r`` (P,) the radii of their vesicles,
        µm; ``puncta_flux`` (P,) their detected photons.
    background_photons : float
        Mean background photons per pixel, scaled by 0.8 / 1.0 / 0.75 per channel.
    read_noise, gain, offset : float
        Camera read noise (electrons), gain (ADU per electron) and offset (ADU).
    rng_lm : numpy.random.Generator
        Draws the chromatin texture and the noise.
    seed : int
        Named in the image's description.

    Returns
    -------
    image : xarray.DataArray, dims (c, y, x), uint16
    info : dict
        ``psf_sigma_um`` (per channel), ``bead_sigma_um``, ``background_photons`` (per channel).
    """
    psf_sigma = {c: 0.21 * EMISSION_UM[c] / na for c in LM_CHANNELS}
    bg_scale = {"nuclei": 0.8, "GFP": 1.0, "beads": 0.75}
    ny, nx = lm_shape
    yy, xx = np.meshgrid(lm_ps * np.arange(ny), lm_ps * np.arange(nx), indexing="ij")
    xw, yw = spec.warp(xx, yy)
    d1, d2 = spec.cell_distances(xw, yw)
    sd_nuc = np.full(lm_shape, np.inf)
    nuc_signal = np.zeros(lm_shape)
    chrom = ndi.gaussian_filter(rng_lm.standard_normal(lm_shape), 0.25 / lm_ps)
    chrom /= chrom.std() + 1e-12
    for i in range(len(spec.centres)):
        sdi = spec.nucleus_sd(i, xw, yw)
        inside = 1.0 / (1.0 + np.exp(np.clip(sdi / 0.12, -50, 50)))
        nuc_signal += 140.0 * spec.nuc_brightness[i] * inside * (
            1.0 + 0.25 * chrom + 0.35 * np.exp(-np.clip(-sdi, 0, None) / 0.6))
        sd_nuc = np.minimum(sd_nuc, sdi)
    in_cell = 1.0 / (1.0 + np.exp(np.clip((d1 - spec.radius) / 0.15, -50, 50)))
    gap = 1.0 / (1.0 + np.exp(np.clip(-((d2 - d1) / 2 - 0.1) / 0.08, -50, 50)))
    not_nuc = 1.0 / (1.0 + np.exp(np.clip(-sd_nuc / 0.12, -50, 50)))
    cyto = in_cell * gap * not_nuc
    photons = np.zeros((3,) + lm_shape)
    photons[0] = ndi.gaussian_filter(nuc_signal, psf_sigma["nuclei"] / lm_ps)
    photons[1] = ndi.gaussian_filter(6.0 * cyto + 2.0 * in_cell * (1 - not_nuc),
                                     psf_sigma["GFP"] / lm_ps)
    to_px = lambda p: _tf.physical_to_pixel(p, (lm_ps, lm_ps), (0.0, 0.0))  # noqa: E731
    bead_sigma_um = math.sqrt(psf_sigma["beads"] ** 2 + bead_r ** 2 / 5)  # solid sphere
    bead_sigma_gfp = math.sqrt(psf_sigma["GFP"] ** 2 + bead_r ** 2 / 5)
    for (px, py), flux in zip(to_px(beads_lm) if len(beads_lm) else [], bead_flux):
        add_gaussian_spot(photons[2], px, py, bead_sigma_um / lm_ps, flux)
        add_gaussian_spot(photons[1], px, py, bead_sigma_gfp / lm_ps, 0.03 * flux)
    for (px, py), r, flux in zip(to_px(puncta_lm) if len(puncta_lm) else [], puncta_r,
                                 puncta_flux):
        sig = math.sqrt(psf_sigma["GFP"] ** 2 + r ** 2 / 3)  # thin spherical shell
        add_gaussian_spot(photons[1], px, py, sig / lm_ps, flux)
    bg = {c: background_photons * bg_scale[c] for c in LM_CHANNELS}
    for k, c in enumerate(LM_CHANNELS):
        photons[k] += bg[c]
    electrons = rng_lm.poisson(photons).astype(np.float64)
    electrons += rng_lm.normal(0.0, read_noise, photons.shape) if read_noise > 0 else 0.0
    lm_data = np.clip(np.round(offset + gain * electrons), 0, 65535).astype(np.uint16)
    image = as_image(lm_data, pixel_size=lm_ps, dims=("c", "y", "x"), channels=LM_CHANNELS,
                  modality="LM", frame="LM", colors=LM_COLORS, name="lm",
                  attrs={"description": f"synthetic CLEM light micrograph, seed={int(seed)}"})
    return image, {"psf_sigma_um": psf_sigma, "bead_sigma_um": bead_sigma_um, "background_photons": bg}

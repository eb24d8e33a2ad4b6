"""The electron micrograph (EM) of the synthetic CLEM sample: a stain-density model of the
specimen seen through the true LM -> EM transform, with shot noise.

The stain density ``D`` holds membranes, nuclear envelope and heterochromatin, cytoplasmic
granularity, vesicles, mitochondria with cristae and the beads (dense spheres of projected
thickness ``2 sqrt(R**2 - r**2)``, supersampled 4 x 4); the image records
``counts ~ em_dose * exp(-D)`` electrons per pixel, stored as uint8.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from .. import transforms as _tf
from ..image import as_image
from ._drawing import membrane, smooth_noise, upsample_bilinear, window
from ._specimen import Specimen


def render_em(spec: Specimen, transform: _tf.Affine, *, em_shape: tuple[int, int], em_ps: float,
              em_origin: tuple[float, float], lm_centre: np.ndarray, diag: float,
              beads_em_all: np.ndarray, bead_r: float, puncta_em: np.ndarray, puncta_r: np.ndarray,
              em_dose: float, rng_em_obj: np.random.Generator, rng_em_tex: np.random.Generator,
              rng_em_noise: np.random.Generator, seed: int) -> tuple[xr.DataArray, dict]:
    """Render the EM image of ``spec`` through ``transform`` (LM -> EM, µm).

    Parameters
    ----------
    spec : Specimen
        Cells and nuclei, LM frame.
    transform : clemlab.transforms.Affine
        True map from LM-frame to EM-frame points, µm.
    em_shape : (int, int)
        Image shape (rows, columns).
    em_ps : float
        Pixel size, µm.
    em_origin : (float, float)
        EM-frame position ``(x, y)`` of the first pixel centre, µm.
    lm_centre : numpy.ndarray, shape (2,)
        LM-frame position of the EM field's centre, µm; with ``diag`` (the EM field's
        diagonal, µm) it bounds which cells can reach the field.
    beads_em_all : numpy.ndarray, shape (M, 2)
        Bead centres in the EM frame, µm, ``(x, y)`` (those outside the field draw nothing
        but keep organelles away); ``bead_r`` their radius, µm.
    puncta_em : numpy.ndarray, shape (P, 2)
        GFP-labelled vesicles in the EM frame, µm, ``(x, y)``; ``puncta_r`` (P,) their radii.
    em_dose : float
        Electrons per pixel at zero stain density.
    rng_em_obj, rng_em_tex, rng_em_noise : numpy.random.Generator
        Draw the unlabelled organelles, the textures and the shot noise.
    seed : int
        Named in the image's description.

    Returns
    -------
    image : xarray.DataArray, dims (y, x), uint8
    info : dict
        ``em_grey_per_e`` (grey levels per electron) and ``em_bead_density``.
    """
    inv = transform.inverse
    em_lo = np.array(em_origin) - em_ps / 2
    em_hi = np.array(em_origin) + em_ps * (np.array([em_shape[1], em_shape[0]]) - 0.5)
    em_size = em_hi - em_lo
    eny, enx = em_shape
    # LM-frame coordinates of every EM pixel centre (specimen fields are defined there)
    # (smooth fields are evaluated on every 2nd pixel and upsampled bilinearly: fast, and
    # their curvature is far below the pixel scale)
    f = 2
    rows_c, cols_c = -(-(eny - 1) // f) + 1, -(-(enx - 1) // f) + 1
    li = inv.linear
    t0 = inv.translation
    ex = em_origin[0] + em_ps * f * np.arange(cols_c)
    ey = em_origin[1] + em_ps * f * np.arange(rows_c)
    x_l = (li[0, 0] * ex[None, :] + li[0, 1] * ey[:, None] + t0[0]).astype(np.float32)
    y_l = (li[1, 0] * ex[None, :] + li[1, 1] * ey[:, None] + t0[1]).astype(np.float32)
    xw_c, yw_c = spec.warp(x_l, y_l)
    del x_l, y_l
    # cells farther than this from the EM footprint cannot put a membrane in the field
    reach = spec.radius + 2.0 + 0.55 * diag
    near = np.hypot(*(spec.centres - lm_centre).T) < reach
    e1, e2 = spec.cell_distances(xw_c, yw_c, spec.centres[near])
    xw_e, yw_e, e1, e2 = (upsample_bilinear(a, f, em_shape) for a in (xw_c, yw_c, e1, e2))
    del xw_c, yw_c
    fine = smooth_noise(rng_em_tex, em_shape, 0.9)
    coarse = smooth_noise(rng_em_tex, em_shape, 0.4 / em_ps)
    medium = smooth_noise(rng_em_tex, em_shape, 0.06 / em_ps)
    cell = (e1 < spec.radius).astype(np.float32)
    dens = (0.05 + 0.015 * fine + 0.02 * coarse).astype(np.float32)
    dens += cell * (0.2 + 0.06 * fine + 0.04 * coarse + 0.03 * medium)
    # plasma membranes: pairs of bilayers 20 nm apart between cells, single at free edges
    s_between = (e2 - e1) / 2
    dens += 0.55 * cell * (membrane(s_between - 0.012, 0.006)
                           + membrane(s_between + 0.012, 0.006))
    dens += 0.55 * membrane(e1 - spec.radius, 0.006) * (s_between > 0.03)
    del e2, s_between
    # nuclei: darker nucleoplasm, peripheral heterochromatin, double envelope
    to_em_px = lambda p: _tf.physical_to_pixel(p, (em_ps, em_ps), em_origin)  # noqa: E731
    for i in range(len(spec.centres)):
        ext = spec.nuc_a[i] + 1.5
        box = spec.nuc_centre[i] + np.array([[-ext, -ext], [ext, -ext], [ext, ext], [-ext, ext]])
        bpx = to_em_px(transform(box))
        j0, i0 = np.floor(bpx.min(axis=0)).astype(int)
        j1, i1 = np.ceil(bpx.max(axis=0)).astype(int) + 1
        j0, i0, j1, i1 = max(j0, 0), max(i0, 0), min(j1, enx), min(i1, eny)
        if j0 >= j1 or i0 >= i1:
            continue
        sl = (slice(i0, i1), slice(j0, j1))
        sdi = spec.nucleus_sd(i, xw_e[sl], yw_e[sl])
        ins = (sdi < -0.04).astype(np.float32)
        depth = np.clip(-sdi, 0, None)
        het = np.clip(medium[sl] * 0.6 + 1.3 * np.exp(-depth / 0.25) - 0.4, 0, None)
        dens[sl] += ins * (0.18 - cell[sl] * 0.06 + 0.25 * het + 0.03 * fine[sl])
        dens[sl] += 0.45 * (membrane(sdi, 0.006) + membrane(sdi + 0.035, 0.006))
    del xw_e, yw_e, medium
    # organelles, drawn in local windows at their EM-frame positions
    occupied = [(p[0], p[1], bead_r + 0.15) for p in beads_em_all]

    def free(p, r):
        if not occupied:
            return True
        occ = np.array(occupied)
        return bool(np.all(np.hypot(occ[:, 0] - p[0], occ[:, 1] - p[1]) > occ[:, 2] + r + 0.03))

    def draw_vesicle(dens, p_em, r, lumen):
        cx, cy = to_em_px(p_em)[0]
        w = window(em_shape, cx, cy, (r + 0.03) / em_ps + 2)
        if w is None:
            return
        sl, dx, dy = w
        d = np.hypot(dx, dy) * em_ps
        dens[sl] += 0.5 * membrane(d - r, 0.0055) + lumen * (d < r - 0.006)

    for p, r in zip(puncta_em, puncta_r):  # GFP-labelled vesicles: dense content
        occupied.append((p[0], p[1], r))
        draw_vesicle(dens, p[None, :], r, 0.22)
    # unlabelled vesicles and mitochondria inside the EM field, in cytoplasm only
    em_area = float(np.prod(em_size))
    cands = rng_em_obj.uniform(em_lo, em_hi, (int(3.0 * em_area), 2))
    clear = spec.cytoplasm_clearance(inv(cands)) if len(cands) else np.empty(0)
    n_mito = 0
    for p, c in zip(cands, clear):
        if n_mito < int(0.05 * em_area):
            a = rng_em_obj.uniform(0.35, 0.9)
            b = rng_em_obj.uniform(0.13, 0.22)
            if c > a + 0.1 and free(p, a):
                occupied.append((p[0], p[1], a))
                n_mito += 1
                ang = rng_em_obj.uniform(0, np.pi)
                cx, cy = to_em_px(p[None, :])[0]
                w = window(em_shape, cx, cy, (a + 0.03) / em_ps + 2)
                if w is None:
                    continue
                sl, dx, dy = w
                u = (math.cos(ang) * dx + math.sin(ang) * dy) * em_ps
                v = (-math.sin(ang) * dx + math.cos(ang) * dy) * em_ps
                rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
                gr = np.sqrt((u / a ** 2) ** 2 + (v / b ** 2) ** 2) / np.maximum(rho, 1e-6)
                sdm = (rho - 1) / np.maximum(gr, 1e-6)
                inner = sdm < -0.02
                spacing = rng_em_obj.uniform(0.07, 0.11)
                phase = (u / spacing + rng_em_obj.uniform(0, 1)) % 1.0 - 0.5
                cristae = membrane(phase * spacing, 0.007) * (np.abs(v) < 0.8 * b)
                dens[sl] += (0.42 * (membrane(sdm, 0.0055) + membrane(sdm + 0.02, 0.0055))
                             + inner * (0.14 + 0.4 * cristae))
                continue
        r = rng_em_obj.uniform(0.025, 0.06)
        if c > r + 0.05 and free(p, r):
            occupied.append((p[0], p[1], r))
            draw_vesicle(dens, p[None, :], r, 0.03)
    # beads: dense spheres, projected thickness, 4x4 supersampled
    bead_density = 3.5
    sub = (np.arange(4) + 0.5) / 4 - 0.5
    for p in beads_em_all:
        cx, cy = to_em_px(p[None, :])[0]
        w = window(em_shape, cx, cy, bead_r / em_ps + 2)
        if w is None:
            continue
        sl, dx, dy = w
        acc = np.zeros(np.broadcast_shapes(dx.shape, dy.shape))
        for oy in sub:
            for ox in sub:
                rr2 = ((dx + ox) ** 2 + (dy + oy) ** 2) * em_ps ** 2
                acc += np.sqrt(np.clip(bead_r ** 2 - rr2, 0, None))
        dens[sl] += bead_density * acc / 16 / bead_r
    # electron counts with shot noise (Gaussian approximation of Poisson), to uint8
    mean_counts = em_dose * np.exp(-dens)
    del dens
    noise = rng_em_noise.standard_normal(em_shape, dtype=np.float32)
    counts = mean_counts + np.sqrt(mean_counts) * noise
    em_scale = 255.0 / (1.15 * em_dose)
    em_data = np.clip(np.round(counts * em_scale), 0, 255).astype(np.uint8)
    image = as_image(em_data, pixel_size=em_ps, origin=(em_origin[1], em_origin[0]),
                  dims=("y", "x"), modality="EM", frame="EM", name="em",
                  attrs={"description": f"synthetic CLEM electron micrograph, seed={int(seed)}"})
    return image, {"em_grey_per_e": em_scale, "em_bead_density": bead_density}

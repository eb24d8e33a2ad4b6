"""A bead-free, cell-like synthetic LM/EM pair with a known transform.

:func:`synthetic_cells` renders a Hoechst-like fluorescence image (LM) and an SEM-like
electron micrograph (EM) of one simulated cell layer with no fiducial beads: what most CLEM
samples look like. Both images share only what a real pair shares: nuclei and their
heterochromatin (bright in LM, dark in EM), while membranes, mitochondria and vesicles are
seen in EM only. It is the ground truth for :func:`clemlab.register_images`.

The specimen is defined in the LM frame (µm). Its fields (cell partition, nuclear
outline, chromatin density, organelle density) are rasterised once at ``field_step`` µm
and sampled bilinearly: the LM image integrates them over its pixels through a Gaussian
PSF; the EM image samples them at ``true_inverse(EM pixel centres)``, so every structure
appears in the EM frame at ``true_map(position_lm)``.

Geometry conventions as :mod:`clemlab.datasets`: images are :class:`xarray.DataArray` from
:func:`clemlab.image.as_image`, coords in µm at pixel centres; points are ``(N, 2)``
arrays in µm, columns ``(x, y)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from .. import _opencv
from .. import transforms as _tf
from ..errors import ImageError
from ..image import as_image

__all__ = ["SyntheticCells", "synthetic_cells"]


@dataclass(frozen=True)
class SyntheticCells:
    """A bead-free synthetic LM/EM pair and its ground truth.

    Attributes
    ----------
    lm : xarray.DataArray, dims (y, x), uint16
        Hoechst-like image (nuclei bright, heterochromatin brightest), LM frame, µm coords.
    em : xarray.DataArray, dims (y, x), uint8
        SEM-like image (electron-dense = dark: membranes, heterochromatin, mitochondria),
        EM frame, µm coords.
    transform : clemlab.transforms.Similarity
        The linear part of the truth, LM -> EM (µm to µm), ``source_frame="LM"``.
    nuclei_lm : numpy.ndarray, shape (N, 2)
        Nucleus centres, LM frame, µm ``(x, y)`` (all nuclei of the specimen).
    distortion : float
        Peak amplitude (µm, EM frame) of the smooth local distortion added on top of
        ``transform``; 0 when the truth is exactly ``transform``.
    params : dict
        Rendering parameters (JSON-able).
    """

    lm: xr.DataArray
    em: xr.DataArray
    transform: _tf.Similarity
    nuclei_lm: np.ndarray
    distortion: float
    params: dict = field(default_factory=dict)
    _warp_field: Any = field(default=None, repr=False)

    def true_inverse(self, points_em: Any) -> np.ndarray:
        """Map EM-frame points (N, 2) µm to the LM frame through the exact truth."""
        q = np.atleast_2d(np.asarray(points_em, float))
        p = self.transform.inverse(q)
        if self._warp_field is not None:
            p = p + self._warp_field(q)
        return p

    def true_map(self, points_lm: Any) -> np.ndarray:
        """Map LM-frame points (N, 2) µm to the EM frame through the exact truth.

        With a local distortion the inverse map is ``p = T^-1(q) + d(q)``; its forward map is
        found by the fixed-point iteration ``q <- T(p - d(q))`` (``d`` is smooth and small).
        """
        p = np.atleast_2d(np.asarray(points_lm, float))
        q = self.transform(p)
        if self._warp_field is None:
            return q
        for _ in range(50):
            q_new = self.transform(p - self._warp_field(q))
            if np.max(np.abs(q_new - q)) < 1e-9:
                return q_new
            q = q_new
        return q

    def __repr__(self) -> str:
        return (f"SyntheticCells(lm={dict(self.lm.sizes)}, em={dict(self.em.sizes)}, "
                f"nuclei={len(self.nuclei_lm)}, mirror={self.params['mirror']}, "
                f"distortion={self.distortion})")


class _SmoothField:
    """A smooth 2-D vector field on the EM frame: a bilinear interpolation of coarse noise."""

    def __init__(self, rng, lo, hi, amplitude, spacing):
        n = np.maximum(4, np.ceil((hi - lo) / spacing).astype(int) + 1)
        coarse = rng.normal(size=(2, n[1], n[0]))
        coarse = ndi.gaussian_filter(coarse, (0, 1, 1), mode="nearest")
        coarse *= amplitude / max(np.abs(coarse).max(), 1e-12)
        self.coarse, self.lo, self.step = coarse, lo, (hi - lo) / (n - 1)

    def __call__(self, q):
        q = np.atleast_2d(q)
        c = (q - self.lo) / self.step  # (x, y) in coarse index units
        coords = [c[:, 1], c[:, 0]]
        return np.stack([ndi.map_coordinates(self.coarse[k], coords, order=3, mode="nearest")
                         for k in range(2)], axis=1)


def _smooth_noise(rng, shape, sigma):
    """Unit-variance Gaussian noise smoothed with std ``sigma`` px, drawn on a grid coarser
    by up to sigma/3 and interpolated (the same statistics at a fraction of the cost)."""
    k = max(1, int(sigma // 3))
    coarse_shape = tuple(-(-n // k) + 2 for n in shape)
    f = ndi.gaussian_filter(rng.normal(size=coarse_shape).astype(np.float32), sigma / k, mode="wrap")
    if k > 1:
        yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32) / k
        f = _opencv.load().remap(f, xx, yy, _opencv.load().INTER_LINEAR)
    else:
        f = f[:shape[0], :shape[1]]
    return f / max(float(f.std()), 1e-12)


def _specimen(rng, size, step, cell_diameter):
    """Rasterise the specimen fields over the LM field at ``step`` µm.

    Returns a dict of float32 arrays (rows y, cols x): ``membrane`` (distance to the nearest
    cell boundary, µm), ``nucleus`` (signed distance to the nuclear envelope, negative
    inside, µm), ``chromatin`` (DNA density 0..1: euchromatin low, heterochromatin clumps
    and a rim under the envelope high), ``organelle`` (electron density of mitochondria and
    vesicles 0..1), ``cell`` (1 inside a cell body, 0 in the resin between cells); and the
    nucleus centres (N, 2) µm.
    """
    ny, nx = (int(math.ceil(s / step)) for s in size[::-1])
    # cell centres: jittered grid (a confluent layer with gaps)
    pitch = cell_diameter
    gx, gy = np.meshgrid(np.arange(-pitch, size[0] + pitch, pitch), np.arange(-pitch, size[1] + pitch, pitch))
    centres = np.stack([gx.ravel() + (gy.ravel() // pitch % 2) * pitch / 2, gy.ravel()], axis=1)
    centres = centres + rng.uniform(-0.3, 0.3, centres.shape) * pitch
    # the cell partition on a grid 3x coarser, interpolated: the boundary distance is
    # piecewise linear, so bilinear interpolation keeps it except at triple junctions
    k = 3
    cy, cx = np.mgrid[0:ny // k + 2, 0:nx // k + 2].astype(np.float32) * (k * step)
    dist, idx = cKDTree(centres).query(np.stack([cx.ravel(), cy.ravel()], axis=1), k=2)
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    membrane = _opencv.load().remap(((dist[:, 1] - dist[:, 0]) / 2).reshape(cy.shape).astype(np.float32),
                                    xx / k, yy / k, _opencv.load().INTER_LINEAR)
    label = idx[:, 0].reshape(cy.shape)[np.round(yy / k).astype(int), np.round(xx / k).astype(int)].ravel()
    pts = np.stack([xx.ravel() * step, yy.ravel() * step], axis=1)
    idx = label[:, None]
    label = label.reshape(ny, nx)
    n = len(centres)
    # nuclei: ellipses off-centre in their cell; some cells are cut without a nucleus
    semi_a = rng.uniform(0.28, 0.36, n) * pitch
    semi_b = semi_a * rng.uniform(0.65, 0.9, n)
    theta = rng.uniform(0, np.pi, n)
    nuc_c = centres + rng.uniform(-0.08, 0.08, (n, 2)) * pitch
    has_nucleus = rng.random(n) < 0.85
    dxn = pts[:, 0] - nuc_c[idx[:, 0], 0]
    dyn = pts[:, 1] - nuc_c[idx[:, 0], 1]
    c, s = np.cos(theta)[idx[:, 0]], np.sin(theta)[idx[:, 0]]
    u = (c * dxn + s * dyn) / semi_a[idx[:, 0]]
    v = (-s * dxn + c * dyn) / semi_b[idx[:, 0]]
    rho = np.sqrt(u * u + v * v)
    nucleus = ((rho - 1) * semi_b[idx[:, 0]]).reshape(ny, nx).astype(np.float32)
    nucleus[~has_nucleus[label]] = 10.0
    # cell bodies: a cell fills its Voronoi region minus a gap of resin near some boundaries
    gap = _smooth_noise(rng, (ny, nx), 4.0 / step)
    cell = (membrane > 0.25 * np.clip(gap, 0, None)).astype(np.float32)
    # chromatin: clumps (thresholded smooth noise) and a peripheral rim inside each nucleus
    clumps = np.clip(_smooth_noise(rng, (ny, nx), 0.45 / step) - 0.6, 0, None)
    clumps = np.clip(clumps * 1.6, 0, 1)
    inside = np.clip(-nucleus / 0.1, 0, 1)
    rim = np.exp(-((nucleus + 0.25) / 0.18) ** 2)
    chromatin = inside * (0.18 + 0.7 * clumps + 0.55 * rim * (_smooth_noise(rng, (ny, nx), 0.3 / step) > -0.3))
    # organelles in the cytoplasm: mitochondria (elongated) and vesicles (round)
    organelle = np.zeros((ny, nx), np.float32)
    area = size[0] * size[1]
    n_org = int(area / 6.0)
    oc = rng.uniform(0, 1, (n_org, 2)) * np.asarray(size)
    lab_o = label[np.clip((oc[:, 1] / step).astype(int), 0, ny - 1), np.clip((oc[:, 0] / step).astype(int), 0, nx - 1)]
    for (x0, y0), lab in zip(oc, lab_o):
        i0, j0 = int(y0 / step), int(x0 / step)
        if nucleus[min(i0, ny - 1), min(j0, nx - 1)] < 0.3 or membrane[min(i0, ny - 1), min(j0, nx - 1)] < 0.4:
            continue
        mito = rng.random() < 0.6
        a = rng.uniform(0.4, 1.0) if mito else rng.uniform(0.08, 0.25)
        b = rng.uniform(0.12, 0.2) if mito else a
        ang = rng.uniform(0, np.pi)
        h = int(math.ceil(a / step)) + 2
        sl = (slice(max(i0 - h, 0), min(i0 + h + 1, ny)), slice(max(j0 - h, 0), min(j0 + h + 1, nx)))
        wy, wx = np.mgrid[sl]
        ddx, ddy = wx * step - x0, wy * step - y0
        uu = (np.cos(ang) * ddx + np.sin(ang) * ddy) / a
        vv = (-np.sin(ang) * ddx + np.cos(ang) * ddy) / b
        r = np.sqrt(uu * uu + vv * vv)
        dens = np.clip((1 - r) * b / 0.03, 0, 1) * (0.9 if mito else 0.6)
        if not mito:  # a vesicle: a dense membrane around a light lumen
            dens = dens * np.clip((r - 0.6) / 0.15, 0.2, 1)
        organelle[sl] = np.maximum(organelle[sl], dens * (1 - np.clip(-nucleus[sl] / 0.2 + 1, 0, 1)))
    fields = dict(membrane=membrane, nucleus=nucleus, chromatin=chromatin.astype(np.float32),
                  organelle=organelle, cell=cell)
    inside_field = np.all((nuc_c >= 0) & (nuc_c <= np.asarray(size)), axis=1) & has_nucleus
    return fields, nuc_c[inside_field]


def _sample(fieldmap, pts, step):
    """Bilinear samples of a rasterised field at LM-frame points (rows, cols, 2) µm."""
    cv2 = _opencv.load()
    mx = np.ascontiguousarray(pts[..., 0] / step, dtype=np.float32)
    my = np.ascontiguousarray(pts[..., 1] / step, dtype=np.float32)
    return cv2.remap(np.ascontiguousarray(fieldmap, np.float32), mx, my, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def synthetic_cells(
    seed: int = 0,
    *,
    mirror: bool = False,
    rotation: float | None = None,
    scale: float | None = None,
    offset: tuple[float, float] | None = None,
    distortion: float = 0.0,
    lm_shape: tuple[int, int] = (512, 512),
    em_shape: tuple[int, int] = (2048, 2048),
    lm_pixel_size: float = 0.2,
    em_pixel_size: float = 0.02,
    cell_diameter: float = 14.0,
    psf_sigma: float = 0.3,
    lm_photons: float = 400.0,
    lm_background: float = 30.0,
    em_dose: float = 40.0,
    em_contrast: float = 1.0,
    field_step: float = 0.05,
) -> SyntheticCells:
    """Render a deterministic bead-free LM/EM pair of a cell layer with known ground truth.

    The EM field lies inside the LM field: its centre sits at the LM field centre plus
    ``offset``; the truth maps LM points to EM points by a similarity ``s R (M p) + t``
    (M a mirror of the LM x axis when ``mirror``), plus an optional smooth distortion.

    Parameters
    ----------
    seed : int
        Random seed; the same seed and arguments give identical arrays.
    mirror : bool
        Mirror the LM frame against the EM frame (``det(transform.linear) < 0``).
    rotation : float, optional
        Rotation LM -> EM, degrees counter-clockwise in ``(x, y)``. Default uniform [0, 360).
    scale : float, optional
        True scale LM µm -> EM µm: 1 when both pixel sizes are right; a wrong pixel-size
        calibration shows as a scale != 1. Default 1.
    offset : (float, float), optional
        LM-frame position (µm, ``(x, y)``) of the EM field centre relative to the LM field
        centre. Default: uniform within the range that keeps the EM field inside the LM field.
    distortion : float
        Peak local distortion, µm in the EM frame (smooth, correlation length ~ a fifth of
        the EM field); 0 for an exact similarity.
    lm_shape, em_shape : (int, int)
        Image shapes (rows, columns).
    lm_pixel_size, em_pixel_size : float
        Pixel sizes, µm.
    cell_diameter : float
        Typical cell size, µm (nuclei are about 60 % of it).
    psf_sigma : float
        Gaussian PSF std of the LM image, µm.
    lm_photons, lm_background : float
        Photons per LM pixel from dense heterochromatin and from the uniform background.
    em_dose : float
        Electrons per EM pixel on bare resin (shot noise ~ sqrt(dose)).
    em_contrast : float
        Multiplier of all stain densities in EM (1: typical; 0.3: weakly stained).
    field_step : float
        Raster step (µm) of the specimen fields.

    Returns
    -------
    SyntheticCells

    Raises
    ------
    ImageError
        On non-positive sizes or an EM field that does not fit inside the LM field.
    """
    for name, val in (("lm_pixel_size", lm_pixel_size), ("em_pixel_size", em_pixel_size),
                      ("cell_diameter", cell_diameter), ("field_step", field_step), ("em_dose", em_dose)):
        if not (np.isfinite(val) and val > 0):
            raise ImageError(f"{name} must be a positive number, got {val!r}")
    rng = np.random.default_rng(seed)
    rng_tf, rng_spec, rng_noise, rng_warp = (np.random.default_rng(s) for s in rng.integers(0, 2**32, 4))
    rot = float(rng_tf.uniform(0, 360)) if rotation is None else float(rotation)
    s = 1.0 if scale is None else float(scale)
    lm_size = np.array(lm_shape[::-1], float) * lm_pixel_size  # (x, y) extent, µm
    em_size = np.array(em_shape[::-1], float) * em_pixel_size
    half_lm_extent = np.hypot(*em_size) / 2 / s  # EM field radius seen in the LM frame
    room = lm_size / 2 - half_lm_extent - 2 * psf_sigma
    if np.any(room < 0):
        raise ImageError(
            f"the EM field ({em_size[0]:.3g} x {em_size[1]:.3g} µm at scale {s}) does not fit "
            f"inside the LM field ({lm_size[0]:.3g} x {lm_size[1]:.3g} µm) at every rotation; "
            "use a smaller em_shape or a larger lm_shape")
    off = rng_tf.uniform(-room, room) if offset is None else np.asarray(offset, float)
    if np.any(np.abs(off) > room + 1e-9):
        raise ImageError(f"offset {tuple(off)} puts the EM field outside the LM field (|offset| <= {tuple(room)})")
    lm_centre = (lm_size - lm_pixel_size) / 2 + off  # pixel-centre coords start at 0
    em_centre = (em_size - em_pixel_size) / 2
    a = math.radians(rot)
    lin = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    if mirror:
        lin = lin @ np.diag([-1.0, 1.0])
    mat = np.eye(3)
    mat[:2, :2] = lin
    mat[:2, 2] = em_centre - lin @ lm_centre
    transform = _tf.Similarity(matrix=mat, source_frame="LM", target_frame="EM")
    warp_field = None
    if distortion > 0:
        warp_field = _SmoothField(rng_warp, np.zeros(2) - em_size * 0.1, em_size * 1.1, distortion / s,
                                  em_size.max() / 5)

    fields, nuclei = _specimen(rng_spec, lm_size + lm_pixel_size, field_step, cell_diameter)

    # ---- LM: DNA density through the PSF, integrated over pixels, photon and read noise --
    cv2 = _opencv.load()
    dna = cv2.GaussianBlur(fields["chromatin"], (0, 0), psf_sigma / field_step, borderType=cv2.BORDER_REPLICATE)
    f = lm_pixel_size / field_step
    ly, lx = np.mgrid[0:lm_shape[0], 0:lm_shape[1]].astype(np.float64)
    k = max(int(round(f)), 1)
    box = ndi.uniform_filter(dna, k, mode="nearest")
    # an even box of k samples is centred half a sample before its output index
    centre_shift = field_step / 2 if k % 2 == 0 else 0.0
    expected = lm_background + lm_photons * _sample(box, np.stack([lx, ly], -1) * lm_pixel_size + centre_shift,
                                                    field_step)
    autofluor = 1 + 0.15 * cv2.GaussianBlur(fields["cell"], (0, 0), 1.0 / field_step)
    expected = expected * _sample(autofluor, np.stack([lx, ly], -1) * lm_pixel_size, field_step)
    counts = rng_noise.poisson(expected) + rng_noise.normal(0, 2.0, expected.shape)
    lm = np.clip(np.round(100 + 2.0 * counts), 0, 65535).astype(np.uint16)

    # ---- EM: stain density at the EM pixel centres' LM positions, shot noise, inverted ----
    # LM positions of the EM pixel centres, computed every 8 pixels and interpolated
    # (exact for the similarity, sub-nanometre for the smooth distortion)
    k = 8
    ey, ex = np.mgrid[0:em_shape[0] // k + 2, 0:em_shape[1] // k + 2].astype(np.float64) * k
    q = np.stack([ex.ravel(), ey.ravel()], axis=1) * em_pixel_size
    pc = transform.inverse(q)
    if warp_field is not None:
        pc = pc + warp_field(q)
    pc = pc.reshape(ey.shape + (2,)).astype(np.float32)
    fy, fx = np.mgrid[0:em_shape[0], 0:em_shape[1]].astype(np.float32) / k
    p = np.stack([cv2.remap(pc[..., i], fx, fy, cv2.INTER_LINEAR) for i in range(2)], axis=-1)
    memb = np.exp(-(_sample(fields["membrane"], p, field_step) / 0.035) ** 2)
    envelope = np.exp(-((_sample(fields["nucleus"], p, field_step) - 0.0) / 0.03) ** 2)
    cyto = _sample(fields["cell"], p, field_step)
    grain = cv2.GaussianBlur(rng_noise.normal(size=em_shape).astype(np.float32), (0, 0), 1.0)
    density = (0.35 * cyto * (1 + 0.25 * grain) + 1.3 * _sample(fields["chromatin"], p, field_step)
               + 1.2 * memb * cyto + 1.0 * envelope + 1.4 * _sample(fields["organelle"], p, field_step))
    signal = em_dose * np.exp(-em_contrast * density)
    counts = signal + rng_noise.normal(size=em_shape) * np.sqrt(signal)
    em = np.clip(np.round(counts * 255 / (1.15 * em_dose)), 0, 255).astype(np.uint8)

    params = dict(seed=seed, mirror=bool(mirror), rotation_deg=rot, scale=s, offset_um=[float(v) for v in off],
                  distortion_um=float(distortion), lm_shape=list(lm_shape), em_shape=list(em_shape),
                  lm_pixel_size=lm_pixel_size, em_pixel_size=em_pixel_size, cell_diameter_um=cell_diameter,
                  psf_sigma_um=psf_sigma, lm_photons=lm_photons, lm_background=lm_background,
                  em_dose=em_dose, em_contrast=em_contrast)
    lm_img = as_image(lm, pixel_size=lm_pixel_size, modality="LM", source="synthetic_cells",
                      name="Hoechst", attrs={"synthetic": params})
    em_img = as_image(em, pixel_size=em_pixel_size, modality="EM", source="synthetic_cells",
                      name="SEM", attrs={"synthetic": params})
    return SyntheticCells(lm=lm_img, em=em_img, transform=transform, nuclei_lm=nuclei,
                          distortion=float(distortion), params=params, _warp_field=warp_field)

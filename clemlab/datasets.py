"""Synthetic CLEM pairs with known ground truth, rendered on the fly (no files, no network).

:func:`synthetic_clem` renders a fluorescence (LM) image and an electron micrograph (EM) of
the same simulated specimen, together with the exact LM -> EM transform and the true
positions of the fiducial beads seen in both. :func:`synthetic_clem_small` is a tiny, fast
version for tests.

The specimen (cells, nuclei, GFP-labelled vesicles, fluorescent beads) is defined in the LM
frame. The LM image samples it directly; the EM image samples it through the inverse of the
true transform, so every object appears in the EM frame at ``transform(position_lm)``.

Geometry conventions (``design.md`` section 2): images are :class:`xarray.DataArray` built
with :func:`clemlab.image.as_image`, coords in µm at pixel centres (pixel ``i`` has its
centre at ``origin + i * pixel_size``); points are ``(N, 2)`` arrays in µm with columns
``(x, y)``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr
from scipy import ndimage as ndi
from scipy.special import erf

from . import transforms as _tf
from .errors import ImageError
from .image import as_image

__all__ = ["SyntheticCLEM", "synthetic_clem", "synthetic_clem_small"]

#: Channel names of the synthetic LM image, in ``c`` order.
LM_CHANNELS = ("nuclei", "GFP", "beads")
#: Display colours of the LM channels.
LM_COLORS = {"nuclei": "#0080ff", "GFP": "#00ff00", "beads": "#ff00ff"}
#: Emission wavelength per channel, µm (DAPI-like, GFP, far-red beads).
_EMISSION_UM = {"nuclei": 0.461, "GFP": 0.510, "beads": 0.680}


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


# ---------------------------------------------------------------------------------------
# argument checking
# ---------------------------------------------------------------------------------------
def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ImageError(f"{name} must be a positive number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ImageError(f"{name} must be a positive, finite number, got {value!r}")
    return v


def _non_negative(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ImageError(f"{name} must be a non-negative number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ImageError(f"{name} must be a non-negative, finite number, got {value!r}")
    return v


def _int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ImageError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise ImageError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _shape(value: Any, name: str, minimum: int) -> tuple[int, int]:
    try:
        items = tuple(value)
    except TypeError:
        raise ImageError(f"{name} must be a pair (rows, columns), got {value!r}") from None
    if len(items) != 2:
        raise ImageError(f"{name} must be a pair (rows, columns), got {value!r}")
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) < minimum:
            raise ImageError(f"{name} must hold two integers >= {minimum}, got {value!r}")
        out.append(int(v))
    return out[0], out[1]


def _pair(value: Any, name: str) -> tuple[float, float]:
    try:
        items = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ImageError(f"{name} must be a pair of numbers (x, y), got {value!r}") from None
    if len(items) != 2 or not all(math.isfinite(v) for v in items):
        raise ImageError(f"{name} must be a pair of finite numbers (x, y), got {value!r}")
    return items[0], items[1]


# ---------------------------------------------------------------------------------------
# the specimen, defined in the LM frame
# ---------------------------------------------------------------------------------------
class _Specimen:
    """Cells and nuclei as smooth analytic fields of LM-frame coordinates (µm).

    A smooth random warp bends straight Voronoi bisectors into curved cell boundaries.
    """

    def __init__(self, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray):
        span = hi - lo
        # warp: a few plane waves per axis, amplitude ~0.6 µm, wavelength 6-20 µm
        n_waves = 4
        self.k = rng.uniform(-1, 1, (2, n_waves, 2))
        self.k *= (2 * np.pi / rng.uniform(6, 20, (2, n_waves, 1))) / np.linalg.norm(
            self.k, axis=-1, keepdims=True
        )
        self.phase = rng.uniform(0, 2 * np.pi, (2, n_waves))
        self.amp = rng.uniform(0.15, 0.3, (2, n_waves))
        # cells: centres at least `spacing` apart (Poisson disc), extended past the field
        self.radius = 10.5
        spacing = 14.0
        pad = 8.0
        n_target = max(1, int(round((span[0] + 2 * pad) * (span[1] + 2 * pad) / 190.0)))
        cands = rng.uniform(lo - pad, hi + pad, (40 * n_target, 2))
        centres: list[np.ndarray] = []
        for p in cands:
            if all(np.hypot(*(p - q)) >= spacing for q in centres):
                centres.append(p)
            if len(centres) >= n_target:
                break
        self.centres = np.array(centres)
        k = len(self.centres)
        # nuclei: ellipses near the cell centres
        self.nuc_centre = self.centres + rng.uniform(-0.8, 0.8, (k, 2))
        self.nuc_a = rng.uniform(3.8, 5.0, k)
        self.nuc_b = self.nuc_a * rng.uniform(0.7, 0.92, k)
        self.nuc_angle = rng.uniform(0, np.pi, k)
        self.nuc_brightness = rng.uniform(0.7, 1.3, k)

    def warp(self, x, y):
        """Warped coordinates ``(xw, yw)`` (same shapes and dtype as ``x``, ``y``)."""
        xw = x.copy()
        yw = y.copy()
        for axis, out in ((0, xw), (1, yw)):
            for i in range(self.k.shape[1]):
                kx, ky = self.k[axis, i]
                out += (self.amp[axis, i] * np.sin(kx * x + ky * y + self.phase[axis, i])).astype(
                    out.dtype, copy=False
                )
        return xw, yw

    def cell_distances(self, xw, yw, centres=None):
        """Nearest and second-nearest cell-centre distances ``(d1, d2)`` in µm."""
        centres = self.centres if centres is None else centres
        d1 = np.full(np.shape(xw), np.inf, dtype=np.asarray(xw).dtype)
        d2 = d1.copy()
        for cx, cy in centres:  # squared distances; one square root at the end
            dx = xw - cx
            d = dx * dx
            dx = yw - cy
            d += dx * dx
            np.minimum(d2, np.maximum(d1, d), out=d2)
            np.minimum(d1, d, out=d1)
        return np.sqrt(d1, out=d1), np.sqrt(d2, out=d2)

    def nucleus_sd(self, i, xw, yw):
        """Approximate signed distance (µm, negative inside) to nucleus ``i``'s envelope."""
        c, s = math.cos(self.nuc_angle[i]), math.sin(self.nuc_angle[i])
        dx = xw - self.nuc_centre[i, 0]
        dy = yw - self.nuc_centre[i, 1]
        u = c * dx + s * dy
        v = -s * dx + c * dy
        a2, b2 = self.nuc_a[i] ** 2, self.nuc_b[i] ** 2
        rho = np.sqrt(u * u / a2 + v * v / b2)
        grad = np.sqrt((u / a2) ** 2 + (v / b2) ** 2) / np.maximum(rho, 1e-6)
        return (rho - 1.0) / np.maximum(grad, 1e-6)

    def nucleus_sd_min(self, xw, yw):
        """Signed distance to the nearest nucleus (µm, negative inside one)."""
        out = np.full(np.shape(xw), np.inf)
        for i in range(len(self.centres)):
            out = np.minimum(out, self.nucleus_sd(i, xw, yw))
        return out

    def cytoplasm_clearance(self, pts):
        """For LM points (N, 2): distance (µm) to the nearest membrane or nuclear envelope
        when the point lies in cytoplasm, else a negative number."""
        x, y = pts[:, 0].astype(np.float64), pts[:, 1].astype(np.float64)
        xw, yw = self.warp(x, y)
        d1, d2 = self.cell_distances(xw, yw)
        sd = self.nucleus_sd_min(xw, yw)
        clear = np.minimum.reduce([(d2 - d1) / 2, self.radius - d1, sd])
        return clear


# ---------------------------------------------------------------------------------------
# point placement
# ---------------------------------------------------------------------------------------
def _place(rng, n, lo, hi, min_dist, existing=(), accept=None, max_tries=None):
    """Up to ``n`` uniform random points in the box [lo, hi] (µm, any dimension), each at least
    ``min_dist`` from every other and from ``existing``; ``accept(points) -> bool mask``
    filters candidates."""
    placed = [np.asarray(p, float) for p in existing]
    start = len(placed)
    tries = max_tries if max_tries is not None else 60 * n + 200
    d = np.size(lo)
    cands = rng.uniform(lo, hi, (tries, d))
    ok = accept(cands) if accept is not None else np.ones(tries, bool)
    arr = np.array(placed).reshape(-1, d)
    for p, good in zip(cands, ok):
        if len(placed) - start >= n:
            break
        if not good:
            continue
        if arr.shape[0] and np.min(np.linalg.norm(arr - p, axis=1)) < min_dist:
            continue
        placed.append(p)
        arr = np.vstack([arr, p])
    return np.array(placed[start:]).reshape(-1, d)


# ---------------------------------------------------------------------------------------
# rendering helpers
# ---------------------------------------------------------------------------------------
def _add_gaussian_spot(img, cx, cy, sigma, total):
    """Add a pixel-integrated 2-D Gaussian of integral ``total`` centred at the continuous
    pixel position ``(cx, cy)`` (column, row) with std ``sigma`` (pixels)."""
    _add_gaussian_blob(img, (cy, cx), (sigma, sigma), total)


def _add_gaussian_blob(img, centre, sigma, total):
    """Add a pixel-integrated N-D Gaussian of integral ``total``; ``centre`` and ``sigma``
    (pixels) in array index order (e.g. ``(z, y, x)``)."""
    slices, profiles = [], []
    for n, c, sg in zip(img.shape, centre, sigma):
        h = int(math.ceil(4.5 * sg)) + 1
        a0, a1 = max(int(math.floor(c)) - h, 0), min(int(math.floor(c)) + h + 2, n)
        if a0 >= a1:
            return
        edges = np.arange(a0, a1 + 1) - 0.5 - c
        profiles.append(np.diff(erf(edges / (math.sqrt(2.0) * sg))) / 2)
        slices.append(slice(a0, a1))
    prof = profiles[0]
    for f in profiles[1:]:
        prof = np.multiply.outer(prof, f)
    img[tuple(slices)] += total * prof


def _window(shape, cx, cy, half):
    """Slices and pixel-offset grids ``(dx, dy)`` (pixels, broadcastable) of the window of
    half-size ``half`` pixels around the continuous pixel position ``(cx, cy)``; None when
    it misses the image."""
    rows, cols = shape
    j0, j1 = max(int(math.floor(cx - half)), 0), min(int(math.ceil(cx + half)) + 1, cols)
    i0, i1 = max(int(math.floor(cy - half)), 0), min(int(math.ceil(cy + half)) + 1, rows)
    if j0 >= j1 or i0 >= i1:
        return None
    dx = (np.arange(j0, j1, dtype=np.float64) - cx)[None, :]
    dy = (np.arange(i0, i1, dtype=np.float64) - cy)[:, None]
    return (slice(i0, i1), slice(j0, j1)), dx, dy


def _smooth_noise(rng, shape, sigma_px, dtype=np.float32):
    """Unit-variance smooth random texture of correlation length ``sigma_px`` pixels.

    Large ``sigma_px`` is generated on a coarse grid and bilinearly upsampled (fast)."""
    factor = max(1, int(sigma_px // 2))
    coarse = (shape[0] // factor + 3, shape[1] // factor + 3)
    n = rng.standard_normal(coarse, dtype=np.float32)
    n = ndi.gaussian_filter(n, sigma_px / factor, mode="wrap")
    if factor > 1:
        n = ndi.zoom(n, factor, order=1)
    n = n[: shape[0], : shape[1]]
    n -= n.mean()
    n /= n.std() + 1e-12
    return n.astype(dtype, copy=False)


def _upsample(coarse, f, shape):
    """Bilinear upsampling of samples taken every ``f`` pixels (starting at pixel 0) to
    the full grid ``shape`` (rows, cols); coarse sample ``k`` lands on full pixel ``k f``."""
    if f == 1:
        return coarse[: shape[0], : shape[1]]
    full = ((coarse.shape[0] - 1) * f + 1, (coarse.shape[1] - 1) * f + 1)
    out = ndi.zoom(coarse, (full[0] / coarse.shape[0], full[1] / coarse.shape[1]), order=1,
                   output=np.empty(full, dtype=coarse.dtype), grid_mode=False)
    return out[: shape[0], : shape[1]]


def _membrane(dist, width):
    """Stain density profile of a membrane: Gaussian of std ``width`` in distance (µm)."""
    return np.exp(-((dist / width) ** 2))


# ---------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------
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
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ImageError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(mirror, (bool, np.bool_)):
        raise ImageError(f"mirror must be True or False, got {mirror!r}")
    n_beads = _int(n_beads, "n_beads", 3)
    if n_beads_outside is not None:
        n_beads_outside = _int(n_beads_outside, "n_beads_outside", 0)
    n_targets = _int(n_targets, "n_targets", 0)
    lm_shape = _shape(lm_shape, "lm_shape", 16)
    em_shape = _shape(em_shape, "em_shape", 32)
    lm_ps = _positive(lm_pixel_size, "lm_pixel_size")
    em_ps = _positive(em_pixel_size, "em_pixel_size")
    em_origin = _pair(em_origin, "em_origin")
    bead_d = _positive(bead_diameter, "bead_diameter")
    if bead_d < 3 * em_ps:
        raise ImageError(
            f"bead_diameter={bead_diameter!r} µm is less than 3 EM pixels "
            f"(em_pixel_size={em_ps!r} µm); beads must be resolved in EM"
        )
    na = _positive(numerical_aperture, "numerical_aperture")
    bead_photons = _positive(bead_photons, "bead_photons")
    puncta_photons = _positive(puncta_photons, "puncta_photons")
    background_photons = _non_negative(background_photons, "background_photons")
    read_noise = _non_negative(read_noise, "read_noise")
    gain = _positive(gain, "gain")
    offset = _non_negative(offset, "offset")
    em_dose = _positive(em_dose, "em_dose")

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
    sx, sy = rng_tf.uniform(0.95, 1.05, 2) if scale is None else _pair(scale, "scale")
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
    spec = _Specimen(rng_cells, lm_lo, lm_hi)

    # ---- beads -----------------------------------------------------------------------
    bead_r = bead_d / 2
    min_sep = max(1.0, 10 * lm_ps, 4 * bead_d)
    edge_em = bead_r + 0.5
    fid_em = _place(rng_beads, n_beads, em_lo + edge_em, em_hi - edge_em, min_sep)
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

    out_lm = _place(rng_beads, n_out, lm_lo + lm_margin, lm_hi - lm_margin, min_sep,
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
    targets_em0 = _place(
        rng_puncta, n_targets, em_lo + tm, em_hi - tm, 2 * isolation,
        accept=lambda q: cyto_ok(inv(q)) & _far_from(inv(q), beads_lm, isolation),
        max_tries=100 * n_targets + 100,
    ) if n_targets else np.empty((0, 2))
    targets_lm = inv(targets_em0) if len(targets_em0) else np.empty((0, 2))
    targets_em = transform(targets_lm) if len(targets_lm) else np.empty((0, 2))
    n_scatter = int(round(0.05 * float(np.prod(lm_hi - lm_lo))))
    scattered = _place(rng_puncta, n_scatter, lm_lo + 0.5, lm_hi - 0.5, 0.5,
                       existing=targets_lm,
                       accept=lambda p: cyto_ok(p) & _far_from(p, targets_lm, isolation))
    cluster_pts: list[np.ndarray] = []
    for i in range(len(spec.centres)):
        ang = rng_puncta.uniform(0, 2 * np.pi)
        ctr = spec.nuc_centre[i] + (spec.nuc_a[i] + 1.4) * np.array([np.cos(ang), np.sin(ang)])
        if np.any(ctr < lm_lo) or np.any(ctr > lm_hi):
            continue
        got = _place(rng_puncta, 12, ctr - 1.2, ctr + 1.2, 0.34,
                     existing=list(targets_lm) + list(scattered) + cluster_pts,
                     accept=lambda p: cyto_ok(p, 0.2) & _far_from(p, targets_lm, isolation),
                     max_tries=400)
        cluster_pts.extend(got)
    cluster = np.array(cluster_pts).reshape(-1, 2)
    puncta_lm = np.vstack([targets_lm, scattered, cluster])
    puncta_r = rng_puncta.uniform(0.07, 0.13, len(puncta_lm))
    puncta_flux = puncta_photons * rng_puncta.lognormal(0.0, 0.4, len(puncta_lm))
    puncta_em = transform(puncta_lm) if len(puncta_lm) else puncta_lm

    # ---- LM rendering ----------------------------------------------------------------
    psf_sigma = {c: 0.21 * _EMISSION_UM[c] / na for c in LM_CHANNELS}
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
        _add_gaussian_spot(photons[2], px, py, bead_sigma_um / lm_ps, flux)
        _add_gaussian_spot(photons[1], px, py, bead_sigma_gfp / lm_ps, 0.03 * flux)
    for (px, py), r, flux in zip(to_px(puncta_lm) if len(puncta_lm) else [], puncta_r,
                                 puncta_flux):
        sig = math.sqrt(psf_sigma["GFP"] ** 2 + r ** 2 / 3)  # thin spherical shell
        _add_gaussian_spot(photons[1], px, py, sig / lm_ps, flux)
    bg = {c: background_photons * bg_scale[c] for c in LM_CHANNELS}
    for k, c in enumerate(LM_CHANNELS):
        photons[k] += bg[c]
    electrons = rng_lm.poisson(photons).astype(np.float64)
    electrons += rng_lm.normal(0.0, read_noise, photons.shape) if read_noise > 0 else 0.0
    lm_data = np.clip(np.round(offset + gain * electrons), 0, 65535).astype(np.uint16)
    lm = as_image(lm_data, pixel_size=lm_ps, dims=("c", "y", "x"), channels=LM_CHANNELS,
                  modality="LM", frame="LM", colors=LM_COLORS, name="lm",
                  attrs={"description": f"synthetic CLEM light micrograph, seed={int(seed)}"})

    # ---- EM rendering ----------------------------------------------------------------
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
    xw_e, yw_e, e1, e2 = (_upsample(a, f, em_shape) for a in (xw_c, yw_c, e1, e2))
    del xw_c, yw_c
    fine = _smooth_noise(rng_em_tex, em_shape, 0.9)
    coarse = _smooth_noise(rng_em_tex, em_shape, 0.4 / em_ps)
    medium = _smooth_noise(rng_em_tex, em_shape, 0.06 / em_ps)
    cell = (e1 < spec.radius).astype(np.float32)
    dens = (0.05 + 0.015 * fine + 0.02 * coarse).astype(np.float32)
    dens += cell * (0.2 + 0.06 * fine + 0.04 * coarse + 0.03 * medium)
    # plasma membranes: pairs of bilayers 20 nm apart between cells, single at free edges
    s_between = (e2 - e1) / 2
    dens += 0.55 * cell * (_membrane(s_between - 0.012, 0.006)
                           + _membrane(s_between + 0.012, 0.006))
    dens += 0.55 * _membrane(e1 - spec.radius, 0.006) * (s_between > 0.03)
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
        dens[sl] += 0.45 * (_membrane(sdi, 0.006) + _membrane(sdi + 0.035, 0.006))
    del xw_e, yw_e, medium
    # organelles, drawn in local windows at their EM-frame positions
    occupied = [(p[0], p[1], bead_r + 0.15) for p in beads_em_all]

    def free(p, r):
        if not occupied:
            return True
        occ = np.array(occupied)
        return bool(np.all(np.hypot(occ[:, 0] - p[0], occ[:, 1] - p[1]) > occ[:, 2] + r + 0.03))

    def draw_vesicle(p_em, r, lumen):
        cx, cy = to_em_px(p_em)[0]
        w = _window(em_shape, cx, cy, (r + 0.03) / em_ps + 2)
        if w is None:
            return
        sl, dx, dy = w
        d = np.hypot(dx, dy) * em_ps
        dens[sl] += 0.5 * _membrane(d - r, 0.0055) + lumen * (d < r - 0.006)

    for p, r in zip(puncta_em, puncta_r):  # GFP-labelled vesicles: dense content
        occupied.append((p[0], p[1], r))
        draw_vesicle(p[None, :], r, 0.22)
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
                w = _window(em_shape, cx, cy, (a + 0.03) / em_ps + 2)
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
                cristae = _membrane(phase * spacing, 0.007) * (np.abs(v) < 0.8 * b)
                dens[sl] += (0.42 * (_membrane(sdm, 0.0055) + _membrane(sdm + 0.02, 0.0055))
                             + inner * (0.14 + 0.4 * cristae))
                continue
        r = rng_em_obj.uniform(0.025, 0.06)
        if c > r + 0.05 and free(p, r):
            occupied.append((p[0], p[1], r))
            draw_vesicle(p[None, :], r, 0.03)
    # beads: dense spheres, projected thickness, 4x4 supersampled
    bead_density = 3.5
    sub = (np.arange(4) + 0.5) / 4 - 0.5
    for p in beads_em_all:
        cx, cy = to_em_px(p[None, :])[0]
        w = _window(em_shape, cx, cy, bead_r / em_ps + 2)
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
    em = as_image(em_data, pixel_size=em_ps, origin=(em_origin[1], em_origin[0]),
                  dims=("y", "x"), modality="EM", frame="EM", name="em",
                  attrs={"description": f"synthetic CLEM electron micrograph, seed={int(seed)}"})

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
        "emission_wavelength_um": dict(_EMISSION_UM),
        "psf_sigma_um": psf_sigma,
        "bead_sigma_um": bead_sigma_um,
        "bead_photons_mean": bead_photons,
        "bead_photons": bead_flux.tolist(),
        "bead_bleedthrough_gfp": 0.03,
        "puncta_photons_mean": puncta_photons,
        "puncta_radius_um": puncta_r.tolist(),
        "background_photons": bg,
        "read_noise_e": read_noise,
        "gain_adu_per_e": gain,
        "offset_adu": offset,
        "em_dose_e_per_px": em_dose,
        "em_grey_per_e": em_scale,
        "em_bead_density": bead_density,
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
# ---------------------------------------------------------------------------------------
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

    n_beads = _int(n_beads, "n_beads", 4)
    n_targets = _int(n_targets, "n_targets", 0)
    dz, dxy = (_positive(v, "lm_pixel_size") for v in lm_pixel_size)
    fps = _positive(fib_pixel_size, "fib_pixel_size")
    rng = np.random.default_rng(seed)
    nz, ny, nx = (int(v) for v in lm_shape)
    ext = np.array([nx * dxy, ny * dxy, nz * dz])  # (x, y, z) µm
    lo, hi = np.array([1.5, 1.5, 1.2]), ext - np.array([1.5, 1.5, 1.2])
    if np.any(hi <= lo):
        raise ImageError(f"lm_shape {lm_shape} is too small for beads away from the borders")
    pts = _place(rng, n_beads + n_targets, lo, hi, 1.0)
    if len(pts) < n_beads + n_targets:
        raise ImageError("could not place that many well-separated beads; use a larger lm_shape")
    beads, targets = pts[:n_beads], pts[n_beads:]
    # LM: anisotropic PSF (confocal-like), Poisson noise, camera offset
    sig = np.array([0.35, 0.12, 0.12]) / np.array([dz, dxy, dxy])  # (z, y, x) px
    stack = np.full((2, nz, ny, nx), background_photons, dtype=np.float64)
    for c, group in ((0, beads), (1, targets)):
        for x, y, z in group:
            _add_gaussian_blob(stack[c], (z / dz, y / dxy, x / dxy), sig, bead_photons)
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
    fib = 100 + 15 * _smooth_noise(rng, (fy, fx), 20.0).astype(np.float64)  # ice/organelle texture
    bs = 0.1 / fps  # bead image sigma, px
    for x, y in beads_fib:
        _add_gaussian_blob(fib, (y / fps, x / fps), (bs, bs), 90 * 2 * np.pi * bs**2)  # peak +90
    fib = np.clip(fib + rng.normal(0, 8, fib.shape), 0, 255).astype(np.uint8)
    fib_img = as_image(fib, pixel_size=fps, modality="FIB", frame="FIB")
    depth = truth.depth(targets) - truth.depth(beads).mean() if len(targets) else np.zeros(0)
    params = {"tilt_deg": float(tilt_deg), "psf_sigma_um_zyx": [0.35, 0.12, 0.12],
              "bead_photons": float(bead_photons), "background_photons": float(background_photons),
              "camera_offset_adu": 100.0, "fib_pixel_size_um": fps}
    return SyntheticCryo(lm, fib_img, truth, beads, beads_fib, targets, targets_fib, depth, params)


# ---------------------------------------------------------------------------------------
# point sets for automatic matching
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MatchingTrial:
    """Two bead point sets related by an unknown similarity, with extras on both sides.

    Attributes
    ----------
    lm : numpy.ndarray, shape (N, 2)
        LM bead positions, µm, ``(x, y)``, with localisation noise.
    em : numpy.ndarray, shape (M, 2)
        EM particle positions, µm: a random subset of the beads mapped through the truth,
        plus spurious particles, shuffled, with localisation noise.
    truth : dict
        ``{lm row: em row}`` for the beads seen in both.
    mirrored : bool
        Whether the LM set was mirrored (x -> -x) before the similarity.
    transform : clemlab.transforms.Similarity
        The similarity applied after the optional mirror.
    """

    lm: np.ndarray
    em: np.ndarray
    truth: dict
    mirrored: bool
    transform: _tf.Similarity

    def true_map(self, points: Any) -> np.ndarray:
        """Noise-free LM -> EM map of ``(N, 2)`` points (µm)."""
        flip = np.diag([-1.0, 1.0]) if self.mirrored else np.eye(2)
        return self.transform(np.asarray(points, float) @ flip.T)


def matching_trial(seed: int, n: int = 200, mirror: bool | None = None, noise: float = 0.02,
                   field: float = 200.0, shift: float = 100.0) -> MatchingTrial:
    """A seeded matching problem: ``n`` LM beads in a ``field`` µm square; the EM sees a random
    60-80 % of them through a similarity (rotation 0-360°, scale 0.5-2x, translation up to
    ``shift`` µm, mirrored when ``mirror`` or, if None, at random) plus 20-40 % spurious
    particles; ``noise`` µm of localisation noise per axis on both sides."""
    rng = np.random.default_rng(seed)
    lm = rng.uniform(0, field, (n, 2))
    mirrored = bool(rng.random() < 0.5) if mirror is None else bool(mirror)
    tf = _tf.Similarity(scale=rng.uniform(0.5, 2), rotation=rng.uniform(0, 2 * np.pi),
                        translation=rng.uniform(-shift, shift, 2))
    k = int(rng.uniform(0.6, 0.8) * n)
    seen = rng.permutation(n)[:k]
    trial = MatchingTrial(lm, lm, {}, mirrored, tf)
    em_true = trial.true_map(lm[seen])
    spurious = rng.uniform(em_true.min(0), em_true.max(0), (int(rng.uniform(0.2, 0.4) * k), 2))
    em = np.vstack([em_true, spurious])
    perm = rng.permutation(len(em))
    where = np.argsort(perm)  # the em row holding em_true[q] is where[q]
    truth = {int(seen[q]): int(where[q]) for q in range(k)}
    return MatchingTrial(lm + rng.normal(0, noise, lm.shape), em[perm] + rng.normal(0, noise, em.shape),
                         truth, mirrored, tf)

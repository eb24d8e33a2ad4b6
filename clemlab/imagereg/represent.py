"""Representations that light and electron micrographs share, on a grid of chosen pixel size.

LM and EM intensities are not related by a known function: chromatin is bright in a Hoechst
image and dark in a back-scatter SEM image (shown inverted, like TEM); membranes and
organelles are dark in EM and absent from a nuclear stain. What both show is where the dense
chromatin is. Both sides are first brought to the same physical pixel size by area averaging,
so the EM's fine texture (membranes, ribosomes, shot noise) averages out as it does optically
in LM, and robustly standardised (median, MAD). The representations (``kind``):

``"intensity"`` (default)
    The standardised maps, EM inverted (dark = dense = bright, like the fluorescent DNA), by
    masked NCC in the search and in patch matching. Use it when the contrast relation is
    known (``invert``, by default from the modalities): it is what a nuclear-stain LM image is,
    a blurred density, and it measures best: as accurate as ``"mi"`` at half its time or less,
    with calibrated stated errors. It needs the inversion: without it no pair is registered
    (verdict "failed", once in 80 runs "ambiguous"; none silently wrong).
``"gradient"``
    Normalised gradient magnitude, ``|g| / (|g| + eps)`` of the smoothed map: edges of both
    polarities count the same. Measured below ``"mind"`` and ``"mi"`` with and without the
    inversion, so they serve its purpose (a contrast relation that is not a simple inversion)
    better.
``"mind"``
    MIND descriptors (:mod:`clemlab.imagereg.mind`, Heinrich et al. 2012) of the standardised
    map: four channels saying how each pixel's neighbourhood resembles itself one pixel away
    in each direction. The offsets are directions of a grid, so the fixed map is first
    resampled onto the moving grid and described there (:func:`describe`); the channels are
    scored together by one masked NCC (:mod:`clemlab.imagereg.ncc`). The same for a map and
    its inversion (maps clipped symmetrically), and little moved by non-linear remapping: use
    it when the contrast relation is unknown or is no single function (e.g. a stain bright on
    some structures that are dark in EM and dark on others). About twice the time of
    ``"intensity"`` and twice its median error; stated errors calibrated (patch z 1.0).
``"mi"``
    Mutual information of the standardised maps (:mod:`clemlab.imagereg.mi`). MI cannot be
    scored over all translations at once by FFT, so the global search (and the search near a
    start) uses ``"intensity"`` scored by ``|NCC|``, blind to the contrast sign as MI is; each
    kept pose is then moved to the MI maximum over the similarity's parameters (32-bin joint
    histogram, :func:`~clemlab.imagereg.mi.optimise_pose`) at every refinement level, and its
    patches are matched by MI turned into a correlation (:func:`~clemlab.imagereg.mi.patch_mi`),
    which the verdict reads as it reads NCC matches. Use it when the intensities are related
    by some function whose sign or shape is unknown but the coarse density still correlates
    (up to sign) for the search: as accurate as ``"intensity"`` with its inversion and still
    right without it; about two to four times its time. Stated errors calibrated without the
    inversion (patch z 1.0) and conservative with it (0.86).

Measured by ``python benchmarks/bench_content_registration.py --no-sitk --trials 80
--representation R`` (``intensity``: ``--trials 200`` with the SimpleITK baseline; seeded
``synthetic_cells`` pairs, full circle, scale 0.8-1.25, mirror in half; success: error <= 1 LM
px; silent: verdict "good" with error > 2 LM px; seconds on a 2-core machine shared with other
jobs; "cover95": share of grid points within the stated 95 % radius, "patch z": true error
of the patch matches over their stated sigma, 1 when calibrated), automatic / from two rough
clicks:

============  ============  ===============  ========  ===========  =============  =======  =======
kind          success       median err (px)  silent    good         median s       cover95  patch z
============  ============  ===============  ========  ===========  =============  =======  =======
intensity     100 / 100 %   0.058 / 0.059    0 / 0 %   100 / 98.5%  1.28 / 0.54    94.3 %   1.04
gradient      92.5 / 90.0   0.378 / 0.359    0 / 0     66.2 / 66.2  1.09 / 0.50    88.1     1.06
mind          96.2 / 97.5   0.113 / 0.112    0 / 0     96.2 / 92.5  4.09 / 1.24    93.2     1.00
mi            100 / 100     0.059 / 0.059    0 / 0     100 / 100    3.22 / 1.98    99.9     0.86
============  ============  ===============  ========  ===========  =============  =======  =======

and, the EM not inverted (``--trials 40 --no-invert``, seeds 0-39), automatic: intensity 0 %
success (39 "failed", one "ambiguous"; from clicks 40 "failed"), gradient 67.5 % (0.387 px,
37.5 % good, patch z 0.97), mind 95.0 % (0.125 px, 95.0 % good, z 1.02), mi 100 % (0.082 px,
100 % good, z 1.01); none silently wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _opencv
from ..errors import ImageError

KINDS = ("intensity", "gradient", "mind", "mi")


@dataclass
class Plane:
    """A 2-D map on a regular grid: pixel ``(row, col)`` has its centre at
    ``(x0 + col * step, y0 + row * step)`` µm."""

    data: np.ndarray
    x0: float
    y0: float
    step: float

    @property
    def shape(self):
        return self.data.shape

    def pixel_from_point(self) -> np.ndarray:
        """(3, 3) homogeneous matrix: µm ``(x, y)`` -> pixel ``(col, row)``."""
        return np.array([[1 / self.step, 0, -self.x0 / self.step], [0, 1 / self.step, -self.y0 / self.step], [0, 0, 1]])

    def point_from_pixel(self) -> np.ndarray:
        return np.linalg.inv(self.pixel_from_point())

    def extent(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.array([self.x0, self.y0]) - self.step / 2
        hi = lo + np.array(self.data.shape[::-1]) * self.step
        return lo, hi


def plane_of(image, channel=None) -> Plane:
    """A clemlab image (DataArray) as a float32 2-D :class:`Plane` at its own pixel size.

    ``channel`` selects one channel (name or index) of a ``(c, y, x)`` image; a ``z`` axis is
    refused (project or pick a plane first).
    """
    dims = image.dims
    if "z" in dims:
        raise ImageError("register_images works on 2-D images; pick a plane or project the stack "
                         "(e.g. image.max('z')) first")
    if "c" in dims:
        if channel is None:
            if image.sizes["c"] != 1:
                names = [str(v) for v in image.coords["c"].values]
                raise ImageError(f"the image has channels {names}: pass channel= (e.g. the nuclear stain)")
            image = image.isel(c=0)
        elif isinstance(channel, (int, np.integer)):
            image = image.isel(c=int(channel))
        else:
            image = image.sel(c=channel)
    if image.dims != ("y", "x"):
        raise ImageError(f"expected an image with dims (y, x) (optionally c), got {image.dims}")
    ps = image.clem.pixel_size
    if not np.isclose(ps["x"], ps["y"], rtol=1e-3):
        raise ImageError(f"register_images needs square pixels, got {ps}; resample the image first")
    org = image.clem.origin
    return Plane(np.asarray(image.values, np.float32), float(org["x"]), float(org["y"]), float(ps["x"]))


def resample(plane: Plane, step: float) -> Plane:
    """Block-average ``plane`` by the integer factor nearest ``step / plane.step`` (never
    upsampled); the grid stays exact (a trailing partial block is dropped)."""
    cv2 = _opencv.load()
    k = int(round(step / plane.step))
    if k <= 1:
        return plane
    ny, nx = (n // k for n in plane.data.shape)
    data = cv2.resize(plane.data[: ny * k, : nx * k], (nx, ny), interpolation=cv2.INTER_AREA)
    shift = (k - 1) / 2 * plane.step
    return Plane(data, plane.x0 + shift, plane.y0 + shift, k * plane.step)


def _standardise(a: np.ndarray, low: float = -8.0) -> np.ndarray:
    """``(a - median) / (1.4826 MAD)``, clipped to ``[low, 30]``: the dense (bright) structures
    keep their contrast, dark outliers are cut shorter unless ``low`` says otherwise."""
    med = float(np.median(a))
    mad = float(np.median(np.abs(a - med))) * 1.4826
    if mad <= 0:
        mad = float(a.std()) or 1.0
    return np.clip((a - med) / mad, low, 30).astype(np.float32)


def check_kind(kind: str) -> None:
    """Refuse a representation name that is not one of :data:`KINDS`."""
    if kind not in KINDS:
        raise ValueError(f"representation must be one of {KINDS}, got {kind!r}")


def represent(plane: Plane, step: float, kind: str, invert: bool) -> Plane:
    """The ``kind`` map of ``plane`` at pixel size ``step`` (see module notes): always one
    channel; ``"mind"`` and ``"mi"`` give the intensity map, which :func:`describe` (MIND) or
    the MI scores (:mod:`clemlab.imagereg.mi`) use once both sides are on one grid."""
    check_kind(kind)
    p = resample(plane, step)
    a = -p.data if invert else p.data
    # MIND is to be the same for a map and its inversion: clipped symmetrically
    a = _standardise(a, -30.0 if kind == "mind" else -8.0)
    if kind == "gradient":
        cv2 = _opencv.load()
        a = cv2.GaussianBlur(a, (0, 0), 1.0)
        gy, gx = np.gradient(a)
        mag = np.hypot(gx, gy)
        eps = float(np.median(mag)) + 1e-6
        a = (mag / (mag + eps)).astype(np.float32)
    return Plane(a, p.x0, p.y0, p.step)


def describe(kind: str, data: np.ndarray, mask: np.ndarray, stage: str = "match") -> tuple[np.ndarray, np.ndarray]:
    """What is compared of a map already on the common grid: ``(values, mask)``.

    ``data`` (H, W) and its validity ``mask`` (H, W) are a :func:`represent` map, or the fixed
    one resampled onto the moving grid. For ``"mind"`` the values are its MIND descriptors
    (4, H, W) and the mask is eroded by their footprint (:func:`clemlab.imagereg.mind.mind`,
    whose patch size depends on ``stage``, ``"search"`` or ``"match"``); for the other kinds
    both are returned unchanged.
    """
    if kind == "mind":
        from .mind import mind

        return mind(data, mask, stage=stage)
    return data, mask

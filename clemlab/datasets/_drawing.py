"""Drawing primitives of the synthetic samples: pixel-integrated Gaussians, local windows,
smooth random textures, bilinear upsampling and membrane profiles.

Positions and sizes are in pixels of the array drawn into unless a name says µm; arrays are
indexed ``(row, column)`` (``(z, y, x)`` in 3-D).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from scipy.special import erf


def add_gaussian_spot(img: np.ndarray, cx: float, cy: float, sigma: float, total: float) -> None:
    """Add a pixel-integrated 2-D Gaussian of integral ``total`` to ``img`` (in place), centred
    at the continuous pixel position ``(cx, cy)`` (column, row) with std ``sigma`` px."""
    add_gaussian_blob(img, (cy, cx), (sigma, sigma), total)


def add_gaussian_blob(img: np.ndarray, centre, sigma, total: float) -> None:
    """Add a pixel-integrated N-D Gaussian of integral ``total`` to ``img`` (in place);
    ``centre`` and ``sigma`` (px) in array index order (e.g. ``(z, y, x)``). The Gaussian is
    cut 4.5 sigma from its centre; nothing is drawn where that box misses the image."""
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


def window(shape: tuple[int, int], cx: float, cy: float, half: float):
    """The part of an image of ``shape`` (rows, columns) within ``half`` px of the continuous
    pixel position ``(cx, cy)`` (column, row).

    Returns
    -------
    tuple or None
        ``(slices, dx, dy)``: the (row, column) slices of the window and the offsets from
        ``(cx, cy)`` of its pixel centres, px, as a row ``(1, W)`` and a column ``(H, 1)``
        that broadcast to the window; None when the window misses the image.
    """
    rows, cols = shape
    j0, j1 = max(int(math.floor(cx - half)), 0), min(int(math.ceil(cx + half)) + 1, cols)
    i0, i1 = max(int(math.floor(cy - half)), 0), min(int(math.ceil(cy + half)) + 1, rows)
    if j0 >= j1 or i0 >= i1:
        return None
    dx = (np.arange(j0, j1, dtype=np.float64) - cx)[None, :]
    dy = (np.arange(i0, i1, dtype=np.float64) - cy)[:, None]
    return (slice(i0, i1), slice(j0, j1)), dx, dy


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float,
                 dtype=np.float32) -> np.ndarray:
    """Zero-mean, unit-variance smooth random texture of ``shape`` with correlation length
    ``sigma_px`` px. Long correlation lengths are drawn on a coarser grid and upsampled
    bilinearly, which their smoothness makes indistinguishable from drawing them in full."""
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


def upsample_bilinear(coarse: np.ndarray, f: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling to the grid ``shape`` (rows, columns) of samples taken every ``f``
    px from pixel 0: coarse sample ``k`` lands on full pixel ``k f``."""
    if f == 1:
        return coarse[: shape[0], : shape[1]]
    full = ((coarse.shape[0] - 1) * f + 1, (coarse.shape[1] - 1) * f + 1)
    out = ndi.zoom(coarse, (full[0] / coarse.shape[0], full[1] / coarse.shape[1]), order=1,
                   output=np.empty(full, dtype=coarse.dtype), grid_mode=False)
    return out[: shape[0], : shape[1]]


def membrane(dist, width: float):
    """Stain density across a membrane: a Gaussian of std ``width`` in the distance ``dist``
    from it (both µm), 1 on the membrane."""
    return np.exp(-((dist / width) ** 2))

"""Spline interpolation of order 2-5 with a finite prefilter, so that each output pixel
depends on a bounded neighbourhood of the source.

B-spline interpolation first turns pixel values into spline coefficients. The exact filter
(scipy's ``spline_filter``) is recursive: every coefficient depends on every pixel of its
row, so one NaN spoils the whole row and column of coefficients, and a coefficient computed
on a chunk's footprint differs from one computed on the whole image. Its taps decay
geometrically (by 0.27 per pixel at order 3, 0.43 at order 5), so here the filter is the
exact one's impulse response cut where its taps fall below :data:`TAP_FLOOR` of the centre
tap: a finite filter that differs from the exact one by less than that, relatively, and
gives every coefficient from the same pixels in any footprint. A NaN source pixel then
spoils exactly the output pixels within :func:`footprint_radius` of it.

Edges: the image is mirrored about its edge pixels, as scipy's ``mode="constant"`` does
for its prefilter.
"""

from __future__ import annotations

import functools

import numpy as np

#: taps of the exact prefilter smaller than this fraction of the centre tap are dropped
TAP_FLOOR = 1.0e-12
_SPLINE_ORDERS = (2, 3, 4, 5)


@functools.lru_cache(maxsize=len(_SPLINE_ORDERS))
def prefilter_taps(order: int) -> np.ndarray:
    """The finite prefilter of spline ``order`` (2-5): taps ``(2 r + 1,)``, symmetric, float64."""
    from scipy import ndimage

    if order not in _SPLINE_ORDERS:
        raise ValueError(f"spline prefilter exists for orders {_SPLINE_ORDERS}, not {order}")
    n = 513  # long enough that its mirrored ends do not reach the centre's kept taps
    delta = np.zeros(n)
    delta[n // 2] = 1.0
    h = ndimage.spline_filter1d(delta, order, mode="mirror")
    h = (h + h[::-1]) / 2  # symmetric up to rounding already
    centre = n // 2
    kept = np.flatnonzero(np.abs(h) >= TAP_FLOOR * abs(h[centre]))
    r = int(max(centre - kept.min(), kept.max() - centre))
    taps = h[centre - r : centre + r + 1].copy()
    taps.flags.writeable = False
    return taps


def footprint_radius(order: int) -> int:
    """Source pixels around an output pixel's position that its value depends on (per axis):
    the interpolation kernel's reach for orders 0 and 1, plus the prefilter's for 2-5."""
    if order <= 1:
        return 1
    return (len(prefilter_taps(order)) - 1) // 2 + order // 2 + 1


def coefficients(plane: np.ndarray, order: int) -> np.ndarray:
    """Spline coefficients (float64, same shape) of ``plane`` for spline ``order`` (2-5).

    Each coefficient is the finite prefilter applied along every axis, mirrored at the
    array's edges: coefficients within the prefilter's radius of an edge that is not the
    image's own are not those of the image and must not be used.
    """
    from scipy import ndimage

    taps = prefilter_taps(order)
    out = np.asarray(plane, np.float64)
    for axis in range(out.ndim):
        out = ndimage.correlate1d(out, taps, axis=axis, mode="mirror", output=np.float64)
    return out

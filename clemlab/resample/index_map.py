"""The exact map from output array indices to source array indices, and how far a resampled
position may stray from it.

Everything the resampler plans or samples is expressed in array indices: an output chunk's
pixels ``(z, y, x)`` map to continuous source indices through :class:`_IndexMap`, which
composes the output grid's index -> µm matrix, the inverse transform (target -> source frame)
and the source grid's µm -> index matrix. Linear transforms collapse into one homogeneous
matrix; other transforms are evaluated exactly in float64, point by point.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import xarray as xr

from .. import _opencv
from .. import transforms as _tf
from ..errors import ImageError

__all__ = ["POSITION_BOUND_PX", "map_tolerance", "as_transform"]

#: Bound (px) on the distance between the source position a warp through OpenCV or scipy
#: samples for an output pixel and the exact transform's (non-linear maps; see map_tolerance).
POSITION_BOUND_PX = 0.05
#: float32 rounding of chunk-relative coordinates (a few ulps) in footprints up to 8192 px a side
_FLOAT32_PX = 0.003
#: at most four fifths of the bound go to deviations at the points checked, so the
#: deviations between those points stay within the bound too
_MAP_TOLERANCE_MAX = 0.04


def map_tolerance(dtype: Any = None) -> float:
    """Largest deviation (px) allowed between a non-linear map as resampled (bilinear between
    coarse nodes, or affine per cell) and the exact transform.

    What is left of :data:`POSITION_BOUND_PX` (0.05 px) once OpenCV's sampling error for
    ``dtype`` (sqrt(2) x :func:`clemlab._opencv.sampling_error`, measured on the installed
    OpenCV) and 0.003 px for float32 coordinates are taken off, and at most 0.04 px: 0.04 px
    for dtypes OpenCV interpolates at the exact position, 0.0249 px for those it samples to
    1/32 px.

    Parameters
    ----------
    dtype : numpy dtype, optional
        The source dtype OpenCV resamples; None for exact sampling (scipy).

    Returns
    -------
    float
        Tolerance in source pixels.
    """
    sampling = 0.0 if dtype is None else math.sqrt(2) * _opencv.sampling_error(np.dtype(dtype))
    return min(_MAP_TOLERANCE_MAX, POSITION_BOUND_PX - _FLOAT32_PX - sampling)


def as_transform(transform: Any) -> _tf.Transform:
    """The clemlab transform of ``transform`` (itself, or the one a Registration carries).

    Raises
    ------
    ImageError
        When ``transform`` is neither.
    """
    tf = getattr(transform, "transform", transform)
    if not isinstance(tf, _tf.Transform):
        raise ImageError(f"transform must be a clemlab Transform or Registration, got {type(transform).__name__}")
    return tf


def _grid_matrix(img: xr.DataArray) -> np.ndarray:
    """Homogeneous matrix (D+1, D+1) from ``img``'s array index ``(z, y, x)`` to µm ``(x, y, z)``."""
    size, origin = img.clem._xyz()
    return _tf.index_to_physical_matrix(size, origin)


class _IndexMap:
    """Output array index ``(z, y, x)`` -> continuous source array index, exact (float64).

    ``matrix`` is the homogeneous index-to-index matrix for linear transforms (``None``
    otherwise); ``affine`` says whether its last row is ``(0, .., 0, 1)``.
    """

    def __init__(self, tf: _tf.Transform, src_m: np.ndarray, dst_m: np.ndarray):
        self.tf, self.src_m, self.dst_m = tf, src_m, dst_m
        self.inverse = tf.inverse  # built once: non-linear inverses may be costly to set up
        self._src_inv = np.linalg.inv(src_m)  # physical -> source index
        self.d = src_m.shape[0] - 1
        self.matrix = None
        self.affine = False
        if isinstance(tf, _tf.LinearTransform):
            self.matrix = np.linalg.inv(src_m) @ np.linalg.inv(tf.matrix) @ dst_m
            self.affine = bool(np.allclose(self.matrix[-1], np.eye(self.d + 1)[-1], atol=0, rtol=0))

    def __call__(self, idx: np.ndarray, start: Any = 0) -> np.ndarray:
        """Source indices (P, D) for output indices ``idx + start`` (P, D), array order."""
        idx = np.asarray(idx, np.float64)
        d = self.d
        if self.matrix is not None:
            m = self.matrix @ _shift(np.asarray(start, np.float64) * np.ones(d))
            h = idx @ m[:d, :d].T + m[:d, d]
            if not self.affine:
                w = idx @ m[d, :d] + m[d, d]
                h = h / w[:, None]
            return h
        glob = idx + start
        phys = glob @ self.dst_m[:d, :d].T + self.dst_m[:d, d]  # (P, D) in (x, y, z)
        src_phys = self.inverse(phys)
        inv = self._src_inv  # physical -> source index: the inverse of index_to_physical_matrix
        return src_phys @ inv[:d, :d].T + inv[:d, d]


def _shift(offset: np.ndarray) -> np.ndarray:
    """Homogeneous translation matrix (D+1, D+1) by ``offset`` (D,)."""
    d = offset.size
    m = np.eye(d + 1)
    m[:d, d] = offset
    return m


def _chunk_rows(*chunks: tuple) -> np.ndarray:
    """Chunks ``(start, shape, origin)`` of a 2-D output as the rows ``(n, 6)`` the planners take:
    first row, column, rows, columns, and the source origin row, column subtracted from the map."""
    return np.array([[*start, *shape, *origin] for start, shape, origin in chunks], np.float64)

"""Points, their axis order, and pixel grids: the one place axes are swapped.

Points are ``(N, D)`` float arrays in µm with columns ``(x, y[, z])`` (the order of
scikit-image transforms, matplotlib clicks, BigWarp and ec-CLEM). Arrays are indexed
``(z, y, x)`` (row-major). The functions here are the only code in clemlab that converts
between the two orders or between pixel coordinates and physical units.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import TransformError

__all__ = ["POINT_AXES", "as_points", "xy_to_rc", "rc_to_xy", "pixel_to_physical", "physical_to_pixel",
           "index_to_physical_matrix"]

#: Column order of points: ``(x, y[, z])``.
POINT_AXES = ("x", "y", "z")


def as_points(points: Any, ndim: int | None = None, argname: str = "points") -> np.ndarray:
    """Return ``points`` as a float64 ``(N, D)`` array, checking its shape.

    A single point of shape ``(D,)`` becomes ``(1, D)``. Raises :class:`TransformError`
    naming ``argname`` when the shape is wrong or does not match ``ndim``.
    """
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise TransformError(f"{argname} must be numeric, got {type(points).__name__}") from None
    if arr.ndim == 1:
        arr = arr[np.newaxis, :]
    if arr.ndim != 2 or arr.shape[1] not in (2, 3):
        raise TransformError(
            f"{argname} must have shape (N, 2) or (N, 3) with columns (x, y[, z]), "
            f"got shape {np.shape(points)}"
        )
    if ndim is not None and arr.shape[1] != ndim:
        raise TransformError(
            f"{argname} has {arr.shape[1]} columns but the transform is {ndim}-D; "
            f"give points as (N, {ndim}) in (x, y{', z' if ndim == 3 else ''}) order"
        )
    return arr


def xy_to_rc(points: Any) -> np.ndarray:
    """``(x, y[, z])`` point columns -> array index order ``(row, col)`` / ``(z, y, x)``."""
    return np.asarray(points)[..., ::-1]


def rc_to_xy(indices: Any) -> np.ndarray:
    """Array index order ``(row, col)`` / ``(z, y, x)`` -> point columns ``(x, y[, z])``."""
    return np.asarray(indices)[..., ::-1]


def pixel_to_physical(pixels: Any, pixel_size: Any, origin: Any) -> np.ndarray:
    """Continuous pixel coordinates -> physical positions (same ``(x, y[, z])`` order).

    Parameters
    ----------
    pixels : array_like, shape (N, D)
        Pixel coordinates, columns ``(x, y[, z])``; integers are pixel centres.
    pixel_size, origin : array_like, shape (D,)
        Pixel size and first-pixel-centre position per axis, in ``(x, y[, z])`` order, µm.
    """
    pix = as_points(pixels, len(pixel_size), "pixels")
    return np.asarray(origin, np.float64) + pix * np.asarray(pixel_size, np.float64)


def physical_to_pixel(points: Any, pixel_size: Any, origin: Any) -> np.ndarray:
    """Physical positions -> continuous pixel coordinates (inverse of :func:`pixel_to_physical`)."""
    pts = as_points(points, len(pixel_size), "points")
    return (pts - np.asarray(origin, np.float64)) / np.asarray(pixel_size, np.float64)


def index_to_physical_matrix(pixel_size: Any, origin: Any) -> np.ndarray:
    """Homogeneous matrix from array indices ``(z, y, x)`` to physical points ``(x, y, z)``.

    Parameters
    ----------
    pixel_size, origin : array_like, shape (D,)
        Per-axis pixel size and first-pixel-centre position, in point order ``(x, y[, z])``.

    Returns
    -------
    numpy.ndarray, shape (D+1, D+1)
        ``M`` with ``[x, y, (z), 1] = M @ [(k), i, j, 1]`` for the array index ``(k, i, j)``.
    """
    size = np.asarray(pixel_size, np.float64)
    d = size.size
    m = np.zeros((d + 1, d + 1))
    m[:d, :d] = np.diag(size)[:, ::-1]
    m[:d, d] = np.asarray(origin, np.float64)
    m[d, d] = 1.0
    return m

"""OpenCV, imported on first use, with the process's settings left as they are.

clemlab calls OpenCV (warps, remaps, tile blending) from dask's worker threads. It changes
none of OpenCV's process-wide settings: not its thread count (``cv2.setNumThreads``), not the
spin limits of its thread pool (``OPENCV_THREAD_POOL_ACTIVE_WAIT_*``, which OpenCV reads from
the environment once, at its import), and it writes no environment variable. Such settings
belong to the program that embeds clemlab; one that wants idle OpenCV threads to sleep at once
sets both variables to 0 before OpenCV is first imported. (OpenCV's own loader may prepend its
library folder to ``LD_LIBRARY_PATH`` when it is imported, as it does in any program.)

:func:`sampling_error` measures how exactly this OpenCV's bilinear kernels place their
samples: older releases round source positions to 1/32 px, newer ones interpolate at the
floating-point position. :mod:`clemlab.warp` sizes its map tolerance by it.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

__all__ = ["load", "sampling_error"]


def load() -> Any:
    """The ``cv2`` module, imported on first use (``import clemlab`` does not import OpenCV)."""
    import cv2

    return cv2


def sampling_error(dtype: Any) -> float:
    """Largest error (px, along one axis) of the source positions at which OpenCV's bilinear
    ``cv2.warpAffine`` and ``cv2.remap`` sample images of ``dtype``, measured on this OpenCV
    (once per dtype and process; the results are kept in a cache of 8 entries).

    Both kernels sample a unit step edge (0 up to the dtype's top value between two columns)
    at 127 positions 1/128 px apart; the value read there is the position sampled. The
    largest difference from the position asked for, less the dtype's rounding of the value,
    is returned: 1/64 px where OpenCV interpolates from 1/32-px tables (all dtypes in older
    releases; int16 in OpenCV 5.1), ~0 where it interpolates at the exact position (uint8,
    uint16 and float32 in OpenCV 5.1). A measurement takes about a millisecond.

    Parameters
    ----------
    dtype : numpy dtype
        One that OpenCV resamples (uint8, uint16, int16, float32).

    Returns
    -------
    float
        Error in px along each axis (the 2-D position error is at most sqrt(2) times it).
    """
    return _measure_sampling_error(np.dtype(dtype))


# One entry per dtype OpenCV resamples (uint8, uint16, int16, float32), with room to spare.
@functools.lru_cache(maxsize=8)
def _measure_sampling_error(dtype: np.dtype) -> float:
    cv2 = load()
    top = float(np.iinfo(dtype).max) if dtype.kind in "iu" else 1.0
    frac = np.arange(1, 128) / 128  # positions past the step's first column, px
    step = np.zeros((3, 4), dtype)
    step[:, 2:] = top  # the value rises from 0 to top between columns 1 and 2
    # output column j samples the source at column 1 + (j + 1) / 128, row 1
    m = np.array([[1 / 128, 0, 1 + 1 / 128], [0, 1, 0]])
    affine = cv2.warpAffine(step, m, (frac.size, 3), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)[1]
    xy = np.stack([1 + frac, np.ones_like(frac)], axis=-1).astype(np.float32)[None]
    remapped = cv2.remap(step, xy, None, cv2.INTER_LINEAR)[0]
    rounding = 0.5 / top if dtype.kind in "iu" else 0.0
    worst = max(float(np.abs(got.astype(np.float64) / top - frac).max()) for got in (affine, remapped))
    return max(worst - rounding, 0.0)

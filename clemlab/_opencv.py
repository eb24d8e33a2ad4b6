"""OpenCV, imported on first use with thread-pool settings suited to dask's worker threads.

clemlab calls OpenCV (warps, remaps, tile blending) from inside dask's worker threads. After
each parallel call, OpenCV's own thread pool busy-waits for a while (its "active wait": the
calling thread and the pool's workers spin before they sleep); inside a dask worker, those
spins take the cores the other workers need. OpenCV reads the spin limits once, when it is
imported, from the environment variables ``OPENCV_THREAD_POOL_ACTIVE_WAIT_MAIN`` and
``OPENCV_THREAD_POOL_ACTIVE_WAIT_WORKER``; unless they are already set, :func:`load` sets both
to 0 before the first import, so idle OpenCV threads sleep at once. Measured with
``benchmarks/bench_warp.py``'s thin-plate-spline warp on the project's 2-core machines
(8 remap calls per chunk): 0.50-0.53 s per warp instead of 0.53-0.59 s, 0.86 instead of
0.92 CPU-s; the affine warp (one call per chunk) was unchanged within noise. If OpenCV was
imported before clemlab first needs it, its settings stay as they are.

:func:`sampling_error` measures, once per process, how exactly this OpenCV's bilinear
kernels place their samples: older releases round source positions to 1/32 px, newer ones
interpolate at the floating-point position. :mod:`clemlab.warp` sizes its map tolerance by it.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any

import numpy as np

__all__ = ["load", "sampling_error", "POOL_SETTINGS"]

#: Environment defaults applied before OpenCV's first import (a value already set wins).
POOL_SETTINGS = {"OPENCV_THREAD_POOL_ACTIVE_WAIT_MAIN": "0", "OPENCV_THREAD_POOL_ACTIVE_WAIT_WORKER": "0"}


def load() -> Any:
    """The ``cv2`` module, imported with :data:`POOL_SETTINGS` as defaults on first import."""
    if "cv2" not in sys.modules:
        for key, value in POOL_SETTINGS.items():
            os.environ.setdefault(key, value)
    import cv2

    return cv2


@functools.cache
def sampling_error(dtype: Any) -> float:
    """Largest error (px, along one axis) of the source positions at which OpenCV's bilinear
    ``cv2.warpAffine`` and ``cv2.remap`` sample images of ``dtype``, measured on this OpenCV.

    Both kernels sample a unit step edge (0 up to the dtype's top value between two columns)
    at 127 positions 1/128 px apart; the value read there is the position sampled. The
    largest difference from the position asked for, less the dtype's rounding of the value,
    is returned: 1/64 px where OpenCV interpolates from 1/32-px tables (all dtypes in older
    releases; int16 in OpenCV 5.1), ~0 where it interpolates at the exact position (uint8,
    uint16 and float32 in OpenCV 5.1). Measured once per dtype and process (about a
    millisecond).

    Parameters
    ----------
    dtype : numpy dtype
        One that OpenCV resamples (uint8, uint16, int16, float32).

    Returns
    -------
    float
        Error in px along each axis (the 2-D position error is at most sqrt(2) times it).
    """
    cv2 = load()
    dtype = np.dtype(dtype)
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

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
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["load", "POOL_SETTINGS"]

#: Environment defaults applied before OpenCV's first import (a value already set wins).
POOL_SETTINGS = {"OPENCV_THREAD_POOL_ACTIVE_WAIT_MAIN": "0", "OPENCV_THREAD_POOL_ACTIVE_WAIT_WORKER": "0"}


def load() -> Any:
    """The ``cv2`` module, imported with :data:`POOL_SETTINGS` as defaults on first import."""
    if "cv2" not in sys.modules:
        for key, value in POOL_SETTINGS.items():
            os.environ.setdefault(key, value)
    import cv2

    return cv2

"""OpenCV is imported by clemlab with thread-pool spin limits suited to dask worker threads."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from clemlab import _opencv

SCRIPT = """
import json, os, sys
import clemlab
from clemlab import _opencv
before = 'cv2' in sys.modules
cv2 = _opencv.load()
print(json.dumps({'before': before, 'env': {k: os.environ.get(k) for k in _opencv.POOL_SETTINGS},
                  'module': cv2.__name__}))
"""


def _run(env_extra, pre=""):
    env = {k: v for k, v in os.environ.items() if k not in _opencv.POOL_SETTINGS}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", pre + SCRIPT], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_clemlab_leaves_opencv_alone_and_load_sets_pool_defaults():
    got = _run({})
    assert got["before"] is False  # import clemlab does not import OpenCV
    assert got["env"] == _opencv.POOL_SETTINGS and got["module"] == "cv2"


def test_user_settings_and_an_earlier_opencv_import_win():
    got = _run({"OPENCV_THREAD_POOL_ACTIVE_WAIT_MAIN": "500"})
    assert got["env"]["OPENCV_THREAD_POOL_ACTIVE_WAIT_MAIN"] == "500"
    assert got["env"]["OPENCV_THREAD_POOL_ACTIVE_WAIT_WORKER"] == "0"
    got = _run({}, pre="import cv2\n")  # OpenCV already read its settings: nothing to change
    assert got["before"] is True and all(v is None for v in got["env"].values())


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32])
def test_sampling_error_bounds_where_opencv_samples(dtype):
    """The measured sampling error bounds the position error of warpAffine and remap at random
    sub-pixel positions (a step edge read back as a position), and is that of one of the two
    kernel kinds: exact positions or 1/32-px tables."""
    cv2 = _opencv.load()
    err = _opencv.sampling_error(dtype)
    assert err < 1e-3 or abs(err - 1 / 64) < 1e-3
    top = float(np.iinfo(dtype).max) if np.dtype(dtype).kind in "iu" else 1.0
    rounding = 0.5 / top if np.dtype(dtype).kind in "iu" else 0.0
    step = np.zeros((5, 6), dtype)
    step[:, 3:] = top  # from 0 to top between columns 2 and 3
    rng = np.random.default_rng(7)
    frac = rng.uniform(0, 1, 400)
    xy = np.stack([2 + frac, rng.uniform(1, 3, frac.size)], axis=-1).astype(np.float32)[None]
    got = [cv2.remap(step, xy, None, cv2.INTER_LINEAR)[0].astype(np.float64) / top]
    for f in frac[:40]:  # a translation per call; output (0, 0) samples column 2 + f, row 1.3
        m = np.array([[1.0, 0.0, 2 + f], [0.0, 1.0, 1.3]])
        got.append([cv2.warpAffine(step, m, (2, 2), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)[0, 0] / top])
    seen = np.abs(np.concatenate([got[0], np.ravel(got[1:])]) - np.concatenate([frac, frac[:40]]))
    assert seen.max() <= err + rounding + 1e-6
    if err > 1e-3:  # 1/32-px tables: random positions come close to the worst case
        assert seen.max() > 0.75 * err


def test_map_tolerance_keeps_the_position_bound():
    from clemlab.resample import POSITION_BOUND_PX, map_tolerance

    assert map_tolerance() == pytest.approx(0.04)  # scipy: exact positions
    for dtype in (np.uint8, np.uint16, np.int16, np.float32):
        tol = map_tolerance(dtype)
        assert 0.02 < tol <= map_tolerance()
        assert tol + np.sqrt(2) * _opencv.sampling_error(dtype) < POSITION_BOUND_PX

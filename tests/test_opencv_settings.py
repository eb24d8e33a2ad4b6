"""clemlab uses OpenCV without changing the process's settings, and knows how exactly its
bilinear kernels sample."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from clemlab import _opencv

# Runs in a fresh process: what importing clemlab and warping with OpenCV changes.
SCRIPT = """
import json, os, sys
env = dict(os.environ)
import numpy as np
import clemlab as cl
light = 'cv2' not in sys.modules
img = cl.as_image(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64), pixel_size=0.1)
out = cl.warp(img, cl.Similarity(1.1, 0.2, (0.3, -0.2)), like=img, chunks=32).compute()
import cv2
print(json.dumps({'light': light, 'warped': bool(out.values.any()), 'threads': cv2.getNumThreads(),
                  'env_changes': {k: os.environ.get(k) for k in set(env) | set(os.environ)
                                  if env.get(k) != os.environ.get(k)}}))
"""
# What importing OpenCV alone changes (its loader may prepend its library folder to
# LD_LIBRARY_PATH for subprocesses): clemlab may change nothing beyond it.
OPENCV_ALONE = """
import json, os
env = dict(os.environ)
import cv2
print(json.dumps({'threads': cv2.getNumThreads(), 'env_changes': {k: os.environ.get(k) for k in set(env) | set(os.environ)
                                                               if env.get(k) != os.environ.get(k)}}))
"""


def _run(script, env_extra, pre=""):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV")}
    env.update(env_extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, "-c", pre + script], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_and_warp_leave_the_environment_and_opencv_settings_alone():
    got, alone = _run(SCRIPT, {}), _run(OPENCV_ALONE, {})
    assert got["light"] and got["warped"]  # import clemlab does not import OpenCV; the warp ran
    assert got["env_changes"] == alone["env_changes"]
    assert not any(k.startswith("OPENCV") for k in got["env_changes"])
    assert got["threads"] == alone["threads"]  # OpenCV's own default thread count


def test_the_user_settings_stay_as_given():
    user = {"OPENCV_THREAD_POOL_ACTIVE_WAIT_MAIN": "500"}
    pre = "import cv2; cv2.setNumThreads(1)\n"
    got, alone = _run(SCRIPT, user, pre), _run(OPENCV_ALONE, user, pre)
    assert got["env_changes"] == alone["env_changes"] and got["threads"] == 1 and got["warped"]


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

"""OpenCV is imported by clemlab with thread-pool spin limits suited to dask worker threads."""

import json
import os
import subprocess
import sys


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

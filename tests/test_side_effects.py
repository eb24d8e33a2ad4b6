"""Importing clemlab and running a whole job leaves the process's global state as it was:
environment, warnings filters, dask's configuration, matplotlib's backend and rcParams,
OpenCV's thread count and numpy's floating-point error handling."""

from __future__ import annotations

import json
import os
import subprocess
import sys

# Runs in a fresh process with a job (``sys.argv[1]``): the libraries clemlab uses are imported
# first (what they do when imported is theirs, and a user's program imports them too), except
# OpenCV, which clemlab imports on first use; then the state is recorded, the job run, and the
# state compared.
RUN = r"""
import copy, json, os, sys, tempfile, warnings
import numpy as np, scipy.ndimage, scipy.optimize, scipy.spatial, pandas, xarray, tifffile
import dask, dask.array, dask.config
try:  # dask's compute() imports distributed where it is installed, which adds its config defaults
    import distributed
except ImportError:
    pass
import matplotlib, matplotlib.pyplot as plt

def state():
    return {"environ": dict(os.environ), "warnings": list(warnings.filters),
            "dask": copy.deepcopy(dask.config.config), "backend": matplotlib.get_backend(),
            "rc": dict(matplotlib.rcParams), "seterr": np.geterr(), "showwarning": warnings.showwarning}

before = state()
exec(sys.argv[1])
after = state()
import cv2
changed = sorted(k for k in before if before[k] != after[k])
env = {k: after["environ"].get(k) for k in set(before["environ"]) | set(after["environ"])
       if before["environ"].get(k) != after["environ"].get(k)}
print(json.dumps({"changed": changed, "environ": env, "cv2_threads": cv2.getNumThreads(),
                  "detail": {k: [str(before[k])[:300], str(after[k])[:300]] for k in changed}}))
"""

JOB = """
import clemlab as cl

sample = cl.datasets.synthetic_clem_small(seed=0)
prm = sample.params
beads_lm = cl.detect_fiducials(sample.lm.sel(c="beads"), polarity="bright", diameter=(0.2, 0.5),
                               gain=prm["gain_adu_per_e"], offset=prm["offset_adu"])
beads_em = cl.detect_fiducials(sample.em, polarity="dark", diameter=(0.1, 0.3))
match = cl.match_fiducials(beads_lm, beads_em, model="affine")
assert len(match.landmarks) >= 3
reg = match.registration
corr = cl.correlate(sample.em, sample.lm, reg)
with dask.config.set(scheduler="threads", num_workers=2):
    out = os.path.join(tempfile.mkdtemp(), "lm_on_em.ome.tif")
    cl.write_ome_tiff(cl.warp(sample.lm, reg.transform, like=sample.em), out)
assert cl.open_image(out).shape[1:] == sample.em.shape
cl.plot_overlay(corr, points=sample.fiducials_em)
cl.plot_residuals(reg)
plt.close("all")
"""


def _changes(job: str, tmp_path) -> dict:
    # a backend clemlab would not pick itself, so that switching to any other shows
    env = dict(os.environ, MPLBACKEND="svg",
               PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
    env = {k: v for k, v in env.items() if not k.startswith("OPENCV")}
    proc = subprocess.run([sys.executable, "-c", RUN, job], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_whole_job_leaves_global_state_unchanged(tmp_path):
    got = _changes(JOB, tmp_path)
    opencv_alone = _changes("import cv2", tmp_path)  # its loader may extend LD_LIBRARY_PATH
    assert set(got["changed"]) <= {"environ"}, got["detail"]
    assert got["environ"] == opencv_alone["environ"]
    assert got["cv2_threads"] == opencv_alone["cv2_threads"]

"""The resampler's per-thread scratch buffers stay within their documented byte bound, and
results do not depend on whether a footprint fits in them."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np

import clemlab as cl
from clemlab import transforms as T
from clemlab.resample import footprint


def _kept_bytes() -> int:
    return sum(b.nbytes for b in getattr(footprint._SCRATCH, "buffers", {}).values())


def test_scratch_buffers_stay_within_the_bound_and_results_do_not_depend_on_it(monkeypatch):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 60000, (2, 400, 440), dtype=np.uint16)
    src = cl.as_image(da.from_array(data, chunks=(1, 128, 128)), pixel_size=0.01, channels=["a", "b"],
                      modality="EM")
    like = cl.as_image(np.zeros((330, 350), np.uint8), pixel_size=0.011, origin=(0.3, 0.2), modality="T")
    pts = rng.uniform(0, 4, (20, 2))
    affine = T.Similarity(1.05, 0.2, [0.1, -0.2], source_frame="EM", target_frame="T")
    spline = T.ThinPlateSpline.from_estimate(pts, affine(pts) + rng.normal(0, 0.01, (20, 2)), bigwarp=True,
                                             source_frame="EM", target_frame="T")
    with dask.config.set(scheduler="synchronous"):  # tasks run in this thread: its buffers are inspectable
        monkeypatch.setattr(footprint._SCRATCH, "buffers", {}, raising=False)
        roomy = [cl.warp(src, tf, like=like, chunks=170).values for tf in (affine, spline)]
        assert 0 < _kept_bytes() <= footprint.SCRATCH_BYTES_PER_THREAD
        # a bound smaller than one footprint: fresh arrays instead, nothing more kept
        monkeypatch.setattr(footprint, "SCRATCH_BYTES_PER_THREAD", 64 * 1024)
        monkeypatch.setattr(footprint._SCRATCH, "buffers", {})
        tight = [cl.warp(src, tf, like=like, chunks=170).values for tf in (affine, spline)]
        assert _kept_bytes() <= 64 * 1024
    for a, b in zip(roomy, tight):
        np.testing.assert_array_equal(a, b)

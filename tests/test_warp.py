"""Eager warp and correlate: against ground truth, against scipy, attrs rewritten."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage

import clemlab as cl
from clemlab import transforms as T
from clemlab.errors import ImageError


def smooth(x, y):
    """A smooth test pattern in physical units (µm)."""
    return 1000 + 400 * np.sin(x / 3.0) * np.cos(y / 4.0) + 10 * x


def lm_image(dtype=np.float64, channels=("a", "b")):
    y, x = np.mgrid[0:120, 0:150]
    xs, ys = 5.0 + 0.1 * x, -2.0 + 0.1 * y  # origin (x=5, y=-2), 100 nm pixels
    plane = smooth(xs, ys)
    data = np.stack([plane, 2 * plane]).astype(dtype)
    return cl.as_image(data, pixel_size=0.1, origin=(-2.0, 5.0), channels=list(channels), modality="LM")


def em_grid(dtype=np.uint8, origin={"x": 1000.0, "y": 2000.0}):
    return cl.as_image(np.zeros((90, 110), dtype), pixel_size=0.05, origin=origin, modality="EM")


TF = T.Similarity(1.02, 0.3, [1000.0 - 8.0, 2000.0 - 4.0], source_frame="LM", target_frame="EM")


def test_warp_matches_ground_truth():
    lm, em = lm_image(), em_grid()
    out = cl.warp(lm, TF, like=em)
    assert out.dims == ("c", "y", "x") and list(out.c.values) == ["a", "b"]
    np.testing.assert_array_equal(out.x.values, em.x.values)
    yy, xx = np.meshgrid(em.y.values, em.x.values, indexing="ij")
    src = TF.inverse(np.c_[xx.ravel(), yy.ravel()])
    expected = smooth(src[:, 0], src[:, 1]).reshape(xx.shape)
    inside = (src[:, 0] > 5.2) & (src[:, 0] < 19.7) & (src[:, 1] > -1.8) & (src[:, 1] < 9.7)
    inside = inside.reshape(xx.shape)
    assert inside.sum() > 1000
    # bilinear interpolation of a smooth pattern on a 100 nm grid: small error
    assert np.abs(out.values[0][inside] - expected[inside]).max() < 2.0
    np.testing.assert_allclose(out.values[1], 2 * out.values[0])
    assert np.all(out.values[0][~inside.reshape(xx.shape)] >= 0)


def test_warp_equals_independent_scipy_map_coordinates():
    lm, em = lm_image(), em_grid()
    out = cl.warp(lm, TF, like=em, order=1)
    yy, xx = np.meshgrid(em.y.values, em.x.values, indexing="ij")
    src = TF.inverse(np.c_[xx.ravel(), yy.ravel()])
    cols = (src[:, 0] - float(lm.x[0])) / 0.1
    rows = (src[:, 1] - float(lm.y[0])) / 0.1
    ref = ndimage.map_coordinates(lm.values[0], [rows, cols], order=1, cval=0).reshape(xx.shape)
    np.testing.assert_allclose(out.values[0], ref, atol=1e-9)


def test_nonlinear_path_equals_linear_path():
    lm, em = lm_image(), em_grid()
    half = T.Similarity(1.01, 0.15, [500.0, 1000.0])
    other = T.Affine(matrix=TF.matrix @ np.linalg.inv(half.matrix))  # half, then other == TF
    comp = T.Composite([half.inverse.then(half), half, other])  # not a LinearTransform
    assert not isinstance(comp, T.LinearTransform)
    np.testing.assert_allclose(cl.warp(lm, comp, like=em).values, cl.warp(lm, TF, like=em).values, atol=1e-6)


def test_dtype_preserved_and_dask_lazy():
    lm = lm_image(np.uint16)
    em = em_grid()
    eager = cl.warp(lm, TF, like=em)
    assert eager.dtype == np.uint16
    lazy_in = lm.copy(data=da.from_array(lm.values, chunks=(1, 60, 75)))
    lazy = cl.warp(lazy_in, TF, like=em)
    assert isinstance(lazy.data, da.Array)
    np.testing.assert_array_equal(lazy.values, eager.values)


def test_3d_warp():
    z, y, x = np.mgrid[0:20, 0:30, 0:40]
    vol = cl.as_image((x + 2 * y + 3 * z).astype(np.float32), pixel_size=(0.3, 0.1, 0.1), modality="LM")
    tf = T.Translation([0.2, 0.3, 0.6], source_frame="LM", target_frame="EM")
    like = cl.as_image(np.zeros((10, 10, 10), np.float32), pixel_size=0.1, origin=(1.5, 1.0, 1.0), modality="EM")
    out = cl.warp(vol, tf, like=like)
    # output point (x, y, z) comes from source point minus the shift
    xs, ys, zs = np.meshgrid(like.x.values - 0.2, like.y.values - 0.3, like.z.values - 0.6, indexing="xy")
    exp = xs / 0.1 + 2 * ys / 0.1 + 3 * zs / 0.3
    np.testing.assert_allclose(out.values, np.transpose(exp, (2, 0, 1)), atol=1e-3)


def test_attrs_rewritten_no_stale_transforms():
    lm = lm_image()
    to_stage = T.Rigid(0.5, [3.0, 4.0], source_frame="LM", target_frame="stage")
    lm = lm.clem.with_transform("stage", to_stage)
    out = cl.warp(lm, TF, like=em_grid())
    assert out.clem.frame == "EM" and out.attrs["clem:warped_from"] == "LM"
    p = np.array([[1003.0, 2004.0], [1001.5, 2002.2]])  # EM-frame points
    np.testing.assert_allclose(out.clem.transform_to("stage")(p), to_stage(TF.inverse(p)), atol=1e-9)
    np.testing.assert_allclose(out.clem.transform_to("LM")(p), TF.inverse(p), atol=1e-9)
    assert out.clem.transform_to("stage").source_frame == "EM"


def test_correlate_and_stack_channels():
    lm, em = lm_image(np.uint16), em_grid(np.uint8)
    reg = cl.register(cl.Landmarks.from_points(*(lambda s: (s, TF(s)))(np.random.default_rng(0).uniform(5, 15, (6, 2)))))
    corr = cl.correlate(em, lm, reg)
    assert set(corr.data_vars) == {"EM", "LM"}
    assert corr["LM"].dims == ("c", "y", "x") and corr.attrs["frame"] == "EM"
    np.testing.assert_allclose(corr["LM"].values, cl.warp(lm, TF, like=em).values, atol=1)
    st = cl.stack_channels(corr)
    assert list(st.c.values) == ["EM", "a", "b"] and st.dtype == np.uint16
    assert cl.is_image(st) and st.clem.frame == "EM"


def test_bad_input():
    lm, em = lm_image(), em_grid()
    with pytest.raises(ImageError, match="needs like="):
        cl.warp(lm, TF)
    vol = cl.as_image(np.zeros((3, 4, 5)), pixel_size=1)
    with pytest.raises(ImageError, match="2-D transform cannot map a 3-D image.*isel\\(z=k\\)"):
        cl.warp(vol, TF, like=em)
    with pytest.raises(ImageError, match="like: expected an xarray.DataArray"):
        cl.warp(lm, TF, like=np.zeros((3, 3)))
    with pytest.raises(ImageError, match="must be a clemlab Transform"):
        cl.warp(lm, np.eye(3), like=em)


def test_clemlab_correlate_stays_the_function_after_module_import():
    import subprocess
    import sys

    code = (
        "from clemlab.correlate import stack_channels\nimport clemlab, inspect\n"
        "assert inspect.isfunction(clemlab.correlate) and clemlab.correlate.__module__ == 'clemlab.correlate'\n"
        "assert inspect.isfunction(clemlab.warp) and clemlab.stack_channels is stack_channels\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

"""Faults of resampling and frames (issue 18, items 1, 3, 4, 5): each case a distinct bad or
unlucky input, asserting the right answer or the words of the refusal (problem and fix).

- frames: a transform applied to the image of the wrong frame, in warp, correlate,
  map_targets and Registration.map_points; frameless data keeps working;
- NaN: a NaN source pixel spoils only the output pixels whose kernel reaches it, for every
  order, and a warp gives the same bits for any chunking (hypothesis);
- near-singular transforms: refused with the range of the Jacobian determinant;
- fill values the dtype cannot hold: refused with the dtype and its range.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

import clemlab as cl
from clemlab import transforms as T
from clemlab.errors import ImageError, RegistrationError, TransformError
from clemlab.resample.spline import footprint_radius
from clemlab.targets import map_targets, stage_transform, targets_from_points

LM_TO_EM = T.Affine(np.array([[0.95, 0.12, 0.8], [-0.1, 1.02, -0.5], [0, 0, 1]]), source_frame="LM", target_frame="EM")


def _img(dtype=np.float32, shape=(60, 70), px=0.1, frame="LM", seed=0):
    data = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 2)
    data = (data - data.min()) / (data.max() - data.min()) * (200 if np.dtype(dtype).kind in "iu" else 1)
    return cl.as_image(data.astype(dtype), pixel_size=px, frame=frame)


@pytest.fixture(scope="module")
def sample():
    return cl.datasets.synthetic_clem_small(seed=0)


@pytest.fixture(scope="module")
def reg(sample):
    return cl.register(cl.Landmarks.from_points(sample.fiducials_lm, sample.fiducials_em,
                                                source_frame="LM", target_frame="EM"))


# -- item 1: frames -------------------------------------------------------------------------

def test_warp_refuses_em_image_with_lm_to_em_transform():
    lm, em = _img(frame="LM"), _img(np.uint16, (80, 90), 0.08, frame="EM")
    with pytest.raises(ImageError, match=r"maps frame 'LM' to 'EM'.*image is in frame 'EM' and like in frame 'LM'.*inverse"):
        cl.warp(em, LM_TO_EM, like=lm)
    # the fix the message names works
    out = cl.warp(em, LM_TO_EM.inverse, like=lm)
    assert out.attrs["frame"] == "LM"


def test_warp_refuses_image_of_an_unrelated_frame():
    with pytest.raises(ImageError, match=r"image is in frame 'FIB' but the transform maps from frame 'LM'"):
        cl.warp(_img(frame="FIB"), LM_TO_EM, like=_img(frame="EM"))


def test_warp_refuses_target_grid_of_another_frame():
    with pytest.raises(ImageError, match=r"like is in frame 'stage' but the transform maps into frame 'EM'"):
        cl.warp(_img(frame="LM"), LM_TO_EM, like=_img(frame="stage"))


def test_check_frames_false_warps_as_frameless_data():
    lm, em = _img(frame="LM"), _img(frame="EM")
    forced = cl.warp(em, LM_TO_EM, like=lm, check_frames=False).values
    plain = cl.warp(em.assign_attrs(frame=None), LM_TO_EM.with_frames(None, None), like=lm).values
    np.testing.assert_array_equal(forced, plain)


def test_frameless_images_and_transforms_are_never_refused():
    src = cl.as_image(np.arange(12.0).reshape(3, 4), pixel_size=1.0)  # no frame attr
    assert "frame" not in src.attrs
    out = cl.warp(src, T.Translation([1.0, 0.0]), like=src)  # transform without frames
    assert out.values[0].tolist() == [0.0, 0.0, 1.0, 2.0]
    # one side frameless: only the other is checked
    out = cl.warp(_img(frame="LM"), LM_TO_EM, like=cl.as_image(np.zeros((5, 5)), pixel_size=1.0))
    assert out.attrs["frame"] == "EM"


def test_frame_names_compare_without_case():
    out = cl.warp(_img(frame="lm"), LM_TO_EM, like=_img(frame="em"))  # NGFF coordinate systems are lower case
    assert out.shape == (60, 70)


def test_correlate_refuses_swapped_images(sample, reg):
    with pytest.raises(ImageError, match=r"em is in frame 'LM' and lm in frame 'EM'.*images are swapped.*EM image first"):
        cl.correlate(sample.lm, sample.em, reg)


def test_correlate_refuses_reversed_transform(sample, reg):
    with pytest.raises(ImageError, match=r"maps EM -> LM.*points the other way: pass transform.inverse"):
        cl.correlate(sample.em, sample.lm, reg.transform.inverse)
    with pytest.raises(ImageError, match=r"maps EM -> LM"):  # the LM grid too
        cl.correlate(sample.em, sample.lm, reg.transform.inverse, frame="LM")


def test_correlate_refuses_image_of_an_unrelated_frame(sample, reg):
    with pytest.raises(ImageError, match=r"lm is in frame 'FIB' but the transform maps from frame 'LM'"):
        cl.correlate(sample.em, sample.lm.assign_attrs(frame="FIB"), reg)


def test_map_points_refuses_points_already_mapped(reg):
    em_pts = reg.map_points([[10.0, 12.0], [20.0, 8.0]])
    assert em_pts.frame == "EM"
    with pytest.raises(RegistrationError, match=r"points are in frame 'EM' but the registration maps frame 'LM' to 'EM'.*transform.inverse"):
        reg.map_points(em_pts)
    again = reg.map_points(em_pts, check_frames=False)  # the escape
    np.testing.assert_allclose(np.asarray(again), reg.transform(np.asarray(em_pts)))


def test_map_points_refuses_a_table_of_another_frame(reg):
    table = pd.DataFrame({"x": [1.0, 2.0], "y": [3.0, 4.0]})
    table.attrs["frame"] = "FIB"
    with pytest.raises(RegistrationError, match=r"points are in frame 'FIB'.*maps frame 'LM' to 'EM'"):
        reg.map_points(table)
    plain = reg.map_points(table.to_numpy())  # plain arrays carry no frame
    np.testing.assert_allclose(np.asarray(plain), reg.transform(table.to_numpy()))


def test_map_targets_refuses_targets_in_the_em_frame(reg):
    t = targets_from_points([[10.0, 12.0]], frame="EM")
    with pytest.raises(RegistrationError, match=r"targets are in frame 'EM' but the registration maps frame 'LM' to 'EM'"):
        map_targets(reg, t)
    out = map_targets(reg, t, check_frames=False)
    np.testing.assert_allclose(out[["x", "y"]].to_numpy(), reg.transform(np.array([[10.0, 12.0]])))


def test_map_targets_refuses_the_lm_image_as_em(reg, sample):
    t = targets_from_points([[10.0, 12.0]])
    with pytest.raises(RegistrationError, match=r"em is in frame 'LM' but the registration maps frame 'LM' to 'EM'"):
        map_targets(reg, t, em=sample.lm)


def test_map_targets_refuses_a_stage_transform_of_the_lm_image(reg, sample):
    t = targets_from_points([[10.0, 12.0]])
    stage = stage_transform(sample.lm, T.Affine(np.array([[2.0, 0.0, 100.0], [0.0, 2.0, 50.0], [0, 0, 1]])))
    with pytest.raises(RegistrationError, match=r"stage transform maps from frame 'LM'.*from the EM image of frame 'EM'"):
        map_targets(reg, t, stage=stage)


# -- item 5: fill values ----------------------------------------------------------------------

@pytest.mark.parametrize("dtype, fill, words", [
    (np.uint16, -1, r"fill=-1 does not fit the image's dtype uint16 \(whole numbers from 0 to 65535\)"),
    (np.uint8, 300, r"fill=300 does not fit the image's dtype uint8 \(whole numbers from 0 to 255\)"),
    (np.int16, float("nan"), r"fill=nan does not fit the image's dtype int16 \(whole numbers from -32768 to 32767\)"),
    (np.uint8, 0.5, r"fill=0.5 does not fit the image's dtype uint8"),
    (np.int32, float("inf"), r"fill=inf does not fit the image's dtype int32"),
    (np.float32, 1e39, r"fill=1e\+39 does not fit the image's dtype float32 \(magnitude up to 3.403e\+38\)"),
    (np.uint16, True, None),  # a bool is 1: fits
])
def test_fill_outside_the_dtype_range_is_refused(dtype, fill, words):
    src = _img(dtype, frame=None)
    tf = T.Translation([100.0, 0.0])  # everything maps outside: all fill
    if words is None:
        with pytest.warns(UserWarning, match="outside the source image"):
            assert np.all(cl.warp(src, tf, like=src, fill=fill).values == 1)
        return
    with pytest.raises(ImageError, match=words):
        cl.warp(src, tf, like=src, fill=fill)


def test_fill_at_the_dtype_limits_and_nan_on_floats_is_exact():
    src = _img(np.uint16, frame=None)
    shift = T.Translation([2.0, 0.0])  # 20 px to the right: the first 20 columns are outside
    out = cl.warp(src, shift, like=src, fill=65535).values
    assert np.all(out[:, :19] == 65535)
    out = cl.warp(_img(np.float32, frame=None), shift, like=src, fill=float("nan")).values
    assert np.all(np.isnan(out[:, :19])) and not np.isnan(out[:, 21:]).any()


def test_fill_that_is_not_a_number_is_refused():
    src = _img(frame=None)
    with pytest.raises(ImageError, match="fill must be a number, got 'black'"):
        cl.warp(src, T.Translation([1.0, 0.0]), like=src, fill="black")
    with pytest.raises(ImageError, match="fill must be a number"):
        cl.warp(src, T.Translation([1.0, 0.0]), like=src, fill=[0, 0])


# -- item 4: near-singular transforms -----------------------------------------------------------

def test_tiny_scale_is_refused_with_the_jacobian_range():
    tf = T.Affine(np.diag([1e-6, 1e-6, 1.0]), source_frame="LM", target_frame="EM")
    with pytest.raises(ImageError, match=r"scales µm by 1e-06 to 1e-06: its Jacobian determinant ranges from 1e-12 to 1e-12"):
        cl.warp(_img(frame="LM"), tf, like=_img(frame="EM"))


def test_huge_scale_is_refused():
    tf = T.Similarity(1e4, 0.0, [0.0, 0.0], source_frame="LM", target_frame="EM")
    with pytest.raises(ImageError, match=r"Jacobian determinant ranges from 1e\+08 to 1e\+08.*check the units"):
        cl.warp(_img(frame="LM"), tf, like=_img(frame="EM"))


def test_nearly_collapsed_axis_is_refused():
    tf = T.Affine(np.diag([1.0, 1e-5, 1.0]), source_frame="LM", target_frame="EM")
    with pytest.raises(ImageError, match=r"collapses an axis: its Jacobian determinant ranges from 1e-05 to 1e-05.*differ by 1e\+05x"):
        cl.warp(_img(frame="LM"), tf, like=_img(frame="EM"))


def test_exactly_collapsed_axis_is_refused_before_warp():
    with pytest.raises(TransformError, match="singular"):
        T.Affine(np.diag([1.0, 0.0, 1.0]))


def _grid_landmarks():
    g = np.stack(np.meshgrid(np.linspace(0.5, 5.5, 4), np.linspace(0.5, 5.5, 4)), -1).reshape(-1, 2)
    return g


def test_folded_thin_plate_spline_is_refused():
    src = _grid_landmarks()
    dst = src.copy()
    dst[[5, 6]] = dst[[6, 5]]  # two neighbours swapped: the spline folds between them
    tps = T.ThinPlateSpline.from_estimate(src, dst).with_frames("LM", "EM")
    with pytest.raises(ImageError, match=r"folds the image over itself: its Jacobian determinant ranges from -[0-9.e+]+ to [0-9.e+]+ .*changes sign"):
        cl.warp(_img(frame="LM"), tps, like=_img(frame="EM"))


def test_smooth_spline_and_uniform_mirror_are_accepted():
    src = _grid_landmarks()
    dst = src + np.random.default_rng(0).normal(0, 0.03, src.shape)
    tps = T.ThinPlateSpline.from_estimate(src, dst).with_frames("LM", "EM")
    assert cl.warp(_img(frame="LM"), tps, like=_img(frame="EM")).shape == (60, 70)
    # a mirror (determinant -1 everywhere) is a valid registration: x -> 6.9 - x
    img = _img(np.float64, frame="LM")
    flip = T.Affine(np.array([[-1.0, 0, 6.9], [0, 1, 0], [0, 0, 1]]), source_frame="LM", target_frame="EM")
    out = cl.warp(img, flip, like=img.assign_attrs(frame="EM"), order=0).values
    np.testing.assert_array_equal(out, img.values[:, ::-1])


# -- item 3: NaN --------------------------------------------------------------------------------

AFFINE_PX = T.Affine(np.array([[0.93, 0.21, 2.3], [-0.17, 1.04, -1.6], [0, 0, 1]]))


def _reach(shape_out, tf, src, nan_rc, radius):
    """Output pixels whose source position lies within ``radius`` px (per axis) of ``nan_rc``."""
    yy, xx = np.meshgrid(np.arange(shape_out[0], dtype=float), np.arange(shape_out[1], dtype=float), indexing="ij")
    p = tf.inverse(np.c_[xx.ravel(), yy.ravel()])  # pixel size 1, origin 0: µm = px
    near = (np.abs(p[:, 1] - nan_rc[0]) <= radius) & (np.abs(p[:, 0] - nan_rc[1]) <= radius)
    return near.reshape(shape_out)


@pytest.mark.parametrize("dtype, order", [(np.float32, 0), (np.float32, 1), (np.float64, 1),
                                          (np.float64, 2), (np.float32, 3), (np.float64, 5)])
def test_nan_spoils_only_the_pixels_its_kernel_reaches(dtype, order):
    data = _img(np.float64, (90, 100), 1.0, frame=None).values
    nan_rc = (40, 47)
    holed = data.copy()
    holed[nan_rc] = np.nan
    filled = data.copy()
    filled[nan_rc] = 0.0
    like = cl.as_image(np.zeros((80, 90)), pixel_size=1.0)
    kw = dict(like=like, order=order, chunks=(23, 31))
    out = cl.warp(cl.as_image(holed.astype(dtype), pixel_size=1.0), AFFINE_PX, **kw).values
    ref = cl.warp(cl.as_image(filled.astype(dtype), pixel_size=1.0), AFFINE_PX, **kw).values
    bad = np.isnan(out)
    assert bad.any(), "the NaN must show where it is used"
    assert not (bad & ~_reach(out.shape, AFFINE_PX, None, nan_rc, footprint_radius(order) + 0.5)).any()
    # pixels that do not reach the NaN are exactly those of the image without it
    np.testing.assert_array_equal(out[~bad], ref[~bad])
    # every pixel whose interpolation weights the NaN pixel is spoiled
    spike = np.zeros_like(data)
    spike[nan_rc] = 1.0
    weight = cl.warp(cl.as_image(spike, pixel_size=1.0), AFFINE_PX, like=like, order=min(order, 1)).values
    assert not (~bad & (weight > 1e-9)).any() if order <= 1 else bad[weight > 0.5].all()


def test_nan_at_the_image_corner_stays_in_the_corner():
    data = _img(np.float64, (50, 50), 1.0, frame=None).values
    data[0, 0] = np.nan
    src = cl.as_image(data, pixel_size=1.0)
    out = cl.warp(src, T.Identity(ndim=2), like=src, order=3).values
    r = footprint_radius(3)
    assert np.isnan(out[0, 0]) and not np.isnan(out[r + 1 :, :]).any() and not np.isnan(out[:, r + 1 :]).any()


def test_all_nan_source_gives_nan_inside_and_fill_outside():
    src = cl.as_image(np.full((40, 40), np.nan, np.float32), pixel_size=1.0)
    out = cl.warp(src, T.Translation([20.0, 0.0]), like=src, fill=-5.0).values
    assert np.all(out[:, :19] == -5.0) and np.all(np.isnan(out[:, 21:]))


# -- lazy == eager, bit for bit -----------------------------------------------------------------

def _chunking(draw, n):
    """Random chunk sizes along an axis of n px (1 to n)."""
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=4)))
    edges = [0, *cuts, n]
    return tuple(b - a for a, b in zip(edges, edges[1:]))


@st.composite
def warp_cases(draw):
    order = draw(st.sampled_from([0, 1, 2, 3, 5]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = (draw(st.integers(12, 40)), draw(st.integers(12, 40)))
    nans = draw(st.lists(st.tuples(st.integers(0, shape[0] - 1), st.integers(0, shape[1] - 1)), max_size=3))
    angle = draw(st.floats(-0.6, 0.6))
    scale = draw(st.floats(0.7, 1.4))
    shift = (draw(st.floats(-5, 5)), draw(st.floats(-5, 5)))
    out_shape = (draw(st.integers(8, 36)), draw(st.integers(8, 36)))
    return dict(order=order, dtype=dtype, shape=shape, nans=nans, tf=T.Similarity(scale, angle, shift),
                in_chunks=(_chunking(draw, shape[0]), _chunking(draw, shape[1])),
                out_chunks=(_chunking(draw, out_shape[0]), _chunking(draw, out_shape[1])), out_shape=out_shape)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(warp_cases())
def test_lazy_equals_eager_bit_for_bit_under_nan_and_any_chunking(case):
    data = np.random.default_rng(len(case["nans"])).random(case["shape"]).astype(case["dtype"])
    for rc in case["nans"]:
        data[rc] = np.nan
    like = cl.as_image(np.zeros(case["out_shape"]), pixel_size=1.0)
    eager_src = cl.as_image(data, pixel_size=1.0)
    lazy_src = cl.as_image(da.from_array(data, chunks=case["in_chunks"]), pixel_size=1.0)
    kw = dict(like=like, order=case["order"], fill=0.0)
    eager = cl.warp(eager_src, case["tf"], chunks=case["out_shape"], **kw).values  # one output chunk
    lazy = cl.warp(lazy_src, case["tf"], chunks=case["out_shape"], **kw).values
    np.testing.assert_array_equal(lazy, eager)  # any source chunking
    rechunked = cl.warp(lazy_src, case["tf"], chunks=case["out_chunks"], **kw).values
    np.testing.assert_array_equal(rechunked, eager)  # any output chunking


@st.composite
def integer_warp_cases(draw):
    """OpenCV's fixed-point kernels (uint8, uint16; orders 0 and 1) on images larger than its
    output tiles, affine and projective, chunked anyhow."""
    shape = (draw(st.integers(300, 700)), draw(st.integers(300, 700)))
    out_shape = (draw(st.integers(300, 1100)), draw(st.integers(300, 1100)))
    angle, scale = draw(st.floats(-3.2, 3.2)), draw(st.floats(0.6, 1.6))
    shift = (draw(st.floats(-50, 50)), draw(st.floats(-50, 50)))
    tf = T.Similarity(scale, angle, shift)
    if draw(st.booleans()):
        h = np.eye(3)
        h[:2, :] = tf.matrix[:2, :]
        h[2, :2] = (draw(st.floats(-2e-4, 2e-4)), draw(st.floats(-2e-4, 2e-4)))
        tf = T.Projective(h)
    return dict(order=draw(st.sampled_from([0, 1])), dtype=draw(st.sampled_from([np.uint8, np.uint16])),
                shape=shape, tf=tf, out_shape=out_shape,
                in_chunks=(_chunking(draw, shape[0]), _chunking(draw, shape[1])),
                out_chunks=(_chunking(draw, out_shape[0]), _chunking(draw, out_shape[1])))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(integer_warp_cases())
def test_opencv_fixed_point_kernels_give_the_same_bits_for_any_chunking(case):
    info = np.iinfo(case["dtype"])
    data = np.random.default_rng(1).integers(0, int(info.max) + 1, case["shape"]).astype(case["dtype"])
    like = cl.as_image(np.zeros(case["out_shape"], np.uint8), pixel_size=1.0)
    kw = dict(like=like, order=case["order"], fill=7)
    whole = cl.warp(cl.as_image(data, pixel_size=1.0), case["tf"], chunks=case["out_shape"], **kw).values
    lazy_src = cl.as_image(da.from_array(data, chunks=case["in_chunks"]), pixel_size=1.0)
    rechunked = cl.warp(lazy_src, case["tf"], chunks=case["out_chunks"], **kw).values
    np.testing.assert_array_equal(rechunked, whole)

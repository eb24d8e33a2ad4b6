"""Contract tests for every transform model in 2-D and 3-D, plus axis/pixel helpers."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import skimage.transform as skt
from scipy.spatial.transform import Rotation

from clemlab import transforms as T
from clemlab.errors import RegistrationError, TransformError

MODELS = [T.Identity, T.Translation, T.Rigid, T.Similarity, T.Affine]
NDIMS = [2, 3]


def random_transform(cls, ndim, rng):
    """A non-trivial instance of ``cls`` in ``ndim`` dims."""
    rot = (
        T._rotation_2d(rng.uniform(-np.pi, np.pi))
        if ndim == 2
        else Rotation.random(random_state=int(rng.integers(1 << 30))).as_matrix()
    )
    t = rng.uniform(-50, 50, ndim)
    if cls is T.Identity:
        return T.Identity(ndim=ndim)
    if cls is T.Translation:
        return T.Translation(t)
    if cls is T.Rigid:
        return T.Rigid(rot, t)
    if cls is T.Similarity:
        return T.Similarity(rng.uniform(0.3, 3), rot, t)
    m = np.eye(ndim + 1)
    m[:ndim, :ndim] = rot @ np.diag(rng.uniform(0.5, 2, ndim)) + rng.normal(0, 0.1, (ndim, ndim))
    m[:ndim, ndim] = t
    return T.Affine(matrix=m)


@pytest.fixture(params=[(c, d) for c in MODELS for d in NDIMS], ids=lambda p: f"{p[0].__name__}-{p[1]}d")
def model(request):
    return request.param


def test_inverse_of_inverse(model):
    cls, d = model
    rng = np.random.default_rng(1)
    tf = random_transform(cls, d, rng)
    pts = rng.uniform(-100, 100, (20, d))
    np.testing.assert_allclose(tf.inverse.inverse(pts), tf(pts), atol=1e-12)
    assert type(tf.inverse) is cls


def test_then_inverse_is_identity(model):
    cls, d = model
    rng = np.random.default_rng(2)
    tf = random_transform(cls, d, rng)
    ident = tf.then(tf.inverse)
    np.testing.assert_allclose(ident.matrix, np.eye(d + 1), atol=1e-12)
    pts = rng.uniform(-100, 100, (20, d))
    np.testing.assert_allclose(ident(pts), pts, atol=1e-12)


def test_to_dict_round_trip_exact(model):
    cls, d = model
    tf = random_transform(cls, d, np.random.default_rng(3)).with_frames("LM", "EM")
    again = T.transform_from_dict(json.loads(json.dumps(tf.to_dict())))
    assert again == tf
    assert type(again) is cls and again.source_frame == "LM" and again.target_frame == "EM"
    assert np.array_equal(again.matrix, tf.matrix)


def test_estimation_recovers_exactly(model):
    cls, d = model
    rng = np.random.default_rng(4)
    tf = random_transform(cls, d, rng)
    src = rng.uniform(-100, 100, (max(cls.min_points[d], 1) + 5, d))
    est = cls.from_estimate(src, tf(src))
    assert est, getattr(est, "reason", "")
    assert type(est) is cls
    np.testing.assert_allclose(est.matrix, tf.matrix, atol=1e-9)


def test_estimation_from_minimum_points(model):
    cls, d = model
    if cls is T.Identity:
        pytest.skip("identity has no parameters")
    rng = np.random.default_rng(5)
    tf = random_transform(cls, d, rng)
    src = rng.uniform(-100, 100, (cls.min_points[d], d))
    est = cls.from_estimate(src, tf(src))
    np.testing.assert_allclose(est.matrix, tf.matrix, atol=1e-8)
    fewer = cls.from_estimate(src[:-1], tf(src[:-1]))
    assert not fewer
    assert f"at least {cls.min_points[d]}" in fewer.reason


SKIMAGE = {T.Rigid: skt.EuclideanTransform, T.Similarity: skt.SimilarityTransform, T.Affine: skt.AffineTransform}


@pytest.mark.parametrize("d", NDIMS)
@pytest.mark.parametrize("cls", list(SKIMAGE), ids=lambda c: c.__name__)
def test_agrees_with_scikit_image(cls, d):
    rng = np.random.default_rng(6)
    tf = random_transform(cls, d, rng)
    src = rng.uniform(-100, 100, (15, d))
    dst = tf(src)
    if cls is not T.Affine:
        # Umeyama is the least-squares optimum for rigid/similarity: noisy points must agree too.
        # (scikit-image's affine fit is a homogeneous (DLT) solve, which equals least squares
        # only for noise-free points.)
        dst = dst + rng.normal(0, 0.5, dst.shape)
    ours = cls.from_estimate(src, dst)
    ref = SKIMAGE[cls].from_estimate(src, dst)
    assert ref
    np.testing.assert_allclose(ours.matrix, ref.params, atol=1e-9, rtol=0)


def test_weighted_affine_matches_scikit_image_and_weights_matter():
    rng = np.random.default_rng(7)
    tf = random_transform(T.Affine, 2, rng)
    src = rng.uniform(-100, 100, (12, 2))
    w = rng.uniform(0.1, 5, 12)
    np.testing.assert_allclose(
        T.Affine.from_estimate(src, tf(src), weights=w).matrix,
        skt.AffineTransform.from_estimate(src, tf(src), weights=w).params,
        atol=1e-9,
    )
    # an outlier with weight ~0 is ignored; with weight 1 it pulls the fit
    dst = tf(src)
    dst[0] += 30
    w = np.ones(12)
    w[0] = 1e-12
    assert np.abs(T.Affine.from_estimate(src, dst, weights=w).matrix - tf.matrix).max() < 1e-6
    assert np.abs(T.Affine.from_estimate(src, dst).matrix - tf.matrix).max() > 1e-2


def test_weighted_affine_is_weighted_least_squares():
    """Against an independent solve: scipy.optimize.least_squares on the weighted residuals."""
    from scipy.optimize import least_squares

    rng = np.random.default_rng(8)
    src = rng.uniform(-10, 10, (10, 2))
    dst = src @ [[1.2, 0.1], [0.3, 0.8]] + rng.normal(0, 0.3, (10, 2))
    w = rng.uniform(0.5, 3, 10)

    def res(p):
        m = p.reshape(2, 3)
        return ((src @ m[:, :2].T + m[:, 2] - dst) * np.sqrt(w)[:, None]).ravel()

    ref = least_squares(res, np.r_[1, 0, 0, 0, 1, 0.0], xtol=1e-15, ftol=1e-15, gtol=1e-15).x
    np.testing.assert_allclose(T.Affine.from_estimate(src, dst, weights=w).matrix[:2], ref.reshape(2, 3), atol=1e-8)


def test_rigid_reflection_is_explicit():
    rng = np.random.default_rng(9)
    src = rng.uniform(-10, 10, (8, 2))
    mirror = T.Affine(matrix=[[1, 0, 0], [0, -1, 0], [0, 0, 1]])
    dst = mirror(src)
    proper = T.Rigid.from_estimate(src, dst)
    assert np.linalg.det(proper.rotation) > 0
    assert proper.residuals(src, dst).max() > 1  # a rotation cannot explain a mirror
    mirrored = T.Rigid.from_estimate(src, dst, allow_reflection=True)
    assert np.linalg.det(mirrored.rotation) < 0
    assert mirrored.residuals(src, dst).max() < 1e-9


def test_composition_class_and_frames():
    a = T.Rigid(0.3, [1, 2], source_frame="LM", target_frame="stage")
    b = T.Similarity(2, 0.1, [0, 1], source_frame="stage", target_frame="EM")
    c = a.then(b)
    assert type(c) is T.Similarity and c.source_frame == "LM" and c.target_frame == "EM"
    pts = np.array([[1.0, 2.0], [3.0, -4.0]])
    np.testing.assert_allclose(c(pts), b(a(pts)), atol=1e-12)
    with pytest.raises(TransformError, match="ends in frame 'stage'.*starts in frame 'LM'"):
        a.then(a)
    comp = T.Composite([a, b])
    np.testing.assert_allclose(comp(pts), c(pts), atol=1e-12)
    np.testing.assert_allclose(comp.inverse(comp(pts)), pts, atol=1e-12)
    assert T.transform_from_dict(json.loads(json.dumps(comp.to_dict()))) == comp


def test_immutable():
    tf = T.Affine(matrix=np.eye(3))
    with pytest.raises(AttributeError, match="immutable"):
        tf.foo = 1
    with pytest.raises(ValueError):
        tf.matrix[0, 0] = 2


def test_point_and_pixel_helpers():
    pts = np.array([[1.0, 2.0, 3.0]])
    assert T.xy_to_rc(pts).tolist() == [[3.0, 2.0, 1.0]]
    assert T.rc_to_xy(T.xy_to_rc(pts)).tolist() == pts.tolist()
    size, origin = np.array([0.01, 0.02, 0.2]), np.array([5.0, -3.0, 1.0])
    pix = T.physical_to_pixel(pts, size, origin)
    np.testing.assert_allclose(T.pixel_to_physical(pix, size, origin), pts, atol=1e-12)
    m = T.index_to_physical_matrix(size, origin)
    idx = np.array([4.0, 7.0, 9.0])  # (z, y, x)
    np.testing.assert_allclose((m @ np.r_[idx, 1])[:3], origin + size * idx[::-1])


@pytest.mark.parametrize(
    "src, dst, cls, message",
    [
        ([[0, 0], [1, 1]], [[0, 0], [1, 1]], T.Affine, "at least 3 point pairs, got 2"),
        ([[0, 0], [1, 1], [2, 2], [3, 3]], [[0, 0], [1, 0], [2, 1], [0, 3]], T.Affine, "collinear"),
        ([[0, 0], [1, np.nan], [2, 0]], [[0, 0], [1, 1], [2, 2]], T.Affine, r"pairs \[1\] contain NaN"),
        ([[0, 0], [1, 1], [2, 0]], [[0, 0], [1, np.inf], [2, 2]], T.Rigid, "NaN or infinite"),
        ([[1, 1], [1, 1], [1, 1]], [[0, 0], [1, 1], [2, 2]], T.Similarity, "same position"),
        ([[0, 0, 0], [1, 1, 1], [2, 2, 2]], [[0, 0, 0], [1, 1, 1], [2, 2, 2]], T.Rigid, "one line"),
        ([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], [[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], T.Affine, "coplanar"),
    ],
)
def test_bad_data_gives_failed_estimation(src, dst, cls, message):
    res = cls.from_estimate(np.array(src, float), np.array(dst, float))
    assert not res
    assert isinstance(res, T.FailedEstimation)
    assert re.search(message, res.reason), res.reason
    with pytest.raises(RegistrationError, match=message):
        res([[0, 0]])


def test_programmer_errors_raise():
    with pytest.raises(TransformError, match="same shape"):
        T.Affine.from_estimate(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(TransformError, match=r"\(N, 2\) or \(N, 3\)"):
        T.Affine(matrix=np.eye(3))(np.zeros((4, 5)))
    with pytest.raises(TransformError, match="3x3"):
        T.Affine(matrix=np.eye(5))
    with pytest.raises(TransformError, match="not a rotation"):
        T.Rigid(matrix=[[2, 0, 0], [0, 1, 0], [0, 0, 1]])
    with pytest.raises(TransformError, match="unknown transform type 'Warp'"):
        T.transform_from_dict({"type": "Warp"})
    with pytest.raises(TransformError, match="malformed Affine"):
        T.transform_from_dict({"type": "Affine", "ndim": 2})

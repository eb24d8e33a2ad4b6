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
from clemlab.transforms.polynomial import monomial_exponents
from clemlab.transforms.rotations import rotation_matrix_2d, rotvec_to_matrix

MODELS = [T.Identity, T.Translation, T.Rigid, T.Similarity, T.Affine]
NDIMS = [2, 3]


def random_transform(cls, ndim, rng):
    """A non-trivial instance of ``cls`` in ``ndim`` dims."""
    rot = (
        rotation_matrix_2d(rng.uniform(-np.pi, np.pi))
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


@pytest.mark.parametrize("name", sorted(T.MODELS))
def test_n_params_one_signature_counts_the_parameter_jacobian(name):
    """Every model counts its parameters as ``n_params(ndim, n_points=, **options)`` with the
    options its estimation takes; the count is the width of the fitted model's parameter
    Jacobian (the thin-plate spline: one coefficient per landmark and axis)."""
    cls = T.MODELS[name]
    rng = np.random.default_rng(17)
    cases = {"polynomial": [(2, {"order": 2}), (2, {"order": 3})],
             "rigid-projection": [(3, {"axial_scale": True}), (3, {"axial_scale": 0.9})],
             "rigid": [(2, {"allow_reflection": True}), (3, {})],
             "similarity": [(2, {}), (3, {"allow_reflection": False})],
             "tps": [(2, {"smoothing": 0.1}), (3, {"bigwarp": True})]}.get(name, [(2, {}), (3, {})])
    for d, options in cases:
        n = 30
        src = rng.uniform(0, 30, (n, d))
        if name == "rigid-projection":
            dst = T.RigidProjection(Rotation.random(random_state=4).as_matrix(), 1.1, [2.0, 3.0], 0.9)(src)
        else:
            dst = src @ (np.eye(d) + rng.normal(0, 0.05, (d, d))).T + rng.normal(0, 0.1, (n, d)) + 5
        tf = cls.from_estimate(src, dst, **options)
        assert tf, tf
        p = cls.n_params(d, n_points=n, **options)
        if name == "tps":
            assert p == d * n
        else:
            assert tf.param_jacobian(src[:4]).shape == (4, tf.ndim_out, p)
        with pytest.raises(TypeError, match="unexpected options"):
            cls.n_params(d, n_points=n, **options, no_such_option=1)
        with pytest.raises(TypeError, match="unexpected options"):
            cls.from_estimate(src, dst, **options, no_such_option=1)


# ---------------------------------------------------------------------------------------
# projective, polynomial, thin-plate spline
# ---------------------------------------------------------------------------------------
def _homography(rng, d=2):
    m = np.eye(d + 1)
    m[:d, :d] = rotation_matrix_2d(rng.uniform(-3, 3)) * rng.uniform(0.5, 2) if d == 2 else Rotation.random(
        random_state=int(rng.integers(1000))).as_matrix()
    m[:d, d] = rng.uniform(-20, 20, d)
    m[d, :d] = rng.uniform(-2e-3, 2e-3, d)
    return T.Projective(matrix=m)


def _smooth_warp(rng, d=2):
    """A genuinely non-linear ground truth: affine plus a smooth sinusoidal bend."""
    a = random_transform(T.Affine, d, rng)
    amp = rng.uniform(0.5, 2, d)

    def f(p):
        p = np.asarray(p, float)
        return a(p) + amp * np.sin(p[:, ::-1] / 30.0)

    return f


@pytest.mark.parametrize("d", NDIMS)
def test_projective_contract(d):
    rng = np.random.default_rng(10)
    tf = _homography(rng, d)
    src = rng.uniform(-50, 50, (T.Projective.min_points[d] + 6, d))
    est = T.Projective.from_estimate(src, tf(src))
    np.testing.assert_allclose(est.matrix, tf.matrix, atol=1e-9)
    np.testing.assert_allclose(tf.inverse(tf(src)), src, atol=1e-9)
    assert type(tf.then(T.Affine(matrix=np.eye(d + 1)))) is T.Projective
    np.testing.assert_allclose(tf.then(tf.inverse).matrix, np.eye(d + 1), atol=1e-12)
    assert T.transform_from_dict(json.loads(json.dumps(tf.to_dict()))) == tf
    if d == 2:
        ref = skt.ProjectiveTransform.from_estimate(src, tf(src))
        np.testing.assert_allclose(est.matrix, ref.params / ref.params[2, 2], atol=1e-9)
    mini = T.Projective.from_estimate(src[: T.Projective.min_points[d]], tf(src[: T.Projective.min_points[d]]))
    np.testing.assert_allclose(mini(src), tf(src), atol=1e-8)


def test_projective_refinement_minimises_geometric_error():
    from scipy.optimize import least_squares

    rng = np.random.default_rng(11)
    tf = _homography(rng)
    src = rng.uniform(-50, 50, (15, 2))
    dst = tf(src) + rng.normal(0, 0.3, (15, 2))
    est = T.Projective.from_estimate(src, dst)

    def res(p):
        return (T.Projective(matrix=np.append(p, 1).reshape(3, 3))(src) - dst).ravel()

    ref = least_squares(res, tf.matrix.ravel()[:-1], method="lm", xtol=1e-15, ftol=1e-15)
    assert np.sum(res(est.matrix.ravel()[:-1]) ** 2) <= np.sum(ref.fun**2) * (1 + 1e-9)


@pytest.mark.parametrize("order", [2, 3])
def test_polynomial_contract(order):
    rng = np.random.default_rng(12)
    m = len(monomial_exponents(order))
    coef = rng.normal(0, 1, (2, m)) * 0.05
    coef[0, 0], coef[1, 0], coef[0, 1], coef[1, 2] = 100.0, -40.0, 20.0, 20.0
    tf = T.Polynomial(coef, order, centre=(1e4, 2e4), scale=50.0)  # stage-like coordinates
    src = rng.uniform(-50, 50, (m + 10, 2)) + (1e4, 2e4)
    est = T.Polynomial.from_estimate(src, tf(src), order=order)
    np.testing.assert_allclose(est(src), tf(src), atol=1e-8)
    q = rng.uniform(-40, 40, (50, 2)) + (1e4, 2e4)
    np.testing.assert_allclose(est(q), tf(q), atol=1e-8)
    np.testing.assert_allclose(tf.inverse(tf(q)), q, atol=1e-9)
    assert T.transform_from_dict(json.loads(json.dumps(tf.to_dict()))) == tf
    inv = T.transform_from_dict(json.loads(json.dumps(tf.inverse.to_dict())))
    np.testing.assert_allclose(inv(tf(q)), q, atol=1e-9)
    np.testing.assert_allclose(tf.then(tf.inverse)(q), q, atol=1e-9)
    ref = skt.PolynomialTransform.from_estimate(src - (1e4, 2e4), tf(src), order=order)
    np.testing.assert_allclose(ref(q - (1e4, 2e4)), est(q), atol=1e-6)
    few = T.Polynomial.from_estimate(src[: m - 1], tf(src[: m - 1]), order=order)
    assert not few and f"at least {m} point pairs" in few.reason


@pytest.mark.parametrize("d", NDIMS)
def test_tps_contract(d):
    rng = np.random.default_rng(13)
    f = _smooth_warp(rng, d)
    src = rng.uniform(0, 100, (25, d))
    tps = T.ThinPlateSpline.from_estimate(src, f(src))
    np.testing.assert_allclose(tps(src), f(src), atol=1e-9)  # exact interpolation
    # inverse accurate to 1e-6 px (1 px = 0.1 µm here) inside the landmark hull
    from scipy.spatial import Delaunay

    q = rng.uniform(0, 100, (400, d))
    q = q[Delaunay(src).find_simplex(q) >= 0]
    assert len(q) > 50
    np.testing.assert_allclose(tps.inverse(tps(q)), q, atol=1e-7)
    np.testing.assert_allclose(tps.then(tps.inverse)(q), q, atol=1e-7)
    # analytic Jacobian against finite differences
    eps = 1e-5
    num = np.stack([(tps(q[:5] + eps * e) - tps(q[:5] - eps * e)) / (2 * eps) for e in np.eye(d)], axis=2)
    np.testing.assert_allclose(tps.jacobian(q[:5]), num, atol=1e-6)
    again = T.transform_from_dict(json.loads(json.dumps(tps.to_dict())))
    assert again == tps
    np.testing.assert_array_equal(again(q), tps(q))
    np.testing.assert_allclose(T.transform_from_dict(tps.inverse.to_dict())(tps(q)), q, atol=1e-7)
    # an affine map is reproduced exactly by the spline's affine part
    a = random_transform(T.Affine, d, rng)
    np.testing.assert_allclose(T.ThinPlateSpline.from_estimate(src, a(src))(q), a(q), atol=1e-8)
    few = T.ThinPlateSpline.from_estimate(src[:d], f(src[:d]))
    assert not few and f"at least {d + 1} point pairs" in few.reason


def test_tps_agrees_with_scikit_image():
    rng = np.random.default_rng(14)
    f = _smooth_warp(rng)
    src = rng.uniform(0, 100, (20, 2))
    ours = T.ThinPlateSpline.from_estimate(src, f(src))
    ref = skt.ThinPlateSplineTransform.from_estimate(src, f(src))
    q = rng.uniform(-10, 110, (200, 2))
    # scikit-image solves the unnormalised system: it misses its own landmarks by ~6e-6 µm,
    # while ours interpolates them to 1e-12; agreement is limited by that
    assert np.abs(ref(src) - f(src)).max() < 1e-4 and np.abs(ours(src) - f(src)).max() < 1e-10
    np.testing.assert_allclose(ours(q), ref(q), atol=1e-4)


def test_tps_blocked_evaluation_matches_the_dense_formula():
    """Many points go through the kernel sums in blocks with per-thread scratch arrays: blocks
    that end mid-array, splines of other sizes and dimensions in turn, and another thread
    must all give the dense ``f(p) = a + A u + sum_i w_i U(|u - c_i|)`` (from the spline's
    serialised parameters), and its derivative."""
    import threading

    rng = np.random.default_rng(16)

    def dense(tps, p):
        d = tps.to_dict()
        centre, scale = np.array(d["centre"]), d["scale"]
        affine, weights = np.array(d["affine"]), np.array(d["weights"])
        u = (p - centre) / scale
        c = (np.array(d["controls"]) - centre) / scale
        d2 = ((u[:, None, :] - c[None, :, :]) ** 2).sum(-1)
        k = np.where(d2 > 0, 0.5 * d2 * np.log(np.where(d2 > 0, d2, 1.0)), 0.0)
        return k @ weights + u @ affine[1:] + affine[0]

    splines = []
    for n, d in ((50, 2), (7, 2), (30, 3)):
        src = rng.uniform(0, 100, (n, d))
        splines.append(T.ThinPlateSpline.from_estimate(src, src + rng.normal(0, 2, (n, d))))

    def dense_jacobian(tps, p, h=1e-5):  # central differences of the dense formula, (P, K, J)
        cols = [(dense(tps, p + e) - dense(tps, p - e)) / (2 * h) for e in np.eye(p.shape[1]) * h]
        return np.stack(cols, axis=-1)

    for tps in splines + splines[:1]:
        # a prime number of points: several blocks of any size, the last one partial
        p = rng.uniform(-10, 110, (5003, tps.ndim))
        p[5] = tps.controls[3]  # r = 0 exactly: U(0) = 0
        np.testing.assert_allclose(tps(p), dense(tps, p), rtol=0, atol=1e-9)
        # the Jacobian's kernel sums (several weight columns: smaller blocks), r = 0 included
        np.testing.assert_allclose(tps.jacobian(p), dense_jacobian(tps, p), rtol=0, atol=1e-5)
    got = {}
    worker = threading.Thread(target=lambda: got.setdefault("p", splines[1](p[:, :2])))
    worker.start()
    worker.join()
    np.testing.assert_allclose(got["p"], dense(splines[1], p[:, :2]), rtol=0, atol=1e-9)


def test_tps_smoothing_and_bad_input():
    rng = np.random.default_rng(15)
    src = rng.uniform(0, 100, (30, 2))
    dst = src + rng.normal(0, 1, src.shape)
    smooth = T.ThinPlateSpline.from_estimate(src, dst, smoothing=1.0)
    assert 0.1 < np.abs(smooth(src) - dst).max() < 5  # no longer interpolates the noise
    dup = np.vstack([src, src[:1]])
    res = T.ThinPlateSpline.from_estimate(dup, np.vstack([dst, dst[:1] + 1]))
    assert not res and "same position" in res.reason
    line = np.c_[np.arange(5.0), np.arange(5.0)]
    assert "collinear" in T.ThinPlateSpline.from_estimate(line, line).reason
    with pytest.raises(TransformError, match="smoothing must be >= 0"):
        T.ThinPlateSpline.from_estimate(src, dst, smoothing=-1)
    with pytest.raises(TransformError, match="order must be 2 or 3"):
        T.Polynomial.from_estimate(src, dst, order=5)
    assert "2-D only" in T.Polynomial.from_estimate(np.c_[src, src[:, 0]], np.c_[dst, dst[:, 0]]).reason


# ---------------------------------------------------------------------------------------
# 3-D -> 2-D rigid projection
# ---------------------------------------------------------------------------------------
def test_rigid_projection_contract():
    rng = np.random.default_rng(50)
    rot = Rotation.random(random_state=3).as_matrix()
    tf = T.RigidProjection(rot, 1.2, [10.0, -4.0], axial_scale=0.9, source_frame="LM", target_frame="FIB")
    src = rng.uniform(0, 30, (12, 3))
    y = tf(src)
    assert y.shape == (12, 2) and tf.ndim == 3 and tf.ndim_out == 2
    np.testing.assert_allclose(y, 1.2 * ((src * [1, 1, 0.9]) @ rot.T)[:, :2] + [10, -4])
    np.testing.assert_allclose(tf.depth(src), 1.2 * ((src * [1, 1, 0.9]) @ rot.T)[:, 2])
    again = T.transform_from_dict(json.loads(json.dumps(tf.to_dict())))
    assert again == tf and again.target_frame == "FIB"
    est = T.RigidProjection.from_estimate(src, y, axial_scale=0.9)
    np.testing.assert_allclose(est.rotation, rot, atol=1e-8)
    assert est.scale == pytest.approx(1.2) and est.axial_scale == 0.9
    fitted_k = T.RigidProjection.from_estimate(src, y, axial_scale=True)
    assert fitted_k.axial_scale == pytest.approx(0.9, rel=1e-7)
    # composition with a 2-D map after the projection; no inverse
    stage = T.Similarity(2.0, 0.1, [1.0, 2.0], source_frame="FIB", target_frame="stage")
    comp = tf.then(stage)
    assert comp.ndim == 3 and comp.ndim_out == 2
    np.testing.assert_allclose(comp(src), stage(y))
    with pytest.raises(TransformError, match="no inverse"):
        tf.inverse
    with pytest.raises(TransformError, match="cannot compose a transform to 2-D points with a 3-D"):
        tf.then(T.Affine(matrix=np.eye(4)))
    eps = 1e-6
    pj = tf.param_jacobian(src[:3])
    assert pj.shape == (3, 2, 6)
    num_s = (T.RigidProjection(rot, 1.2 + eps, [10.0, -4.0], 0.9)(src[:3]) - y[:3]) / eps
    np.testing.assert_allclose(pj[:, :, 3], num_s, atol=1e-5)
    small = rotvec_to_matrix(np.array([0, 0, eps]))
    num_w = (T.RigidProjection(small @ rot, 1.2, [10.0, -4.0], 0.9)(src[:3]) - y[:3]) / eps
    np.testing.assert_allclose(pj[:, :, 2], num_w, atol=1e-4)


def test_rigid_projection_bad_input():
    rng = np.random.default_rng(51)
    src = rng.uniform(0, 30, (6, 3))
    dst = src[:, :2]
    few = T.RigidProjection.from_estimate(src[:3], dst[:3])
    assert not few and "needs at least 4 point pairs" in few.reason
    line = np.c_[np.arange(5.0), np.arange(5.0), np.arange(5.0)]
    assert "on one line" in T.RigidProjection.from_estimate(line, line[:, :2]).reason
    flat = np.c_[src[:, :2], np.zeros(6)]
    assert "axial scale cannot be fitted" in T.RigidProjection.from_estimate(flat, dst, axial_scale=True).reason
    with pytest.raises(TransformError, match=r"pairs \(3-D source, 2-D target\)"):
        T.RigidProjection.from_estimate(src, src)
    with pytest.raises(TransformError, match="proper"):
        T.RigidProjection(np.diag([1.0, 1, -1]))

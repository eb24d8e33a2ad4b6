"""Coherent point drift against ground truth: known rigid/affine transforms of 2-D and 3-D
point sets with 20 % of the points missing and 20 % spurious points added."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import clemlab as cl


def _case(d, model, seed):
    rng = np.random.default_rng(seed)
    n = 60
    pts = rng.uniform(-25, 25, (n, d))  # µm, centred: CPD starts from the identity
    if d == 2:
        a = np.deg2rad(12)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    else:
        rot = Rotation.from_euler("zyx", [12, -8, 6], degrees=True).as_matrix()
    lin = 1.05 * rot if model == "rigid" else rot @ np.diag([1.1, 0.95, 1.05][:d]) + 0.02 * rng.normal(size=(d, d))
    t = rng.uniform(-3, 3, d)
    fixed = pts @ lin.T + t + rng.normal(0, 0.05, (n, d))
    keep_m = rng.random(n) > 0.2          # 20 % missing from the moving set
    keep_f = rng.random(n) > 0.2          # and 20 % missing from the fixed set
    spurious = rng.uniform(-30, 30, (n // 5, d))  # 20 % spurious fixed points
    moving = pts[keep_m]
    fixed_set = np.r_[fixed[keep_f], spurious]
    order = rng.permutation(len(fixed_set))
    return moving, fixed_set[order], lin, t


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("model", ["rigid", "affine"])
def test_cpd_recovers_known_transform(d, model):
    moving, fixed, lin, t = _case(d, model, seed=3 + d)
    res = cl.coherent_point_drift(moving, fixed, model, w=0.3)
    grid = np.random.default_rng(0).uniform(-25, 25, (50, d))
    err = np.linalg.norm(res.transform(grid) - (grid @ lin.T + t), axis=1)
    assert err.max() < 0.15, err.max()  # µm, against 0.05 µm noise per axis
    # most moving points with a true partner got one
    assert (res.correspondence >= 0).mean() > 0.6


def test_cpd_is_deterministic():
    moving, fixed, _, _ = _case(2, "rigid", seed=1)
    a = cl.coherent_point_drift(moving, fixed)
    b = cl.coherent_point_drift(moving, fixed)
    assert np.array_equal(a.transform.matrix, b.transform.matrix)


def test_cpd_refuses_bad_input():
    with pytest.raises(cl.RegistrationError, match="rigid., .affine. or .nonrigid."):
        cl.coherent_point_drift(np.zeros((5, 2)), np.zeros((5, 2)), "spline")
    with pytest.raises(cl.RegistrationError, match="D = 2 or 3"):
        cl.coherent_point_drift(np.zeros((5, 2)), np.zeros((5, 3)))


def _bend(p, d):
    """A smooth non-linear deformation (µm): a bend of up to 1.5 µm, wavelength ~40 µm."""
    q = p.copy()
    q[:, 0] += 1.5 * np.sin(p[:, 1] / 6.0)
    q[:, 1] += 1.2 * np.cos(p[:, 0] / 7.0)
    if d == 3:
        q[:, 2] += 0.8 * np.sin((p[:, 0] + p[:, 1]) / 8.0)
    return q


@pytest.mark.parametrize("d", [2, 3])
def test_cpd_nonrigid_recovers_smooth_deformation(d):
    """Non-rigid CPD, started from the affine CPD result, follows a known smooth bend that no
    affine map can (20 % missing on each side, 20 % spurious points, 0.05 µm noise)."""
    rng = np.random.default_rng(20 + d)
    n = 150 if d == 2 else 200
    pts = rng.uniform(-25, 25, (n, d))
    truth = lambda p: _bend(p, d) @ np.diag([1.03, 0.98, 1.0][:d]).T + 1.0  # noqa: E731
    fixed = truth(pts) + rng.normal(0, 0.05, (n, d))
    keep_m, keep_f = rng.random(n) > 0.2, rng.random(n) > 0.2
    fixed_set = np.r_[fixed[keep_f], rng.uniform(-30, 30, (n // 5, d))]
    moving = pts[keep_m]
    affine = cl.coherent_point_drift(moving, fixed_set, "affine", w=0.3)
    res = cl.coherent_point_drift(moving, fixed_set, "nonrigid", w=0.3, initial=affine.transform,
                                  beta=8.0, lam=2.0)
    inner = rng.uniform(-20, 20, (100, d))  # inside the point cloud, where the field is known
    err_nonrigid = np.linalg.norm(res.transform(inner) - truth(inner), axis=1)
    err_affine = np.linalg.norm(affine.transform(inner) - truth(inner), axis=1)
    assert np.median(err_affine) > 0.8  # the bend is not affine
    assert np.median(err_nonrigid) < 0.2 and np.quantile(err_nonrigid, 0.9) < 0.4, \
        (np.median(err_nonrigid), np.quantile(err_nonrigid, 0.9))
    # deterministic
    again = cl.coherent_point_drift(moving, fixed_set, "nonrigid", w=0.3, initial=affine.transform,
                                    beta=8.0, lam=2.0)
    assert np.array_equal(again.transform(inner), res.transform(inner))

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
    with pytest.raises(cl.RegistrationError, match="model"):
        cl.coherent_point_drift(np.zeros((5, 2)), np.zeros((5, 2)), "spline")
    with pytest.raises(cl.RegistrationError, match="D = 2 or 3"):
        cl.coherent_point_drift(np.zeros((5, 2)), np.zeros((5, 3)))

"""register() and Registration: fit, residuals, leave-one-out, persistence, bad input."""

from __future__ import annotations

import numpy as np
import pytest

import clemlab as cl
from clemlab import Landmarks, RegistrationError, register
from clemlab import transforms as T


def noisy_pairs(n=12, sigma=0.02, seed=0):
    rng = np.random.default_rng(seed)
    true = T.Affine(matrix=[[0.98, -0.21, 40.0], [0.19, 1.03, -12.0], [0, 0, 1]])
    src = rng.uniform(0, 50, (n, 2))
    dst = true(src) + rng.normal(0, sigma, (n, 2))
    return true, src, dst


def test_affine_registration_residuals_and_loo():
    true, src, dst = noisy_pairs()
    reg = register(Landmarks.from_points(src, dst), model="affine")
    assert isinstance(reg.transform, T.Affine)
    assert reg.transform.source_frame == "LM" and reg.transform.target_frame == "EM"
    # residuals are what they claim to be
    np.testing.assert_allclose(reg.residuals, np.linalg.norm(reg.transform(src) - dst, axis=1))
    assert reg.rms == pytest.approx(np.sqrt(np.mean(reg.residuals**2)))
    # leave-one-out error equals a refit without that pair, by an independent route
    for i in (0, 5):
        keep = np.arange(len(src)) != i
        part = T.Affine.from_estimate(src[keep], dst[keep])
        assert reg.loo_errors[i] == pytest.approx(np.linalg.norm(part(src[i]) - dst[i]), rel=1e-9)
    assert np.all(reg.loo_errors > reg.residuals)  # left-out errors do not flatter
    # the fit is close to the truth (noise 20 nm)
    grid = np.random.default_rng(1).uniform(0, 50, (100, 2))
    assert np.abs(reg.map_points(grid) - true(grid)).max() < 0.05


def test_inactive_pairs_ignored():
    true, src, dst = noisy_pairs(sigma=0)
    dst[3] += 10  # an outlier
    lms = Landmarks.from_points(src, dst)
    lms.set_active("P4", False)
    reg = register(lms)
    assert len(reg.residuals) == len(src) - 1 and reg.rms < 1e-9


def test_uncertainties_weight_the_fit():
    true, src, dst = noisy_pairs(sigma=0)
    dst[0] += 1.0
    sig = np.full(len(src), 0.01)
    sig[0] = 100.0  # the displaced pair is declared very uncertain
    reg = register(Landmarks.from_points(src, dst, sigma_src=0.0, sigma_dst=sig))
    unweighted = register(Landmarks.from_points(src, dst))
    grid = np.random.default_rng(1).uniform(0, 50, (50, 2))
    assert np.abs(reg.map_points(grid) - true(grid)).max() < 1e-3
    assert np.abs(unweighted.map_points(grid) - true(grid)).max() > 0.05


@pytest.mark.parametrize("model, cls", [("translation", T.Translation), ("rigid", T.Rigid),
                                        ("similarity", T.Similarity), ("affine", T.Affine)])
def test_models_by_name(model, cls):
    _, src, dst = noisy_pairs()
    assert type(register(Landmarks.from_points(src, dst), model=model).transform) is cls


def test_save_load_exact(tmp_path):
    _, src, dst = noisy_pairs()
    reg = register(Landmarks.from_points(src, dst), model="similarity")
    again = cl.Registration.load(reg.save(tmp_path / "reg.json"))
    assert again.transform == reg.transform and again.landmarks == reg.landmarks
    np.testing.assert_array_equal(again.loo_errors, reg.loo_errors)
    assert "similarity registration LM -> EM" in reg.summary() and "nm" in reg._repr_html_()


def test_bad_input_messages():
    with pytest.raises(RegistrationError, match="needs at least 3 point pairs, got 2"):
        register(Landmarks.from_points([[0, 0], [1, 0]], [[0, 0], [1, 0]]))
    with pytest.raises(RegistrationError, match="collinear"):
        register(Landmarks.from_points([[0, 0], [1, 1], [2, 2], [3, 3]], [[0, 0], [1, 0], [2, 1], [0, 3]]))
    with pytest.raises(RegistrationError, match="unknown model 'warpy'"):
        register(Landmarks.from_points([[0, 0], [1, 1], [2, 0]], [[0, 0], [1, 1], [2, 0]]), model="warpy")
    with pytest.raises(RegistrationError, match="takes a Landmarks table"):
        register(np.zeros((3, 2)))

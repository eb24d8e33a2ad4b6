"""register() and Registration: fit, residuals, leave-one-out, persistence, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
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


def test_thin_plate_spline_left_out_errors_equal_refits():
    # an exact spline's left-out errors come from one inverse of its system: each equals the
    # distance at the pair of a spline fitted to the other pairs (scipy's RBFInterpolator
    # with the same kernel and linear drift is the independent refit)
    from scipy.interpolate import RBFInterpolator

    rng = np.random.default_rng(5)
    src = rng.uniform(0, 50, (40, 2))
    dst = src * 1.02 + 0.5 * np.sin(src[:, ::-1] / 7) + rng.normal(0, 0.02, (40, 2))
    reg = register(Landmarks.from_points(src, dst), model="tps")
    for i in (0, 7, 23, 39):
        keep = np.arange(len(src)) != i
        refit = RBFInterpolator(src[keep], dst[keep], kernel="thin_plate_spline", degree=1)
        assert reg.loo_errors[i] == pytest.approx(np.linalg.norm(refit(src[i:i + 1])[0] - dst[i]), rel=1e-7)
    assert np.all(reg.loo_errors > reg.residuals)


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


# ---------------------------------------------------------------------------------------
# issue 3: error prediction, model choice, outliers, warnings
# ---------------------------------------------------------------------------------------
from scipy.spatial.transform import Rotation  # noqa: E402

import xarray as xr  # noqa: E402

from clemlab.registration import MappedPoints, compare_models, error_vs_n  # noqa: E402


def _fwm(src, q, fle):
    """Fitzpatrick, West & Maurer (1998): <TRE²> for rigid registration, 2-D and 3-D."""
    n, k = src.shape
    c = src.mean(axis=0)
    x, r = src - c, q - c
    if k == 2:
        return fle**2 / n * (1 + np.sum(r**2, axis=1) / (2 * np.mean(np.sum(x**2, axis=1))))
    _, vecs = np.linalg.eigh(x.T @ x)
    total = 0
    for v in vecs.T:
        f2 = np.mean(np.sum(x**2, axis=1) - (x @ v) ** 2)  # mean squared distance from axis
        total = total + (np.sum(r**2, axis=1) - (r @ v) ** 2) / f2
    return fle**2 / n * (1 + total / 3)


@pytest.mark.parametrize("k", [2, 3])
def test_rigid_prediction_equals_fitzpatrick_closed_form(k):
    rng = np.random.default_rng(20 + k)
    src = rng.uniform(0, 40, (7, k)) * ([1.0, 0.4, 0.7][:k])  # anisotropic layout
    rot = T.rotation_matrix_2d(0.7) if k == 2 else Rotation.random(random_state=5).as_matrix()
    dst = T.Rigid(rot, rng.uniform(-5, 5, k))(src) + rng.normal(0, 0.02, src.shape)
    reg = register(Landmarks.from_points(src, dst), model="rigid", fle=0.05)
    q = rng.uniform(-30, 70, (200, k))
    np.testing.assert_allclose(reg.predicted_error(q) ** 2, _fwm(src, q, 0.05), rtol=1e-6)
    assert reg.method == "delta" and reg.fle_source == "given" and reg.fle == pytest.approx(0.05)


def test_fre_over_fle_matches_dof_correction():
    rng = np.random.default_rng(30)
    k, n, sigma = 2, 8, 0.03
    fre2 = []
    for _ in range(400):
        src = rng.uniform(0, 50, (n, k))
        dst = T.Affine(matrix=[[1.02, 0.1, 3], [-0.12, 0.97, 1], [0, 0, 1]])(src) + rng.normal(0, sigma, (n, k))
        fre2.append(register(Landmarks.from_points(src, dst), model="affine").rms ** 2)
    fle2 = k * sigma**2
    p = T.Affine.n_params(k)
    assert np.mean(fre2) / fle2 == pytest.approx(1 - p / (k * n), rel=0.06)


def test_fle_estimate_is_unbiased_for_affine():
    rng = np.random.default_rng(31)
    est = []
    for _ in range(200):
        src = rng.uniform(0, 50, (10, 2))
        dst = src @ [[0.9, 0.2], [-0.1, 1.1]] + rng.normal(0, 0.04, (10, 2))
        est.append(register(Landmarks.from_points(src, dst)).fle ** 2)
    assert np.sqrt(np.mean(est)) == pytest.approx(np.sqrt(2) * 0.04, rel=0.05)


def test_predicted_error_calibrated_linear_and_tps():
    """Monte-Carlo: measured mapping error at targets vs prediction (known noise): RMS of
    their ratio about 1."""
    rng = np.random.default_rng(32)
    for model in ("affine", "tps"):
        z2 = []
        for _ in range(60):
            src_t = rng.uniform(0, 50, (12, 2))
            if model == "affine":
                truth = T.Affine(matrix=[[1.01, 0.05, 2], [-0.04, 0.99, -3], [0, 0, 1]])
            else:  # a smooth deformation the 12 landmarks sample coarsely: the prediction
                # holds the spline's error between landmarks, estimated from its left-out errors
                phase = rng.uniform(0, 2 * np.pi, 2)

                def truth(q, phase=phase):
                    return q + 0.3 * np.c_[np.sin(q[:, 1] / 8 + phase[0]), np.sin(q[:, 0] / 8 + phase[1])]
            src = src_t + rng.normal(0, 0.03, src_t.shape)
            dst = truth(src_t) + rng.normal(0, 0.005, src_t.shape)
            reg = register(Landmarks.from_points(src, dst, sigma_src=0.03, sigma_dst=0.005), model,
                           n_bootstrap=100)
            q = rng.uniform(5, 45, (10, 2))
            z2.append(np.mean((np.linalg.norm(reg.transform(q) - truth(q), axis=1) / reg.predicted_error(q)) ** 2))
        assert 0.75 < np.sqrt(np.mean(z2)) < 1.3, model


def test_tps_prediction_small_at_landmarks_larger_outside():
    rng = np.random.default_rng(33)
    src = rng.uniform(0, 50, (15, 2))
    dst = src + rng.normal(0, 0.02, src.shape)
    reg = register(Landmarks.from_points(src, dst, sigma_src=0.02, sigma_dst=0.005), "tps")
    assert reg.method == "bootstrap" and reg.fle_source == "uncertainties"
    near = reg.predicted_error(src).mean()
    far = reg.predicted_error(src.mean(axis=0) + [[200.0, 0.0]]).mean()
    assert far > 5 * near
    np.testing.assert_array_equal(reg.predicted_error(src), reg.predicted_error(src))  # seeded
    assert any("interpolates" in w for w in register(Landmarks.from_points(src, dst), "tps").warnings)


def test_map_points_carries_errors_and_flags_extrapolation():
    true, src, dst = noisy_pairs()
    reg = register(Landmarks.from_points(src, dst))
    q = np.array([[25.0, 25.0], [500.0, 500.0]])
    mp = reg.map_points(q)
    assert isinstance(mp, MappedPoints) and mp.shape == (2, 2)
    np.testing.assert_allclose(np.asarray(mp), reg.transform(q))
    np.testing.assert_allclose(mp.error, reg.predicted_error(q))
    assert mp.outside_hull.tolist() == [False, True] and mp.error[1] > 5 * mp.error[0]
    axes, dirs = mp.ellipses(0.95)
    assert axes.shape == (2, 2) and np.all(axes[:, 0] >= axes[:, 1])
    # noise estimated from 12 pairs (dof 24 - 6): Hotelling's 2 F(0.95; 2, 18), not chi2's 5.99
    from scipy.stats import f

    assert mp.dof == 18
    np.testing.assert_allclose(np.sum(axes**2, axis=1), 2 * f.ppf(0.95, 2, 18) * mp.error**2, rtol=1e-6)
    known = register(Landmarks.from_points(src, dst), fle=0.03).map_points(q)
    axes_k, _ = known.ellipses(0.95)
    np.testing.assert_allclose(np.sum(axes_k**2, axis=1), 5.991464547 * known.error**2, rtol=1e-6)
    df = mp.to_dataframe()
    assert list(df.columns) == ["x", "y", "error", "outside_hull"]
    withfle = reg.map_points(q, include_target_fle=True, target_sigma=0.05)
    assert np.all(withfle.error > mp.error)
    lin = reg.transform.linear
    np.testing.assert_allclose(withfle.error**2 - mp.error**2, 0.05**2 * np.sum(lin**2), rtol=1e-9)
    np.testing.assert_allclose(reg.target_error(q, 0.05), withfle.error)


def test_mapped_points_errors_only_where_they_describe_the_rows():
    """Arithmetic, rows and numpy functions give plain arrays; copies and pickles keep errors."""
    import copy
    import pickle

    _, src, dst = noisy_pairs()
    reg = register(Landmarks.from_points(src, dst))
    q = np.array([[25.0, 25.0], [500.0, 500.0], [10.0, 40.0]])
    mp = reg.map_points(q)
    for derived in (mp - reg.transform(q), mp[::-1], mp[:2], mp[0], mp * 1e3, mp.mean(axis=0),
                    np.concatenate([mp, mp]), np.linalg.norm(mp, axis=1)):
        assert type(derived) is np.ndarray
    np.testing.assert_array_equal(mp[::-1], reg.transform(q)[::-1])
    for kept in (mp.copy(), copy.deepcopy(mp), pickle.loads(pickle.dumps(mp))):
        assert isinstance(kept, MappedPoints) and kept.dof == mp.dof
        np.testing.assert_array_equal(kept, mp)
        np.testing.assert_array_equal(kept.error, reg.predicted_error(q))
        np.testing.assert_array_equal(kept.covariance, mp.covariance)
        np.testing.assert_array_equal(kept.outside_hull, mp.outside_hull)
    assert mp.outside_hull[:2].tolist() == [False, True] and mp.T.error is None
    with pytest.raises(RegistrationError, match="view derived from them"):
        mp.T.ellipses()


def test_robust_deactivates_outliers_in_its_copy_only():
    _, src, dst = noisy_pairs(n=15, sigma=0.01)
    dst[2] += [4.0, -3.0]
    lms = Landmarks.from_points(src, dst)
    reg = register(lms, robust=True)
    assert reg.outliers == ["P3"] and reg.landmarks.active.tolist() == [i != 2 for i in range(15)]
    assert lms.active.all()


def test_error_map_on_image_grid():
    true, src, dst = noisy_pairs()
    reg = register(Landmarks.from_points(src, dst))
    img = cl.as_image(np.zeros((300, 200)), pixel_size=0.25)
    em = reg.error_map(img, step=10)
    assert isinstance(em, xr.DataArray) and em.dims == ("y", "x") and em.shape == (30, 20)
    q = np.array([[float(em.x[3]), float(em.y[7])]])
    assert float(em[7, 3]) == pytest.approx(float(reg.predicted_error(q)[0]))


def test_ransac_recovers_with_30_percent_outliers():
    ok = 0
    for seed in range(100):
        rng = np.random.default_rng(1000 + seed)
        truth = T.Similarity(rng.uniform(0.8, 1.2), rng.uniform(-np.pi, np.pi), rng.uniform(-20, 20, 2))
        src = rng.uniform(0, 50, (20, 2))
        dst = truth(src) + rng.normal(0, 0.03, src.shape)
        bad = rng.choice(20, 6, replace=False)
        dst[bad] += rng.uniform(2, 30, (6, 2)) * rng.choice([-1, 1], (6, 2))
        reg = register(Landmarks.from_points(src, dst), "affine", robust=True, seed=seed)
        q = rng.uniform(0, 50, (50, 2))
        good = np.abs(reg.transform(q) - truth(q)).max() < 0.15
        found = set(reg.outliers) == {f"P{i + 1}" for i in bad}
        ok += good and found
    assert ok >= 99


def test_ransac_with_known_noise_and_summary():
    rng = np.random.default_rng(40)
    src = rng.uniform(0, 50, (15, 2))
    dst = src + 3.0 + rng.normal(0, 0.01, src.shape)
    dst[4] += [5.0, -4.0]
    lms = Landmarks.from_points(src, dst, sigma_src=0.01, sigma_dst=0.005)
    reg = register(lms, "rigid", robust=True)
    assert reg.outliers == ["P5"] and "P5" not in reg.names
    assert "RANSAC rejected 1 pair(s) as outliers: P5" in reg.summary()
    # with the noise known to be 10 nm, a 6 µm outlier drags every pair out of bounds
    assert register(lms, "rigid").outlier_flags.all()
    # with the noise estimated (robustly) from the residuals, only the culprit stands out
    plain = register(Landmarks.from_points(src, dst), "rigid")
    assert plain.outlier_flags.tolist() == [i == 4 for i in range(15)]
    assert "Pair(s) P5 are far off when left out" in plain.summary()


def test_warnings_in_plain_words():
    rng = np.random.default_rng(41)
    src = rng.uniform(0, 50, (10, 2))
    mirrored = src * [1, -1] + [0, 60] + rng.normal(0, 0.01, src.shape)
    reg = register(Landmarks.from_points(src, mirrored), "similarity")
    assert any("mirrored" in w and "allow_reflection=True" in w for w in reg.warnings)
    flipped = register(Landmarks.from_points(src, mirrored), "similarity", allow_reflection=True)
    assert flipped.rms < 0.05 and any("mirrored" in w for w in flipped.warnings)
    line = np.c_[np.linspace(0, 50, 10), 0.05 * rng.normal(size=10)]
    reg = register(Landmarks.from_points(line, line + rng.normal(0, 0.001, line.shape)), "rigid")
    assert any("nearly on a line" in w and "condition number" in w for w in reg.warnings)
    reg = register(Landmarks.from_points(src, src * 10))
    assert any("scale between the frames is 10" in w and "pixel sizes" in w for w in reg.warnings)
    reg = register(Landmarks.from_points(src, src * [1.5, 1.0]))
    assert any("stretches one direction 1.50x" in w for w in reg.warnings)
    assert "WARNING: The map stretches" in reg.summary() and "stretches" in reg._repr_html_()


def test_compare_models_recommends_what_the_data_support():
    rng = np.random.default_rng(42)
    src = rng.uniform(0, 50, (20, 2))
    rigid_data = T.Rigid(0.4, [3, 4])(src) + rng.normal(0, 0.02, src.shape)
    cmp = compare_models(Landmarks.from_points(src, rigid_data))
    assert cmp.recommended == "rigid", cmp
    assert set(cmp.table["model"]) >= {"translation", "rigid", "affine", "tps"}
    assert "within noise" in cmp.reason or "lowest" in cmp.reason
    bent = src + 0.8 * np.sin(src[:, ::-1] / 8.0) + rng.normal(0, 0.01, src.shape)
    cmp2 = compare_models(Landmarks.from_points(src, bent))
    assert cmp2.recommended in ("polynomial3", "tps"), cmp2
    assert cmp2.table.set_index("model").loc["affine", "loo_rms_nm"] > 3 * cmp2.table["loo_rms_nm"].min()
    assert "Recommended" in cmp2._repr_html_()
    with pytest.raises(RegistrationError, match="no model can be compared with 1 landmark"):
        compare_models(Landmarks.from_points(src[:1], src[:1]))


def test_error_vs_n_decreases():
    rng = np.random.default_rng(43)
    src = rng.uniform(0, 50, (20, 2))
    dst = src @ [[1.0, 0.1], [0.0, 1.0]] + rng.normal(0, 0.03, src.shape)
    curve = error_vs_n(Landmarks.from_points(src, dst), "affine", repeats=30)
    assert list(curve["n"]) == list(range(4, 20))
    assert curve["rms_nm"].iloc[0] > curve["rms_nm"].iloc[-1]
    assert curve["rms_nm"].iloc[-1] == pytest.approx(np.sqrt(2) * 30, rel=0.4)  # ~ the FLE, nm
    tps_curve = error_vs_n(Landmarks.from_points(src, dst), "tps", sizes=[5, 10, 15], repeats=10)
    assert len(tps_curve) == 3
    with pytest.raises(RegistrationError, match="subset sizes must lie between"):
        error_vs_n(Landmarks.from_points(src, dst), "affine", sizes=[2])


@pytest.mark.parametrize("model", ["projective", "polynomial2", "tps"])
def test_nonlinear_registrations_round_trip(tmp_path, model):
    rng = np.random.default_rng(44)
    src = rng.uniform(0, 50, (14, 2))
    dst = src + 0.3 * np.sin(src / 10) + rng.normal(0, 0.01, src.shape)
    reg = register(Landmarks.from_points(src, dst), model)
    again = cl.Registration.load(reg.save(tmp_path / "r.json"))
    assert again.transform == reg.transform and again.model == reg.model
    q = rng.uniform(0, 50, (5, 2))
    np.testing.assert_array_equal(again.transform(q), reg.transform(q))
    np.testing.assert_allclose(again.predicted_error(q), reg.predicted_error(q), rtol=1e-12)


@pytest.mark.parametrize(
    "src, dst, model, message",
    [
        ([[0, 0], [1, 1], [2, 0], [0, 0]], [[0, 0], [1, 1], [2, 0], [5, 5]], "affine",
         r"pairs \['P1', 'P4'\] have the same source position"),
        ([[1, 1], [1, 1.0000001], [1, 1.0000002]], [[0, 0], [1, 1], [2, 2]], "similarity", "same position|condition"),
        ([[0, 0], [1, 0], [2, 0], [3, 0]], [[0, 0], [1, 0], [2, 0], [3, 1]], "affine", "collinear"),
        ([[0, 0], [1, 0], [2, 1]], [[0, 0], [1, 0], [2, 1]], "projective", "at least 4 point pairs, got 3"),
        ([[0, 0], [1, 0], [2, 1], [0, 3], [4, 4]], [[0, 0], [1, 0], [2, 1], [0, 3], [4, 4]], "polynomial2",
         "at least 6 point pairs, got 5"),
    ],
)
def test_register_bad_input(src, dst, model, message):
    import re

    with pytest.raises(RegistrationError) as err:
        reg = register(Landmarks.from_points(np.array(src, float), np.array(dst, float)), model)
        if any(re.search(message, w) for w in reg.warnings):  # a warning is an acceptable answer
            raise RegistrationError(" ".join(reg.warnings))
    assert re.search(message, str(err.value)), str(err.value)


def test_all_identical_and_mixed_dims():
    with pytest.raises(RegistrationError, match="same source position"):
        register(Landmarks.from_points(np.ones((4, 2)), np.arange(8.0).reshape(4, 2)))
    with pytest.raises(cl.LandmarkError, match="same shape"):
        Landmarks.from_points(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(RegistrationError, match="fle must be a positive number"):
        register(Landmarks.from_points(np.eye(3, 2), np.eye(3, 2)), "translation", fle=-1)


# ---------------------------------------------------------------------------------------
# 3-D LM stack -> 2-D EM/FIB image (issue 7, item 4)
# ---------------------------------------------------------------------------------------
def _cryo_trial(rng, n=10, sigma_lm=0.03, sigma_fib=0.01, coplanar=False):
    rot = Rotation.from_euler("xyz", [rng.uniform(-60, 60), rng.uniform(-60, 60), rng.uniform(-180, 180)],
                              degrees=True).as_matrix()
    truth = T.RigidProjection(rot, rng.uniform(0.8, 1.2), rng.uniform(-10, 10, 2))
    beads = rng.uniform(0, 30, (n, 3)) * [1, 1, 0.0 if coplanar else 0.5]  # beads through 15 µm of depth
    lm = beads + rng.normal(0, sigma_lm, beads.shape)
    fib = truth(beads) + rng.normal(0, sigma_fib, (n, 2))
    return truth, Landmarks.from_points(lm, fib, sigma_src=sigma_lm, sigma_dst=sigma_fib)


def _angle(a, b):
    return np.degrees(np.arccos(np.clip((np.trace(a.T @ b) - 1) / 2, -1, 1)))


def test_3d_to_2d_recovers_rotation_and_targets_over_100_trials():
    rng = np.random.default_rng(60)
    angles, z2 = [], []
    for _ in range(100):
        truth, lms = _cryo_trial(rng, n=int(rng.integers(8, 16)))
        tf = T.RigidProjection.from_estimate(lms.src(), lms.dst())
        reg = cl.Registration(tf, lms, "rigid-projection")  # error model without the left-out refits
        angles.append(_angle(tf.rotation, truth.rotation))
        targets = rng.uniform(0, 30, (10, 3)) * [1, 1, 0.5]
        err = np.linalg.norm(reg.map_points(targets) - truth(targets), axis=1)
        z2.append(np.mean((err / reg.predicted_error(targets)) ** 2))
    assert max(angles) < 0.5, max(angles)
    assert 0.8 < np.sqrt(np.mean(z2)) < 1.25


def test_3d_to_2d_register_depth_and_left_out_errors():
    rng = np.random.default_rng(61)
    truth, lms = _cryo_trial(rng, n=8)
    reg = register(lms, "rigid-projection")
    assert reg.model == "rigid-projection" and reg.n_params == 6 and reg.method == "delta"
    assert np.all(np.isfinite(reg.loo_errors)) and np.all(reg.loo_errors >= reg.residuals * 0.99)
    target = np.array([[15.0, 15.0, 20.0]])  # deep below the bead layer
    beads = lms.src()
    expected = truth.depth(target) - truth.depth(beads).mean()
    assert reg.depth(target)[0] == pytest.approx(expected[0], abs=0.2)
    mp = reg.map_points(target, include_target_fle=True, target_sigma=0.1)
    assert mp.shape == (1, 2) and mp.error[0] > reg.predicted_error(target)[0]
    assert not reg.ambiguous
    again = cl.Registration.from_dict(json.loads(json.dumps(reg.to_dict())))
    np.testing.assert_array_equal(again.transform(target), reg.transform(target))


def test_3d_to_2d_coplanar_beads_give_both_solutions():
    rng = np.random.default_rng(62)
    truth, lms = _cryo_trial(rng, n=10, coplanar=True)
    reg = register(lms, "rigid-projection")
    assert reg.ambiguous and len(reg.alternatives) >= 2
    (a, ca), (b, cb) = reg.alternatives[:2]
    assert cb - ca < 9 * reg.fle**2 / 2  # within noise: the data cannot choose
    assert min(_angle(a.rotation, truth.rotation), _angle(b.rotation, truth.rotation)) < 1.0
    assert any("cannot tell the rotation from its mirror" in w for w in reg.warnings)


def test_3d_to_2d_bad_input():
    rng = np.random.default_rng(63)
    truth, lms = _cryo_trial(rng, n=3)
    with pytest.raises(RegistrationError, match="needs at least 4 point pairs, got 3"):
        register(lms, "rigid-projection")
    truth, lms = _cryo_trial(rng, n=8)
    with pytest.raises(RegistrationError, match="only model='rigid-projection' maps 3-D points to a 2-D image"):
        register(lms, "affine")
    with pytest.raises(RegistrationError, match="these landmarks are 2-D"):
        pts = rng.uniform(0, 10, (5, 2))
        register(Landmarks.from_points(pts, pts), "rigid-projection")
    with pytest.raises(cl.LandmarkError, match="2-D source points with 3-D targets"):
        Landmarks(pd.DataFrame({"name": ["a"], "active": [True], "x_src": [0.0], "y_src": [0.0],
                                "x_dst": [0.0], "y_dst": [0.0], "z_dst": [0.0]}))
    flat_truth, flat = _cryo_trial(rng, n=8, coplanar=True)
    with pytest.raises(RegistrationError, match="in one plane, so the axial scale cannot be fitted"):
        register(flat, "rigid-projection", axial_scale=True)


def test_mixed_landmarks_persist(tmp_path):
    truth, lms = _cryo_trial(np.random.default_rng(64), n=5)
    assert lms.ndim == 3 and lms.ndim_dst == 2 and "3-D -> 2-D" in repr(lms)
    for suffix in (".json", ".csv"):
        assert Landmarks.read(lms.save(tmp_path / f"m{suffix}")) == lms
    lms.add([1.0, 2.0, 3.0], [4.0, 5.0])
    with pytest.raises(cl.LandmarkError, match="needs 3 source and 2 target coordinates"):
        lms.add([1.0, 2.0], [4.0, 5.0])
    with pytest.raises(cl.LandmarkError, match="3-D -> 2-D"):
        lms.to_bigwarp(tmp_path / "x.csv")

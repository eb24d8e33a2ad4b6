"""Tests for clemlab.datasets: synthetic LM/EM pairs with known ground truth."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from clemlab.datasets import SyntheticCLEM, synthetic_clem, synthetic_clem_small
from clemlab.errors import ImageError
from clemlab.image import is_image
from clemlab.transforms import Affine


@pytest.fixture(scope="module")
def small():
    return synthetic_clem_small(0)


@pytest.fixture(scope="module")
def small_mirror():
    return synthetic_clem_small(4, mirror=True)


@pytest.fixture(scope="module")
def default():
    return synthetic_clem(0)


# ---------------------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------------------
def test_same_seed_same_data(small):
    again = synthetic_clem_small(0)
    np.testing.assert_array_equal(again.lm.values, small.lm.values)
    np.testing.assert_array_equal(again.em.values, small.em.values)
    np.testing.assert_array_equal(again.fiducials_lm, small.fiducials_lm)
    np.testing.assert_array_equal(again.targets_lm, small.targets_lm)
    assert again.transform == small.transform
    assert again.params == small.params


def test_different_seeds_differ(small):
    other = synthetic_clem_small(1)
    assert not np.array_equal(other.lm.values, small.lm.values)
    assert not np.array_equal(other.em.values, small.em.values)
    assert not np.allclose(other.transform.matrix, small.transform.matrix)
    assert not np.allclose(other.fiducials_em, small.fiducials_em)


# ---------------------------------------------------------------------------------------
# image model
# ---------------------------------------------------------------------------------------
def test_lm_follows_image_model(default):
    lm = default.lm
    assert is_image(lm)
    assert lm.dims == ("c", "y", "x")
    assert lm.shape == (3, 512, 512)
    assert lm.dtype == np.uint16
    assert list(lm.c.values) == ["nuclei", "GFP", "beads"]
    assert set(lm.attrs["colors"]) == {"nuclei", "GFP", "beads"}
    assert lm.attrs["modality"] == "LM" and lm.attrs["frame"] == "LM"
    assert lm.clem.pixel_size == pytest.approx({"y": 0.1, "x": 0.1})
    assert float(lm.x[0]) == 0.0 and float(lm.y[0]) == 0.0
    assert lm.x.attrs["units"] == "µm"
    json.dumps(lm.attrs)  # attrs stay JSON-able


def test_em_follows_image_model(default):
    em = default.em
    assert is_image(em)
    assert em.dims == ("y", "x")
    assert em.shape == (2048, 2048)
    assert em.dtype == np.uint8
    assert em.attrs["modality"] == "EM" and em.attrs["frame"] == "EM"
    assert em.clem.pixel_size == pytest.approx({"y": 0.01, "x": 0.01})
    json.dumps(em.attrs)


def test_em_origin_sets_em_coords():
    d = synthetic_clem_small(2, em_origin=(1500.0, -250.0))
    assert float(d.em.x[0]) == 1500.0 and float(d.em.y[0]) == -250.0
    ext = d.em.clem.extent
    assert np.all(d.fiducials_em[:, 0] > ext["x"][0]) and np.all(d.fiducials_em[:, 0] < ext["x"][1])
    assert np.all(d.fiducials_em[:, 1] > ext["y"][0]) and np.all(d.fiducials_em[:, 1] < ext["y"][1])
    _check_em_centroids(d)


def test_result_is_frozen_and_params_json(small):
    assert isinstance(small, SyntheticCLEM)
    with pytest.raises(dataclasses.FrozenInstanceError):
        small.lm = None
    text = json.dumps(small.params)
    for key in ("bead_photons_mean", "background_photons", "psf_sigma_um", "read_noise_e",
                "gain_adu_per_e", "offset_adu", "em_dose_e_per_px", "rotation_deg"):
        assert key in small.params, key
    assert "NaN" not in text


# ---------------------------------------------------------------------------------------
# transform and ground truth geometry
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["small", "small_mirror", "default"])
def test_transform_maps_fiducials_and_is_near_similarity(name, request):
    d = request.getfixturevalue(name)
    tf = d.transform
    assert isinstance(tf, Affine)
    assert tf.source_frame == "LM" and tf.target_frame == "EM"
    np.testing.assert_allclose(tf(d.fiducials_lm), d.fiducials_em, atol=1e-9)
    np.testing.assert_allclose(tf(d.targets_lm), d.targets_em, atol=1e-9)
    sv = np.linalg.svd(tf.linear, compute_uv=False)
    assert np.all(sv > 0.92) and np.all(sv < 1.08)
    det = np.linalg.det(tf.linear)
    assert 0.88 < abs(det) < 1.12
    assert (det < 0) == d.params["mirror"]


def test_mirror_flag_flips_determinant(small, small_mirror):
    assert np.linalg.det(small.transform.linear) > 0
    assert np.linalg.det(small_mirror.transform.linear) < 0


def test_explicit_transform_parameters():
    d = synthetic_clem_small(3, rotation=30.0, scale=(1.03, 0.97), shear=0.01, mirror=True)
    t = np.radians(30.0)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    expected = rot @ np.diag([-1.0, 1.0]) @ np.array([[1.03, 0.01], [0.0, 0.97]])
    np.testing.assert_allclose(d.transform.linear, expected, atol=1e-12)
    assert d.params["rotation_deg"] == 30.0 and d.params["scale_xy"] == [1.03, 0.97]


def test_rotation_is_random_over_seeds():
    angles = []
    for seed in range(6):
        lin = synthetic_clem_small(seed).transform.linear
        angles.append(np.degrees(np.arctan2(lin[1, 0], lin[0, 0])) % 360)
    assert np.ptp(angles) > 60


@pytest.mark.parametrize("name", ["small", "small_mirror", "default"])
def test_fiducials_inside_em_field_and_separated(name, request):
    d = request.getfixturevalue(name)
    assert len(d.fiducials_lm) == d.params["n_beads_em"]
    assert d.fiducials_lm.shape == d.fiducials_em.shape == (len(d.fiducials_lm), 2)
    r = d.params["bead_diameter_um"] / 2
    ext = d.em.clem.extent
    for k, dim in enumerate(("x", "y")):
        assert np.all(d.fiducials_em[:, k] - r > ext[dim][0])
        assert np.all(d.fiducials_em[:, k] + r < ext[dim][1])
    # all LM beads inside the LM field; the first rows are the fiducials
    lext = d.lm.clem.extent
    for k, dim in enumerate(("x", "y")):
        assert np.all((d.beads_lm_all[:, k] > lext[dim][0]) & (d.beads_lm_all[:, k] < lext[dim][1]))
    np.testing.assert_array_equal(d.beads_lm_all[: len(d.fiducials_lm)], d.fiducials_lm)
    # the other beads are not in (or cut by) the EM field
    others = d.transform(d.beads_lm_all[len(d.fiducials_lm):])
    inside = np.all(
        (others > [ext["x"][0] - r, ext["y"][0] - r])
        & (others < [ext["x"][1] + r, ext["y"][1] + r]),
        axis=1,
    )
    assert not inside.any()
    # well separated
    b = d.beads_lm_all
    dist = np.hypot(b[:, None, 0] - b[None, :, 0], b[:, None, 1] - b[None, :, 1])
    dist[np.diag_indices(len(b))] = np.inf
    assert dist.min() >= d.params["bead_min_distance_um"] - 1e-9


def test_default_has_12_to_25_fiducials_and_targets(default):
    assert 12 <= len(default.fiducials_em) <= 25
    assert len(default.beads_lm_all) > len(default.fiducials_lm)
    assert len(default.targets_lm) >= 3
    ext = default.em.clem.extent
    for k, dim in enumerate(("x", "y")):
        t = default.targets_em[:, k]
        assert np.all((t > ext[dim][0]) & (t < ext[dim][1]))


# ---------------------------------------------------------------------------------------
# rendered content is where the ground truth says
# ---------------------------------------------------------------------------------------
def _lm_bead_centroids(d, half=3):
    beads = d.lm.sel(c="beads").values.astype(float)
    bg = np.median(beads)
    px = d.lm.clem.to_pixel(d.beads_lm_all)
    out = []
    for cx, cy in px:
        j, i = int(round(cx)), int(round(cy))
        win = beads[i - half:i + half + 1, j - half:j + half + 1] - bg
        w = np.clip(win, 0, None)
        yy, xx = np.mgrid[i - half:i + half + 1, j - half:j + half + 1]
        out.append([(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()])
    return np.array(out), px


@pytest.mark.parametrize("name", ["small", "small_mirror", "default"])
def test_lm_beads_rendered_at_true_positions(name, request):
    d = request.getfixturevalue(name)
    found, true = _lm_bead_centroids(d)
    err = np.hypot(*(found - true).T)
    assert err.max() < 0.3, err.max()
    # and the error is not a constant offset hidden by pixel rounding
    frac = true - np.round(true)
    assert np.ptp(frac[:, 0]) > 0.5  # sub-pixel positions vary


def test_lm_bead_snr_above_5(default):
    beads = default.lm.sel(c="beads").values.astype(float)
    bg = np.median(beads)
    noise = 1.4826 * np.median(np.abs(beads - bg))  # robust std of the background
    px = np.round(default.lm.clem.to_pixel(default.beads_lm_all)).astype(int)
    peaks = np.array([beads[i - 1:i + 2, j - 1:j + 2].max() for j, i in px]) - bg
    snr = peaks / noise
    assert snr.min() > 5, snr.min()
    # the background matches the stated camera model: offset + gain * background photons
    p = default.params
    expected_bg = p["offset_adu"] + p["gain_adu_per_e"] * p["background_photons"]["beads"]
    assert abs(bg - expected_bg) < 3 * p["gain_adu_per_e"]


def _check_em_centroids(d, tol=0.5):
    em = d.em.values.astype(float)
    r_px = d.params["bead_diameter_um"] / 2 / d.params["em_pixel_size_um"]
    true = d.em.clem.to_pixel(d.fiducials_em)
    half = int(np.ceil(r_px)) + 3
    errs, contrasts = [], []
    for cx, cy in true:
        j, i = int(round(cx)), int(round(cy))
        yy, xx = np.mgrid[i - 2 * half:i + 2 * half + 1, j - 2 * half:j + 2 * half + 1]
        big = em[i - 2 * half:i + 2 * half + 1, j - 2 * half:j + 2 * half + 1]
        rr = np.hypot(xx - cx, yy - cy)
        ring = big[(rr > r_px + 3) & (rr < r_px + 10)]
        core = big[rr < 0.6 * r_px]
        bg = np.median(ring)
        # threshold nearer the particle's darkness than the background, in a window just
        # larger than the particle, so dark texture nearby (heterochromatin) stays out
        thr = core.mean() + 0.5 * (bg - core.mean())
        sel = rr < r_px + 1.5
        w = np.clip(thr - big, 0, None) * sel
        errs.append(np.hypot((w * xx).sum() / w.sum() - cx, (w * yy).sum() / w.sum() - cy))
        contrasts.append((core.mean(), bg, np.percentile(ring, 5)))
    return np.array(errs), np.array(contrasts)


@pytest.mark.parametrize("name", ["small", "small_mirror", "default"])
def test_em_particles_rendered_at_true_positions(name, request):
    d = request.getfixturevalue(name)
    errs, _ = _check_em_centroids(d)
    assert errs.max() < 0.5, errs.max()


@pytest.mark.parametrize("name", ["small", "default"])
def test_em_particles_darker_than_surroundings(name, request):
    d = request.getfixturevalue(name)
    _, c = _check_em_centroids(d)
    core, bg, ring_p5 = c.T
    assert np.all(core < 0.5 * bg)
    assert np.all(core < ring_p5)


def test_lm_and_em_content_correlate_at_targets(default):
    """GFP is bright at the targets in LM, and a vesicle (dark membrane) sits there in EM."""
    gfp = default.lm.sel(c="GFP").values.astype(float)
    bg = np.median(gfp)
    noise = 1.4826 * np.median(np.abs(gfp - bg))
    for j, i in np.round(default.lm.clem.to_pixel(default.targets_lm)).astype(int):
        assert gfp[i - 1:i + 2, j - 1:j + 2].max() - bg > 5 * noise
    em = default.em.values.astype(float)
    radii = np.array(default.params["puncta_radius_um"][: len(default.targets_em)])
    for (cx, cy), r in zip(default.em.clem.to_pixel(default.targets_em), radii):
        j, i = int(round(cx)), int(round(cy))
        h = 30
        yy, xx = np.mgrid[i - h:i + h + 1, j - h:j + h + 1]
        rr = np.hypot(xx - cx, yy - cy) * default.params["em_pixel_size_um"]
        win = em[i - h:i + h + 1, j - h:j + h + 1]
        membrane = win[np.abs(rr - r) < 0.006].mean()
        outside = np.median(win[(rr > r + 0.05) & (rr < r + 0.25)])
        assert membrane < outside - 10


def test_small_is_small(small):
    assert small.lm.shape == (3, 128, 128) and small.em.shape == (512, 512)
    assert len(small.fiducials_lm) == 6


# ---------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"lm_pixel_size": -0.1}, "lm_pixel_size"),
        ({"em_pixel_size": 0}, "em_pixel_size"),
        ({"em_pixel_size": float("nan")}, "em_pixel_size"),
        ({"n_beads": 2}, "n_beads"),
        ({"n_beads": 2.5}, "n_beads"),
        ({"n_beads": 500}, "n_beads"),
        ({"em_shape": (4096, 4096)}, "em_shape"),
        ({"em_shape": (512,)}, "em_shape"),
        ({"lm_shape": (128, -5)}, "lm_shape"),
        ({"bead_diameter": 0.01}, "bead_diameter"),
        ({"bead_photons": -1.0}, "bead_photons"),
        ({"em_origin": (0.0, float("inf"))}, "em_origin"),
        ({"scale": (1.0, -1.0)}, "scale"),
        ({"mirror": "yes"}, "mirror"),
        ({"n_targets": -1}, "n_targets"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, word):
    with pytest.raises(ImageError, match=word):
        synthetic_clem_small(0, **kwargs)


def test_bad_seed():
    with pytest.raises(ValueError, match="seed"):
        synthetic_clem_small(-1)
    with pytest.raises(ValueError, match="seed"):
        synthetic_clem_small("zero")


def test_em_field_too_large_message_mentions_both_fields():
    with pytest.raises(ImageError, match=r"too large for the LM field"):
        synthetic_clem(0, lm_shape=(128, 128), em_shape=(2048, 2048))


def _nuclei_em_correlation(d, tf):
    """Pearson correlation of EM darkness with the LM nuclei channel sampled through ``tf``
    (EM-frame points -> LM-frame points), on a 16-pixel EM grid."""
    from scipy import ndimage as ndi

    em = ndi.uniform_filter(d.em.values.astype(float), 16)[8::16, 8::16]
    yy, xx = np.meshgrid(d.em.y.values[8::16], d.em.x.values[8::16], indexing="ij")
    lm_px = d.lm.clem.to_pixel(tf(np.c_[xx.ravel(), yy.ravel()]))
    nuc = ndi.map_coordinates(d.lm.sel(c="nuclei").values.astype(float),
                              [lm_px[:, 1], lm_px[:, 0]], order=1)
    return np.corrcoef(-em.ravel(), nuc)[0, 1]


def test_em_nuclei_match_lm_nuclei_through_true_transform(default):
    """Nuclei are dark in EM exactly where the LM nuclei channel is bright, through the
    true transform, and less so through a wrong one (rotated by 90° about the EM centre)."""
    good = _nuclei_em_correlation(default, default.transform.inverse)
    centre = np.array([float(default.em.x.mean()), float(default.em.y.mean())])
    cx, cy = centre
    rot90 = Affine(matrix=[[0, -1, cx + cy], [1, 0, cy - cx], [0, 0, 1]])
    wrong = _nuclei_em_correlation(default, rot90.then(default.transform.inverse))
    assert good > 0.4
    assert good > wrong + 0.1


def test_synthetic_cryo_geometry_and_rendering():
    from clemlab.datasets import synthetic_cryo

    s = synthetic_cryo(seed=1)
    assert s.lm.dims == ("c", "z", "y", "x") and list(s.lm.c.values) == ["beads", "target"]
    assert s.fib.dims == ("y", "x") and s.fib.clem.frame == "FIB"
    np.testing.assert_allclose(s.transform(s.beads_lm), s.beads_fib)
    np.testing.assert_allclose(s.target_depth, s.transform.depth(s.targets_lm) - s.transform.depth(s.beads_lm).mean())
    # beads are where they are said to be: brightest voxel next to each true centre
    beads = s.lm.sel(c="beads")
    for x, y, z in s.beads_lm:
        win = beads.sel(x=slice(x - 0.3, x + 0.3), y=slice(y - 0.3, y + 0.3), z=slice(z - 0.6, z + 0.6))
        peak = win.where(win == win.max(), drop=True)
        assert abs(float(peak.x[0]) - x) <= 0.1 and abs(float(peak.z[0]) - z) <= 0.25
    fib = s.fib.values.astype(float)
    for x, y in s.beads_fib:  # bright in the FIB view
        i, j = int(round(y / 0.03)), int(round(x / 0.03))
        assert fib[i - 1 : i + 2, j - 1 : j + 2].mean() > np.median(fib) + 40
    assert np.array_equal(synthetic_cryo(seed=1).lm.values, s.lm.values)
    with pytest.raises(ImageError, match="n_beads"):
        synthetic_cryo(n_beads=2)

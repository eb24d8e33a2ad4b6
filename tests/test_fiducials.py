"""Fiducial detection, sub-pixel localisation and automatic matching (clemlab.fiducials)."""

from __future__ import annotations

import threading
import weakref

import dask.array as da
import numpy as np
import pytest
from scipy.spatial import cKDTree

import clemlab as cl
from clemlab.datasets import matching_trial
from clemlab._localize import crlb_gaussian, model_and_jacobian
from clemlab.datasets import synthetic_clem_small
from clemlab.errors import ImageError, RegistrationError
from clemlab.fiducials import FiducialMatch, detect_fiducials, match_fiducials


@pytest.fixture(scope="module")
def sample():
    return cl.synthetic_clem(seed=0)


def _pr(found, truth, tol):
    d, i = cKDTree(truth).query(found)
    hit = d < tol
    tp = len(set(i[hit]))
    return tp / max(len(found), 1), tp / len(truth), d[hit]


# ----------------------------------------------------------------------------- detection
def test_lm_beads_found_and_localised_at_crlb(sample):
    p = sample.params
    df = detect_fiducials(sample.lm.sel(c="beads"), diameter=(0.2, 0.5),
                          gain=p["gain_adu_per_e"], offset=p["offset_adu"])
    assert list(df.columns[:3]) == ["x", "y", "sigma"]
    precision, recall, _ = _pr(df[["x", "y"]].to_numpy(), sample.beads_lm_all, 0.15)
    assert precision == 1.0 and recall == 1.0
    _, i = cKDTree(sample.beads_lm_all).query(df[["x", "y"]].to_numpy())
    err = df[["x", "y"]].to_numpy() - sample.beads_lm_all[i]
    z = err / df[["sigma_x", "sigma_y"]].to_numpy()
    # errors scaled by the reported Cramér-Rao bound have unit spread (read noise adds ~10 %)
    assert 0.8 < np.sqrt(np.mean(z**2)) < 1.3
    assert df.attrs["method"] == "mle"
    assert np.median(df.width) == pytest.approx(p["bead_sigma_um"], rel=0.05)
    assert np.median(df.background) == pytest.approx(p["background_photons"]["beads"], rel=0.05)
    assert np.median(df.amplitude) == pytest.approx(p["bead_photons_mean"], rel=0.15)
    assert (df.flag == "ok").mean() > 0.9


def test_em_beads_found_among_vesicles_and_mitochondria(sample):
    df = detect_fiducials(sample.em, polarity="dark", diameter=(0.1, 0.3))
    precision, recall, d = _pr(df[["x", "y"]].to_numpy(), sample.fiducials_em, 0.05)
    assert precision == 1.0 and recall == 1.0
    assert np.sqrt(np.mean(d**2)) < 0.004  # µm, 200 nm beads at 10 nm pixels
    assert df.attrs["method"] == "lsq"


def test_mle_matches_crlb_on_simulated_spots():
    # isolated pixel-integrated Gaussian spots with Poisson noise, known truth
    rng = np.random.default_rng(1)
    n, h, s, photons, bg = 60, 12, 1.5, 1000.0, 10.0
    size = 2 * h + 1
    img = np.zeros((size * 6, size * 10))
    truth = []
    for k in range(n):
        r, c = divmod(k, 10)
        cy, cx = r * size + h + rng.uniform(-0.5, 0.5), c * size + h + rng.uniform(-0.5, 0.5)
        win = model_and_jacobian(np.array([[cy - r * size, cx - c * size, photons, 0.0, s]]),
                                 (size, size), (0, 0), jacobian=False)[0]
        img[r * size:(r + 1) * size, c * size:(c + 1) * size] = win
        truth.append((cx, cy))
    counts = rng.poisson(img + bg).astype(np.uint16)
    df = detect_fiducials(cl.as_image(counts, pixel_size=0.1), diameter=0.35, gain=1, offset=0)
    found = df[["x", "y"]].to_numpy() / 0.1
    assert len(df) == n
    d, i = cKDTree(np.array(truth)).query(found)
    assert len(set(i)) == n
    bound = crlb_gaussian((size, size), (h, h), photons, bg, [s])[0]
    ratio = np.sqrt(np.mean(d**2) / 2) / bound
    assert 0.8 < ratio < 1.2
    assert np.median(df.sigma) / 0.1 == pytest.approx(bound, rel=0.1)


def test_flags_merged_edge_saturated():
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:80, 0:120]

    def spot(cx, cy, a=4000.0, s=1.3):
        return a / (2 * np.pi * s * s) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))

    img = 20 + spot(30, 40) + spot(70, 40) + spot(72.6, 40) + spot(1, 20) + spot(100, 60, a=60000)
    data = np.minimum(rng.poisson(img), 1000).astype(np.uint16)
    df = detect_fiducials(cl.as_image(data, pixel_size=0.1), diameter=(0.2, 0.5), gain=1,
                          offset=0, saturation=1000)
    flag = {(round(x, 0), round(y, 0)): f for x, y, f in zip(df.x / 0.1, df.y / 0.1, df.flag)}
    assert flag[(30, 40)] == "ok"
    assert flag[(100, 60)] == "saturated"
    assert flag[(1, 20)] == "edge"
    assert [f for (x, _), f in flag.items() if 68 <= x <= 75] == ["merged"]


def test_zstack_detection():
    rng = np.random.default_rng(3)
    zz, yy, xx = np.mgrid[0:21, 0:40, 0:40]
    truth = np.array([[12.3, 15.6, 9.7], [27.2, 24.9, 11.4]])  # (x, y, z) pixels
    img = np.full(zz.shape, 10.0)
    for x, y, z in truth:
        img += 3000 / ((2 * np.pi) ** 1.5 * 1.3**2 * 2.5) * np.exp(
            -((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.3**2) - (zz - z) ** 2 / (2 * 2.5**2))
    im = cl.as_image(rng.poisson(img).astype(np.uint16), pixel_size={"z": 0.2, "y": 0.1, "x": 0.1})
    df = detect_fiducials(im, diameter=(0.25, 0.45), gain=1, offset=0)
    assert list(df.columns[:3]) == ["x", "y", "z"]
    got = df[["x", "y", "z"]].to_numpy() / [0.1, 0.1, 0.2]
    assert len(df) == 2
    np.testing.assert_allclose(got, truth, atol=0.3)
    assert np.all(df.width_z > df.width)


def _tracked_image(n, chunk, seed=0):
    """A lazily generated (n, n) dask image of PSF spots; counts how many generated chunks
    are alive at once."""
    live, peak, lock = set(), [0], threading.Lock()

    class Tracked(np.ndarray):
        pass

    def make(block_info=None):
        loc = block_info[None]["chunk-location"]
        rng = np.random.default_rng([seed, *loc])
        img = np.full((chunk, chunk), 110.0, np.float32)
        for cy, cx in rng.uniform(6, chunk - 6, (5, 2)):
            y0, x0 = int(cy) - 6, int(cx) - 6
            yy, xx = np.mgrid[y0:y0 + 13, x0:x0 + 13]
            img[y0:y0 + 13, x0:x0 + 13] += 800 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.3**2))
        img += rng.normal(0, 3, img.shape).astype(np.float32)
        out = img.view(Tracked)
        key = id(out)
        with lock:
            live.add(key)
            peak[0] = max(peak[0], len(live))
        weakref.finalize(out, live.discard, key)
        return out

    arr = da.map_blocks(make, chunks=((chunk,) * (n // chunk),) * 2, dtype=np.float32,
                        meta=np.empty((0, 0), np.float32))
    return cl.as_image(arr, pixel_size=0.1), peak


@pytest.mark.slow
def test_dask_8192_same_as_numpy_and_few_chunks_in_memory():
    img, peak = _tracked_image(8192, 1024)
    lazy = detect_fiducials(img, diameter=(0.3, 0.3))
    assert peak[0] <= 8, f"{peak[0]} of 64 chunks were in memory at once"
    ref = detect_fiducials(img.copy(data=img.data.compute()), diameter=(0.3, 0.3))
    assert len(lazy) == len(ref) == 64 * 5
    np.testing.assert_allclose(lazy[["x", "y", "sigma"]].to_numpy(), ref[["x", "y", "sigma"]].to_numpy(),
                               rtol=0, atol=1e-9)


def test_dask_chunk_borders_no_duplicates():
    small = synthetic_clem_small(seed=4)
    em = small.em
    lazy = detect_fiducials(em.chunk({"y": 200, "x": 200}), polarity="dark", diameter=(0.15, 0.25))
    ref = detect_fiducials(em, polarity="dark", diameter=(0.15, 0.25))
    assert len(lazy) == len(ref) == len(small.fiducials_em)
    np.testing.assert_allclose(lazy[["x", "y"]].to_numpy(), ref[["x", "y"]].to_numpy(), atol=1e-9)


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("data, match", [
    (np.zeros((0, 5)), "image is empty"),
    (np.full((40, 40), 7.0), "image is constant"),
    (np.where(np.eye(40) > 0, np.nan, 1.0), "NaN or infinite"),
])
def test_detect_bad_images(data, match):
    with pytest.raises(ImageError, match=match):
        detect_fiducials(cl.as_image(data, pixel_size=0.1))


def test_detect_no_candidates_message():
    rng = np.random.default_rng(0)
    noise = cl.as_image(rng.normal(100, 3, (64, 64)), pixel_size=0.1)
    with pytest.raises(ImageError, match=r"no fiducials found .*; try the other polarity"):
        detect_fiducials(noise, diameter=0.3)


def test_detect_bad_arguments():
    d = synthetic_clem_small(seed=0)
    with pytest.raises(ImageError, match=r"3 channels .*image.sel\(c='beads'\)"):
        detect_fiducials(d.lm)
    with pytest.raises(ImageError, match="polarity must be 'bright' or 'dark'"):
        detect_fiducials(d.em, polarity="black")
    with pytest.raises(ImageError, match="diameter range must satisfy"):
        detect_fiducials(d.em, diameter=(0.3, 0.1))
    with pytest.raises(ImageError, match="xarray.DataArray"):
        detect_fiducials(d.em.values)
    with pytest.raises(ImageError, match="method='mle' .* needs polarity='bright'"):
        detect_fiducials(d.em, polarity="dark", gain=2)
    with pytest.raises(ImageError, match="min_snr must be a finite number"):
        detect_fiducials(d.em, min_snr="high")


# ----------------------------------------------------------------------------- matching
def _trial(seed, mirror=None):
    t = matching_trial(seed, mirror=mirror, shift=50.0)
    return t.lm, t.em, t.truth, t.mirrored, t.transform


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_match_unknown_similarity_mirror_and_extras(seed):
    lm, em, truth, mirror, tf = _trial(seed)
    m = match_fiducials(lm, em)
    assert isinstance(m, FiducialMatch)
    assert all(truth.get(int(i)) == int(j) for i, j in zip(m.src_index, m.dst_index))
    assert m.n_inliers >= 0.97 * len(truth)
    assert m.mirrored == mirror
    assert m.transform.scale == pytest.approx(tf.scale, rel=1e-3)
    assert m.src_inlier.sum() == m.dst_inlier.sum() == m.n_inliers == len(m.landmarks)
    np.testing.assert_allclose(m.landmarks.src(), lm[m.src_index])


def test_match_detection_tables_on_synthetic_sample(sample):
    p = sample.params
    lm = detect_fiducials(sample.lm.sel(c="beads"), diameter=(0.2, 0.5),
                          gain=p["gain_adu_per_e"], offset=p["offset_adu"])
    em = detect_fiducials(sample.em, polarity="dark", diameter=(0.1, 0.3))
    m = match_fiducials(lm, em, model="affine")
    assert m.n_inliers == len(sample.fiducials_em)
    truth = sample.transform(lm[["x", "y"]].to_numpy()[m.src_index])
    assert np.abs(truth - em[["x", "y"]].to_numpy()[m.dst_index]).max() < 0.03
    assert m.landmarks.has_sigma
    err = np.linalg.norm(m.registration.map_points(sample.targets_lm) - sample.targets_em, axis=1)
    assert err.max() < 0.02  # µm


def test_match_without_mirror_refuses_mirrored_sets():
    lm, em, _, _, _ = _trial(5, mirror=True)
    with pytest.raises(RegistrationError, match="no consistent match"):
        match_fiducials(lm, em, allow_mirror=False)


def test_match_unrelated_sets_say_no_match():
    rng = np.random.default_rng(7)
    with pytest.raises(RegistrationError, match="no consistent match"):
        match_fiducials(rng.uniform(0, 100, (80, 2)), rng.uniform(0, 100, (80, 2)))


def test_match_bad_input_messages():
    with pytest.raises(cl.LandmarkError, match="src has 2 points; matching needs at least 3"):
        match_fiducials(np.zeros((2, 2)), np.ones((10, 2)))
    with pytest.raises(cl.LandmarkError, match=r"dst must have shape \(N, 2\)"):
        match_fiducials(np.zeros((5, 2)), np.ones((10, 3)))
    with pytest.raises(cl.LandmarkError, match="NaN"):
        match_fiducials(np.full((5, 2), np.nan), np.ones((10, 2)))
    with pytest.raises(RegistrationError, match="scale_range must satisfy"):
        match_fiducials(np.random.default_rng(0).random((9, 2)), np.ones((10, 2)), scale_range=(2, 1))

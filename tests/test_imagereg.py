"""register_images: ground truth from synthetic_cells (with each representation), refusal on
pairs that do not match, and the real DeepCLEM array-tomography pair."""

import numpy as np
import pytest

import clemlab as cl
from clemlab.datasets import synthetic_cells

LM_PX = 0.2  # µm, synthetic_cells' default LM pixel size


def _rms_error_lm_px(d, tf):
    """RMS error (LM pixels) of ``tf`` against the truth over a 5 x 5 grid across the EM field."""
    size = d.em.shape[0] * d.params["em_pixel_size"]
    ys, xs = np.mgrid[0.1:0.9:5j, 0.1:0.9:5j] * size
    q = np.c_[xs.ravel(), ys.ravel()]
    p = d.true_inverse(q)
    return float(np.sqrt(np.mean(np.sum((tf(p) - q) ** 2, axis=1)))) / d.params["scale"] / LM_PX


@pytest.fixture(scope="module")
def mirrored():
    return synthetic_cells(1, mirror=True, rotation=94.0, scale=1.2)


def test_synthetic_cells_truth_is_consistent(mirrored):
    d = mirrored
    assert np.linalg.det(d.transform.linear) < 0
    p = np.array([[30.0, 40.0], [60.0, 55.0]])
    assert np.allclose(d.true_inverse(d.true_map(p)), p)
    dd = synthetic_cells(2, distortion=0.4, rotation=10.0)
    assert np.allclose(dd.true_inverse(dd.true_map(p)), p, atol=1e-6)
    assert not np.allclose(dd.true_map(p), dd.transform(p), atol=0.05)


def test_automatic_recovers_truth(mirrored):
    m = cl.register_images(mirrored.lm, mirrored.em)
    assert m.verdict == "good", m.why
    assert np.linalg.det(m.registration.transform.linear) < 0
    assert _rms_error_lm_px(mirrored, m.registration.transform) < 0.5
    # a normal Registration: landmarks with per-match uncertainty, predicted error
    lms = m.registration.landmarks
    assert lms.has_sigma and len(lms.src()) >= 6
    assert np.all(m.registration.predicted_error(lms.src()) < 0.5)


def test_from_two_rough_clicks():
    d = synthetic_cells(3, rotation=202.0, scale=0.85)
    rng = np.random.default_rng(0)
    em_n = d.true_map(d.nuclei_lm)
    size = d.em.shape[0] * d.params["em_pixel_size"]
    idx = np.flatnonzero(np.all((em_n > 4) & (em_n < size - 4), axis=1))
    i, j = idx[0], idx[np.argmax(np.linalg.norm(em_n[idx] - em_n[idx[0]], axis=1))]
    clicks = cl.Landmarks.from_points(d.nuclei_lm[[i, j]] + rng.normal(0, 0.7, (2, 2)),
                                      em_n[[i, j]] + rng.normal(0, 0.7, (2, 2)))
    m = cl.register_images(d.lm, d.em, initial=clicks)
    assert m.verdict == "good", m.why
    assert _rms_error_lm_px(d, m.registration.transform) < 0.5
    # a transform as start gives the same answer
    m2 = cl.register_images(d.lm, d.em, initial=m.start)
    assert _rms_error_lm_px(d, m2.registration.transform) < 0.5


@pytest.mark.parametrize("seed", [0, 3])
def test_refuses_different_fields(seed):
    a, b = synthetic_cells(seed), synthetic_cells(seed + 50)
    m = cl.register_images(a.lm, b.em)
    assert m.verdict in ("failed", "ambiguous"), m.why
    assert m.confidence < 0.5


def test_refuses_different_fields_from_clicks():
    a, b = synthetic_cells(4), synthetic_cells(54)
    clicks = cl.Landmarks.from_points([[40.0, 40.0], [60.0, 55.0]], [[10.0, 10.0], [30.0, 25.0]])
    m = cl.register_images(a.lm, b.em, initial=clicks)
    assert m.verdict in ("failed", "ambiguous"), m.why


# --- the other representations: MIND descriptors and mutual information -----------------
NEW_KINDS = ("mind", "mi")
PAIRS = [dict(seed=11, rotation=137.0, scale=1.1), dict(seed=12, rotation=250.0, scale=0.9, mirror=True)]


@pytest.mark.parametrize("kind", NEW_KINDS)
@pytest.mark.parametrize("pair", PAIRS, ids=["rot137", "mirror250"])
def test_representation_recovers_truth(kind, pair):
    d = synthetic_cells(**pair)
    m = cl.register_images(d.lm, d.em, representation=kind)
    assert m.verdict == "good", m.why
    assert _rms_error_lm_px(d, m.registration.transform) < 1.0
    assert np.linalg.det(m.registration.transform.linear) < 0 if pair.get("mirror") else True


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_representation_ignores_the_contrast_sign(kind):
    # EM not inverted: its dark chromatin meets the LM's bright stain; MIND and MI do not care
    d = synthetic_cells(**PAIRS[0])
    m = cl.register_images(d.lm, d.em, representation=kind, invert=False)
    assert m.verdict == "good", m.why
    assert _rms_error_lm_px(d, m.registration.transform) < 1.0


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_representation_refuses_different_fields(kind):
    a, b = synthetic_cells(6), synthetic_cells(56)
    m = cl.register_images(a.lm, b.em, representation=kind)
    assert m.verdict != "good", m.why
    assert m.confidence < 0.5


def test_unknown_representation_is_refused():
    d = synthetic_cells(5, rotation=0.0, scale=1.0)
    with pytest.raises(ValueError, match="representation"):
        cl.register_images(d.lm, d.em, representation="sift")


def test_multichannel_needs_channel():
    d = synthetic_cells(5, rotation=0.0, scale=1.0)
    lm2 = cl.as_image(np.stack([d.lm.values, d.lm.values]), pixel_size=LM_PX, channels=["Hoechst", "GFP"],
                      modality="LM")
    with pytest.raises(cl.ImageError, match="channel="):
        cl.register_images(lm2, d.em)


# --- the real DeepCLEM pair (C. elegans array tomography; no pixel sizes stored) ---------
DEEPCLEM_PX = 0.015  # µm per pixel, passed by hand to both images (nuclei ~4 µm across)
# Nucleus centres clicked by eye on the full images (pixels (col, row)): the three nuclei seen
# in both, EM left, middle, right and their Hoechst partners; each uncertain by about 10 px
# (the centre of an ellipse judged by eye). They place the rough clicks below.
LM_NUCLEI_PX = np.array([[225, 611], [554, 721], [935, 585]], float)
EM_NUCLEI_PX = np.array([[180, 310], [510, 390], [870, 200]], float)
# The careful landmark set, pixels (LM col, row, EM col, row): 14 heterochromatin blobs seen
# in both (5 in the left nucleus, 6 in the middle one, 3 in the right one), made by hand independently of register_images: the LM was brought onto the EM by the
# similarity through the three nucleus centres above; blobs were paired by eye on zoomed
# crops of the EM with the LM blob outlines drawn over it; each LM point is its blob's
# intensity-weighted centroid (threshold 100 of 255); its EM partner was refined by NCC of a
# 45 x 45 px patch of the LM so placed against the inverted EM (Gaussian blur 3 px) within
# +-18 px, with a parabolic sub-pixel peak. Pairs whose peak NCC was below 0.7 were left out.
# A similarity fits them with 3.0 px (45 nm) RMS residual.
CAREFUL_PX = np.array([
    [218.5, 601.0, 172.8, 306.8], [280.8, 579.9, 230.4, 274.7], [251.6, 533.8, 193.6, 233.1],
    [114.9, 688.8, 79.3, 401.4], [173.5, 720.9, 146.5, 425.5], [588.5, 678.3, 544.7, 332.0],
    [621.3, 712.5, 579.8, 363.9], [500.1, 728.3, 463.5, 395.1], [506.1, 773.6, 474.9, 440.0],
    [581.6, 802.7, 551.3, 460.4], [656.0, 685.9, 613.8, 332.4], [916.6, 570.8, 854.7, 183.7],
    [991.0, 537.6, 926.4, 144.9], [959.9, 587.6, 895.0, 201.6]])


@pytest.fixture(scope="module")
def deepclem(shared_data):
    iio = pytest.importorskip("imageio.v3")
    em = iio.imread(shared_data("deepclem/example_unregistered/EM.png"))[..., 0]
    lm = iio.imread(shared_data("deepclem/example_unregistered/Chromatin.png"))[..., 2]  # Hoechst: blue
    return (cl.as_image(lm, pixel_size=DEEPCLEM_PX, modality="LM"),
            cl.as_image(em, pixel_size=DEEPCLEM_PX, modality="EM"))


def test_deepclem_from_rough_clicks_agrees_with_careful_landmarks(deepclem):
    lm, em = deepclem
    careful = cl.register(cl.Landmarks.from_points(CAREFUL_PX[:, :2] * DEEPCLEM_PX, CAREFUL_PX[:, 2:] * DEEPCLEM_PX),
                          "similarity")
    assert careful.rms < 4 * DEEPCLEM_PX
    # points over the EM field (10 % to 90 % of it), in the LM frame
    ys, xs = np.mgrid[0.1:0.9:4j, 0.1:0.9:5j]
    grid = careful.transform.inverse(np.c_[xs.ravel() * em.sizes["x"], ys.ravel() * em.sizes["y"]] * DEEPCLEM_PX)
    rng = np.random.default_rng(1)
    results = []
    for pair in [(0, 1), (1, 2), (0, 2)]:
        # rough clicks: the nucleus centres moved by 0.3 µm (20 px) per axis, 1-sigma
        k = list(pair)
        clicks = cl.Landmarks.from_points(LM_NUCLEI_PX[k] * DEEPCLEM_PX + rng.normal(0, 0.3, (2, 2)),
                                          EM_NUCLEI_PX[k] * DEEPCLEM_PX + rng.normal(0, 0.3, (2, 2)))
        m = cl.register_images(lm, em, initial=clicks)
        assert m.verdict == "good", m.why
        results.append(m)
        # agrees with the careful registration within their combined stated error (3 sigma)
        diff = np.linalg.norm(m.transform(grid) - careful.transform(grid), axis=1)
        stated = 3 * np.hypot(careful.predicted_error(grid), m.registration.predicted_error(grid))
        assert np.all(diff <= stated), (diff / DEEPCLEM_PX, stated / DEEPCLEM_PX)
    # the fully automatic search (no clicks) finds the same pose
    auto = cl.register_images(lm, em)
    assert auto.verdict == "good", auto.why
    diff = np.linalg.norm(auto.transform(grid) - careful.transform(grid), axis=1)
    assert np.all(diff <= 3 * np.hypot(careful.predicted_error(grid), auto.registration.predicted_error(grid)))
    # identical from the three pairs of clicks, within the stated (predicted) error
    ref = results[0].registration
    for m in results[1:]:
        diff = np.linalg.norm(m.transform(grid) - ref.transform(grid), axis=1)
        stated = 3 * np.hypot(ref.predicted_error(grid), m.registration.predicted_error(grid))
        assert np.all(diff <= stated), (diff, stated)

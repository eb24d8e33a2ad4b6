"""register_images: ground truth from synthetic_cells, refusal on pairs that do not match,
and the real DeepCLEM array-tomography pair."""

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


def test_multichannel_needs_channel():
    d = synthetic_cells(5, rotation=0.0, scale=1.0)
    lm2 = cl.as_image(np.stack([d.lm.values, d.lm.values]), pixel_size=LM_PX, channels=["Hoechst", "GFP"],
                      modality="LM")
    with pytest.raises(cl.ImageError, match="channel="):
        cl.register_images(lm2, d.em)


# --- the real DeepCLEM pair (C. elegans array tomography; no pixel sizes stored) ---------
DEEPCLEM_PX = 0.015  # µm per pixel, passed by hand to both images (nuclei ~4 µm across)
# Nucleus centres clicked by eye on the full images (pixels (col, row)), read off the three
# nuclei seen in both: EM left, middle, right and their Hoechst partners. Each is uncertain by
# about 10 px (0.15 µm): the centre of an ellipse judged by eye.
LM_NUCLEI_PX = np.array([[225, 611], [554, 721], [935, 585]], float)
EM_NUCLEI_PX = np.array([[180, 310], [510, 390], [870, 200]], float)


@pytest.fixture(scope="module")
def deepclem(shared_data):
    iio = pytest.importorskip("imageio.v3")
    em = iio.imread(shared_data("deepclem/example_unregistered/EM.png"))[..., 0]
    lm = iio.imread(shared_data("deepclem/example_unregistered/Chromatin.png"))[..., 2]  # Hoechst: blue
    return (cl.as_image(lm, pixel_size=DEEPCLEM_PX, modality="LM"),
            cl.as_image(em, pixel_size=DEEPCLEM_PX, modality="EM"))


def test_deepclem_from_rough_clicks_agrees_with_clicked_landmarks(deepclem):
    lm, em = deepclem
    careful = cl.register(cl.Landmarks.from_points(LM_NUCLEI_PX * DEEPCLEM_PX, EM_NUCLEI_PX * DEEPCLEM_PX),
                          "similarity")
    rng = np.random.default_rng(1)
    grid = np.stack(np.meshgrid(np.linspace(2, 13, 4), np.linspace(6, 12, 3)), -1).reshape(-1, 2)  # LM µm
    results = []
    for pair in [(0, 1), (1, 2), (0, 2)]:
        # rough clicks: the careful centres moved by ~1 µm-scale errors (0.3 µm here: the field is 8 µm)
        k = list(pair)
        clicks = cl.Landmarks.from_points(LM_NUCLEI_PX[k] * DEEPCLEM_PX + rng.normal(0, 0.3, (2, 2)),
                                          EM_NUCLEI_PX[k] * DEEPCLEM_PX + rng.normal(0, 0.3, (2, 2)))
        m = cl.register_images(lm, em, initial=clicks)
        assert m.verdict != "failed", m.why
        results.append(m)
        # agrees with the clicked nucleus centres within their own uncertainty (10 px)
        d = np.linalg.norm(m.registration.transform(LM_NUCLEI_PX * DEEPCLEM_PX) - EM_NUCLEI_PX * DEEPCLEM_PX, axis=1)
        assert np.all(d < 15 * DEEPCLEM_PX), d / DEEPCLEM_PX
        assert np.all(np.linalg.norm(m.registration.transform(grid) - careful.transform(grid), axis=1) < 0.3)
    # identical from the three pairs of clicks, within the stated (predicted) error
    ref = results[0].registration
    for m in results[1:]:
        diff = np.linalg.norm(m.registration.transform(grid) - ref.transform(grid), axis=1)
        stated = 3 * np.hypot(ref.predicted_error(grid), m.registration.predicted_error(grid)) + 1e-3
        assert np.all(diff <= stated), (diff, stated)

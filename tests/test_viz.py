"""Static figures: overlay blending, scale bar, residual quiver, error map."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import clemlab as cl  # noqa: E402
from clemlab import viz  # noqa: E402


@pytest.fixture(scope="module")
def sample():
    from clemlab.datasets import synthetic_clem_small

    s = synthetic_clem_small(seed=3)
    rng = np.random.default_rng(0)
    lms = cl.Landmarks.from_points(s.fiducials_lm + rng.normal(0, 0.03, s.fiducials_lm.shape),
                                   s.fiducials_em + rng.normal(0, 0.005, s.fiducials_em.shape))
    return s, cl.register(lms, "affine")


def test_stretch_and_composite():
    a = np.arange(100.0).reshape(10, 10)
    s = viz.stretch(a, 0, 100)
    assert s.min() == 0 and s.max() == 1 and np.all(np.diff(s.ravel()) >= 0)
    img = cl.as_image(np.stack([a, a[::-1]]), pixel_size=1, channels=["g", "m"], colors={"g": "#00ff00", "m": "#ff00ff"})
    rgb = viz.composite_rgb(img)
    np.testing.assert_allclose(rgb[..., 1], viz.stretch(a))  # green only from "g"
    np.testing.assert_allclose(rgb[..., 0], viz.stretch(a[::-1]))  # red only from "m"


def test_overlay_alpha_zero_shows_em_only(sample):
    s, reg = sample
    corr = cl.correlate(s.em, s.lm, reg)
    fig = cl.plot_overlay(corr, alpha=0.0, scale_bar=False)
    shown = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(shown[..., 0], viz.stretch(s.em.values, 0.5, 99.5))
    plt.close(fig)
    fig = cl.plot_overlay(corr, alpha=1.0, channels=["GFP"])
    assert not np.allclose(fig.axes[0].images[0].get_array()[..., 0], viz.stretch(s.em.values, 0.5, 99.5))
    plt.close(fig)
    with pytest.raises(ValueError, match="alpha must be between 0 and 1"):
        cl.plot_overlay(corr, alpha=2)


def test_scale_bar_is_a_nice_length():
    fig, ax = plt.subplots()
    length = viz.add_scale_bar(ax, (0.0, 20.48, 20.48, 0.0))
    assert length == 2.0
    assert [t.get_text() for t in ax.texts] == ["2 µm"]
    assert viz._format_length(0.5) == "500 nm" and viz._nice_length(3.0) == 0.5
    plt.close(fig)


def test_residual_plot_draws_every_pair(sample):
    s, reg = sample
    fig = viz.plot_residuals(reg)
    quiver = fig.axes[0].collections[0]
    assert len(quiver.get_offsets()) == len(reg.residuals)
    np.testing.assert_allclose(quiver.get_offsets(), reg.landmarks.dst())
    plt.close(fig)


def test_error_map_in_target_frame(sample):
    s, reg = sample
    em_map = reg.error_map(s.em, step=32)
    q = np.array([[float(em_map.x[2]), float(em_map.y[5])]])
    expected = reg.predicted_error(reg.transform.inverse(q))[0]
    assert float(em_map[5, 2]) == pytest.approx(expected)
    fig = viz.plot_error_map(reg, s.em)
    assert fig.axes[-1].get_ylabel() == "predicted mapping error (nm)"
    plt.close(fig)

"""Static figures: overlay blending, legend, residual arrows, scale bar, residual quiver, error map."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

import clemlab as cl
from clemlab import viz


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


def test_overlay_legend_names_channels_in_their_colours(sample):
    s, reg = sample
    corr = cl.correlate(s.em, s.lm, reg)
    ax = Figure().add_subplot()  # no pyplot: nothing global is touched
    cl.plot_overlay(corr, ax=ax, colors={"GFP": "#00ff00"})
    leg = ax.get_legend()
    labels = [t.get_text() for t in leg.get_texts()]
    assert labels == ["LM nuclei", "LM GFP", "LM beads", "EM"]
    from matplotlib.colors import to_hex

    assert to_hex(leg.legend_handles[1].get_facecolor()) == "#00ff00"


def test_overlay_residual_arrows_are_scaled_and_stated(sample):
    s, reg = sample
    corr = cl.correlate(s.em, s.lm, reg)
    ax = Figure().add_subplot()
    cl.plot_overlay(corr, ax=ax, registration=reg, arrow_scale=50, title="t")
    quiver = next(c for c in ax.collections if hasattr(c, "U"))
    np.testing.assert_allclose(quiver.get_offsets(), reg.landmarks.dst())
    np.testing.assert_allclose(np.c_[quiver.U, quiver.V], reg.residual_vectors * 50)
    texts = [t.get_text() for t in ax.texts] + [c.text.get_text() for c in ax.artists if hasattr(c, "text")]
    assert any(re.fullmatch(r"\d+ (nm|µm) residual \(arrows x50\)", t) for t in texts), texts
    assert "residuals x50" in [t.get_text() for t in ax.get_legend().get_texts()]
    # default magnification: a 1-2-5 value drawing the longest arrow at most a twelfth of the field
    ax2 = Figure().add_subplot()
    cl.plot_overlay(corr, ax=ax2, registration=reg)
    q2 = next(c for c in ax2.collections if hasattr(c, "U"))
    longest = np.hypot(q2.U, q2.V).max()
    width = float(np.ptp(corr["EM"].x.values)) + 0.01
    assert width / 30 < longest <= width / 12 * 1.001

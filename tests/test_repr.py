"""Rich notebook display: images (cl.describe), registrations, landmark tables, montages."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest

import clemlab as cl
from clemlab.datasets import synthetic_clem_small


@pytest.fixture(scope="module")
def sample():
    return synthetic_clem_small(seed=0)


def _no_dumps(text: str) -> None:
    assert "clem:transforms" not in text and "{'" not in text and '{"' not in text
    assert not re.search(r"\b[0-9a-f]{8,}\b", re.sub(r"data:image/png;base64,[^'\"]+", "", text))


def test_describe_an_image_in_physical_units(sample):
    summary = cl.describe(sample.lm)
    h = summary._repr_html_()
    assert "128 y" in h and "100 nm" in h and "12.8 µm" in h and "LM" in h
    for ch, col in sample.lm.attrs["colors"].items():
        assert ch in h and col in h
    assert "in memory" in h
    _no_dumps(h)
    assert "pixel size: 100 nm" in repr(summary)
    lazy = sample.em.chunk(128)
    assert "lazy (dask): 16 chunks of 128 × 128" in cl.describe(lazy)._repr_html_()


def test_describe_names_where_the_pixel_size_came_from(shared_data):
    img = cl.open_image(shared_data("rosettasciio-calibrated/test_dm_image_um_unit.dm3"))
    h = cl.describe(img)._repr_html_()
    assert "from DM calibration" in h and "Gatan DigitalMicrograph" in h
    _no_dumps(h)


def test_registration_display_has_errors_verdict_and_a_residual_plot(sample):
    rng = np.random.default_rng(0)
    lms = cl.Landmarks.from_points(sample.fiducials_lm + rng.normal(0, 0.03, sample.fiducials_lm.shape),
                                   sample.fiducials_em, sigma_src=0.03, sigma_dst=0.005)
    reg = cl.register(lms, "similarity")
    h = reg._repr_html_()
    loo = np.sqrt(np.nanmean(reg.loo_errors ** 2)) * 1e3
    assert f"{reg.rms * 1e3:.3g} nm" in h and f"{loo:.3g} nm" in h
    assert "verdict" in h and ">good</b>" in h
    png = re.search(r"data:image/png;base64,([^'\"]+)", h).group(1)
    from PIL import Image

    assert Image.open(io.BytesIO(base64.b64decode(png))).size[0] > 100
    _no_dumps(h)
    # a wrong pair changes the verdict, in words that say what to do
    bad = lms.dst().copy()
    bad[2] += [0.8, 0.0]
    wrong = cl.register(cl.Landmarks.from_points(lms.src(), bad, sigma_src=0.03, sigma_dst=0.005), "similarity")
    hw = wrong._repr_html_()
    assert ">check</b>" in hw and "P3" in hw and "robust=True" in hw


def test_registration_verdict_without_left_out_errors(sample):
    reg = cl.register(cl.Landmarks.from_points(sample.fiducials_lm[:3], sample.fiducials_em[:3]), "affine")
    assert ">unchecked</b>" in reg._repr_html_() and "add landmarks" in reg._repr_html_()


def test_landmarks_display(sample):
    lms = cl.Landmarks.from_points(sample.fiducials_lm, sample.fiducials_em)
    lms.set_active("P2", False)
    h = lms._repr_html_()
    assert "6 pairs (5 used)" in h and "LM x (µm)" in h and "EM y (µm)" in h
    assert f"{sample.fiducials_em[0, 0]:.3f}" in h and h.count(">no<") == 1
    _no_dumps(h)
    assert "no pairs yet" in cl.Landmarks()._repr_html_()


def test_montage_display(shared_data):
    from clemlab.mosaic import Montage

    h = Montage(shared_data("mdocfile-serialem-mdoc/montage_section.mdoc"))._repr_html_()
    assert "62 tiles of 5064 × 3976 px" in h and "65.6 nm" in h and "7 × 9 frames" in h
    _no_dumps(h)

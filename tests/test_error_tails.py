"""Exactly determined projective/polynomial fits: the plain-words warning about their error."""

from __future__ import annotations

import numpy as np
import pytest

from clemlab import Landmarks, register
from clemlab import transforms as T


@pytest.mark.parametrize("model, minimum", [("projective", 4), ("polynomial2", 6)])
def test_exactly_determined_fit_is_flagged_in_plain_words(model, minimum):
    rng = np.random.default_rng(12)
    truth = T.Projective(matrix=[[0.99, -0.1, 3.0], [0.1, 1.01, -2.0], [1e-3, -5e-4, 1.0]])
    src = rng.uniform(0, 50, (minimum + 1, 2))
    dst = truth(src) + rng.normal(0, 0.01, src.shape)
    exact = register(Landmarks.from_points(src[:minimum], dst[:minimum], sigma_src=0.01, sigma_dst=0.005),
                     model, n_bootstrap=20)
    text = (f"The {model} fit is exactly determined: {minimum} pairs for the {minimum} it needs, so it passes "
            "through every landmark and nothing checks them (no residuals, no left-out errors). Its error can "
            "be heavy-tailed")
    hits = [w for w in exact.warnings if w.startswith(text)]
    assert len(hits) == 1 and "Add landmarks spread over the field" in hits[0]
    assert f"WARNING: {hits[0]}" in exact.summary() and "exactly determined" in exact._repr_html_()
    # one pair more: residuals and left-out errors exist, no such warning
    more = register(Landmarks.from_points(src, dst, sigma_src=0.01, sigma_dst=0.005), model, n_bootstrap=20)
    assert np.isfinite(more.loo_errors).all()
    assert not any("exactly determined" in w for w in more.warnings)


def test_linear_minimal_fit_not_flagged():
    # the warning is limited to the projective and polynomial models, as documented
    rng = np.random.default_rng(13)
    src = rng.uniform(0, 50, (3, 2))
    reg = register(Landmarks.from_points(src, src + [5.0, -2.0] + rng.normal(0, 0.01, src.shape)), "affine")
    assert not any("exactly determined" in w for w in reg.warnings)

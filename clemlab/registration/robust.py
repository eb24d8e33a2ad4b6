"""Robust fitting: which landmark pairs does a model explain? (RANSAC over minimal sets)."""

from __future__ import annotations

import numpy as np

from .. import transforms as _tf
from ..errors import RegistrationError
from .noise import OUTLIER_P

__all__: list[str] = []

#: Models RANSAC samples directly. Polynomial and thin-plate-spline models are screened with
#: an affine model instead: a thin-plate spline through a minimal set is affine.
_SCREENED_DIRECTLY = (_tf.Translation, _tf.Rigid, _tf.Similarity, _tf.Affine, _tf.Projective)


def ransac_inliers(cls: type[_tf.Transform], src: np.ndarray, dst: np.ndarray,
                   var: np.ndarray | None, options: dict, rng: np.random.Generator,
                   max_trials: int = 2000) -> np.ndarray:
    """Inlier mask ``(N,)`` of landmark pairs by RANSAC over minimal sets.

    Parameters
    ----------
    cls : type
        Transform class of the model to be fitted.
    src, dst : numpy.ndarray, shape (N, D)
        Active pairs, µm, ``(x, y[, z])``.
    var : numpy.ndarray, shape (N,), or None
        Known per-axis noise variance of each pair (µm², target frame), or None when unknown.
    options : dict
        Model options (only ``allow_reflection`` reaches the screening model).
    rng : numpy.random.Generator
        Source of the minimal sets (seed it for reproducible results).
    max_trials : int
        Upper bound on the number of minimal sets tried.

    Returns
    -------
    numpy.ndarray of bool, shape (N,)

    Notes
    -----
    With known noise each trial is scored by MSAC (truncated chi-square cost) and pairs
    within the ``OUTLIER_P`` chi-square bound are inliers. With unknown noise the score is
    the median squared residual (least median of squares) and the noise scale comes from
    that median with a small-sample correction. The number of trials adapts to the inlier
    fraction seen so far, for 99.9 % confidence of drawing one clean set. The best set's
    inliers are then refined by refitting until they stop changing (at most 5 rounds).
    """
    from scipy.stats import chi2

    n, k = src.shape
    known_noise = var is not None
    screen = cls if cls in _SCREENED_DIRECTLY else _tf.Affine
    sopts = {key: v for key, v in options.items() if key == "allow_reflection" and screen in (_tf.Rigid, _tf.Similarity)}
    m = screen.required_points(k)
    if n <= m:
        raise RegistrationError(
            f"robust fitting needs more than {m} landmark pairs for a {screen.__name__.lower()} "
            f"screening model, got {n}"
        )
    gate = chi2.ppf(OUTLIER_P, k)
    best, best_score = None, np.inf
    trials, needed = 0, max_trials
    while trials < min(needed, max_trials):
        trials += 1
        idx = rng.choice(n, m, replace=False)
        tf = screen.from_estimate(src[idx], dst[idx], **sopts)
        if not tf:
            continue
        r2 = np.sum((tf(src) - dst) ** 2, axis=1)
        if known_noise:
            score = np.sum(np.minimum(r2 / var, gate))
        else:
            score = np.median(r2)
        if score < best_score:
            best, best_score = tf, score
            # adaptive number of trials for 99.9 % confidence of one clean sample
            if known_noise:
                frac = np.mean(r2 / var < gate)
            else:
                s2 = score / chi2.ppf(0.5, k) * (1 + 5.0 / max(n - m, 1)) ** 2
                frac = np.mean(r2 < gate * s2)
            if frac > 0:
                needed = int(np.ceil(np.log(1e-3) / np.log(max(1e-12, 1 - frac**m)))) if frac < 1 else 1
                needed = max(needed, 50)
    if best is None:
        raise RegistrationError("robust fitting found no minimal set that determines the model; check the landmarks")
    inl = np.ones(n, bool)
    tf = best
    for _ in range(5):
        r2 = np.sum((tf(src) - dst) ** 2, axis=1)
        if known_noise:
            new = r2 / var < gate
        else:
            # robust scale (LMedS with small-sample correction), then a chi-square gate
            s2 = np.median(r2) / chi2.ppf(0.5, k) * (1 + 5.0 / max(n - m, 1)) ** 2
            new = r2 < gate * s2
        if new.sum() < m:
            break
        if np.array_equal(new, inl) and tf is not best:
            break
        inl = new
        refit = screen.from_estimate(src[inl], dst[inl], **sopts)
        if not refit:
            break
        tf = refit
    return inl

"""Robust fitting: which landmark pairs does a model explain? (RANSAC over minimal sets).

Each minimal set proposes a transform; its *consensus* is the pairs it maps close to their
partners. A consensus only means something if random pairs could not have produced it: with
``n`` pairs, a minimal set of ``m`` and a consensus of ``k`` pairs within distance ``r``, the
expected number of equally good consensuses among unrelated pairs (the *number of false
alarms*, Moisan & Stival's a-contrario test) is

    NFA(k) = (n - m) C(n, k) C(k, m) alpha(r)^(k - m),

``alpha(r)`` being the chance that an unrelated target lands within ``r`` of its prediction: the
volume of a ball of radius ``r`` over the volume the targets spread over (their bounding box).
The consensus kept is the one with the smallest NFA over all minimal sets tried. When even
that NFA is not below :data:`MAX_NFA` the landmarks hold no consensus distinguishable from
chance (too many outliers for the number of pairs), and :func:`ransac_inliers` refuses
instead of returning a fit to a handful of pairs that agree by luck.

With unknown noise, ``r`` is chosen per minimal set (the ``k``-th smallest residual, every
``k``), which makes the test scale-free and lets it work beyond 50 % outliers, where a median
of residuals (least median of squares) breaks down. With known noise, ``r`` is the
``OUTLIER_P`` chi-square bound of the pairs' noise and each minimal set's consensus is the
pairs within that bound.
"""

from __future__ import annotations

import numpy as np

from .. import transforms as _tf
from ..errors import RegistrationError
from .noise import OUTLIER_P

__all__: list[str] = []

#: Models RANSAC samples directly. Polynomial and thin-plate-spline models are screened with
#: an affine model instead: a thin-plate spline through a minimal set is affine.
_SCREENED_DIRECTLY = (_tf.Translation, _tf.Rigid, _tf.Similarity, _tf.Affine, _tf.Projective)

#: Largest number of false alarms at which a consensus counts as real (below 1: fewer than
#: one chance consensus as good is expected among unrelated pairs).
MAX_NFA = 1e-2


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

    Raises
    ------
    RegistrationError
        When no consensus is distinguishable from chance (see the module docstring): the
        message gives the consensus size, its number of false alarms and what to do.

    Notes
    -----
    The number of trials adapts to the largest consensus seen so far, for 99.9 % confidence
    of drawing one clean minimal set. The best consensus is then refined by refitting until
    it stops changing (at most 5 rounds), with the inlier gate at the ``OUTLIER_P`` bound of
    the known noise, or of the noise estimated from the consensus' own residuals.
    """
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
    chance = _ChanceModel(n, m, dst)
    gate = _chi2_gate(k)
    best_tf, best_nfa, best_size = None, np.inf, 0
    trials, needed = 0, max_trials
    while trials < min(needed, max_trials):
        trials += 1
        idx = rng.choice(n, m, replace=False)
        tf = screen.from_estimate(src[idx], dst[idx], **sopts)
        if not tf:
            continue
        r2 = np.sum((tf(src) - dst) ** 2, axis=1)
        if known_noise:
            size = int(np.sum(r2 / var < gate))
            log_nfa = chance.log_nfa(size, gate * float(np.max(var)))
        else:
            log_nfa, size = chance.best_log_nfa(r2)
        if log_nfa < best_nfa or (known_noise and log_nfa == best_nfa and size > best_size):
            best_tf, best_nfa, best_size = tf, log_nfa, size
            needed = max(50, _trials_needed(size / n, m, max_trials))
    if best_tf is None:
        raise RegistrationError("robust fitting found no minimal set that determines the model; check the landmarks")
    if best_nfa >= np.log(MAX_NFA):
        raise RegistrationError(
            f"RANSAC found no consensus among the {n} landmark pairs that random pairs could not "
            f"match by chance: the best {screen.__name__.lower()} model agrees with {best_size} "
            f"pairs ({m} define it), and about {np.exp(best_nfa):.2g} such consensus(es) are "
            "expected among unrelated pairs. Too many pairs are outliers for robust fitting to "
            "tell which are right: add more (or cleaner) pairs, deactivate the pairs you doubt, "
            "or give the localisation error (fle=) so that the inlier gate is tight."
        )
    return _refine(screen, sopts, best_tf, best_size, src, dst, var, m, gate)


def _refine(screen: type[_tf.Transform], sopts: dict, tf: _tf.Transform, size: int, src: np.ndarray,
            dst: np.ndarray, var: np.ndarray | None, m: int, gate: float) -> np.ndarray:
    """Inliers of ``tf`` refitted until they stop changing (at most 5 rounds).

    With unknown noise the first consensus is the ``size`` pairs closest to ``tf``'s
    prediction (the smallest-NFA consensus); the gate is then the ``OUTLIER_P`` bound of the
    noise the consensus' residuals show.
    """
    from scipy.stats import f as f_dist

    n, k = src.shape
    p = screen.n_params(k)
    inl = np.zeros(n, bool)
    spread = np.ones(n)  # per-axis variance of each residual, in units of the noise
    for _ in range(5):
        r2 = np.sum((tf(src) - dst) ** 2, axis=1)
        if var is not None:
            new = r2 / (var * spread) < gate
        else:
            core = inl if inl.any() else np.isin(np.arange(n), np.argsort(r2)[:size])
            dof = k * int(core.sum()) - p
            if dof <= 0:  # a minimal consensus: its pairs, nothing more can be judged
                new = core
            else:
                s2 = float(np.sum(r2[core])) / dof
                new = r2 / spread < k * f_dist.ppf(OUTLIER_P, k, dof) * s2
        if new.sum() < m or np.array_equal(new, inl):
            break
        inl = new
        refit = screen.from_estimate(src[inl], dst[inl], **sopts)
        if not refit:
            break
        tf = refit
        spread = 1.0 + _leverage(tf, src, inl, var)
    return inl if inl.sum() >= m else np.ones(n, bool)


def _leverage(tf: _tf.Transform, src: np.ndarray, inl: np.ndarray, var: np.ndarray | None) -> np.ndarray:
    """Per-axis variance ``(N,)`` of ``tf``'s prediction at every source point, in units of
    each pair's noise: a pair far from the consensus is judged with the fit's own
    uncertainty there, not as if the fit were exact."""
    jac = tf.param_jacobian(src)  # (N, K, P)
    w = np.ones(len(src)) if var is None else 1.0 / var
    info = np.einsum("nkp,nkq,n->pq", jac[inl], jac[inl], w[inl])
    cov = np.linalg.pinv(info, rcond=1e-12, hermitian=True)
    pred = np.einsum("nkp,pq,nkq->n", jac, cov, jac) / jac.shape[1]
    return pred * w


def _chi2_gate(k: int) -> float:
    from scipy.stats import chi2

    return float(chi2.ppf(OUTLIER_P, k))


def _trials_needed(frac: float, m: int, max_trials: int) -> int:
    """Minimal sets to draw for 99.9 % confidence of one clean set at inlier fraction ``frac``."""
    if frac >= 1:
        return 1
    if frac <= 0:
        return max_trials
    return int(np.ceil(np.log(1e-3) / np.log(max(1e-12, 1 - frac**m))))


class _ChanceModel:
    """Number of false alarms of a consensus among ``n`` pairs (see the module docstring)."""

    def __init__(self, n: int, m: int, dst: np.ndarray):
        from scipy.special import gammaln

        self.n, self.m = n, m
        k = dst.shape[1]
        extent = np.ptp(dst, axis=0)
        extent = np.maximum(extent, 1e-3 * max(float(extent.max()), 1e-12))
        # log of (volume of the unit ball) / (volume of the targets' bounding box)
        self.log_unit = float(k / 2 * np.log(np.pi) - gammaln(k / 2 + 1) - np.sum(np.log(extent)))
        self.half_k = k / 2
        sizes = np.arange(n + 1)
        # log((n - m) C(n, s) C(s, m)) for every consensus size s (-inf below m)
        with np.errstate(invalid="ignore"):
            log_binom = gammaln(n + 1) - gammaln(sizes + 1) - gammaln(n - sizes + 1)
            log_sub = gammaln(sizes + 1) - gammaln(m + 1) - gammaln(np.maximum(sizes - m, 0) + 1)
        self.log_count = np.log(max(n - m, 1)) + log_binom + log_sub

    def log_alpha(self, r2: np.ndarray | float) -> np.ndarray:
        """log of the chance that an unrelated target lands within ``sqrt(r2)`` (≤ 0)."""
        with np.errstate(divide="ignore"):
            return np.minimum(0.0, self.log_unit + self.half_k * np.log(r2))

    def log_nfa(self, size: int, r2: float) -> float:
        """log NFA of a consensus of ``size`` pairs within ``sqrt(r2)`` µm."""
        if size <= self.m:
            return float(np.log(max(self.n - self.m, 1)))
        return float(self.log_count[size] + (size - self.m) * self.log_alpha(r2))

    def best_log_nfa(self, r2: np.ndarray) -> tuple[float, int]:
        """Smallest log NFA over consensus sizes ``m+1 .. n`` of the squared residuals ``r2``, and that size."""
        srt = np.sort(r2)
        sizes = np.arange(self.m + 1, self.n + 1)
        if not len(sizes):
            return float(np.log(max(self.n - self.m, 1))), self.m
        log_nfa = self.log_count[sizes] + (sizes - self.m) * self.log_alpha(srt[sizes - 1])
        i = int(np.argmin(log_nfa))
        return float(log_nfa[i]), int(sizes[i])

"""Is the model too simple for the landmarks? A lack-of-fit test.

With a known localisation error (``fle=`` or per-pair uncertainties) the weighted residual
sum ``chi² = sum_i |r_i|² / v_i`` of a correct model follows a chi-square distribution with
``K N - p`` degrees of freedom; a larger value than its ``1 - LACK_OF_FIT_P`` quantile says
the residuals are larger than the noise explains. With the noise estimated from the residuals
that test is impossible (the estimate absorbs any misfit), and the model is tested instead
against the next model up (:data:`NEXT_MODEL`) by the F-test of nested least-squares fits:
``F = ((RSS - RSS') / (p' - p)) / (RSS' / (K N - p'))``.

When the chi-square test rejects the model, the predicted errors are inflated by
``sqrt(chi² / (K N - p))`` (the ratio of the residuals to what the noise explains), so a
misspecified fit at least does not claim the precision of a correct one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .models import _n_params, model_class

if TYPE_CHECKING:
    from .result import Registration

__all__ = ["LACK_OF_FIT_P", "LackOfFit"]

#: Significance level of the lack-of-fit test (chance of a warning on a correct model).
LACK_OF_FIT_P = 1e-3

#: The next more flexible model each model is tested against.
NEXT_MODEL = {"translation": "rigid", "rigid": "similarity", "similarity": "affine",
              "affine": "polynomial2", "projective": "polynomial2", "polynomial2": "polynomial3",
              "polynomial3": "tps"}


@dataclass(frozen=True)
class LackOfFit:
    """Outcome of the lack-of-fit test of a registration.

    Attributes
    ----------
    test : str
        ``"chi-square"`` (noise known) or ``"F"`` (against :attr:`next_model`).
    statistic : float
        chi² or F.
    p_value : float
        Chance of a statistic this large if the model were right.
    ratio : float
        RMS residual over what the noise explains (chi-square), or over what the next model
        up leaves (F): 1 for a model that fits.
    next_model : str or None
        The next more flexible model that could be fitted.
    next_ratio : float
        Its ratio (chi-square test: its residuals over the noise); NaN when not fitted.
    rejected : bool
        ``p_value < LACK_OF_FIT_P``.
    next_fits : bool
        The next model passes the same test: a more flexible model is the cure. When it
        fails too, wrong pairs or an understated localisation error are likelier.
    """

    test: str
    statistic: float
    p_value: float
    ratio: float
    next_model: str | None
    next_ratio: float
    rejected: bool
    next_fits: bool = True

    @property
    def inflation(self) -> float:
        """Factor applied to the predicted errors: ``ratio`` when the chi-square test rejects, else 1."""
        return self.ratio if self.rejected and self.test == "chi-square" else 1.0


def lack_of_fit(reg: Registration) -> LackOfFit | None:
    """The lack-of-fit test of ``reg``, or None where no test applies (no residual degrees of
    freedom, a 3-D-to-2-D projection, a thin-plate spline, unknown noise without a next model)."""
    from scipy.stats import chi2, f

    src, dst = reg.landmarks.src(), reg.landmarks.dst()
    n, k = dst.shape
    dof = k * n - reg.n_params
    if dof <= 0 or src.shape[1] != k or reg.model in ("tps", "rigid-projection"):
        return None
    nxt, nxt_rss, nxt_dof = _next_fit(reg, src, dst)
    w = 1.0 / reg._var
    rss = float(np.sum(reg.residuals**2 * w)) if reg.fle_source != "residuals" else float(np.sum(reg.residuals**2))
    if reg.fle_source in ("given", "uncertainties"):
        ratio = float(np.sqrt(rss / dof))
        nxt_ratio = float(np.sqrt(nxt_rss / nxt_dof)) if nxt else float("nan")
        p = float(chi2.sf(rss, dof))
        next_fits = bool(nxt) and float(chi2.sf(nxt_rss, nxt_dof)) >= LACK_OF_FIT_P
        return LackOfFit("chi-square", rss, p, ratio, nxt, nxt_ratio, p < LACK_OF_FIT_P, next_fits)
    if not nxt or nxt_rss <= 0:
        return None
    extra = dof - nxt_dof
    stat = max(rss - nxt_rss, 0.0) / extra / (nxt_rss / nxt_dof)
    p = float(f.sf(stat, extra, nxt_dof))
    ratio = float(np.sqrt((rss / dof) / (nxt_rss / nxt_dof)))
    return LackOfFit("F", stat, p, ratio, nxt, 1.0, p < LACK_OF_FIT_P)


def _next_fit(reg: Registration, src: np.ndarray, dst: np.ndarray) -> tuple[str | None, float, int]:
    """The next model up, its residual sum (weighted by the noise when known) and its
    residual degrees of freedom; ``(None, nan, 0)`` when it cannot be fitted with dof > 0."""
    n, k = dst.shape
    name = NEXT_MODEL.get(reg.model)
    if name is None or (name.startswith("polynomial") and k != 2):
        name = "tps" if name is not None else None
    if name is None or name == "tps":
        return None, float("nan"), 0
    cls, opts = model_class(name)
    opts = {**opts, **{key: v for key, v in reg.options.items() if key == "allow_reflection"
                       and name in ("rigid", "similarity")}}
    nxt_dof = k * n - _n_params(cls, k, n, opts)
    if nxt_dof <= 0 or n <= cls.required_points(k, **opts):
        return None, float("nan"), 0
    known = reg.fle_source in ("given", "uncertainties")
    weights = 1.0 / reg._var if known and not np.allclose(reg._var, reg._var[0]) else None
    fit = cls.from_estimate(src, dst, weights=weights, **opts)
    if not fit:
        return None, float("nan"), 0
    r2 = fit.residuals(src, dst) ** 2
    return name, float(np.sum(r2 / reg._var) if known else np.sum(r2)), nxt_dof

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

An exact thin-plate spline has no residuals to test: it passes through every landmark. What
can be tested is how well it predicts a landmark it was not given. Its left-out errors are a
linear map of the targets (:meth:`ThinPlateSpline.leave_one_out`), so their size under the
noise alone is known exactly: ``Q = sum_i |e_i|² / s_i`` (``s_i`` the per-axis variance of
``e_i`` under the noise) has mean ``K N``, and its distribution is taken as a scaled
chi-square with the same mean and variance (Satterthwaite), or the matching F when the noise
was estimated. Left-out errors beyond the noise measure the deformation between the
landmarks that the spline does not see. Read as kriging (the spline is the kriging
interpolator of such a deformation), the spline without pair ``i`` misses it at landmark
``i`` with per-axis variance ``sigma² P_i`` (``P_i`` its power there), and the full spline
misses it at any ``q`` with ``sigma² P(q)`` (:meth:`ThinPlateSpline.power`: zero at the
landmarks, largest in the gaps between them and outside them). So ``sigma²`` is estimated
from the excess, ``sum_i (|e_i|² / K - s_i) / sum_i P_i`` (at least 0), and the
predicted errors add ``sigma² P(q)`` per axis to the noise's. The test rejects (and the
registration warns) when the excess is both significant and large (RMS ratio at least
:data:`SPLINE_MISFIT_RATIO`): a smooth field sampled by well-spread landmarks already leaves
left-out errors somewhat above the noise, which the added error covers without a warning.
Structure that no landmark sees cannot be detected by any test on the landmarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..transforms import ThinPlateSpline
from .models import _n_params, model_class

if TYPE_CHECKING:
    from .result import Registration

__all__ = ["LACK_OF_FIT_P", "SPLINE_MISFIT_RATIO", "LackOfFit"]

#: Significance level of the lack-of-fit test (chance of a warning on a correct model).
LACK_OF_FIT_P = 1e-3

#: Smallest RMS left-out error of an exact thin-plate spline, over what the noise explains,
#: that the leave-one-out test rejects (at ``LACK_OF_FIT_P``) and warns about.
SPLINE_MISFIT_RATIO = 2.0

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
        ``"chi-square"`` (noise known), ``"F"`` (against :attr:`next_model`) or
        ``"leave-one-out"`` (an exact thin-plate spline's left-out errors against the noise).
    statistic : float
        chi² or F.
    p_value : float
        Chance of a statistic this large if the model were right.
    ratio : float
        RMS residual over what the noise explains (chi-square), over what the next model
        up leaves (F), or RMS left-out error over what the noise explains (leave-one-out):
        about 1 for a model that fits.
    next_model : str or None
        The next more flexible model that could be fitted.
    next_ratio : float
        Its ratio (chi-square test: its residuals over the noise); NaN when not fitted.
    rejected : bool
        ``p_value < LACK_OF_FIT_P`` (leave-one-out test: and ``ratio >= SPLINE_MISFIT_RATIO``).
    next_fits : bool
        The next model passes the same test: a more flexible model is the cure. When it
        fails too, wrong pairs or an understated localisation error are likelier.
    field_variance : float
        Leave-one-out test: ``sigma²`` (µm², per axis, per unit of the spline's power) of the
        deformation between landmarks that the spline does not see; the predicted errors
        add ``field_variance * transform.power(q)`` per axis. 0 for the other tests.
    """

    test: str
    statistic: float
    p_value: float
    ratio: float
    next_model: str | None
    next_ratio: float
    rejected: bool
    next_fits: bool = True
    field_variance: float = 0.0

    @property
    def inflation(self) -> float:
        """Factor applied to the predicted errors: ``ratio`` when the chi-square test rejects,
        else 1 (the leave-one-out test adds :attr:`field_variance` instead)."""
        return self.ratio if self.rejected and self.test == "chi-square" else 1.0


def lack_of_fit(reg: Registration) -> LackOfFit | None:
    """The lack-of-fit test of ``reg``, or None where no test applies (no residual degrees of
    freedom, a 3-D-to-2-D projection, unknown noise without a next model, a smoothed or
    BigWarp-parameterised thin-plate spline)."""
    from scipy.stats import chi2, f

    src, dst = reg.landmarks.src(), reg.landmarks.dst()
    n, k = dst.shape
    if reg.model == "tps":
        return _spline_test(reg, src, dst)
    dof = k * n - reg.n_params
    if dof <= 0 or src.shape[1] != k or reg.model == "rigid-projection":
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


def _spline_test(reg: Registration, src: np.ndarray, dst: np.ndarray) -> LackOfFit | None:
    """The leave-one-out test of an exact thin-plate spline (module notes); None when the
    spline is smoothed or BigWarp's inverse, the noise is unknown, or too few pairs remain
    for a left-out refit."""
    from scipy.stats import chi2, f

    n, k = dst.shape
    var = reg._var
    if (not isinstance(reg.transform, ThinPlateSpline) or reg.options.get("smoothing", 0)
            or n <= ThinPlateSpline.required_points(k) or not np.all(np.isfinite(var))):
        return None
    left_out, power = reg.transform.leave_one_out()
    errors = left_out @ dst  # (N, K) left-out errors
    s = left_out**2 @ var  # per-axis variance of each left-out error under the noise
    e2 = np.sum(errors**2, axis=1)
    stat = float(np.sum(e2 / s))
    m = (left_out / s[:, None]).T @ left_out * var[None, :]  # Q = sum over axes of y' M y
    mean, spread = k * n, 2.0 * k * float(np.sum(m * m.T))  # E Q = K tr(MV) = K N, Var Q = 2 K tr((MV)²)
    scale, dof = spread / (2.0 * mean), 2.0 * mean**2 / spread
    noise_dof = reg.noise_dof
    if np.isfinite(noise_dof):
        p = float(f.sf(stat / scale / dof, dof, noise_dof))
    else:
        p = float(chi2.sf(stat / scale, dof))
    ratio = float(np.sqrt(stat / mean))
    field = max(0.0, float(np.sum(e2 / k - s) / np.sum(power)))
    return LackOfFit("leave-one-out", stat, p, ratio, None, float("nan"),
                     p < LACK_OF_FIT_P and ratio >= SPLINE_MISFIT_RATIO, next_fits=False, field_variance=field)


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

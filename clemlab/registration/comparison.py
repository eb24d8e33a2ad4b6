"""Which model, and how many landmarks? :func:`compare_models` and :func:`error_vs_n`."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import transforms as _tf
from ..errors import RegistrationError
from ..landmarks import Landmarks
from .fitting import register
from .models import MODEL_ORDER, model_class

__all__ = ["ModelComparison", "compare_models", "error_vs_n"]


@dataclass
class ModelComparison:
    """Result of :func:`compare_models`.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per model fitted: ``model, n_params, fre_nm, loo_rms_nm, loo_max_nm, aicc,
        recommended`` (nm), sorted from simplest to most flexible.
    recommended : str
        The simplest model whose leave-one-out RMS is within noise of the best.
    reason : str
        One line saying why.
    registrations : dict
        ``{model: Registration}``.
    """

    table: Any
    recommended: str
    reason: str
    registrations: dict

    def _repr_html_(self) -> str:
        return (f"<div><b>Recommended: {html.escape(self.recommended)}</b> &mdash; "
                f"{html.escape(self.reason)}{self.table.to_html(index=False, float_format=lambda v: f'{v:.1f}')}</div>")

    def __repr__(self) -> str:
        return f"Recommended: {self.recommended} - {self.reason}\n{self.table.to_string(index=False)}"


def compare_models(landmarks: Landmarks, models: list[str] | None = None, **options) -> ModelComparison:
    """Fit every applicable model and recommend the simplest one the data support.

    Models are ranked by leave-one-out RMS error (the error at a pair the fit has not seen)
    and by AICc; the recommendation is the simplest model (in :data:`MODEL_ORDER`) whose
    leave-one-out RMS is within one standard error (``RMS / sqrt(2 N)``) of the best.

    Parameters
    ----------
    landmarks : Landmarks
    models : list of str, optional
        Default: all of :data:`MODEL_ORDER` that have more pairs than their minimum.
    **options
        Passed to :func:`register` (e.g. ``allow_reflection=True``, ``fle=``).

    Returns
    -------
    ModelComparison
    """
    import pandas as pd

    if not isinstance(landmarks, Landmarks):
        raise RegistrationError(f"compare_models() takes a Landmarks table, got {type(landmarks).__name__}")
    n, k = len(landmarks.src()), landmarks.ndim
    rows, regs = [], {}
    for name in models or MODEL_ORDER:
        cls, implied = model_class(name)
        if cls.required_points(k, **implied) >= n:
            continue
        if cls is _tf.Polynomial and k != 2:
            continue
        try:
            reg = register(landmarks, name, **options)
        except RegistrationError:
            continue
        regs[reg.model] = reg
        p, nobs = reg.n_params, k * n
        rss = float(np.sum(reg.residuals**2))
        aicc = (nobs * np.log(rss / nobs) + 2 * p + 2 * p * (p + 1) / (nobs - p - 1)
                if nobs - p - 1 > 0 and rss > 0 else np.nan)
        rows.append({"model": reg.model, "n_params": p, "fre_nm": reg.rms * 1e3,
                     "loo_rms_nm": float(np.sqrt(np.nanmean(reg.loo_errors**2))) * 1e3,
                     "loo_max_nm": float(np.nanmax(reg.loo_errors)) * 1e3, "aicc": aicc})
    if not rows:
        raise RegistrationError(
            f"no model can be compared with {n} landmark pairs: leave-one-out needs more pairs "
            "than a model's minimum (translation needs 2, affine 4 in 2-D); add landmarks"
        )
    table = pd.DataFrame(rows)
    best = table["loo_rms_nm"].idxmin()
    best_loo = float(table.loc[best, "loo_rms_nm"])
    tol = best_loo / np.sqrt(2 * n)
    ok = table[table["loo_rms_nm"] <= best_loo + tol]
    rec = str(ok.iloc[0]["model"])
    table["recommended"] = table["model"] == rec
    if rec == table.loc[best, "model"]:
        reason = (f"{rec} has the lowest leave-one-out error ({best_loo:.1f} nm); simpler models "
                  f"are worse by more than the noise (±{tol:.1f} nm)")
    else:
        reason = (f"{rec}: leave-one-out RMS {float(ok.iloc[0]['loo_rms_nm']):.1f} nm, within noise "
                  f"(±{tol:.1f} nm) of the best ({table.loc[best, 'model']}, {best_loo:.1f} nm) "
                  "with fewer parameters")
    return ModelComparison(table, rec, reason, regs)


def error_vs_n(landmarks: Landmarks, model: str = "affine", sizes: list[int] | None = None,
               repeats: int = 50, seed: int = 0, **options):
    """Held-out error against the number of landmarks: "do I have enough points?"

    For each ``n`` in ``sizes``, ``repeats`` random subsets of ``n`` active pairs are fitted
    and the error is measured at the pairs left out (distance between mapped source and
    measured target, so it includes their localisation error).

    Parameters
    ----------
    landmarks : Landmarks
    model : str
    sizes : list of int, optional
        Default: from the model's minimum + 1 to ``N - 1``.
    repeats : int
    seed : int
    **options
        Model options.

    Returns
    -------
    pandas.DataFrame
        Columns ``n, rms_nm, median_nm, p90_nm, trials``.
    """
    import pandas as pd

    cls, implied = model_class(model)
    options = {**implied, **options}
    src, dst = landmarks.src(), landmarks.dst()
    n_all, k = src.shape
    lo = cls.required_points(k, **options)
    sizes = list(range(lo + 1, n_all)) if sizes is None else list(sizes)
    bad = [s for s in sizes if not lo <= s < n_all]
    if not sizes or bad:
        raise RegistrationError(
            f"subset sizes must lie between the model's minimum ({lo}) and N - 1 ({n_all - 1}); "
            f"got {bad or sizes}. Add landmarks to study the curve."
        )
    rng = np.random.default_rng(seed)
    rows = []
    for s in sizes:
        errs, trials = [], 0
        for _ in range(repeats):
            idx = rng.permutation(n_all)
            fit, test = idx[:s], idx[s:]
            tf = cls.from_estimate(src[fit], dst[fit], **options)
            if not tf:
                continue
            trials += 1
            errs.append(np.linalg.norm(tf(src[test]) - dst[test], axis=1))
        e = np.concatenate(errs) if errs else np.array([np.nan])
        rows.append({"n": s, "rms_nm": float(np.sqrt(np.mean(e**2))) * 1e3,
                     "median_nm": float(np.median(e)) * 1e3, "p90_nm": float(np.percentile(e, 90)) * 1e3,
                     "trials": trials})
    return pd.DataFrame(rows)

"""What a registration tells its user: plain-language warnings and the summary table.

The warnings name a problem and what to do about it: mirrored data, a degenerate layout
(condition number of the centred source landmarks above :data:`MAX_CONDITION`), a scale
outside :data:`SCALE_RANGE` (both frames are in µm, so the scale should be close to 1), a
stretch (ratio of the linear part's singular values) above :data:`MAX_STRETCH`, an ambiguous
3-D-to-2-D projection, RANSAC outliers (and a consensus under twice the pairs the model
needs), pairs far off when left out, a model too simple
for the landmarks (lack of fit), exactly determined fits, and noise borrowed from an affine
fit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import transforms as _tf
from .models import model_class

if TYPE_CHECKING:
    from .result import Registration

__all__ = ["SCALE_RANGE", "MAX_STRETCH", "MAX_CONDITION"]

#: Plausible range of the scale between two frames in µm.
SCALE_RANGE = (0.5, 2.0)
#: Largest ratio of the linear part's singular values not warned about.
MAX_STRETCH = 1.25
#: Largest condition number of the centred source landmarks not warned about.
MAX_CONDITION = 100.0


def registration_warnings(reg: Registration) -> list[str]:
    """Plain-language warnings about ``reg`` (see the module docstring for the list)."""
    out = []
    src, dst = reg.landmarks.src(), reg.landmarks.dst()
    n, k = src.shape
    aff = _tf.Affine.from_estimate(src, dst) if n >= k + 1 and dst.shape[1] == k else None
    if aff and np.linalg.det(aff.linear) < 0:
        if isinstance(reg.transform, _tf.Similarity) and np.linalg.det(reg.transform.linear) > 0:
            out.append("The landmarks are mirrored (the best affine fit flips one axis), and a "
                       f"{reg.model} model cannot represent a mirror: refit with "
                       "allow_reflection=True, use an affine model, or flip one image "
                       "(e.g. lm.isel(x=slice(None, None, -1))).")
        else:
            out.append("The data are mirrored: one image is flipped relative to the other "
                       "(determinant < 0). The fit handles it; check it is expected.")
    if n > k and not reg.ambiguous:
        centred = src - src.mean(axis=0)
        sv = np.linalg.svd(centred, compute_uv=False)
        cond = sv[0] / sv[-1] if sv[-1] > 0 else np.inf
        if cond > MAX_CONDITION:
            shape = "on a line" if k == 2 else "in a plane or on a line"
            out.append(f"The landmarks lie nearly {shape} (condition number {cond:.0f} > "
                       f"{MAX_CONDITION:.0f}): the fit is poorly determined across that "
                       "direction. Add landmarks spread over the field.")
    lin = reg.transform.linear if isinstance(reg.transform, _tf.LinearTransform) and not isinstance(
        reg.transform, _tf.Projective) else (aff.linear if aff else None)
    if lin is not None:
        sv = np.linalg.svd(lin, compute_uv=False)
        scale = float(np.sqrt(sv[0] * sv[-1]))
        if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
            out.append(f"The scale between the frames is {scale:.3g}, outside the plausible "
                       f"{SCALE_RANGE[0]}-{SCALE_RANGE[1]} for two images in µm: check both "
                       "pixel sizes.")
        if sv[0] / sv[-1] > MAX_STRETCH:
            out.append(f"The map stretches one direction {sv[0] / sv[-1]:.2f}x more than the "
                       f"other (> {MAX_STRETCH}): check pixel sizes and section distortion.")
    if reg.ambiguous:
        (_, c0), (alt, c1) = reg.alternatives[:2]
        tilt = np.degrees(np.arccos(np.clip((np.trace(alt.rotation.T @ reg.transform.rotation) - 1) / 2, -1, 1)))
        out.append(
            "The 3-D beads lie nearly in one plane, so the fit cannot tell the rotation from its "
            f"mirror through the image plane: two solutions {tilt:.1f}° apart fit equally well "
            f"(costs {c0:.3g} and {c1:.3g} µm²; see .alternatives). Add beads at other depths, "
            "or choose the solution that matches the known sample tilt."
        )
    if reg.outliers:
        out.append(f"RANSAC rejected {len(reg.outliers)} pair(s) as outliers: {', '.join(reg.outliers)}.")
        need = model_class(reg.model)[0].required_points(k, **reg.options)
        if n < 2 * need:  # too few spare pairs to notice a true pair rejected or a lucky subset
            out.append(f"Only {n} of {n + len(reg.outliers)} pairs agree with the {reg.model} fit, fewer than "
                       f"twice the {need} it needs: so small a consensus cannot show whether RANSAC "
                       "kept a chance subset or rejected good pairs, and the predicted errors assume "
                       "it did neither. Check the rejected pairs, add landmarks, or fit a simpler model.")
    lof = reg.lack_of_fit
    misfit = lof is not None and lof.rejected
    model_misfit = misfit and lof.next_fits
    flagged = [nm for nm, f in zip(reg.names, reg.outlier_flags) if f]
    if flagged and not model_misfit:  # a too simple model makes every pair look far off
        out.append(f"Pair(s) {', '.join(flagged)} are far off when left out (beyond the 99.9 % "
                   "bound of the noise model): check them or use robust=True.")
    if misfit:
        out.append(_lack_of_fit_words(reg.model, lof))
    cls, _ = model_class(reg.model)
    lo = cls.required_points(k, **reg.options) if cls in (_tf.Projective, _tf.Polynomial) else 0
    if n == lo:
        out.append(f"The {reg.model} fit is exactly determined: {n} pairs for the {lo} it needs, "
                   "so it passes through every landmark and nothing checks them (no residuals, "
                   "no left-out errors). Its error can be heavy-tailed: usually near the predicted "
                   "value, but occasionally many times larger, most of all when the landmarks "
                   "are poorly spread. Add landmarks spread over the field, well beyond the "
                   "minimum.")
    if reg.fle_source == "affine residuals":
        out.append("The model interpolates the landmarks exactly, so the localisation error "
                   "was estimated from an affine fit's residuals; give per-point uncertainties "
                   "(or fle=) for calibrated error predictions.")
    return out


def _lack_of_fit_words(model: str, lof) -> str:
    """The plain-words warning of a rejected lack-of-fit test."""
    if lof.test == "leave-one-out":
        return (f"The thin-plate spline misses the landmarks it is not given by {lof.ratio:.1f}x what the "
                f"localisation error explains (leave-one-out test, p = {lof.p_value:.1g}): the deformation "
                "has structure finer than the landmarks' spacing, or some pairs are wrong. The predicted "
                "errors include that structure, growing away from the landmarks; add landmarks where "
                "the left-out errors (loo_errors) are largest, or check those pairs.")
    if lof.test == "chi-square":
        text = (f"{model.capitalize()} cannot explain these landmarks: residuals are {lof.ratio:.1f}x the "
                f"localisation error (chi-square test, p = {lof.p_value:.1g}).")
        article = "An" if lof.next_model and lof.next_model[0] in "aeiou" else "A"
        if lof.next_model and lof.next_fits:
            text += f" {article} {lof.next_model} fit leaves {lof.next_ratio:.1f}x: try model='{lof.next_model}'."
        else:
            if lof.next_model:
                text += f" {article} {lof.next_model} fit leaves {lof.next_ratio:.1f}x too."
            text += (" Some pairs may be wrong (check the pairs far off when left out, or use "
                     "robust=True), or the stated localisation error is too small.")
        text += (f" The predicted errors are inflated {lof.ratio:.1f}x to cover the misfit, but a "
                 "misfit is systematic: they may still be too small away from the landmarks.")
        return text
    return (f"{model.capitalize()} cannot explain these landmarks: its residuals are {lof.ratio:.1f}x "
            f"those of an {lof.next_model} fit, far more than the extra parameters explain (F-test, "
            f"p = {lof.p_value:.1g}): try model='{lof.next_model}'. The predicted errors of this "
            "fit assume the model is right and are too small where the misfit is systematic."
            ).replace("an polynomial", "a polynomial")


def _inflation_words(reg: Registration) -> str:
    """What the predicted errors add to the noise's: an inflation, or the spline's error
    between landmarks; empty when nothing."""
    lof = reg.lack_of_fit
    if lof is not None and lof.field_variance > 0:
        return ", plus the spline's error between landmarks that its left-out errors show"
    if reg.error_inflation > 1.0:
        return f", inflated {reg.error_inflation:.2f}x to match the residuals"
    return ""


def _pair_rows(reg: Registration) -> list[tuple]:
    """``(name, residual, left-out error, studentised, outlier flag)`` per active pair."""
    return list(zip(reg.names, reg.residuals, reg.loo_errors, reg.studentised(), reg.outlier_flags))


def _length_unit(values_um) -> tuple[str, float]:
    """The unit the figures ``values_um`` (µm) print in: nm below 10 µm, else µm."""
    v = np.asarray(values_um, float)
    big = np.nanmax(np.abs(v), initial=0.0) if v.size and np.isfinite(v).any() else 0.0
    return ("nm", 1e3) if big < 10.0 else ("µm", 1.0)


def _figures(reg: Registration) -> list:
    """Every length printed by the summary, µm (to choose one unit for them all)."""
    vals = [reg.rms, *reg.residuals, *np.nan_to_num(reg.loo_errors)]
    if np.isfinite(reg.fle):
        vals.append(reg.fle)
    return vals


def summary_text(reg: Registration) -> str:
    """Plain-text summary: model, errors (every figure with its unit), warnings, a per-pair table.

    Lengths print in nm, or in µm when any is 10 µm or more; the landmarks' unit (and the
    unit each side was read in) is stated on the first line.
    """
    src = reg.landmarks.src()
    n = len(src)
    u, f = _length_unit(_figures(reg))
    units_text = getattr(reg.landmarks, "units_text", "µm")
    lines = [
        f"{reg.model} registration {reg.landmarks.source_frame} -> {reg.landmarks.target_frame}, "
        f"{n} active pairs, {reg.n_params} parameters, landmarks in {units_text}",
        f"residuals (FRE): RMS {reg.rms * f:.1f} {u}, mean {np.mean(reg.residuals) * f:.1f} {u}, "
        f"max {np.max(reg.residuals, initial=0) * f:.1f} {u}",
    ]
    if np.isfinite(reg.loo_errors).any():
        lines.append(f"leave-one-out error: RMS {np.sqrt(np.nanmean(reg.loo_errors**2)) * f:.1f} {u}, "
                     f"max {np.nanmax(reg.loo_errors) * f:.1f} {u}")
    if np.isfinite(reg.fle):
        tre = reg.predicted_error(src)
        lines.append(f"localisation error (FLE, from {reg.fle_source}): {reg.fle * f:.1f} {u}; "
                     f"predicted mapping error at the landmarks: {np.mean(tre) * f:.1f} {u} mean "
                     f"({reg.method}{_inflation_words(reg)})")
    for w in reg.warnings:
        lines.append(f"WARNING: {w}")
    lines.append(f"{'pair':>8} {'residual ' + u:>12} {'left-out ' + u:>12} {'t (σ)':>6}")
    for nm, r, l, t, flag in _pair_rows(reg):
        lines.append(f"{nm:>8} {r * f:12.1f} {l * f:12.1f} {t:6.2f}{'  outlier?' if flag else ''}")
    return "\n".join(lines)

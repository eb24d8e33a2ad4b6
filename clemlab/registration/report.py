"""What a registration tells its user: plain-language warnings and the summary table.

The warnings name a problem and what to do about it: mirrored data, a degenerate layout
(condition number of the centred source landmarks above :data:`MAX_CONDITION`), a scale
outside :data:`SCALE_RANGE` (both frames are in µm, so the scale should be close to 1), a
stretch (ratio of the linear part's singular values) above :data:`MAX_STRETCH`, an ambiguous
3-D-to-2-D projection, RANSAC outliers, pairs far off when left out, exactly determined
fits, and noise borrowed from an affine fit.
"""

from __future__ import annotations

import html
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
    flagged = [nm for nm, f in zip(reg.names, reg.outlier_flags) if f]
    if flagged:
        out.append(f"Pair(s) {', '.join(flagged)} are far off when left out (beyond the 99.9 % "
                   "bound of the noise model): check them or use robust=True.")
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


def _pair_rows(reg: Registration) -> list[tuple]:
    """``(name, residual, left-out error, studentised, outlier flag)`` per active pair."""
    return list(zip(reg.names, reg.residuals, reg.loo_errors, reg.studentised(), reg.outlier_flags))


def summary_text(reg: Registration) -> str:
    """Plain-text summary: model, errors in nm, warnings, and a per-pair table."""
    src = reg.landmarks.src()
    n = len(src)
    lines = [
        f"{reg.model} registration {reg.landmarks.source_frame} -> {reg.landmarks.target_frame}, "
        f"{n} active pairs, {reg.n_params} parameters",
        f"residuals (FRE): RMS {reg.rms * 1e3:.1f} nm, mean {np.mean(reg.residuals) * 1e3:.1f} nm, "
        f"max {np.max(reg.residuals, initial=0) * 1e3:.1f} nm",
    ]
    if np.isfinite(reg.loo_errors).any():
        lines.append(f"leave-one-out error: RMS {np.sqrt(np.nanmean(reg.loo_errors**2)) * 1e3:.1f} nm, "
                     f"max {np.nanmax(reg.loo_errors) * 1e3:.1f} nm")
    if np.isfinite(reg.fle):
        tre = reg.predicted_error(src)
        lines.append(f"localisation error (FLE, from {reg.fle_source}): {reg.fle * 1e3:.1f} nm; "
                     f"predicted mapping error at the landmarks: {np.mean(tre) * 1e3:.1f} nm mean "
                     f"({reg.method})")
    for w in reg.warnings:
        lines.append(f"WARNING: {w}")
    lines.append(f"{'pair':>8} {'residual nm':>12} {'left-out nm':>12} {'t':>6}")
    for nm, r, l, t, f in _pair_rows(reg):
        lines.append(f"{nm:>8} {r * 1e3:12.1f} {l * 1e3:12.1f} {t:6.2f}{'  outlier?' if f else ''}")
    return "\n".join(lines)

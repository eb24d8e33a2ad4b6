"""Mutual information of two maps: a pose refined by MI, and MI patch matching.

Mutual information measures how well one map's value predicts the other's through any
function, not only a linear one (Viola & Wells 1997; Maes et al. 1997). It is estimated here
from a joint histogram with linear (triangular Parzen) binning: each pair of values adds
bilinear weights to the four nearest bins, so the estimate changes smoothly with the pose.

MI is turned into a score of the same sense as a correlation coefficient by
``rho = sqrt(1 - exp(-2 MI))`` (Linfoot's informational coefficient of correlation): for two
jointly Gaussian variables it equals ``|NCC|``, it is 0 for independent ones and tends to 1 as
one determines the other. The patch thresholds and peak analysis written for NCC
(:mod:`clemlab.imagereg.refine`) then apply to it.

A histogram of few samples overstates MI; patch estimates subtract the first-order
(Miller-Madow) bias ``(B - 1)^2 / (2 N)`` nats of ``N`` samples in ``B x B`` bins, and use
fewer bins for smaller patches.
"""

from __future__ import annotations

import math

import numpy as np

from .represent import Plane
from .search import warp_into

#: Bins per axis of the joint histogram for a pose over the whole overlap.
POSE_BINS = 32
#: Bins per axis for a patch are about the cube root of its pixel count, within these.
PATCH_BINS = (4, 16)
#: Least overlap (fraction of the moving grid the fixed field covers at the start) for a
#: pose to be scored; smaller overlaps score 0.
MIN_POSE_OVERLAP = 0.5


def value_range(a: np.ndarray) -> tuple[float, float]:
    """The 0.5 to 99.5 percentile range of ``a`` (values outside are binned at its ends)."""
    lo, hi = (float(v) for v in np.percentile(a, [0.5, 99.5]))
    return lo, hi if hi > lo else lo + 1.0


def _bin_position(a: np.ndarray, rng: tuple[float, float], bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower bin index (int) and the weight of the upper bin (float) of each value."""
    pos = np.clip((a - rng[0]) / (rng[1] - rng[0]) * (bins - 1), 0, bins - 1 - 1e-6)
    lo = pos.astype(np.intp)
    return lo, pos - lo


def joint_histogram(a: np.ndarray, b: np.ndarray, bins: int, range_a, range_b,
                    valid: np.ndarray | None = None) -> np.ndarray:
    """Joint histograms (G, bins, bins) of paired samples, linear binning.

    ``a`` and ``b`` are (G, N), or (N,) for one group: sample ``k`` of group ``g`` pairs
    ``a[g, k]`` with ``b[g, k]``; only pairs where ``valid`` (same shape, optional) is true
    count. Values outside ``range_a`` / ``range_b`` count in the end bins.
    """
    a = np.atleast_2d(a)
    b = np.atleast_2d(b)
    g = a.shape[0]
    ia, wa = _bin_position(a, range_a, bins)
    ib, wb = _bin_position(b, range_b, bins)
    base = (np.arange(g)[:, None] * bins + ia) * bins + ib
    keep = 1.0 if valid is None else np.atleast_2d(valid).astype(np.float64)
    hist = np.zeros(g * bins * bins)
    for da, fa in ((0, 1 - wa), (1, wa)):
        for db, fb in ((0, 1 - wb), (1, wb)):
            weight = np.broadcast_to(fa * fb * keep, base.shape)
            hist += np.bincount((base + da * bins + db).ravel(), weight.ravel(), g * bins * bins)
    return hist.reshape(g, bins, bins)


def mutual_information(hist: np.ndarray) -> np.ndarray:
    """MI (nats) of each joint histogram in ``hist`` (..., B, B)."""
    n = hist.sum(axis=(-2, -1), keepdims=True)
    p = hist / np.where(n > 0, n, 1.0)
    pa = p.sum(axis=-1, keepdims=True)
    pb = p.sum(axis=-2, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p / (pa * pb)), 0.0)
    return terms.sum(axis=(-2, -1))


def correlation(mi) -> np.ndarray:
    """Linfoot's informational coefficient of correlation ``sqrt(1 - exp(-2 MI))``, 0..1."""
    return np.sqrt(1.0 - np.exp(-2.0 * np.clip(mi, 0.0, None)))


def patch_mi(fixed: np.ndarray, fmask: np.ndarray, moving: np.ndarray, radius: int) -> np.ndarray:
    """MI score (Linfoot correlation, bias-corrected) of a patch ``moving`` (h, w) against
    ``fixed`` (h + 2r, w + 2r) at shifts ``-r..r`` in each axis, laid out as
    :func:`clemlab.imagereg.ncc.patch_ncc`'s result: ``out[r + dy, r + dx]``. Pixels where
    ``fmask`` is 0 do not count; shifts with less than 60 % of the patch valid score 0.
    """
    h, w = moving.shape
    r = radius
    n_shift = (2 * r + 1) ** 2
    win = np.lib.stride_tricks.sliding_window_view(fixed, (h, w)).reshape(n_shift, h * w)
    valid = np.lib.stride_tricks.sliding_window_view(fmask > 0, (h, w)).reshape(n_shift, h * w)
    n = valid.sum(axis=1)
    bins = int(np.clip(round((h * w) ** (1 / 3)), *PATCH_BINS))
    range_f = value_range(fixed[fmask > 0]) if np.any(fmask > 0) else (0.0, 1.0)
    a = np.broadcast_to(moving.reshape(1, -1), win.shape)
    hist = joint_histogram(a, win, bins, value_range(moving), range_f, valid)
    mi = mutual_information(hist) - (bins - 1) ** 2 / (2.0 * np.maximum(n, 1))
    out = np.where(n >= 0.6 * h * w, correlation(mi), 0.0)
    return out.reshape(2 * r + 1, 2 * r + 1)


def optimise_pose(moving: Plane, fixed: Plane, matrix: np.ndarray, bins: int = POSE_BINS,
                  max_evaluations: int = 300) -> np.ndarray:
    """The similarity near ``matrix`` that maximises the MI of ``moving`` and ``fixed``.

    The fixed map is resampled onto the moving grid through each trial pose and the MI of the
    pairs over the overlap is computed from a ``bins x bins`` joint histogram (linear binning).
    The pose is ``matrix`` followed (in moving pixels, about the grid's centre) by a rotation,
    a scale and a shift, so the mirror branch is kept; the four parameters are expressed as
    the displacement they cause at the field's edge, in pixels, and searched by Powell's
    method (:func:`scipy.optimize.minimize`) from zero.

    Parameters
    ----------
    moving, fixed : Plane
        Maps at about the same pixel size.
    matrix : numpy.ndarray, shape (3, 3)
        Start pose, moving µm ``(x, y, 1)`` -> fixed µm.
    bins : int
        Histogram bins per axis.
    max_evaluations : int
        Most MI evaluations.

    Returns
    -------
    numpy.ndarray, shape (3, 3)
        The refined pose, moving µm -> fixed µm (``matrix`` itself when no overlap is scored).
    """
    from scipy.optimize import minimize

    to_fix = fixed.pixel_from_point() @ matrix @ moving.point_from_pixel()  # moving px -> fixed px
    _, mask0 = warp_into(fixed, to_fix, moving.shape)
    if mask0.sum() < 16:
        return matrix
    rows, cols = np.nonzero(mask0)
    # only the grid around the fixed field's footprint matters; a margin allows for the motion
    pad = 8
    r0, r1 = max(rows.min() - pad, 0), min(rows.max() + pad + 1, moving.shape[0])
    c0, c1 = max(cols.min() - pad, 0), min(cols.max() + pad + 1, moving.shape[1])
    mv = moving.data[r0:r1, c0:c1]
    crop = np.array([[1.0, 0, c0], [0, 1.0, r0], [0, 0, 1]])  # cropped px -> moving px
    centre = np.array([(c1 - c0 - 1) / 2, (r1 - r0 - 1) / 2])
    reach = max(0.5 * float(np.hypot(cols.max() - cols.min(), rows.max() - rows.min())), 1.0)
    range_m, range_f = value_range(moving.data[mask0 > 0]), value_range(fixed.data)
    least = MIN_POSE_OVERLAP * float(mask0.sum())

    def pose(p):
        angle, log_s = p[0] / reach, p[1] / reach
        lin = math.exp(log_s) * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        a = np.eye(3)
        a[:2, :2] = lin
        a[:2, 2] = centre + p[2:] - lin @ centre
        return to_fix @ crop @ a  # cropped px -> fixed px

    def cost(p):
        data, mask = warp_into(fixed, pose(p), mv.shape)
        ok = mask > 0
        if ok.sum() < least:
            return 0.0
        hist = joint_histogram(mv[ok], data[ok], bins, range_m, range_f)
        return -float(mutual_information(hist)[0])

    res = minimize(cost, np.zeros(4), method="Powell",
                   options={"xtol": 0.02, "ftol": 1e-5, "maxfev": max_evaluations})
    best = res.x if res.fun < cost(np.zeros(4)) else np.zeros(4)
    return fixed.point_from_pixel() @ pose(best) @ np.linalg.inv(crop) @ moving.pixel_from_point()

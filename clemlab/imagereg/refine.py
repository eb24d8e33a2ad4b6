"""Refinement by local patch matching: correspondences with per-patch uncertainty.

With the current pose, the fixed representation is resampled onto the moving image's
grid; square patches of the moving map, on a regular grid over the overlap, are matched by
masked NCC within a small search radius. Each match gives a pair (patch centre in the moving
frame, its partner in the fixed frame) and an uncertainty from the NCC peak: for a signal
plus white noise the peak position has variance ``(1 - c) / (c * n_eff * k)`` pixels²,
where ``c`` is the peak NCC, ``k`` the peak curvature (per pixel², NCC units) and
``n_eff`` the number of independent pixels in the patch. A robust similarity (or affine)
fit of the pairs updates the pose; the radius shrinks as the pixel size does.

What is matched follows the representation (``kind``): NCC of the maps, NCC of their MIND
descriptors computed on the moving grid (:func:`~clemlab.imagereg.represent.describe`), or,
for ``"mi"``, the mutual-information score of :func:`~clemlab.imagereg.mi.patch_mi` (a
correlation-like 0..1 value), to which the same threshold and peak analysis apply. Whether a
patch has texture is always judged on the map itself, since a descriptor normalised by local
contrast makes a flat, noisy patch look structured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import transforms as _tf
from .ncc import patch_ncc
from .represent import Plane, describe
from .search import warp_into

#: Smallest peak NCC for a patch match to be kept.
MIN_PATCH_NCC = 0.35
#: Ratio of a match's true error to the white-noise formula (per axis), per representation.
#: The formula counts only pixel noise; the two modalities also differ in structure, which
#: moves the peak as much again, by an amount that depends on what is compared. Checked
#: against the truth by ``benchmarks/bench_content_registration.py --representation R`` (its
#: "patch z" column: true error / sigma per axis, 1 when calibrated); ``"mi"`` is set for EM
#: whose contrast relation is unknown (``--no-invert``), its harder case, so it is
#: conservative when the inversion is known.
PEAK_ERROR_FACTOR = {"intensity": 2.0, "gradient": 3.1, "mind": 1.6, "mi": 2.3}
#: Correlation of the errors of two matches whose patches overlap by half (side
#: neighbours) or by a quarter (diagonal neighbours): they share pixels and structure.
#: Measured on the truth of synthetic pairs like PEAK_ERROR_FACTOR.
NEIGHBOUR_CORRELATION = (0.18, 0.04)
#: Smallest standard deviation of a moving patch, relative to the map's, to be matched
#: (flat patches, e.g. between nuclei, hold no position information).
MIN_TEXTURE = 0.5


@dataclass
class Matches:
    """Patch correspondences: ``src`` (N, 2) moving µm, ``dst`` (N, 2) fixed µm,
    ``sigma`` (N,) 1-sigma per axis, µm in the fixed frame, ``ncc`` (N,) peak values,
    ``n_tried`` patches with enough texture, ``spacing`` the patch grid's step (µm, moving
    frame)."""

    src: np.ndarray
    dst: np.ndarray
    sigma: np.ndarray
    ncc: np.ndarray
    n_tried: int
    spacing: float = 0.0


def match_patches(moving: Plane, fixed: Plane, matrix: np.ndarray, patch_um: float, radius_px: int,
                  kind: str = "intensity") -> Matches:
    """Match patches of ``moving`` against ``fixed`` warped by ``matrix`` (moving µm -> fixed µm).

    ``moving`` and ``fixed`` are :func:`~clemlab.imagereg.represent.represent` maps of the
    representation ``kind``; patches are ``patch_um`` (moving µm) square, searched within
    ``radius_px`` moving pixels.
    """
    step = moving.step
    pix = fixed.pixel_from_point() @ matrix @ moving.point_from_pixel()
    warped, mask = describe(kind, *warp_into(fixed, pix, moving.shape))
    values, _ = describe(kind, moving.data, np.ones(moving.shape, np.float32))
    if kind == "mi":
        from .mi import patch_mi as score
    else:
        score = patch_ncc
    half = max(int(round(patch_um / step / 2)), 4)
    r = radius_px
    ny, nx = moving.shape
    texture_ref = float(np.std(moving.data[mask > 0])) if mask.any() else 0.0
    src, dst, sig, val = [], [], [], []
    n_tried = 0
    spacing = half  # patches overlap by half
    # Independent pixels: the maps are block averages at about the optical resolution, so
    # neighbouring pixels are correlated over about 2 x 2.
    for row in range(half + r, ny - half - r, spacing):
        for col in range(half + r, nx - half - r, spacing):
            win = (slice(row - half - r, row + half + r + 1), slice(col - half - r, col + half + r + 1))
            if mask[win].mean() < 0.9:
                continue
            inner = (slice(row - half, row + half + 1), slice(col - half, col + half + 1))
            tpl = moving.data[inner]
            if tpl.std() < MIN_TEXTURE * texture_ref:
                continue
            n_tried += 1
            c = score(warped[(Ellipsis,) + win], mask[win], values[(Ellipsis,) + inner], r)
            k = np.unravel_index(int(np.argmax(c)), c.shape)
            c0 = float(c[k])
            if c0 < MIN_PATCH_NCC or min(k) == 0 or max(k) == 2 * r:
                continue
            # parabola through the peak and its neighbours, per axis
            off, curv = [], []
            for axis in (0, 1):
                lo = list(k)
                hi = list(k)
                lo[axis] -= 1
                hi[axis] += 1
                a, b = float(c[tuple(lo)]), float(c[tuple(hi)])
                d2 = a + b - 2 * c0
                curv.append(max(-d2, 1e-4))
                off.append(0.5 * (a - b) / d2 if d2 < 0 else 0.0)
            dy = k[0] - r + float(np.clip(off[0], -0.5, 0.5))
            dx = k[1] - r + float(np.clip(off[1], -0.5, 0.5))
            n_eff = tpl.size / 4.0
            var_px = (1 - c0) / (max(c0, 1e-3) * n_eff * float(np.mean(curv)))
            p = moving.point_from_pixel() @ np.array([col, row, 1.0])
            q = moving.point_from_pixel() @ np.array([col + dx, row + dy, 1.0])
            src.append(p[:2])
            dst.append((matrix @ q)[:2])
            scale = float(np.sqrt(abs(np.linalg.det(matrix[:2, :2]))))
            sig.append(PEAK_ERROR_FACTOR[kind] * scale * step * max(np.sqrt(var_px), 0.05))
            val.append(c0)
    z = np.zeros((0, 2))
    return Matches(np.array(src) if src else z, np.array(dst) if dst else z, np.array(sig), np.array(val), n_tried,
                   spacing * step)


def fit_sigma(m: Matches, inliers: np.ndarray) -> np.ndarray:
    """Per-match sigma (N,) for a fit that treats the matches as independent.

    Overlapping patches share pixels, so their errors are correlated (NEIGHBOUR_CORRELATION);
    a least-squares fit counting them as independent would understate its own error. Each
    inlier's variance is multiplied by ``1 + sum of its correlations with the inlier
    neighbours``: the variance inflation of a mean over correlated samples, so that the
    fit's predicted error counts the effective number of independent matches.
    """
    sig = np.asarray(m.sigma, float).copy()
    pts = m.src[inliers]
    if len(pts) < 2 or m.spacing <= 0:
        return sig
    dist = np.hypot(*(pts[:, None, :] - pts[None, :, :]).transpose(2, 0, 1)) / m.spacing
    side = np.sum(np.abs(dist - 1.0) < 0.1, axis=1)
    diagonal = np.sum(np.abs(dist - np.sqrt(2.0)) < 0.1, axis=1)
    inflation = 1.0 + NEIGHBOUR_CORRELATION[0] * side + NEIGHBOUR_CORRELATION[1] * diagonal
    sig[inliers] *= np.sqrt(inflation)
    return sig


def _two_point(z1, z2, w1, w2, mirror):
    """The similarity (complex a, b) with ``w = a z + b`` (``a conj(z) + b`` mirrored)."""
    if mirror:
        z1, z2 = np.conj(z1), np.conj(z2)
    a = (w2 - w1) / (z2 - z1)
    return a, w1 - a * z1


def robust_fit(m: Matches, mirror: bool, model: str = "similarity", tol: float = 0.0, seed: int = 0):
    """Fit ``model`` to the matches robustly: two-point similarity hypotheses (all pairs up
    to 300 draws) scored by the count within ``max(3 sigma, tol)`` µm, then weighted least
    squares on the inliers, repeated until the inlier set is stable.

    Returns (matrix (3, 3) or None, inlier mask (N,)).
    """
    n = len(m.src)
    if n < 3:
        return None, np.zeros(n, bool)
    z = m.src[:, 0] + 1j * m.src[:, 1]
    w = m.dst[:, 0] + 1j * m.dst[:, 1]
    gate = np.maximum(3 * m.sigma, tol)
    rng = np.random.default_rng(seed)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    if len(pairs) > 300:
        pairs = [pairs[k] for k in rng.choice(len(pairs), 300, replace=False)]
    best = None
    for i, j in pairs:
        if abs(z[j] - z[i]) < 1e-9:
            continue
        a, b = _two_point(z[i], z[j], w[i], w[j], mirror)
        pred = a * (np.conj(z) if mirror else z) + b
        inl = np.abs(pred - w) < gate
        if best is None or inl.sum() > best.sum():
            best = inl
    if best is None or best.sum() < 3:
        return None, np.zeros(n, bool)
    cls = _tf.Affine if model == "affine" else _tf.Similarity
    opts = {} if cls is _tf.Affine else {"allow_reflection": mirror}
    inl = best
    tf = None
    for _ in range(5):
        tf = cls.from_estimate(m.src[inl], m.dst[inl], weights=1 / m.sigma[inl] ** 2, **opts)
        if not tf:
            return None, inl
        new = np.hypot(*(tf(m.src) - m.dst).T) < gate
        if new.sum() < 3 or np.array_equal(new, inl):
            break
        inl = new
    return tf.matrix, inl

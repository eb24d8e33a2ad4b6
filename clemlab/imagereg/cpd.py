"""Coherent point drift (Myronenko & Song, IEEE TPAMI 2010): registration of point sets
without correspondences, rigid (with scale), affine or non-rigid, in 2-D or 3-D.

The moving points are the centroids of a Gaussian mixture (shared isotropic variance
``sigma2``) plus a uniform component of weight ``w`` for spurious points; EM alternates
posterior correspondences (E) and the closed-form transform and variance (M). Fully
deterministic: the start is the identity (or ``initial``) and ``sigma2`` its data estimate.
The uniform component's density is one over the fixed points' bounding-box volume.

Non-rigid: the moving points drift by a displacement field ``G W`` (``G`` the Gaussian
kernel of width ``beta`` between moving points), regularised by ``lam`` (the motion
coherence prior); the M step solves ``(G + lam sigma2 diag(P1)^-1) W = diag(P1)^-1 P X - Y``.
The result is returned as the thin-plate spline through the moving points and their final
positions, so it maps any point (not only the moving set).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import transforms as _tf
from ..errors import RegistrationError


@dataclass
class CPDResult:
    """Result of :func:`coherent_point_drift`.

    Attributes
    ----------
    transform : clemlab.transforms.Similarity, Affine or ThinPlateSpline
        Maps moving points onto fixed points (µm).
    correspondence : numpy.ndarray, shape (M,)
        For each moving point, the index of its most probable fixed partner, or -1 when its
        posterior is below 0.5 (no partner).
    probability : numpy.ndarray, shape (M,)
        That posterior.
    sigma : float
        Final mixture standard deviation, µm.
    iterations : int
    """

    transform: object
    correspondence: np.ndarray
    probability: np.ndarray
    sigma: float
    iterations: int


def coherent_point_drift(moving, fixed, model: str = "rigid", *, w: float = 0.2, initial=None,
                         allow_reflection: bool = False, beta: float | None = None, lam: float = 2.0,
                         max_iter: int = 200, tol: float = 1e-8) -> CPDResult:
    """Register unpaired point sets by coherent point drift.

    Parameters
    ----------
    moving : array_like, shape (M, D)
        Points to move, µm, columns ``(x, y[, z])``, D = 2 or 3.
    fixed : array_like, shape (N, D)
        Target points, same units and columns.
    model : str
        ``"rigid"`` (rotation, isotropic scale, translation), ``"affine"`` or
        ``"nonrigid"`` (a smooth displacement field; start it from a rigid or affine result
        with ``initial`` when the sets are far apart).
    w : float
        Expected fraction of outliers (missing or spurious points), 0 <= w < 1.
    initial : Transform, optional
        Start (moving -> fixed); default the identity. CPD converges to the nearest optimum:
        rotations beyond ~70 degrees need a start (e.g. from :func:`register_images` or two
        clicks).
    allow_reflection : bool
        Rigid model only: allow a mirrored solution.
    beta : float, optional
        Non-rigid only: width of the displacement field's Gaussian kernel, µm (how far apart
        points still move together). Default: twice the RMS spread of the fixed points about
        their centroid per axis (the paper's beta = 2 on normalised sets).
    lam : float
        Non-rigid only: weight of the smoothness prior (larger: stiffer), dimensionless.
    max_iter, tol : int, float
        Stop after ``max_iter`` iterations or when the relative change of the negative
        log-likelihood is below ``tol``.

    Returns
    -------
    CPDResult
    """
    y0 = np.asarray(moving, float)
    x = np.asarray(fixed, float)
    if y0.ndim != 2 or x.ndim != 2 or y0.shape[1] != x.shape[1] or y0.shape[1] not in (2, 3):
        raise RegistrationError(f"moving and fixed must be (M, D) and (N, D) arrays with D = 2 or 3, "
                                f"got {y0.shape} and {x.shape}")
    if model not in ("rigid", "affine", "nonrigid"):
        raise RegistrationError(f"model must be 'rigid', 'affine' or 'nonrigid', got {model!r}")
    if not 0 <= w < 1:
        raise RegistrationError(f"w (outlier fraction) must be in [0, 1), got {w}")
    m, d = y0.shape
    n = len(x)
    if m < d + 1 or n < d + 1:
        raise RegistrationError(f"need at least {d + 1} points on each side, got {m} and {n}")
    if model == "nonrigid":
        return _nonrigid(y0, x, w, initial, beta, lam, max_iter, tol)
    mat = np.eye(d + 1) if initial is None else np.asarray(initial.matrix, float)
    b, t = mat[:d, :d], mat[:d, d]
    y = y0 @ b.T + t
    sigma2 = float(np.sum((x[None, :, :] - y[:, None, :]) ** 2)) / (d * m * n)
    volume = float(np.prod(np.ptp(x, axis=0) + 1e-9))
    q_old = np.inf
    it = 0
    p = np.zeros((m, n))
    for it in range(1, max_iter + 1):
        p = _posterior(x, y, sigma2, w, volume)
        np_ = p.sum()
        mu_x = p.sum(axis=0) @ x / np_
        mu_y = p.sum(axis=1) @ y0 / np_
        xh, yh = x - mu_x, y0 - mu_y
        a = xh.T @ p.T @ yh  # (D, D)
        p1 = p.sum(axis=1)
        if model == "rigid":
            u, _, vt = np.linalg.svd(a)
            cc = np.eye(d)
            if not allow_reflection:
                cc[-1, -1] = np.linalg.det(u @ vt)
            r = u @ cc @ vt
            yy = np.sum(p1 * np.sum(yh * yh, axis=1))
            s = np.trace(a.T @ r) / yy
            b = s * r
            sigma2_new = (np.sum(p.sum(axis=0) * np.sum(xh * xh, axis=1)) - s * np.trace(a.T @ r)) / (np_ * d)
        else:
            yy = (yh * p1[:, None]).T @ yh
            b = a @ np.linalg.inv(yy)
            sigma2_new = (np.sum(p.sum(axis=0) * np.sum(xh * xh, axis=1)) - np.trace(a @ b.T)) / (np_ * d)
        t = mu_x - b @ mu_y
        y = y0 @ b.T + t
        sigma2 = max(float(sigma2_new), 1e-12)
        q = np_ * d / 2 * np.log(sigma2)
        if np.isfinite(q_old) and abs(q_old - q) <= tol * max(abs(q), 1.0):
            break
        q_old = q
    mat = np.eye(d + 1)
    mat[:d, :d], mat[:d, d] = b, t
    tf = _tf.Affine(matrix=mat) if model == "affine" else _tf.Similarity(matrix=mat)
    return _result(tf, p, sigma2, it)


def _posterior(x, y, sigma2, w, volume):
    """E step: posterior (M, N) of moving point m (at ``y``) for fixed point n."""
    m, d = y.shape
    d2 = np.sum((x[None, :, :] - y[:, None, :]) ** 2, axis=2)
    k = np.exp(-d2 / (2 * sigma2))
    # the outlier component is uniform over the fixed points' bounding box (a proper
    # density, 1 / volume): with the paper's 1 / N in its place a large starting sigma
    # lets the uniform term take every point and the scale collapse
    c = (2 * np.pi * sigma2) ** (d / 2) * w / (1 - w) * m / volume
    return k / (k.sum(axis=0, keepdims=True) + c)


def _result(tf, p, sigma2, iterations):
    best = p.argmax(axis=1)
    prob = p[np.arange(len(p)), best]
    return CPDResult(tf, np.where(prob >= 0.5, best, -1), prob, float(np.sqrt(sigma2)), iterations)


def _nonrigid(y0, x, w, initial, beta, lam, max_iter, tol):
    """Non-rigid CPD (see module notes) from ``initial`` (a transform, or the identity)."""
    m, d = y0.shape
    start = y0 if initial is None else np.asarray(initial(y0), float)
    if beta is None:
        beta = 2.0 * float(np.sqrt(np.mean(np.sum((x - x.mean(axis=0)) ** 2, axis=1)) / d))
    if not beta > 0 or not lam > 0:
        raise RegistrationError(f"beta and lam must be > 0, got {beta} and {lam}")
    g = np.exp(-np.sum((start[:, None, :] - start[None, :, :]) ** 2, axis=2) / (2 * beta**2))
    y = start.copy()
    sigma2 = float(np.sum((x[None, :, :] - y[:, None, :]) ** 2)) / (d * m * len(x))
    volume = float(np.prod(np.ptp(x, axis=0) + 1e-9))
    p = np.zeros((m, len(x)))
    it = 0
    for it in range(1, max_iter + 1):
        p = _posterior(x, y, sigma2, w, volume)
        p1 = np.maximum(p.sum(axis=1), 1e-12)
        px = p @ x
        # (G + lam sigma2 diag(P1)^-1) W = diag(P1)^-1 P X - Y, multiplied through by diag(P1)
        wts = np.linalg.solve(p1[:, None] * g + lam * sigma2 * np.eye(m), px - p1[:, None] * start)
        y = start + g @ wts
        np_ = p1.sum()
        sigma2_new = (np.sum(p.sum(axis=0) * np.sum(x * x, axis=1)) - 2 * np.sum(px * y)
                      + np.sum(p1 * np.sum(y * y, axis=1))) / (np_ * d)
        sigma2_new = max(float(sigma2_new), 1e-12)
        done = abs(sigma2 - sigma2_new) <= tol * sigma2_new
        sigma2 = sigma2_new
        if done:
            break
    tf = _tf.ThinPlateSpline.from_estimate(y0, y)
    if not tf:
        raise RegistrationError(f"the non-rigid result cannot be represented as a spline: {tf}")
    return _result(tf, p, sigma2, it)

"""Batched sub-pixel localisation: pixel-integrated Gaussian + background fits.

Private helper of :mod:`clemlab.fiducials`. Every candidate is fitted in its own window of
fixed shape; all windows of one batch are fitted together with vectorised
Levenberg-Marquardt iterations (no Python loop over spots).

Model (array axis order, pixel units, window-local coordinates ``k = 0, 1, ...``)::

    mu(k) = b + A * prod_d E_d(k_d),
    E_d(k) = 1/2 [erf((k + 1/2 - c_d) / (sqrt(2) s_g(d))) - erf((k - 1/2 - c_d) / (sqrt(2) s_g(d)))]

i.e. a Gaussian of integral ``A`` integrated over each pixel, on a flat background ``b``
per pixel. Parameters, in this order: ``c_0 .. c_{D-1}`` (centre, array axis order),
``A``, ``b``, then one width per sigma group (2-D: one shared width; 3-D: ``s_z`` and
``s_xy``). Two estimators:

- ``"mle"``: maximum likelihood under Poisson noise (data in photons), Fisher scoring;
  uncertainty = Cramér-Rao bound ``diag(I^-1)`` with ``I = sum dmu dmu^T / mu`` at the fit.
- ``"lsq"``: least squares; uncertainty from ``I = sum dmu dmu^T / s2`` with ``s2`` the
  residual variance (``sum r^2 / (n - P)``), i.e. the Cramér-Rao bound under white
  Gaussian noise of that variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import erf

_SQRT2 = math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


@dataclass
class FitResult:
    """Fitted parameters (N, P), their Cramér-Rao standard deviations (N, P), a convergence
    flag (N,), the residual RMS per window (N,) and the reduced goodness of fit (N,):
    Poisson deviance / dof for ``"mle"``; 1 for ``"lsq"`` (no independent noise level)."""

    params: np.ndarray
    crlb: np.ndarray
    converged: np.ndarray
    resid_rms: np.ndarray
    chi2: np.ndarray


def _axis_terms(c, s, n):
    """Per-axis integrated Gaussian ``E`` (N, n) and its derivatives d/dc, d/ds (N, n)."""
    k = np.arange(n, dtype=np.float64)[None, :]
    lo = (k - 0.5 - c[:, None])
    hi = (k + 0.5 - c[:, None])
    ss = s[:, None]
    e = 0.5 * (erf(hi / (_SQRT2 * ss)) - erf(lo / (_SQRT2 * ss)))
    glo = np.exp(-0.5 * (lo / ss) ** 2)
    ghi = np.exp(-0.5 * (hi / ss) ** 2)
    dc = _INV_SQRT2PI / ss * (glo - ghi)
    ds = _INV_SQRT2PI / ss**2 * (lo * glo - hi * ghi)
    return e, dc, ds


def _expand(a, axis, ndim):
    """(N, n) per-axis array -> broadcastable (N, 1, .., n, .., 1) along window axis ``axis``."""
    shape = [a.shape[0]] + [1] * ndim
    shape[1 + axis] = a.shape[1]
    return a.reshape(shape)


def model_and_jacobian(theta, wshape, groups, jacobian=True):
    """Model ``mu`` (N, *wshape) and Jacobian (N, P, *wshape) at parameters ``theta`` (N, P)
    (``jacobian=False``: the model only)."""
    d = len(wshape)
    ng = max(groups) + 1
    c = theta[:, :d]
    amp = theta[:, d]
    sig = theta[:, d + 2: d + 2 + ng]
    terms = [_axis_terms(c[:, a], sig[:, groups[a]], wshape[a]) for a in range(d)]
    es = [_expand(t[0], a, d) for a, t in enumerate(terms)]
    prod = es[0]
    for e in es[1:]:
        prod = prod * e
    n = theta.shape[0]
    ampb = amp.reshape((n,) + (1,) * d)
    mu = theta[:, d + 1].reshape((n,) + (1,) * d) + ampb * prod
    if not jacobian:
        return mu
    jac = np.empty((n, d + 2 + ng) + tuple(wshape))
    dsig = [np.zeros((n,) + tuple(wshape)) for _ in range(ng)]
    for a in range(d):
        others = None
        for b in range(d):
            if b != a:
                others = es[b] if others is None else others * es[b]
        if others is None:
            others = np.ones((n,) + (1,) * d)
        jac[:, a] = ampb * _expand(terms[a][1], a, d) * others
        dsig[groups[a]] += ampb * _expand(terms[a][2], a, d) * others
    jac[:, d] = prod
    jac[:, d + 1] = 1.0
    for g in range(ng):
        jac[:, d + 2 + g] = dsig[g]
    return mu, jac


def _objective(x, mu, mask, mode):
    if mode == "mle":
        return np.sum(np.where(mask, mu - x * np.log(mu), 0.0).reshape(len(x), -1), axis=1)
    r = np.where(mask, x - mu, 0.0).reshape(len(x), -1)
    return np.sum(r * r, axis=1)


def fit_gaussians(data, mask, theta0, groups, mode="lsq", max_iter=40, sigma_bounds=(0.3, 50.0)):
    """Fit the model to a batch of windows.

    Parameters
    ----------
    data : numpy.ndarray, shape (N, *wshape)
        Window pixel values (photons for ``mode="mle"``), float64.
    mask : numpy.ndarray of bool, shape (N, *wshape)
        Valid pixels (False outside the image).
    theta0 : numpy.ndarray, shape (N, P)
        Start parameters (see module docstring for the order; pixel units).
    groups : tuple of int
        Sigma group of each window axis (2-D: ``(0, 0)``; 3-D: ``(0, 1, 1)``).
    mode : {"lsq", "mle"}
    max_iter : int
    sigma_bounds : (float, float)
        Widths are kept in this range (pixels).

    Returns
    -------
    FitResult
    """
    x = np.asarray(data, dtype=np.float64)
    n = x.shape[0]
    wshape = x.shape[1:]
    d = len(wshape)
    theta = np.array(theta0, dtype=np.float64, copy=True)
    p = theta.shape[1]
    npix = mask.reshape(n, -1).sum(axis=1)
    flat_mask = mask.reshape(n, 1, -1)
    lam = np.full(n, 1e-3)
    active = np.ones(n, bool)
    converged = np.zeros(n, bool)
    mu, jac = model_and_jacobian(theta, wshape, groups)
    if mode == "mle":
        mu = np.maximum(mu, 1e-9)
    cost = _objective(x, mu, mask, mode)
    lo_s, hi_s = sigma_bounds
    eye = np.eye(p)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        xm, mm, jm = x[idx], mu[idx], jac[idx].reshape(idx.size, p, -1)
        fm = flat_mask[idx]
        jw = np.where(fm, jm, 0.0)
        resid = (xm - mm).reshape(idx.size, -1)
        if mode == "mle":
            w = 1.0 / mm.reshape(idx.size, -1)
            info = np.einsum("npk,nqk->npq", jw * w[:, None, :], jw)
            grad = np.einsum("npk,nk->np", jw, resid * w)
        else:
            info = np.einsum("npk,nqk->npq", jw, jw)
            grad = np.einsum("npk,nk->np", jw, resid)
        diag = np.einsum("npp->np", info)
        damped = info + lam[idx, None, None] * diag[:, :, None] * eye[None]
        try:
            step = np.linalg.solve(damped, grad[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            step = np.stack([np.linalg.lstsq(a, g, rcond=None)[0] for a, g in zip(damped, grad)])
        trial = theta[idx] + step
        trial[:, d] = np.maximum(trial[:, d], 1e-6)  # amplitude > 0
        trial[:, :d] = np.clip(trial[:, :d], -0.5, np.asarray(wshape, float) - 0.5)  # in window
        trial[:, d + 2:] = np.clip(trial[:, d + 2:], lo_s, hi_s)
        if mode == "mle":
            trial[:, d + 1] = np.maximum(trial[:, d + 1], 1e-6)
        mu_t, jac_t = model_and_jacobian(trial, wshape, groups)
        if mode == "mle":
            mu_t = np.maximum(mu_t, 1e-9)
        cost_t = _objective(xm, mu_t, mask[idx], mode)
        better = np.isfinite(cost_t) & (cost_t <= cost[idx])
        bi = idx[better]
        small = np.max(np.abs(step[better, :d]), axis=1) < 1e-4
        rel = np.abs(cost[bi] - cost_t[better]) <= 1e-10 * np.maximum(np.abs(cost[bi]), 1.0)
        theta[bi] = trial[better]
        mu[bi] = mu_t[better]
        jac[bi] = jac_t[better]
        cost[bi] = cost_t[better]
        lam[bi] = np.maximum(lam[bi] / 10.0, 1e-7)
        wi = idx[~better]
        lam[wi] *= 10.0
        done = bi[small | rel]
        converged[done] = True
        active[done] = False
        stuck = wi[lam[wi] > 1e8]
        converged[stuck] = True  # no further improvement possible: at the optimum
        active[stuck] = False
    # Fisher information at the fit
    jw = np.where(flat_mask, jac.reshape(n, p, -1), 0.0)
    resid = np.where(mask, x - mu, 0.0).reshape(n, -1)
    dof = np.maximum(npix - p, 1)
    rss = np.sum(resid * resid, axis=1)
    if mode == "mle":
        w = 1.0 / mu.reshape(n, -1)
        info = np.einsum("npk,nqk->npq", jw * w[:, None, :], jw)
        xr_ = x.reshape(n, -1)
        mr = mu.reshape(n, -1)
        with np.errstate(divide="ignore", invalid="ignore"):
            dev = np.where(xr_ > 0, xr_ * np.log(np.maximum(xr_, 1e-300) / mr), 0.0) - (xr_ - mr)
        chi2 = 2.0 * np.sum(np.where(mask.reshape(n, -1), dev, 0.0), axis=1) / dof
    else:
        s2 = rss / dof
        info = np.einsum("npk,nqk->npq", jw, jw) / np.maximum(s2, 1e-300)[:, None, None]
        chi2 = np.ones(n)
    crlb = np.full((n, p), np.nan)
    ok = np.all(np.isfinite(info), axis=(1, 2))
    if ok.any():
        try:
            inv = np.linalg.inv(info[ok])
            crlb[ok] = np.sqrt(np.clip(np.einsum("npp->np", inv), 0, None))
        except np.linalg.LinAlgError:
            for i in np.flatnonzero(ok):
                try:
                    crlb[i] = np.sqrt(np.clip(np.diag(np.linalg.inv(info[i])), 0, None))
                except np.linalg.LinAlgError:
                    pass
    return FitResult(theta, crlb, converged, np.sqrt(rss / np.maximum(npix, 1)), chi2)


def crlb_gaussian(wshape, centre, amplitude, background, sigma, groups=None):
    """Cramér-Rao bound (standard deviations, pixels) of every model parameter under
    Poisson noise, for one spot with the given true parameters in a window of ``wshape``.

    Parameters use the module's order; ``centre`` is in array-axis order (pixels, window
    coordinates) and ``sigma`` is a sequence, one width per group.
    """
    d = len(wshape)
    groups = tuple(groups) if groups is not None else (0,) * d
    theta = np.r_[np.asarray(centre, float), amplitude, background, np.atleast_1d(sigma)][None, :]
    mu, jac = model_and_jacobian(theta, tuple(wshape), groups)
    j = jac.reshape(jac.shape[1], -1)
    info = (j / mu.reshape(1, -1)) @ j.T
    return np.sqrt(np.diag(np.linalg.inv(info)))

"""The landmark noise model: how uncertain each pair is, known or estimated.

Each pair ``i`` is assumed to carry independent, isotropic Gaussian localisation noise:
``sigma_src_i`` in the source frame and ``sigma_dst_i`` in the target frame (1-sigma per
axis, µm). In the target frame they combine to the effective per-axis variance
``v_i = sigma_dst_i² + s² sigma_src_i²`` (``s`` the transform's scale). When the landmarks
carry no uncertainties, all ``v_i`` are equal and estimated from the residuals with the
degrees-of-freedom correction ``<FRE²> = (1 - p / (K N)) <FLE²>`` (``p`` parameters, ``K``
dims, ``N`` pairs), where ``FLE² = K v`` is the expected squared localisation error of a pair.
A model that interpolates the landmarks (``K N <= p``, e.g. a thin-plate spline) leaves no
residual degrees of freedom; its noise is then estimated from an affine fit's residuals.
"""

from __future__ import annotations

import numpy as np

from .. import transforms as _tf
from ..landmarks import Landmarks

__all__ = ["OUTLIER_P"]

#: Probability of the chi-square bound beyond which a pair is an outlier (RANSAC's inlier
#: gate and the per-pair outlier flags).
OUTLIER_P = 0.999


def spatial_jacobian(tf: _tf.Transform, q: np.ndarray) -> np.ndarray:
    """Spatial Jacobian ``(N, D_out, D)`` of ``tf`` at points ``q`` ``(N, D)``, µm/µm.

    The linear part for linear transforms, the transform's analytic Jacobian where it has
    one, else central differences.
    """
    if isinstance(tf, _tf.LinearTransform) and not isinstance(tf, _tf.Projective):
        return np.broadcast_to(tf.linear, (len(q),) + tf.linear.shape)
    if hasattr(tf, "jacobian"):
        return tf.jacobian(q)
    d = q.shape[1]
    h = 1e-6 * max(1.0, float(np.abs(q).max()))
    return np.stack([(tf(q + h * e) - tf(q - h * e)) / (2 * h) for e in np.eye(d)], axis=2)


def linear_scale(tf: _tf.Transform, src: np.ndarray) -> float:
    """RMS singular value of the mean linear part over ``src``: the factor by which
    source-frame noise grows in the target frame."""
    if not len(src):
        return 1.0
    lin = np.mean(spatial_jacobian(tf, src), axis=0)
    return float(np.sqrt(np.mean(np.linalg.svd(lin, compute_uv=False) ** 2)))


def noise_variance(lms: Landmarks, tf: _tf.Transform | None, src: np.ndarray, dst: np.ndarray,
                   fle: float | None) -> np.ndarray | None:
    """Per-pair effective per-axis variance ``(N,)`` in the target frame (µm²), or None if unknown.

    From ``fle`` (RMS over all axes, target frame) when given, else from the landmarks'
    uncertainties, scaled by ``tf`` (identity scale while ``tf`` is None, i.e. before the
    first fit). None when neither is known or some pair has zero uncertainty on both sides.
    """
    k = lms.ndim_dst
    if fle is not None:
        return np.full(len(src), fle**2 / k)
    sig = lms.sigmas()
    if sig is None:
        return None
    s_src, s_dst = sig
    if not np.all(s_src + s_dst > 0):
        return None
    scale = linear_scale(tf, src) if tf is not None else 1.0
    return s_dst**2 + (scale * s_src) ** 2


def estimate_noise(lms: Landmarks, tf: _tf.Transform, residuals: np.ndarray, n_params: int,
                   fle: float | None) -> tuple[np.ndarray, str]:
    """Per-pair per-axis noise variance ``(N,)`` (µm²) of a fit, and where it came from.

    Parameters
    ----------
    lms : Landmarks
        The fitted pairs (active ones are used).
    tf : Transform
        The fitted transform.
    residuals : numpy.ndarray, shape (N,)
        Residual lengths of the active pairs, µm.
    n_params : int
        Parameters of the fitted model.
    fle : float or None
        Localisation error given by the user (RMS over all axes, µm).

    Returns
    -------
    variance : numpy.ndarray, shape (N,)
        NaN where nothing determines it.
    source : str
        ``"given"``, ``"uncertainties"``, ``"residuals"``, ``"affine residuals"`` or
        ``"unknown"``.
    """
    src, dst = lms.src(), lms.dst()
    n, k = dst.shape
    var = noise_variance(lms, tf, src, dst, fle)
    if var is not None:
        return var, "given" if fle is not None else "uncertainties"
    dof = k * n - n_params
    if dof > 0:
        # <FRE²> = (1 - p / (K N)) <FLE²>, FLE² = K v
        return np.full(n, np.sum(residuals**2) / dof), "residuals"
    # exact interpolation (TPS) or a minimal set: borrow the scale of an affine fit
    aff = _tf.Affine.from_estimate(src, dst) if n > k + 1 and src.shape[1] == k else None
    if aff:
        dof_a = k * n - _tf.Affine.n_params(k)
        return np.full(n, np.sum(aff.residuals(src, dst) ** 2) / dof_a), "affine residuals"
    return np.full(n, np.nan), "unknown"


def noise_dof(source: str, n: int, k: int, n_params: int) -> float:
    """Degrees of freedom of a noise estimate from ``source`` (``inf`` when it was known).

    ``n`` pairs of ``k``-D targets fitted with ``n_params`` parameters.
    """
    if source == "residuals":
        return float(k * n - n_params)
    if source == "affine residuals":
        return float(k * n - _tf.Affine.n_params(k))
    return float("inf")

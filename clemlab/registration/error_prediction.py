"""Predicting the error of mapped points: delta method, bootstrap, error ellipses.

The landmark noise (:mod:`clemlab.registration.noise`) makes the fitted transform uncertain;
this module carries that uncertainty to any mapped point.

* Linear models (translation, rigid, similarity, affine) and the 3-D-to-2-D rigid
  projection: the landmark noise is propagated through the weighted least-squares fit (delta
  method, exact for affine): parameter covariance ``C = (sum_i J_iᵀ J_i / v_i)⁻¹``, mapping
  covariance at ``q``: ``G(q) C G(q)ᵀ``. For rigid models this reproduces Fitzpatrick, West
  & Maurer's closed form.
* Projective, polynomial and thin-plate spline: parametric bootstrap. The fit is repeated on
  ``n_bootstrap`` synthetic landmark sets drawn from the noise model around the fitted
  configuration; the mapping covariance at ``q`` is a robust, median-based estimate from the
  refitted maps' deviations from the fit at ``q`` (:func:`robust_covariance`): a
  Gaussian-equivalent size of the typical error, not a plain second moment.

*Mapping error* is the error of the mapped position of an exactly known source point: what
targeting needs. *Target error* adds the target's own localisation error, mapped into the
target frame (:func:`target_covariance`): where a newly measured point will fall.
"""

from __future__ import annotations

import numpy as np

from .. import transforms as _tf
from ..errors import RegistrationError
from .noise import spatial_jacobian

__all__ = ["MappedPoints"]


def _plain(obj):
    """``obj`` with every MappedPoints inside (tuples, lists, dicts) seen as a plain ndarray."""
    if isinstance(obj, MappedPoints):
        return obj.view(np.ndarray)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_plain(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


class MappedPoints(np.ndarray):
    """Mapped points ``(N, D)`` (µm, target frame, ``(x, y[, z])``) carrying their predicted errors.

    A numpy array subclass rather than a plain record, because the mapped points are what
    users compute with: they index them, subtract the truth, plot them and pass them to numpy
    and to other clemlab functions as ``(N, D)`` points; the errors ride along as attributes.

    Only the array :meth:`Registration.map_points` returns (and its ``copy()``, deep copy or
    pickled copy) carries the errors. Anything computed from it (arithmetic, rows, slices,
    numpy functions) is a plain numpy array: its rows need no longer be the mapped points the
    errors describe. Views made by ndarray methods (``.T``, ``.reshape()``, ``.view()``) keep
    the type but have ``error`` etc. set to None. Select a subset's errors with the same index
    (``mp.error[mask]``), or take :meth:`to_dataframe`.

    Parameters
    ----------
    points : array_like, shape (N, D)
        Mapped positions, µm.
    error, covariance, outside_hull, dof
        As the attributes below.

    Attributes
    ----------
    error : numpy.ndarray, shape (N,)
        Predicted RMS error of each mapped point, µm (mapping error, or target error when
        the target's own localisation error was included).
    covariance : numpy.ndarray, shape (N, D, D)
        Error covariance, µm².
    outside_hull : numpy.ndarray of bool, shape (N,)
        True where the source point lies outside the landmarks' convex hull (extrapolation).
    dof : float
        Degrees of freedom of the noise estimate behind ``covariance`` (``inf`` when the
        localisation error was known rather than estimated from residuals).
    """

    def __new__(cls, points, error, covariance, outside_hull, dof=np.inf):
        obj = np.asarray(points, dtype=np.float64).view(cls)
        obj.error = np.asarray(error, dtype=np.float64)
        obj.covariance = np.asarray(covariance, dtype=np.float64)
        obj.outside_hull = np.asarray(outside_hull, dtype=bool)
        obj.dof = float(dof)
        return obj

    def __array_finalize__(self, obj):
        # a view made by an ndarray method may be reordered or reshaped: no errors known
        self.error = self.covariance = self.outside_hull = None
        self.dof = getattr(obj, "dof", np.inf)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if "out" in kwargs:
            kwargs["out"] = _plain(kwargs["out"])
        return getattr(ufunc, method)(*_plain(inputs), **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return func(*_plain(args), **_plain(kwargs))

    def __getitem__(self, key):
        return self.view(np.ndarray)[key]

    def copy(self, order="C") -> MappedPoints | np.ndarray:
        """A copy with its own copies of the errors."""
        data = self.view(np.ndarray).copy(order)
        if self.error is None:
            return data
        return MappedPoints(data, self.error.copy(), self.covariance.copy(), self.outside_hull.copy(), self.dof)

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    def __reduce_ex__(self, protocol):
        if self.error is None:
            return self.view(np.ndarray).__reduce_ex__(protocol)
        return MappedPoints, (self.view(np.ndarray), self.error, self.covariance, self.outside_hull, self.dof)

    def _require_errors(self, what: str) -> None:
        if self.covariance is None:
            raise RegistrationError(
                f"{what} needs the errors of mapped points, and this array is a view derived "
                "from them (reshaped or transposed), which carries none: call it on the array "
                "Registration.map_points returned"
            )

    def ellipses(self, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Semi-axes of the 2-D/3-D confidence ellipse(s): ``(N, D)`` lengths in µm (largest
        first) and ``(N, D, D)`` directions (columns), as a tuple.

        With a known noise level the squared Mahalanobis radius is the chi-square quantile
        ``chi2(confidence; D)``; when the noise was estimated from ``dof`` residual degrees of
        freedom, the estimate's own uncertainty widens it to ``D F(confidence; D, dof)``
        (Hotelling), which keeps the stated coverage with few landmarks.
        """
        from scipy.stats import chi2, f

        self._require_errors("ellipses()")
        d = self.shape[1]
        vals, vecs = np.linalg.eigh(self.covariance)
        vals, vecs = vals[:, ::-1], vecs[:, :, ::-1]
        q = chi2.ppf(confidence, d) if not np.isfinite(self.dof) else d * f.ppf(confidence, d, self.dof)
        return np.sqrt(np.maximum(vals, 0) * q), vecs

    def to_dataframe(self):
        """Table with columns ``x, y[, z]`` (µm), ``error`` (µm), ``outside_hull``."""
        import pandas as pd

        self._require_errors("to_dataframe()")
        cols = ["x", "y", "z"][: self.shape[1]]
        df = pd.DataFrame(np.asarray(self), columns=cols)
        df["error"] = self.error
        df["outside_hull"] = self.outside_hull
        return df


def delta_applies(tf: _tf.Transform) -> bool:
    """True where the delta method predicts the error of ``tf`` (else: bootstrap)."""
    return (isinstance(tf, _tf.LinearTransform) and not isinstance(tf, _tf.Projective)) or isinstance(
        tf, _tf.RigidProjection)


def parameter_covariance(tf: _tf.Transform, src: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Covariance ``(P, P)`` of the fitted parameters: ``(sum_i J_iᵀ J_i / v_i)⁻¹``.

    ``src`` ``(N, D)`` are the fitted source points (µm), ``var`` ``(N,)`` their per-axis
    noise variance in the target frame (µm²).
    """
    jac = tf.param_jacobian(src)  # (N, K, P)
    info = np.einsum("nkp,nkq,n->pq", jac, jac, 1.0 / var)
    return np.linalg.pinv(info, rcond=1e-12, hermitian=True)


def delta_covariance(tf: _tf.Transform, q: np.ndarray, param_cov: np.ndarray) -> np.ndarray:
    """Mapping covariance ``(N, D, D)`` (µm²) at source points ``q``: ``G(q) C G(q)ᵀ``."""
    g = tf.param_jacobian(q)
    return np.einsum("nkp,pq,nlq->nkl", g, param_cov, g)


def bootstrap_refits(cls: type[_tf.Transform], tf: _tf.Transform, options: dict, src: np.ndarray,
                     var: np.ndarray, noise_source: str,
                     sigmas: tuple[np.ndarray, np.ndarray] | None, n_bootstrap: int,
                     seed: int) -> list[_tf.Transform]:
    """Refits of the model to ``n_bootstrap`` landmark sets drawn around the fit.

    Parameters
    ----------
    cls : type
        Transform class of the model; ``options`` its options.
    tf : Transform
        The fit; the synthetic targets are drawn around ``tf(src)``.
    src : numpy.ndarray, shape (N, D)
        Fitted source points, µm.
    var : numpy.ndarray, shape (N,)
        Per-axis noise variance of each pair in the target frame, µm².
    noise_source : str
        Where ``var`` came from (see :func:`~clemlab.registration.noise.estimate_noise`).
        With ``"uncertainties"`` the noise is drawn on both sides from ``sigmas``
        (``(sigma_src, sigma_dst)``, µm); otherwise all of it on the target side. Refits are
        weighted by ``1 / var`` when the noise was given or from uncertainties and differs
        between pairs.
    n_bootstrap, seed : int
        Number of synthetic sets and the seed they are drawn with.

    Returns
    -------
    list of Transform
        The refits that succeeded (a degenerate draw is skipped).
    """
    rng = np.random.default_rng(seed)
    fitted = tf(src)
    if noise_source == "uncertainties" and sigmas is not None:
        s_src, s_dst = sigmas
    else:  # all noise on the target side
        s_src, s_dst = np.zeros(len(src)), np.sqrt(var)
    boots = []
    opts = dict(options)
    for _ in range(n_bootstrap):
        b_src = src + rng.normal(size=src.shape) * s_src[:, None]
        b_dst = fitted + rng.normal(size=src.shape) * s_dst[:, None]
        w = None if noise_source not in ("uncertainties", "given") or np.allclose(var, var[0]) else 1.0 / var
        refit = cls.from_estimate(b_src, b_dst, weights=w, **opts)
        if refit:
            boots.append(refit)
    return boots


def bootstrap_covariance(tf: _tf.Transform, q: np.ndarray, refits: list[_tf.Transform]) -> np.ndarray:
    """Mapping covariance ``(N, D, D)`` (µm²) at source points ``q`` from bootstrap refits."""
    ref = tf(q)
    dev = np.stack([b(q) - ref for b in refits])  # (B, N, D)
    return robust_covariance(dev)


def robust_covariance(dev: np.ndarray) -> np.ndarray:
    """Covariance ``(N, D, D)`` of bootstrap deviations ``(B, N, D)``, robust to wild refits.

    Near-minimal projective fits occasionally put their horizon inside the field and throw a
    refit point arbitrarily far; a plain second moment would then be dominated by one sample.
    The size comes from the median squared deviation (exact for Gaussian deviations:
    ``median |d|² = sigma² chi2_D.median``), the shape from the central 90 % of the samples.
    """
    from scipy.stats import chi2

    b, n, d = dev.shape
    if b == 0:
        return np.full((n, d, d), np.nan)
    r2 = np.sum(dev**2, axis=2)  # (B, N)
    total = d * np.median(r2, axis=0) / chi2.ppf(0.5, d)  # (N,)
    keep = r2 <= np.quantile(r2, 0.9, axis=0)[None, :]
    kept = dev * keep[:, :, None]
    shape = np.einsum("bnk,bnl->nkl", kept, kept) / np.maximum(keep.sum(axis=0), 1)[:, None, None]
    tr = np.trace(shape, axis1=1, axis2=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(tr > 0, total / tr, 0.0)
    return shape * scale[:, None, None]


def target_covariance(tf: _tf.Transform, q: np.ndarray, sigma: float) -> np.ndarray:
    """``(N, D, D)`` (µm²): a target's own isotropic localisation error ``sigma`` (1-sigma per
    axis, µm, source frame) at source points ``q``, mapped into the target frame."""
    jac = spatial_jacobian(tf, q)
    return sigma**2 * np.einsum("nkj,nlj->nkl", jac, jac)


def inside_convex_hull(points: np.ndarray, hull_points: np.ndarray) -> np.ndarray:
    """``(N,)`` True where ``points`` lie inside the convex hull of ``hull_points`` (all False
    when the hull is degenerate: too few or coplanar points)."""
    from scipy.spatial import Delaunay, QhullError

    d = hull_points.shape[1]
    if len(hull_points) <= d:
        return np.zeros(len(points), bool)
    try:
        return Delaunay(hull_points).find_simplex(points) >= 0
    except QhullError:
        return np.zeros(len(points), bool)

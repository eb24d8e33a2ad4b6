"""Fitting landmarks and saying how far to trust the fit.

:func:`register` fits a transform model to landmark pairs and returns a
:class:`Registration`: the transform, per-pair residuals (their RMS is the fiducial
registration error, FRE), leave-one-out errors, an estimate of the fiducial localisation
error (FLE), and the predicted target registration error (TRE) anywhere in the field.
:func:`compare_models` says which model the data support; :func:`error_vs_n` whether there
are enough landmarks.

Error model
-----------
Each pair ``i`` is assumed to carry independent, isotropic Gaussian localisation noise:
``sigma_src_i`` in the source frame and ``sigma_dst_i`` in the target frame (1-sigma per
axis, µm). In the target frame they combine to the effective per-axis variance
``v_i = sigma_dst_i² + s² sigma_src_i²`` (``s`` the transform's scale). When the landmarks
carry no uncertainties, all ``v_i`` are equal and estimated from the residuals with the
degrees-of-freedom correction ``<FRE²> = (1 - p / (K N)) <FLE²>`` (``p`` parameters, ``K``
dims, ``N`` pairs), where ``FLE² = K v`` is the expected squared localisation error of a pair.

* Linear models (translation, rigid, similarity, affine): the landmark noise is propagated
  through the weighted least-squares fit (delta method, exact for affine): parameter
  covariance ``C = (sum_i J_iᵀ J_i / v_i)⁻¹``, mapping covariance at ``q``:
  ``G(q) C G(q)ᵀ``. For rigid models this reproduces Fitzpatrick, West & Maurer's closed form.
* Projective, polynomial and thin-plate spline: parametric bootstrap. The fit is repeated on
  ``n_bootstrap`` synthetic landmark sets drawn from the noise model around the fitted
  configuration; the mapping covariance at ``q`` is a robust, median-based estimate from the
  refitted maps' deviations from the fit at ``q`` (see :meth:`Registration.predicted_error`):
  a Gaussian-equivalent size of the typical error, not a plain second moment.

*Mapping error* (``predicted_error(points)``) is the error of the mapped position of an exactly
known source point: what targeting needs. *Target error* (``include_target_fle=True``) adds the
target's own localisation error, mapped into the target frame: where a newly measured point
will fall.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import transforms as _tf
from ._atomic import atomic_write_text
from .errors import FileFormatError, RegistrationError
from .landmarks import Landmarks

__all__ = ["register", "Registration", "MappedPoints", "compare_models", "ModelComparison",
           "error_vs_n", "MODEL_ORDER"]

_FORMAT = "clemlab.registration"
_VERSION = 1

#: Models from simplest to most flexible (``compare_models`` prefers the earlier).
MODEL_ORDER = ("translation", "rigid", "similarity", "affine", "projective", "polynomial2",
               "polynomial3", "tps")

#: Thresholds of the plain-language warnings (documented in :func:`register`).
SCALE_RANGE = (0.5, 2.0)
MAX_STRETCH = 1.25
MAX_CONDITION = 100.0
OUTLIER_P = 0.999


def _model_class(model: str | type) -> tuple[type[_tf.Transform], dict]:
    """Model class and implied options for a model name (``"polynomial3"`` -> order 3)."""
    if isinstance(model, type) and issubclass(model, _tf.Transform):
        return model, {}
    key = str(model).lower().replace("_", "").replace("-", "")
    aliases = {"polynomial2": ("polynomial", {"order": 2}), "polynomial3": ("polynomial", {"order": 3}),
               "thinplatespline": ("tps", {}), "homography": ("projective", {}),
               "rigidprojection": ("rigid-projection", {})}
    key, opts = aliases.get(key, (key, {}))
    if key not in _tf.MODELS:
        raise RegistrationError(f"unknown model {model!r}; choose one of {list(MODEL_ORDER)}")
    return _tf.MODELS[key], dict(opts)


def _model_name(cls: type[_tf.Transform], options: dict) -> str:
    if cls is _tf.Polynomial:
        return f"polynomial{options.get('order', 2)}"
    if cls is _tf.ThinPlateSpline:
        return "tps"
    if cls is _tf.RigidProjection:
        return "rigid-projection"
    return cls.__name__.lower()


def _n_params(cls, ndim: int, n: int, options: dict) -> int:
    return cls.n_params(ndim, n_points=n, **options)


def _linear_scale(tf: _tf.Transform, src: np.ndarray) -> float:
    """RMS singular value of the (local) linear part: the scale of source noise in the target."""
    if not len(src):
        return 1.0
    lin = np.mean(_spatial_jacobian(tf, src), axis=0)
    return float(np.sqrt(np.mean(np.linalg.svd(lin, compute_uv=False) ** 2)))


def _convex_hull_test(points: np.ndarray, hull_pts: np.ndarray) -> np.ndarray:
    """True where ``points`` lie inside the convex hull of ``hull_pts`` (False if degenerate)."""
    from scipy.spatial import Delaunay, QhullError

    d = hull_pts.shape[1]
    if len(hull_pts) <= d:
        return np.zeros(len(points), bool)
    try:
        return Delaunay(hull_pts).find_simplex(points) >= 0
    except QhullError:
        return np.zeros(len(points), bool)


# ---------------------------------------------------------------------------------------
# RANSAC
# ---------------------------------------------------------------------------------------
def _ransac(cls, src, dst, var, known_noise: bool, options: dict, rng, max_trials: int = 2000):
    """Inlier mask by RANSAC over minimal sets (MSAC score; LMedS scale when noise unknown).

    Non-linear models are screened with an affine model (a minimal spline is affine).
    """
    from scipy.stats import chi2

    n, k = src.shape
    screen = cls if cls in (_tf.Translation, _tf.Rigid, _tf.Similarity, _tf.Affine, _tf.Projective) else _tf.Affine
    sopts = {key: v for key, v in options.items() if key == "allow_reflection" and screen in (_tf.Rigid, _tf.Similarity)}
    m = screen.required_points(k)
    if n <= m:
        raise RegistrationError(
            f"robust fitting needs more than {m} landmark pairs for a {screen.__name__.lower()} "
            f"screening model, got {n}"
        )
    gate = chi2.ppf(OUTLIER_P, k)
    best, best_score = None, np.inf
    trials, needed = 0, max_trials
    while trials < min(needed, max_trials):
        trials += 1
        idx = rng.choice(n, m, replace=False)
        tf = screen.from_estimate(src[idx], dst[idx], **sopts)
        if not tf:
            continue
        r2 = np.sum((tf(src) - dst) ** 2, axis=1)
        if known_noise:
            score = np.sum(np.minimum(r2 / var, gate))
        else:
            score = np.median(r2)
        if score < best_score:
            best, best_score = tf, score
            # adaptive number of trials for 99.9 % confidence of one clean sample
            if known_noise:
                frac = np.mean(r2 / var < gate)
            else:
                s2 = score / chi2.ppf(0.5, k) * (1 + 5.0 / max(n - m, 1)) ** 2
                frac = np.mean(r2 < gate * s2)
            if frac > 0:
                needed = int(np.ceil(np.log(1e-3) / np.log(max(1e-12, 1 - frac**m)))) if frac < 1 else 1
                needed = max(needed, 50)
    if best is None:
        raise RegistrationError("robust fitting found no minimal set that determines the model; check the landmarks")
    inl = np.ones(n, bool)
    tf = best
    for _ in range(5):
        r2 = np.sum((tf(src) - dst) ** 2, axis=1)
        if known_noise:
            new = r2 / var < gate
        else:
            # robust scale (LMedS with small-sample correction), then a chi-square gate
            s2 = np.median(r2) / chi2.ppf(0.5, k) * (1 + 5.0 / max(n - m, 1)) ** 2
            new = r2 < gate * s2
        if new.sum() < m:
            break
        if np.array_equal(new, inl) and tf is not best:
            break
        inl = new
        refit = screen.from_estimate(src[inl], dst[inl], **sopts)
        if not refit:
            break
        tf = refit
    return inl


# ---------------------------------------------------------------------------------------
# register
# ---------------------------------------------------------------------------------------
def register(landmarks: Landmarks, model: str = "affine", *, robust: bool = False,
             fle: float | None = None, n_bootstrap: int = 200, seed: int = 0,
             **options) -> Registration:
    """Fit a transform model to the active landmark pairs and assess it.

    Parameters
    ----------
    landmarks : Landmarks
        Pairs source -> target (µm, ``(x, y[, z])``); inactive pairs are ignored. Per-pair
        uncertainties (``sigma_src``, ``sigma_dst``), when present, weight the fit and set
        the noise model.
    model : str
        ``"translation"``, ``"rigid"``, ``"similarity"``, ``"affine"``, ``"projective"``,
        ``"polynomial2"``/``"polynomial3"`` (or ``"polynomial"`` with ``order=``), ``"tps"``.
    robust : bool
        Run RANSAC over minimal sets first; pairs it rejects are deactivated in the
        registration's copy of the landmarks and listed in ``outliers``. The inlier gate is
        the 99.9 % chi-square bound of the FLE (from the uncertainties or ``fle``, else a
        least-median-of-squares estimate).
    fle : float, optional
        Known fiducial localisation error (RMS over all axes, µm, in the target frame):
        overrides the estimate from residuals/uncertainties for error prediction.
    n_bootstrap : int
        Resamples for the error prediction of projective, polynomial and TPS models.
    seed : int
        Seed of RANSAC and of the bootstrap (results are reproducible).
    **options
        Model options: ``allow_reflection=True`` (rigid, similarity), ``order=`` (polynomial),
        ``smoothing=`` (tps).

    Returns
    -------
    Registration

    Raises
    ------
    RegistrationError
        When the landmarks do not determine the model (too few, degenerate, NaN); the
        message says why and what to do.

    Notes
    -----
    The summary warns, in plain words, about: mirrored data (the best affine fit has a
    negative determinant), a degenerate layout (condition number of the centred source
    landmarks above ``MAX_CONDITION`` = 100), a scale outside ``SCALE_RANGE`` (0.5-2: both
    frames are in µm, so the scale should be close to 1), a stretch (ratio of the linear
    part's singular values) above ``MAX_STRETCH`` = 1.25, and outliers (left-out error beyond
    the 99.9 % bound of the noise model).
    """
    if not isinstance(landmarks, Landmarks):
        raise RegistrationError(
            f"register() takes a Landmarks table, got {type(landmarks).__name__}; "
            "build one with Landmarks.from_points(src, dst)"
        )
    cls, implied = _model_class(model)
    options = {**implied, **options}
    if fle is not None and not (np.isfinite(fle) and fle > 0):
        raise RegistrationError(f"fle must be a positive number of µm, got {fle!r}")
    lms = landmarks.copy()
    src, dst = lms.src(), lms.dst()
    _check_duplicates(lms)
    projection = cls is _tf.RigidProjection
    if (lms.ndim != lms.ndim_dst) != projection:
        if projection:
            raise RegistrationError(
                "model 'rigid-projection' pairs 3-D source points (an LM stack) with 2-D targets "
                f"(an EM/FIB image); these landmarks are {lms._dims_text}"
            )
        raise RegistrationError(
            f"these landmarks pair {lms.ndim}-D sources with {lms.ndim_dst}-D targets: only "
            "model='rigid-projection' maps 3-D points to a 2-D image"
        )
    outliers: list[str] = []
    if robust and projection:
        raise RegistrationError("robust=True is not available for rigid-projection; deactivate suspicious pairs instead")
    if robust:
        names = np.array(lms.names)[lms.active]
        var0 = _noise_variance(lms, None, src, dst, fle)
        inl = _ransac(cls, src, dst, var0, var0 is not None, options, np.random.default_rng(seed))
        for name in names[~inl]:
            lms._df.loc[lms._df["name"] == name, "active"] = False
        outliers = names[~inl].tolist()
        src, dst = lms.src(), lms.dst()
    first = cls.from_estimate(src, dst, **options)
    if not first:
        raise RegistrationError(f"cannot fit a {_model_name(cls, options)} model: {first.reason}")
    var = _noise_variance(lms, first, src, dst, fle)
    weights = None if var is None or np.allclose(var, var[0]) else 1.0 / var
    tf = cls.from_estimate(src, dst, weights=weights, **options) if weights is not None else first
    if not tf:
        raise RegistrationError(f"cannot fit a {_model_name(cls, options)} model: {tf.reason}")
    tf = tf.with_frames(lms.source_frame, lms.target_frame)
    loo = np.full(len(src), np.nan)
    if len(src) > cls.required_points(lms.ndim, **options):
        keep = np.ones(len(src), bool)
        for i in range(len(src)):
            keep[i] = False
            warm = tf.warm_start() if hasattr(tf, "warm_start") else {}
            part = cls.from_estimate(src[keep], dst[keep], weights=None if weights is None else weights[keep],
                                     **{**options, **warm})
            keep[i] = True
            if part:
                loo[i] = float(np.linalg.norm(part(src[i]) - dst[i]))
    reg = Registration(tf, lms, _model_name(cls, options), loo_errors=loo, options=options,
                       fle=fle, n_bootstrap=n_bootstrap, seed=seed, outliers=outliers)
    if projection:
        sols = cls.solutions(src, dst, weights, axial_scale=options.get("axial_scale", False))
        reg.alternatives = [(t.with_frames(lms.source_frame, lms.target_frame), c) for t, c in sols]
    return reg


def _check_duplicates(lms: Landmarks) -> None:
    """Refuse pairs that repeat a source or target position (a double click, usually)."""
    names = np.array(lms.names)[lms.active]
    for side, pts in (("source", lms.src()), ("target", lms.dst())):
        _, first, counts = np.unique(pts, axis=0, return_index=True, return_counts=True)
        if np.any(counts > 1):
            dup = pts[first[counts > 1][0]]
            same = names[np.all(pts == dup, axis=1)].tolist()
            raise RegistrationError(
                f"landmark pairs {same} have the same {side} position {dup.tolist()} µm; "
                "remove the duplicate (or deactivate it) before fitting"
            )


def _noise_variance(lms: Landmarks, tf, src, dst, fle) -> np.ndarray | None:
    """Per-pair effective per-axis variance in the target frame, or None if unknown."""
    k = lms.ndim_dst
    if fle is not None:
        return np.full(len(src), fle**2 / k)
    sig = lms.sigmas()
    if sig is None:
        return None
    s_src, s_dst = sig
    if not np.all(s_src + s_dst > 0):
        return None
    scale = _linear_scale(tf, src) if tf is not None else 1.0
    return s_dst**2 + (scale * s_src) ** 2


# ---------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------
class MappedPoints(np.ndarray):
    """Mapped points ``(N, D)`` (a numpy array) carrying their predicted errors.

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
        if obj is None:
            return
        same = getattr(obj, "shape", None) == self.shape
        for name in ("error", "covariance", "outside_hull"):
            setattr(self, name, getattr(obj, name, None) if same else None)
        self.dof = getattr(obj, "dof", np.inf)

    def ellipses(self, confidence: float = 0.95) -> np.ndarray:
        """Semi-axes of the 2-D/3-D confidence ellipse(s): ``(N, D)`` lengths in µm (largest
        first) and ``(N, D, D)`` directions (columns), as a tuple.

        With a known noise level the squared Mahalanobis radius is the chi-square quantile
        ``chi2(confidence; D)``; when the noise was estimated from ``dof`` residual degrees of
        freedom, the estimate's own uncertainty widens it to ``D F(confidence; D, dof)``
        (Hotelling), which keeps the stated coverage with few landmarks.
        """
        from scipy.stats import chi2, f

        d = self.shape[1]
        vals, vecs = np.linalg.eigh(self.covariance)
        vals, vecs = vals[:, ::-1], vecs[:, :, ::-1]
        q = chi2.ppf(confidence, d) if not np.isfinite(self.dof) else d * f.ppf(confidence, d, self.dof)
        return np.sqrt(np.maximum(vals, 0) * q), vecs

    def to_dataframe(self):
        """Table with columns ``x, y[, z]`` (µm), ``error`` (µm), ``outside_hull``."""
        import pandas as pd

        cols = ["x", "y", "z"][: self.shape[1]]
        df = pd.DataFrame(np.asarray(self), columns=cols)
        df["error"] = self.error
        df["outside_hull"] = self.outside_hull
        return df


class Registration:
    """The result of :func:`register`: a transform plus how far to trust it.

    Attributes
    ----------
    transform : Transform
        Maps source-frame points (µm) to target-frame points (µm).
    landmarks : Landmarks
        The pairs it was fitted to (a copy; RANSAC outliers are inactive in it).
    model : str
        Model name.
    residual_vectors : numpy.ndarray, shape (N, D)
        ``transform(src) - dst`` for the active pairs, µm.
    residuals : numpy.ndarray, shape (N,)
        Their lengths, µm.
    rms : float
        Root-mean-square residual: the fiducial registration error (FRE), µm.
    loo_errors : numpy.ndarray, shape (N,)
        Leave-one-out error per active pair (refit without it, distance at it), µm.
    n_params : int
        Fitted parameters ``p``.
    fle : float
        Fiducial localisation error (RMS over all axes, effective in the target frame, µm):
        given, from the landmark uncertainties, or estimated from the residuals.
    fle_source : str
        ``"given"``, ``"uncertainties"``, ``"residuals"`` or ``"affine residuals"``.
    outliers : list of str
        Pairs rejected by RANSAC (``robust=True``).
    """

    def __init__(self, transform: _tf.Transform, landmarks: Landmarks, model: str,
                 loo_errors: Any = None, options: dict | None = None, fle: float | None = None,
                 n_bootstrap: int = 200, seed: int = 0, outliers: list[str] | None = None):
        self.transform = transform
        self.landmarks = landmarks
        self.model = model
        self.options = dict(options or {})
        self.n_bootstrap = int(n_bootstrap)
        self.seed = int(seed)
        self.outliers = list(outliers or [])
        self._given_fle = fle
        self._src, self._dst = landmarks.src(), landmarks.dst()
        src, dst = self._src, self._dst
        n, k = dst.shape  # k: dimensionality of the residuals (target side)
        self.residual_vectors = transform(src) - dst if n else np.zeros((0, k))
        self.residuals = np.linalg.norm(self.residual_vectors, axis=1)
        self.rms = float(np.sqrt(np.mean(self.residuals**2))) if n else float("nan")
        self.loo_errors = (np.full(n, np.nan) if loo_errors is None
                           else np.asarray(loo_errors, dtype=np.float64))
        cls, _ = _model_class(model)
        self._cls = cls
        self.n_params = _n_params(cls, k, n, self.options)
        self._var, self.fle_source = self._noise()
        self.fle = float(np.sqrt(k * np.mean(self._var))) if len(self._var) else float("nan")
        self._cov_params = None
        self._boot = None

    # -- noise model ----------------------------------------------------------------------
    def _noise(self) -> tuple[np.ndarray, str]:
        src, dst = self._src, self._dst
        n, k = dst.shape
        var = _noise_variance(self.landmarks, self.transform, src, dst, self._given_fle)
        if var is not None:
            return var, "given" if self._given_fle is not None else "uncertainties"
        dof = k * n - self.n_params
        if dof > 0:
            # <FRE²> = (1 - p / (K N)) <FLE²>, FLE² = K v
            return np.full(n, np.sum(self.residuals**2) / dof), "residuals"
        # exact interpolation (TPS) or a minimal set: borrow the scale of an affine fit
        aff = _tf.Affine.from_estimate(src, dst) if n > k + 1 and src.shape[1] == k else None
        if aff:
            dof_a = k * n - _tf.Affine.n_params(k)
            return np.full(n, np.sum(aff.residuals(src, dst) ** 2) / dof_a), "affine residuals"
        return np.full(n, np.nan), "unknown"

    @property
    def fre_expected(self) -> float:
        """Expected FRE from the FLE: ``sqrt((1 - p / (K N)) FLE²)``, µm."""
        n, k = self._dst.shape
        return float(np.sqrt(max(0.0, 1 - self.n_params / (k * n)) * self.fle**2))

    @property
    def names(self) -> list[str]:
        """Names of the active pairs, in the order of ``residuals``."""
        df = self.landmarks.to_dataframe()
        return df["name"][df["active"]].tolist()

    # -- error prediction -----------------------------------------------------------------
    @property
    def method(self) -> str:
        """How the TRE is predicted: ``"delta"`` (linear models) or ``"bootstrap"``."""
        return "delta" if self._delta_applies() else "bootstrap"

    def _delta_applies(self) -> bool:
        t = self.transform
        return (isinstance(t, _tf.LinearTransform) and not isinstance(t, _tf.Projective)) or isinstance(
            t, _tf.RigidProjection)

    def _param_covariance(self) -> np.ndarray:
        if self._cov_params is None:
            jac = self.transform.param_jacobian(self._src)  # (N, K, P)
            info = np.einsum("nkp,nkq,n->pq", jac, jac, 1.0 / self._var)
            self._cov_params = np.linalg.pinv(info, rcond=1e-12, hermitian=True)
        return self._cov_params

    def _bootstrap(self) -> list:
        if self._boot is None:
            rng = np.random.default_rng(self.seed)
            src = self._src
            fitted = self.transform(src)
            sig = self.landmarks.sigmas()
            if self.fle_source == "uncertainties" and sig is not None:
                s_src, s_dst = sig
            else:  # all noise on the target side
                s_src, s_dst = np.zeros(len(src)), np.sqrt(self._var)
            boots = []
            opts = dict(self.options)
            for _ in range(self.n_bootstrap):
                b_src = src + rng.normal(size=src.shape) * s_src[:, None]
                b_dst = fitted + rng.normal(size=src.shape) * s_dst[:, None]
                w = None if self.fle_source not in ("uncertainties", "given") or np.allclose(self._var, self._var[0]) else 1.0 / self._var
                tf = self._cls.from_estimate(b_src, b_dst, weights=w, **opts)
                if tf:
                    boots.append(tf)
            self._boot = boots
        return self._boot

    def covariance(self, points: Any) -> np.ndarray:
        """Covariance of the mapped position of exactly known source points (µm²).

        Parameters
        ----------
        points : array_like, shape (N, D)
            Source-frame points, µm, ``(x, y[, z])``.

        Returns
        -------
        numpy.ndarray, shape (N, D, D)
        """
        q = _tf.as_points(points, self.transform.ndim)
        if not np.all(np.isfinite(self._var)):
            return np.full((len(q), q.shape[1], q.shape[1]), np.nan)
        if self._delta_applies():
            g = self.transform.param_jacobian(q)
            return np.einsum("nkp,pq,nlq->nkl", g, self._param_covariance(), g)
        ref = self.transform(q)
        dev = np.stack([b(q) - ref for b in self._bootstrap()])  # (B, N, D)
        return _robust_covariance(dev)

    def predicted_error(self, points: Any, include_target_fle: bool = False,
                        target_sigma: float | None = None) -> np.ndarray:
        """Expected target registration error (RMS over all axes) at source points, µm.

        Parameters
        ----------
        points : array_like, shape (N, D)
            Source-frame points, µm, ``(x, y[, z])``.
        include_target_fle : bool
            False (default): the *mapping error*, for an exactly known source point (what
            targeting needs). True: the *target error*, adding the point's own localisation
            error (``target_sigma``, per axis, source frame) mapped into the target frame.
        target_sigma : float, optional
            Localisation uncertainty of the target (1-sigma per axis, µm, source frame).
            Default: the median ``sigma_src`` of the landmarks, else the FLE per axis.

        Returns
        -------
        numpy.ndarray, shape (N,)

        Notes
        -----
        What is returned depends on :attr:`method`:

        * ``"delta"`` (translation, rigid, similarity, affine): the landmark noise is
          propagated through the least-squares fit; the result is the RMS error
          ``sqrt(E|e|²)`` of the (Gaussian) mapping error. For rigid models it equals
          Fitzpatrick, West & Maurer's closed form.
        * ``"bootstrap"`` (projective, polynomial, TPS): a parametric bootstrap,
          ``n_bootstrap`` refits to landmark sets drawn from the noise model around the fit.
          The size is median-based: ``sqrt(D median|d|² / chi2_D.median)`` over the refits'
          deviations ``d`` at each point, i.e. the RMS of the Gaussian error that has the same
          median (the covariance's shape comes from the central 90 % of the refits). It is a
          *typical* error: equal to the RMS when the error is Gaussian, as it nearly is for
          well-determined fits, and insensitive to rare wild refits.

        A projective map divides by ``h3 . (q, 1)``, which the landmark noise can push
        through zero (the fitted horizon crosses ``q``), so its error has a tail
        ``P(|e| > t) ~ c / t``: the mean error is, strictly, infinite. For well-determined
        fits ``c`` is negligible; for exactly or nearly determined fits (4 pairs in 2-D,
        poorly spread landmarks) the tail is reached in practice: most noise realisations
        give about the value returned here, a few give errors many times larger, and no mean
        error exists to predict (``benchmarks/bench_error_prediction.py`` shows it). The same
        may happen for exactly determined polynomial fits (their coefficients divide by a
        determinant of the noisy source positions). The summary warns when a projective or
        polynomial fit is exactly determined.
        """
        cov = self.covariance(points)
        if include_target_fle:
            cov = cov + self._target_covariance(points, target_sigma)
        return np.sqrt(np.trace(cov, axis1=1, axis2=2))

    def mapping_error(self, points: Any) -> np.ndarray:
        """Predicted error of the mapping alone at source points (µm): what targeting needs."""
        return self.predicted_error(points)

    def target_error(self, points: Any, target_sigma: float | None = None) -> np.ndarray:
        """Predicted error of a newly measured point: mapping plus its own localisation error."""
        return self.predicted_error(points, include_target_fle=True, target_sigma=target_sigma)

    def _target_sigma(self, target_sigma):
        if target_sigma is not None:
            return float(target_sigma)
        sig = self.landmarks.sigmas()
        if sig is not None and np.any(sig[0] > 0):
            return float(np.median(sig[0]))
        return self.fle / np.sqrt(self.transform.ndim) / max(_linear_scale(self.transform, self._src), 1e-12)

    def _target_covariance(self, points, target_sigma) -> np.ndarray:
        """``(N, D, D)``: the target's own isotropic localisation error mapped to the target frame."""
        jac = _spatial_jacobian(self.transform, _tf.as_points(points, self.transform.ndim))
        return self._target_sigma(target_sigma) ** 2 * np.einsum("nkj,nlj->nkl", jac, jac)

    def map_points(self, points: Any, include_target_fle: bool = False,
                   target_sigma: float | None = None) -> MappedPoints:
        """Map source-frame points into the target frame, with their predicted errors.

        Parameters
        ----------
        points : array_like, shape (N, D)
            Source-frame points, µm, ``(x, y[, z])``.
        include_target_fle, target_sigma
            As for :meth:`predicted_error`.

        Returns
        -------
        MappedPoints
            A ``(N, D)`` array (µm, target frame) with ``.error``, ``.covariance``,
            ``.outside_hull`` and ``.ellipses()``.
        """
        q = _tf.as_points(points, self.transform.ndim)
        cov = self.covariance(q)
        if include_target_fle:
            cov = cov + self._target_covariance(q, target_sigma)
        err = np.sqrt(np.trace(cov, axis1=1, axis2=2))
        mapped = self.transform(q)
        if self.transform.ndim_out != self.transform.ndim:  # projection: judge in the image plane
            inside = _convex_hull_test(mapped, self._dst)
        else:
            inside = _convex_hull_test(q, self._src)
        return MappedPoints(mapped, err, cov, ~inside, dof=self.noise_dof)

    @property
    def noise_dof(self) -> float:
        """Degrees of freedom of the localisation-error estimate (``inf`` when known)."""
        n, k = self._dst.shape
        if self.fle_source == "residuals":
            return float(k * n - self.n_params)
        if self.fle_source == "affine residuals":
            return float(k * n - _tf.Affine.n_params(k))
        return float("inf")

    def depth(self, points: Any) -> np.ndarray:
        """Depth below the landmark (bead) layer along the viewing direction, µm (projections).

        For a 3-D-to-2-D registration: each source point's position along the projection
        direction minus the mean position of the landmarks' source points, in the target
        scale. Positive values lie further along the viewing direction than the beads (for
        beads on the sample surface: below the surface).
        """
        if not hasattr(self.transform, "depth"):
            raise RegistrationError(f"depth() needs a 3-D-to-2-D registration; this one is {self.model}")
        return self.transform.depth(points) - float(np.mean(self.transform.depth(self._src)))

    @property
    def ambiguous(self) -> bool:
        """For projections: the second-best solution fits as well as the best (within noise)."""
        alts = getattr(self, "alternatives", [])
        if len(alts) < 2 or not np.isfinite(self.fle):
            return False
        sigma2 = self.fle**2 / self._dst.shape[1]
        return (alts[1][1] - alts[0][1]) < 9.0 * sigma2

    def error_map(self, like: Any, step: int | None = None, include_target_fle: bool = False,
                  frame: str | None = None):
        """Predicted TRE on the grid of an image, as a DataArray.

        Parameters
        ----------
        like : xarray.DataArray
            Image whose ``(y, x)`` grid (µm) is used; a coarser grid is taken every ``step``
            pixels (default: about 100 points per side). When the image is in the target
            frame (its ``frame`` attr equals the landmarks' target frame, e.g. the EM image),
            each grid point is mapped back to the source frame first, so the map shows the
            error of the LM position drawn at that EM pixel; otherwise the grid is taken as
            source-frame positions.
        step : int, optional
        include_target_fle : bool
            As for :meth:`predicted_error`.
        frame : {"source", "target"}, optional
            Which frame ``like``'s coords are in; default: ``"target"`` when its ``frame`` attr
            equals the landmarks' target frame, else ``"source"``.

        Returns
        -------
        xarray.DataArray
            dims ``(y, x)``, µm, on the (sub-sampled) grid of ``like``; attrs say which error.
        """
        from .image import check_image

        like = check_image(like, "like")
        if like.clem.ndim != 2:
            raise RegistrationError("error_map() draws on a 2-D grid; select a z plane of the image first")
        step = step or max(1, int(np.ceil(max(like.sizes["y"], like.sizes["x"]) / 100)))
        grid = like.isel(y=slice(None, None, step), x=slice(None, None, step))
        yy, xx = np.meshgrid(grid.y.values, grid.x.values, indexing="ij")
        pts = np.c_[xx.ravel(), yy.ravel()]
        if frame is None:
            on_target = like.attrs.get("frame") is not None and like.attrs.get("frame") == self.landmarks.target_frame
            frame = "target" if on_target else "source"
        if frame not in ("source", "target"):
            raise RegistrationError(f"frame must be 'source' or 'target', got {frame!r}")
        if frame == "target":
            pts = self.transform.inverse(pts)
        err = self.predicted_error(pts, include_target_fle=include_target_fle)
        import xarray as xr

        return xr.DataArray(err.reshape(xx.shape), dims=("y", "x"),
                            coords={"y": grid.y, "x": grid.x}, name="predicted_error",
                            attrs={"units": "µm", "frame": like.attrs.get("frame"),
                                   "what": "target error" if include_target_fle else "mapping error"})

    # -- diagnostics ----------------------------------------------------------------------
    def studentised(self) -> np.ndarray:
        """Per-pair left-out error divided by its expected size under the noise model.

        ``t_i = loo_i / sqrt(FLE_i² + TRE_i²)``, with ``TRE_i`` the predicted mapping error
        at the pair's source point. About 1 for a well-behaved pair (RMS over pairs).
        Uses the left-out error, not the in-fit residual, which flatters.
        """
        from scipy.stats import chi2

        n, k = self._dst.shape
        if n == 0:
            return np.zeros(0)
        var = self._var
        if self.fle_source == "residuals" and k * n > self.n_params:
            # an outlier inflates the residual-based estimate and hides itself: use a robust one
            robust = np.median(self.residuals**2) / chi2.ppf(0.5, k) * k * n / (k * n - self.n_params)
            var = np.full(n, min(robust, var[0]))
        expected = k * var + self.predicted_error(self._src) ** 2 * var / self._var
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.loo_errors / np.sqrt(expected)

    @property
    def outlier_flags(self) -> np.ndarray:
        """True for active pairs whose left-out error exceeds the 99.9 % bound of the noise model."""
        from scipy.stats import chi2

        k = self._dst.shape[1]
        t = self.studentised()
        with np.errstate(invalid="ignore"):
            return np.nan_to_num(t) ** 2 * k > chi2.ppf(OUTLIER_P, k)

    @property
    def warnings(self) -> list[str]:
        """Plain-language warnings about this registration (also shown in the summary)."""
        out = []
        src, dst = self._src, self._dst
        n, k = src.shape
        aff = _tf.Affine.from_estimate(src, dst) if n >= k + 1 and dst.shape[1] == k else None
        if aff and np.linalg.det(aff.linear) < 0:
            if isinstance(self.transform, _tf.Similarity) and np.linalg.det(self.transform.linear) > 0:
                out.append("The landmarks are mirrored (the best affine fit flips one axis), and a "
                           f"{self.model} model cannot represent a mirror: refit with "
                           "allow_reflection=True, use an affine model, or flip one image "
                           "(e.g. lm.isel(x=slice(None, None, -1))).")
            else:
                out.append("The data are mirrored: one image is flipped relative to the other "
                           "(determinant < 0). The fit handles it; check it is expected.")
        if n > k and not self.ambiguous:
            centred = src - src.mean(axis=0)
            sv = np.linalg.svd(centred, compute_uv=False)
            cond = sv[0] / sv[-1] if sv[-1] > 0 else np.inf
            if cond > MAX_CONDITION:
                shape = "on a line" if k == 2 else "in a plane or on a line"
                out.append(f"The landmarks lie nearly {shape} (condition number {cond:.0f} > "
                           f"{MAX_CONDITION:.0f}): the fit is poorly determined across that "
                           "direction. Add landmarks spread over the field.")
        lin = self.transform.linear if isinstance(self.transform, _tf.LinearTransform) and not isinstance(
            self.transform, _tf.Projective) else (aff.linear if aff else None)
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
        if self.ambiguous:
            (_, c0), (alt, c1) = self.alternatives[:2]
            tilt = np.degrees(np.arccos(np.clip((np.trace(alt.rotation.T @ self.transform.rotation) - 1) / 2, -1, 1)))
            out.append(
                "The 3-D beads lie nearly in one plane, so the fit cannot tell the rotation from its "
                f"mirror through the image plane: two solutions {tilt:.1f}° apart fit equally well "
                f"(costs {c0:.3g} and {c1:.3g} µm²; see .alternatives). Add beads at other depths, "
                "or choose the solution that matches the known sample tilt."
            )
        if self.outliers:
            out.append(f"RANSAC rejected {len(self.outliers)} pair(s) as outliers: {', '.join(self.outliers)}.")
        flagged = [nm for nm, f in zip(self.names, self.outlier_flags) if f]
        if flagged:
            out.append(f"Pair(s) {', '.join(flagged)} are far off when left out (beyond the 99.9 % "
                       "bound of the noise model): check them or use robust=True.")
        lo = self._cls.required_points(k, **self.options) if self._cls in (_tf.Projective, _tf.Polynomial) else 0
        if n == lo:
            out.append(f"The {self.model} fit is exactly determined: {n} pairs for the {lo} it needs, "
                       "so it passes through every landmark and nothing checks them (no residuals, "
                       "no left-out errors). Its error can be heavy-tailed: usually near the predicted "
                       "value, but occasionally many times larger, most of all when the landmarks "
                       "are poorly spread. Add landmarks spread over the field, well beyond the "
                       "minimum.")
        if self.fle_source == "affine residuals":
            out.append("The model interpolates the landmarks exactly, so the localisation error "
                       "was estimated from an affine fit's residuals; give per-point uncertainties "
                       "(or fle=) for calibrated error predictions.")
        return out

    # -- display --------------------------------------------------------------------------
    def _rows(self):
        t = self.studentised()
        flags = self.outlier_flags
        return list(zip(self.names, self.residuals, self.loo_errors, t, flags))

    def summary(self) -> str:
        """Plain-text summary: model, errors in nm, warnings, and a per-pair table."""
        n = len(self._src)
        lines = [
            f"{self.model} registration {self.landmarks.source_frame} -> {self.landmarks.target_frame}, "
            f"{n} active pairs, {self.n_params} parameters",
            f"residuals (FRE): RMS {self.rms * 1e3:.1f} nm, mean {np.mean(self.residuals) * 1e3:.1f} nm, "
            f"max {np.max(self.residuals, initial=0) * 1e3:.1f} nm",
        ]
        if np.isfinite(self.loo_errors).any():
            lines.append(f"leave-one-out error: RMS {np.sqrt(np.nanmean(self.loo_errors**2)) * 1e3:.1f} nm, "
                         f"max {np.nanmax(self.loo_errors) * 1e3:.1f} nm")
        if np.isfinite(self.fle):
            tre = self.predicted_error(self._src)
            lines.append(f"localisation error (FLE, from {self.fle_source}): {self.fle * 1e3:.1f} nm; "
                         f"predicted mapping error at the landmarks: {np.mean(tre) * 1e3:.1f} nm mean "
                         f"({self.method})")
        for w in self.warnings:
            lines.append(f"WARNING: {w}")
        lines.append(f"{'pair':>8} {'residual nm':>12} {'left-out nm':>12} {'t':>6}")
        for nm, r, l, t, f in self._rows():
            lines.append(f"{nm:>8} {r * 1e3:12.1f} {l * 1e3:12.1f} {t:6.2f}{'  outlier?' if f else ''}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        head, *rest = self.summary().split("\n")
        info = [ln for ln in rest if not ln.startswith("WARNING") and not ln.lstrip().startswith("pair")
                and not any(ln.strip().startswith(nm + " ") for nm in self.names)]
        warn = "".join(f"<li style='color:#b00'>{html.escape(w)}</li>" for w in self.warnings)
        red = ' style="color:#b00"'
        rows = "".join(
            f"<tr{red if f else ''}><td>{html.escape(nm)}</td><td>{r * 1e3:.1f}</td>"
            f"<td>{l * 1e3:.1f}</td><td>{t:.2f}</td></tr>"
            for nm, r, l, t, f in self._rows()
        )
        return (
            f"<div><b>{html.escape(head)}</b><br>{'<br>'.join(html.escape(i) for i in info)}"
            f"{'<ul>' + warn + '</ul>' if warn else ''}"
            "<table><tr><th>pair</th><th>residual (nm)</th><th>left-out error (nm)</th>"
            f"<th>studentised</th></tr>{rows}</table></div>"
        )

    # -- persistence ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: model, transform, landmarks, diagnostics, software version."""
        from . import __version__

        return {
            "format": _FORMAT,
            "version": _VERSION,
            "software": f"clemlab {__version__}",
            "model": self.model,
            "options": self.options,
            "transform": self.transform.to_dict(),
            "landmarks": self.landmarks.to_json_dict(),
            "fle_given": self._given_fle,
            "n_bootstrap": self.n_bootstrap,
            "seed": self.seed,
            "outliers": self.outliers,
            "diagnostics": {
                "rms": self.rms,
                "fle": self.fle if np.isfinite(self.fle) else None,
                "fle_source": self.fle_source,
                "residuals": self.residuals.tolist(),
                "loo_errors": [None if not np.isfinite(v) else float(v) for v in self.loo_errors],
                "warnings": self.warnings,
            },
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any], where: str = "registration") -> Registration:
        """Rebuild from :meth:`to_dict` output (exactly: same transform, landmarks, errors)."""
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise RegistrationError(f"{where} is not a clemlab registration (no \"format\": \"{_FORMAT}\")")
        if int(doc.get("version", 0)) > _VERSION:
            raise RegistrationError(f"{where} was written by a newer clemlab (schema {doc['version']}); upgrade clemlab")
        diag = doc.get("diagnostics", {})
        loo = [np.nan if v is None else v for v in diag.get("loo_errors", [])] or None
        return cls(_tf.transform_from_dict(doc["transform"]),
                   Landmarks.from_json_dict(doc["landmarks"], where=where),
                   doc["model"], loo_errors=loo, options=doc.get("options"),
                   fle=doc.get("fle_given"), n_bootstrap=doc.get("n_bootstrap", 200),
                   seed=doc.get("seed", 0), outliers=doc.get("outliers"))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the registration as JSON, atomically."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Registration:
        """Read a registration written by :meth:`save`."""
        p = Path(path)
        if not p.is_file():
            raise FileFormatError(f"registration file {p} does not exist")
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RegistrationError(f"registration file {p} is not valid JSON ({exc})") from None
        return cls.from_dict(doc, where=f"registration file {p}")


def _robust_covariance(dev: np.ndarray) -> np.ndarray:
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


def _spatial_jacobian(tf: _tf.Transform, q: np.ndarray) -> np.ndarray:
    """Spatial Jacobian ``(N, D_out, D)``: the linear part, an analytic one where the transform
    has it, else central differences."""
    if isinstance(tf, _tf.LinearTransform) and not isinstance(tf, _tf.Projective):
        return np.broadcast_to(tf.linear, (len(q),) + tf.linear.shape)
    if hasattr(tf, "jacobian"):
        return tf.jacobian(q)
    d = q.shape[1]
    h = 1e-6 * max(1.0, float(np.abs(q).max()))
    return np.stack([(tf(q + h * e) - tf(q - h * e)) / (2 * h) for e in np.eye(d)], axis=2)


# ---------------------------------------------------------------------------------------
# model choice
# ---------------------------------------------------------------------------------------
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
        cls, implied = _model_class(name)
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

    cls, implied = _model_class(model)
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


"""Fitting a model to landmark pairs: :func:`register`."""

from __future__ import annotations

import numpy as np

from .. import transforms as _tf
from ..errors import RegistrationError
from ..landmarks import Landmarks
from .models import model_class, model_name
from .noise import noise_variance
from .result import Registration
from .robust import ransac_inliers

__all__ = ["register"]


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
        ``"polynomial2"``/``"polynomial3"`` (or ``"polynomial"`` with ``order=``), ``"tps"``;
        ``"rigid-projection"`` for 3-D sources with 2-D targets.
    robust : bool
        Run RANSAC over minimal sets first; pairs it rejects are deactivated in the
        registration's copy of the landmarks and listed in ``outliers``. A consensus is
        kept only if random pairs could not have produced it (a-contrario test, see
        :mod:`clemlab.registration.robust`); otherwise ``RegistrationError`` says that too
        many pairs are outliers. The inlier gate is the 99.9 % bound of the FLE (from the
        uncertainties or ``fle``, else estimated from the consensus' residuals).
    fle : float, optional
        Known fiducial localisation error (RMS over all axes, µm, in the target frame):
        overrides the estimate from residuals/uncertainties for error prediction.
    n_bootstrap : int
        Resamples for the error prediction of projective, polynomial and TPS models.
    seed : int
        Seed of RANSAC and of the bootstrap (results are reproducible).
    **options
        Model options: ``allow_reflection=True`` (rigid, similarity), ``order=`` (polynomial),
        ``smoothing=`` (tps), ``axial_scale=`` (rigid-projection).

    Returns
    -------
    Registration

    Raises
    ------
    RegistrationError
        When the landmarks do not determine the model (too few, degenerate, duplicated),
        their dimensionality does not suit it, or (``robust=True``) no consensus stands out
        from chance; the message says why and what to do.

    Notes
    -----
    With per-pair uncertainties that differ between pairs the fit is weighted by the inverse
    noise variance (see :mod:`clemlab.registration.noise`). The leave-one-out error of a pair
    is the distance at that pair of a refit without it. The summary warns, in plain words,
    about: mirrored data (the best affine fit has a negative determinant), a degenerate layout
    (condition number of the centred source landmarks above ``MAX_CONDITION`` = 100), a scale
    outside ``SCALE_RANGE`` (0.5-2: both frames are in µm, so the scale should be close to 1),
    a stretch (ratio of the linear part's singular values) above ``MAX_STRETCH`` = 1.25, and
    outliers (left-out error beyond the 99.9 % bound of the noise model, see
    ``Registration.outlier_flags``), and a model too simple for the landmarks (lack-of-fit
    test at ``LACK_OF_FIT_P`` = 0.001, see ``Registration.lack_of_fit``; the predicted errors
    are then inflated by the residual ratio when the noise was stated). An exact thin-plate
    spline is tested by its left-out errors instead: where they exceed what the noise
    explains, its predicted errors add the deformation between landmarks that they show,
    and it warns when they are significantly and at least ``SPLINE_MISFIT_RATIO`` = 2 times
    that.
    """
    if not isinstance(landmarks, Landmarks):
        raise RegistrationError(
            f"register() takes a Landmarks table, got {type(landmarks).__name__}; "
            "build one with Landmarks.from_points(src, dst)"
        )
    cls, implied = model_class(model)
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
                f"(an EM/FIB image); these landmarks are {lms.ndim}-D"
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
        var0 = noise_variance(lms, None, src, dst, fle)
        inliers = ransac_inliers(cls, src, dst, var0, options, np.random.default_rng(seed))
        outliers = names[~inliers].tolist()
        for name in outliers:
            lms.set_active(name, False)
        src, dst = lms.src(), lms.dst()
    first = cls.from_estimate(src, dst, **options)
    if not first:
        raise RegistrationError(f"cannot fit a {model_name(cls, options)} model: {first.reason}")
    var = noise_variance(lms, first, src, dst, fle)
    weights = None if var is None or np.allclose(var, var[0]) else 1.0 / var
    tf = cls.from_estimate(src, dst, weights=weights, **options) if weights is not None else first
    if not tf:
        raise RegistrationError(f"cannot fit a {model_name(cls, options)} model: {tf.reason}")
    tf = tf.with_frames(lms.source_frame, lms.target_frame)
    loo = _leave_one_out(cls, tf, src, dst, weights, options, lms.ndim)
    alternatives = None
    if projection:
        sols = cls.solutions(src, dst, weights, axial_scale=options.get("axial_scale", False))
        alternatives = [(t.with_frames(lms.source_frame, lms.target_frame), c) for t, c in sols]
    return Registration(tf, lms, model_name(cls, options), loo_errors=loo, options=options,
                        fle=fle, n_bootstrap=n_bootstrap, seed=seed, outliers=outliers,
                        alternatives=alternatives)


def _leave_one_out(cls: type[_tf.Transform], tf: _tf.Transform, src: np.ndarray, dst: np.ndarray,
                   weights: np.ndarray | None, options: dict, ndim: int) -> np.ndarray:
    """Left-out error ``(N,)`` per pair, µm: distance at the pair of a refit without it.

    NaN where the refit fails, and everywhere when the model needs every pair. Refits start
    from ``tf``'s parameters where the model fits iteratively (``warm_start``). An exact
    thin-plate spline is linear in its targets, so its N refits are read from one inverse of
    its system instead (:meth:`~clemlab.transforms.ThinPlateSpline.leave_one_out`; equal to
    the refits to rounding, and O(N³) once instead of N times).
    """
    loo = np.full(len(src), np.nan)
    if len(src) <= cls.required_points(ndim, **options):
        return loo
    if isinstance(tf, _tf.ThinPlateSpline) and not options.get("smoothing", 0):
        left_out, _ = tf.leave_one_out()
        return np.linalg.norm(left_out @ dst, axis=1)
    keep = np.ones(len(src), bool)
    for i in range(len(src)):
        keep[i] = False
        warm = tf.warm_start() if hasattr(tf, "warm_start") else {}
        part = cls.from_estimate(src[keep], dst[keep], weights=None if weights is None else weights[keep],
                                 **{**options, **warm})
        keep[i] = True
        if part:
            loo[i] = float(np.linalg.norm(part(src[i]) - dst[i]))
    return loo


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

"""The result of a fit: :class:`Registration`, a transform plus how far to trust it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import transforms as _tf
from ..errors import RegistrationError
from ..image import frame_of, same_frame
from ..landmarks import Landmarks
from . import error_prediction, report, serialisation
from .lack_of_fit import LackOfFit, lack_of_fit
from .models import _n_params, model_class
from .noise import OUTLIER_P, estimate_noise, linear_scale, noise_dof

__all__ = ["Registration"]


class Registration:
    """The result of :func:`register`: a transform plus how far to trust it.

    Parameters
    ----------
    transform : Transform
        The fitted transform.
    landmarks : Landmarks
        The pairs it was fitted to; the active ones count.
    model : str
        Model name (as :func:`register` takes it).
    loo_errors : array_like, shape (N,), optional
        Leave-one-out error per active pair, µm (default: unknown, NaN).
    options : dict, optional
        Model options the fit used.
    fle : float, optional
        Localisation error given for the fit (RMS over all axes, µm).
    n_bootstrap, seed : int
        Refits and seed of the bootstrap error prediction.
    outliers : list of str, optional
        Pairs set aside by RANSAC.
    alternatives : list of (Transform, float), optional
        For 3-D-to-2-D projections: the candidate solutions with their costs (µm²), best first.

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
    alternatives : list of (Transform, float)
        Candidate solutions of a 3-D-to-2-D projection and their costs (µm²), best first;
        empty for other models.
    """

    def __init__(self, transform: _tf.Transform, landmarks: Landmarks, model: str,
                 loo_errors: Any = None, options: dict | None = None, fle: float | None = None,
                 n_bootstrap: int = 200, seed: int = 0, outliers: list[str] | None = None,
                 alternatives: list[tuple[_tf.Transform, float]] | None = None):
        self.transform = transform
        self.landmarks = landmarks
        self.model = model
        self.options = dict(options or {})
        self.n_bootstrap = int(n_bootstrap)
        self.seed = int(seed)
        self.outliers = list(outliers or [])
        self.alternatives = list(alternatives or [])
        self._given_fle = fle
        self._src, self._dst = landmarks.src(), landmarks.dst()
        src, dst = self._src, self._dst
        n, k = dst.shape  # k: dimensionality of the residuals (target side)
        self.residual_vectors = transform(src) - dst if n else np.zeros((0, k))
        self.residuals = np.linalg.norm(self.residual_vectors, axis=1)
        self.rms = float(np.sqrt(np.mean(self.residuals**2))) if n else float("nan")
        self.loo_errors = (np.full(n, np.nan) if loo_errors is None
                           else np.asarray(loo_errors, dtype=np.float64))
        cls, _ = model_class(model)
        self._cls = cls
        self.n_params = _n_params(cls, k, n, self.options)
        self._var, self.fle_source = estimate_noise(landmarks, transform, self.residuals, self.n_params, fle)
        self.fle = float(np.sqrt(k * np.mean(self._var))) if len(self._var) else float("nan")
        # computed on first use and kept: one (P, P) matrix, at most n_bootstrap refits
        self._cov_params = None
        self._boot = None
        self._lack_of_fit: LackOfFit | None | bool = False  # False: not yet tested

    # -- noise model ----------------------------------------------------------------------
    @property
    def given_fle(self) -> float | None:
        """The localisation error given to :func:`register` (µm), or None."""
        return self._given_fle

    @property
    def fre_expected(self) -> float:
        """Expected FRE from the FLE: ``sqrt((1 - p / (K N)) FLE²)``, µm."""
        n, k = self._dst.shape
        return float(np.sqrt(max(0.0, 1 - self.n_params / (k * n)) * self.fle**2))

    @property
    def lack_of_fit(self) -> LackOfFit | None:
        """Lack-of-fit test of the model (:class:`~clemlab.registration.lack_of_fit.LackOfFit`),
        or None where none applies. When its chi-square test rejects the model (residuals
        larger than the stated localisation error explains), the predicted errors are
        inflated by its ``ratio`` and :attr:`warnings` say which model to try. An exact
        thin-plate spline is tested by its left-out errors; where they exceed what the noise
        explains, its predicted errors add the deformation it does not see between the
        landmarks (``field_variance``)."""
        if self._lack_of_fit is False:
            self._lack_of_fit = lack_of_fit(self)
        return self._lack_of_fit

    @property
    def error_inflation(self) -> float:
        """Factor by which the predicted errors exceed what the stated noise alone gives
        (:attr:`LackOfFit.inflation`: 1 unless the lack-of-fit test rejects the model)."""
        lof = self.lack_of_fit
        return 1.0 if lof is None else lof.inflation

    @property
    def noise_dof(self) -> float:
        """Degrees of freedom of the localisation-error estimate (``inf`` when known)."""
        n, k = self._dst.shape
        return noise_dof(self.fle_source, n, k, self.n_params)

    @property
    def names(self) -> list[str]:
        """Names of the active pairs, in the order of ``residuals``."""
        df = self.landmarks.to_dataframe()
        return df["name"][df["active"]].tolist()

    # -- error prediction -----------------------------------------------------------------
    @property
    def method(self) -> str:
        """How the TRE is predicted: ``"delta"`` (linear models) or ``"bootstrap"``."""
        return "delta" if error_prediction.delta_applies(self.transform) else "bootstrap"

    def _param_covariance(self) -> np.ndarray:
        if self._cov_params is None:
            self._cov_params = error_prediction.parameter_covariance(self.transform, self._src, self._var)
        return self._cov_params

    def _bootstrap(self) -> list:
        if self._boot is None:
            self._boot = error_prediction.bootstrap_refits(self._cls, self.transform, self.options, self._src, self._var,
                                              self.fle_source, self.landmarks.sigmas(), self.n_bootstrap,
                                              self.seed)
        return self._boot

    def covariance(self, points: Any) -> np.ndarray:
        """Covariance of the mapped position of exactly known source points (µm²).

        The landmark noise carried to the points (delta method or bootstrap, see
        :meth:`predicted_error`), times :attr:`error_inflation` squared; for an exact
        thin-plate spline, plus the deformation between landmarks that its left-out errors
        show and it does not follow (``lack_of_fit.field_variance * transform.power(points)``
        per axis: zero at the landmarks, largest in the gaps between them).

        Parameters
        ----------
        points : array_like, shape (N, D)
            Source-frame points, µm, ``(x, y[, z])``.

        Returns
        -------
        numpy.ndarray, shape (N, D, D)
        """
        cov = self._noise_covariance(points) * self.error_inflation**2
        lof = self.lack_of_fit
        if lof is not None and lof.field_variance > 0:  # the exact spline's error between landmarks
            q = _tf.as_points(points, self.transform.ndim)
            cov = cov + (lof.field_variance * self.transform.power(q))[:, None, None] * np.eye(q.shape[1])
        return cov

    def _noise_covariance(self, points: Any) -> np.ndarray:
        """Mapping covariance ``(N, D, D)`` (µm²) from the stated noise alone (no inflation)."""
        q = _tf.as_points(points, self.transform.ndim)
        if not np.all(np.isfinite(self._var)):
            return np.full((len(q), q.shape[1], q.shape[1]), np.nan)
        if error_prediction.delta_applies(self.transform):
            return error_prediction.delta_covariance(self.transform, q, self._param_covariance())
        return error_prediction.bootstrap_covariance(self.transform, q, self._bootstrap())

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
          well-determined fits, and insensitive to rare wild refits. An exact thin-plate
          spline adds the error of interpolating between landmarks, estimated from its
          left-out errors (:meth:`covariance`).

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

    def _target_sigma(self, target_sigma: float | None) -> float:
        if target_sigma is not None:
            return float(target_sigma)
        sig = self.landmarks.sigmas()
        if sig is not None and np.any(sig[0] > 0):
            return float(np.median(sig[0]))
        return self.fle / np.sqrt(self.transform.ndim) / max(linear_scale(self.transform, self._src), 1e-12)

    def _target_covariance(self, points: Any, target_sigma: float | None) -> np.ndarray:
        q = _tf.as_points(points, self.transform.ndim)
        return error_prediction.target_covariance(self.transform, q, self._target_sigma(target_sigma))

    def map_points(self, points: Any, include_target_fle: bool = False,
                   target_sigma: float | None = None, *, check_frames: bool = True) -> error_prediction.MappedPoints:
        """Map source-frame points into the target frame, with their predicted errors.

        Parameters
        ----------
        points : array_like, shape (N, D)
            Source-frame points, µm, ``(x, y[, z])``. Points that carry a frame (a table's
            ``attrs["frame"]``, as :func:`clemlab.targets_from_points` makes, or the
            ``.frame`` of mapped points) must be in the source frame.
        include_target_fle, target_sigma
            As for :meth:`predicted_error`.
        check_frames : bool
            Refuse points that carry a frame other than the source frame (default); plain
            arrays carry none and are never refused. ``False`` skips the check.

        Returns
        -------
        MappedPoints
            A ``(N, D)`` array (µm, target frame) with ``.error``, ``.covariance``,
            ``.outside_hull``, ``.ellipses()`` and ``.frame`` (the target frame's name).

        Raises
        ------
        RegistrationError
            When ``points`` carry a frame that is not the source frame (both names and the
            fix in the message).
        """
        if check_frames:
            self._check_points_frame(points)
        q = _tf.as_points(points, self.transform.ndim)
        cov = self.covariance(q)
        if include_target_fle:
            cov = cov + self._target_covariance(q, target_sigma)
        err = np.sqrt(np.trace(cov, axis1=1, axis2=2))
        mapped = self.transform(q)
        if self.transform.ndim_out != self.transform.ndim:  # projection: judge in the image plane
            inside = error_prediction.inside_convex_hull(mapped, self._dst)
        else:
            inside = error_prediction.inside_convex_hull(q, self._src)
        out = error_prediction.MappedPoints(mapped, err, cov, ~inside, dof=self.noise_dof)
        out.frame = self.landmarks.target_frame  # so mapping them again is caught
        return out

    def _check_points_frame(self, points: Any) -> None:
        """Refuse points whose frame (see :func:`clemlab.image.frame_of`) is not the source frame."""
        have, src, dst = frame_of(points), self.landmarks.source_frame, self.landmarks.target_frame
        if same_frame(have, src):
            return
        if same_frame(have, dst):
            fix = (f"they are already in the target frame; to carry {dst} points back to {src} "
                   "use registration.transform.inverse(points)")
        else:
            fix = f"give points in frame {src!r}, or the registration of frame {have!r}"
        raise RegistrationError(
            f"map_points: the points are in frame {have!r} but the registration maps frame "
            f"{src!r} to {dst!r}; {fix}; pass check_frames=False only if the frame name is wrong"
        )

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
        import xarray as xr

        from ..image import check_image

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
        return xr.DataArray(err.reshape(xx.shape), dims=("y", "x"),
                            coords={"y": grid.y, "x": grid.x}, name="predicted_error",
                            attrs={"units": "µm", "frame": like.attrs.get("frame"),
                                   "what": "target error" if include_target_fle else "mapping error"})

    # -- 3-D-to-2-D projections -----------------------------------------------------------
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
        alts = self.alternatives
        if len(alts) < 2 or not np.isfinite(self.fle):
            return False
        sigma2 = self.fle**2 / self._dst.shape[1]
        return (alts[1][1] - alts[0][1]) < 9.0 * sigma2

    # -- diagnostics ----------------------------------------------------------------------
    def studentised(self) -> np.ndarray:
        """Per-pair left-out error divided by its expected size under the noise model.

        ``t_i = loo_i / sqrt(K v_i / (1 - h_i))``: ``v_i`` the pair's per-axis noise variance,
        ``h_i = TRE_i² / (K v_i)`` its leverage (``TRE_i`` the predicted mapping error at its
        source point, capped at 0.9), so ``K v_i / (1 - h_i)`` is the expected squared error
        of a refit without the pair at the pair (exact for affine fits). When the noise was
        estimated from the residuals, ``v_i`` is re-estimated without pair ``i`` (externally
        studentised: an outlier cannot hide by inflating the estimate it is judged by). About
        1 for a well-behaved pair (RMS over pairs). Uses the left-out error, not the in-fit
        residual, which flatters.
        """
        t, _ = self._studentised_and_bound()
        return t

    def _studentised_and_bound(self) -> tuple[np.ndarray, np.ndarray]:
        """``t`` ``(N,)`` and the ``OUTLIER_P`` bound of ``t²`` for each pair ``(N,)``."""
        from scipy.stats import chi2, f

        n, k = self._dst.shape
        if n == 0:
            return np.zeros(0), np.zeros(0)
        var = self._var
        with np.errstate(invalid="ignore", divide="ignore"):
            tre2 = np.trace(self._noise_covariance(self._src), axis1=1, axis2=2)
            lever = np.minimum(tre2 / (k * var), 0.9)
            loo2 = self.loo_errors**2
            bound = np.full(n, chi2.ppf(OUTLIER_P, k) / k)
            if self.fle_source == "residuals":
                dof_out = k * n - self.n_params - k  # the refit without the pair
                if dof_out > 0:
                    rss_out = np.sum(self.residuals**2) - (1 - lever) * loo2
                    var = np.maximum(rss_out, 0) / dof_out
                    bound = np.full(n, f.ppf(OUTLIER_P, k, dof_out))
                else:
                    bound = np.full(n, np.inf)
            elif np.isfinite(self.noise_dof) and self.noise_dof > 0:
                bound = np.full(n, f.ppf(OUTLIER_P, k, self.noise_dof))
            return np.sqrt(loo2 * (1 - lever) / (k * var)), bound

    @property
    def outlier_flags(self) -> np.ndarray:
        """True for active pairs whose left-out error exceeds the 99.9 % bound of the noise model.

        The bound is the ``OUTLIER_P`` quantile of ``t²`` (:meth:`studentised`): chi-square
        over ``K`` with known noise, ``F(K, dof)`` with noise estimated from ``dof`` residual
        degrees of freedom. On correctly specified noise it flags about 0.1 % of pairs
        (``benchmarks/bench_misspecification.py`` measures the rate).
        """
        t, bound = self._studentised_and_bound()
        with np.errstate(invalid="ignore"):
            return np.where(np.isnan(t), 0.0, t) ** 2 > bound

    @property
    def warnings(self) -> list[str]:
        """Plain-language warnings about this registration (also shown in the summary)."""
        return report.registration_warnings(self)

    # -- display --------------------------------------------------------------------------
    def summary(self) -> str:
        """Plain-text summary: model, errors (each figure with its unit), warnings, a per-pair table."""
        return report.summary_text(self)

    def __repr__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        from .._repr import registration_html

        return registration_html(self)

    # -- persistence ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: model, transform, landmarks, diagnostics, software version."""
        return serialisation.registration_to_dict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any], where: str = "registration") -> Registration:
        """Rebuild from :meth:`to_dict` output (exactly: same transform, landmarks, errors)."""
        return serialisation.registration_from_dict(cls, doc, where)

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the registration as JSON, atomically; an existing JSON ``path`` is replaced
        only with ``overwrite=True``."""
        return serialisation.save_registration(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Registration:
        """Read a registration written by :meth:`save`."""
        return serialisation.load_registration(cls, path)

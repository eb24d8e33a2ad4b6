"""Thin-plate splines: exact (or smoothed) interpolation of landmark pairs in 2-D and 3-D.

The spline is ``f(p) = a + A u + sum_i w_i U(|u - c_i|)`` on normalised coordinates ``u``
with the kernel ``U(r) = r² log r`` (as BigWarp and scikit-image use it). Its sums over the
control points are evaluated in cache-sized blocks (:func:`_kernel_sum`), because a warp
evaluates them at many thousands of points per chunk inside dask's worker threads.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from ..errors import TransformError
from .base import FailedEstimation
from .linear import Affine
from .nonlinear import InverseTransform, NonLinearTransform
from .points import as_points

__all__ = ["ThinPlateSpline"]


def _tps_kernel_sq(d2: np.ndarray, scratch: np.ndarray | None = None) -> np.ndarray:
    """``U = r^2 log r`` from squared distances ``d2 = r^2`` (``U(0) = 0``): the 2-D
    thin-plate kernel, as BigWarp and scikit-image use it, in 2-D and 3-D. In place
    (``scratch``: an optional work array of ``d2``'s shape)."""
    lg = np.maximum(d2, np.finfo(d2.dtype).tiny, out=scratch)  # r = 0: 0 * log(tiny) = 0, no masked log
    np.log(lg, out=lg)
    d2 *= lg
    d2 *= 0.5
    return d2


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.spatial.distance import cdist

    return cdist(a, b, "sqeuclidean")


#: Half the point-control pairs per block of :func:`_kernel_sum` with one weight column; a
#: block holds ``2 * _KERNEL_BLOCK / K`` pairs for ``K`` columns (512 kB of float64 at K = 1):
#: small enough to stay in cache, and for a multi-threaded BLAS to keep the block's product in
#: the calling thread (dask's worker threads already use every core).
_KERNEL_BLOCK = 1 << 15
#: Largest scratch array (elements) kept between calls; only splines of more than
#: ``2 * _KERNEL_BLOCK`` control points need a larger one, which is then not kept.
_SCRATCH_MAX_ELEMENTS = 2 * _KERNEL_BLOCK
#: Per-thread pair of scratch arrays for :func:`_kernel_sum`, each at most
#: ``_SCRATCH_MAX_ELEMENTS`` float64 (so at most 1 MB per thread), freed when the thread ends.
_kernel_scratch = threading.local()


def _scratch_arrays(rows: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Two ``(>= rows, m)`` work arrays: this thread's kept pair when it fits, else a new pair
    (kept for the next call when within ``_SCRATCH_MAX_ELEMENTS``)."""
    scratch = getattr(_kernel_scratch, "arrays", None)
    if scratch is not None and scratch[0].shape[1] == m and len(scratch[0]) >= rows:
        return scratch
    scratch = (np.empty((rows, m)), np.empty((rows, m)))
    if rows * m <= _SCRATCH_MAX_ELEMENTS:
        _kernel_scratch.arrays = scratch
    return scratch


def _kernel_sum(u: np.ndarray, controls: np.ndarray, weights: np.ndarray, grad: bool = False) -> np.ndarray:
    """``sum_i weights[i] U(|u - controls[i]|)`` (P, K) for points ``u`` (P, D), controls
    (M, D) and weights (M, K), with the thin-plate kernel :func:`_tps_kernel_sq`; with
    ``grad``, the sums of ``(dU/dr) / r = log r² + 1`` (0 at a control) instead, from which the
    spline's Jacobian is made.

    Computed in blocks of points, in two per-thread scratch arrays that stay in cache, so the
    memory used does not grow with the number of points and no large temporary is allocated
    (and page-faulted in) per call. The blocks give the same sums as one dense product.
    """
    from scipy.spatial.distance import cdist

    m = len(controls)
    rows = max(1, 2 * _KERNEL_BLOCK // max(1, m * weights.shape[1]))
    scratch = _scratch_arrays(rows, m)
    tiny = np.finfo(np.float64).tiny
    out = np.empty((len(u), weights.shape[1]))
    for i in range(0, len(u), rows):
        n = min(rows, len(u) - i)
        d2, lg = scratch[0][:n], scratch[1][:n]
        cdist(u[i : i + n], controls, "sqeuclidean", out=d2)
        if grad:
            np.maximum(d2, tiny, out=lg)  # no log(0) warning; the controls themselves are zeroed below
            np.log(lg, out=lg)
            lg += 1.0
            np.copyto(lg, 0.0, where=d2 == 0)
            np.matmul(lg, weights, out=out[i : i + n])
        else:
            np.matmul(_tps_kernel_sq(d2, lg), weights, out=out[i : i + n])
    return out


def _system_matrix(u: np.ndarray, w: np.ndarray | None, smoothing: float) -> np.ndarray:
    """The spline's linear system ``(N + D + 1, N + D + 1)`` for normalised sources ``u``
    ``(N, D)``: kernel block (plus the weighted smoothing diagonal), bordered by the affine
    part ``[1, u]`` and its side conditions."""
    n, d = u.shape
    a = np.zeros((n + d + 1, n + d + 1))
    a[:n, :n] = _tps_kernel_sq(_sq_dists(u, u))
    if smoothing > 0:
        # weighted smoothing: less certain points (small weight) may deviate more
        wts = np.ones(n) if w is None else np.asarray(w, dtype=np.float64)
        a[:n, :n] += smoothing * np.diag(wts.max() / wts)
    a[:n, n] = a[n, :n] = 1.0
    a[:n, n + 1:] = u
    a[n + 1:, :n] = u.T
    return a


class ThinPlateSpline(NonLinearTransform):
    """Thin-plate spline through control points: ``f(p) = a + A p + sum_i w_i U(|p - c_i|)``.

    Kernel ``U(r) = r² log r`` (as BigWarp and scikit-image). With ``smoothing = 0`` the spline
    interpolates the landmarks exactly; ``smoothing > 0`` (dimensionless, relative to the
    normalised coordinates) trades exactness for robustness to localisation noise.

    Build with :meth:`from_estimate`. Coordinates are normalised internally (centre and RMS
    spread of the control points, stored with the coefficients); the spline itself does not
    depend on that normalisation. Minimum pairs: 3 (2-D) / 4 (3-D), not collinear/coplanar.
    The inverse is a spline fitted the other way, refined by Newton steps on this one.
    """

    min_points = {2: 3, 3: 4}
    estimation_options = ("smoothing", "bigwarp")

    def __init__(self, controls: Any, weights: Any, affine: Any, centre: Any, scale: float,
                 smoothing: float = 0.0, *, source_frame: str | None = None,
                 target_frame: str | None = None, _targets: Any = None):
        c = np.array(controls, dtype=np.float64)
        if c.ndim != 2 or c.shape[1] not in (2, 3):
            raise TransformError(f"controls must be (N, 2) or (N, 3), got shape {c.shape}")
        d = c.shape[1]
        wts = np.array(weights, dtype=np.float64)
        aff = np.array(affine, dtype=np.float64)
        if wts.shape != (len(c), d) or aff.shape != (d + 1, d):
            raise TransformError("thin-plate spline weights must be (N, D) and affine part (D+1, D)")
        super().__init__(d, source_frame, target_frame)
        for a in (c, wts, aff):
            a.setflags(write=False)
        self._controls, self._weights, self._affine = c, wts, aff
        self._centre = np.array(centre, dtype=np.float64).reshape(d)
        self._scale = float(scale)
        self._smoothing = float(smoothing)
        self._targets = None if _targets is None else np.array(_targets, dtype=np.float64)

    @property
    def controls(self) -> np.ndarray:
        """Control points (the source landmarks), ``(N, D)``, µm."""
        return self._controls

    @property
    def smoothing(self) -> float:
        """Smoothing parameter (0: exact interpolation)."""
        return self._smoothing

    def _u(self, pts):
        return (pts - self._centre) / self._scale

    def _apply(self, pts):
        u = self._u(pts)
        out = _kernel_sum(u, self._u(self._controls), self._weights)
        return out + u @ self._affine[1:] + self._affine[0]

    def _jacobian(self, pts):
        u = self._u(pts)
        cu = self._u(self._controls)
        # d f_k / d u_j = sum_i w_ik g_i (u_j - c_ij) + A_jk, g_i = (dU/dr) / r at |u - c_i|
        n, d = u.shape
        k = self._weights.shape[1]
        wc = (self._weights[:, :, None] * cu[:, None, :]).reshape(len(cu), -1)  # (M, K*J)
        sums = _kernel_sum(u, cu, np.hstack([self._weights, wc]), grad=True)  # (n, K + K*J)
        jac = sums[:, :k, None] * u[:, None, :] - sums[:, k:].reshape(n, k, d)
        return (jac + self._affine[1:].T[None]) / self._scale

    def _reverse_guess(self):
        if self._targets is None:
            raise TransformError("this thin-plate spline was built without its target points; refit it")
        rev = ThinPlateSpline._estimate(self._targets, self._controls, np.ones(len(self._controls)),
                                        smoothing=self._smoothing)
        return rev if rev else Affine.from_estimate(self._targets, self._controls)

    @classmethod
    def n_params(cls, ndim: int, *, n_points: int = 0, **options) -> int:
        # effective parameters: as many as the landmarks' coordinates, at least those of the
        # affine part; smoothing does not change the count
        cls._check_options(options)
        return ndim * max(n_points, ndim + 1)

    def _params_dict(self):
        return {"controls": self._controls.tolist(), "weights": self._weights.tolist(),
                "affine": self._affine.tolist(), "centre": self._centre.tolist(),
                "scale": self._scale, "smoothing": self._smoothing,
                "targets": None if self._targets is None else self._targets.tolist()}

    @classmethod
    def _from_params(cls, d):
        return cls(d["controls"], d["weights"], d["affine"], d["centre"], d["scale"],
                   d.get("smoothing", 0.0), source_frame=d.get("source_frame"),
                   target_frame=d.get("target_frame"), _targets=d.get("targets"))

    def _system_inverse(self) -> np.ndarray:
        """Inverse of the exact spline's system ``(N + D + 1, N + D + 1)``, on the spline's own
        normalised coordinates (kept on the spline: it is immutable)."""
        if self._smoothing:
            raise TransformError("only the exact spline (smoothing = 0) has a power function and "
                                 "closed-form left-out errors; a smoothed refit renormalises its smoothing")
        if "_inverse_cache" not in self.__dict__:  # set once: transforms are immutable
            self._inverse_cache = np.linalg.inv(_system_matrix(self._u(self._controls), None, 0.0))
        return self._inverse_cache

    def leave_one_out(self) -> tuple[np.ndarray, np.ndarray]:
        """Closed-form left-out errors of the exact spline, and their power.

        The spline through every pair but ``i``, evaluated at control ``i``, misses the target
        ``t_i`` by ``e_i = (L @ t)_i`` up to sign (one row of ``L`` per pair, the same for every
        axis): the spline is linear in its targets and its normalisation does not change it,
        so all left-out errors follow from one inverse of the full system ``A``:
        ``e_i = c_i / (A⁻¹)_ii`` with ``c = A⁻¹ [t; 0]`` (Rippa, Adv. Comput. Math. 11, 1999).
        Under independent target noise of per-axis variance ``v_j``, ``e_i`` has per-axis
        variance ``sum_j L_ij² v_j``; a deformation the splines do not see adds
        ``sigma² / (A⁻¹)_ii`` (:meth:`power` of that spline at control ``i``).

        Returns
        -------
        matrix : numpy.ndarray, shape (N, N)
            ``L`` (dimensionless).
        power : numpy.ndarray, shape (N,)
            ``1 / (A⁻¹)_ii``: the power function of the spline without pair ``i`` at control ``i``.
        """
        n = len(self._controls)
        block = self._system_inverse()[:n, :n]
        diag = np.diag(block).copy()
        return block / diag[:, None], 1.0 / diag

    def power(self, points: Any) -> np.ndarray:
        """The exact spline's power function: how little its controls pin it down at ``points``.

        Read as kriging (the exact thin-plate spline is the kriging interpolator with the
        generalised covariance ``U`` and a linear drift; Matheron 1980, Dubrule 1984): for a
        deformation of per-axis variance scale ``sigma²``, the spline through its values at
        the controls misses it at ``q`` by an error of per-axis variance
        ``sigma² * power(q)``. Zero at the controls, growing between them and fast outside
        their hull; on the spline's normalised coordinates (centre and RMS spread of the
        controls), so ``sigma²`` must be estimated on the same spline (:meth:`leave_one_out`).

        Parameters
        ----------
        points : array_like, shape (M, D)
            Source points, µm, ``(x, y[, z])``.

        Returns
        -------
        numpy.ndarray, shape (M,)
            Dimensionless, >= 0.
        """
        q = self._u(as_points(points, self.ndim))
        a_inv = self._system_inverse()
        cu = self._u(self._controls)
        out = np.empty(len(q))
        for i in range(0, len(q), 4096):  # blocks bound the (block, N + D + 1) temporaries
            u = q[i : i + 4096]
            b = np.c_[_tps_kernel_sq(_sq_dists(u, cu)), np.ones(len(u)), u]
            out[i : i + 4096] = -np.einsum("ij,ij->i", b @ a_inv, b)
        return np.maximum(out, 0.0)  # the kernel is conditionally positive definite: >= 0 up to rounding

    @classmethod
    def _estimate(cls, src, dst, w, smoothing: float = 0.0, bigwarp: bool = False):
        """``bigwarp=True``: parameterise as BigWarp does, with the exact spline built from
        the target (fixed) landmarks to the source (moving) ones; the returned source ->
        target map is its Newton inverse (an :class:`InverseTransform`)."""
        if bigwarp:
            back = cls._estimate(dst, src, w, smoothing=smoothing)
            return InverseTransform(back) if back else back
        n, d = src.shape
        if not np.isfinite(smoothing) or smoothing < 0:
            raise TransformError(f"smoothing must be >= 0, got {smoothing!r}")
        centre = src.mean(axis=0)
        scale = float(np.sqrt(np.mean(np.sum((src - centre) ** 2, axis=1))))
        if not scale > 0:
            return FailedEstimation("all source landmarks are at the same position")
        if len(np.unique(src, axis=0)) < n:
            return FailedEstimation(
                "two or more source landmarks are at the same position; an interpolating "
                "thin-plate spline cannot pass through different targets there: remove duplicates"
            )
        u = (src - centre) / scale
        sv = np.linalg.svd(u, compute_uv=False)  # u is centred
        if sv[-1] <= 1e-10 * sv[0]:
            shape = "on one line (collinear)" if d == 2 else "in one plane (coplanar)"
            return FailedEstimation(f"the source landmarks lie {shape}; a thin-plate spline needs its affine part determined")
        a = _system_matrix(u, w, smoothing)
        rhs = np.zeros((n + d + 1, d))
        rhs[:n] = dst
        try:
            sol = np.linalg.solve(a, rhs)
        except np.linalg.LinAlgError:
            return FailedEstimation("the thin-plate spline system is singular; check for duplicated landmarks")
        if not np.all(np.isfinite(sol)):
            return FailedEstimation("the thin-plate spline system is singular; check for duplicated landmarks")
        return cls(src, sol[:n], sol[n:], centre, scale, smoothing, _targets=dst)

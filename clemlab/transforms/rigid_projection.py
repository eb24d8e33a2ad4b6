"""The 3-D -> 2-D rigid projection: an LM stack's points onto an EM/FIB image.

Rotation, isotropic scale, orthographic projection and 2-D translation (as in 3DCT-style
cryo-FIB targeting), with an optional axial scale for the refractive-index mismatch of LM
depth. Fitted by Levenberg-Marquardt from several starts (an affine-camera solution, its mirror
through the image plane, and random rotations), keeping every distinct optimum.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import TransformError
from .base import FailedEstimation, Transform
from .points import as_points
from .rotations import cross_product_matrices, matrix_to_rotvec, orthogonality_error, rotvec_to_matrix

__all__ = ["RigidProjection"]


class RigidProjection(Transform):
    """3-D -> 2-D: rotation, isotropic scale, orthographic projection, 2-D translation.

    ``y = s * (R @ diag(1, 1, k) @ p)[:2] + t`` maps a 3-D point ``p = (x, y, z)`` of an LM
    stack (µm) to a 2-D point of an EM/FIB image (µm), as in 3DCT-style cryo-FIB targeting.
    ``k`` is an optional axial scale for the refractive-index mismatch of LM depth (1 = none).
    The viewing direction is the rotated frame's +z; :meth:`depth` gives a point's position
    along it (µm in the target scale), which the 2-D image cannot show.

    Parameters
    ----------
    rotation : array_like, shape (3, 3)
        Proper rotation matrix.
    scale : float
        Isotropic scale ``s`` (> 0).
    translation : array_like, shape (2,)
        µm.
    axial_scale : float
        ``k`` (> 0).
    axial_fitted : bool
        Whether ``k`` was estimated (counts as a parameter for error propagation).

    Minimum pairs: 4 (3-D source, 2-D target). With all beads in one plane a rotation and its
    mirror through the image plane project identically; :meth:`solutions` returns both.
    """

    _io_dims = (3, 2)
    label = "rigid-projection (3-D to 2-D)"
    min_points = {2: 4, 3: 4}
    estimation_options = ("axial_scale", "init", "n_starts")

    def __init__(self, rotation: Any = None, scale: float = 1.0, translation: Any = (0.0, 0.0),
                 axial_scale: float = 1.0, axial_fitted: bool = False, *,
                 source_frame: str | None = None, target_frame: str | None = None):
        r = np.eye(3) if rotation is None else np.array(rotation, dtype=np.float64)
        if r.shape != (3, 3) or orthogonality_error(r) > 1e-9 or np.linalg.det(r) < 0:
            raise TransformError(f"rotation must be a proper (3, 3) rotation matrix, got {r.tolist()}")
        s_, k_ = float(scale), float(axial_scale)
        if not (np.isfinite(s_) and s_ > 0 and np.isfinite(k_) and k_ > 0):
            raise TransformError(f"scale and axial_scale must be positive, got {scale!r}, {axial_scale!r}")
        t = np.array(translation, dtype=np.float64).reshape(-1)
        if t.shape != (2,):
            raise TransformError(f"translation must have 2 values (x, y), got {t.size}")
        super().__init__(3, source_frame, target_frame)
        r.setflags(write=False)
        t.setflags(write=False)
        self._r, self._s, self._t, self._k = r, s_, t, k_
        self._k_fitted = bool(axial_fitted)

    @property
    def ndim_out(self) -> int:
        return 2

    @property
    def rotation(self) -> np.ndarray:
        """``(3, 3)`` rotation."""
        return self._r

    @property
    def scale(self) -> float:
        """Isotropic scale."""
        return self._s

    @property
    def translation(self) -> np.ndarray:
        """``(2,)`` translation, µm."""
        return self._t

    @property
    def axial_scale(self) -> float:
        """Axial (z) scale of the source before rotation."""
        return self._k

    def _rotated(self, pts):
        return (pts * [1.0, 1.0, self._k]) @ self._r.T

    def _apply(self, pts):
        return self._s * self._rotated(pts)[:, :2] + self._t

    def depth(self, points: Any) -> np.ndarray:
        """Position along the viewing direction (µm, target scale), shape (N,).

        Defined up to a constant (the projection loses it): compare depths, e.g. a target's
        depth minus the mean depth of the surface beads is its depth below the bead layer.
        """
        return self._s * self._rotated(as_points(points, 3))[:, 2]

    def jacobian(self, points: Any) -> np.ndarray:
        """``(N, 2, 3)`` spatial derivative (constant)."""
        n = len(as_points(points, 3))
        j = self._s * (self._r * [1.0, 1.0, self._k])[:2]
        return np.broadcast_to(j, (n, 2, 3)).copy()

    @property
    def inverse(self):
        raise TransformError(
            "a 3-D -> 2-D projection has no inverse: the depth is lost; use depth() for it"
        )

    @classmethod
    def n_params(cls, ndim: int, *, n_points: int = 0, **options) -> int:
        # rotation (3), scale, 2-D translation, and the axial scale when it is fitted
        # (axial_scale=True, not a given number); the same for any ndim
        cls._check_options(options)
        return 6 + int(options.get("axial_scale", False) is True)

    def param_jacobian(self, points: Any) -> np.ndarray:
        """``(N, 2, P)``: rotation vector (left perturbation), scale, translation[, axial scale]."""
        q = as_points(points, 3)
        u = self._rotated(q)
        n = len(q)
        cols = [-self._s * cross_product_matrices(u)[:, :2, :], u[:, :2, None], np.broadcast_to(np.eye(2), (n, 2, 2))]
        if self._k_fitted:
            cols.append((self._s * np.outer(q[:, 2], self._r[:2, 2]))[:, :, None])
        return np.concatenate(cols, axis=2)

    def _params_dict(self):
        return {"rotation": self._r.tolist(), "scale": self._s, "translation": self._t.tolist(),
                "axial_scale": self._k, "axial_fitted": self._k_fitted}

    @classmethod
    def _from_params(cls, d):
        return cls(d["rotation"], d["scale"], d["translation"], d.get("axial_scale", 1.0),
                   d.get("axial_fitted", False), source_frame=d.get("source_frame"),
                   target_frame=d.get("target_frame"))

    def warm_start(self) -> dict:
        """Estimation options that start a refit from this solution (used for left-out refits)."""
        return {"init": self}

    @classmethod
    def _estimate(cls, src, dst, w, axial_scale: Any = False, init: RigidProjection | None = None,
                  n_starts: int = 8):
        sols = cls._solve(src, dst, w, axial_scale, init, n_starts=n_starts)
        return sols[0][0] if not isinstance(sols, FailedEstimation) else sols

    @classmethod
    def solutions(cls, src: Any, dst: Any, weights: Any = None, axial_scale: Any = False,
                  n_starts: int = 8) -> list[tuple[RigidProjection, float]] | FailedEstimation:
        """All distinct local optima of the fit, best first, as ``(transform, cost)`` pairs.

        ``cost`` is the weighted sum of squared residuals (µm²). With beads nearly in one
        plane the second solution (the mirror of the rotation through the image plane) costs
        about as much as the first: then the data cannot tell them apart.
        """
        src_a, dst_a = as_points(src, 3, "src"), as_points(dst, 2, "dst")
        w = np.ones(len(src_a)) if weights is None else np.asarray(weights, float)
        return cls._solve(src_a, dst_a, w, axial_scale, None, n_starts=n_starts)

    @classmethod
    def _solve(cls, src, dst, w, axial_scale, init, n_starts: int = 8):
        from scipy.optimize import least_squares

        n = len(src)
        fit_k = axial_scale is True
        k0 = 1.0 if isinstance(axial_scale, bool) else float(axial_scale)
        if not (np.isfinite(k0) and k0 > 0):
            raise TransformError(f"axial_scale must be True, False or a positive number, got {axial_scale!r}")
        cs = src - np.average(src, axis=0, weights=w)
        sv = np.linalg.svd(cs, compute_uv=False)
        if sv[1] <= 1e-9 * max(sv[0], 1e-300):
            return FailedEstimation("the 3-D landmarks lie on one line; a 3-D-to-2-D fit needs them spread out")
        if fit_k and sv[2] <= 1e-2 * sv[0]:  # depth spread under 1 % of the lateral spread
            return FailedEstimation(
                "the 3-D beads lie in one plane, so the axial scale cannot be fitted; give it as a "
                "number (axial_scale=0.9) or use beads at different depths"
            )
        sw = np.sqrt(w / w.max())

        def unpack(p):
            k = np.exp(p[6]) if fit_k else k0
            return rotvec_to_matrix(p[:3]), np.exp(p[3]), p[4:6], k

        def residuals(p):
            r, sc, t, k = unpack(p)
            return ((sc * ((src * [1, 1, k]) @ r.T)[:, :2] + t - dst) * sw[:, None]).ravel()

        starts = []
        if init is not None:
            starts += [init.rotation, np.diag([1.0, 1, -1]) @ init.rotation @ np.diag([1.0, 1, -1])]
            s0 = init.scale
        else:
            # affine camera: dst ~ M src + t, rows of M = s * first two rows of R
            a = np.c_[src * [1, 1, k0], np.ones(n)] * sw[:, None]
            m, *_ = np.linalg.lstsq(a, dst * sw[:, None], rcond=None)
            u, sig, vt = np.linalg.svd(m[:3].T, full_matrices=False)  # (2, 3) = s R[:2]
            rows = u @ vt
            s0 = float(np.mean(sig)) or 1.0
            r0 = np.vstack([rows, np.cross(rows[0], rows[1])])
            starts += [r0, np.diag([1.0, 1, -1]) @ r0 @ np.diag([1.0, 1, -1])]
            rng = np.random.default_rng(12345)
            from scipy.spatial.transform import Rotation

            starts += list(Rotation.random(n_starts, random_state=rng).as_matrix())
            spread = np.sqrt(np.sum(np.var(dst, axis=0)) / max(np.sum(np.var(src[:, :2], axis=0)), 1e-300))
            s0 = s0 if np.isfinite(s0) and s0 > 0 else spread
        found = []
        for r_start in starts:
            r_start = r_start if np.linalg.det(r_start) > 0 else -r_start
            rot = r_start
            proj = s0 * ((src * [1, 1, k0]) @ rot.T)[:, :2]
            t0 = np.average(dst - proj, axis=0, weights=w)
            p0 = np.r_[matrix_to_rotvec(rot), np.log(s0), t0] if not fit_k else np.r_[
                matrix_to_rotvec(rot), np.log(s0), t0, np.log(k0)]
            res = least_squares(residuals, p0, method="lm", xtol=1e-14, ftol=1e-14, gtol=1e-14, max_nfev=2000)
            r, sc, t, k = unpack(res.x)
            if not np.all(np.isfinite(res.x)):
                continue
            found.append((float(np.sum(res.fun**2)), r, sc, t, k))
        if not found:
            return FailedEstimation("the 3-D-to-2-D fit did not converge; check the landmark pairs")
        found.sort(key=lambda f: f[0])
        distinct = []
        for cost, r, sc, t, k in found:
            if all(np.degrees(np.arccos(np.clip((np.trace(r.T @ d.rotation) - 1) / 2, -1, 1))) > 0.5
                   for d, _ in distinct):
                distinct.append((cls(r, sc, t, k, fit_k), cost))
        return distinct


"""Linear (affine-family) models: a homogeneous matrix acting on ``(x, y[, z], 1)``.

From the most to the least constrained: :class:`Identity`, :class:`Translation`,
:class:`Rigid` (rotation), :class:`Similarity` (rotation and isotropic scale) and
:class:`Affine`. Rigid and similarity fits use the weighted closed form of Umeyama (1991);
the affine fit is weighted linear least squares. Compositions of linear models are linear,
of the more general of the two classes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..errors import TransformError
from .base import FailedEstimation, Transform
from .points import as_points
from .rotations import cross_product_matrices, orthogonality_error, rotation_matrix_2d

__all__ = ["LinearTransform", "Identity", "Translation", "Rigid", "Similarity", "Affine"]


class LinearTransform(Transform, register=False):
    """A transform given by a homogeneous ``(D+1, D+1)`` matrix acting on ``(x, y[, z], 1)``.

    Parameters
    ----------
    matrix : array_like, shape (D+1, D+1)
        Homogeneous matrix; the last row must be ``(0, ..., 0, 1)`` for affine models.
    ndim : int, optional
        2 or 3; inferred from ``matrix``.
    source_frame, target_frame : str, optional
        Frame names.
    """

    #: generality rank, for choosing the class of a composition
    _rank: ClassVar[int] = 100

    def __init__(self, matrix: Any = None, *, ndim: int | None = None,
                 source_frame: str | None = None, target_frame: str | None = None):
        if matrix is None:
            d = 2 if ndim is None else ndim
            m = np.eye(d + 1)
        else:
            m = np.array(matrix, dtype=np.float64)
            if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] not in (3, 4):
                raise TransformError(f"matrix must be 3x3 (2-D) or 4x4 (3-D), got shape {m.shape}")
            d = m.shape[0] - 1
            if ndim is not None and ndim != d:
                raise TransformError(f"a {m.shape[0]}x{m.shape[0]} matrix is {d}-D, not ndim={ndim}")
            if not np.all(np.isfinite(m)):
                raise TransformError("matrix contains NaN or infinite values")
        super().__init__(d, source_frame, target_frame)
        self._check_matrix(m)
        m.setflags(write=False)
        self._matrix = m

    def _check_matrix(self, m: np.ndarray) -> None:
        d = m.shape[0] - 1
        if not np.array_equal(m[d, :d], np.zeros(d)) or m[d, d] != 1:
            raise TransformError(
                f"{type(self).__name__} matrix must have last row (0, ..., 0, 1), got {m[d].tolist()}"
            )
        if abs(np.linalg.det(m[:d, :d])) < 1e-300:
            raise TransformError(f"{type(self).__name__} matrix is singular (not invertible)")

    @property
    def matrix(self) -> np.ndarray:
        """The ``(D+1, D+1)`` homogeneous matrix (read-only view)."""
        return self._matrix

    @property
    def linear(self) -> np.ndarray:
        """The ``(D, D)`` linear part."""
        return self._matrix[: self.ndim, : self.ndim]

    @property
    def translation(self) -> np.ndarray:
        """The ``(D,)`` translation, µm."""
        return self._matrix[: self.ndim, self.ndim]

    def _apply(self, pts: np.ndarray) -> np.ndarray:
        return pts @ self.linear.T + self.translation

    @property
    def inverse(self) -> LinearTransform:
        return type(self)._from_matrix(
            np.linalg.inv(self._matrix), self.target_frame, self.source_frame
        )

    @classmethod
    def _normalised(cls, m: np.ndarray) -> np.ndarray:
        """The canonical form of a matrix of this class (affine: exact last row)."""
        return _clean_last_row(m)

    @classmethod
    def _from_matrix(cls, m, source_frame=None, target_frame=None):
        obj = cls.__new__(cls)
        LinearTransform.__init__(obj, cls._normalised(m), source_frame=source_frame,
                                 target_frame=target_frame)
        return obj

    def param_jacobian(self, points: Any) -> np.ndarray:
        """Derivative of the mapped points with respect to the model parameters.

        Used for error propagation (delta method). The parameterisation is local around
        this transform (e.g. a small rotation vector for rotations).

        Parameters
        ----------
        points : array_like, shape (N, D)
            Source-frame points, µm, ``(x, y[, z])``.

        Returns
        -------
        numpy.ndarray, shape (N, D, P)
            ``P = n_params(D)``.
        """
        raise NotImplementedError(f"{type(self).__name__} has no parameter Jacobian")

    def _compose(self, other: Transform) -> Transform:
        if isinstance(other, LinearTransform):
            cls = type(self) if self._rank >= other._rank else type(other)
            return cls._from_matrix(other.matrix @ self._matrix, self.source_frame, other.target_frame)
        return super()._compose(other)

    def _params_dict(self) -> dict[str, Any]:
        return {"matrix": self._matrix.tolist()}

    @classmethod
    def _from_params(cls, d: dict[str, Any]) -> LinearTransform:
        return cls._from_matrix(np.asarray(d["matrix"], dtype=np.float64),
                                d.get("source_frame"), d.get("target_frame"))

    def __repr__(self) -> str:
        base = super().__repr__()[:-1]
        with np.printoptions(precision=6, suppress=True):
            return f"{base}, matrix=\n{self._matrix})"


def _clean_last_row(m: np.ndarray) -> np.ndarray:
    """Restore the exact ``(0, ..., 0, 1)`` last row that float products blur."""
    m = np.array(m, dtype=np.float64)
    d = m.shape[0] - 1
    m[d, :d] = 0.0
    m[d, d] = 1.0
    return m


def _weighted_centres(src, dst, w):
    wn = w / w.sum()
    return wn, wn @ src, wn @ dst


class Affine(LinearTransform):
    """General affine map ``p -> A p + t``: rotation, anisotropic scale, shear, mirror.

    Build from ``matrix=`` (``(D+1, D+1)``), or estimate with :meth:`from_estimate`.
    Minimum pairs: 3 (2-D), 4 (3-D), not collinear / coplanar.
    """

    _rank = 50
    min_points = {2: 3, 3: 4}

    @classmethod
    def n_params(cls, ndim: int, *, n_points: int = 0, **options) -> int:
        cls._check_options(options)
        return ndim * (ndim + 1)

    def param_jacobian(self, points: Any) -> np.ndarray:
        # parameters: the linear part row by row, then the translation
        q = as_points(points, self.ndim)
        n, d = q.shape
        jac = np.zeros((n, d, d * d + d))
        for k in range(d):
            jac[:, k, k * d : (k + 1) * d] = q
            jac[:, k, d * d + k] = 1.0
        return jac

    @classmethod
    def _estimate(cls, src, dst, w):
        d = src.shape[1]
        wn, cs, cd = _weighted_centres(src, dst, w)
        sw = np.sqrt(wn)[:, None]
        xs = (src - cs) * sw
        xd = (dst - cd) * sw
        sv = np.linalg.svd(xs, compute_uv=False)
        if sv[0] == 0 or sv[-1] / sv[0] < 1e-10 or np.count_nonzero(wn) < d + 1:
            shape = "on one line (collinear)" if d == 2 else "in one plane (coplanar) or on a line"
            return FailedEstimation(
                f"the source landmarks lie {shape}, so a {d}-D affine transform is not determined; "
                "add landmarks spread across the field or choose a rigid/similarity model"
            )
        a, *_ = np.linalg.lstsq(xs, xd, rcond=None)  # xs @ a = xd, a is A.T
        lin = a.T
        m = np.eye(d + 1)
        m[:d, :d] = lin
        m[:d, d] = cd - lin @ cs
        if abs(np.linalg.det(lin)) < 1e-300:
            return FailedEstimation("the fitted affine map is singular; check the landmarks")
        return cls._from_matrix(m)


class Similarity(LinearTransform):
    """Rotation, isotropic scale and translation: ``p -> s R p + t``.

    Parameters
    ----------
    scale : float
        Isotropic scale factor (> 0).
    rotation : float or array_like
        2-D: angle in radians (counter-clockwise in ``(x, y)``); 3-D: a ``(3, 3)`` rotation matrix.
    translation : array_like, shape (D,)
        µm.
    matrix : array_like, optional
        Homogeneous matrix instead of the parameters; its linear part must be ``s`` times an
        orthogonal matrix (a mirrored similarity, determinant < 0, is allowed).
    """

    _rank = 40
    min_points = {2: 2, 3: 3}
    estimation_options = ("allow_reflection",)

    def __init__(self, scale: float = 1.0, rotation: Any = 0.0, translation: Any = None, *,
                 matrix: Any = None, ndim: int | None = None,
                 source_frame: str | None = None, target_frame: str | None = None):
        if matrix is None:
            matrix = _compose_params(scale, rotation, translation, ndim)
        super().__init__(matrix, ndim=ndim, source_frame=source_frame, target_frame=target_frame)

    def _check_matrix(self, m):
        super()._check_matrix(m)
        lin = m[:-1, :-1]
        s = abs(np.linalg.det(lin)) ** (1.0 / lin.shape[0])
        if orthogonality_error(lin / s) > 1e-9:
            raise TransformError(f"{type(self).__name__} matrix is not a scaled rotation: {lin.tolist()}")

    @property
    def scale(self) -> float:
        """Isotropic scale factor."""
        return float(abs(np.linalg.det(self.linear)) ** (1.0 / self.ndim))

    @property
    def rotation(self) -> np.ndarray:
        """``(D, D)`` orthogonal part (determinant -1 when mirrored)."""
        return self.linear / self.scale

    @classmethod
    def n_params(cls, ndim: int, *, n_points: int = 0, **options) -> int:
        cls._check_options(options)
        return 4 if ndim == 2 else 7

    def param_jacobian(self, points: Any) -> np.ndarray:
        # parameters: rotation (angle in 2-D, small rotation vector in 3-D), scale, translation
        return np.concatenate([_rotation_jacobian(self, points),
                               (as_points(points, self.ndim) @ self.rotation.T)[:, :, None],
                               _translation_jacobian(points, self.ndim)], axis=2)

    @classmethod
    def _estimate(cls, src, dst, w, allow_reflection: bool = False):
        return _umeyama(cls, src, dst, w, with_scale=True, allow_reflection=allow_reflection)


class Rigid(Similarity):
    """Rotation and translation: ``p -> R p + t`` (``R`` orthogonal; a mirror only if asked).

    Parameters as :class:`Similarity` without ``scale``. Minimum pairs: 2 (2-D), 3 (3-D).
    """

    _rank = 30

    def __init__(self, rotation: Any = 0.0, translation: Any = None, *, matrix: Any = None,
                 ndim: int | None = None, source_frame: str | None = None,
                 target_frame: str | None = None):
        super().__init__(1.0, rotation, translation, matrix=matrix, ndim=ndim,
                         source_frame=source_frame, target_frame=target_frame)

    def _check_matrix(self, m):
        LinearTransform._check_matrix(self, m)
        if orthogonality_error(m[:-1, :-1]) > 1e-9:
            raise TransformError(f"Rigid matrix is not a rotation: {m[:-1, :-1].tolist()}")

    @classmethod
    def n_params(cls, ndim: int, *, n_points: int = 0, **options) -> int:
        cls._check_options(options)
        return 3 if ndim == 2 else 6

    def param_jacobian(self, points: Any) -> np.ndarray:
        # parameters: rotation (angle in 2-D, small rotation vector in 3-D), translation
        return np.concatenate([_rotation_jacobian(self, points),
                               _translation_jacobian(points, self.ndim)], axis=2)

    @classmethod
    def _estimate(cls, src, dst, w, allow_reflection: bool = False):
        return _umeyama(cls, src, dst, w, with_scale=False, allow_reflection=allow_reflection)


class Translation(LinearTransform):
    """Shift only: ``p -> p + t``. One pair suffices."""

    _rank = 20
    min_points = {2: 1, 3: 1}

    def __init__(self, offset: Any = None, *, matrix: Any = None, ndim: int | None = None,
                 source_frame: str | None = None, target_frame: str | None = None):
        if matrix is None:
            off = np.zeros(2 if ndim is None else ndim) if offset is None else np.asarray(offset, float)
            matrix = np.eye(off.size + 1)
            matrix[:-1, -1] = off
        super().__init__(matrix, ndim=ndim, source_frame=source_frame, target_frame=target_frame)

    def _check_matrix(self, m):
        super()._check_matrix(m)
        if not np.array_equal(m[:-1, :-1], np.eye(m.shape[0] - 1)):
            raise TransformError("Translation matrix must have an identity linear part")

    @classmethod
    def n_params(cls, ndim: int, *, n_points: int = 0, **options) -> int:
        cls._check_options(options)
        return ndim

    def param_jacobian(self, points: Any) -> np.ndarray:
        return _translation_jacobian(points, self.ndim)

    @classmethod
    def _estimate(cls, src, dst, w):
        wn = w / w.sum()
        return cls(wn @ (dst - src))


class Identity(LinearTransform):
    """The identity map (between two frames that coincide)."""

    _rank = 10
    min_points = {2: 0, 3: 0}

    def __init__(self, *, matrix: Any = None, ndim: int = 2, source_frame: str | None = None,
                 target_frame: str | None = None):
        super().__init__(matrix, ndim=ndim, source_frame=source_frame, target_frame=target_frame)

    def _check_matrix(self, m):
        if not np.array_equal(m, np.eye(m.shape[0])):
            raise TransformError("Identity matrix must be the identity")

    @classmethod
    def n_params(cls, ndim: int, *, n_points: int = 0, **options) -> int:
        cls._check_options(options)
        return 0

    def param_jacobian(self, points: Any) -> np.ndarray:
        return np.zeros((len(as_points(points, self.ndim)), self.ndim, 0))

    @classmethod
    def _estimate(cls, src, dst, w):
        return cls(ndim=src.shape[1])


def _translation_jacobian(points: Any, ndim: int) -> np.ndarray:
    n = len(as_points(points, ndim))
    return np.broadcast_to(np.eye(ndim), (n, ndim, ndim)).copy()


def _rotation_jacobian(tf: LinearTransform, points: Any) -> np.ndarray:
    """d(L q)/d(rotation) for a rotation perturbed on the left, ``L -> exp([w]x) L``."""
    q = as_points(points, tf.ndim)
    lq = q @ tf.linear.T
    if tf.ndim == 2:
        return np.stack([-lq[:, 1], lq[:, 0]], axis=1)[:, :, None]  # [[0, -1], [1, 0]] @ Lq
    return -cross_product_matrices(lq)


def _compose_params(scale, rotation, translation, ndim) -> np.ndarray:
    rot = np.asarray(rotation, dtype=np.float64)
    if rot.ndim == 0:
        if ndim == 3:
            raise TransformError("a 3-D rotation must be given as a (3, 3) matrix")
        rot = rotation_matrix_2d(float(rot))
    d = rot.shape[0]
    if rot.shape != (d, d) or d not in (2, 3):
        raise TransformError(f"rotation must be an angle (2-D) or a (D, D) matrix, got shape {rot.shape}")
    s = float(scale)
    if not np.isfinite(s) or s <= 0:
        raise TransformError(f"scale must be positive and finite, got {scale!r}")
    t = np.zeros(d) if translation is None else np.asarray(translation, dtype=np.float64).reshape(-1)
    if t.shape != (d,):
        raise TransformError(f"translation must have {d} values, got {t.shape[0]}")
    m = np.eye(d + 1)
    m[:d, :d] = s * rot
    m[:d, d] = t
    return m


def _umeyama(cls, src, dst, w, with_scale: bool, allow_reflection: bool):
    """Weighted closed-form least-squares rotation (+ scale) + translation (Umeyama 1991).

    Minimises ``sum_i w_i |s R src_i + t - dst_i|^2``. Unless ``allow_reflection``, ``R`` is a
    proper rotation (det +1): when the unconstrained optimum is a mirror, the smallest
    singular direction is flipped, which is the exact constrained optimum.
    """
    d = src.shape[1]
    wn, cs, cd = _weighted_centres(src, dst, w)
    xs, xd = src - cs, dst - cd
    var_s = float(wn @ np.sum(xs * xs, axis=1))
    if var_s <= 0 or not np.isfinite(var_s):
        return FailedEstimation(
            "all source landmarks are at the same position, so rotation and scale are not "
            "determined; use landmarks spread across the field"
        )
    cov = (xd * wn[:, None]).T @ xs  # (D, D): sum w dst_c src_c^T
    u, sig, vt = np.linalg.svd(cov)
    # rotation determined iff rank >= D-1 (the sign fixes the last axis)
    if d == 3 and sig[1] <= 1e-12 * max(sig[0], 1e-300):
        return FailedEstimation(
            "the landmarks lie on one line, so the 3-D rotation about that line is not "
            "determined; add a landmark off the line"
        )
    if sig[0] <= 0:
        return FailedEstimation(
            "all target landmarks are at the same position; check the landmark pairs"
        )
    sgn = np.ones(d)
    if not allow_reflection and np.linalg.det(u) * np.linalg.det(vt) < 0:
        sgn[-1] = -1.0
    rot = (u * sgn) @ vt
    scale = float(sig @ sgn) / var_s if with_scale else 1.0
    if with_scale and scale <= 0:
        return FailedEstimation("the fitted scale is not positive; the landmark pairs are inconsistent")
    m = np.eye(d + 1)
    m[:d, :d] = scale * rot
    m[:d, d] = cd - scale * rot @ cs
    return cls._from_matrix(m)

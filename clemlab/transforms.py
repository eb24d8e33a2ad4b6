"""Coordinate transforms over points in physical units, and the one place axes are swapped.

Points are ``(N, D)`` float arrays in µm with columns ``(x, y[, z])``: the order of
scikit-image transforms, matplotlib clicks, BigWarp and ec-CLEM. Arrays are indexed
``(z, y, x)`` (row-major). :func:`xy_to_rc` / :func:`rc_to_xy` and the pixel-grid helpers
below are the only code in clemlab that converts between the two orders or between pixels and
physical units.

A transform maps points *forward*, from its source frame to its target frame (e.g. LM -> EM).
Transforms are immutable values: ``tf(points)``, ``tf.inverse``, ``a.then(b)`` (``a`` first),
``tf.to_dict()`` / :func:`transform_from_dict`, ``tf.matrix`` for linear models.

Estimation (``Model.from_estimate(src, dst, weights=None)``) never raises on bad data
(too few pairs, NaN, degenerate layout): it returns a falsy :class:`FailedEstimation` that
carries the reason. Programmer errors (arrays of the wrong shape) raise.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import numpy as np

from .errors import RegistrationError, TransformError

__all__ = [
    "POINT_AXES",
    "as_points",
    "xy_to_rc",
    "rc_to_xy",
    "pixel_to_physical",
    "physical_to_pixel",
    "index_to_physical_matrix",
    "FailedEstimation",
    "Transform",
    "LinearTransform",
    "Identity",
    "Translation",
    "Rigid",
    "Similarity",
    "Affine",
    "Composite",
    "Projective",
    "Polynomial",
    "ThinPlateSpline",
    "InverseTransform",
    "RigidProjection",
    "MODELS",
    "transform_from_dict",
]

#: Column order of points: ``(x, y[, z])``.
POINT_AXES = ("x", "y", "z")


# ---------------------------------------------------------------------------------------
# points, axes and pixel grids
# ---------------------------------------------------------------------------------------
def as_points(points: Any, ndim: int | None = None, argname: str = "points") -> np.ndarray:
    """Return ``points`` as a float64 ``(N, D)`` array, checking its shape.

    A single point of shape ``(D,)`` becomes ``(1, D)``. Raises :class:`TransformError`
    naming ``argname`` when the shape is wrong or does not match ``ndim``.
    """
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise TransformError(f"{argname} must be numeric, got {type(points).__name__}") from None
    if arr.ndim == 1:
        arr = arr[np.newaxis, :]
    if arr.ndim != 2 or arr.shape[1] not in (2, 3):
        raise TransformError(
            f"{argname} must have shape (N, 2) or (N, 3) with columns (x, y[, z]), "
            f"got shape {np.shape(points)}"
        )
    if ndim is not None and arr.shape[1] != ndim:
        raise TransformError(
            f"{argname} has {arr.shape[1]} columns but the transform is {ndim}-D; "
            f"give points as (N, {ndim}) in (x, y{', z' if ndim == 3 else ''}) order"
        )
    return arr


def xy_to_rc(points: Any) -> np.ndarray:
    """``(x, y[, z])`` point columns -> array index order ``(row, col)`` / ``(z, y, x)``."""
    return np.asarray(points)[..., ::-1]


def rc_to_xy(indices: Any) -> np.ndarray:
    """Array index order ``(row, col)`` / ``(z, y, x)`` -> point columns ``(x, y[, z])``."""
    return np.asarray(indices)[..., ::-1]


def pixel_to_physical(pixels: Any, pixel_size: Any, origin: Any) -> np.ndarray:
    """Continuous pixel coordinates -> physical positions (same ``(x, y[, z])`` order).

    Parameters
    ----------
    pixels : array_like, shape (N, D)
        Pixel coordinates, columns ``(x, y[, z])``; integers are pixel centres.
    pixel_size, origin : array_like, shape (D,)
        Pixel size and first-pixel-centre position per axis, in ``(x, y[, z])`` order, µm.
    """
    pix = as_points(pixels, len(pixel_size), "pixels")
    return np.asarray(origin, np.float64) + pix * np.asarray(pixel_size, np.float64)


def physical_to_pixel(points: Any, pixel_size: Any, origin: Any) -> np.ndarray:
    """Physical positions -> continuous pixel coordinates (inverse of :func:`pixel_to_physical`)."""
    pts = as_points(points, len(pixel_size), "points")
    return (pts - np.asarray(origin, np.float64)) / np.asarray(pixel_size, np.float64)


def index_to_physical_matrix(pixel_size: Any, origin: Any) -> np.ndarray:
    """Homogeneous matrix from array indices ``(z, y, x)`` to physical points ``(x, y, z)``.

    Parameters
    ----------
    pixel_size, origin : array_like, shape (D,)
        Per-axis pixel size and first-pixel-centre position, in point order ``(x, y[, z])``.

    Returns
    -------
    numpy.ndarray, shape (D+1, D+1)
        ``M`` with ``[x, y, (z), 1] = M @ [(k), i, j, 1]`` for the array index ``(k, i, j)``.
    """
    size = np.asarray(pixel_size, np.float64)
    d = size.size
    m = np.zeros((d + 1, d + 1))
    m[:d, :d] = np.diag(size)[:, ::-1]
    m[:d, d] = np.asarray(origin, np.float64)
    m[d, d] = 1.0
    return m


# ---------------------------------------------------------------------------------------
# failure value
# ---------------------------------------------------------------------------------------
class FailedEstimation:
    """Falsy result of an estimation that the data did not support.

    Attributes
    ----------
    reason : str
        What was wrong with the data and what to do about it.

    Using it as a transform (calling it, asking for its inverse, ...) raises
    :class:`~clemlab.errors.RegistrationError` with the reason.
    """

    def __init__(self, reason: str):
        self.reason = reason

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"FailedEstimation({self.reason!r})"

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise RegistrationError(self.reason)

    def __call__(self, *args, **kwargs):
        raise RegistrationError(self.reason)


# ---------------------------------------------------------------------------------------
# transforms
# ---------------------------------------------------------------------------------------
class Transform:
    """Base class: a map of ``(N, D)`` points from ``source_frame`` to ``target_frame``.

    Subclasses implement ``_apply``, ``inverse``, ``_params_dict`` and ``_from_params``.
    """

    #: registry of serialisable classes by ``type`` name
    _registry: ClassVar[dict[str, type[Transform]]] = {}
    #: minimum pairs for estimation, by dimensionality
    min_points: ClassVar[dict[int, int]] = {2: 1, 3: 1}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        Transform._registry[cls.__name__] = cls

    def __init__(self, ndim: int, source_frame: str | None = None, target_frame: str | None = None):
        if ndim not in (2, 3):
            raise TransformError(f"transforms are 2-D or 3-D, got ndim={ndim!r}")
        self._ndim = int(ndim)
        self._source_frame = None if source_frame is None else str(source_frame)
        self._target_frame = None if target_frame is None else str(target_frame)

    # -- value-object basics --------------------------------------------------------------
    @property
    def ndim(self) -> int:
        """Dimensionality ``D`` of the points (2 or 3)."""
        return self._ndim

    @property
    def ndim_out(self) -> int:
        """Dimensionality of the mapped points (``ndim`` except for projections)."""
        return self._ndim

    @property
    def source_frame(self) -> str | None:
        """Name of the frame this transform maps from (``"LM"``), if known."""
        return self._source_frame

    @property
    def target_frame(self) -> str | None:
        """Name of the frame this transform maps to (``"EM"``), if known."""
        return self._target_frame

    def __setattr__(self, name, value):
        if name.startswith("_") and name not in self.__dict__:
            object.__setattr__(self, name, value)
            return
        raise AttributeError(f"{type(self).__name__} is immutable; build a new transform instead")

    def __call__(self, points: Any) -> np.ndarray:
        """Map points forward.

        Parameters
        ----------
        points : array_like, shape (N, D) or (D,)
            Points in the source frame, µm, columns ``(x, y[, z])``.

        Returns
        -------
        numpy.ndarray, shape (N, D)
            Points in the target frame, same column order.
        """
        return self._apply(as_points(points, self.ndim))

    def _apply(self, pts: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def inverse(self) -> Transform:  # pragma: no cover - abstract
        """The transform mapping target-frame points back to the source frame."""
        raise NotImplementedError

    def then(self, other: Transform) -> Transform:
        """Compose: apply ``self`` first, then ``other``.

        Frame names must agree where both are known (``self.target_frame ==
        other.source_frame``); the result maps ``self.source_frame`` to ``other.target_frame``.
        """
        if not isinstance(other, Transform):
            raise TransformError(f"can only compose with a Transform, got {type(other).__name__}")
        if other.ndim != self.ndim_out:
            raise TransformError(f"cannot compose a transform to {self.ndim_out}-D points with a {other.ndim}-D one")
        if self.target_frame and other.source_frame and self.target_frame != other.source_frame:
            raise TransformError(
                f"cannot compose: the first transform ends in frame {self.target_frame!r} but "
                f"the second starts in frame {other.source_frame!r}"
            )
        return self._compose(other)

    def _compose(self, other: Transform) -> Transform:
        return Composite([self, other])

    def with_frames(self, source_frame: str | None, target_frame: str | None) -> Transform:
        """A copy of this transform carrying the given frame names."""
        d = self.to_dict()
        d["source_frame"], d["target_frame"] = source_frame, target_frame
        return transform_from_dict(d)

    def residuals(self, src: Any, dst: Any) -> np.ndarray:
        """Euclidean distance ``|tf(src) - dst|`` per pair, shape (N,), in µm."""
        return np.linalg.norm(self(src) - as_points(dst, self.ndim_out, "dst"), axis=1)

    # -- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; :func:`transform_from_dict` rebuilds the transform exactly."""
        return {
            "type": type(self).__name__,
            "ndim": self.ndim,
            "source_frame": self.source_frame,
            "target_frame": self.target_frame,
            **self._params_dict(),
        }

    def _params_dict(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def _from_params(cls, d: dict[str, Any]) -> Transform:  # pragma: no cover - abstract
        raise NotImplementedError

    def __eq__(self, other: Any) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return _dict_equal(self.to_dict(), other.to_dict())

    def __hash__(self) -> int:
        return hash(repr(self.to_dict()))

    def __repr__(self) -> str:
        frames = ""
        if self.source_frame or self.target_frame:
            frames = f", {self.source_frame} -> {self.target_frame}"
        return f"{type(self).__name__}(ndim={self.ndim}{frames})"

    # -- estimation -----------------------------------------------------------------------
    @classmethod
    def n_params(cls, ndim: int) -> int:
        """Number of free parameters of the model in ``ndim`` dims."""
        raise NotImplementedError

    @classmethod
    def required_points(cls, ndim: int, **options) -> int:
        """Fewest point pairs that determine the model (with estimation ``options``)."""
        return cls.min_points[ndim]

    @classmethod
    def from_estimate(
        cls, src: Any, dst: Any, weights: Any = None, **kwargs
    ) -> Transform | FailedEstimation:
        """Fit the model to point pairs ``src[i] -> dst[i]`` by (weighted) least squares.

        Parameters
        ----------
        src, dst : array_like, shape (N, D)
            Corresponding points, µm, columns ``(x, y[, z])``.
        weights : array_like, shape (N,), optional
            Non-negative weight per pair, e.g. ``1 / sigma**2`` from localisation
            uncertainties. Default: all equal.
        **kwargs
            Model options (``allow_reflection`` for Rigid/Similarity) and ``source_frame``,
            ``target_frame``.

        Returns
        -------
        Transform or FailedEstimation
            The fitted transform, or a falsy :class:`FailedEstimation` saying why the data
            do not determine it (too few pairs, NaN/inf, degenerate layout).
        """
        frames = {k: kwargs.pop(k, None) for k in ("source_frame", "target_frame")}
        src_a = as_points(src, argname="src")
        dst_a = as_points(dst, argname="dst")
        io_dims = getattr(cls, "_io_dims", None)
        if io_dims is not None:
            if src_a.shape[1] != io_dims[0] or dst_a.shape != (len(src_a), io_dims[1]):
                raise TransformError(
                    f"{cls.__name__} pairs ({io_dims[0]}-D source, {io_dims[1]}-D target) points: got "
                    f"src {src_a.shape} and dst {dst_a.shape}"
                )
        elif src_a.shape != dst_a.shape:
            raise TransformError(f"src and dst must have the same shape, got {src_a.shape} and {dst_a.shape}")
        ndim = src_a.shape[1]
        n = src_a.shape[0]
        if weights is None:
            w = np.ones(n)
        else:
            w = np.asarray(weights, dtype=np.float64).reshape(-1)
            if w.shape != (n,):
                raise TransformError(f"weights must have shape ({n},), got {np.shape(weights)}")
        name = getattr(cls, "label", cls.__name__.lower())
        if "order" in kwargs and kwargs["order"] not in (2, 3):
            raise TransformError(f"polynomial order must be 2 or 3, got {kwargs['order']!r}")
        need = cls.required_points(ndim, **kwargs)
        if n < need:
            return FailedEstimation(
                f"a {ndim}-D {name} transform needs at least {need} point pair"
                f"{'s' if need > 1 else ''}, got {n}; add more landmarks or choose a simpler model"
            )
        bad = ~(np.isfinite(src_a).all(axis=1) & np.isfinite(dst_a).all(axis=1))
        if bad.any():
            return FailedEstimation(
                f"landmark pairs {np.flatnonzero(bad).tolist()} contain NaN or infinite coordinates; "
                "fix or deactivate them"
            )
        if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            return FailedEstimation("weights must be finite, non-negative and not all zero")
        result = cls._estimate(src_a, dst_a, w, **kwargs)
        if isinstance(result, FailedEstimation):
            return result
        if frames["source_frame"] or frames["target_frame"]:
            result = result.with_frames(frames["source_frame"], frames["target_frame"])
        return result

    @classmethod
    def _estimate(cls, src, dst, w, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError


def _dict_equal(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_dict_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_dict_equal(x, y) for x, y in zip(a, b))
    return a == b


class LinearTransform(Transform):
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


def _rotation_2d(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def _orthogonality_error(r: np.ndarray) -> float:
    return float(np.max(np.abs(r.T @ r - np.eye(r.shape[0]))))


class Affine(LinearTransform):
    """General affine map ``p -> A p + t``: rotation, anisotropic scale, shear, mirror.

    Build from ``matrix=`` (``(D+1, D+1)``), or estimate with :meth:`from_estimate`.
    Minimum pairs: 3 (2-D), 4 (3-D), not collinear / coplanar.
    """

    _rank = 50
    min_points = {2: 3, 3: 4}

    @classmethod
    def n_params(cls, ndim: int) -> int:
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
    def _estimate(cls, src, dst, w, **kwargs):
        if kwargs:
            raise TypeError(f"unexpected options for Affine estimation: {sorted(kwargs)}")
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
        if _orthogonality_error(lin / s) > 1e-9:
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
    def n_params(cls, ndim: int) -> int:
        return 4 if ndim == 2 else 7

    def param_jacobian(self, points: Any) -> np.ndarray:
        # parameters: rotation (angle in 2-D, small rotation vector in 3-D), scale, translation
        return np.concatenate([_rotation_jacobian(self, points),
                               (as_points(points, self.ndim) @ self.rotation.T)[:, :, None],
                               _translation_jacobian(points, self.ndim)], axis=2)

    @classmethod
    def _estimate(cls, src, dst, w, allow_reflection: bool = False, **kwargs):
        if kwargs:
            raise TypeError(f"unexpected options for {cls.__name__} estimation: {sorted(kwargs)}")
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
        if _orthogonality_error(m[:-1, :-1]) > 1e-9:
            raise TransformError(f"Rigid matrix is not a rotation: {m[:-1, :-1].tolist()}")

    @classmethod
    def n_params(cls, ndim: int) -> int:
        return 3 if ndim == 2 else 6

    def param_jacobian(self, points: Any) -> np.ndarray:
        # parameters: rotation (angle in 2-D, small rotation vector in 3-D), translation
        return np.concatenate([_rotation_jacobian(self, points),
                               _translation_jacobian(points, self.ndim)], axis=2)

    @classmethod
    def _estimate(cls, src, dst, w, allow_reflection: bool = False, **kwargs):
        if kwargs:
            raise TypeError(f"unexpected options for Rigid estimation: {sorted(kwargs)}")
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
    def n_params(cls, ndim: int) -> int:
        return ndim

    def param_jacobian(self, points: Any) -> np.ndarray:
        return _translation_jacobian(points, self.ndim)

    @classmethod
    def _estimate(cls, src, dst, w, **kwargs):
        if kwargs:
            raise TypeError(f"unexpected options for Translation estimation: {sorted(kwargs)}")
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
    def n_params(cls, ndim: int) -> int:
        return 0

    def param_jacobian(self, points: Any) -> np.ndarray:
        return np.zeros((len(as_points(points, self.ndim)), self.ndim, 0))

    @classmethod
    def _estimate(cls, src, dst, w, **kwargs):
        return cls(ndim=src.shape[1])


def _translation_jacobian(points: Any, ndim: int) -> np.ndarray:
    n = len(as_points(points, ndim))
    return np.broadcast_to(np.eye(ndim), (n, ndim, ndim)).copy()


def _skew(v: np.ndarray) -> np.ndarray:
    """Cross-product matrices ``[v]x`` of ``(N, 3)`` vectors -> ``(N, 3, 3)``."""
    z = np.zeros(len(v))
    return np.stack([np.stack([z, -v[:, 2], v[:, 1]], -1),
                     np.stack([v[:, 2], z, -v[:, 0]], -1),
                     np.stack([-v[:, 1], v[:, 0], z], -1)], axis=1)


def _rotation_jacobian(tf: LinearTransform, points: Any) -> np.ndarray:
    """d(L q)/d(rotation) for a rotation perturbed on the left, ``L -> exp([w]x) L``."""
    q = as_points(points, tf.ndim)
    lq = q @ tf.linear.T
    if tf.ndim == 2:
        return np.stack([-lq[:, 1], lq[:, 0]], axis=1)[:, :, None]  # [[0, -1], [1, 0]] @ Lq
    return -_skew(lq)


def _compose_params(scale, rotation, translation, ndim) -> np.ndarray:
    rot = np.asarray(rotation, dtype=np.float64)
    if rot.ndim == 0:
        if ndim == 3:
            raise TransformError("a 3-D rotation must be given as a (3, 3) matrix")
        rot = _rotation_2d(float(rot))
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


class Composite(Transform):
    """Several transforms applied in order (first to last).

    Parameters
    ----------
    transforms : sequence of Transform
        Applied in order; each one's output dimensionality must match the next one's input.
    """

    def __init__(self, transforms, *, source_frame=None, target_frame=None):
        tfs = []
        for t in transforms:
            if isinstance(t, Composite):
                tfs.extend(t.transforms)
            elif isinstance(t, Transform):
                tfs.append(t)
            else:
                raise TransformError(f"Composite takes Transforms, got {type(t).__name__}")
        if not tfs:
            raise TransformError("Composite needs at least one transform")
        for a, b in zip(tfs, tfs[1:]):
            if a.ndim_out != b.ndim:
                raise TransformError(
                    f"cannot compose a transform to {a.ndim_out}-D points with a {b.ndim}-D transform"
                )
        super().__init__(
            tfs[0].ndim,
            source_frame if source_frame is not None else tfs[0].source_frame,
            target_frame if target_frame is not None else tfs[-1].target_frame,
        )
        self._transforms = tuple(tfs)

    @property
    def ndim_out(self) -> int:
        return self._transforms[-1].ndim_out

    @property
    def transforms(self) -> tuple[Transform, ...]:
        """The parts, in the order they are applied."""
        return self._transforms

    def _apply(self, pts):
        for t in self._transforms:
            pts = t._apply(pts)
        return pts

    @property
    def inverse(self) -> Composite:
        return Composite([t.inverse for t in reversed(self._transforms)],
                         source_frame=self.target_frame, target_frame=self.source_frame)

    def _params_dict(self):
        return {"transforms": [t.to_dict() for t in self._transforms]}

    @classmethod
    def _from_params(cls, d):
        return cls([transform_from_dict(t) for t in d["transforms"]],
                   source_frame=d.get("source_frame"), target_frame=d.get("target_frame"))


class Projective(LinearTransform):
    """Projective map (homography): ``p -> (H p~)[:D] / (H p~)[D]`` with ``p~ = (p, 1)``.

    Models a tilted sample plane seen by two cameras (2-D); a 3-D version is provided for
    completeness. The matrix is normalised so that ``H[D, D] == 1``.
    Minimum pairs: 4 (2-D), no three collinear; 5 (3-D).
    """

    _rank = 60
    min_points = {2: 4, 3: 5}

    def _check_matrix(self, m):
        if abs(np.linalg.det(m)) < 1e-300:
            raise TransformError("Projective matrix is singular (not invertible)")

    @classmethod
    def _normalised(cls, m: np.ndarray) -> np.ndarray:
        m = np.array(m, dtype=np.float64)
        d = m.shape[0] - 1
        return m / m[d, d] if m[d, d] != 0 else m

    def _apply(self, pts: np.ndarray) -> np.ndarray:
        d = self.ndim
        h = pts @ self._matrix[:d, :d].T + self._matrix[:d, d]
        w = pts @ self._matrix[d, :d] + self._matrix[d, d]
        return h / w[:, None]

    @classmethod
    def n_params(cls, ndim: int) -> int:
        return (ndim + 1) ** 2 - 1

    def param_jacobian(self, points: Any) -> np.ndarray:
        # parameters: the matrix entries row by row, without the fixed H[D, D] = 1
        q = as_points(points, self.ndim)
        n, d = q.shape
        qh = np.c_[q, np.ones(n)]
        w = qh @ self._matrix[d]
        y = self._apply(q)
        jac = np.zeros((n, d, (d + 1) ** 2))
        for k in range(d):
            jac[:, k, k * (d + 1) : (k + 1) * (d + 1)] = qh / w[:, None]
            jac[:, k, d * (d + 1) :] = -(y[:, k] / w)[:, None] * qh
        return jac[:, :, :-1]

    @classmethod
    def _estimate(cls, src, dst, w, **kwargs):
        if kwargs:
            raise TypeError(f"unexpected options for Projective estimation: {sorted(kwargs)}")
        d = src.shape[1]
        ts, td = _similarity_normaliser(src), _similarity_normaliser(dst)
        if ts is None or td is None:
            return FailedEstimation("all landmarks are at the same position; a projective map is not determined")
        xs = _apply_h(ts, src)
        xd = _apply_h(td, dst)
        n = len(src)
        # direct linear transform: for each output axis k, H_k . p~ - y_k H_D . p~ = 0
        rows = np.zeros((n * d, (d + 1) ** 2))
        ph = np.c_[xs, np.ones(n)]
        sw = np.sqrt(w / w.max())
        for k in range(d):
            rows[k::d, k * (d + 1) : (k + 1) * (d + 1)] = ph
            rows[k::d, d * (d + 1) :] = -xd[:, k : k + 1] * ph
        rows *= np.repeat(sw, d)[:, None]
        _, sv, vt = np.linalg.svd(rows)
        need = (d + 1) ** 2 - 1
        if len(sv) < need or sv[need - 1] <= 1e-10 * sv[0]:
            return FailedEstimation(
                "the landmarks are degenerate for a projective map (three or more on one line, "
                "or too few distinct points); spread them over the field"
            )
        h = vt[-1].reshape(d + 1, d + 1)
        m = np.linalg.solve(td, h @ ts)
        if m[d, d] == 0 or abs(np.linalg.det(m)) < 1e-300:
            return FailedEstimation("the fitted projective map is singular; check the landmark pairs")
        tf = cls._from_matrix(m)
        if n > cls.min_points[d]:
            tf = _refine_projective(cls, tf, src, dst, w)
        return tf


def _similarity_normaliser(pts: np.ndarray) -> np.ndarray | None:
    """Hartley normalisation: centre the points and scale their mean distance to sqrt(D)."""
    d = pts.shape[1]
    c = pts.mean(axis=0)
    dist = np.linalg.norm(pts - c, axis=1).mean()
    if not dist > 0:
        return None
    k = np.sqrt(d) / dist
    t = np.eye(d + 1)
    t[:d, :d] *= k
    t[:d, d] = -k * c
    return t


def _apply_h(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    d = pts.shape[1]
    h = pts @ m[:d, :d].T + m[:d, d]
    return h / (pts @ m[d, :d] + m[d, d])[:, None]


def _refine_projective(cls, tf, src, dst, w):
    """Minimise the weighted geometric error ``sum w |H(src) - dst|^2`` from the DLT start."""
    from scipy.optimize import least_squares

    d = src.shape[1]
    ts = _similarity_normaliser(src)
    td = _similarity_normaliser(dst)
    xs, xd = _apply_h(ts, src), _apply_h(td, dst)
    h0 = td @ tf.matrix @ np.linalg.inv(ts)
    h0 = h0 / h0[d, d]
    sw = np.sqrt(w / w.max())[:, None]

    def residuals(p):
        h = np.append(p, 1.0).reshape(d + 1, d + 1)
        return ((_apply_h(h, xs) - xd) * sw).ravel()

    res = least_squares(residuals, h0.ravel()[:-1], method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    h = np.append(res.x, 1.0).reshape(d + 1, d + 1)
    m = np.linalg.solve(td, h @ ts)
    try:
        better = cls._from_matrix(m)
    except TransformError:
        return tf
    old = np.sum(w * np.sum((tf(src) - dst) ** 2, axis=1))
    new = np.sum(w * np.sum((better(src) - dst) ** 2, axis=1))
    return better if new <= old else tf


class _NonLinear(Transform):
    """Base of smooth non-linear maps with an analytic Jacobian and a Newton inverse."""

    def jacobian(self, points: Any) -> np.ndarray:
        """Spatial derivative ``d tf(p) / d p`` at each point, shape ``(N, D, D)``."""
        return self._jacobian(as_points(points, self.ndim))

    def _jacobian(self, pts):  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def inverse(self) -> Transform:
        return InverseTransform(self)

    def _reverse_guess(self) -> Transform:
        """A transform of the same kind fitted the other way, as Newton's starting point."""
        raise NotImplementedError


class InverseTransform(Transform):
    """The inverse of a non-linear transform, evaluated by Newton's method.

    Starts from a reverse model fitted the other way (e.g. a thin-plate spline from target
    to source through the same landmarks) and refines each point with damped Newton steps on
    the forward map until the residual is below 1e-12 of the coordinates' magnitude (machine
    precision inside the landmark hull). Where the forward map folds (not invertible), the
    result is the nearest point Newton reaches.

    Parameters
    ----------
    forward : Transform
        A non-linear transform with ``jacobian``.
    """

    def __init__(self, forward: _NonLinear, *, source_frame: str | None = None,
                 target_frame: str | None = None):
        if not isinstance(forward, _NonLinear):
            raise TransformError(f"InverseTransform needs a non-linear transform, got {type(forward).__name__}")
        if source_frame is not None or target_frame is not None:
            forward = forward.with_frames(target_frame, source_frame)
        super().__init__(forward.ndim, forward.target_frame, forward.source_frame)
        self._forward = forward
        self._guess = forward._reverse_guess()

    @property
    def forward(self) -> Transform:
        """The transform this one inverts."""
        return self._forward

    @property
    def inverse(self) -> Transform:
        return self._forward

    def _apply(self, pts: np.ndarray, max_iter: int = 50) -> np.ndarray:
        """Damped Newton: a step that does not reduce the residual is halved (up to 30 times)."""
        fwd = self._forward
        x = self._guess._apply(pts)
        r = fwd._apply(x) - pts
        rn = np.linalg.norm(r, axis=1)
        tol = 1e-12 * max(1.0, float(np.abs(pts).max(initial=0.0)))
        for _ in range(max_iter):
            idx = np.flatnonzero(rn > tol)
            if idx.size == 0:
                break
            xa, ra = x[idx], r[idx]
            step = _solve_small(fwd._jacobian(xa), ra)
            lam = np.ones(idx.size)
            todo = np.arange(idx.size)
            for _ in range(30):
                xn = xa[todo] - lam[todo, None] * step[todo]
                rnew = fwd._apply(xn) - pts[idx[todo]]
                nn = np.linalg.norm(rnew, axis=1)
                ok = nn < rn[idx[todo]]
                acc = todo[ok]
                x[idx[acc]], r[idx[acc]], rn[idx[acc]] = xn[ok], rnew[ok], nn[ok]
                todo = todo[~ok]
                if todo.size == 0:
                    break
                lam[todo] *= 0.5
            if todo.size == idx.size:  # no point improved: at the precision limit
                break
        return x

    def jacobian(self, points: Any) -> np.ndarray:
        """Spatial derivative: the inverse of the forward Jacobian at the mapped point."""
        x = self(points)
        return np.linalg.inv(self._forward._jacobian(x))

    def _params_dict(self):
        return {"forward": self._forward.to_dict()}

    @classmethod
    def _from_params(cls, d):
        return cls(transform_from_dict(d["forward"]), source_frame=d.get("source_frame"),
                   target_frame=d.get("target_frame"))


def _solve_small(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve ``a[i] x[i] = b[i]`` for stacks of 2x2 (closed form) or DxD systems."""
    if a.shape[1:] == (2, 2):
        det = a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] * a[:, 1, 0]
        return np.stack([a[:, 1, 1] * b[:, 0] - a[:, 0, 1] * b[:, 1],
                         a[:, 0, 0] * b[:, 1] - a[:, 1, 0] * b[:, 0]], axis=1) / det[:, None]
    return np.linalg.solve(a, b[:, :, None])[:, :, 0]


def _monomial_exponents(order: int) -> list[tuple[int, int]]:
    return [(i - j, j) for i in range(order + 1) for j in range(i + 1)]


class Polynomial(_NonLinear):
    """2-D polynomial map of order 2 or 3: ``x' = sum a_ij u^i v^j``, ``y' = sum b_ij u^i v^j``.

    ``(u, v) = (p - centre) / scale`` are normalised source coordinates (kept with the
    coefficients, so large stage coordinates stay well conditioned).

    Parameters
    ----------
    coefficients : array_like, shape (2, M)
        Coefficients of the monomials ``u^i v^j`` in the order 1, u, v, u², uv, v², ...
    order : int
        2 or 3 (``M`` = 6 or 10).
    centre : array_like, shape (2,)
        µm.
    scale : float
        µm.

    Minimum pairs: 6 (order 2), 10 (order 3).
    """

    min_points = {2: 6, 3: 1}

    def __init__(self, coefficients: Any, order: int = 2, centre: Any = (0.0, 0.0), scale: float = 1.0,
                 *, source_frame: str | None = None, target_frame: str | None = None):
        if order not in (2, 3):
            raise TransformError(f"Polynomial order must be 2 or 3, got {order!r}")
        coef = np.array(coefficients, dtype=np.float64)
        m = len(_monomial_exponents(order))
        if coef.shape != (2, m):
            raise TransformError(f"an order-{order} polynomial needs coefficients of shape (2, {m}), got {coef.shape}")
        super().__init__(2, source_frame, target_frame)
        coef.setflags(write=False)
        self._coef = coef
        self._order = int(order)
        self._centre = np.array(centre, dtype=np.float64).reshape(2)
        self._scale = float(scale)
        if not self._scale > 0:
            raise TransformError(f"Polynomial scale must be positive, got {scale!r}")

    @property
    def order(self) -> int:
        """Polynomial order (2 or 3)."""
        return self._order

    def _design(self, pts, order=None):
        u = (pts - self._centre) / self._scale
        return np.stack([u[:, 0] ** i * u[:, 1] ** j for i, j in _monomial_exponents(order or self._order)], axis=1)

    def _apply(self, pts):
        return _points_matmul(self._design(pts), self._coef.T)

    def _jacobian(self, pts):
        u = (pts - self._centre) / self._scale
        du = np.stack([i * u[:, 0] ** max(i - 1, 0) * u[:, 1] ** j for i, j in _monomial_exponents(self._order)], 1)
        dv = np.stack([j * u[:, 0] ** i * u[:, 1] ** max(j - 1, 0) for i, j in _monomial_exponents(self._order)], 1)
        jac = np.stack([du @ self._coef.T, dv @ self._coef.T], axis=2)  # (N, 2 outputs, 2 inputs)
        return jac / self._scale

    def param_jacobian(self, points: Any) -> np.ndarray:
        """``(N, 2, 2M)``: x' coefficients, then y' coefficients."""
        a = self._design(as_points(points, 2))
        n, m = a.shape
        jac = np.zeros((n, 2, 2 * m))
        jac[:, 0, :m] = a
        jac[:, 1, m:] = a
        return jac

    @classmethod
    def n_params(cls, ndim: int, order: int = 2) -> int:
        return 2 * len(_monomial_exponents(order))

    def _reverse_guess(self):
        # fit the reverse polynomial on a grid covering the source region around the centre
        g = np.linspace(-1.5, 1.5, 13)
        u, v = np.meshgrid(g, g)
        src = np.c_[u.ravel(), v.ravel()] * self._scale + self._centre
        rev = Polynomial._estimate(self._apply(src), src, np.ones(len(src)), order=self._order)
        return rev if rev else Affine.from_estimate(self._apply(src), src)

    def _params_dict(self):
        return {"order": self._order, "centre": self._centre.tolist(), "scale": self._scale,
                "coefficients": self._coef.tolist()}

    @classmethod
    def _from_params(cls, d):
        return cls(d["coefficients"], d["order"], d["centre"], d["scale"],
                   source_frame=d.get("source_frame"), target_frame=d.get("target_frame"))

    @classmethod
    def required_points(cls, ndim: int, order: int = 2, **options) -> int:
        return len(_monomial_exponents(order)) if ndim == 2 else 1  # 3-D: refused by _estimate

    @classmethod
    def _estimate(cls, src, dst, w, order=2, **kwargs):
        if kwargs:
            raise TypeError(f"unexpected options for Polynomial estimation: {sorted(kwargs)}")
        if src.shape[1] != 2:
            return FailedEstimation("polynomial transforms are 2-D only; use affine or tps in 3-D")
        centre = src.mean(axis=0)
        scale = float(np.sqrt(np.mean(np.sum((src - centre) ** 2, axis=1))))
        if not scale > 0:
            return FailedEstimation("all source landmarks are at the same position")
        probe = cls(np.zeros((2, len(_monomial_exponents(order)))), order, centre, scale)
        a = probe._design(src) * np.sqrt(w)[:, None]
        sv = np.linalg.svd(a, compute_uv=False)
        if sv[-1] <= 1e-10 * sv[0]:
            return FailedEstimation(
                f"the landmarks do not determine an order-{order} polynomial (they lie on a "
                "low-order curve or too few are distinct); add landmarks spread over the field"
            )
        coef, *_ = np.linalg.lstsq(a, dst * np.sqrt(w)[:, None], rcond=None)
        return cls(coef.T, order, centre, scale)


def _tps_kernel_sq(d2: np.ndarray, scratch: np.ndarray | None = None) -> np.ndarray:
    """``U = r^2 log r`` from squared distances ``d2 = r^2`` (``U(0) = 0``): the 2-D
    thin-plate kernel, as BigWarp and scikit-image use it, in 2-D and 3-D. In place
    (``scratch``: an optional work array of ``d2``'s shape)."""
    lg = np.maximum(d2, np.finfo(d2.dtype).tiny, out=scratch)  # r = 0: 0 * log(tiny) = 0, no masked log
    np.log(lg, out=lg)
    d2 *= lg
    d2 *= 0.5
    return d2


def _points_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for many points ``a`` (P, K) and a small coefficient matrix ``b`` (K, D).

    Computed in blocks of rows small enough that a multi-threaded BLAS keeps each product in
    the calling thread: the warp evaluates splines inside dask's worker threads, where BLAS
    threads would spin against the workers for the cores (measured with
    ``benchmarks/bench_warp.py``'s spline on 2 cores: 1.5 CPU-s per warp instead of 0.95).
    """
    rows = max(1, 32768 // max(1, a.shape[1] * b.shape[1]))
    if a.shape[0] <= rows:
        return a @ b
    out = np.empty((a.shape[0], b.shape[1]), np.result_type(a, b))
    for i in range(0, a.shape[0], rows):
        np.matmul(a[i : i + rows], b, out=out[i : i + rows])
    return out


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.spatial.distance import cdist

    return cdist(a, b, "sqeuclidean")


#: point-control pairs per block of _kernel_sum for two weight columns (256 kB of float64),
#: fewer for more columns: the product stays small enough for BLAS to keep in the calling
#: thread (see _points_matmul)
_KERNEL_BLOCK = 1 << 15
_kernel_scratch = threading.local()


def _kernel_sum(u: np.ndarray, controls: np.ndarray, weights: np.ndarray, grad: bool = False) -> np.ndarray:
    """``sum_i weights[i] U(|u - controls[i]|)`` (P, K) for points ``u`` (P, D), controls
    (M, D) and weights (M, K), with the thin-plate kernel :func:`_tps_kernel_sq`; with
    ``grad``, the sums of ``(dU/dr) / r = log r² + 1`` (0 at a control) instead, from which the
    spline's Jacobian is made.

    Computed in blocks of points, in two scratch arrays per thread that stay in cache: for the
    10^5 points x 50 controls that planning a spline warp evaluates, whole-size temporaries
    (44 MB each) took 2-3x as long, mostly in page faults, and memory grew with the points.
    """
    from scipy.spatial.distance import cdist

    m = len(controls)
    rows = max(1, 2 * _KERNEL_BLOCK // max(1, m * weights.shape[1]))
    scratch = getattr(_kernel_scratch, "arrays", None)
    if scratch is None or scratch[0].shape[1] != m or len(scratch[0]) < rows:
        scratch = _kernel_scratch.arrays = (np.empty((rows, m)), np.empty((rows, m)))
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


class ThinPlateSpline(_NonLinear):
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
    def n_params(cls, ndim: int, n_points: int = 0) -> int:
        """Effective parameters: the spline has as many as the landmarks' coordinates."""
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

    @classmethod
    def _estimate(cls, src, dst, w, smoothing: float = 0.0, bigwarp: bool = False, **kwargs):
        """``bigwarp=True``: parameterise as BigWarp does, with the exact spline built from
        the target (fixed) landmarks to the source (moving) ones; the returned source ->
        target map is its Newton inverse (an :class:`InverseTransform`)."""
        if kwargs:
            raise TypeError(f"unexpected options for ThinPlateSpline estimation: {sorted(kwargs)}")
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
        p = np.c_[np.ones(n), u]
        sv = np.linalg.svd(u, compute_uv=False)  # u is centred
        if sv[-1] <= 1e-10 * sv[0]:
            shape = "on one line (collinear)" if d == 2 else "in one plane (coplanar)"
            return FailedEstimation(f"the source landmarks lie {shape}; a thin-plate spline needs its affine part determined")
        k = _tps_kernel_sq(_sq_dists(u, u))
        if smoothing > 0:
            # weighted smoothing: less certain points (small weight) may deviate more
            k = k + smoothing * np.diag(w.max() / w)
        a = np.zeros((n + d + 1, n + d + 1))
        a[:n, :n] = k
        a[:n, n:] = p
        a[n:, :n] = p.T
        rhs = np.zeros((n + d + 1, d))
        rhs[:n] = dst
        try:
            sol = np.linalg.solve(a, rhs)
        except np.linalg.LinAlgError:
            return FailedEstimation("the thin-plate spline system is singular; check for duplicated landmarks")
        if not np.all(np.isfinite(sol)):
            return FailedEstimation("the thin-plate spline system is singular; check for duplicated landmarks")
        return cls(src, sol[:n], sol[n:], centre, scale, smoothing, _targets=dst)


def _rotvec_to_matrix(w: np.ndarray) -> np.ndarray:
    """Rodrigues' formula: rotation vector (radians) -> ``(3, 3)`` rotation matrix."""
    theta = float(np.linalg.norm(w))
    if theta < 1e-12:
        k = _skew(np.asarray(w, float)[None])[0]
        return np.eye(3) + k
    k = _skew((np.asarray(w, float) / theta)[None])[0]
    return np.eye(3) + np.sin(theta) * k + (1 - np.cos(theta)) * (k @ k)


def _matrix_to_rotvec(r: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(r).as_rotvec()


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

    def __init__(self, rotation: Any = None, scale: float = 1.0, translation: Any = (0.0, 0.0),
                 axial_scale: float = 1.0, axial_fitted: bool = False, *,
                 source_frame: str | None = None, target_frame: str | None = None):
        r = np.eye(3) if rotation is None else np.array(rotation, dtype=np.float64)
        if r.shape != (3, 3) or _orthogonality_error(r) > 1e-9 or np.linalg.det(r) < 0:
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
    def n_params(cls, ndim: int = 3, axial: bool = False) -> int:
        return 6 + int(axial)

    def param_jacobian(self, points: Any) -> np.ndarray:
        """``(N, 2, P)``: rotation vector (left perturbation), scale, translation[, axial scale]."""
        q = as_points(points, 3)
        u = self._rotated(q)
        n = len(q)
        cols = [-self._s * _skew(u)[:, :2, :], u[:, :2, None], np.broadcast_to(np.eye(2), (n, 2, 2))]
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
                  **kwargs):
        sols = cls._solve(src, dst, w, axial_scale, init, **kwargs)
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
            return _rotvec_to_matrix(p[:3]), np.exp(p[3]), p[4:6], k

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
            p0 = np.r_[_matrix_to_rotvec(rot), np.log(s0), t0] if not fit_k else np.r_[
                _matrix_to_rotvec(rot), np.log(s0), t0, np.log(k0)]
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


#: Estimable models by the names ``register(model=...)`` accepts.
MODELS: dict[str, type[Transform]] = {
    "identity": Identity,
    "translation": Translation,
    "rigid": Rigid,
    "similarity": Similarity,
    "affine": Affine,
    "projective": Projective,
    "polynomial": Polynomial,
    "tps": ThinPlateSpline,
    "rigid-projection": RigidProjection,
}


def transform_from_dict(d: dict[str, Any]) -> Transform:
    """Rebuild a transform from :meth:`Transform.to_dict` output (exactly).

    Raises :class:`TransformError` naming the problem for an unknown type or a malformed dict.
    """
    if not isinstance(d, dict) or "type" not in d:
        raise TransformError(f"a transform dict needs a 'type' key, got {d!r:.200}")
    cls = Transform._registry.get(d["type"])
    if cls is None or cls in (Transform, LinearTransform):
        raise TransformError(
            f"unknown transform type {d['type']!r}; known: {sorted(k for k in Transform._registry if k not in ('Transform', 'LinearTransform'))}"
        )
    try:
        tf = cls._from_params(d)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, TransformError):
            raise
        raise TransformError(f"malformed {d['type']} transform dict: {exc}") from None
    if "ndim" in d and tf.ndim != d["ndim"]:
        raise TransformError(f"transform dict says ndim={d['ndim']} but its parameters are {tf.ndim}-D")
    return tf

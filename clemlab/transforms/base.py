"""The transform base class, the failed-estimation value and the composition of transforms.

A transform maps points *forward*, from its source frame to its target frame (e.g. LM -> EM).
Transforms are immutable values: ``tf(points)``, ``tf.inverse``, ``a.then(b)`` (``a`` first),
``tf.to_dict()`` / :func:`~clemlab.transforms.transform_from_dict`.

Estimation (``Model.from_estimate(src, dst, weights=None, **options)``) never raises on bad
data (too few pairs, NaN, degenerate layout): it returns a falsy :class:`FailedEstimation` that
carries the reason. Programmer errors (arrays of the wrong shape, unknown options) raise.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..errors import RegistrationError, TransformError
from .points import as_points
from .serialisation import register_transform_type, transform_from_dict

__all__ = ["FailedEstimation", "Transform", "Composite"]


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


class Transform:
    """Base class: a map of ``(N, D)`` points from ``source_frame`` to ``target_frame``.

    Subclasses implement ``_apply``, ``inverse``, ``_params_dict`` and ``_from_params``; models
    that can be fitted also implement ``_estimate``, :meth:`n_params` and list their options in
    ``estimation_options``. Each subclass registers under its class name for
    :func:`~clemlab.transforms.transform_from_dict`; an abstract base opts out with
    ``class Base(Transform, register=False)``.
    """

    #: minimum pairs for estimation, by dimensionality
    min_points: ClassVar[dict[int, int]] = {2: 1, 3: 1}
    #: keyword options :meth:`from_estimate` accepts for this model (besides ``weights`` and the
    #: frame names); :meth:`n_params` and :meth:`required_points` take the same
    estimation_options: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, register: bool = True, **kwargs):
        super().__init_subclass__(**kwargs)
        if register:
            register_transform_type(cls)

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
    def n_params(cls, ndim: int, *, n_points: int = 0, **options) -> int:
        """Number of free parameters the model fits (for degrees of freedom and model comparison).

        Every model takes this same signature.

        Parameters
        ----------
        ndim : int
            Dimensionality of the source points (2 or 3).
        n_points : int
            Number of point pairs fitted. Only a model whose size grows with the data uses it
            (the thin-plate spline: one coefficient per landmark and axis).
        **options
            The model's estimation options, as :meth:`from_estimate` takes them (``order=3`` for
            :class:`~clemlab.transforms.Polynomial`, ``axial_scale=True`` for
            :class:`~clemlab.transforms.RigidProjection`); options that do not change the count
            are accepted and ignored.

        Returns
        -------
        int

        Raises
        ------
        TypeError
            For an option the model's estimation does not take.
        """
        raise NotImplementedError(f"{cls.__name__} is not an estimable model")

    @classmethod
    def required_points(cls, ndim: int, **options) -> int:
        """Fewest point pairs that determine the model (with estimation ``options``)."""
        cls._check_options(options)
        return cls.min_points[ndim]

    @classmethod
    def _check_options(cls, options: dict[str, Any]) -> None:
        """Refuse options that are not in ``estimation_options`` (a misspelt option would
        otherwise be silently ignored)."""
        unknown = sorted(set(options) - set(cls.estimation_options))
        if unknown:
            raise TypeError(f"unexpected options for {cls.__name__} estimation: {unknown}")

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
            The model's ``estimation_options`` (``allow_reflection`` for Rigid/Similarity,
            ``order`` for Polynomial, ...) and ``source_frame``, ``target_frame``.

        Returns
        -------
        Transform or FailedEstimation
            The fitted transform, or a falsy :class:`FailedEstimation` saying why the data
            do not determine it (too few pairs, NaN/inf, degenerate layout).
        """
        frames = {k: kwargs.pop(k, None) for k in ("source_frame", "target_frame")}
        cls._check_options(kwargs)
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
    def _estimate(cls, src, dst, w, **options):  # pragma: no cover - abstract
        """Fit to checked ``(N, D)`` float arrays and weights ``w`` (N,); ``options`` are
        already checked against ``estimation_options``."""
        raise NotImplementedError


def _dict_equal(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_dict_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_dict_equal(x, y) for x, y in zip(a, b))
    return a == b


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

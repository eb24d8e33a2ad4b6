"""Smooth non-linear maps: their base class and their inverse by Newton's method.

A non-linear model (:class:`~clemlab.transforms.Polynomial`,
:class:`~clemlab.transforms.ThinPlateSpline`) has an analytic spatial Jacobian and no
closed-form inverse; :class:`InverseTransform` evaluates the inverse point by point, starting
from a model of the same kind fitted the other way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import TransformError
from .base import Transform
from .points import as_points
from .serialisation import transform_from_dict

__all__ = ["NonLinearTransform", "InverseTransform"]


class NonLinearTransform(Transform, register=False):
    """Base of smooth non-linear maps with an analytic Jacobian and a Newton inverse.

    Subclasses implement ``_jacobian`` (on checked ``(N, D)`` points) and ``_reverse_guess``.
    """

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

    def __init__(self, forward: NonLinearTransform, *, source_frame: str | None = None,
                 target_frame: str | None = None):
        if not isinstance(forward, NonLinearTransform):
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

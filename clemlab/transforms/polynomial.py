"""2-D polynomial maps of order 2 or 3, fitted by weighted linear least squares.

Coordinates are normalised (centre and RMS spread of the fitted source points, kept with the
coefficients) so that large stage coordinates stay well conditioned.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import TransformError
from .base import FailedEstimation
from .linear import Affine
from .nonlinear import NonLinearTransform
from .points import as_points

__all__ = ["Polynomial", "monomial_exponents"]

#: Orders a :class:`Polynomial` may have.
ORDERS = (2, 3)


def monomial_exponents(order: int) -> list[tuple[int, int]]:
    """Exponents ``(i, j)`` of the monomials ``u^i v^j`` up to total degree ``order``.

    In the coefficient order of :class:`Polynomial`: ``1, u, v, u², uv, v², u³, ...``.
    """
    return [(i - j, j) for i in range(order + 1) for j in range(i + 1)]


def _checked_order(order: Any) -> int:
    if order not in ORDERS:
        raise TransformError(f"polynomial order must be 2 or 3, got {order!r}")
    return int(order)


def _points_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for many points ``a`` (P, K) and a small coefficient matrix ``b`` (K, D).

    Computed in blocks of rows of at most 32768 multiply-adds (rows x K x D): products that
    small stay in the calling thread of a multi-threaded BLAS. The warp evaluates transforms inside dask's worker
    threads, which already use every core; BLAS threads started from each of them would compete
    with the workers for the cores.
    """
    rows = max(1, 32768 // max(1, a.shape[1] * b.shape[1]))
    if a.shape[0] <= rows:
        return a @ b
    out = np.empty((a.shape[0], b.shape[1]), np.result_type(a, b))
    for i in range(0, a.shape[0], rows):
        np.matmul(a[i : i + rows], b, out=out[i : i + rows])
    return out


class Polynomial(NonLinearTransform):
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
    estimation_options = ("order",)

    def __init__(self, coefficients: Any, order: int = 2, centre: Any = (0.0, 0.0), scale: float = 1.0,
                 *, source_frame: str | None = None, target_frame: str | None = None):
        order = _checked_order(order)
        coef = np.array(coefficients, dtype=np.float64)
        m = len(monomial_exponents(order))
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
        return np.stack([u[:, 0] ** i * u[:, 1] ** j for i, j in monomial_exponents(order or self._order)], axis=1)

    def _apply(self, pts):
        return _points_matmul(self._design(pts), self._coef.T)

    def _jacobian(self, pts):
        u = (pts - self._centre) / self._scale
        du = np.stack([i * u[:, 0] ** max(i - 1, 0) * u[:, 1] ** j for i, j in monomial_exponents(self._order)], 1)
        dv = np.stack([j * u[:, 0] ** i * u[:, 1] ** max(j - 1, 0) for i, j in monomial_exponents(self._order)], 1)
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
    def n_params(cls, ndim: int, *, n_points: int = 0, **options) -> int:
        cls._check_options(options)
        return 2 * len(monomial_exponents(_checked_order(options.get("order", 2))))

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
    def required_points(cls, ndim: int, **options) -> int:
        cls._check_options(options)
        order = _checked_order(options.get("order", 2))
        return len(monomial_exponents(order)) if ndim == 2 else 1  # 3-D: refused by _estimate

    @classmethod
    def _estimate(cls, src, dst, w, order=2):
        if src.shape[1] != 2:
            return FailedEstimation("polynomial transforms are 2-D only; use affine or tps in 3-D")
        centre = src.mean(axis=0)
        scale = float(np.sqrt(np.mean(np.sum((src - centre) ** 2, axis=1))))
        if not scale > 0:
            return FailedEstimation("all source landmarks are at the same position")
        probe = cls(np.zeros((2, len(monomial_exponents(order)))), order, centre, scale)
        a = probe._design(src) * np.sqrt(w)[:, None]
        sv = np.linalg.svd(a, compute_uv=False)
        if sv[-1] <= 1e-10 * sv[0]:
            return FailedEstimation(
                f"the landmarks do not determine an order-{order} polynomial (they lie on a "
                "low-order curve or too few are distinct); add landmarks spread over the field"
            )
        coef, *_ = np.linalg.lstsq(a, dst * np.sqrt(w)[:, None], rcond=None)
        return cls(coef.T, order, centre, scale)

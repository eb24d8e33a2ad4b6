"""The projective model (homography): a linear model followed by a perspective division.

Fitted by the normalised direct linear transform (Hartley), then refined to the weighted
geometric least-squares optimum when there are more pairs than the minimum.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import TransformError
from .base import FailedEstimation
from .linear import LinearTransform
from .points import as_points

__all__ = ["Projective"]


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
    def n_params(cls, ndim: int, *, n_points: int = 0, **options) -> int:
        cls._check_options(options)
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
    def _estimate(cls, src, dst, w):
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

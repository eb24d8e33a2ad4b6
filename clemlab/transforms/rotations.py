"""Rotation matrices and their small parameterisations (angle, rotation vector).

Shared by the linear models (rotation Jacobians of :class:`~clemlab.transforms.Rigid` and
:class:`~clemlab.transforms.Similarity`) and the 3-D -> 2-D
:class:`~clemlab.transforms.RigidProjection`. Rotations act on points in ``(x, y[, z])`` column
order; angles are in radians, counter-clockwise in ``(x, y)``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["rotation_matrix_2d", "orthogonality_error", "cross_product_matrices", "rotvec_to_matrix",
           "matrix_to_rotvec"]


def rotation_matrix_2d(angle: float) -> np.ndarray:
    """``(2, 2)`` rotation by ``angle`` radians, counter-clockwise in ``(x, y)``."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def orthogonality_error(r: np.ndarray) -> float:
    """Largest entry of ``|R^T R - I|``: 0 for an orthogonal ``(D, D)`` matrix ``R``."""
    return float(np.max(np.abs(r.T @ r - np.eye(r.shape[0]))))


def cross_product_matrices(v: np.ndarray) -> np.ndarray:
    """Cross-product matrices ``[v]x`` of ``(N, 3)`` vectors -> ``(N, 3, 3)``.

    ``[v]x @ u == np.cross(v, u)``; also the generator of a small rotation about ``v``.
    """
    z = np.zeros(len(v))
    return np.stack([np.stack([z, -v[:, 2], v[:, 1]], -1),
                     np.stack([v[:, 2], z, -v[:, 0]], -1),
                     np.stack([-v[:, 1], v[:, 0], z], -1)], axis=1)


def rotvec_to_matrix(w: np.ndarray) -> np.ndarray:
    """Rodrigues' formula: rotation vector ``w`` (axis times angle, radians) -> ``(3, 3)`` matrix.

    Below an angle of 1e-12 rad the first-order ``I + [w]x`` is used (exact to rounding there).
    """
    theta = float(np.linalg.norm(w))
    if theta < 1e-12:
        k = cross_product_matrices(np.asarray(w, float)[None])[0]
        return np.eye(3) + k
    k = cross_product_matrices((np.asarray(w, float) / theta)[None])[0]
    return np.eye(3) + np.sin(theta) * k + (1 - np.cos(theta)) * (k @ k)


def matrix_to_rotvec(r: np.ndarray) -> np.ndarray:
    """``(3, 3)`` rotation matrix -> rotation vector ``(3,)`` (radians), via SciPy."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(r).as_rotvec()

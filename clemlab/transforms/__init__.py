"""Coordinate transforms over points in physical units, and the one place axes are swapped.

Points are ``(N, D)`` float arrays in µm with columns ``(x, y[, z])``: the order of
scikit-image transforms, matplotlib clicks, BigWarp and ec-CLEM. Arrays are indexed
``(z, y, x)`` (row-major). :func:`xy_to_rc` / :func:`rc_to_xy` and the pixel-grid helpers
are the only code in clemlab that converts between the two orders or between pixels and
physical units.

A transform maps points *forward*, from its source frame to its target frame (e.g. LM -> EM).
Transforms are immutable values: ``tf(points)``, ``tf.inverse``, ``a.then(b)`` (``a`` first),
``tf.to_dict()`` / :func:`transform_from_dict`, ``tf.matrix`` for linear models.

Estimation (``Model.from_estimate(src, dst, weights=None, **options)``) never raises on bad
data (too few pairs, NaN, degenerate layout): it returns a falsy :class:`FailedEstimation` that
carries the reason. Programmer errors (arrays of the wrong shape, unknown options) raise.
``Model.n_params(ndim, n_points=..., **options)`` counts any model's free parameters.

Modules, one job each:

``points``
    Point arrays, axis order, pixel <-> physical conversions.
``base``
    :class:`Transform` (the base class), :class:`FailedEstimation`, :class:`Composite`.
``rotations``
    Rotation matrices, rotation vectors and cross-product matrices.
``linear``
    :class:`LinearTransform` and the affine family: :class:`Identity`, :class:`Translation`,
    :class:`Rigid`, :class:`Similarity`, :class:`Affine` (Umeyama fitting).
``projective``
    :class:`Projective` (homography).
``nonlinear``
    The base of smooth non-linear maps and :class:`InverseTransform` (Newton inversion).
``polynomial``
    :class:`Polynomial` (2-D, order 2 or 3).
``thin_plate_spline``
    :class:`ThinPlateSpline` and its blocked kernel sums.
``rigid_projection``
    :class:`RigidProjection` (3-D LM stack -> 2-D EM/FIB image).
``serialisation``
    The registry of transform types and :func:`transform_from_dict`.
``models``
    :data:`MODELS`, the estimable models by name.
"""

from __future__ import annotations

from .base import Composite, FailedEstimation, Transform
from .linear import Affine, Identity, LinearTransform, Rigid, Similarity, Translation
from .models import MODELS
from .nonlinear import InverseTransform
from .points import (
    POINT_AXES,
    as_points,
    index_to_physical_matrix,
    physical_to_pixel,
    pixel_to_physical,
    rc_to_xy,
    xy_to_rc,
)
from .polynomial import Polynomial
from .projective import Projective
from .rigid_projection import RigidProjection
from .rotations import rotation_matrix_2d
from .serialisation import transform_from_dict
from .thin_plate_spline import ThinPlateSpline

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
    "rotation_matrix_2d",
]

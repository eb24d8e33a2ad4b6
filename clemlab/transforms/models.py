"""The estimable models by the names ``register(model=...)`` accepts."""

from __future__ import annotations

from .base import Transform
from .linear import Affine, Identity, Rigid, Similarity, Translation
from .polynomial import Polynomial
from .projective import Projective
from .rigid_projection import RigidProjection
from .thin_plate_spline import ThinPlateSpline

__all__ = ["MODELS"]

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

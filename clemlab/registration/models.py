"""The models :func:`~clemlab.registration.register` can fit: names, classes, parameter counts.

A model is named by a string (``"affine"``, ``"polynomial3"``, ``"tps"``, ...) or given as a
:class:`~clemlab.transforms.Transform` subclass. Names are case-blind and ignore ``_``/``-``;
``"polynomial2"``/``"polynomial3"`` imply ``order=``, ``"homography"`` means
``"projective"`` and ``"thin-plate-spline"`` means ``"tps"``.
"""

from __future__ import annotations

from .. import transforms as _tf
from ..errors import RegistrationError

__all__ = ["MODEL_ORDER"]

#: Models from simplest to most flexible (``compare_models`` prefers the earlier).
MODEL_ORDER = ("translation", "rigid", "similarity", "affine", "projective", "polynomial2",
               "polynomial3", "tps")


def model_class(model: str | type) -> tuple[type[_tf.Transform], dict]:
    """Transform class and the options a model name implies (``"polynomial3"`` -> order 3).

    Raises
    ------
    RegistrationError
        For a name no transform answers to; the message lists the known models.
    """
    if isinstance(model, type) and issubclass(model, _tf.Transform):
        return model, {}
    key = str(model).lower().replace("_", "").replace("-", "")
    aliases = {"polynomial2": ("polynomial", {"order": 2}), "polynomial3": ("polynomial", {"order": 3}),
               "thinplatespline": ("tps", {}), "homography": ("projective", {}),
               "rigidprojection": ("rigid-projection", {})}
    key, opts = aliases.get(key, (key, {}))
    if key not in _tf.MODELS:
        raise RegistrationError(f"unknown model {model!r}; choose one of {list(MODEL_ORDER)}")
    return _tf.MODELS[key], dict(opts)


def model_name(cls: type[_tf.Transform], options: dict) -> str:
    """The name a fitted model is reported and saved under (the inverse of :func:`model_class`)."""
    if cls is _tf.Polynomial:
        return f"polynomial{options.get('order', 2)}"
    if cls is _tf.ThinPlateSpline:
        return "tps"
    if cls is _tf.RigidProjection:
        return "rigid-projection"
    return cls.__name__.lower()


# Number of parameters a model fits to ``n`` pairs of ``ndim``-D points with these options.
def _n_params(cls, ndim: int, n: int, options: dict) -> int:
    return cls.n_params(ndim, n_points=n, **options)

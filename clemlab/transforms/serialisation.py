"""Transforms as plain JSON-able dicts: the registry of transform types and its reader.

``tf.to_dict()`` gives ``{"type": <class name>, "ndim", "source_frame", "target_frame",
**parameters}``; :func:`transform_from_dict` rebuilds the same transform exactly. Every
:class:`~clemlab.transforms.Transform` subclass registers its class name here when it is defined
(also subclasses written outside clemlab), so this module needs to know no model. An abstract
base opts out with ``class Base(Transform, register=False)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import TransformError

if TYPE_CHECKING:
    from .base import Transform

__all__ = ["register_transform_type", "transform_from_dict"]

#: Transform classes by their ``type`` name. One entry per class definition, so its size is
#: bounded by the code, not by the data; a later class of the same name replaces the earlier.
_TYPES: dict[str, type[Transform]] = {}


def register_transform_type(cls: type[Transform]) -> None:
    """Make ``cls`` readable by :func:`transform_from_dict` under ``cls.__name__``."""
    _TYPES[cls.__name__] = cls


def transform_from_dict(d: dict[str, Any]) -> Transform:
    """Rebuild a transform from :meth:`Transform.to_dict` output (exactly).

    Raises :class:`~clemlab.errors.TransformError` naming the problem for an unknown type or a
    malformed dict.
    """
    if not isinstance(d, dict) or "type" not in d:
        raise TransformError(f"a transform dict needs a 'type' key, got {d!r:.200}")
    cls = _TYPES.get(d["type"])
    if cls is None:
        raise TransformError(f"unknown transform type {d['type']!r}; known: {sorted(_TYPES)}")
    try:
        tf = cls._from_params(d)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, TransformError):
            raise
        raise TransformError(f"malformed {d['type']} transform dict: {exc}") from None
    if "ndim" in d and tf.ndim != d["ndim"]:
        raise TransformError(f"transform dict says ndim={d['ndim']} but its parameters are {tf.ndim}-D")
    return tf

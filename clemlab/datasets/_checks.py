"""Argument checks shared by the synthetic samples: each returns the clean value or raises
:class:`~clemlab.errors.ImageError` naming the argument, what it must be and what it got."""

from __future__ import annotations

import math
import numbers
from typing import Any

from ..errors import ImageError


def check_seed(value: Any) -> int:
    """A non-negative integer random seed."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ImageError(f"seed must be a non-negative integer, got {value!r}")
    return int(value)


def check_positive(value: Any, name: str) -> float:
    """A positive, finite real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ImageError(f"{name} must be a positive number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ImageError(f"{name} must be a positive, finite number, got {value!r}")
    return v


def check_non_negative(value: Any, name: str) -> float:
    """A non-negative, finite real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ImageError(f"{name} must be a non-negative number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ImageError(f"{name} must be a non-negative, finite number, got {value!r}")
    return v


def check_int(value: Any, name: str, minimum: int) -> int:
    """An integer of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ImageError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise ImageError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_shape(value: Any, name: str, minimum: int) -> tuple[int, int]:
    """An image shape ``(rows, columns)``, each at least ``minimum``."""
    try:
        items = tuple(value)
    except TypeError:
        raise ImageError(f"{name} must be a pair (rows, columns), got {value!r}") from None
    if len(items) != 2:
        raise ImageError(f"{name} must be a pair (rows, columns), got {value!r}")
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) < minimum:
            raise ImageError(f"{name} must hold two integers >= {minimum}, got {value!r}")
        out.append(int(v))
    return out[0], out[1]


def check_pair(value: Any, name: str) -> tuple[float, float]:
    """A pair of finite numbers ``(x, y)``."""
    try:
        items = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ImageError(f"{name} must be a pair of numbers (x, y), got {value!r}") from None
    if len(items) != 2 or not all(math.isfinite(v) for v in items):
        raise ImageError(f"{name} must be a pair of finite numbers (x, y), got {value!r}")
    return items[0], items[1]

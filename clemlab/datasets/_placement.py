"""Random placement of well-separated points (beads, vesicles, targets) in a box."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def place_points(rng: np.random.Generator, n: int, lo, hi, min_dist: float,
                 existing: Sequence = (), accept: Callable[[np.ndarray], np.ndarray] | None = None,
                 max_tries: int | None = None) -> np.ndarray:
    """Up to ``n`` uniform random points in the box ``[lo, hi]``, each at least ``min_dist``
    from every other and from ``existing``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the candidates (``max_tries`` of them are drawn at once, so the stream
        consumed does not depend on how many are kept).
    n : int
        Number of points wanted; fewer are returned when they do not fit.
    lo, hi : array-like, shape (D,)
        Corners of the box, µm, in the points' column order (e.g. ``(x, y[, z])``).
    min_dist : float
        Smallest distance between two points, µm.
    existing : sequence of points
        Points already placed, which the new ones keep ``min_dist`` from (not returned).
    accept : callable, optional
        ``accept(candidates (T, D)) -> bool mask (T,)``: candidates it rejects are skipped.
    max_tries : int, optional
        Number of candidates drawn; default ``60 n + 200``.

    Returns
    -------
    numpy.ndarray, shape (K, D)
        The new points, K <= n, in the order placed.
    """
    placed = [np.asarray(p, float) for p in existing]
    start = len(placed)
    tries = max_tries if max_tries is not None else 60 * n + 200
    d = np.size(lo)
    cands = rng.uniform(lo, hi, (tries, d))
    ok = accept(cands) if accept is not None else np.ones(tries, bool)
    arr = np.array(placed).reshape(-1, d)
    for p, good in zip(cands, ok):
        if len(placed) - start >= n:
            break
        if not good:
            continue
        if arr.shape[0] and np.min(np.linalg.norm(arr - p, axis=1)) < min_dist:
            continue
        placed.append(p)
        arr = np.vstack([arr, p])
    return np.array(placed[start:]).reshape(-1, d)

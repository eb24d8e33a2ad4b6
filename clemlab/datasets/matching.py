"""Matching trials: two bead point sets related by an unknown similarity (optionally
mirrored), with beads missing on one side and spurious particles on the other, as
automatic fiducial matching meets them; the true pairing is known."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import transforms as _tf

__all__ = ["MatchingTrial", "matching_trial"]


@dataclass(frozen=True)
class MatchingTrial:
    """Two bead point sets related by an unknown similarity, with extras on both sides.

    Attributes
    ----------
    lm : numpy.ndarray, shape (N, 2)
        LM bead positions, µm, ``(x, y)``, with localisation noise.
    em : numpy.ndarray, shape (M, 2)
        EM particle positions, µm: a random subset of the beads mapped through the truth,
        plus spurious particles, shuffled, with localisation noise.
    truth : dict
        ``{lm row: em row}`` for the beads seen in both.
    mirrored : bool
        Whether the LM set was mirrored (x -> -x) before the similarity.
    transform : clemlab.transforms.Similarity
        The similarity applied after the optional mirror.
    """

    lm: np.ndarray
    em: np.ndarray
    truth: dict
    mirrored: bool
    transform: _tf.Similarity

    def true_map(self, points: Any) -> np.ndarray:
        """Noise-free LM -> EM map of ``(N, 2)`` points (µm)."""
        flip = np.diag([-1.0, 1.0]) if self.mirrored else np.eye(2)
        return self.transform(np.asarray(points, float) @ flip.T)


def matching_trial(seed: int, n: int = 200, mirror: bool | None = None, noise: float = 0.02,
                   field: float = 200.0, shift: float = 100.0) -> MatchingTrial:
    """A seeded matching problem: ``n`` LM beads in a ``field`` µm square; the EM sees a random
    60-80 % of them through a similarity (rotation 0-360°, scale 0.5-2x, translation up to
    ``shift`` µm, mirrored when ``mirror`` or, if None, at random) plus 20-40 % spurious
    particles; ``noise`` µm of localisation noise per axis on both sides."""
    rng = np.random.default_rng(seed)
    lm = rng.uniform(0, field, (n, 2))
    mirrored = bool(rng.random() < 0.5) if mirror is None else bool(mirror)
    tf = _tf.Similarity(scale=rng.uniform(0.5, 2), rotation=rng.uniform(0, 2 * np.pi),
                        translation=rng.uniform(-shift, shift, 2))
    k = int(rng.uniform(0.6, 0.8) * n)
    seen = rng.permutation(n)[:k]
    trial = MatchingTrial(lm, lm, {}, mirrored, tf)
    em_true = trial.true_map(lm[seen])
    spurious = rng.uniform(em_true.min(0), em_true.max(0), (int(rng.uniform(0.2, 0.4) * k), 2))
    em = np.vstack([em_true, spurious])
    perm = rng.permutation(len(em))
    where = np.argsort(perm)  # the em row holding em_true[q] is where[q]
    truth = {int(seen[q]): int(where[q]) for q in range(k)}
    return MatchingTrial(lm + rng.normal(0, noise, lm.shape), em[perm] + rng.normal(0, noise, em.shape),
                         truth, mirrored, tf)

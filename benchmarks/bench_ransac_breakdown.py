"""Does ``register(..., robust=True)`` ever return a wrong transform without a word?

For each outlier fraction 0-80 % (step 10 %), ``--trials`` seeded trials: ``--pairs`` landmark
pairs uniform in a 50 µm field, a random true affine map (rotation, scale 0.9-1.1, shear up
to 3 %, shift), 30 nm localisation noise per axis on the targets, and the given fraction of
pairs made gross outliers: their targets replaced by positions uniform over the mapped field
(a bead paired with the wrong one). Each trial is fitted with ``register(lms, "affine",
robust=True)``, the noise either estimated (``noise=estimated``) or given (``fle=``).

A trial is

* ``correct``: a transform is returned and at each of 50 points of the field its error is
  below ``--tolerance`` (default 0.25 µm, about the LM resolution) or within the 99.9 %
  ellipse of its own predicted error (a fit to few inliers that says it is uncertain);
* ``refused``: ``register`` raised ``RegistrationError`` (it names the problem: no consensus
  distinguishable from chance);
* ``warned``: a wrong transform is returned with a warning that doubts it (any warning but
  the plain list of rejected pairs);
* ``silent``: a wrong transform is returned with no such warning. The target is 0 at every
  fraction.

Run: ``python benchmarks/bench_ransac_breakdown.py [--trials 100] [--pairs 20] [--seed 0]``
(about a minute on a loaded 2-core machine).
"""

from __future__ import annotations

import _checkout  # noqa: F401  (first: this checkout's clemlab, not an installed copy)

import argparse
import time

import numpy as np
from scipy.stats import chi2, f

import clemlab as cl
from clemlab import transforms as T

FIELD = 50.0
SIGMA = 0.03


def one_trial(rng: np.random.Generator, n: int, fraction: float, given: bool, tolerance: float, seed: int) -> str:
    """Outcome of one seeded trial: ``correct``, ``refused``, ``warned`` or ``silent``."""
    angle, scale, shear = rng.uniform(-np.pi, np.pi), rng.uniform(0.9, 1.1), rng.uniform(-0.03, 0.03)
    c, s = np.cos(angle), np.sin(angle)
    lin = scale * np.array([[c, -s], [s, c]]) @ np.array([[1.0, shear], [0.0, 1.0]])
    truth = T.Affine(matrix=np.r_[np.c_[lin, rng.uniform(-20, 20, 2)], [[0, 0, 1]]])
    src = rng.uniform(0, FIELD, (n, 2))
    dst = truth(src) + rng.normal(0, SIGMA, src.shape)
    bad = rng.choice(n, int(round(fraction * n)), replace=False)
    corners = truth(np.array([[0, 0], [FIELD, 0], [0, FIELD], [FIELD, FIELD]]))
    dst[bad] = rng.uniform(corners.min(axis=0), corners.max(axis=0), (len(bad), 2))
    lms = cl.Landmarks.from_points(src, dst)
    try:
        reg = cl.register(lms, "affine", robust=True, seed=seed,
                          fle=SIGMA * np.sqrt(2) if given else None)
    except cl.RegistrationError:
        return "refused"
    q = rng.uniform(0, FIELD, (50, 2))
    mapped = reg.map_points(q)
    err = np.asarray(mapped) - truth(q)
    maha2 = np.einsum("ni,nij,nj->n", err, np.linalg.inv(mapped.covariance), err)
    # within its own 99.9 % error ellipse (widened, like MappedPoints.ellipses, for a noise
    # level estimated from few residual degrees of freedom)
    bound = chi2.ppf(0.999, 2) if not np.isfinite(mapped.dof) else 2 * f.ppf(0.999, 2, mapped.dof)
    honest = maha2 <= bound
    if np.all((np.linalg.norm(err, axis=1) < tolerance) | honest):
        return "correct"
    doubts = [w for w in reg.warnings if not w.startswith("RANSAC rejected")]
    return "warned" if doubts else "silent"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tolerance", type=float, default=0.25, help="largest error of a correct fit, µm")
    args = ap.parse_args()
    t0 = time.perf_counter()
    outcomes = ("correct", "refused", "warned", "silent")
    print(f"register(..., 'affine', robust=True): {args.pairs} pairs, 30 nm noise, {args.trials} trials "
          f"per row; rates in % of trials")
    print(f"{'noise':>10} {'outliers %':>10} " + " ".join(f"{o:>8}" for o in outcomes))
    total_silent = 0
    for given in (False, True):
        for step in range(9):
            fraction = step / 10
            counts = dict.fromkeys(outcomes, 0)
            for t in range(args.trials):
                rng = np.random.default_rng([args.seed, step, t, given])
                counts[one_trial(rng, args.pairs, fraction, given, args.tolerance, seed=t)] += 1
            total_silent += counts["silent"]
            print(f"{'given' if given else 'estimated':>10} {100 * fraction:10.0f} "
                  + " ".join(f"{100 * counts[o] / args.trials:8.1f}" for o in outcomes))
    print(f"silent wrong answers in all rows: {total_silent} (target 0); "
          f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

"""Do mapped targets fall inside their predicted 95 % error ellipses 95 % of the time?

Acceptance (issue 7): on synthetic data with known ground truth, coverage 95 % +- 3 % over
1,000 seeded trials. Each trial: a random layout of ``N`` landmark pairs in a 50 µm field,
a known true LM -> EM transform (random rotation, scale 0.9-1.1 per axis, shear for affine),
localisation noise 30 nm per axis on the LM side and 5 nm on the EM side, a fit with
:func:`clemlab.register`, then one target per trial at a random position inside the field,
mapped with :func:`clemlab.map_targets`:

* *exact* target: its LM position is known exactly (a point chosen by the user); the
  ellipse is the mapping error only (``include_target_fle=False``) and the truth is
  ``true_tf(q)``;
* *measured* target: its LM position is itself a localisation (30 nm per axis, like a
  detected spot); the ellipse adds that error (``include_target_fle=True``), and the mapped
  *measured* position is compared with the true position ``true_tf(q_true)``.

"Inside" = inside the 95 % ellipse that ``map_targets`` reports (its axes and angle). The
noise model is either *known* (per-pair sigmas given to the landmarks) or *estimated* from
the residuals (the usual case: no sigmas); then the ellipse uses Hotelling's F quantile,
which accounts for the scatter of the noise estimate itself. Also printed: the coverage of a *naive* ellipse that
ignores the target's own error for a measured target (what the flag is for).

Run: ``python benchmarks/bench_targets.py [--trials 1000] [--n 10]``.
"""

from __future__ import annotations

import _checkout  # noqa: F401  (first: this checkout's clemlab, not an installed copy)

import argparse
import time

import numpy as np

from clemlab import Landmarks, map_targets, register, targets_from_points
from clemlab import transforms as T

SIGMA_SRC, SIGMA_DST, FIELD = 0.030, 0.005, 50.0


def true_transform(rng, model):
    ang = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(ang), np.sin(ang)
    rot = np.array([[c, -s], [s, c]])
    if model == "affine":
        lin = rot @ np.diag(rng.uniform(0.9, 1.1, 2)) @ np.array([[1, rng.uniform(-0.05, 0.05)], [0, 1]])
    elif model == "similarity":
        lin = rot * rng.uniform(0.9, 1.1)
    else:
        lin = rot
    m = np.eye(3)
    m[:2, :2] = lin
    m[:2, 2] = rng.uniform(-100, 100, 2)
    return T.Affine(m)


def inside(m, truth):
    """Is the truth inside the 95 % ellipse that map_targets reports (axes and angle)?"""
    d = m[["x", "y"]].to_numpy(float) - truth
    ang = np.radians(m["ellipse_angle"].to_numpy(float))
    u = d[:, 0] * np.cos(ang) + d[:, 1] * np.sin(ang)
    v = -d[:, 0] * np.sin(ang) + d[:, 1] * np.cos(ang)
    return (u / m["ellipse_major"].to_numpy(float)) ** 2 + (v / m["ellipse_minor"].to_numpy(float)) ** 2 <= 1


def run(model, n, trials, known_noise):
    hits = {"exact": 0, "measured": 0, "measured, naive": 0}
    for seed in range(trials):
        rng = np.random.default_rng(10_000 + seed)
        tf = true_transform(rng, model)
        src_true = rng.uniform(0, FIELD, (n, 2))
        src = src_true + rng.normal(0, SIGMA_SRC, (n, 2))
        dst = tf(src_true) + rng.normal(0, SIGMA_DST, (n, 2))
        kw = {"sigma_src": SIGMA_SRC, "sigma_dst": SIGMA_DST} if known_noise else {}
        reg = register(Landmarks.from_points(src, dst, **kw), model=model)
        q_true = rng.uniform(0.1 * FIELD, 0.9 * FIELD, (1, 2))
        q_meas = q_true + rng.normal(0, SIGMA_SRC, (1, 2))
        truth = tf(q_true)
        exact = map_targets(reg, targets_from_points(q_true))
        meas = map_targets(reg, targets_from_points(q_meas, sigma=SIGMA_SRC))
        naive = map_targets(reg, targets_from_points(q_meas), include_target_fle=False)
        hits["exact"] += int(inside(exact, truth)[0])
        hits["measured"] += int(inside(meas, truth)[0])
        hits["measured, naive"] += int(inside(naive, truth)[0])
    return {k: v / trials for k, v in hits.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--n", type=int, default=10, help="landmark pairs per trial")
    args = ap.parse_args()
    print(f"coverage of the 95 % error ellipse, {args.trials} seeded trials, N = {args.n} landmarks, "
          f"FLE {SIGMA_SRC * 1e3:.0f} nm (LM) / {SIGMA_DST * 1e3:.0f} nm (EM) per axis; target 95 % +- 3 %")
    print(f"{'model':<11} {'noise':<10} {'exact':>7} {'measured':>9} {'naive':>7}  {'time':>6}  pass")
    ok = True
    for model in ("rigid", "similarity", "affine"):
        for known in (True, False):
            t0 = time.perf_counter()
            cov = run(model, args.n, args.trials, known)
            dt = time.perf_counter() - t0
            good = all(abs(cov[k] - 0.95) <= 0.03 for k in ("exact", "measured"))
            ok &= good
            print(f"{model:<11} {'known' if known else 'estimated':<10} {cov['exact']:7.1%} {cov['measured']:9.1%} "
                  f"{cov['measured, naive']:7.1%}  {dt:5.1f}s  {'yes' if good else 'NO'}")
    print("all within 95 % +- 3 %:", "yes" if ok else "NO")


if __name__ == "__main__":
    main()

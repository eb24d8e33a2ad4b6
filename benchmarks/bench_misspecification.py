"""Do the predicted 95 % error ellipses hold, and does clemlab say so when the model is wrong?

For each fitted model (similarity, affine, TPS), a *correct* truth (one the model can
represent) and a *misspecified* one, ``--trials`` seeded trials each: 20 landmark pairs
uniform in a 50 µm field, localisation noise 30 nm per axis on the source (LM) side and 5 nm
on the target (EM) side, and 20 held-out targets uniform in the field. The noise is either
stated (``sigma_src``/``sigma_dst`` on the landmarks: ``given``) or estimated from the
residuals (``estimated``).

Truths (a random rotation, scale 0.9-1.1 and shift under each):

* similarity: correct = a similarity; misspecified = an affine with 3 % shear (the issue's
  example);
* affine: correct = an affine with up to 3 % shear; misspecified = that affine plus a
  quadratic distortion of 0.5 µm at the field's edge;
* TPS: correct = the thin-plate spline through the true landmarks of a bent affine map (the
  fit could be exact without noise); misspecified = an affine plus a Gaussian bump (0.3 µm
  high, 4 µm wide) at a random place, narrower than the landmark spacing.

Columns: ``coverage`` = share of held-out targets inside their predicted 95 % ellipse
(``Registration.map_points(...).covariance``, the ellipses' own quantile; target 95 %, and
>= 90 % where the model is wrong unless it warns); ``warn`` = share of trials whose warnings
say the model cannot explain the landmarks (lack-of-fit test; target >= 90 % for
misspecified rows when the coverage falls short, about 0.1 % for correct rows; for the
TPS, the leave-one-out test's warning); ``flagged`` = share of pairs the leave-one-out
outlier flag marks ("far off"; target <= 1 % on correct rows, where every pair is clean);
``inflation`` = mean error inflation applied (an exact TPS is never inflated: it adds the
error between landmarks that its left-out errors show, see
``clemlab.registration.lack_of_fit``).

Run: ``python benchmarks/bench_misspecification.py [--trials 200] [--seed 0]``
[--models tps ...] (a few CPU-minutes at 200 trials, mostly the TPS bootstrap; ``--trials 50``
for a quick look).
"""

from __future__ import annotations

import _checkout  # noqa: F401  (first: this checkout's clemlab, not an installed copy)

import argparse
import time

import numpy as np
from scipy.stats import chi2, f

import clemlab as cl
from clemlab import transforms as T

FIELD, N_PAIRS, N_TARGETS = 50.0, 20, 20
SIGMA_SRC, SIGMA_DST = 0.03, 0.005


def _linear(rng: np.random.Generator, shear: float) -> np.ndarray:
    angle, scale = rng.uniform(-np.pi, np.pi), rng.uniform(0.9, 1.1)
    c, s = np.cos(angle), np.sin(angle)
    return scale * np.array([[c, -s], [s, c]]) @ np.array([[1.0, shear], [0.0, 1.0]])


def make_truth(rng: np.random.Generator, model: str, wrong: bool, src: np.ndarray):
    """A function ``(N, 2) -> (N, 2)`` (µm) mapping source points to their true targets."""
    shift = rng.uniform(-20, 20, 2)
    if model == "similarity":
        lin = _linear(rng, 0.03 * rng.choice([-1, 1]) if wrong else 0.0)
        return lambda q: q @ lin.T + shift
    lin = _linear(rng, rng.uniform(-0.03, 0.03))
    if model == "affine":
        if not wrong:
            return lambda q: q @ lin.T + shift
        amp = 0.5 * rng.choice([-1, 1], 2)

        def bent(q):
            u = (q - FIELD / 2) / (FIELD / 2)
            return q @ lin.T + shift + amp * np.c_[u[:, 0] ** 2, u[:, 0] * u[:, 1]]
        return bent
    if not wrong:  # the spline through the true landmarks of a bent map
        u = (src - FIELD / 2) / (FIELD / 2)
        bend = 0.3 * np.c_[u[:, 1] ** 2, np.sin(2 * u[:, 0])]
        return T.ThinPlateSpline.from_estimate(src, src @ lin.T + shift + bend)
    centre, amp = rng.uniform(5, FIELD - 5, 2), 0.3 * rng.normal(size=2) / np.sqrt(2)

    def bump(q):
        g = np.exp(-np.sum((q - centre) ** 2, axis=1) / (2 * 4.0**2))
        return q @ lin.T + shift + g[:, None] * amp
    return bump


def one_trial(rng, model: str, wrong: bool, given: bool, n_bootstrap: int) -> tuple[float, bool, float, float]:
    """Coverage of the 95 % ellipses, lack-of-fit warning, share of pairs flagged, inflation."""
    src_true = rng.uniform(0, FIELD, (N_PAIRS, 2))
    truth = make_truth(rng, model, wrong, src_true)
    src = src_true + rng.normal(0, SIGMA_SRC, src_true.shape)
    dst = truth(src_true) + rng.normal(0, SIGMA_DST, src_true.shape)
    sig = {"sigma_src": SIGMA_SRC, "sigma_dst": SIGMA_DST} if given else {}
    reg = cl.register(cl.Landmarks.from_points(src, dst, **sig), model, n_bootstrap=n_bootstrap,
                      seed=int(rng.integers(1 << 30)))
    q = rng.uniform(0, FIELD, (N_TARGETS, 2))
    mapped = reg.map_points(q)
    err = np.asarray(mapped) - truth(q)
    maha2 = np.einsum("ni,nij,nj->n", err, np.linalg.pinv(mapped.covariance), err)
    bound = chi2.ppf(0.95, 2) if not np.isfinite(mapped.dof) else 2 * f.ppf(0.95, 2, mapped.dof)
    warned = any("cannot explain these landmarks" in w or "leave-one-out test" in w for w in reg.warnings)
    return float(np.mean(maha2 <= bound)), warned, float(np.mean(reg.outlier_flags)), reg.error_inflation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-bootstrap", type=int, default=50, help="bootstrap refits of the TPS error prediction")
    ap.add_argument("--models", nargs="+", default=["similarity", "affine", "tps"],
                    choices=["similarity", "affine", "tps"], help="models to measure (default: all three)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    print(f"{args.trials} trials per row, {N_PAIRS} pairs, {N_TARGETS} held-out targets each; rates in %")
    print(f"{'model':>10} {'truth':>13} {'noise':>9} {'coverage':>9} {'warn':>6} {'flagged':>8} {'inflation':>9}")
    clean_flags = []
    for mi, model in enumerate(("similarity", "affine", "tps")):
        if model not in args.models:
            continue
        for wrong in (False, True):
            for given in (True, False):
                rows = [one_trial(np.random.default_rng([args.seed, mi, wrong, given, t]), model, wrong, given,
                                  args.n_bootstrap) for t in range(args.trials)]
                cov, warn, flag, infl = (np.array(c, dtype=float) for c in zip(*rows))
                if not wrong:
                    clean_flags.append(flag)
                print(f"{model:>10} {'misspecified' if wrong else 'correct':>13} "
                      f"{'given' if given else 'estimated':>9} {100 * cov.mean():9.1f} {100 * warn.mean():6.1f} "
                      f"{100 * flag.mean():8.2f} {infl.mean():9.2f}")
    if not clean_flags:
        return
    print(f"outlier flag on clean data (all correct rows): {100 * np.mean(clean_flags):.2f} % of pairs "
          f"(target <= 1 %); {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

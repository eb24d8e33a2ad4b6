"""Automatic LM-EM fiducial matching: success rate and time per trial.

200 seeded trials: 200 LM beads in a 200 x 200 µm field; EM sees a random 60-80 % of them
through an unknown similarity (rotation uniform 0-360 deg, scale 0.5-2x, mirror in half the
trials, random translation) plus 20-40 % spurious particles; 20 nm localisation noise per
axis on both sides. Success = every returned pair is a true pair and the target
registration error (RMS over a grid across the EM field) is below 2x its predicted value
(``Registration.predicted_error`` of the returned registration, with the localisation error
estimated from its residuals, as a user would get it). Baseline in the same run: the time of
clemlab.register() on the already known true pairs (what the matcher adds on top).

Run: python benchmarks/bench_matching.py [--trials 200]
"""

from __future__ import annotations

import _checkout  # noqa: F401  (first: this checkout's clemlab, not an installed copy)

import argparse
import time

import numpy as np

import clemlab as cl
from clemlab.datasets import matching_trial

NOISE = 0.020  # µm


def main(n_trials):
    times, base_times, ok, wrong_pairs, tre_ratio = [], [], 0, 0, []
    failures = []
    for seed in range(n_trials):
        t = matching_trial(seed, mirror=bool(seed % 2), noise=NOISE)
        lm, em, truth, true_map = t.lm, t.em, t.truth, t.true_map
        t0 = time.perf_counter()
        try:
            m = cl.match_fiducials(lm, em)
        except cl.RegistrationError as exc:
            times.append(time.perf_counter() - t0)
            failures.append((seed, str(exc)[:80]))
            continue
        times.append(time.perf_counter() - t0)
        pairs = list(zip(m.src_index.tolist(), m.dst_index.tolist()))
        bad = sum(truth.get(i) != j for i, j in pairs)
        src_true = np.array(sorted(truth))
        t1 = time.perf_counter()
        cl.register(cl.Landmarks.from_points(lm[src_true], em[[truth[i] for i in src_true]]),
                    model="similarity", allow_reflection=True)
        base_times.append(time.perf_counter() - t1)
        lo, hi = lm[src_true].min(0), lm[src_true].max(0)
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 9), np.linspace(lo[1], hi[1], 9))
        test = np.c_[gx.ravel(), gy.ravel()]
        tre = np.sqrt(np.mean(np.sum((m.registration.map_points(test) - true_map(test)) ** 2, axis=1)))
        pred = np.sqrt(np.mean(m.registration.predicted_error(test) ** 2))
        tre_ratio.append(tre / pred)
        wrong_pairs += bad
        if bad == 0 and tre < 2 * pred:
            ok += 1
        else:
            failures.append((seed, f"{bad} wrong pairs, TRE/predicted {tre / pred:.2f}"))
    print(f"trials: {n_trials}; 200 LM beads, EM sees 60-80 % + 20-40 % spurious, "
          f"rotation 0-360, scale 0.5-2, mirror in half, noise {NOISE * 1e3:.0f} nm")
    print(f"success rate: {ok / n_trials:.3f} (target >= 0.99)")
    print(f"wrong pairs returned in total: {wrong_pairs}")
    print(f"median TRE / predicted TRE: {np.median(tre_ratio):.2f} (max {np.max(tre_ratio):.2f})")
    print(f"median time per trial: {np.median(times):.3f} s (target <= 0.2 s); "
          f"90th percentile {np.percentile(times, 90):.3f} s")
    print(f"baseline register() on the known true pairs: median {np.median(base_times):.3f} s; "
          f"matching / baseline time ratio {np.median(times) / np.median(base_times):.1f}")
    for seed, why in failures[:10]:
        print(f"  failed trial {seed}: {why}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=200)
    main(ap.parse_args().trials)

"""Left-out errors of an exact thin-plate spline: closed form against N refits.

Run::

    python benchmarks/bench_tps_left_out.py            # 50, 150 and 300 landmark pairs

``clemlab.register(..., model="tps")`` reads every pair's left-out error from one inverse of
the spline's system (``ThinPlateSpline.leave_one_out``). The baseline, measured in the same
run, is what that replaces: N refits of the spline without each pair
(``ThinPlateSpline.from_estimate``), each evaluated at its left-out pair. Printed per N: both
times (best of 3), their ratio, and the largest difference between the two sets of errors.
"""

from __future__ import annotations

import _checkout  # noqa: F401  (first: this checkout's clemlab, not an installed copy)

import argparse
import time

import numpy as np


def _pairs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    src = rng.uniform(0, 50, (n, 2))
    dst = src * 1.02 + 0.5 * np.sin(src[:, ::-1] / 7) + rng.normal(0, 0.02, (n, 2))
    return src, dst


def _best(fn, repeat: int = 3) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    import clemlab as cl
    from clemlab import transforms as T

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="50,150,300", help="comma-separated numbers of landmark pairs")
    args = ap.parse_args()
    cl.register(cl.Landmarks.from_points(*_pairs(20)), model="tps")  # warm-up (imports)
    print(f"{'pairs':>6} {'register s':>11} {'N refits s':>11} {'ratio':>7} {'max |diff| um':>14}")
    for n in (int(s) for s in args.sizes.split(",")):
        src, dst = _pairs(n)
        lms = cl.Landmarks.from_points(src, dst)
        t_reg, reg = _best(lambda: cl.register(lms, model="tps"))

        def refits():
            keep = np.ones(n, bool)
            errors = np.empty(n)
            for i in range(n):
                keep[i] = False
                part = T.ThinPlateSpline.from_estimate(src[keep], dst[keep])
                keep[i] = True
                errors[i] = np.linalg.norm(part(src[i]) - dst[i])
            return errors

        t_ref, errors = _best(refits)
        print(f"{n:6d} {t_reg:11.3f} {t_ref:11.3f} {t_ref / t_reg:6.1f}x {np.abs(errors - reg.loo_errors).max():14.2e}")


if __name__ == "__main__":
    main()

"""Localisation at the physical limit, and detection quality.

Part 1: isolated pixel-integrated Gaussian spots (PSF sigma 1, 1.5, 2 px; 200-20,000
photons; background 10 photons/px; Poisson noise) -> RMS position error / Cramér-Rao lower
bound, for clemlab.detect_fiducials (Poisson MLE) and for the peer baseline
skimage.feature.blob_log + intensity-weighted centroid, measured in the same run.
Target: clemlab <= 1.15 at every count.

Part 2: precision / recall / F1 of bead detection on the synthetic CLEM sample (LM and EM),
clemlab vs skimage.feature.blob_log (same diameter range), beads above SNR 5.

Run: python benchmarks/bench_localisation.py [--spots 400] [--seeds 3]
"""

from __future__ import annotations

import _checkout  # noqa: F401  (first: this checkout's clemlab, not an installed copy)

import argparse

import numpy as np
from scipy.spatial import cKDTree
from skimage.feature import blob_log

import clemlab as cl
from clemlab._localize import crlb_gaussian, model_and_jacobian


def render(rng, n, s, photons, bg, cell):
    h = cell // 2
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    img = np.full((rows * cell, cols * cell), float(bg))
    truth = []
    for k in range(n):
        r, c = divmod(k, cols)
        dy, dx = h + rng.uniform(-0.5, 0.5, 2)
        win = model_and_jacobian(np.array([[dy, dx, photons, 0.0, s]]), (cell, cell), (0, 0),
                                 jacobian=False)[0]
        img[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] += win
        truth.append((c * cell + dx, r * cell + dy))
    return rng.poisson(img).astype(np.float64), np.array(truth)


def centroid_baseline(img, s):
    blobs = blob_log(img / img.max(), min_sigma=0.7 * s, max_sigma=1.4 * s, num_sigma=5, threshold=0.02)
    out = []
    r = int(np.ceil(3 * s))
    for y, x, _ in blobs:
        y, x = int(y), int(x)
        if y < r or x < r or y + r >= img.shape[0] or x + r >= img.shape[1]:
            continue
        w = img[y - r:y + r + 1, x - r:x + r + 1]
        w = np.clip(w - np.median(w), 0, None)
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        m = w.sum()
        if m > 0:
            out.append((x + (w * xx).sum() / m, y + (w * yy).sum() / m))
    return np.array(out).reshape(-1, 2)


def ratio(found, truth, bound):
    if len(found) == 0:
        return np.nan, 0.0
    d, i = cKDTree(found).query(truth)
    ok = d < 3 * np.sqrt(2) * bound + 1.0
    return float(np.sqrt(np.mean(d[ok] ** 2) / 2) / bound), float(ok.mean())


def part1(n_spots, seed=0):
    rng = np.random.default_rng(seed)
    bg = 10.0
    print("PART 1: RMS error / Cramér-Rao bound (per axis), background 10 photons/px")
    print(f"{'sigma px':>8} {'photons':>8} {'CRLB nm@100nm':>14} {'clemlab':>8} {'found':>6} "
          f"{'blob_log+centroid':>18} {'found':>6}")
    worst = 0.0
    for s in (1.0, 1.5, 2.0):
        cell = int(2 * np.ceil(4 * s) + 9)
        for photons in (200, 500, 1000, 2000, 5000, 20000):
            img, truth = render(rng, n_spots, s, photons, bg, cell)
            bound = crlb_gaussian((cell, cell), (cell // 2, cell // 2), photons, bg, [s])[0]
            df = cl.detect_fiducials(cl.as_image(img, pixel_size=0.1), diameter=2.355 * s * 0.1,
                                     min_snr=1.0, gain=1, offset=0)
            ours, f1 = ratio(df[["x", "y"]].to_numpy() / 0.1, truth, bound)
            base, f2 = ratio(centroid_baseline(img, s), truth, bound)
            worst = max(worst, ours)
            print(f"{s:8.1f} {photons:8d} {bound * 100:14.2f} {ours:8.3f} {f1:6.2f} {base:18.3f} {f2:6.2f}")
    print(f"worst clemlab ratio: {worst:.3f} (target <= 1.15)")


def f1_scores(found, truth, tol):
    if len(found) == 0:
        return 0.0, 0.0, 0.0
    d, i = cKDTree(truth).query(found)
    tp = len(set(i[d < tol]))
    p, r = tp / len(found), tp / len(truth)
    return p, r, 2 * p * r / max(p + r, 1e-12)


def part2(seeds):
    print("\nPART 2: detection on the synthetic CLEM sample (precision / recall / F1)")
    print(f"{'seed':>4} {'image':>5} {'beads':>5} {'clemlab P':>9} {'R':>6} {'F1':>6} {'skimage P':>9} {'R':>6} {'F1':>6}")
    for seed in range(seeds):
        smp = cl.synthetic_clem(seed=seed)
        p = smp.params
        lm = smp.lm.sel(c="beads")
        ours = cl.detect_fiducials(lm, diameter=(0.2, 0.5), gain=p["gain_adu_per_e"], offset=p["offset_adu"])
        img = lm.values.astype(float)
        bl = blob_log(img / img.max(), min_sigma=0.8, max_sigma=2.0, num_sigma=5, threshold=0.05)
        base = lm.clem.to_physical(bl[:, [1, 0]])
        row = [f1_scores(ours[["x", "y"]].to_numpy(), smp.beads_lm_all, 0.15),
               f1_scores(base, smp.beads_lm_all, 0.15)]
        print(f"{seed:4d} {'LM':>5} {len(smp.beads_lm_all):5d} " + " ".join(
            f"{a:9.3f} {b:6.3f} {c:6.3f}" for a, b, c in row))
        em = smp.em
        ours = cl.detect_fiducials(em, polarity="dark", diameter=(0.1, 0.3))
        inv = 1.0 - em.values.astype(float) / 255.0
        bl = blob_log(inv, min_sigma=0.1 / 2.83 / 0.01, max_sigma=0.3 / 2.83 / 0.01, num_sigma=5, threshold=0.1)
        base = em.clem.to_physical(bl[:, [1, 0]])
        row = [f1_scores(ours[["x", "y"]].to_numpy(), smp.fiducials_em, 0.05),
               f1_scores(base, smp.fiducials_em, 0.05)]
        print(f"{seed:4d} {'EM':>5} {len(smp.fiducials_em):5d} " + " ".join(
            f"{a:9.3f} {b:6.3f} {c:6.3f}" for a, b, c in row))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--spots", type=int, default=400)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    part1(args.spots)
    part2(args.seeds)

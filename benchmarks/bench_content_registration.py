"""Registration without fiducials: success rate, error, silent failures and time per pair.

Seeded trials of :func:`clemlab.datasets.synthetic_cells` (2048² EM at 20 nm, 512² LM
at 200 nm): rotation uniform over the full circle, scale 0.8-1.25, mirror in half the
trials, EM-field offset up to 30 % of the LM field, EM dose 15-60 electrons/pixel and stain
contrast 0.5-1.2. Error: RMS over a 5 x 5 grid across the EM field of the returned transform
against the truth, in LM pixels. Success: error <= 1 LM px. Silent failure: verdict "good"
with error > 2 LM px. Each pair is registered automatically and from two rough clicks (two
features far apart, each click 1 µm off per axis, 1-sigma); baseline in the same run:
SimpleITK's Mattes mutual information (affine, multi-resolution, from the same start: the
identity for "automatic", the two-click similarity for "clicks"), the EM block-averaged to
the LM pixel size.

Calibration of the stated uncertainty (clemlab rows): "cover95" is the fraction of the 5 x 5
grid points, over all trials, whose true error is within the predicted 95 % radius
(``sqrt(chi2_2(0.95) / 2) = 1.731`` times ``predicted_error``, the RMS of a 2-D Gaussian);
about 95 % when calibrated. "patch z" is the RMS per axis of each inlier match's true error
over its own sigma (``details["match_sigma_um"]``); about 1 when calibrated.

``--representation`` runs the clemlab rows with one or more of
:data:`clemlab.imagereg.represent.KINDS` (``intensity``, ``gradient``, ``mind``, ``mi``) on
the same seeded pairs, one pair of rows ("automatic", "clicks") per representation.
``--no-invert`` registers without inverting the EM (``invert=False``: the EM's dark chromatin
meets the LM's bright stain), which shows which representations depend on the contrast
relation being known.

Run: python benchmarks/bench_content_registration.py [--trials 200] [--no-sitk]
[--representation intensity mind ...] [--first 0] [--no-invert]
"""

from __future__ import annotations

import _checkout  # noqa: F401  (first: this checkout's clemlab, not an installed copy)

import argparse
import time

import numpy as np

import clemlab as cl
from clemlab.datasets import synthetic_cells

LM_PX = 0.2


def trial(seed):
    rng = np.random.default_rng(10_000 + seed)
    lm_field = 512 * LM_PX
    off = rng.uniform(-0.3, 0.3, 2) * lm_field
    scale = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    room = lm_field / 2 - np.hypot(40.96, 40.96) / 2 / scale - 0.6
    off = np.clip(off, -room, room)
    return synthetic_cells(seed, mirror=bool(seed % 2), scale=scale, offset=tuple(off),
                           em_dose=float(rng.uniform(15, 60)), em_contrast=float(rng.uniform(0.5, 1.2)))


def error_lm_px(d, tf):
    size = d.em.shape[0] * d.params["em_pixel_size"]
    ys, xs = np.mgrid[0.1:0.9:5j, 0.1:0.9:5j] * size
    q = np.c_[xs.ravel(), ys.ravel()]
    p = d.true_inverse(q)
    return float(np.sqrt(np.mean(np.sum((tf(p) - q) ** 2, axis=1)))) / d.params["scale"] / LM_PX


#: predicted 95 % radius / predicted RMS error of a 2-D Gaussian: sqrt(chi2_2(0.95) / 2)
RADIUS95 = float(np.sqrt(-2 * np.log(0.05) / 2))


def calibration(d, m):
    """(covered (25,), patch z (N, 2)) of a match against the truth (see module notes)."""
    size = d.em.shape[0] * d.params["em_pixel_size"]
    ys, xs = np.mgrid[0.1:0.9:5j, 0.1:0.9:5j] * size
    q = np.c_[xs.ravel(), ys.ravel()]
    p = d.true_inverse(q)
    reg = m.registration
    covered = np.linalg.norm(reg.transform(p) - q, axis=1) <= RADIUS95 * reg.predicted_error(p)
    df = m.landmarks.to_dataframe()
    act = df["active"].to_numpy(bool)
    src, dst = m.landmarks.src(active_only=False)[act], m.landmarks.dst(active_only=False)[act]
    z = (d.true_map(src) - dst) / np.asarray(m.details["match_sigma_um"])[act][:, None]
    return covered, z


def two_clicks(d, rng):
    """Two rough clicks a user would place on features far apart: true partners at 25 % and
    75 % along a random line through the EM field centre, each side 1 µm off per axis."""
    size = d.em.shape[0] * d.params["em_pixel_size"]
    ang = rng.uniform(0, np.pi)
    u = np.array([np.cos(ang), np.sin(ang)]) * size * 0.25
    em_pts = np.array([size / 2 - u, size / 2 + u])
    lm_pts = d.true_inverse(em_pts)
    return cl.Landmarks.from_points(lm_pts + rng.normal(0, 1.0, (2, 2)), em_pts + rng.normal(0, 1.0, (2, 2)))


def click_start(clicks, d):
    """The two-click similarity LM -> EM on the true mirror branch (the baseline is told the
    mirror; two clicks cannot tell it)."""
    src, dst = clicks.src(), clicks.dst()
    if d.params["mirror"]:
        src = src * [-1, 1]
    mat = cl.register(cl.Landmarks.from_points(src, dst), "similarity").transform.matrix
    return mat @ np.diag([-1.0, 1.0, 1.0]) if d.params["mirror"] else mat


def sitk_mattes(d, start_matrix):
    """SimpleITK Mattes MI, affine, fixed = LM, moving = EM at LM pixel size; returns a callable."""
    import SimpleITK as sitk

    lm = d.lm.values.astype(np.float32)
    em = d.em.values.astype(np.float32)
    k = int(round(LM_PX / d.params["em_pixel_size"]))
    n = em.shape[0] // k
    em_small = em[: n * k, : n * k].reshape(n, k, n, k).mean(axis=(1, 3))
    fixed = sitk.GetImageFromArray(lm)
    fixed.SetSpacing((LM_PX, LM_PX))
    moving = sitk.GetImageFromArray(em_small)
    moving.SetSpacing((k * d.params["em_pixel_size"],) * 2)
    moving.SetOrigin(((k - 1) / 2 * d.params["em_pixel_size"],) * 2)
    tf = sitk.AffineTransform(2)
    tf.SetMatrix(start_matrix[:2, :2].ravel().tolist())
    tf.SetTranslation(start_matrix[:2, 2].tolist())
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.2, seed=1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4, numberOfIterations=200)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SetInitialTransform(tf, inPlace=True)
    reg.Execute(fixed, moving)
    mat = np.eye(3)
    mat[:2, :2] = np.array(tf.GetMatrix()).reshape(2, 2)
    centre = np.array(tf.GetCenter())
    mat[:2, 2] = np.array(tf.GetTranslation()) + centre - mat[:2, :2] @ centre
    return lambda p: p @ mat[:2, :2].T + mat[:2, 2]


def main(n_trials, with_sitk, representations=("intensity",), first=0, invert=None):
    names = [(f"{rep} {how}" if len(representations) > 1 else how, rep, how)
             for rep in representations for how in ("automatic", "clicks")]
    rows = {name: [] for name, _, _ in names}
    rows.update({"sitk automatic": [], "sitk clicks": []})
    calib = {name: ([], []) for name, _, _ in names}
    for seed in range(first, first + n_trials):
        d = trial(seed)
        rng = np.random.default_rng(seed)
        clicks = two_clicks(d, rng)
        line = []
        for name, rep, how in names:
            t0 = time.perf_counter()
            m = cl.register_images(d.lm, d.em, initial=clicks if how == "clicks" else None, representation=rep,
                                   invert=invert)
            dt = time.perf_counter() - t0
            err = error_lm_px(d, m.registration.transform) if m.registration is not None else np.inf
            rows[name].append((err, m.verdict, dt))
            cov = np.nan
            if m.registration is not None and m.verdict == "good":
                covered, z = calibration(d, m)
                calib[name][0].append(covered)
                calib[name][1].append(z)
                cov = covered.mean()
            line.append(f"{name} err {err:.3f} px {m.verdict} {dt:.1f} s cover95 {cov:.2f}")
        if with_sitk:
            for name, start in (("sitk automatic", np.eye(3)),
                                ("sitk clicks", click_start(clicks, d))):
                t0 = time.perf_counter()
                try:
                    f = sitk_mattes(d, start)
                    # SimpleITK's transform maps fixed (LM) to moving (EM) points
                    err = error_lm_px(d, f)
                except RuntimeError:
                    err = np.inf
                rows[name].append((err, "-", time.perf_counter() - t0))
            line.append(f"sitk auto {rows['sitk automatic'][-1][0]:.2f} clicks {rows['sitk clicks'][-1][0]:.2f}")
        print(f"trial {seed}: " + "; ".join(line), flush=True)
    print(f"\n{n_trials} trials, seeds {first}-{first + n_trials - 1} (success: error <= 1 LM px; "
          "silent failure: verdict good and error > 2 LM px)")
    print(f"{'method':24s} {'success':>8s} {'median err px':>14s} {'silent fail':>12s} {'good':>6s} {'median s':>9s}"
          f" {'cover95':>8s} {'patch z':>8s}")
    for name, r in rows.items():
        if not r:
            continue
        err = np.array([x[0] for x in r])
        verdict = [x[1] for x in r]
        t = np.array([x[2] for x in r])
        silent = np.mean([(v == "good") and e > 2 for v, e in zip(verdict, err)])
        good = np.mean([v == "good" for v in verdict]) if verdict[0] != "-" else np.nan
        cover = zrms = np.nan
        if calib.get(name, ([], []))[0]:
            cover = float(np.mean(np.concatenate(calib[name][0])))
            zrms = float(np.sqrt(np.mean(np.concatenate(calib[name][1]) ** 2)))
        print(f"{name:24s} {np.mean(err <= 1):8.1%} {np.median(err):14.3f} {silent:12.1%} {good:6.1%} {np.median(t):9.2f}"
              f" {cover:8.1%} {zrms:8.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--no-sitk", action="store_true", help="skip the SimpleITK baseline")
    ap.add_argument("--representation", nargs="+", default=["intensity"],
                    choices=["intensity", "gradient", "mind", "mi"],
                    help="representation(s) of the clemlab rows, each run on the same pairs")
    ap.add_argument("--first", type=int, default=0, help="seed of the first trial")
    ap.add_argument("--no-invert", action="store_true", help="do not invert the EM (see module notes)")
    a = ap.parse_args()
    main(a.trials, not a.no_sitk, tuple(a.representation), a.first, False if a.no_invert else None)

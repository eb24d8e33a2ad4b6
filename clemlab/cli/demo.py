"""``clemlab demo``: the whole job on the bundled synthetic sample, with errors against ground truth."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ..errors import FileExistsRefusedError, FileFormatError
from ._common import Formatter, para

__all__ = ["add_parser", "run", "run_demo"]

#: The files the demo writes into its folder.
DEMO_FILES = {"overlay.png": "PNG", "transform.json": "JSON", "landmarks.json": "JSON", "correlated.ome.tif": "TIFF"}

EXAMPLES = """\
examples:
  clemlab demo                        # writes clemlab_demo/overlay.png, transform.json, ...
  clemlab demo --out today --seed 3   # another sample, another folder
  clemlab demo --overwrite            # run again into the same folder
"""


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("demo", parents=[common], help="run the whole workflow on the bundled synthetic sample",
                       description=para("Make a synthetic LM/EM pair with a known transform, detect and pair the "
                                   "fiducial beads, fit an affine transform, report its error against the "
                                   "ground truth, and write the overlay picture and the results."),
                       epilog=EXAMPLES, formatter_class=Formatter)
    p.add_argument("--out", default="clemlab_demo", help="output folder (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic sample (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace the demo files already in the folder")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    run_demo(args.out, seed=args.seed, overwrite=args.overwrite)
    return 0


def run_demo(out: str | Path = "clemlab_demo", seed: int = 0, verbose: bool = True,
             overwrite: bool = False) -> dict:
    """Run the demo; returns the figures it printed (errors in nm) and the files written.

    Parameters
    ----------
    out : path-like
        Output folder (created if needed).
    seed : int
        Seed of the synthetic sample and of the localisation noise.
    verbose : bool
        Print the figures.
    overwrite : bool
        Replace demo files already in ``out`` (default: refuse, before any work).

    Returns
    -------
    dict
        ``fre_rms_nm``, ``loo_rms_nm``, ``tre_rms_nm``, ``tre_max_nm`` (nm), ``n_landmarks``,
        ``n_heldout``, ``files`` (list of paths), ``seconds``.
    """
    from matplotlib.figure import Figure  # a figure without pyplot: no backend is chosen or changed

    from .. import _atomic
    from ..correlate import correlate, stack_channels
    from ..datasets import synthetic_clem
    from ..fiducials import detect_fiducials, match_fiducials
    from ..io import write_ome_tiff
    from ..viz import plot_overlay

    t0 = time.perf_counter()
    say = print if verbose else (lambda *a, **k: None)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileFormatError(f"--out {out} is a file; give a folder for the demo's results")
    existing = [name for name in DEMO_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsRefusedError(f"{out} already holds {', '.join(existing)} from an earlier run; pass "
                                     "--overwrite (overwrite=True) to replace them, or choose another --out")
    for name in existing:  # a file of another format under a demo name is kept, and said so now
        _atomic.check_writable(out / name, overwrite=True, fmt=DEMO_FILES[name])
    out.mkdir(parents=True, exist_ok=True)

    sample = synthetic_clem(seed=seed)
    # automatic path: detect beads in both images, match them, register on the matches
    prm = sample.params
    beads_lm = detect_fiducials(sample.lm.sel(c="beads"), polarity="bright", diameter=(0.2, 0.5),
                                gain=prm["gain_adu_per_e"], offset=prm["offset_adu"])
    beads_em = detect_fiducials(sample.em, polarity="dark", diameter=(0.1, 0.3))
    match = match_fiducials(beads_lm, beads_em, model="affine")
    landmarks = match.landmarks
    reg = match.registration
    sig_lm = float(np.median(beads_lm.sigma))
    sig_em = float(np.median(beads_em.sigma))

    # error against ground truth at held-out points: the targets plus a grid over the EM field
    ext = sample.em.clem.extent
    gx, gy = np.meshgrid(np.linspace(*ext["x"], 9)[1:-1], np.linspace(*ext["y"], 9)[1:-1])
    held_em = np.vstack([sample.targets_em, np.c_[gx.ravel(), gy.ravel()]])
    held_lm = sample.transform.inverse(held_em)
    err = np.linalg.norm(reg.map_points(held_lm) - held_em, axis=1)
    figures = {
        "n_landmarks": len(landmarks),
        "fre_rms_nm": reg.rms * 1e3,
        "loo_rms_nm": float(np.sqrt(np.nanmean(reg.loo_errors**2)) * 1e3),
        "n_heldout": len(held_em),
        "tre_rms_nm": float(np.sqrt(np.mean(err**2)) * 1e3),
        "tre_max_nm": float(err.max() * 1e3),
    }
    say(f"synthetic sample (seed {seed}): LM {dict(sample.lm.sizes)} at "
        f"{sample.lm.clem.pixel_size['x'] * 1e3:.0f} nm/px, EM {dict(sample.em.sizes)} at "
        f"{sample.em.clem.pixel_size['x'] * 1e3:.0f} nm/px")
    say(f"detected {len(beads_lm)} beads in LM, {len(beads_em)} in EM; matched {len(landmarks)} pairs "
        f"automatically (median localisation uncertainty {sig_lm * 1e3:.1f} nm LM / "
        f"{sig_em * 1e3:.1f} nm EM)")
    say(f"affine fit: fiducial residual RMS {figures['fre_rms_nm']:.1f} nm, "
        f"leave-one-out RMS {figures['loo_rms_nm']:.1f} nm")
    say(f"error against ground truth at {len(held_em)} held-out points: "
        f"RMS {figures['tre_rms_nm']:.1f} nm, max {figures['tre_max_nm']:.1f} nm")

    corr = correlate(sample.em, sample.lm, reg)
    files = []
    fig = Figure(figsize=(8, 8 * sample.em.sizes["y"] / sample.em.sizes["x"] + 0.6), layout="constrained")
    plot_overlay(corr, ax=fig.add_subplot(), registration=reg,
                 title=f"LM on EM: affine fit to {len(landmarks)} beads, residual RMS "
                       f"{figures['fre_rms_nm']:.0f} nm, left-out RMS {figures['loo_rms_nm']:.0f} nm")
    png = out / "overlay.png"
    _atomic.atomic_write(png, lambda tmp: fig.savefig(tmp, dpi=200, format="png"), overwrite=overwrite,
                         fmt="PNG")
    files.append(png)
    files.append(_atomic.atomic_write_text(out / "transform.json", json.dumps(reg.transform.to_dict(), indent=1) + "\n",
                                           overwrite=overwrite, fmt="JSON"))
    files.append(_atomic.atomic_write_text(out / "landmarks.json", json.dumps(landmarks.to_json_dict(), indent=1,
                                                                              ensure_ascii=False) + "\n",
                                           overwrite=overwrite, fmt="JSON"))
    tif = out / "correlated.ome.tif"
    write_ome_tiff(stack_channels(corr, dtype=np.uint16), tif, overwrite=overwrite)
    files.append(tif)
    figures["files"] = [str(f) for f in files]
    figures["seconds"] = time.perf_counter() - t0
    for f in files:
        say(f"wrote {f}")
    say(f"done in {figures['seconds']:.1f} s")
    return figures

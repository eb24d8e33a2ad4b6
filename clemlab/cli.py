"""The ``clemlab`` command.

``clemlab demo [--out DIR] [--seed N]`` runs the whole job on the bundled synthetic sample:
make the LM/EM pair, detect the fiducial beads in both images, match them automatically,
fit an affine transform on the matches, report the errors against the known ground truth and
write ``overlay.png``, ``transform.json``, ``landmarks.json`` and ``correlated.ome.tif``.

``clemlab register LANDMARKS [--model affine] [--out registration.json]`` fits a landmark
file and prints the summary.

``clemlab ngff-transform PATH SOURCE TARGET COORDINATES`` maps points (a JSON list of lists,
in the source system's axis order and units) between two coordinate systems of an OME-Zarr
0.6 hierarchy and prints ``{"coordinates": [[...], ...]}``; where the map cannot be computed
it prints ``{"message": ...}`` and exits 2 (the interface of the
``ome-zarr-transformations-conformance`` suite).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "run_demo"]


#: The files ``clemlab demo`` writes into its output folder.
DEMO_FILES = ("overlay.png", "transform.json", "landmarks.json", "correlated.ome.tif")


def run_demo(out: str | Path = "clemlab_demo", seed: int = 0, verbose: bool = True, *,
             overwrite: bool = False) -> dict:
    """Run the demo; returns the figures it printed (errors in nm) and the files written.

    Parameters
    ----------
    out : path-like
        Output folder (created if needed).
    seed : int
        Seed of the synthetic sample and of the localisation noise.
    overwrite : bool
        Replace demo files already in ``out``; without it they are refused before any work.

    Returns
    -------
    dict
        ``fre_rms_nm``, ``tre_rms_nm``, ``tre_max_nm``, ``n_landmarks``, ``n_heldout``,
        ``files`` (list of paths), ``seconds``.
    """
    from matplotlib.figure import Figure  # a figure without pyplot: no backend is chosen or changed

    from . import _atomic
    from .datasets import synthetic_clem
    from .fiducials import detect_fiducials, match_fiducials
    from .io import write_ome_tiff
    from .viz import plot_overlay
    from .correlate import correlate, stack_channels

    t0 = time.perf_counter()
    say = print if verbose else (lambda *a, **k: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    formats = {"overlay.png": "PNG", "transform.json": "JSON", "landmarks.json": "JSON",
               "correlated.ome.tif": "TIFF"}
    for name in DEMO_FILES:  # refused now, not after the work is done
        _atomic.check_writable(out / name, overwrite=overwrite, fmt=formats[name])

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
    grid_em = np.c_[gx.ravel(), gy.ravel()]
    held_em = np.vstack([sample.targets_em, grid_em])
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
    ax = Figure(figsize=(7, 7 * sample.em.sizes["y"] / sample.em.sizes["x"])).add_subplot()
    fig = plot_overlay(corr, points=sample.fiducials_em, ax=ax,
                       title=f"LM on EM (affine, {len(landmarks)} beads)")
    png = out / "overlay.png"
    _atomic.atomic_write(png, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png"),
                         overwrite=overwrite, fmt="PNG")
    files.append(png)
    files.append(_atomic.atomic_write_text(out / "transform.json",
                                           json.dumps(reg.transform.to_dict(), indent=1) + "\n",
                                           overwrite=overwrite, fmt="JSON"))
    files.append(landmarks.save(out / "landmarks.json", overwrite=overwrite))
    tif = out / "correlated.ome.tif"
    write_ome_tiff(stack_channels(corr, dtype=np.uint16), tif, overwrite=overwrite)
    files.append(tif)
    figures["files"] = [str(f) for f in files]
    figures["seconds"] = time.perf_counter() - t0
    for f in files:
        say(f"wrote {f}")
    say(f"done in {figures['seconds']:.1f} s")
    return figures


def _cmd_register(args) -> int:
    from .landmarks import Landmarks
    from .registration import register

    if args.out:
        from ._atomic import check_writable

        check_writable(args.out, overwrite=args.overwrite, fmt="JSON")  # before the fit
    reg = register(Landmarks.read(args.landmarks), model=args.model)
    print(reg.summary())
    if args.out:
        print(f"wrote {reg.save(args.out, overwrite=args.overwrite)}")
    return 0


def _cmd_ngff_transform(args) -> int:
    from .errors import TransformError
    from .io.ngff_transforms import map_ngff_points

    try:
        coords = json.loads(args.coordinates)
    except json.JSONDecodeError as exc:
        raise TransformError(f"COORDINATES must be a JSON list of points, e.g. [[1, 2]]: {exc}") from None
    out = map_ngff_points(args.path, args.source, args.target, coords)
    if not np.all(np.isfinite(out)):
        raise TransformError(f"points {np.flatnonzero(~np.isfinite(out).all(axis=1)).tolist()} fall outside "
                             f"the sampled field between {args.source!r} and {args.target!r}")
    print(json.dumps({"coordinates": out.tolist()}))
    return 0


def _cmd_info(args) -> int:
    from .io.info import info

    scene = int(args.scene) if args.scene is not None and args.scene.isdigit() else args.scene
    for path in args.files:
        print(info(path, scene=scene, timepoint=args.timepoint))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``clemlab`` console script."""
    parser = argparse.ArgumentParser(prog="clemlab", description="Correlative light and electron microscopy.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"clemlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="what a microscope file holds: images, dims, pixel size and its source",
                          epilog="example: clemlab info sample.czi --scene 1")
    info.add_argument("files", nargs="+", metavar="FILE")
    info.add_argument("--scene", help="image of a container file, by name or index (CZI scene, LIF image)")
    info.add_argument("--timepoint", type=int, help="time point of a time series")
    demo = sub.add_parser("demo", help="run the whole workflow on the bundled synthetic sample")
    demo.add_argument("--out", default="clemlab_demo", help="output folder (default: clemlab_demo)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the synthetic sample")
    demo.add_argument("--overwrite", action="store_true", help="replace demo files already in the folder")
    reg = sub.add_parser("register", help="fit a transform to a landmarks file (.json or .csv)")
    reg.add_argument("landmarks")
    reg.add_argument("--model", default="affine")
    reg.add_argument("--out", help="write the registration as JSON here")
    reg.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    ngff = sub.add_parser("ngff-transform", help="map points between coordinate systems of an OME-Zarr 0.6 store")
    ngff.add_argument("path", help="OME-Zarr group (path or URL)")
    ngff.add_argument("source", help="source coordinate system name")
    ngff.add_argument("target", help="target coordinate system name")
    ngff.add_argument("coordinates", help="JSON list of points in the source system's axis order")
    args = parser.parse_args(argv)
    from .errors import ClemlabError

    try:
        if args.command == "demo":
            run_demo(args.out, seed=args.seed, overwrite=args.overwrite)
            return 0
        if args.command == "ngff-transform":
            return _cmd_ngff_transform(args)
        if args.command == "info":
            return _cmd_info(args)
        return _cmd_register(args)
    except ClemlabError as exc:
        if args.command == "ngff-transform":  # the conformance runner reads a JSON message
            print(json.dumps({"message": str(exc)}))
        print(f"clemlab: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

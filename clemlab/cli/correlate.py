"""``clemlab correlate``: the LM channels warped onto the EM grid, written as OME-Zarr or OME-TIFF."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ClemlabError
from ._common import (LANDMARK_FORMATS, MODELS_HELP, Formatter, add_units_options, check_output, describe_output,
                      guarded_write, open_input, para, register_or_load, single_channel)

__all__ = ["add_parser"]

EXAMPLES = """\
examples:
  clemlab correlate lm.czi em.tif --landmarks pairs.json --out corr.ome.zarr
  clemlab correlate lm.lif em.mrc --landmarks bigwarp.csv --model similarity --out corr.ome.tif
  clemlab correlate lm.tif em.tif --registration reg.json --out corr.ome.zarr --overwrite
  clemlab correlate Chromatin.png EM.png --lm-pixel-size 0.1 --em-pixel-size 0.05 --em-channel 0 \\
      --landmarks clicks.csv --out corr.ome.tif

The output holds the EM image as channel "EM" and the LM channels on the EM grid (pixel size,
origin and frame of the EM image); an OME-Zarr store also keeps the registration and its
landmarks. Large images are warped chunk by chunk and streamed to disk, with a progress bar;
Ctrl-C leaves no half-written output.
"""


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("correlate", parents=[common], formatter_class=Formatter, epilog=EXAMPLES,
                       help="warp the LM channels onto the EM grid and write OME-Zarr or OME-TIFF",
                       description=para("Put LM and EM on one grid: the LM image is warped onto the EM image's "
                                   "grid by the transform fitted to the landmarks (or read from a "
                                   "registration file), and written with the EM as one multi-channel image."))
    p.add_argument("lm", metavar="LM", help="light-microscopy image (any channels)")
    p.add_argument("em", metavar="EM", help="electron-microscopy image (one channel)")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--landmarks", metavar="FILE", help=f"landmark pairs LM -> EM: {LANDMARK_FORMATS}")
    how.add_argument("--registration", metavar="FILE.json", help="a registration written by clemlab register --out")
    p.add_argument("--model", default="affine",
                   help=f"model fitted to --landmarks: {MODELS_HELP} (default: %(default)s)")
    p.add_argument("--out", required=True, metavar="OUT",
                   help="output: a folder name ending .ome.zarr or a file ending .ome.tif / .ome.tiff")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--order", type=int, default=1, choices=(0, 1, 3),
                   help="interpolation order of the LM warp (default: %(default)s)")
    p.add_argument("--lm-pixel-size", type=float, metavar="UM", help="LM pixel size in µm, for files without one")
    p.add_argument("--em-pixel-size", type=float, metavar="UM", help="EM pixel size in µm, for files without one")
    p.add_argument("--lm-scene", metavar="SCENE", help="image of an LM container file (CZI scene, LIF image)")
    p.add_argument("--em-scene", metavar="SCENE", help="image of an EM container file")
    p.add_argument("--em-channel", metavar="NAME", help="channel of an EM file with several (e.g. 0 of an RGB PNG)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_units_options(p)
    p.set_defaults(run=run)


def _output_kind(out: str) -> str:
    name = Path(out).name.lower()
    if name.endswith(".ome.zarr") or name.endswith(".zarr"):
        return "zarr"
    if name.endswith((".ome.tif", ".ome.tiff")):
        return "tiff"
    raise ClemlabError(f"--out {out}: end the name with .ome.zarr (OME-Zarr folder) or .ome.tif (OME-TIFF file)")


def run(args: argparse.Namespace) -> int:
    from ..correlate import correlate, stack_channels
    from ..io import write_ome_tiff, write_ome_zarr
    from ..progress import progress

    kind = _output_kind(args.out)
    out = check_output(args.out, args.overwrite)  # before any work: nothing is lost to a bad path
    lm = open_input(args.lm, "LM", args.lm_pixel_size, args.lm_scene, pixel_option="--lm-pixel-size")
    em = single_channel(open_input(args.em, "EM", args.em_pixel_size, args.em_scene, args.em_channel,
                                   pixel_option="--em-pixel-size"),
                        args.em, "EM", "--em-channel")
    reg = register_or_load(args)
    corr = correlate(em, lm, reg, order=args.order)
    channels = ["EM"] + ([str(c) for c in corr["LM"].coords["c"].values] if "c" in corr["LM"].dims else ["LM"])
    size = " x ".join(str(n) for n in corr["EM"].shape)
    with progress(f"warping LM onto the EM grid ({size} px) and writing {out}", enabled=not args.no_progress,
                  stream=sys.stderr):
        if kind == "zarr":
            guarded_write(out, lambda: write_ome_zarr(corr, out, overwrite=args.overwrite))
        else:
            guarded_write(out, lambda: write_ome_tiff(stack_channels(corr), out, overwrite=args.overwrite))
    print(f"wrote {describe_output(out)}: channels {channels} on the EM grid")
    return 0

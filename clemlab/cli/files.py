"""``clemlab info`` (what a microscope file holds) and ``clemlab ngff-transform`` (points
between coordinate systems of an OME-Zarr 0.6 store; the conformance suite's interface)."""

from __future__ import annotations

import argparse
import json

import numpy as np

from ._common import Formatter, para, parse_scene

__all__ = ["add_parsers"]

INFO_EXAMPLES = """\
examples:
  clemlab info sample.czi                 # the scenes it holds, then the one image's details
  clemlab info sample.czi --scene 1       # one scene: dims, pixel size and where it came from
  clemlab info em.tif lm.lif map.mrc      # several files
"""

NGFF_EXAMPLES = """\
examples:
  clemlab ngff-transform corr.ome.zarr lm em "[[10.5, 20.0]]"
"""


def add_parsers(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("info", parents=[common], formatter_class=Formatter, epilog=INFO_EXAMPLES,
                       help="what a microscope file holds: images, dims, pixel size and its source",
                       description=para("List the images a file holds and describe one: dims and shape, pixel "
                                   "size with the tag or key it came from, origin, channels, stage position. "
                                   "Pixels are not read."))
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--scene", help="image of a container file, by name or index (CZI scene, LIF image)")
    p.add_argument("--timepoint", type=int, help="time point of a time series")
    p.set_defaults(run=run_info)

    q = sub.add_parser("ngff-transform", parents=[common], formatter_class=Formatter, epilog=NGFF_EXAMPLES,
                       help="map points between coordinate systems of an OME-Zarr 0.6 store",
                       description=para("Map points (a JSON list of lists, in the source system's axis order and "
                                   "units) and print {\"coordinates\": [...]}; where the map cannot be "
                                   "computed print {\"message\": ...} and exit 2."))
    q.add_argument("path", help="OME-Zarr group (path or URL)")
    q.add_argument("source", help="source coordinate system name")
    q.add_argument("target", help="target coordinate system name")
    q.add_argument("coordinates", help="JSON list of points in the source system's axis order")
    q.set_defaults(run=run_ngff_transform, json_errors=True)


def run_info(args: argparse.Namespace) -> int:
    from ..io.info import info

    for path in args.files:
        print(info(path, scene=parse_scene(args.scene), timepoint=args.timepoint))
    return 0


def run_ngff_transform(args: argparse.Namespace) -> int:
    from ..errors import TransformError
    from ..io.ngff_transforms import map_ngff_points

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

"""``clemlab targets``: LM points or regions -> EM stage positions with their predicted error
-> a SerialEM navigator (and a CSV beside it)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..errors import ClemlabError
from ._common import (LANDMARK_FORMATS, MODELS_HELP, Formatter, add_units_options, check_output, open_input, para,
                      register_or_load, single_channel)

__all__ = ["add_parser"]

EXAMPLES = """\
examples:
  clemlab targets spots.csv --registration reg.json --em map.mrc --nav session.nav --map 12 --out targets.nav
  clemlab targets lm.czi --spots GFP --landmarks pairs.json --em map.mrc --mdoc map.mrc.mdoc --out t.nav
  clemlab targets cells_labels.tif --mask --landmarks pairs.json --em em.tif --stage-centre 250 -120 \\
      --rotation 12 --out regions.nav

TARGETS is one of
  a CSV table in LM µm: columns x, y [, z] and optionally name, sigma (1-sigma per axis, µm, for
      measured positions); with a column roi, the rows of each roi are the vertices of a polygon;
  an LM image with --spots CHANNEL: the bright spots of that channel, each with its own uncertainty;
  a label image (0 = background) with --mask: one region per label, centroid and outline.

The EM image's pixel -> stage relation comes from a navigator map item (--nav, --map: the map
must be the EM image given with --em), a montage .mdoc (--mdoc), or is stated (--stage-centre,
--rotation, --no-mirror, --tilt). Each item's note gives the predicted error; targets outside the
EM field are flagged in their note.
"""


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("targets", parents=[common], formatter_class=Formatter, epilog=EXAMPLES,
                       help="map LM points/regions to EM stage positions and write a SerialEM navigator",
                       description=para("Carry targets found in LM to the EM stage: each target's stage position "
                                   "with its predicted error and 95 % ellipse, written as SerialEM navigator "
                                   "items (points, or polygons for regions) and a CSV table."))
    p.add_argument("targets", metavar="TARGETS", help="CSV table, LM image (--spots) or label image (--mask)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--spots", metavar="CHANNEL", help="TARGETS is an LM image: detect the spots of CHANNEL")
    kind.add_argument("--mask", action="store_true", help="TARGETS is a label image: one target per region")
    p.add_argument("--pixel-size", type=float, metavar="UM", help="pixel size of a TARGETS image without one (µm)")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--registration", metavar="FILE.json", help="a registration written by clemlab register --out")
    how.add_argument("--landmarks", metavar="FILE", help=f"landmark pairs LM -> EM: {LANDMARK_FORMATS}")
    p.add_argument("--model", default="affine",
                   help=f"model fitted to --landmarks: {MODELS_HELP} (default: %(default)s)")
    p.add_argument("--em", required=True, metavar="IMAGE", help="the EM image (map) the registration maps onto")
    p.add_argument("--em-pixel-size", type=float, metavar="UM", help="EM pixel size in µm, for files without one")
    p.add_argument("--em-channel", metavar="NAME", help="channel of an EM file with several")
    stage = p.add_argument_group("stage (one of)")
    stage.add_argument("--nav", metavar="NAV", help="SerialEM navigator holding the EM image as a map item")
    stage.add_argument("--map", metavar="LABEL", help="label of the map item in --nav")
    stage.add_argument("--mdoc", metavar="MDOC", help="SerialEM montage .mdoc/.idoc of the EM image")
    stage.add_argument("--stage-centre", nargs=2, type=float, metavar=("X", "Y"),
                       help="stage position (µm) of the EM image centre")
    stage.add_argument("--rotation", type=float, default=0.0, help="with --stage-centre: camera rotation, degrees")
    stage.add_argument("--tilt", type=float, default=0.0, help="with --stage-centre: stage tilt, degrees")
    stage.add_argument("--no-mirror", action="store_true",
                       help="with --stage-centre: image rows run along stage y (default: against it)")
    p.add_argument("--out", required=True, metavar="FILE.nav", help="navigator to write (a .csv is written beside)")
    p.add_argument("--overwrite", action="store_true", help="replace --out and its CSV if they exist")
    p.add_argument("--regis", type=int, help="registration number of the items (default: the map's, else 1)")
    p.add_argument("--xml", action="store_true", help="write an XML navigator instead of the text form")
    add_units_options(p)
    p.set_defaults(run=run)


def _read_targets(args: argparse.Namespace):
    """The target table (LM frame, µm) from a CSV, an LM image's spots or a label image."""
    import pandas as pd

    from ..targets import targets_from_mask, targets_from_points, targets_from_polygons, targets_from_spots

    if args.spots or args.mask:
        image = open_input(args.targets, "LM", args.pixel_size, pixel_option="--pixel-size")
        if args.spots:
            return targets_from_spots(image, channel=args.spots)
        return targets_from_mask(single_channel(image, args.targets, "label", "a single-channel label image"))
    path = Path(args.targets)
    if not path.is_file():
        raise ClemlabError(f"targets file {path} does not exist")
    try:
        table = pd.read_csv(path, encoding="utf-8-sig")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ClemlabError(f"targets file {path} is not a CSV table ({exc}); "
                           "for an image pass --spots or --mask") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in ("x", "y") if c not in table.columns]
    if missing:
        raise ClemlabError(f"targets file {path} lacks column(s) {missing}; it has {list(table.columns)}: "
                           "give x, y (and optionally z, name, sigma) in LM µm")
    try:
        xyz = table[[c for c in ("x", "y", "z") if c in table.columns]].apply(pd.to_numeric).to_numpy(float)
    except ValueError:
        raise ClemlabError(f"targets file {path}: x, y (z) must be numbers in µm") from None
    if "roi" in table.columns:
        groups = list(table.groupby("roi", sort=False))
        return targets_from_polygons([xyz[idx.index.to_numpy(), :2] for _, idx in groups],
                                     names=[str(k) for k, _ in groups])
    names = table["name"].astype(str).tolist() if "name" in table.columns else None
    sigma = pd.to_numeric(table["sigma"]).to_numpy(float) if "sigma" in table.columns else None
    return targets_from_points(xyz, names, sigma=sigma)


def _stage(args: argparse.Namespace, em):
    """The EM frame -> stage transform from --nav/--map, --mdoc or --stage-centre."""
    from ..io.serialem import mdoc_pixel_to_stage, read_navigator, stage_affine
    from ..targets import stage_transform

    if args.map and not args.nav:
        raise ClemlabError("--map names an item of --nav; give --nav too")
    given = [name for name, v in (("--nav", args.nav), ("--mdoc", args.mdoc), ("--stage-centre", args.stage_centre))
             if v is not None]
    if len(given) != 1:
        raise ClemlabError("a SerialEM navigator needs stage positions: give one of --nav NAV --map LABEL, "
                           "--mdoc MONTAGE.mdoc or --stage-centre X Y"
                           + (f" (got {' and '.join(given)})" if given else ""))
    shape = (em.sizes["y"], em.sizes["x"])
    regis = None
    if args.nav:
        if not args.map:
            raise ClemlabError(f"--nav {args.nav}: name the map item of the EM image with --map LABEL")
        nav = read_navigator(args.nav)
        try:
            item = nav[args.map]
        except (KeyError, IndexError):
            raise ClemlabError(f"{args.nav} has no item {args.map!r}; its maps are "
                               f"{[i.label for i in nav if i.kind == 'map']}") from None
        if item.map_shape != shape:
            raise ClemlabError(f"map {args.map!r} of {args.nav} is {item.map_shape[1]} x {item.map_shape[0]} px "
                               f"(width x height) but the EM image {args.em} is {shape[1]} x {shape[0]}: "
                               "give the map's own image with --em")
        pixel_to_stage, regis = item.pixel_to_stage(), item.regis
    elif args.mdoc:
        pixel_to_stage = mdoc_pixel_to_stage(args.mdoc)
    else:
        pixel_to_stage = stage_affine(args.stage_centre, em.clem.pixel_size["x"], shape, rotation=args.rotation,
                                      mirror=not args.no_mirror, tilt=args.tilt)
    return stage_transform(em, pixel_to_stage), regis


def run(args: argparse.Namespace) -> int:
    from ..io.serialem import write_navigator
    from ..targets import map_targets

    out = Path(args.out)
    if out.with_suffix(".csv").resolve() == Path(args.targets).resolve():
        raise ClemlabError(f"the table written beside {out} would be {out.with_suffix('.csv')}, the targets file "
                           "itself; choose another --out")
    check_output(out, args.overwrite)
    check_output(out.with_suffix(".csv"), args.overwrite)
    em = single_channel(open_input(args.em, "EM", args.em_pixel_size, None, args.em_channel,
                                   pixel_option="--em-pixel-size"),
                        args.em, "EM", "--em-channel")
    em_to_stage, map_regis = _stage(args, em)
    targets = _read_targets(args)
    reg = register_or_load(args)
    mapped = map_targets(reg, targets, em=em, stage=em_to_stage)
    regis = args.regis if args.regis is not None else (map_regis or 1)
    write_navigator(mapped, out, regis=regis, flavour="xml" if args.xml else "text", overwrite=args.overwrite)
    conf = int(round(mapped.attrs.get("confidence", 0.95) * 100))
    print(f"{len(mapped)} targets, stage µm (registration {regis}); error = predicted RMS, "
          f"ellipse = {conf} % semi-axes")
    print(f"{'name':>8} {'x':>10} {'y':>10} {'error':>7} {'ellipse':>15}  flags")
    for _, row in mapped.iterrows():
        flags = " ".join(f for f, on in (("OUTSIDE-EM-FIELD", row.outside_field),
                                         ("extrapolated", row.outside_hull)) if on)
        print(f"{row['name']:>8} {row.x:10.3f} {row.y:10.3f} {row.error:7.3f} "
              f"{row.ellipse_major:7.3f}x{row.ellipse_minor:<7.3f}  {flags}")
    n_out = int(np.sum(mapped.outside_field))
    if n_out:
        print(f"warning: {n_out} target(s) fall outside the EM image; they are written, flagged in their note")
    print(f"wrote {out} and {out.with_suffix('.csv')}")
    return 0

"""``clemlab register`` (a transform from a landmark file) and ``clemlab register-images``
(a transform from the image content, with a verdict)."""

from __future__ import annotations

import argparse

from ..errors import ClemlabError
from ._common import (LANDMARK_FORMATS, MODELS_HELP, Formatter, add_units_options, check_output, open_input, para,
                      read_landmarks, write_json)

__all__ = ["add_parsers"]

REGISTER_EXAMPLES = """\
examples:
  clemlab register pairs.json                           # affine fit, summary printed
  clemlab register bigwarp.csv --model similarity --out reg.json
  clemlab register bigwarp.csv --units-moving um --units-fixed nm
  clemlab register clicks.xml --model tps --robust      # ec-CLEM file, outliers down-weighted
"""

IMAGES_EXAMPLES = """\
examples:
  clemlab register-images lm.czi em.tif --moving-channel DAPI --out reg.json
  clemlab register-images Chromatin.png EM.png --moving-pixel-size 0.1 --fixed-pixel-size 0.05 \\
      --moving-channel B --fixed-channel R      # RGB pictures: one channel each
  clemlab register-images lm.tif em.tif --initial two_clicks.csv --model affine

exit status: 0 when the verdict is good, 3 when ambiguous, 4 when failed (the result is
written with --out only when good, or with --keep-uncertain), 2 on bad input.
"""

#: The library's words for what to do, as command-line options.
_OPTION_WORDS = {"(channel=)": "(--moving-channel / --fixed-channel)", "(initial=Landmarks)": "(--initial CLICKS.csv)"}

#: Exit status of register-images for each verdict.
VERDICT_STATUS = {"good": 0, "ambiguous": 3, "failed": 4}


def add_parsers(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("register", parents=[common], formatter_class=Formatter, epilog=REGISTER_EXAMPLES,
                       help="fit a transform to a landmark file and print how far to trust it",
                       description=para(f"Fit a transform to landmark pairs (moving/LM -> fixed/EM) and print "
                                   f"residuals, left-out errors and warnings. Reads {LANDMARK_FORMATS}."))
    p.add_argument("landmarks", metavar="LANDMARKS", help="landmark file")
    p.add_argument("--model", default="affine", help=f"transform model: {MODELS_HELP} (default: %(default)s)")
    p.add_argument("--robust", action="store_true", help="RANSAC: find and exclude gross outlier pairs")
    p.add_argument("--out", metavar="FILE.json", help="write the registration (transform, landmarks, errors) here")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_units_options(p)
    p.set_defaults(run=run_register)

    q = sub.add_parser("register-images", parents=[common], formatter_class=Formatter, epilog=IMAGES_EXAMPLES,
                       help="register two images from their content (no fiducials) and print the verdict",
                       description=para("Find the transform that maps MOVING onto FIXED (e.g. LM onto EM) from the "
                                   "image content: a global search over rotation, scale, mirror and shift, "
                                   "refined by local patch matches. The verdict (good / ambiguous / failed) "
                                   "says in words whether to trust it."))
    q.add_argument("moving", metavar="MOVING", help="image mapped from, e.g. the LM image")
    q.add_argument("fixed", metavar="FIXED", help="image mapped onto, e.g. the EM image")
    q.add_argument("--model", default="similarity",
                   help=f"model fitted to the patch matches: {MODELS_HELP} (default: %(default)s)")
    q.add_argument("--initial", metavar="LANDMARKS",
                   help=f"two or more rough clicks (moving -> fixed) to start from; {LANDMARK_FORMATS}")
    q.add_argument("--moving-channel", metavar="NAME", help="channel of a multi-channel moving image, e.g. DAPI")
    q.add_argument("--fixed-channel", metavar="NAME", help="channel of a multi-channel fixed image")
    q.add_argument("--moving-pixel-size", type=float, metavar="UM",
                   help="pixel size of the moving image in µm, for files without one (PNG, JPEG)")
    q.add_argument("--fixed-pixel-size", type=float, metavar="UM", help="pixel size of the fixed image in µm")
    q.add_argument("--moving-scene", metavar="SCENE", help="image of a container file (CZI scene, LIF image)")
    q.add_argument("--fixed-scene", metavar="SCENE", help="image of a container file (CZI scene, LIF image)")
    q.add_argument("--out", metavar="FILE.json", help="write the registration here (when the verdict is good)")
    q.add_argument("--keep-uncertain", action="store_true", help="write --out even when the verdict is ambiguous")
    q.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_units_options(q)
    q.set_defaults(run=run_register_images)


def run_register(args: argparse.Namespace) -> int:
    from ..registration import register

    if args.out:
        check_output(args.out, args.overwrite)
    lms, what = read_landmarks(args.landmarks, args.units_moving, args.units_fixed)
    print(what)
    reg = register(lms, model=args.model, robust=args.robust)
    print(reg.summary())
    if args.out:
        print(f"wrote {write_json(args.out, reg.to_dict(), args.overwrite)}")
    return 0


def run_register_images(args: argparse.Namespace) -> int:
    from ..imagereg import register_images

    if args.out:
        check_output(args.out, args.overwrite)
    initial = None
    if args.initial:
        initial, what = read_landmarks(args.initial, args.units_moving, args.units_fixed)
        print(f"initial clicks: {what}")
    elif args.units_moving or args.units_fixed:
        raise ClemlabError("--units-moving/--units-fixed apply to the --initial landmark file; give one")
    moving = open_input(args.moving, "moving", args.moving_pixel_size, args.moving_scene, args.moving_channel,
                        pixel_option="--moving-pixel-size")
    fixed = open_input(args.fixed, "fixed", args.fixed_pixel_size, args.fixed_scene, args.fixed_channel,
                       pixel_option="--fixed-pixel-size")
    match = register_images(moving, fixed, model=args.model, initial=initial)
    print(f"verdict: {match.verdict} (confidence {match.confidence:.2f})")
    for reason in match.reasons:
        for api, option in _OPTION_WORDS.items():
            reason = reason.replace(api, option)
        print(f"  {reason}")
    reg = match.registration
    if reg is not None:
        print(reg.summary())
    if args.out:
        if reg is not None and (match.verdict == "good" or (match.verdict == "ambiguous" and args.keep_uncertain)):
            print(f"wrote {write_json(args.out, reg.to_dict(), args.overwrite)}")
        else:
            hint = "; pass --keep-uncertain to write it anyway" if match.verdict == "ambiguous" else ""
            print(f"not written: {args.out} (the verdict is {match.verdict}{hint})")
    return VERDICT_STATUS.get(match.verdict, 4)

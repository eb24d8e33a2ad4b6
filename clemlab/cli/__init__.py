"""The ``clemlab`` command: one module per command group.

- ``demo``: the whole job on the bundled synthetic sample (:mod:`.demo`);
- ``info``, ``ngff-transform``: what files hold (:mod:`.files`);
- ``register``, ``register-images``: a transform from landmarks or from the images (:mod:`.register`);
- ``correlate``: LM on the EM grid, written as OME-Zarr / OME-TIFF (:mod:`.correlate`);
- ``targets``: LM targets to EM stage positions and a SerialEM navigator (:mod:`.targets`).

Errors a user can cause print as one line, ``clemlab: error: ...``, exit status 2 (``--debug``
shows the traceback); an unexpected failure also prints one line (exit 1) and asks for
``--debug``. Ctrl-C stops with exit status 130; the writers leave no half-written output.
Warnings print as ``clemlab: warning: ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import warnings

from ._common import Formatter, para
from .demo import run_demo

__all__ = ["main", "run_demo"]

EXAMPLES = """\
examples:
  clemlab demo                                   # try it: synthetic sample, overlay.png and results
  clemlab info em.tif lm.czi                     # what the files hold, pixel sizes and their source
  clemlab register pairs.csv --model similarity  # fit landmarks, print how far to trust the fit
  clemlab correlate lm.czi em.tif --landmarks pairs.csv --out corr.ome.zarr
  clemlab targets spots.csv --registration reg.json --em map.mrc --nav s.nav --map 12 --out t.nav
  clemlab register-images lm.tif em.tif --out reg.json

'clemlab COMMAND --help' shows each command's options and examples.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    from . import correlate, demo, files, register, targets
    from .. import __version__

    parser = argparse.ArgumentParser(prog="clemlab", formatter_class=Formatter, epilog=EXAMPLES,
                                     description=para("Correlative light and electron microscopy: open, register, "
                                                 "correlate and target, from the command line."))
    parser.add_argument("--version", action="version", version=f"clemlab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    # --debug also after the command; SUPPRESS keeps a --debug given before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.add_parser(sub, common)
    files.add_parsers(sub, common)
    register.add_parsers(sub, common)
    correlate.add_parser(sub, common)
    targets.add_parser(sub, common)
    return parser


def _say_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"clemlab: warning: {message}", file=sys.stderr)


def _fail(args: argparse.Namespace, message: str, status: int) -> int:
    if getattr(args, "json_errors", False):  # the conformance runner reads a JSON message
        print(json.dumps({"message": message}))
    print(f"clemlab: error: {message}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``clemlab`` console script; returns the exit status."""
    from ..errors import ClemlabError

    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        with warnings.catch_warnings():  # restored on return: the caller's warning display is untouched
            if not debug:
                warnings.showwarning = _say_warning
            return args.run(args)
    except BrokenPipeError:  # output piped into a program that stopped reading (e.g. head)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- nothing more is printed: the process ends
        return 141
    except KeyboardInterrupt:
        print("\nclemlab: interrupted; no output was left half-written", file=sys.stderr)
        return 130
    except (ClemlabError, OSError, ValueError) as exc:
        if debug:
            traceback.print_exc()
        return _fail(args, str(exc) or type(exc).__name__, 2)
    except Exception as exc:  # a bug, not the user's input: one line, the traceback on request
        if debug:
            traceback.print_exc()
            return _fail(args, f"{type(exc).__name__}: {exc}", 1)
        return _fail(args, f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback "
                           "and report it)", 1)

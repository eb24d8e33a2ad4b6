"""What several commands share: reading landmark files of any format, opening images with
command-line options, refusing to replace outputs, writing JSON results.

Heavy libraries are imported inside the functions, so ``clemlab --help`` stays fast.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ClemlabError, FileFormatError, LandmarkError

#: Landmark file formats ``clemlab register`` and friends read, for help texts and errors.
LANDMARK_FORMATS = ("clemlab JSON (.json), clemlab CSV (header name,active,x_src,y_src,...), "
                    "BigWarp CSV (no header: name, active, moving x, y[, z], fixed x, y[, z]) "
                    "or ec-CLEM XML (.xml)")

#: Models ``register`` fits, for help texts (the library checks the name).
MODELS_HELP = "translation, rigid, similarity, affine, projective, polynomial2, tps"


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Help text as written: the examples keep their lines."""


def para(text: str) -> str:
    """A description paragraph wrapped for the terminal (the help formatter keeps line breaks)."""
    return textwrap.fill(" ".join(text.split()), 88)


def add_units_options(parser: argparse.ArgumentParser) -> None:
    """``--units-moving`` / ``--units-fixed`` for landmark files that do not state their unit."""
    parser.add_argument("--units-moving", metavar="UNIT",
                        help="unit of the moving (LM, source) coordinates in the landmark file: um, nm, mm "
                             "(default: µm; BigWarp files do not say theirs)")
    parser.add_argument("--units-fixed", metavar="UNIT",
                        help="unit of the fixed (EM, target) coordinates in the landmark file (default: µm)")


def _sniff_csv(text: str) -> str:
    """``"clemlab"`` (a header naming x_src), ``"bigwarp"`` (6 or 8 fields, active true/false) or ``""``."""
    for row in csv.reader(io.StringIO(text)):
        if not any(cell.strip() for cell in row):
            continue
        cells = [c.strip() for c in row]
        if "x_src" in cells:
            return "clemlab"
        if len(cells) in (6, 8) and cells[1].lower() in ("true", "false"):
            return "bigwarp"
        return ""
    return ""


def _scaled(lms, factor_src: float, factor_dst: float):
    """The landmarks with source / target coordinates (and uncertainties) multiplied."""
    from ..landmarks import Landmarks

    sig = lms.sigmas(active_only=False)
    return Landmarks.from_points(
        lms.src(active_only=False) * factor_src, lms.dst(active_only=False) * factor_dst, names=lms.names,
        active=list(lms.active), sigma_src=None if sig is None else sig[0] * factor_src,
        sigma_dst=None if sig is None else sig[1] * factor_dst,
        source_frame=lms.source_frame, target_frame=lms.target_frame)


def read_landmarks(path: str | os.PathLike, units_moving: str | None = None, units_fixed: str | None = None):
    """Read a landmark file of any format clemlab reads, the format told by its content.

    Parameters
    ----------
    path : path-like
        clemlab JSON or CSV, BigWarp CSV, or ec-CLEM XML (see :data:`LANDMARK_FORMATS`).
    units_moving, units_fixed : str, optional
        Unit of the source / target coordinates in the file (``"um"``, ``"nm"``, ...);
        default µm. A clemlab JSON file states its unit (µm), so another unit is refused.

    Returns
    -------
    (Landmarks, str)
        Landmarks in µm, source (moving, LM) -> target (fixed, EM), and a line naming the
        format and units read.
    """
    from ..image import unit_to_um
    from ..landmarks import Landmarks

    p = Path(path)
    if not p.is_file():
        raise FileFormatError(f"landmarks file {p} does not exist" if not p.is_dir()
                              else f"{p} is a folder; give a landmarks file ({LANDMARK_FORMATS})")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise LandmarkError(f"landmarks file {p} is not UTF-8 text; save it as UTF-8 ({LANDMARK_FORMATS})") from None
    suffix = p.suffix.lower()
    given = units_moving is not None or units_fixed is not None
    moving, fixed = units_moving or "µm", units_fixed or "µm"
    if suffix == ".json" or text.lstrip().startswith("{"):
        if given and (unit_to_um(moving) != 1 or unit_to_um(fixed) != 1):
            raise LandmarkError(f"{p} is a clemlab JSON landmarks file, which is in µm by definition; "
                                "drop --units-moving/--units-fixed")
        return Landmarks.read(p) if suffix == ".json" else Landmarks.from_json_dict(
            json.loads(text), where=f"landmarks file {p}"), f"{p}: clemlab JSON landmarks (µm)"
    if suffix == ".xml" or text.lstrip().startswith("<"):
        lms, what = Landmarks.from_ecclem(p), "ec-CLEM XML landmarks"
    else:
        kind = _sniff_csv(text)
        if kind == "bigwarp":
            lms = Landmarks.from_bigwarp(p, units_moving=moving, units_fixed=fixed)
            note = "" if given else ("; BigWarp files do not state their unit: give --units-moving/--units-fixed "
                                     "if not µm")
            return lms, f"{p}: BigWarp CSV landmarks, moving in {moving}, fixed in {fixed}{note}"
        if kind != "clemlab":
            raise LandmarkError(f"{p} is not a landmark file clemlab reads; give {LANDMARK_FORMATS}")
        lms, what = Landmarks.from_csv_text(text, where=f"landmarks file {p}"), "clemlab CSV landmarks"
    f_src, f_dst = unit_to_um(moving), unit_to_um(fixed)
    if (f_src, f_dst) != (1.0, 1.0):
        lms = _scaled(lms, f_src, f_dst)
    return lms, f"{p}: {what}, moving in {moving}, fixed in {fixed}"


#: The format an output file's suffix promises; an existing file of another format is kept
#: even with ``--overwrite``.
_FORMAT_OF_SUFFIX = {".json": "JSON", ".tif": "TIFF", ".tiff": "TIFF", ".png": "PNG", ".csv": "CSV",
                     ".xml": "XML", ".nav": "SerialEM navigator"}


def check_output(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an output path before any work is done: an existing one without ``--overwrite``,
    one of another format than its suffix promises, a missing or read-only folder. Returns
    ``Path(path)``."""
    from .._atomic import check_writable

    p = Path(path)
    if os.path.lexists(p) and not overwrite:
        raise FileFormatError(f"{p} exists; pass --overwrite to replace it, or choose another --out")
    if p.is_dir():  # a store folder (OME-Zarr) being replaced: its parent must be writable
        parent = p.parent if str(p.parent) else Path(".")
        check_writable(parent / f"{p.name}.probe", overwrite=True)
        return p
    check_writable(p, overwrite=True, fmt=_FORMAT_OF_SUFFIX.get(p.suffix.lower()))
    return p


def write_json(path: str | os.PathLike, doc: dict, overwrite: bool) -> Path:
    """Write ``doc`` as indented UTF-8 JSON, atomically; refuses to replace without ``overwrite``."""
    from .._atomic import atomic_write_text

    try:
        return atomic_write_text(path, json.dumps(doc, indent=1, ensure_ascii=False) + "\n", overwrite=overwrite,
                                 fmt="JSON")
    except FileExistsError:
        raise FileFormatError(f"{path} exists; pass --overwrite to replace it, or choose another --out") from None


def parse_scene(value: str | None) -> int | str | None:
    """A ``--scene`` value: an index when it is a whole number, else a name."""
    if value is None:
        return None
    return int(value) if value.isdigit() else value


def open_input(path: str, role: str, pixel_size: float | None = None, scene: str | None = None,
               channel: str | None = None, *, pixel_option: str):
    """Open an image for a command; ``role`` (``"LM"``, ``"EM"``, ``"moving"``...) names it in errors.

    ``pixel_size`` is in µm; a file without one is refused naming ``pixel_option``, the
    command's option that gives it. ``channel`` picks one channel (by name, or index when a
    whole number) of a multi-channel image; without it a multi-channel image is returned whole.
    """
    from ..errors import MissingPixelSizeError
    from ..io import open_image

    modality = role if role in ("LM", "EM") else None
    try:
        img = open_image(path, pixel_size=pixel_size, units="µm", scene=parse_scene(scene), modality=modality)
    except MissingPixelSizeError:
        raise MissingPixelSizeError(f"the {role} image {path} stores no physical pixel size; give it in µm "
                                    f"with {pixel_option} (e.g. {pixel_option} 0.1)") from None
    if channel is not None:
        if "c" not in img.dims:
            raise ClemlabError(f"{path} has no channels; drop the channel option for the {role} image")
        names = [str(c) for c in img.coords["c"].values]
        if channel in names:
            img = img.sel(c=img.coords["c"].values[names.index(channel)])
        elif channel.isdigit() and int(channel) < len(names):
            img = img.isel(c=int(channel))
        else:
            raise ClemlabError(f"{path} has channels {names}; the {role} channel {channel!r} is not one of them")
    return img


def single_channel(img, path: str, role: str, option: str):
    """``img`` without a ``c`` dim; a multi-channel image is refused, naming ``option``."""
    if "c" in img.dims:
        if img.sizes["c"] == 1:
            return img.isel(c=0)
        names = [str(c) for c in img.coords["c"].values]
        raise ClemlabError(f"the {role} image {path} has {len(names)} channels {names}; pick one with {option} NAME")
    return img


def guarded_write(out: Path, write: Callable[[], Any]) -> Any:
    """Call ``write()`` (which writes ``out``, computing with dask's threads); if it fails or
    is interrupted (Ctrl-C), wait for the threads still running, then remove what they left
    beside ``out`` (hidden ``.<name>.*`` temporaries created meanwhile). ``out`` itself is
    never touched here: the writers replace it only once complete."""
    from concurrent.futures import ThreadPoolExecutor

    import dask

    folder = out.parent if str(out.parent) else Path(".")
    prefix = f".{out.name}."
    before = {q.name for q in folder.iterdir() if q.name.startswith(prefix)}
    pool = ThreadPoolExecutor(os.cpu_count() or 1)
    try:
        with dask.config.set(scheduler="threads", pool=pool):
            return write()
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        for q in folder.iterdir():
            if q.name.startswith(prefix) and q.name not in before:
                shutil.rmtree(q, ignore_errors=True) if q.is_dir() else q.unlink(missing_ok=True)
        raise
    finally:
        pool.shutdown(wait=True)


def describe_output(path: Path) -> str:
    """``path`` with its size, for the last line of a command."""
    if path.is_dir():
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    else:
        size = path.stat().st_size
    return f"{path} ({size / 1e6:.1f} MB)"


def register_or_load(args: argparse.Namespace):
    """The registration of a command: ``--registration FILE`` read, or ``--landmarks FILE``
    fitted with ``--model``; prints what was used."""
    from ..registration import Registration, register

    if getattr(args, "registration", None):
        reg = Registration.load(args.registration)
        print(f"registration {args.registration}: {reg.model}, residual RMS {reg.rms * 1e3:.1f} nm")
        return reg
    lms, what = read_landmarks(args.landmarks, args.units_moving, args.units_fixed)
    print(what)
    reg = register(lms, model=args.model)
    print(reg.summary())
    return reg

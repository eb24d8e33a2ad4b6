"""TIFF reading (OME, ImageJ, SEM/FIB vendors, plain); the writer is :mod:`clemlab.io.tiff_write`.

Where the pixel size comes from, in order (the first source that recognises the file wins;
a recognised instrument format without a calibration is *uncalibrated*, its dots-per-inch
tags are never used because instruments write screen defaults such as 64 or 96 dpi there):

1. OME-XML (``PhysicalSizeX/Y/Z`` with ``PhysicalSize*Unit``, default µm; channel names and
   colours; ``Plane PositionX/Y/Z`` as the position of the first pixel centre). Files written
   by :func:`write_ome_tiff` also carry a ``clemlab`` MapAnnotation holding the exact pixel
   size, origin and attrs; it takes precedence so a round trip is exact.
2. FEI / Thermo Fisher SEM/FIB (``[Scan] PixelWidth/PixelHeight`` in metres, or for navigation
   camera / ion-beam images the beam section's ``HFW / ResolutionX``, ``VFW / ResolutionY``).
   The instrument data bar below the image (``height - [Image] ResolutionY`` rows, else
   ``[PrivateFei] DatabarHeight``) is cropped unless ``crop_databar=False``.
3. Zeiss SmartSEM (``CZ_SEM`` tag): the full-precision pixel size stored in the unnamed
   parameter block (metres, referred to a 1024-pixel-wide frame, hence ``* 1024 / width``);
   the rounded ``ap_image_pixel_size`` / ``ap_pixel_size`` (with their units) are the fallback.
4. Olympus SIS (``pixelsizex/y`` in metres, applied to every series of the file that has the
   same height and width, since the RGB preview shows the same field).
5. Tescan (private tag 50431, text ``PixelSizeX=...`` / ``PixelSizeY=...`` in metres).
6. OpenFIBSEM / fibsem-os (tifffile JSON description with ``pixel_size`` ``{x, y}`` in metres
   and ``microscope_state``; the stage position is kept in ``attrs["stage_position"]``, µm).
7. JEOL SEM side-car ``<name>.txt`` (``$KEY value`` lines), first match wins:
   ``$CM_FIELD_OF_VIEW`` / image size; ``$$SM_MICRON_MARKER`` length / ``$$SM_MICRON_BAR``
   pixels, rescaled by ``$CM_FULL_SIZE`` width / image width; nominal 128 mm / ``$CM_MAG`` /
   image width (JEOL's field of view at magnification 1). ``pixel_size_source`` names the
   route. Rows below ``$CM_FULL_SIZE`` height are a data bar and are cropped.
8. DigitalMicrograph-exported TIFF (tags 65003-65011: units, offsets, scales of DM dims
   x, y, z). The offset is the calibrated value of the first pixel: used as the origin.
9. ImageJ (``XResolution``/``YResolution`` in pixels per ``unit`` from the description,
   ``spacing`` for z, ``xorigin``/``yorigin``/``zorigin`` in pixels).
10. tifffile "shaped" JSON description (3DCT convention): ``spacing`` + ``unit`` give the z step.
11. Plain resolution tags: pixels per inch / cm / mm / µm, inverted. Resolution 1/1 without a
    unit means uncalibrated.

Pyramids: :func:`read_tiff` reads the full-resolution level; :func:`open_multiscale` gives all
levels as an :class:`xarray.DataTree` with children ``scale0``, ``scale1``, ...

Axes: tifffile axis codes ``Y X`` -> ``y x``; ``Z`` -> ``z``; ``C`` and RGB samples ``S`` ->
``c`` (RGB named ``R, G, B``, alpha dropped); one other stack axis (``I``, ``Q``, ``T``) becomes
``z`` when there is no ``Z``; a spacing for it is used when the file gives one, otherwise
the plane spacing is reported as unknown.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FileFormatError, ImageError
from . import RawImage, fmt_path, want_lazy

__all__ = ["read_tiff", "open_multiscale", "CLEMLAB_NAMESPACE"]

#: Namespace of the MapAnnotation carrying clemlab's exact geometry and attrs.
CLEMLAB_NAMESPACE = "clemlab"
_ANNOTATION_KEY = "clemlab:image"
_ANNOTATION_VERSION = 1

_DIM_OF_AXIS = {"Y": "y", "X": "x", "Z": "z", "C": "c", "S": "c"}
_STACK_AXES = "IQTRAPHEOLVM"


# ---------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------
def _um(value: float, unit: str) -> float:
    from ..image import unit_to_um

    return float(value) * unit_to_um(unit)


def _finite_positive(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def _rational(value: Any) -> float | None:
    """TIFF RATIONAL tag value (num, den) -> float, None when unusable."""
    try:
        num, den = value
        if den == 0:
            return None
        return float(num) / float(den)
    except (TypeError, ValueError):
        return _finite_positive(value)


def _tag(page: Any, key: Any) -> Any:
    tag = page.tags.get(key)
    return None if tag is None else tag.value


# ---------------------------------------------------------------------------------------
# arranging axes
# ---------------------------------------------------------------------------------------
def _plan_axes(axes: str, shape: tuple[int, ...], rgb: bool, where: str) -> tuple[list, tuple[str, ...], str | None]:
    """Work out how a tifffile series maps to clemlab dims.

    Returns ``(index, dims, stack_axis)``: ``index`` is a list of per-axis actions
    (``dim name`` or an int to select), ``dims`` the resulting dims in tifffile order,
    ``stack_axis`` the tifffile code turned into ``z`` (or None).
    """
    axes = axes.upper()
    actions: list[Any] = []
    used: list[str] = []
    stack_axis = None
    has_z = "Z" in axes
    for code, n in zip(axes, shape):
        if code in _DIM_OF_AXIS:
            dim = _DIM_OF_AXIS[code]
            if dim in used:
                if n == 1:
                    actions.append(0)
                    continue
                raise ImageError(
                    f"{where}: TIFF axes {axes!r} shape {shape} have two channel-like axes; "
                    "clemlab images have one 'c' axis"
                )
            actions.append(dim)
            used.append(dim)
        elif n == 1:
            actions.append(0)
        elif not has_z and stack_axis is None and code in _STACK_AXES:
            actions.append("z")
            used.append("z")
            stack_axis = code
        else:
            raise ImageError(
                f"{where}: TIFF axes {axes!r} with shape {shape} have more non-spatial axes than "
                "clemlab images (c, z, y, x) can hold; split the file (e.g. one time point per "
                "file) first"
            )
    return actions, tuple(used), stack_axis


def _arrange(arr: Any, actions: list, dims: tuple[str, ...], rgb: bool) -> tuple[Any, tuple[str, ...]]:
    """Select, drop alpha and transpose ``arr`` (numpy or dask) into clemlab dim order."""
    sel = tuple(a if isinstance(a, int) else slice(None) for a in actions)
    out = arr[sel]
    kept = [a for a in actions if not isinstance(a, int)]
    if rgb and "c" in kept:
        ci = kept.index("c")
        if out.shape[ci] == 4:  # RGBA: drop alpha
            out = out[(slice(None),) * ci + (slice(0, 3),)]
    order = [kept.index(d) for d in ("c", "z", "y", "x") if d in kept]
    out = out.transpose(order)
    return out, tuple(kept[i] for i in order)


# ---------------------------------------------------------------------------------------
# calibration sources
# ---------------------------------------------------------------------------------------
class _Cal:
    """Calibration found in a file: µm per dim, origin (µm / px), notes."""

    def __init__(self, source: str):
        self.source = source
        self.size: dict[str, float] = {}
        self.origin: dict[str, float] = {}
        self.origin_px: dict[str, float] = {}
        self.missing = ""
        self.attrs: dict[str, Any] = {}
        self.channels: list[str] | None = None
        self.colors: dict[str, str] | None = None
        self.modality: str | None = None
        self.frame: str | None = None
        self.crop_rows = 0
        self.exact: dict | None = None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _ome_color(value: Any) -> str | None:
    """OME Color (signed int32 RGBA) -> '#rrggbb'."""
    try:
        v = int(value) & 0xFFFFFFFF
    except (TypeError, ValueError):
        return None
    return "#{:02x}{:02x}{:02x}".format((v >> 24) & 255, (v >> 16) & 255, (v >> 8) & 255)


def _hex_to_ome_color(color: str) -> int | None:
    m = re.fullmatch(r"#?([0-9a-fA-F]{6})([0-9a-fA-F]{2})?", color.strip())
    if not m:
        return None
    rgba = int(m.group(1) + (m.group(2) or "ff"), 16)
    return rgba - 2**32 if rgba >= 2**31 else rgba


def _cal_ome(tf: Any, series: int, where: str) -> _Cal:
    cal = _Cal("OME-XML")
    try:
        root = ET.fromstring(tf.ome_metadata)
    except ET.ParseError as exc:
        raise FileFormatError(f"{where}: its OME-XML metadata is not valid XML ({exc})") from None
    images = [el for el in root if _local(el.tag) == "Image"]
    if not images:
        cal.missing = "its OME-XML has no Image element"
        return cal
    image = images[min(series, len(images) - 1)]
    pixels = next((el for el in image if _local(el.tag) == "Pixels"), None)
    if pixels is None:
        cal.missing = "its OME-XML Image has no Pixels element"
        return cal
    for axis in ("X", "Y", "Z"):
        v = _finite_positive(pixels.get(f"PhysicalSize{axis}"))
        if v is not None:
            cal.size[axis.lower()] = _um(v, pixels.get(f"PhysicalSize{axis}Unit", "µm"))
    if not cal.size:
        cal.missing = "its OME-XML gives no PhysicalSizeX/PhysicalSizeY"
    names, colors = [], {}
    for ch in (el for el in pixels if _local(el.tag) == "Channel"):
        name = ch.get("Name")
        names.append(name)
        col = _ome_color(ch.get("Color")) if ch.get("Color") is not None else None
        if col is not None and name:
            colors[name] = col
    if names and all(names) and len(set(names)) == len(names):
        cal.channels = [str(n) for n in names]
        cal.colors = colors or None
    planes = [el for el in pixels if _local(el.tag) == "Plane"]
    first = next(
        (pl for pl in planes if pl.get("TheC", "0") == "0" and pl.get("TheZ", "0") == "0" and pl.get("TheT", "0") == "0"),
        None,
    )
    if first is not None:
        for axis in ("X", "Y", "Z"):
            v = first.get(f"Position{axis}")
            if v is not None:
                try:
                    cal.origin[axis.lower()] = _um(float(v), first.get(f"Position{axis}Unit", "µm"))
                except (ValueError, ImageError):
                    pass
        if "x" in cal.origin and "y" in cal.origin:
            # OME's Plane Position is the stage position of the plane; it is also the origin
            cal.attrs["stage_position"] = {
                **{d: cal.origin[d] for d in ("x", "y", "z") if d in cal.origin}, "units": "µm",
                "source": "OME-XML Plane PositionX/Y/Z", "refers_to": "first plane (C=0, Z=0, T=0)",
            }
    # clemlab's own annotation: exact values
    refs = {el.get("ID") for el in image if _local(el.tag) == "AnnotationRef"}
    for el in root.iter():
        if _local(el.tag) != "MapAnnotation" or el.get("Namespace") != CLEMLAB_NAMESPACE:
            continue
        if refs and el.get("ID") not in refs:
            continue
        for m in el.iter():
            if _local(m.tag) == "M" and m.get("K") == _ANNOTATION_KEY and m.text:
                try:
                    cal.exact = json.loads(m.text)
                except json.JSONDecodeError:
                    cal.exact = None
    return cal


def _cal_fei(tf: Any, page: Any, height: int) -> _Cal:
    cal = _Cal("FEI/Thermo Fisher metadata")
    md = tf.fei_metadata or {}
    scan = md.get("Scan") or {}
    image = md.get("Image") or {}
    px = _finite_positive(scan.get("PixelWidth"))
    py = _finite_positive(scan.get("PixelHeight"))
    if px is None or py is None:
        beam_name = (md.get("Beam") or {}).get("Beam")
        beam = md.get(beam_name) if isinstance(beam_name, str) else None
        rx, ry = _finite_positive(image.get("ResolutionX")), _finite_positive(image.get("ResolutionY"))
        if isinstance(beam, dict) and rx and ry:
            hfw, vfw = _finite_positive(beam.get("HFW")), _finite_positive(beam.get("VFW"))
            if hfw and vfw:
                px, py = hfw / rx, vfw / ry
                cal.attrs["pixel_size_note"] = f"from [{beam_name}] HFW/VFW over [Image] ResolutionX/Y"
    if px is not None and py is not None:
        cal.size = {"x": px * 1e6, "y": py * 1e6}
    else:
        cal.missing = (
            "its FEI/Thermo Fisher metadata has no [Scan] PixelWidth/PixelHeight and no beam "
            "section with a field width (e.g. a navigation-camera image without [IRBeam])"
        )
    ry = image.get("ResolutionY")
    try:
        ry = int(ry)
    except (TypeError, ValueError):
        ry = None
    if ry is not None and 0 < ry < height:
        cal.crop_rows = height - ry
    else:
        dbh = (md.get("PrivateFei") or {}).get("DatabarHeight")
        try:
            dbh = int(dbh)
        except (TypeError, ValueError):
            dbh = 0
        if 0 < dbh < height:
            cal.crop_rows = dbh
    stage = md.get("Stage") or {}
    keep = {k: stage.get(k) for k in ("StageX", "StageY", "StageZ", "StageR", "StageT") if isinstance(stage.get(k), (int, float))}
    if keep:
        cal.attrs["stage_m"] = keep
        if "StageX" in keep and "StageY" in keep:
            cal.attrs["stage_position"] = {
                **{k[-1].lower(): float(keep[k]) * 1e6 for k in ("StageX", "StageY", "StageZ") if k in keep},
                "units": "µm", "source": "FEI [Stage] StageX/StageY/StageZ (m)",
                "refers_to": "stage position when the image was taken",
            }
    cal.attrs["instrument"] = "FEI/Thermo Fisher SEM/FIB"
    return cal


def _cal_zeiss(tf: Any, page: Any, width: int) -> _Cal:
    cal = _Cal("Zeiss SmartSEM metadata")
    md = tf.sem_metadata or {}
    cal.attrs["instrument"] = "Zeiss SEM"
    precise = None
    block = md.get("")
    if isinstance(block, (tuple, list)) and len(block) > 3:
        v = _finite_positive(block[3])
        if v is not None:
            precise = v * 1e6 * 1024.0 / width  # m, referred to a 1024-px frame
    rounded = None
    for key, scale in (("ap_image_pixel_size", 1.0), ("ap_pixel_size", 1024.0 / width)):
        entry = md.get(key)
        if isinstance(entry, (tuple, list)) and len(entry) >= 3:
            v = _finite_positive(entry[1])
            if v is not None:
                try:
                    rounded = _um(v, str(entry[2])) * scale
                except ImageError:
                    continue
                break
    if precise is not None and (rounded is None or abs(precise - rounded) <= 0.01 * rounded):
        cal.size = {"x": precise, "y": precise}
    elif rounded is not None:
        cal.size = {"x": rounded, "y": rounded}
        cal.attrs["pixel_size_note"] = "from the rounded SmartSEM 'Image Pixel Size' / 'Pixel Size'"
    else:
        cal.missing = "its Zeiss SmartSEM metadata gives no pixel size"
    return cal


def _sis_metadata(tf: Any) -> dict | None:
    for page in tf.pages:
        for key in (33560, 33471):
            v = _tag(page, key)
            if isinstance(v, dict) and "pixelsizex" in v:
                return v
    return None


def _cal_sis(md: dict, shape_yx: tuple[int, int], tf: Any) -> _Cal:
    cal = _Cal("Olympus SIS metadata")
    cal.attrs["instrument"] = "Olympus SIS"
    px, py = _finite_positive(md.get("pixelsizex")), _finite_positive(md.get("pixelsizey"))
    calibrated_shapes = {tuple(p.shape[:2]) for p in tf.pages if _tag(p, 33560) is not None or _tag(p, 33471) is not None}
    if px and py and (not calibrated_shapes or tuple(shape_yx) in calibrated_shapes):
        cal.size = {"x": px * 1e6, "y": py * 1e6}
    else:
        cal.missing = "its Olympus SIS metadata gives no pixel size for this image"
    return cal


def _cal_tescan(text: str) -> _Cal:
    cal = _Cal("Tescan metadata")
    cal.attrs["instrument"] = "Tescan"
    vals = {}
    for key in ("PixelSizeX", "PixelSizeY"):
        m = re.search(rf"^\s*{key}\s*=\s*([-+0-9.eE]+)", text, re.MULTILINE)
        if m:
            vals[key] = _finite_positive(m.group(1))
    px = vals.get("PixelSizeX")
    py = vals.get("PixelSizeY") or px
    if px and py:
        cal.size = {"x": px * 1e6, "y": py * 1e6}
    else:
        cal.missing = "its Tescan metadata gives no PixelSizeX"
    return cal


# JEOL defines the horizontal field of view at magnification 1 as 128 mm (the reference photo
# width of its SEMs); the pixel size from $CM_MAG is therefore nominal, not measured.
_JEOL_FOV_AT_MAG1_UM = 128_000.0
_JEOL_KEYS = ("$$SM_MICRON_BAR", "$CM_FORMAT", "$CM_MAG", "$CM_FIELD_OF_VIEW")


def _jeol_sidecar(path: Path) -> Path | None:
    for cand in (path.with_suffix(".txt"), path.with_suffix(".TXT")):
        if cand.is_file():
            try:
                head = cand.read_bytes()[:20000].decode("latin-1")
            except OSError:
                return None
            if any(key in head for key in _JEOL_KEYS):
                return cand
    return None


def _jeol_fields(txt: Path) -> dict[str, str]:
    """``$KEY value`` lines of a JEOL side-car (the first occurrence of a key wins)."""
    raw = txt.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:  # older JEOL software writes Latin-1 ("µ" is one byte)
        text = raw.decode("latin-1")
    fields: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and parts[0].startswith("$"):
            fields.setdefault(parts[0], parts[1].strip())
    return fields


def _jeol_lengths_um(text: str) -> list[float]:
    """Lengths in a JEOL value such as ``25.4µm 19.05µm`` or ``25.4 um 19.05 um``, in µm."""
    out = []
    for number, unit in re.findall(r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*([A-Za-zµμ]+)", text):
        try:
            out.append(_um(float(number), unit))
        except (ValueError, ImageError):
            return []
    return out


def _cal_jeol(txt: Path, shape_yx: tuple[int, int]) -> _Cal:
    """JEOL side-car calibration, first match wins:

    1. ``$CM_FIELD_OF_VIEW`` (width and height of the scanned field, with units) / image size;
    2. ``$$SM_MICRON_MARKER`` length / ``$$SM_MICRON_BAR`` pixels (in ``$CM_FULL_SIZE`` pixels,
       rescaled to the image width);
    3. nominal: 128 mm / ``$CM_MAG`` / image width (JEOL's field of view at magnification 1).
    """
    cal = _Cal(f"JEOL side-car {txt.name}")
    cal.attrs["instrument"] = "JEOL SEM"
    fields = _jeol_fields(txt)
    h, w = shape_yx
    full = fields.get("$CM_FULL_SIZE", "").split()
    full_w = full_h = None
    if len(full) >= 2:
        try:
            full_w, full_h = int(full[0]), int(full[1])
        except ValueError:
            full_w = full_h = None
    image_h = full_h if full_h and full_w == w and 0 < full_h <= h else h
    if full_h and full_w == w and 0 < full_h < h:
        cal.crop_rows = h - full_h

    fov = _jeol_lengths_um(fields.get("$CM_FIELD_OF_VIEW", ""))
    bar = _finite_positive(fields.get("$$SM_MICRON_BAR"))
    marker = fields.get("$$SM_MICRON_MARKER", "")
    marker_um = _jeol_lengths_um(marker)
    mag = _finite_positive(fields.get("$CM_MAG"))
    if fov and fov[0] > 0:
        sx = fov[0] / w
        sy = fov[1] / image_h if len(fov) > 1 and fov[1] > 0 else sx
        cal.size = {"x": sx, "y": sy}
        cal.source = f"JEOL side-car {txt.name}: $CM_FIELD_OF_VIEW {fields['$CM_FIELD_OF_VIEW']} / image size"
    elif bar and len(marker_um) == 1 and marker_um[0] > 0:
        size = marker_um[0] / bar
        if full_w and full_w != w:
            size *= full_w / w
        cal.size = {"x": size, "y": size}
        cal.source = f"JEOL side-car {txt.name}: $$SM_MICRON_MARKER {marker} / $$SM_MICRON_BAR {fields['$$SM_MICRON_BAR']} px"
    elif mag:
        size = _JEOL_FOV_AT_MAG1_UM / mag / w
        cal.size = {"x": size, "y": size}
        cal.source = (
            f"JEOL side-car {txt.name}: nominal, from $CM_MAG {fields['$CM_MAG']} "
            "(128 mm field of view at magnification 1 / magnification / image width)"
        )
    else:
        cal.missing = (
            f"its JEOL side-car {txt.name} has none of $CM_FIELD_OF_VIEW, "
            "$$SM_MICRON_BAR + $$SM_MICRON_MARKER or $CM_MAG"
        )
    return cal


def _fibsem_metadata(tf: Any) -> dict | None:
    """The JSON metadata OpenFIBSEM / fibsem-os writes into the ImageDescription, if this is one."""
    shaped = tf.shaped_metadata if tf.is_shaped else None
    md = shaped[0] if shaped else None
    if not isinstance(md, dict):
        return None
    px = md.get("pixel_size")
    if isinstance(px, dict) and "x" in px and ("microscope_state" in md or "image" in md):
        return md
    return None


def _cal_fibsem(md: dict) -> _Cal:
    """OpenFIBSEM / fibsem-os: ``pixel_size`` ``{"x", "y"}`` in metres; the stage position
    (``microscope_state.stage_position`` x/y/z, metres) is kept in ``attrs``."""
    cal = _Cal("OpenFIBSEM metadata pixel_size (m)")
    cal.attrs["instrument"] = "OpenFIBSEM / fibsem-os"
    px = md["pixel_size"]
    sx, sy = _finite_positive(px.get("x")), _finite_positive(px.get("y"))
    if sx is not None:
        cal.size = {"x": sx * 1e6, "y": (sy if sy is not None else sx) * 1e6}
    else:
        cal.missing = "its OpenFIBSEM metadata has no positive pixel_size"
    image = md.get("image") if isinstance(md.get("image"), dict) else {}
    beam = image.get("beam_type")
    if isinstance(beam, str):
        cal.attrs["beam_type"] = beam
    if "version" in md:
        cal.attrs["fibsem_metadata_version"] = str(md["version"])
    state = md.get("microscope_state") if isinstance(md.get("microscope_state"), dict) else {}
    stage = state.get("stage_position") if isinstance(state.get("stage_position"), dict) else {}
    pos = {k: stage.get(k) for k in ("x", "y", "z") if isinstance(stage.get(k), (int, float))}
    if "x" in pos and "y" in pos:
        cal.attrs["stage_position"] = {
            **{k: float(v) * 1e6 for k, v in pos.items()}, "units": "µm",
            "source": "OpenFIBSEM microscope_state.stage_position (m)",
            "refers_to": "stage position when the image was taken",
        }
        for k in ("r", "t"):
            if isinstance(stage.get(k), (int, float)):
                cal.attrs["stage_position"][f"{k}_rad"] = float(stage[k])
    return cal


def _is_dm_tiff(page: Any) -> bool:
    return any(k in page.tags for k in (65009, 65010, 65003, 65004))


def _cal_dm_tiff(page: Any) -> _Cal:
    cal = _Cal("DigitalMicrograph TIFF tags")
    # DM dims: 0 = x, 1 = y, 2 = z; tags: units 65003.., offsets 65006.., scales 65009..
    for i, dim in enumerate(("x", "y", "z")):
        unit = _tag(page, 65003 + i)
        scale = _finite_positive(_tag(page, 65009 + i))
        offset = _tag(page, 65006 + i)
        if not isinstance(unit, str) or scale is None:
            continue
        unit = unit.strip()
        if "/" in unit or unit.startswith("1"):
            cal.missing = f"its DigitalMicrograph calibration is in reciprocal units ({unit!r}): a diffraction pattern, not a real-space image"
            continue
        try:
            factor = _um(1.0, unit)
        except ImageError:
            if dim == "z":
                cal.attrs["stack_axis"] = {"scale": scale, "units": unit}
            continue
        cal.size[dim] = scale * factor
        try:
            off = float(offset) if offset is not None else 0.0
        except (TypeError, ValueError):
            off = 0.0
        if math.isfinite(off):
            cal.origin[dim] = off * factor
            cal.origin_px[dim] = off / scale
    if not cal.size and not cal.missing:
        cal.missing = "its DigitalMicrograph tags give no length calibration"
    return cal


def _cal_imagej(tf: Any, page: Any) -> _Cal:
    cal = _Cal("ImageJ metadata")
    md = tf.imagej_metadata or {}
    unit = md.get("unit")
    if isinstance(unit, str):
        unit = unit.encode("latin-1", "backslashreplace").decode("unicode_escape") if "\\u" in unit else unit
    xr_ = _rational(_tag(page, "XResolution"))
    yr_ = _rational(_tag(page, "YResolution"))
    factor = None
    if isinstance(unit, str) and unit.strip() and unit.strip().lower() not in ("pixel", "pixels"):
        try:
            factor = _um(1.0, unit)
        except ImageError:
            cal.missing = f"its ImageJ unit {unit!r} is not a length unit clemlab knows"
    else:
        cal.missing = "it was saved by ImageJ without a scale (no unit in the ImageJ description)"
    if factor is not None:
        if xr_ and yr_:
            cal.size = {"x": factor / xr_, "y": factor / yr_}
        else:
            cal.missing = "its ImageJ unit has no XResolution/YResolution"
        sp = _finite_positive(md.get("spacing"))
        if sp is not None:
            cal.size["z"] = sp * factor
        for dim in ("x", "y", "z"):
            o = md.get(f"{dim}origin")
            try:
                o = float(o)
            except (TypeError, ValueError):
                continue
            if dim in cal.size and math.isfinite(o):
                cal.origin_px[dim] = -o
                cal.origin[dim] = -o * cal.size[dim]
    return cal


def _cal_resolution(page: Any) -> _Cal:
    import tifffile

    cal = _Cal("TIFF resolution tags")
    xr_ = _rational(_tag(page, "XResolution"))
    yr_ = _rational(_tag(page, "YResolution"))
    unit = _tag(page, "ResolutionUnit")
    per = {
        tifffile.RESUNIT.INCH: 25400.0,
        tifffile.RESUNIT.CENTIMETER: 1e4,
        tifffile.RESUNIT.MILLIMETER: 1e3,
        tifffile.RESUNIT.MICROMETER: 1.0,
    }
    if xr_ is None or yr_ is None:
        cal.missing = "it has no XResolution/YResolution tags"
    elif unit is None or unit not in per:
        cal.missing = (
            f"its resolution tags ({xr_:g} x {yr_:g}) have no unit (ResolutionUnit NONE): "
            "the image is uncalibrated"
        )
    else:
        cal.size = {"x": per[unit] / xr_, "y": per[unit] / yr_}
        cal.attrs["pixel_size_note"] = f"{xr_:g} pixels per {unit.name.lower()}"
    return cal


def _calibrate(tf: Any, path: Path, series: int, page: Any, shape_yx: tuple[int, int], where: str) -> _Cal:
    if tf.is_ome:
        return _cal_ome(tf, series, where)
    if tf.is_fei:
        return _cal_fei(tf, page, shape_yx[0])
    if tf.is_sem:
        return _cal_zeiss(tf, page, shape_yx[1])
    sis = _sis_metadata(tf)
    if sis is not None:
        return _cal_sis(sis, shape_yx, tf)
    tescan = _tag(page, 50431)
    if tescan is not None:
        text = tescan.decode("latin-1", "replace") if isinstance(tescan, bytes) else str(tescan)
        if "PixelSize" in text:
            return _cal_tescan(text)
    fibsem = _fibsem_metadata(tf)
    if fibsem is not None:
        return _cal_fibsem(fibsem)
    txt = _jeol_sidecar(path)
    if txt is not None:
        return _cal_jeol(txt, shape_yx)
    if _is_dm_tiff(page):
        return _cal_dm_tiff(page)
    if tf.is_imagej:
        return _cal_imagej(tf, page)
    cal = _cal_resolution(page)
    shaped = tf.shaped_metadata if tf.is_shaped else None
    if shaped:
        md = shaped[min(series, len(shaped) - 1)] or {}
        sp, unit = md.get("spacing"), md.get("unit")
        if _finite_positive(sp) is not None and isinstance(unit, str):
            try:
                cal.size["z"] = _um(float(sp), unit)
                cal.attrs["z_spacing_note"] = "from the 'spacing' and 'unit' of the JSON description"
            except ImageError:
                pass
    return cal


# ---------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------
def _check_layout(page: Any, file_size: int, where: str, index: int) -> None:
    """Refuse a page whose header the file cannot back: a strip/tile count that does not match
    the announced dimensions, strips/tiles past the end of the file, or too few bytes for
    uncompressed pixels. Such a header opens in tifffile and fails (or reads zeros) later."""
    if page is None or not hasattr(page, "dataoffsets"):
        return
    need = int(np.prod(page.chunked)) if getattr(page, "chunked", None) else len(page.dataoffsets)
    offsets, counts = page.dataoffsets, page.databytecounts
    if len(offsets) != need:
        raise FileFormatError(
            f"{where}: page {index} announces {'x'.join(map(str, page.shape))} pixels, which need {need} "
            f"strips/tiles, but the file lists {len(offsets)}: the header is corrupt (absurd dimensions?); "
            "re-export the image"
        )
    ends = [o + c for o, c in zip(offsets, counts) if c]
    if ends and max(ends) > file_size:
        raise FileFormatError(
            f"{where} is truncated or corrupt: page {index} has pixel data up to byte {max(ends)} but the file has "
            f"{file_size} bytes; copy the file again"
        )
    if int(getattr(page, "compression", 1)) == 1 and sum(counts) < page.nbytes:
        raise FileFormatError(
            f"{where}: page {index} announces {page.nbytes} bytes of uncompressed pixels but holds "
            f"{sum(counts)}: the header is corrupt (absurd dimensions?) or the file is truncated"
        )


def _guarded_read(z: Any, where: str) -> Any:
    """A dask array over the zarr view ``z`` of a TIFF whose blocks, when one cannot be decoded,
    raise :class:`FileFormatError` naming the file and the block (a TIFF tile or strip of a
    page) instead of the codec's own error deep inside the dask graph."""
    import dask.array as da

    def read(block_info=None):
        info = block_info[None]
        box = tuple(slice(a, b) for a, b in info["array-location"])
        try:
            return np.asarray(z[box])
        except Exception as exc:
            ranges = ", ".join(f"{a}:{b}" for a, b in info["array-location"])
            raise FileFormatError(
                f"{where}: the pixels [{ranges}] (block {tuple(info['chunk-location'])} of a "
                f"{'x'.join(map(str, z.shape))} image, one TIFF page tile/strip) cannot be read, the file is "
                f"damaged there ({type(exc).__name__}: {exc}); copy the file again or re-export it"
            ) from None

    chunks = da.core.normalize_chunks(z.chunks, z.shape)
    return da.map_blocks(read, chunks=chunks, dtype=z.dtype, meta=np.empty((0,) * len(z.shape), z.dtype))


def _lazy_level(path: Path, series: int, level: int, chunks: Any) -> Any:
    import tifffile
    import zarr

    store = tifffile.imread(os.fspath(path), aszarr=True, series=series, level=level)
    z = zarr.open(store, mode="r")
    if not hasattr(z, "shape"):  # a group of levels
        z = z[str(level)]
    arr = _guarded_read(z, fmt_path(path))
    if chunks is not None:
        arr = arr.rechunk(chunks)
    return arr


def read_tiff(path: str | os.PathLike, *, lazy: bool | None = None, chunks: Any = None, series: int = 0, crop_databar: bool = True) -> RawImage:
    """Read one series of a TIFF file (full-resolution level) with its calibration.

    Parameters
    ----------
    path : path-like
        TIFF, BigTIFF or OME-TIFF.
    lazy, chunks : see :func:`clemlab.io.open_image`.
    series : int
        tifffile series index (e.g. 1 for the calibrated raw image of an Olympus SIS file).
    crop_databar : bool
        Crop the FEI/JEOL data bar below the image.

    Returns
    -------
    RawImage
        Data in dims order ``(c, z, y, x)`` subset; pixel size in µm per dim found.
    """
    import tifffile

    path = Path(path)
    where = fmt_path(path)
    try:
        tf = tifffile.TiffFile(os.fspath(path))
    except (tifffile.TiffFileError, ValueError, IndexError, struct.error) as exc:
        raise FileFormatError(f"{where} is not a readable TIFF (truncated or corrupt?): {exc}") from None
    with tf:
        try:
            all_series = tf.series
        except Exception as exc:  # tifffile raises many kinds on corrupt files
            raise FileFormatError(f"{where}: cannot list the images in this TIFF (truncated or corrupt?): {exc}") from None
        if not all_series:
            raise FileFormatError(f"{where} contains no image")
        if not 0 <= series < len(all_series):
            listing = ", ".join(f"{i}: {s.shape} {s.axes}" for i, s in enumerate(all_series))
            raise ImageError(f"{where} has {len(all_series)} image series ({listing}); series={series} does not exist")
        s = all_series[series]
        page = s.pages[0] if s.pages else tf.pages[0]
        if page is None:
            page = tf.pages[0]
        size = path.stat().st_size
        _check_layout(page, size, where, 0)
        if len(s.pages) > 1:  # a truncated file loses its last page first
            _check_layout(s.pages[-1], size, where, len(s.pages) - 1)
        rgb = int(getattr(page, "photometric", 0)) == int(tifffile.PHOTOMETRIC.RGB)
        axes, shape = s.axes, tuple(s.shape)
        if "Y" not in axes or "X" not in axes:
            raise ImageError(f"{where}: series {series} has axes {axes!r}, not an image with Y and X")
        shape_yx = (shape[axes.index("Y")], shape[axes.index("X")])
        actions, dims_tiff, stack_axis = _plan_axes(axes, shape, rgb, where)
        cal = _calibrate(tf, path, series, page, shape_yx, where)
        nbytes = int(np.prod(shape)) * np.dtype(s.dtype).itemsize
        dtype = np.dtype(s.dtype)
        if dtype.kind == "c":
            raise ImageError(f"{where} holds complex pixels ({dtype}); take abs() or .real first")
        if want_lazy(lazy, chunks, nbytes):
            try:
                data = _lazy_level(path, series, 0, None)
            except Exception as exc:
                raise FileFormatError(f"{where}: cannot open the pixel data lazily: {exc}") from None
        else:
            try:
                data = s.asarray()
            except Exception as exc:
                raise FileFormatError(
                    f"{where}: could not read the pixel data (the file is truncated or corrupt): {exc}"
                ) from None
        if tuple(data.shape) != shape:
            raise FileFormatError(f"{where}: pixel data has shape {data.shape}, metadata says {shape}")

    data, dims = _arrange(data, actions, dims_tiff, rgb)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    attrs = dict(cal.attrs)
    attrs["pixel_size_source"] = cal.source if cal.size else "none"
    if cal.crop_rows and crop_databar:
        yi = dims.index("y")
        sl = [slice(None)] * len(dims)
        sl[yi] = slice(0, data.shape[yi] - cal.crop_rows)
        data = data[tuple(sl)]
        attrs["databar_cropped_px"] = int(cal.crop_rows)
    elif cal.crop_rows:
        attrs["databar_px"] = int(cal.crop_rows)
    if chunks is not None and hasattr(data, "rechunk"):
        data = data.rechunk(chunks)

    channels = None
    if "c" in dims:
        nc = data.shape[dims.index("c")]
        if rgb and nc == 3:
            channels = ["R", "G", "B"]
        elif cal.channels is not None and len(cal.channels) == nc:
            channels = cal.channels
    raw = RawImage(
        data=data,
        dims=dims,
        pixel_size=dict(cal.size),
        origin=dict(cal.origin),
        origin_px=dict(cal.origin_px),
        channels=channels,
        colors=cal.colors if channels is not None and cal.channels == channels else None,
        attrs=attrs,
        missing_reason=cal.missing or "the file stores no physical pixel size",
    )
    if stack_axis is not None:
        attrs["stack_axis_code"] = stack_axis
    raw.pixel_size = {d: v for d, v in raw.pixel_size.items() if d in dims}
    if cal.exact:
        _apply_exact(raw, cal.exact)
    return raw


def _apply_exact(raw: RawImage, exact: dict) -> None:
    """Use the exact geometry and attrs from clemlab's own annotation when it fits the data."""
    if exact.get("version") != _ANNOTATION_VERSION or list(exact.get("dims", [])) != list(raw.dims):
        return
    sizes, origins = exact.get("pixel_size") or {}, exact.get("origin") or {}
    for d in raw.dims:
        if d == "c":
            continue
        if d in sizes:
            raw.pixel_size[d] = float(sizes[d])
        if d in origins:
            raw.origin[d] = float(origins[d])
    raw.origin_px = {}
    attrs = exact.get("attrs") or {}
    if exact.get("channels") is not None and "c" in raw.dims:
        raw.channels = list(exact["channels"])
    raw.colors = attrs.pop("colors", raw.colors)
    raw.modality = attrs.pop("modality", None)
    raw.frame = attrs.pop("frame", None)
    raw.attrs = dict(attrs)
    if exact.get("dtype") == "bool":
        raw.data = raw.data.astype(bool)


def open_multiscale(path: str | os.PathLike, **kwargs: Any) -> Any:
    """All resolution levels of a TIFF as an ``xarray.DataTree`` (``scale0``, ``scale1``, ...).

    Parameters
    ----------
    path : path-like
        TIFF / OME-TIFF, pyramidal or not.
    **kwargs
        As :func:`clemlab.io.open_image`; ``lazy`` is forced to True.

    Returns
    -------
    xarray.DataTree
        Child ``scale{k}`` holds a Dataset with the variable ``"image"``. Level ``k`` with a
        downsampling factor ``f`` per axis (full-res size / level size) has pixel size
        ``f * s0`` and first-pixel centre ``origin0 + (f - 1) / 2 * s0``, i.e. the same
        physical extent as ``scale0``.
    """
    import tifffile
    import xarray as xr

    from ..image import as_image
    from . import open_image

    kwargs = dict(kwargs)
    kwargs["lazy"] = True
    chunks = kwargs.get("chunks")
    series = kwargs.get("series", 0)
    base = open_image(path, **kwargs)
    p = Path(path)
    with tifffile.TiffFile(os.fspath(p)) as tf:
        s = tf.series[series]
        nlevels = len(s.levels)
        rgb = int(getattr(s.pages[0], "photometric", 0)) == int(tifffile.PHOTOMETRIC.RGB)
        level_meta = [(lv.axes, tuple(lv.shape)) for lv in s.levels]
    tree = {"scale0": xr.Dataset({"image": base})}
    crop = int(base.attrs.get("databar_cropped_px", 0))
    size0, org0 = base.clem.pixel_size, base.clem.origin
    full0 = {d: base.sizes[d] + (crop if d == "y" else 0) for d in base.clem.spatial_dims}
    for k in range(1, nlevels):
        axes, shape = level_meta[k]
        actions, dims_tiff, _ = _plan_axes(axes, shape, rgb, fmt_path(p))
        arr = _lazy_level(p, series, k, chunks)
        arr, dims = _arrange(arr, actions, dims_tiff, rgb)
        sizes, origins = {}, {}
        for d in base.clem.spatial_dims:
            f = full0[d] / arr.shape[dims.index(d)]  # downsampling factor of this level
            sizes[d] = size0[d] * f
            origins[d] = org0[d] + (f - 1) / 2 * size0[d]
        if crop:  # the data bar scales with the level
            yi = dims.index("y")
            keep = int(round(base.sizes["y"] * size0["y"] / sizes["y"]))
            sl = [slice(None)] * arr.ndim
            sl[yi] = slice(0, keep)
            arr = arr[tuple(sl)]
        attrs = {k2: v for k2, v in base.attrs.items() if k2 not in ("colors", "modality", "frame", "source")}
        img = as_image(
            arr, pixel_size=sizes, origin=origins, units="µm", dims=dims,
            channels=list(base.coords["c"].values) if "c" in dims else None,
            modality=base.attrs.get("modality"), frame=base.attrs.get("frame"),
            colors=base.attrs.get("colors"), source=base.attrs.get("source"), attrs=attrs,
        )
        tree[f"scale{k}"] = xr.Dataset({"image": img})
    return xr.DataTree.from_dict(tree)

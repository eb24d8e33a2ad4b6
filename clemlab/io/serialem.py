"""SerialEM autodoc files: navigators (``.nav``), image metadata (``.mdoc``, ``.idoc``).

Image metadata (SerialEM help, "File Formats"; SerialEM sources ``Image/KStoreADOC.cpp``)
--------------------------------------------------------------------------------------------
An ``.mdoc`` sits beside an MRC file (``<file>.mrc.mdoc``): one ``[ZValue = z]`` section per
image of the stack. An ``.idoc`` lets a series of single-image TIFF files stand in for an MRC
stack: its first line is ``ImageSeries = 1``; global ``ImageSize = width height``,
``DataMode``, ``PixelSpacing`` (Å) and, for a montage, ``Montage = 1``; then one
``[Image = <name>.tif]`` section per image, named by the TIFF's file name relative to the
idoc's folder (SerialEM writes ``<idoc name>0000.tif``, ``0001`` ...), with the same keys as an
mdoc ``[ZValue]`` section (``PieceCoordinates = x y z``, ``StagePosition``, ``PixelSpacing``,
``AlignedPieceCoords`` ...). SerialEM stores TIFFs top row first but MRC sections bottom row
first, so a TIFF tile is the vertical mirror of the MRC section its ``PieceCoordinates`` refer
to (:func:`clemlab.mosaic.open_montage` flips it back).

The autodoc text format
-----------------------
A file is a list of lines. ``Key = value`` lines before the first section are *global*
keys (``AdocVersion = 2.00``, ``PixelSpacing = 656.139``); ``[Kind = name]`` opens a section
(``[Item = 12-A]`` in navigators, ``[ZValue = 3]``, ``[MontSection = 0]``, ``[T = title]``,
``[Image = x.tif]`` in image metadata) whose ``Key = value`` lines follow until the next
section. A value may hold several fields separated by blanks (``StageXYZ = 1 2 3``); a key
may repeat. Blank lines separate sections; lines starting with ``#`` are comments.

:func:`parse_autodoc` keeps everything: section kinds and names, key order, repeated keys,
unknown keys and comments, so :func:`format_autodoc` writes an equivalent file back
(values are kept as text, stripped of surrounding blanks; numbers are never re-formatted).

Navigators
----------
SerialEM writes navigators in this text form (``AdocVersion = 2.00``) or, in older or
configured installations, as XML (``<navigator><PreData>...<Item name="...">...``).
:func:`read_navigator` reads both into a :class:`Navigator` (same model; ``.flavour``
remembers which) and :meth:`Navigator.write` writes it back in either. Item types:
``Type = 0`` point, ``1`` polygon, ``2`` map; any other type is kept as is.

Stage coordinates of a map (conventions, checked against real navigators)
-------------------------------------------------------------------------
``MapScaleMat = a b c d`` is the 2x2 matrix ``[[a, b], [c, d]]`` mapping a stage
displacement (µm) to a displacement in pixels of the map *as loaded* (binned by
``MapBinning``); ``MapWidthHeight`` is the map size at that binning. In pixels of the map
*file* (montage binning ``MontBinning``) the matrix is ``MapScaleMat * MapBinning /
MontBinning`` (py-EM's ``map_matrix``). Pixel coordinates here are ``(x, y)`` = (column,
row) of the image in MRC file order (row 0 is the first row stored, which IMOD and
SerialEM draw at the bottom), integer values at pixel centres. The map centre, pixel
``((W - 1) / 2, (H - 1) / 2)``, sits at ``StageXYZ``::

    stage_xy = StageXYZ[:2] + inv(M) @ (pixel - ((W - 1) / 2, (H - 1) / 2))

The four corners of the map outline (``PtsX``/``PtsY`` of a single-frame map) are
reproduced by this formula to the precision of the file (tested on two real navigators).
Images imported from a TIFF (row 0 at the top) must be flipped (``y -> H - 1 - y``) first,
as py-EM does. Stage y in SerialEM points the way the stage moves, which is usually
*opposite* to image rows: ``det(MapScaleMat) < 0`` for unmirrored cameras.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_write_text, check_writable
from ..errors import FileFormatError

__all__ = [
    "AdocSection",
    "Autodoc",
    "parse_autodoc",
    "read_autodoc",
    "format_autodoc",
    "write_autodoc",
    "NavItem",
    "Navigator",
    "read_navigator",
    "write_navigator",
    "mdoc_pixel_to_stage",
    "stage_affine",
    "ITEM_TYPES",
]

#: Navigator item types by ``Type`` number.
ITEM_TYPES = {0: "point", 1: "polygon", 2: "map"}

_SECTION = re.compile(r"^\[\s*([^=\]]+?)\s*=\s*(.*?)\s*\]$")
_KEY = re.compile(r"^([^=\s][^=]*?)\s*=\s?(.*)$")


# ---------------------------------------------------------------------------------------
# the generic autodoc model
# ---------------------------------------------------------------------------------------
@dataclass
class AdocSection:
    """One autodoc section: ``[kind = name]`` and its ``key = value`` entries in file order.

    The global section (keys before the first ``[...]``) has ``kind = name = None``.
    ``entries`` is a list of ``(key, value)`` string pairs; a key may repeat; comment lines
    are kept as ``("#", text)``.
    """

    kind: str | None = None
    name: str | None = None
    entries: list[tuple[str, str]] = field(default_factory=list)

    def __contains__(self, key: str) -> bool:
        return any(k == key for k, _ in self.entries)

    def __getitem__(self, key: str) -> str:
        """The value of ``key`` (the last one if it repeats); ``KeyError`` if absent."""
        for k, v in reversed(self.entries):
            if k == key:
                return v
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        """The value string of ``key`` (the last if repeated), or ``default``."""
        try:
            return self[key]
        except KeyError:
            return default

    def get_all(self, key: str) -> list[str]:
        """Every value of a repeated key, in file order."""
        return [v for k, v in self.entries if k == key]

    def keys(self) -> list[str]:
        """Keys in file order, each once, comments left out."""
        out: list[str] = []
        for k, _ in self.entries:
            if k != "#" and k not in out:
                out.append(k)
        return out

    def numbers(self, key: str, default: Any = None) -> np.ndarray | Any:
        """The fields of ``key`` as a float array (``"1 2 3"`` -> ``[1., 2., 3.]``)."""
        v = self.get(key)
        if v is None:
            return default
        try:
            return np.array([float(t) for t in v.split()], dtype=np.float64)
        except ValueError:
            raise FileFormatError(
                f"section [{self.kind} = {self.name}]: {key} = {v!r} is not a list of numbers"
            ) from None

    def set(self, key: str, value: Any) -> None:
        """Replace the value of ``key`` in place (first occurrence), or append it."""
        text = _value_text(value)
        for i, (k, _) in enumerate(self.entries):
            if k == key:
                self.entries[i] = (key, text)
                return
        self.entries.append((key, text))

    def to_dict(self) -> dict[str, str]:
        """``key -> value`` (the last value of a repeated key; comments left out)."""
        return {k: v for k, v in self.entries if k != "#"}


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        return " ".join(_number_text(v) for v in np.ravel(value))
    return _number_text(value)


def _number_text(v: Any, decimals: int = 6) -> str:
    """Numbers as SerialEM writes them: integers bare, floats without trailing zeros."""
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, str):
        return v
    f = float(v)
    if not np.isfinite(f):
        raise FileFormatError(f"cannot write the non-finite number {f!r} to a SerialEM file")
    s = f"{f:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


@dataclass
class Autodoc:
    """A parsed autodoc file: ``sections[0]`` is the global section, the rest in file order."""

    sections: list[AdocSection] = field(default_factory=lambda: [AdocSection()])

    @property
    def header(self) -> AdocSection:
        """The global section (keys before the first ``[...]``)."""
        return self.sections[0]

    def find(self, kind: str) -> list[AdocSection]:
        """Sections of one kind (``"Item"``, ``"ZValue"``, ``"MontSection"``...), in file order."""
        return [s for s in self.sections[1:] if s.kind == kind]


def parse_autodoc(text: str, where: str = "autodoc text") -> Autodoc:
    """Parse autodoc text (the format of ``.nav``, ``.mdoc``, ``.idoc``) into an :class:`Autodoc`.

    Parameters
    ----------
    text : str
        The whole file.
    where : str
        How error messages name the source (a file path).

    Raises
    ------
    FileFormatError
        A line that is neither blank, a ``#`` comment, ``[Kind = name]`` nor ``Key = value``;
        the message gives its line number and text.
    """
    doc = Autodoc()
    cur = doc.header
    for no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            cur.entries.append(("#", line[1:]))
            continue
        if line.startswith("["):
            m = _SECTION.match(line)
            if not m:
                raise FileFormatError(
                    f"{where}, line {no}: {raw!r} is not a section header of the form "
                    "[Kind = name]; fix or remove the line"
                )
            cur = AdocSection(m.group(1), m.group(2))
            doc.sections.append(cur)
            continue
        m = _KEY.match(line)
        if not m:
            raise FileFormatError(
                f"{where}, line {no}: {raw!r} is not a 'Key = value' line (nor a [Kind = name] "
                "section or # comment); fix or remove the line"
            )
        cur.entries.append((m.group(1).strip(), m.group(2).strip()))
    return doc


def _read_text(path: str | os.PathLike, what: str) -> tuple[Path, str]:
    from . import _check_path, fmt_path

    p = _check_path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise FileFormatError(f"cannot read {what} {fmt_path(p)}: {exc.strerror}") from None
    if b"\x00" in raw[:4096]:
        raise FileFormatError(f"{fmt_path(p)} is a binary file, not a SerialEM {what} (text)")
    try:
        return p, raw.decode("utf-8-sig")  # a byte-order mark is not part of the text
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise FileFormatError(
            f"{fmt_path(p)}, line {line}: byte {raw[exc.start]:#04x} is not UTF-8 text (a note typed in another "
            f"encoding, such as Windows-1252?); re-save the {what} as UTF-8, e.g. "
            "iconv -f cp1252 -t utf-8 old.nav > new.nav"
        ) from None


def _check_items_complete(text: str, items: list[NavItem], where: str) -> None:
    """Refuse a text navigator cut short: SerialEM ends the file with a line break and writes
    ``NumPts``, ``PtsX`` and ``PtsY`` (NumPts values each) in every item with a stage position
    (points, polygons, maps)."""

    def last_complete(i: int) -> str:
        return f"the last complete item is {items[i - 1].label!r}" if i else "no item is complete"

    for i, item in enumerate(items):
        sec = item.section
        if "Type" in sec and item.type not in (0, 1, 2) and "StageXYZ" not in sec and "NumPts" not in sec:
            continue  # an item kind without points (unknown to clemlab) is kept as it is
        missing = [k for k in ("NumPts", "PtsX", "PtsY") if k not in sec]
        if missing:
            raise FileFormatError(
                f"{where} is truncated or damaged: item {item.label!r} (item {i + 1} of {len(items)}) lacks "
                f"{missing}; {last_complete(i)}. Copy the navigator again from the microscope PC"
            )
        n = sec.numbers("NumPts")
        n = int(np.ravel(n)[0]) if n is not None and np.size(n) else -1
        counts = [np.size(sec.numbers(k)) for k in ("PtsX", "PtsY")]
        if counts != [n, n]:
            raise FileFormatError(
                f"{where} is truncated or damaged: item {item.label!r} (item {i + 1} of {len(items)}) has "
                f"NumPts = {n} but {counts[0]} PtsX and {counts[1]} PtsY values; {last_complete(i)}. "
                "Copy the navigator again from the microscope PC"
            )
    if items and text and not text.endswith(("\n", "\r")):
        raise FileFormatError(
            f"{where} does not end with a line break, as SerialEM ends every navigator: it is probably "
            f"truncated inside item {items[-1].label!r}; {last_complete(len(items) - 1)}. Copy it again "
            "(or, if it is complete, add a line break at its end)"
        )


def read_autodoc(path: str | os.PathLike) -> Autodoc:
    """Read a SerialEM autodoc file (``.mdoc``, ``.idoc``, text ``.nav``); see :func:`parse_autodoc`.

    (:func:`clemlab.mosaic.read_mdoc` is a thin view of this for montage assembly.)
    """
    from . import fmt_path

    p, text = _read_text(path, "autodoc")
    return parse_autodoc(text, where=fmt_path(p))


def format_autodoc(doc: Autodoc) -> str:
    """Autodoc text of ``doc``: global keys, then each section after a blank line."""
    lines: list[str] = []

    def emit(sec: AdocSection) -> None:
        for k, v in sec.entries:
            lines.append(f"#{v}" if k == "#" else f"{k} = {v}")

    emit(doc.header)
    for sec in doc.sections[1:]:
        lines.append("")
        lines.append(f"[{sec.kind} = {sec.name}]")
        emit(sec)
    return "\n".join(lines) + "\n"


def write_autodoc(doc: Autodoc, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``doc`` as autodoc text, atomically; an existing ``path`` is replaced only with
    ``overwrite=True`` (else :class:`FileFormatError`)."""
    return atomic_write_text(path, format_autodoc(doc), overwrite=overwrite, fmt="text")


# ---------------------------------------------------------------------------------------
# navigators
# ---------------------------------------------------------------------------------------
class NavItem:
    """One navigator item: a view over its :class:`AdocSection` (edits go to the section).

    Attributes
    ----------
    section : AdocSection
        All keys in file order, unknown ones included.
    """

    def __init__(self, section: AdocSection):
        self.section = section

    @property
    def label(self) -> str:
        """The item label (``[Item = label]``)."""
        return self.section.name or ""

    @property
    def type(self) -> int | None:
        """``Type``: 0 point, 1 polygon, 2 map, other numbers kept as they are."""
        t = self.section.get("Type")
        try:
            return None if t is None else int(float(t))
        except ValueError:
            return None

    @property
    def kind(self) -> str:
        """``"point"``, ``"polygon"``, ``"map"``, or ``"type N"`` for an unknown type."""
        t = self.type
        return ITEM_TYPES.get(t, f"type {t}") if t is not None else "untyped"

    @property
    def stage_xyz(self) -> np.ndarray:
        """``StageXYZ`` (µm), shape (3,); NaN when absent."""
        v = self.section.numbers("StageXYZ")
        if v is None:
            return np.full(3, np.nan)
        return np.r_[v, np.full(3, np.nan)][:3]

    @property
    def points(self) -> np.ndarray:
        """``PtsX``/``PtsY`` as an ``(N, 2)`` array of stage positions, µm, ``(x, y)``."""
        x = self.section.numbers("PtsX", np.zeros(0))
        y = self.section.numbers("PtsY", np.zeros(0))
        if len(x) != len(y):
            raise FileFormatError(f"navigator item {self.label!r}: PtsX has {len(x)} values but PtsY {len(y)}")
        return np.c_[x, y]

    def _int(self, key: str) -> int | None:
        v = self.section.get(key)
        try:
            return None if v is None else int(float(v.split()[0]))
        except (ValueError, IndexError):
            return None

    @property
    def regis(self) -> int | None:
        """Registration number (``Regis``)."""
        return self._int("Regis")

    @property
    def map_id(self) -> int | None:
        """``MapID`` (unique id of the item)."""
        return self._int("MapID")

    @property
    def drawn_id(self) -> int | None:
        """``DrawnID``: ``MapID`` of the map this item was drawn on."""
        return self._int("DrawnID")

    @property
    def note(self) -> str | None:
        return self.section.get("Note")

    @property
    def map_file(self) -> str | None:
        return self.section.get("MapFile")

    @property
    def map_scale_mat(self) -> np.ndarray | None:
        """``MapScaleMat`` as a 2x2 matrix (pixels of the loaded map per stage µm), or None."""
        v = self.section.numbers("MapScaleMat")
        if v is None:
            return None
        if v.size != 4:
            raise FileFormatError(f"navigator item {self.label!r}: MapScaleMat needs 4 numbers, got {v.size}")
        return v.reshape(2, 2)

    @property
    def binning_ratio(self) -> float:
        """``MapBinning / MontBinning`` (1 when either is missing)."""
        mb, mo = self._int("MapBinning"), self._int("MontBinning")
        if not mb or not mo:
            return 1.0
        return mb / mo

    @property
    def map_matrix(self) -> np.ndarray:
        """Pixels of the map *file* (at ``MontBinning``) per stage µm: ``MapScaleMat * MapBinning / MontBinning``.

        Raises
        ------
        FileFormatError
            The item is not a map (no ``MapScaleMat``).
        """
        m = self.map_scale_mat
        if m is None:
            raise FileFormatError(
                f"navigator item {self.label!r} ({self.kind}) has no MapScaleMat: only map items "
                "relate pixels to stage positions"
            )
        return m * self.binning_ratio

    @property
    def map_shape(self) -> tuple[int, int]:
        """``(height, width)`` of the map file in pixels: ``MapWidthHeight`` x binning ratio."""
        v = self.section.numbers("MapWidthHeight")
        if v is None or v.size != 2:
            raise FileFormatError(f"navigator item {self.label!r} has no MapWidthHeight = width height")
        w, h = v * self.binning_ratio
        return int(round(h)), int(round(w))

    def pixel_to_stage(self) -> Any:
        """The map's pixel -> stage transform (``clemlab.transforms.Affine``).

        Pixel coordinates ``(x, y)`` = (column, row) of the map file (binning ``MontBinning``,
        rows in MRC file order), integer at pixel centres; stage ``(x, y)`` in µm. See the
        module docstring for the formula and its check on real files.
        """
        from ..transforms import Affine

        m = self.map_matrix
        h, w = self.map_shape
        inv = np.linalg.inv(m)
        centre = np.array([(w - 1) / 2, (h - 1) / 2])
        mat = np.eye(3)
        mat[:2, :2] = inv
        mat[:2, 2] = self.stage_xyz[:2] - inv @ centre
        return Affine(mat, source_frame=f"map {self.label} pixels", target_frame="stage")

    def __repr__(self) -> str:
        x, y, z = self.stage_xyz
        return f"NavItem({self.label!r}, {self.kind}, stage=({x:g}, {y:g}, {z:g}) µm, {len(self.section.entries)} keys)"


@dataclass
class Navigator:
    """A SerialEM navigator: global keys and items in file order.

    Attributes
    ----------
    header : AdocSection
        Global keys (``AdocVersion``, ``LastSavedAs``, ...).
    items : list of NavItem
    flavour : {"text", "xml"}
        The file form it was read from (and is written in by default).
    """

    header: AdocSection
    items: list[NavItem]
    flavour: str = "text"
    #: line ending used when writing (SerialEM itself writes CRLF; a read file keeps its own)
    newline: str = "\r\n"

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[NavItem]:
        return iter(self.items)

    @property
    def labels(self) -> list[str]:
        return [it.label for it in self.items]

    def __getitem__(self, key: int | str) -> NavItem:
        """Item by position or by label (the first with that label)."""
        if isinstance(key, str):
            for it in self.items:
                if it.label == key:
                    return it
            raise KeyError(f"no navigator item labelled {key!r}; labels: {self.labels}")
        return self.items[key]

    def by_map_id(self, map_id: int) -> NavItem | None:
        """The item whose ``MapID`` is ``map_id`` (e.g. a point's ``DrawnID``), or None."""
        for it in self.items:
            if it.map_id == map_id:
                return it
        return None

    def to_autodoc(self) -> Autodoc:
        return Autodoc([self.header] + [it.section for it in self.items])

    def to_dataframe(self):
        """One row per item: ``label, kind, type, x, y, z`` (stage µm), ``regis, n_pts,
        map_id, drawn_id, note``."""
        import pandas as pd

        rows = []
        for it in self.items:
            x, y, z = it.stage_xyz
            rows.append({"label": it.label, "kind": it.kind, "type": it.type, "x": x, "y": y, "z": z,
                         "regis": it.regis, "n_pts": len(it.points), "map_id": it.map_id,
                         "drawn_id": it.drawn_id, "note": it.note})
        return pd.DataFrame(rows, columns=["label", "kind", "type", "x", "y", "z", "regis", "n_pts",
                                           "map_id", "drawn_id", "note"])

    def _repr_html_(self) -> str:
        return f"<p>SerialEM navigator ({self.flavour}), {len(self)} items</p>" + self.to_dataframe().to_html()

    def __repr__(self) -> str:
        return f"Navigator({len(self)} items, flavour={self.flavour!r}, labels={self.labels[:8]}{'...' if len(self) > 8 else ''})"

    def to_text(self) -> str:
        """The navigator as autodoc text (``AdocVersion = 2.00``)."""
        doc = self.to_autodoc()
        if "AdocVersion" not in doc.header:
            doc.header.entries.insert(0, ("AdocVersion", "2.00"))
        return format_autodoc(doc).replace("\n", self.newline)

    def to_xml(self) -> str:
        """The navigator in SerialEM's XML flavour (same layout as SerialEM writes)."""
        from xml.sax.saxutils import escape, quoteattr

        out = ['<?xml version="1.0" encoding="utf-8"?>', "<navigator>", "  <PreData>"]
        head = self.header.entries if "AdocVersion" in self.header else [("AdocVersion", "2.00")] + self.header.entries
        for k, v in head:
            if k != "#":
                out.append(f"    <{k}>{escape(v)}</{k}>")
        out.append("  </PreData>")
        for it in self.items:
            out.append(f"  <Item name={quoteattr(it.label)}>")
            for k, v in it.section.entries:
                if k != "#":
                    out.append(f"    <{k}>{escape(v)}</{k}>")
            out.append("  </Item>")
        out.append("</navigator>")
        return self.newline.join(out) + self.newline

    def write(self, path: str | os.PathLike, flavour: str | None = None, *, overwrite: bool = False) -> Path:
        """Write the navigator (atomically) as text (default: the flavour it was read in) or XML;
        an existing ``path`` is replaced only with ``overwrite=True`` (else :class:`FileFormatError`)."""
        fl = flavour or self.flavour
        if fl not in ("text", "xml"):
            raise FileFormatError(f"flavour must be 'text' or 'xml', got {fl!r}")
        return atomic_write_text(path, self.to_xml() if fl == "xml" else self.to_text(), overwrite=overwrite,
                                 fmt="SerialEM navigator")


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text[:2000] else "\n"


def _parse_xml_nav(text: str, where: str) -> Navigator:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise FileFormatError(f"{where} looks like an XML navigator but is not valid XML: {exc}") from None
    if root.tag != "navigator":
        raise FileFormatError(f"{where}: XML root element is <{root.tag}>, not <navigator>: not a SerialEM navigator")
    header = AdocSection()
    items: list[NavItem] = []
    for child in root:
        if child.tag == "PreData":
            header.entries.extend((e.tag, (e.text or "").strip()) for e in child)
        elif child.tag == "Item":
            if "name" not in child.attrib:
                raise FileFormatError(f"{where}: an <Item> has no name attribute (its label)")
            sec = AdocSection("Item", child.attrib["name"], [(e.tag, (e.text or "").strip()) for e in child])
            items.append(NavItem(sec))
        else:  # unknown top-level element: keep its keys in the header, tagged
            header.entries.extend((e.tag, (e.text or "").strip()) for e in child)
    return Navigator(header, items, "xml", _newline(text))


def read_navigator(path: str | os.PathLike) -> Navigator:
    """Read a SerialEM navigator file (``.nav``), text (autodoc) or XML flavour.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    Navigator
        Items in file order with every key kept (unknown keys and unknown item types too), so
        ``read_navigator(p).write(q)`` loses nothing.

    Raises
    ------
    FileFormatError
        Missing or unreadable file, a malformed line (with its number), invalid XML, or a
        file with neither ``AdocVersion`` nor any ``[Item = ...]``.

    Examples
    --------
    >>> nav = read_navigator("sort.nav")                      # doctest: +SKIP
    >>> nav["12-A"].map_matrix                                # doctest: +SKIP
    """
    from . import fmt_path

    p, text = _read_text(path, "navigator")
    where = fmt_path(p)
    if text.lstrip().startswith("<"):
        return _parse_xml_nav(text, where)
    doc = parse_autodoc(text, where)
    items = [NavItem(s) for s in doc.sections[1:]]
    bad = [f"[{s.kind} = {s.name}]" for s in doc.sections[1:] if s.kind != "Item"]
    if bad:
        raise FileFormatError(f"{where} has sections {bad[:3]} that are not navigator items ([Item = label]): "
                              "is it an .mdoc/.idoc? read it with read_autodoc()")
    if "AdocVersion" not in doc.header and not items:
        raise FileFormatError(f"{where} has no AdocVersion and no [Item = ...]: not a SerialEM navigator")
    _check_items_complete(text, items, where)
    return Navigator(doc.header, items, "text", _newline(text))


# ---------------------------------------------------------------------------------------
# pixel -> stage from image metadata
# ---------------------------------------------------------------------------------------
def stage_affine(stage_xy: Any, pixel_size: float, shape: tuple[int, int], *, rotation: float = 0.0,
                 mirror: bool = True, tilt: float = 0.0) -> Any:
    """Pixel -> stage transform of one image from explicit geometry.

    ``stage = stage_xy + D(tilt) R(rotation) F (pixel - centre) * pixel_size`` with
    ``F = diag(1, -1)`` when ``mirror`` (image rows run against stage y, the usual case),
    ``R`` a counter-clockwise rotation by ``rotation`` degrees and ``D = diag(1, 1 /
    cos(tilt))`` (SerialEM tilts about the stage x axis, so the stage moves further in y
    than the foreshortened image shows). The camera orientation differs between
    microscopes (the mdoc ``RotationAngle`` alone does not fix it), so check the result
    against a navigator map's ``MapScaleMat`` (:meth:`NavItem.pixel_to_stage`) or a
    montage fit (:func:`mdoc_pixel_to_stage`) before driving the stage.

    Parameters
    ----------
    stage_xy : (float, float)
        Stage position (µm) of the image centre (mdoc ``StagePosition``).
    pixel_size : float
        µm per pixel (mdoc ``PixelSpacing`` is in Å: divide by 1e4).
    shape : (int, int)
        ``(height, width)`` in pixels.
    rotation, tilt : float
        Degrees.
    mirror : bool

    Returns
    -------
    clemlab.transforms.Affine
        Pixel ``(x, y)`` (integers at pixel centres) -> stage ``(x, y)`` µm.
    """
    from ..transforms import Affine

    h, w = shape
    c, s = np.cos(np.radians(rotation)), np.sin(np.radians(rotation))
    lin = np.diag([1.0, 1.0 / np.cos(np.radians(tilt))]) @ np.array([[c, -s], [s, c]])
    lin = lin @ np.diag([1.0, -1.0 if mirror else 1.0]) * float(pixel_size)
    mat = np.eye(3)
    mat[:2, :2] = lin
    mat[:2, 2] = np.asarray(stage_xy, float)[:2] - lin @ np.array([(w - 1) / 2, (h - 1) / 2])
    return Affine(mat, source_frame="pixels", target_frame="stage")


def mdoc_pixel_to_stage(path: str | os.PathLike | Autodoc, section: int = 0) -> Any:
    """Pixel -> stage transform of a SerialEM montage, fitted to its pieces' stage positions.

    Every piece (``[ZValue]`` section of an ``.mdoc``, ``[Image]`` section of an ``.idoc``) of
    montage ``section`` gives one pair: the centre of the piece in
    montage pixels (``PieceCoordinates`` x, y + half the ``ImageSize``) and its
    ``StagePosition`` (µm). An affine least-squares fit of these pairs holds the pixel size,
    the camera rotation and mirror, and the tilt foreshortening as the microscope moved the
    stage: no sign convention is assumed. (For a single image the mdoc does not determine
    the camera orientation; use :func:`stage_affine` or a navigator map item.)

    Parameters
    ----------
    path : path-like or Autodoc
        The montage ``.mdoc`` or ``.idoc``.
    section : int
        Montage section (third field of ``PieceCoordinates``).

    Returns
    -------
    clemlab.transforms.Affine
        Montage pixel ``(x, y)`` (integers at pixel centres, rows in MRC file order: the
        frame of ``PieceCoordinates`` and of :func:`clemlab.mosaic.open_montage`) -> stage
        ``(x, y)`` µm. ``.residuals`` of the fit are in ``attrs`` of nothing: call
        ``tf(pixels) - stage`` yourself if needed.

    Raises
    ------
    FileFormatError
        Fewer than 3 pieces with ``StagePosition``, no ``ImageSize``, or collinear pieces.
    """
    from ..transforms import Affine

    doc = path if isinstance(path, Autodoc) else read_autodoc(path)
    where = "mdoc" if isinstance(path, Autodoc) else f"'{os.fspath(path)}'"
    size = doc.header.numbers("ImageSize")
    if size is None or size.size < 2:
        raise FileFormatError(f"{where} has no global ImageSize = width height: not a SerialEM image mdoc")
    pix, stage = [], []
    for sec in doc.find("ZValue") or doc.find("Image"):
        pc, sp = sec.numbers("PieceCoordinates"), sec.numbers("StagePosition")
        if pc is None or sp is None or (pc.size > 2 and int(pc[2]) != section):
            continue
        pix.append(pc[:2] + (size[:2] - 1) / 2)
        stage.append(sp[:2])
    if len(pix) < 3:
        raise FileFormatError(
            f"{where} has {len(pix)} montage pieces with PieceCoordinates and StagePosition in section "
            f"{section}; at least 3 are needed to fit pixel -> stage (a single image: use stage_affine())"
        )
    tf = Affine.from_estimate(np.array(pix), np.array(stage))
    if not tf:
        raise FileFormatError(f"{where}: cannot fit pixel -> stage from the montage pieces: {tf.reason}")
    return tf.with_frames("montage pixels", "stage")


# ---------------------------------------------------------------------------------------
# writing targets
# ---------------------------------------------------------------------------------------
_LABEL_BAD = re.compile(r"[\[\]\r\n]")


def _check_label(label: str, row: int) -> str:
    label = str(label).strip()
    if not label or _LABEL_BAD.search(label) or label.startswith("#"):
        raise FileFormatError(
            f"targets row {row}: name {label!r} cannot be a navigator label (it must be non-empty, "
            "on one line, without '[' or ']' and not start with '#'); rename the target"
        )
    return label


def _outline(value: Any, label: str) -> np.ndarray | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    pts = np.asarray(value, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] < 2 or len(pts) < 3 or not np.all(np.isfinite(pts)):
        raise FileFormatError(
            f"target {label!r}: outline must be an (M, 2) array of at least 3 finite stage positions "
            f"(µm, x y), got shape {pts.shape}"
        )
    pts = pts[:, :2]
    if not np.array_equal(pts[0], pts[-1]):
        pts = np.vstack([pts, pts[:1]])  # SerialEM polygons repeat the first point at the end
    return pts


def write_navigator(targets: Any, path: str | os.PathLike, *, regis: int = 1, color: int = 0,
                    polygon_color: int = 1, registration_points: Any = None, include_outside: bool = True,
                    z: float | None = None, csv: bool | str | os.PathLike = True, decimals: int = 4,
                    flavour: str = "text", group_id: int | None = None, overwrite: bool = False) -> Path:
    """Write targets as a SerialEM navigator: one labelled item per target (atomic write).

    Parameters
    ----------
    targets : pandas.DataFrame or Navigator
        A table with columns ``name``, ``x``, ``y`` [, ``z``] in **stage µm** (as
        :func:`clemlab.targets.map_targets` returns with ``stage=``); optional columns:
        ``outline`` (an ``(M, 2)`` array of stage positions per row: the item becomes a
        polygon, ``Type = 1``; else a point, ``Type = 0``), ``note`` (text; default: the
        name and the predicted ``error`` when that column exists), ``color`` (0-5),
        ``outside_field`` (bool). A :class:`Navigator` is written back as it is.
    path : str or os.PathLike
        The ``.nav`` file.
    regis : int
        Registration number of the items (``Regis``): the registration of the EM session in
        whose stage frame ``x, y`` are given.
    color, polygon_color : int
        SerialEM colour index of points / polygons (0 red, 1 green, 2 blue, 3 yellow, 4 magenta,
        5 black).
    registration_points : pandas.DataFrame, optional
        ``name, x, y`` [, ``z``] (stage µm) written as registration points (``RegPt = 1, 2,
        ...`` in that order) before the targets, so SerialEM can re-register the targets
        after the grid is reloaded.
    include_outside : bool
        Whether rows with ``outside_field`` True are written (default yes; they are flagged
        in their ``Note``).
    z : float, optional
        Stage z (µm) for rows without a ``z`` column value (default 0).
    csv : bool or path
        Also write the table as CSV (``True``: beside ``path`` with suffix ``.csv``).
    decimals : int
        Decimal places of the stage positions (4: 0.1 nm, far below stage precision).
    flavour : {"text", "xml"}
    group_id : int, optional
        ``GroupID`` shared by all target items (lets SerialEM select them as one group).
    overwrite : bool
        Replace an existing navigator (and CSV); default: refuse them, before writing either.

    Returns
    -------
    pathlib.Path
        The navigator path.

    Raises
    ------
    FileFormatError
        Missing columns, non-finite positions, duplicate or unusable names, bad outlines, an
        unwritable folder, or an existing file without ``overwrite=True``.
    """
    import pandas as pd

    if isinstance(targets, Navigator):
        return targets.write(path, flavour, overwrite=overwrite)
    if not isinstance(targets, pd.DataFrame):
        raise FileFormatError(
            f"write_navigator() takes a table (pandas DataFrame with name, x, y in stage µm) or a "
            f"Navigator, got {type(targets).__name__}"
        )
    if flavour not in ("text", "xml"):
        raise FileFormatError(f"flavour must be 'text' or 'xml', got {flavour!r}")

    def fmt(v: float) -> str:
        return _number_text(round(float(v), decimals), decimals)

    def sections_of(df: pd.DataFrame, what: str, regpt: bool) -> list[AdocSection]:
        missing = [c for c in ("name", "x", "y") if c not in df.columns]
        if missing:
            raise FileFormatError(
                f"{what} table lacks column(s) {missing}; it needs name, x, y (stage µm) [, z]. "
                "Express targets in stage coordinates with map_targets(..., stage=...)"
            )
        xyz = df[["x", "y"]].to_numpy(np.float64)
        if not np.all(np.isfinite(xyz)):
            bad = df["name"][~np.all(np.isfinite(xyz), axis=1)].tolist()
            raise FileFormatError(f"{what} {bad} have NaN/inf positions; remove them or fix x, y")
        out = []
        for i, (_, row) in enumerate(df.iterrows()):
            label = _check_label(row["name"], i)
            outside = bool(row["outside_field"]) if "outside_field" in df.columns else False
            if outside and not include_outside:
                continue
            zz = float(row["z"]) if "z" in df.columns and pd.notna(row["z"]) else float(z or 0.0)
            outline = _outline(row["outline"], label) if "outline" in df.columns else None
            sec = AdocSection("Item", label)
            e = sec.entries
            colr = int(row["color"]) if "color" in df.columns and pd.notna(row["color"]) else (
                polygon_color if outline is not None else color)
            e.append(("Color", str(colr)))
            e.append(("StageXYZ", f"{fmt(row['x'])} {fmt(row['y'])} {fmt(zz)}"))
            pts = outline if outline is not None else np.array([[row["x"], row["y"]]], float)
            e.append(("NumPts", str(len(pts))))
            e.append(("Regis", str(int(regis))))
            e.append(("Type", "1" if outline is not None else "0"))
            if "note" in df.columns and pd.notna(row["note"]):
                note = str(row["note"])
            else:
                note = label
                if "error" in df.columns and pd.notna(row["error"]):
                    note += f" error {float(row['error']):.3g} um"
                if outside:
                    note += " OUTSIDE EM FIELD"
            e.append(("Note", " ".join(note.split())))
            if regpt:
                e.append(("RegPt", str(i + 1)))
            if group_id is not None:
                e.append(("GroupID", str(int(group_id))))
            e.append(("PtsX", " ".join(fmt(v) for v in pts[:, 0])))
            e.append(("PtsY", " ".join(fmt(v) for v in pts[:, 1])))
            out.append(sec)
        return out

    secs = []
    if registration_points is not None:
        if not isinstance(registration_points, pd.DataFrame):
            raise FileFormatError("registration_points must be a table (DataFrame) with name, x, y in stage µm")
        secs += sections_of(registration_points, "registration points", True)
    secs += sections_of(targets, "targets", False)
    labels = [s.name for s in secs]
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dup:
        raise FileFormatError(f"navigator labels must be unique; {dup} occur more than once: rename the targets")
    nav = Navigator(AdocSection(None, None, [("AdocVersion", "2.00")]), [NavItem(s) for s in secs], flavour)
    csv_path = (Path(path).with_suffix(".csv") if csv is True else Path(csv)) if csv else None
    for p in (path, csv_path):  # both refused before either is written
        if p is not None:
            check_writable(p, overwrite=overwrite, fmt="SerialEM navigator" if p == path else "CSV")
    out = nav.write(path, flavour, overwrite=overwrite)
    if csv_path is not None:
        table = targets.drop(columns=[c for c in ("outline",) if c in targets.columns])
        atomic_write_text(csv_path, table.to_csv(index=False), overwrite=overwrite, fmt="CSV")
    return out

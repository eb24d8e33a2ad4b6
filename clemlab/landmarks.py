"""Landmarks: a table of corresponding points, source (e.g. LM) -> destination (e.g. EM).

Columns (µm, points in ``(x, y[, z])`` order)::

    name, active, x_src, y_src[, z_src], x_dst, y_dst[, z_dst][, sigma_src, sigma_dst]

``sigma_src``/``sigma_dst`` are optional per-point localisation uncertainties (1-sigma, µm,
per axis). The table reads and writes its own versioned JSON and plain CSV; every edit can be
autosaved atomically so that no click is ever lost.

Units: a table always holds µm. Files that do not say their unit (BigWarp CSV, other CSV
tables, ec-CLEM XML) are read with ``units_moving=`` / ``units_fixed=`` (the source and the
target side), converted to µm at the door; :attr:`Landmarks.units_read` remembers what each
side was read in. Where landmarks meet images, :func:`check_units` warns when their spread
is far from the images' extent (the sign of a unit mix-up, e.g. nm read as µm).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._atomic import atomic_write_text, check_writable
from ._autosave import AutosaveLock
from .errors import FileFormatError, LandmarkError

__all__ = ["Landmarks", "SCHEMA_VERSION", "check_units"]

#: Version of the JSON schema this clemlab writes; files with a larger number are refused.
SCHEMA_VERSION = 1
_FORMAT = "clemlab.landmarks"
_AXES = ("x", "y", "z")
#: A landmark spread this many times the image extent (or this many times smaller) is taken
#: as a sign of a unit mix-up: clicks lie within their image, and a set of landmarks spans
#: at least a few per cent of it to determine any fit.
UNIT_MISMATCH_RATIO = 30.0


def _columns(ndim: int, sigma: bool, ndim_dst: int | None = None) -> list[str]:
    cols = ["name", "active"]
    cols += [f"{a}_src" for a in _AXES[:ndim]] + [f"{a}_dst" for a in _AXES[: ndim_dst or ndim]]
    if sigma:
        cols += ["sigma_src", "sigma_dst"]
    return cols


def _as_bool(value: Any, where: str) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise LandmarkError(f"{where}: 'active' must be true/false, got {value!r}")


def _autosave_format(path: str | os.PathLike) -> str:
    return "CSV" if Path(path).suffix.lower() == ".csv" else "JSON"


def _read_text(p: Path, what: str) -> str:
    """The file as text: UTF-8, a leading byte-order mark dropped; else an error naming the line."""
    raw = p.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        hint = ("it looks like UTF-16: save it as UTF-8 (in Excel: CSV UTF-8)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff")
                else "save it as UTF-8 (in Excel: CSV UTF-8), or convert it, e.g. iconv -f cp1252 -t utf-8")
        raise LandmarkError(f"{what} {p}, line {line}: byte {raw[exc.start]:#04x} is not UTF-8 text; {hint}") from None


def _number(v: Any, where: str) -> float:
    """A JSON coordinate: a number (not a bool, not text)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise LandmarkError(f"{where} holds {v!r} ({type(v).__name__}) where a number (µm) belongs; "
                            "write coordinates as JSON numbers, e.g. [12.5, 3.0]")
    return float(v)


def _unit_factors(units_moving: str, units_fixed: str, where: str) -> tuple[dict, dict]:
    """``({"src": factor, "dst": factor}, {"src": unit, "dst": unit})`` to µm; errors name ``where``."""
    from .errors import UnitError
    from .image import normalize_unit, unit_to_um

    try:
        units = {"src": normalize_unit(units_moving), "dst": normalize_unit(units_fixed)}
    except UnitError as exc:
        raise LandmarkError(f"{where}: {exc}") from None
    return {k: unit_to_um(u) for k, u in units.items()}, units


def _spread(points: np.ndarray) -> float:
    """Largest extent of ``(N, D)`` points along x or y, µm."""
    return float(np.max(np.ptp(points[:, :2], axis=0))) if len(points) >= 2 else 0.0


def check_units(landmarks: Landmarks, moving: Any = None, fixed: Any = None, where: str = "") -> list[str]:
    """Warn when the landmarks' spread does not fit the images they are used with.

    A unit mix-up (nm read as µm, pixels as µm) makes the landmark spread about 1000x (or
    1/1000) the image extent. Each side is compared with its image: a spread more than
    :data:`UNIT_MISMATCH_RATIO` times the image's larger extent, or that many times smaller
    than its smaller extent, warns naming the likely unit and the fix.

    Parameters
    ----------
    landmarks : Landmarks
        Active pairs are compared (µm).
    moving, fixed : xarray.DataArray, optional
        The source (e.g. LM) and target (e.g. EM) images, coords in µm.
    where : str
        What the landmarks are used for, named in the warning.

    Returns
    -------
    list of str
        The warnings issued (empty when the units look right).
    """
    import warnings

    said = []
    for side, img, opt in (("src", moving, "units_moving"), ("dst", fixed, "units_fixed")):
        if img is None or not hasattr(img, "clem"):
            continue
        pts = landmarks.src() if side == "src" else landmarks.dst()
        spread = _spread(pts)
        if spread <= 0:
            continue
        sizes = [hi - lo for d, (lo, hi) in img.clem.extent.items() if d in ("x", "y")]
        if not sizes:
            continue
        frame = landmarks.source_frame if side == "src" else landmarks.target_frame
        ratio_big, ratio_small = spread / max(sizes), min(sizes) / spread
        if ratio_big > UNIT_MISMATCH_RATIO:
            cause = (f"the {frame} landmarks are likely in nm (or pixels) read as µm: read the file "
                     f"with {opt}='nm' (or convert pixels to µm)")
            ratio = f"{ratio_big:.0f}x the {frame} image extent ({max(sizes):.4g} µm)"
        elif ratio_small > UNIT_MISMATCH_RATIO:
            cause = (f"the {frame} landmarks are likely in mm read as µm, or the image's pixel size is "
                     f"in the wrong unit: read the file with {opt}='mm', or check the pixel size")
            ratio = f"1/{ratio_small:.0f} of the {frame} image extent ({min(sizes):.4g} µm)"
        else:
            continue
        msg = (f"{where + ': ' if where else ''}the {frame} landmarks spread over {spread:.4g} µm, "
               f"{ratio}: {cause}")
        warnings.warn(msg, UserWarning, stacklevel=3)
        said.append(msg)
    return said


class Landmarks:
    """Pairs of corresponding points in two frames, with autosave.

    Parameters
    ----------
    table : pandas.DataFrame, optional
        Columns as in the module docstring. Validated: finite coordinates, distinct names.
    ndim : int
        2 or 3, used when ``table`` is empty.
    ndim_dst : int, optional
        Dimensionality of the target points when it differs (3-D sources with 2-D targets,
        for a 3-D-to-2-D correlation such as cryo-FIB targeting). Default ``ndim``.
    source_frame, target_frame : str
        Names of the two frames (default ``"LM"`` and ``"EM"``).
    autosave : path-like, optional
        JSON file rewritten atomically after every edit. Its folder must be writable (checked
        now, not at the first click).

    Examples
    --------
    >>> lm = [[1.0, 2.0], [3.0, 4.0], [5.0, 0.5]]
    >>> em = [[10.0, 20.0], [30.0, 40.0], [50.0, 5.0]]
    >>> lms = Landmarks.from_points(lm, em)
    >>> len(lms), lms.names
    (3, ['P1', 'P2', 'P3'])
    """

    def __init__(self, table: pd.DataFrame | None = None, *, ndim: int = 2,
                 ndim_dst: int | None = None, source_frame: str = "LM", target_frame: str = "EM",
                 autosave: str | os.PathLike | None = None):
        if table is None:
            table = pd.DataFrame({c: [] for c in _columns(ndim, False, ndim_dst)})
        self._df = self._validated(table, ndim, ndim_dst)
        self.source_frame = str(source_frame)
        self.target_frame = str(target_frame)
        self._autosave = None if autosave is None else check_writable(autosave, fmt=_autosave_format(autosave))
        self._listeners: list = []
        self._autosave_lock = None if autosave is None else AutosaveLock(autosave)
        # the base of a merge with the file: this table's edits are those made since then, and
        # whatever else the file holds (another picker's clicks, an older session) is kept
        self._autosave_base = self._df.copy()
        #: Unit each side was read in before conversion to µm, ``{"src": ..., "dst": ...}``.
        self.units_read = {"src": "µm", "dst": "µm"}

    # -- construction ---------------------------------------------------------------------
    @staticmethod
    def _validated(table: pd.DataFrame, ndim: int, ndim_dst: int | None = None) -> pd.DataFrame:
        if not isinstance(table, pd.DataFrame):
            raise LandmarkError(f"landmarks table must be a pandas DataFrame, got {type(table).__name__}")
        if "z_src" in table.columns or "z_dst" in table.columns:
            d = 3 if "z_src" in table.columns else 2
            d_dst = 3 if "z_dst" in table.columns else 2
        else:
            d = ndim if ndim in (2, 3) else 2
            d_dst = ndim_dst or d
            if len(table):
                d = d_dst = 2
        if d == 2 and d_dst == 3:
            raise LandmarkError(
                "landmarks pair 2-D source points with 3-D targets; give both sides in 3-D "
                "(or 3-D sources with 2-D targets for a 3-D-to-2-D correlation)"
            )
        sigma = "sigma_src" in table.columns or "sigma_dst" in table.columns
        cols = _columns(d, sigma, d_dst)
        missing = [c for c in cols if c not in table.columns]
        if missing:
            raise LandmarkError(
                f"landmarks table lacks columns {missing}; expected {cols}"
            )
        df = table[cols].copy().reset_index(drop=True)
        df["name"] = df["name"].astype(str)
        df["active"] = [_as_bool(v, f"landmark {n!r}") for v, n in zip(df["active"], df["name"])]
        for c in cols[2:]:
            try:
                df[c] = pd.to_numeric(df[c], errors="raise").astype(np.float64)
            except (ValueError, TypeError):
                raise LandmarkError(f"landmark column {c!r} holds text where numbers belong") from None
        coords = df[cols[2 : 2 + d + d_dst]].to_numpy(np.float64)
        bad = ~np.isfinite(coords).all(axis=1)
        if bad.any():
            names = df["name"][bad].tolist()
            raise LandmarkError(
                f"landmarks {names} have NaN or infinite coordinates; give finite positions in µm "
                "(or remove those pairs)"
            )
        if sigma:
            s = df[["sigma_src", "sigma_dst"]].to_numpy()
            if not np.all(np.isfinite(s) & (s >= 0)):
                raise LandmarkError("sigma_src/sigma_dst must be finite and >= 0 (µm)")
        dup = df["name"][df["name"].duplicated()].tolist()
        if dup:
            raise LandmarkError(f"landmark names must be unique; repeated: {sorted(set(dup))}")
        return df

    @classmethod
    def from_points(cls, src: Any, dst: Any, names: Sequence[str] | None = None,
                    active: Sequence[bool] | None = None, sigma_src: Any = None,
                    sigma_dst: Any = None, **kwargs) -> Landmarks:
        """Build landmarks from two ``(N, D)`` point arrays.

        Parameters
        ----------
        src, dst : array_like, shape (N, D)
            Corresponding points in µm, columns ``(x, y[, z])``; ``src[i]`` pairs with ``dst[i]``.
        names : sequence of str, optional
            Default ``"P1", "P2", ...``.
        active : sequence of bool, optional
            Default all active.
        sigma_src, sigma_dst : float or array_like (N,), optional
            Localisation uncertainty (1-sigma per axis, µm).
        **kwargs
            ``source_frame``, ``target_frame``, ``autosave`` as for :class:`Landmarks`.
        """
        s = np.asarray(src, dtype=np.float64)
        t = np.asarray(dst, dtype=np.float64)
        if s.ndim != 2 or s.shape[1] not in (2, 3):
            raise LandmarkError(f"src must have shape (N, 2) or (N, 3) in (x, y[, z]) order, got {s.shape}")
        mixed = s.shape[1] == 3 and t.ndim == 2 and t.shape == (len(s), 2)
        if t.shape != s.shape and not mixed:
            raise LandmarkError(
                f"src and dst must have the same shape, got {s.shape} and {t.shape} (only 3-D "
                "sources with 2-D targets may differ, for a 3-D-to-2-D correlation)"
            )
        n, d = s.shape
        d_dst = t.shape[1]
        data: dict[str, Any] = {
            "name": list(names) if names is not None else [f"P{i + 1}" for i in range(n)],
            "active": list(active) if active is not None else [True] * n,
        }
        if len(data["name"]) != n or len(data["active"]) != n:
            raise LandmarkError(f"names and active need one entry per pair ({n})")
        for k, a in enumerate(_AXES[:d]):
            data[f"{a}_src"] = s[:, k]
        for k, a in enumerate(_AXES[:d_dst]):
            data[f"{a}_dst"] = t[:, k]
        if sigma_src is not None or sigma_dst is not None:
            data["sigma_src"] = np.broadcast_to(np.asarray(0.0 if sigma_src is None else sigma_src, float), (n,))
            data["sigma_dst"] = np.broadcast_to(np.asarray(0.0 if sigma_dst is None else sigma_dst, float), (n,))
        return cls(pd.DataFrame(data), ndim=d, ndim_dst=d_dst, **kwargs)

    # -- read access ----------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        """Dimensionality of the source points, 2 or 3."""
        return 3 if "z_src" in self._df.columns else 2

    @property
    def ndim_dst(self) -> int:
        """Dimensionality of the target points (2 for a 3-D-to-2-D correlation)."""
        return 3 if "z_dst" in self._df.columns else 2

    @property
    def _dims_text(self) -> str:
        return f"{self.ndim}-D" if self.ndim == self.ndim_dst else f"{self.ndim}-D -> {self.ndim_dst}-D"

    @property
    def has_sigma(self) -> bool:
        """True when per-point localisation uncertainties are stored."""
        return "sigma_src" in self._df.columns

    def __len__(self) -> int:
        return len(self._df)

    @property
    def names(self) -> list[str]:
        """Pair names in table order."""
        return self._df["name"].tolist()

    @property
    def active(self) -> np.ndarray:
        """Boolean mask ``(N,)`` of active pairs."""
        return self._df["active"].to_numpy(bool)

    def _pts(self, side: str, active_only: bool) -> np.ndarray:
        d = self.ndim if side == "src" else self.ndim_dst
        cols = [f"{a}_{side}" for a in _AXES[:d]]
        df = self._df.loc[self.active] if active_only else self._df
        return df[cols].to_numpy(np.float64).reshape(-1, d)

    def src(self, active_only: bool = True) -> np.ndarray:
        """Source points ``(N, D)``, µm, ``(x, y[, z])``; only active pairs by default."""
        return self._pts("src", active_only)

    def dst(self, active_only: bool = True) -> np.ndarray:
        """Destination points ``(N, D)``, µm, ``(x, y[, z])``; only active pairs by default."""
        return self._pts("dst", active_only)

    def sigmas(self, active_only: bool = True) -> tuple[np.ndarray, np.ndarray] | None:
        """``(sigma_src, sigma_dst)`` arrays ``(N,)`` in µm, or None when not stored."""
        if not self.has_sigma:
            return None
        df = self._df.loc[self.active] if active_only else self._df
        return df["sigma_src"].to_numpy(float), df["sigma_dst"].to_numpy(float)

    def to_dataframe(self) -> pd.DataFrame:
        """A copy of the table (columns ``name, active, x_src, ...``)."""
        return self._df.copy()

    def copy(self, autosave: str | os.PathLike | None = None) -> Landmarks:
        """An independent copy (autosave off unless a new path is given)."""
        out = Landmarks(self._df, ndim=self.ndim, ndim_dst=self.ndim_dst, source_frame=self.source_frame,
                        target_frame=self.target_frame, autosave=autosave)
        out.units_read = dict(self.units_read)
        return out

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, Landmarks):
            return NotImplemented
        return (
            self.source_frame == other.source_frame
            and self.target_frame == other.target_frame
            and list(self._df.columns) == list(other._df.columns)
            and self._df.equals(other._df)
        )

    __hash__ = None  # mutable

    @property
    def units_text(self) -> str:
        """The unit of the table, and what each side was read in when that differs."""
        u = self.units_read
        if u["src"] == "µm" and u["dst"] == "µm":
            return "µm"
        return f"µm (read as {self.source_frame} {u['src']}, {self.target_frame} {u['dst']})"

    def __repr__(self) -> str:
        return (f"Landmarks({len(self)} pairs, {int(self.active.sum())} active, {self._dims_text}, "
                f"{self.source_frame} -> {self.target_frame}, {self.units_text})\n{self._df.to_string(index=False)}")

    def _repr_html_(self) -> str:
        from ._repr import landmarks_html

        return landmarks_html(self)

    # -- edits (each autosaves) -----------------------------------------------------------
    def on_change(self, callback) -> None:
        """Call ``callback(landmarks)`` after every edit (used by the widgets)."""
        self._listeners.append(callback)

    def _changed(self) -> None:
        if self._autosave is not None:
            self._autosave_now()
        for cb in list(self._listeners):
            cb(self)

    def _autosave_now(self) -> None:
        """Write the autosave file under its lock, first merging edits another process made."""
        import warnings

        from ._autosave import merge_tables, same_table

        p = Path(self._autosave)
        with self._autosave_lock:
            if p.is_file() and p.stat().st_size:
                on_disk = self.read(p)._df
                if not same_table(on_disk, self._autosave_base):
                    self._df = self._validated(merge_tables(self._autosave_base, self._df, on_disk),
                                               self.ndim, self.ndim_dst)
                    warnings.warn(f"autosave file {p} was changed by another picker or process; its edits "
                                  f"and this one's are merged ({len(self)} pairs), none is lost",
                                  UserWarning, stacklevel=4)
            self._write(p, overwrite=True)
            self._autosave_base = self._df.copy()

    def _next_name(self) -> str:
        taken = set(self.names)
        i = len(self) + 1
        while f"P{i}" in taken:
            i += 1
        return f"P{i}"

    def add(self, src: Any, dst: Any, name: str | None = None, active: bool = True,
            sigma_src: float | None = None, sigma_dst: float | None = None) -> str:
        """Append a pair; returns its name. Points are ``(D,)`` in µm, ``(x, y[, z])``."""
        s = np.asarray(src, float).reshape(-1)
        t = np.asarray(dst, float).reshape(-1)
        if s.shape != (self.ndim,) or t.shape != (self.ndim_dst,):
            raise LandmarkError(
                f"a {self._dims_text} pair needs {self.ndim} source and {self.ndim_dst} target "
                f"coordinates, got {s.size} and {t.size}"
            )
        name = self._next_name() if name is None else str(name)
        row: dict[str, Any] = {"name": name, "active": bool(active)}
        for k, a in enumerate(_AXES[: self.ndim]):
            row[f"{a}_src"] = s[k]
        for k, a in enumerate(_AXES[: self.ndim_dst]):
            row[f"{a}_dst"] = t[k]
        if self.has_sigma:
            row["sigma_src"] = 0.0 if sigma_src is None else sigma_src
            row["sigma_dst"] = 0.0 if sigma_dst is None else sigma_dst
        new = pd.concat([self._df, pd.DataFrame([row])], ignore_index=True) if len(self) else pd.DataFrame([row])
        self._df = self._validated(new, self.ndim, self.ndim_dst)
        self._changed()
        return name

    def _row(self, name: str) -> int:
        hits = np.flatnonzero(self._df["name"].to_numpy() == str(name))
        if hits.size == 0:
            raise LandmarkError(f"no landmark named {name!r}; names are {self.names}")
        return int(hits[0])

    def remove(self, name: str) -> None:
        """Delete the pair called ``name``."""
        self._df = self._df.drop(index=self._row(name)).reset_index(drop=True)
        self._changed()

    def move(self, name: str, src: Any = None, dst: Any = None) -> None:
        """Set new position(s) of pair ``name`` (either side or both), µm."""
        i = self._row(name)
        new = self._df.copy()
        for side, p in (("src", src), ("dst", dst)):
            if p is None:
                continue
            p = np.asarray(p, float).reshape(-1)
            d = self.ndim if side == "src" else self.ndim_dst
            if p.shape != (d,):
                raise LandmarkError(f"a {d}-D point needs {d} coordinates, got {p.size}")
            for k, a in enumerate(_AXES[:d]):
                new.loc[i, f"{a}_{side}"] = p[k]
        self._df = self._validated(new, self.ndim, self.ndim_dst)
        self._changed()

    def set_active(self, name: str, active: bool) -> None:
        """Switch pair ``name`` on or off for fitting."""
        self._df.loc[self._row(name), "active"] = bool(active)
        self._changed()

    def clear(self) -> None:
        """Remove all pairs."""
        self._df = self._df.iloc[0:0].copy()
        self._changed()

    def replace(self, other: Landmarks) -> None:
        """Take over the content of ``other`` (one edit: used for undo/redo)."""
        self._df = other._df.copy()
        self.source_frame, self.target_frame = other.source_frame, other.target_frame
        self.units_read = dict(other.units_read)
        self._changed()

    # -- persistence ----------------------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        """The versioned JSON document (a dict of plain values)."""
        pairs = []
        for rec in self._df.to_dict("records"):
            item = {
                "name": rec["name"],
                "active": bool(rec["active"]),
                "src": [float(rec[f"{a}_src"]) for a in _AXES[: self.ndim]],
                "dst": [float(rec[f"{a}_dst"]) for a in _AXES[: self.ndim_dst]],
            }
            if self.has_sigma:
                item["sigma_src"] = float(rec["sigma_src"])
                item["sigma_dst"] = float(rec["sigma_dst"])
            pairs.append(item)
        return {
            "format": _FORMAT,
            "version": SCHEMA_VERSION,
            "ndim": self.ndim,
            "ndim_dst": self.ndim_dst,
            "units": "µm",
            "units_read": dict(self.units_read),
            "axes": list(_AXES[: self.ndim]),
            "source_frame": self.source_frame,
            "target_frame": self.target_frame,
            "pairs": pairs,
        }

    @classmethod
    def from_json_dict(cls, doc: Any, where: str = "landmarks JSON", **kwargs) -> Landmarks:
        """Rebuild from :meth:`to_json_dict` output; ``where`` names the source in errors."""
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise LandmarkError(f"{where} is not a clemlab landmarks file (no \"format\": \"{_FORMAT}\")")
        version = doc.get("version")
        if not isinstance(version, int):
            raise LandmarkError(f"{where} has no integer schema 'version'")
        if version > SCHEMA_VERSION:
            raise LandmarkError(
                f"{where} uses landmarks schema version {version}, newer than this clemlab "
                f"understands ({SCHEMA_VERSION}); upgrade clemlab to read it"
            )
        units = doc.get("units", "µm")
        if units != "µm":
            raise LandmarkError(f"{where} is in {units!r}; clemlab landmarks files are in µm")
        d, d_dst = doc.get("ndim", 2), doc.get("ndim_dst", doc.get("ndim", 2))
        for key, v in (("ndim", d), ("ndim_dst", d_dst)):
            if isinstance(v, bool) or v not in (2, 3):
                raise LandmarkError(f"{where}: key {key!r} is {v!r}; it must be the number 2 or 3")
        pairs = doc.get("pairs", [])
        if not isinstance(pairs, list):
            raise LandmarkError(f"{where}: 'pairs' must be a list")
        rows = []
        sigma = any("sigma_src" in p or "sigma_dst" in p for p in pairs if isinstance(p, dict))
        for i, p in enumerate(pairs):
            if not isinstance(p, dict):
                raise LandmarkError(f"{where}: pair {i} is {type(p).__name__} {p!r}; each pair is an object "
                                    '{"name": ..., "src": [x, y], "dst": [x, y]}')
            for key in ("src", "dst"):
                if key in p and not isinstance(p[key], list):
                    raise LandmarkError(f"{where}: pair {i}, key {key!r} is {type(p[key]).__name__} {p[key]!r}; "
                                        "it must be a list of numbers [x, y] (µm)")
            try:
                src = [_number(v, f"{where}: pair {i}, key 'src'") for v in p["src"]]
                dst = [_number(v, f"{where}: pair {i}, key 'dst'") for v in p["dst"]]
                if len(src) != d or len(dst) != d_dst:
                    raise LandmarkError(f"{where}: pair {i} needs {d} source and {d_dst} target coordinates")
                row = {"name": p.get("name", f"P{i + 1}"), "active": p.get("active", True)}
                for k, a in enumerate(_AXES[:d]):
                    row[f"{a}_src"] = src[k]
                for k, a in enumerate(_AXES[:d_dst]):
                    row[f"{a}_dst"] = dst[k]
                if sigma:
                    row["sigma_src"] = p.get("sigma_src", 0.0)
                    row["sigma_dst"] = p.get("sigma_dst", 0.0)
            except (KeyError, TypeError) as exc:
                raise LandmarkError(f"{where}: pair {i} is malformed ({exc}); each needs 'src' and 'dst'") from None
            rows.append(row)
        table = pd.DataFrame(rows) if rows else pd.DataFrame({c: [] for c in _columns(d, sigma, d_dst)})
        kwargs.setdefault("source_frame", doc.get("source_frame", "LM"))
        kwargs.setdefault("target_frame", doc.get("target_frame", "EM"))
        try:
            out = cls(table, ndim=d, ndim_dst=d_dst, **kwargs)
        except LandmarkError as exc:
            raise LandmarkError(f"{where}: {exc}") from None
        read = doc.get("units_read")
        if isinstance(read, dict) and isinstance(read.get("src"), str) and isinstance(read.get("dst"), str):
            out.units_read = {"src": read["src"], "dst": read["dst"]}
        return out

    def to_csv_text(self) -> str:
        """CSV with a header row; floats written with ``repr`` so reading back is exact."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        cols = list(self._df.columns)
        w.writerow(cols)
        for rec in self._df.itertuples(index=False):
            w.writerow([v if isinstance(v, str) else ("true" if v is True or v is np.True_ else
                        "false" if v is False or v is np.False_ else repr(float(v))) for v in rec])
        return buf.getvalue()

    @classmethod
    def from_csv_text(cls, text: str, where: str = "landmarks CSV", **kwargs) -> Landmarks:
        """Parse CSV written by :meth:`to_csv_text` (header row with the column names)."""
        rows = list(csv.reader(io.StringIO(text)))
        if not rows:
            raise LandmarkError(f"{where} is empty")
        header = [h.strip() for h in rows[0]]
        body = [r for r in rows[1:] if any(c.strip() for c in r)]
        for i, r in enumerate(body):
            if len(r) != len(header):
                raise LandmarkError(f"{where}: row {i + 2} has {len(r)} fields, the header has {len(header)}")
        table = pd.DataFrame(body, columns=header, dtype=object)
        for c in header:
            if c in ("name", "active"):
                continue
            for i, v in enumerate(table[c]):
                try:
                    float(v)
                except ValueError:
                    raise LandmarkError(
                        f"{where}: row {i + 2}, column {c!r} holds {v!r} where a number (µm) belongs"
                    ) from None
        try:
            return cls(table, ndim=3 if "z_src" in header else 2, ndim_dst=3 if "z_dst" in header else 2, **kwargs)
        except LandmarkError as exc:
            raise LandmarkError(f"{where}: {exc}") from None

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write atomically; the format follows the suffix (``.json`` or ``.csv``).

        An existing ``path`` is replaced only with ``overwrite=True``, and then only when it is
        a file of the same format (else :class:`~clemlab.errors.FileExistsRefusedError`, a
        ``FileExistsError``, naming it).
        """
        p = Path(path)
        if self._autosave is not None and p.resolve() == Path(self._autosave).resolve():
            self._autosave_now()  # this table's own autosave file: under its lock, merged
            return p
        return self._write(p, overwrite)

    def _write(self, p: Path, overwrite: bool) -> Path:
        if p.suffix.lower() == ".csv":
            return atomic_write_text(p, self.to_csv_text(), overwrite=overwrite, fmt="CSV")
        return atomic_write_text(p, json.dumps(self.to_json_dict(), indent=1, ensure_ascii=False) + "\n",
                                 overwrite=overwrite, fmt="JSON")

    @classmethod
    def read(cls, path: str | os.PathLike, **kwargs) -> Landmarks:
        """Read a landmarks file written by :meth:`save` (``.json`` or ``.csv``)."""
        p = Path(path)
        if not p.is_file():
            raise FileFormatError(f"landmarks file {p} does not exist")
        text = _read_text(p, "landmarks file")
        if p.suffix.lower() == ".csv":
            return cls.from_csv_text(text, where=f"landmarks file {p}", **kwargs)
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LandmarkError(f"landmarks file {p} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
        return cls.from_json_dict(doc, where=f"landmarks file {p}", **kwargs)

    # -- interchange ----------------------------------------------------------------------
    @classmethod
    def from_bigwarp(cls, path: str | os.PathLike, *, units_moving: str = "µm", units_fixed: str = "µm",
                     **kwargs) -> Landmarks:
        """Read a BigWarp landmarks CSV (no header; ``name, active, moving x, y[, z], fixed x,
        y[, z]``; 6 columns = 2-D, 8 = 3-D; physical units of the images).

        BigWarp files do not say their units: ``units_moving`` / ``units_fixed`` name the unit
        of each side (e.g. ``units_moving="um", units_fixed="nm"`` for LM in µm against EM in
        nm); both are converted to µm on reading.

        The *moving* image is the source (e.g. LM), the *fixed* image the target (EM).
        Unpaired landmarks (a half marked ``Infinity``) cannot be used for fitting: they are
        skipped with a warning that names them.
        """
        import warnings

        p = Path(path)
        if not p.is_file():
            raise FileFormatError(f"BigWarp landmarks file {p} does not exist")
        rows = [r for r in csv.reader(io.StringIO(_read_text(p, "BigWarp landmarks file"))) if any(c.strip() for c in r)]
        if not rows:
            raise LandmarkError(f"BigWarp landmarks file {p} is empty")
        widths = {len(r) for r in rows}
        if len(widths) != 1 or widths.pop() not in (6, 8):
            raise LandmarkError(
                f"BigWarp landmarks file {p}: every row needs 6 (2-D) or 8 (3-D) columns "
                f"(name, active, moving x, y[, z], fixed x, y[, z]); got rows of {sorted({len(r) for r in rows})}"
            )
        d = (len(rows[0]) - 2) // 2
        names, active, mov, fix, unpaired = [], [], [], [], []
        for i, r in enumerate(rows):
            try:
                vals = [float(v) for v in r[2:]]
            except ValueError:
                raise LandmarkError(f"BigWarp landmarks file {p}: row {i + 1} has text where numbers belong: {r[2:]}") from None
            if not all(np.isfinite(vals)):
                unpaired.append(r[0])
                continue
            names.append(r[0])
            active.append(_as_bool(r[1], f"BigWarp landmarks file {p}, row {i + 1}"))
            mov.append(vals[:d])
            fix.append(vals[d:])
        if unpaired:
            warnings.warn(f"{p}: skipped unpaired BigWarp landmarks {unpaired} (one half is Infinity)",
                          UserWarning, stacklevel=2)
        if not names:
            raise LandmarkError(f"BigWarp landmarks file {p} holds no complete pair")
        return cls._from_points_in(np.array(mov), np.array(fix), units_moving, units_fixed,
                                   f"BigWarp landmarks file {p}", names=names, active=active, **kwargs)

    @classmethod
    def _from_points_in(cls, src: Any, dst: Any, units_moving: str, units_fixed: str, where: str,
                        **kwargs) -> Landmarks:
        """:meth:`from_points` of points given in ``units_moving`` / ``units_fixed``, in µm."""
        factors, units = _unit_factors(units_moving, units_fixed, where)
        out = cls.from_points(np.asarray(src, float) * factors["src"], np.asarray(dst, float) * factors["dst"],
                              **kwargs)
        out.units_read = units
        return out

    def to_bigwarp(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write a BigWarp landmarks CSV (source = moving, target = fixed), atomically; an
        existing CSV ``path`` is replaced only with ``overwrite=True``."""
        if self.ndim != self.ndim_dst:
            raise LandmarkError("BigWarp landmark files pair points of one dimensionality; these are 3-D -> 2-D")
        buf = io.StringIO()
        w = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
        src, dst = self.src(active_only=False), self.dst(active_only=False)
        for name, act, s, t in zip(self.names, self.active, src, dst):
            w.writerow([name, "true" if act else "false"] + [repr(float(v)) for v in (*s, *t)])
        return atomic_write_text(path, buf.getvalue(), overwrite=overwrite, fmt="CSV")

    @classmethod
    def from_csv(cls, path: str | os.PathLike, *, units_moving: str = "µm", units_fixed: str = "µm",
                 columns: dict[str, str] | None = None, **kwargs) -> Landmarks:
        """Read a CSV table with a header row (clemlab's columns, or mapped by ``columns``).

        Parameters
        ----------
        path : path-like
            The CSV file; columns ``x_src, y_src[, z_src], x_dst, y_dst[, z_dst]`` (and
            optionally ``name``, ``active``), or others named through ``columns``.
        units_moving, units_fixed : str
            Unit of the source (moving, e.g. LM) and target (fixed, e.g. EM) coordinates in
            the file (``"µm"``, ``"nm"``, ``"mm"``, ...); both are converted to µm.
        columns : dict, optional
            ``{clemlab column: file column}``, as for :meth:`from_table`.
        """
        return cls.from_table(path, columns, units_moving=units_moving, units_fixed=units_fixed, **kwargs)

    @classmethod
    def from_table(cls, table: Any, columns: dict[str, str] | None = None, units: str = "µm", *,
                   units_moving: str | None = None, units_fixed: str | None = None,
                   **kwargs) -> Landmarks:
        """Landmarks from any table (DataFrame or CSV path) with a column mapping.

        Parameters
        ----------
        table : pandas.DataFrame or path-like
            A CSV file is read with a header row.
        columns : dict, optional
            ``{clemlab column: table column}``, e.g. ``{"x_src": "X_LM", "y_src": "Y_LM",
            "x_dst": "X_EM", "y_dst": "Y_EM"}``; unmapped clemlab columns are looked up by their
            own names. ``name`` and ``active`` are optional.
        units : str
            Unit of the coordinates in the table (converted to µm).
        units_moving, units_fixed : str, optional
            Unit of the source / target columns when they differ (default ``units``).
        """
        where = "landmarks table"
        if not isinstance(table, pd.DataFrame):
            p = Path(table)
            if not p.is_file():
                raise FileFormatError(f"landmarks table {p} does not exist")
            where = f"landmarks table {p}"
            table = pd.read_csv(io.StringIO(_read_text(p, "landmarks table")))
        mapping = dict(columns or {})
        unknown = set(mapping) - set(_columns(3, True))
        if unknown:
            raise LandmarkError(f"columns= maps unknown clemlab columns {sorted(unknown)}; use {_columns(3, True)}")
        def col(name):
            return mapping.get(name, name)
        d = 3 if col("z_src") in table.columns else 2
        need = [c for c in _columns(d, False)[2:] if col(c) not in table.columns]
        if need:
            raise LandmarkError(
                f"{where} lacks the columns for {need} (looked for {[col(c) for c in need]}); "
                f"it has {list(table.columns)}: pass columns={{'x_src': ..., ...}}"
            )
        factors, units_read = _unit_factors(units_moving or units, units_fixed or units, where)
        out = pd.DataFrame({
            "name": table[col("name")].astype(str) if col("name") in table.columns else [f"P{i + 1}" for i in range(len(table))],
            "active": table[col("active")] if col("active") in table.columns else True,
        })
        for c in _columns(d, False)[2:]:
            try:
                out[c] = pd.to_numeric(table[col(c)], errors="raise") * factors[c.rsplit("_", 1)[1]]
            except (ValueError, TypeError):
                raise LandmarkError(f"{where}: column {col(c)!r} holds text where numbers belong") from None
        try:
            lms = cls(out, ndim=d, **kwargs)
        except LandmarkError as exc:
            raise LandmarkError(f"{where}: {exc}") from None
        lms.units_read = units_read
        return lms

    @classmethod
    def from_ecclem(cls, path: str | os.PathLike, *, units_moving: str = "µm", units_fixed: str = "µm",
                    **kwargs) -> Landmarks:
        """Read the fiducial points of an ec-CLEM transformation XML file.

        The format follows ec-CLEM's own writer (Icy plugin, ``XmlTransformationWriter``):
        ``<transformation>`` elements, each with ``<dataset type="source"|"target" n dimension
        pointType>`` holding ``<point id><coordinate dimension="0|1|2">`` values in µm (ec-CLEM
        converts them to pixels by dividing by the pixel size). The last transformation in the
        file is read; points pair by order. Files written in another unit are read with
        ``units_moving`` (the source dataset) / ``units_fixed`` (the target), converted to µm.
        """
        import xml.etree.ElementTree as ET

        p = Path(path)
        if not p.is_file():
            raise FileFormatError(f"ec-CLEM file {p} does not exist")
        try:
            root = ET.parse(p).getroot()
        except ET.ParseError as exc:
            raise LandmarkError(f"ec-CLEM file {p} is not valid XML ({exc})") from None
        trans = root.findall(".//transformation") or ([root] if root.tag == "transformation" else [])
        if not trans:
            raise LandmarkError(f"ec-CLEM file {p} has no <transformation> element")
        sets = {}
        for ds in trans[-1].findall("dataset"):
            pts = []
            for pt in ds.findall("point"):
                where = f"ec-CLEM file {p}: <dataset type={ds.get('type')!r}>, <point id={pt.get('id')!r}>"
                try:
                    coords = sorted(pt.findall("coordinate"), key=lambda c: int(c.get("dimension", 0)))
                except ValueError:
                    raise LandmarkError(f"{where} has a <coordinate> whose dimension is not 0, 1 or 2; fix that "
                                        "attribute") from None
                try:
                    pts.append([float(c.text) for c in coords])
                except (TypeError, ValueError):
                    raise LandmarkError(f"{where} has a non-numeric coordinate "
                                        f"{[c.text for c in coords]}; coordinates are numbers in µm") from None
            try:
                dim = int(ds.get("dimension", len(pts[0]) if pts else 2))
            except ValueError:
                raise LandmarkError(f"ec-CLEM file {p}: <dataset type={ds.get('type')!r}> has dimension="
                                    f"{ds.get('dimension')!r}; it must be 2 or 3") from None
            if len({len(q) for q in pts}) > 1 or (pts and len(pts[0]) < dim):
                raise LandmarkError(f"ec-CLEM file {p}: the points of <dataset type={ds.get('type')!r}> need "
                                    f"{dim} coordinates each; some have {sorted({len(q) for q in pts})}")
            sets[ds.get("type")] = np.array([q[:dim] for q in pts], dtype=float).reshape(-1, dim)
        if "source" not in sets or "target" not in sets:
            raise LandmarkError(f"ec-CLEM file {p} needs a source and a target <dataset>")
        src, dst = sets["source"], sets["target"]
        if len(src) != len(dst):
            raise LandmarkError(f"ec-CLEM file {p}: {len(src)} source but {len(dst)} target points")
        if src.shape[1] == 3 and dst.shape[1] == 3 and np.all(src[:, 2] == 0) and np.all(dst[:, 2] == 0):
            src, dst = src[:, :2], dst[:, :2]  # 2-D sets stored with z = 0
        return cls._from_points_in(src, dst, units_moving, units_fixed, f"ec-CLEM file {p}", **kwargs)

    def to_ecclem(self, path: str | os.PathLike, transformation_type: str = "AFFINE", *,
                  overwrite: bool = False) -> Path:
        """Write the active pairs as an ec-CLEM transformation XML file (µm), atomically; an
        existing XML ``path`` is replaced only with ``overwrite=True``."""
        import xml.etree.ElementTree as ET

        root = ET.Element("root")
        tr = ET.SubElement(root, "transformation", type=transformation_type, noiseModel="ISOTROPIC")
        for kind, pts in (("source", self.src()), ("target", self.dst())):
            ds = ET.SubElement(tr, "dataset", type=kind, n=str(len(pts)), dimension=str(pts.shape[1]),
                               pointType="FIDUCIAL")
            for i, q in enumerate(pts):
                pt = ET.SubElement(ds, "point", id=str(i))
                for k, v in enumerate(q):
                    ET.SubElement(pt, "coordinate", dimension=str(k)).text = repr(float(v))
        ET.indent(root)
        return atomic_write_text(path, ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n",
                                 overwrite=overwrite, fmt="XML")

    def check_units(self, moving: Any = None, fixed: Any = None, where: str = "") -> list[str]:
        """Warn when the spread does not fit the images (a unit mix-up); see :func:`check_units`."""
        return check_units(self, moving, fixed, where)

    @property
    def autosave(self) -> Path | None:
        """The autosave path, or None."""
        return self._autosave


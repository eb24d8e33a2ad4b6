"""Image readers and the OME-TIFF writer.

:func:`open_image` looks at the first bytes of a file to decide what it is (TIFF / BigTIFF,
MRC/CCP4, gzip-compressed MRC, Gatan DM3/DM4, PNG, JPEG, BMP) and only falls back on the
file suffix when the content is not conclusive (old MRC files without the ``MAP`` stamp).
Every reader returns a clemlab image (see :func:`clemlab.image.as_image`): an
:class:`xarray.DataArray` with dims a subset of ``("c", "z", "y", "x")`` in that order, coords
in µm holding pixel-centre positions, the first pixel centre at the file's origin.

Format specifics live in the submodules, which import their heavy libraries (tifffile,
mrcfile, rsciio, pillow) only when a file of that kind is opened:

- :mod:`clemlab.io.tiff`: OME-TIFF (incl. pyramids), ImageJ, FEI/Thermo Fisher, Zeiss
  SmartSEM, Tescan, JEOL (``.txt`` side-car), Olympus SIS, DigitalMicrograph-exported and
  plain TIFFs with resolution tags; the OME-TIFF writer.
- :mod:`clemlab.io.mrc`: MRC/CCP4 maps, volumes and image stacks (also ``.map.gz``).
- :mod:`clemlab.io.dm`: Gatan DigitalMicrograph DM3/DM4 (through rosettasciio).
- :mod:`clemlab.io.plain`: PNG/JPEG/BMP, which carry no physical pixel size.
- :mod:`clemlab.io.czi`, :mod:`clemlab.io.lif`, :mod:`clemlab.io.nd2`: Zeiss CZI (czifile),
  Leica LIF (liffile), Nikon ND2 (nd2): containers of several images, one chosen with
  ``scene=`` / ``image=``; :func:`list_images` shows what a file holds.

Large inputs (more than :data:`LAZY_THRESHOLD_BYTES` of uncompressed pixels) come back
dask-backed without reading pixels; ``lazy=True`` or ``chunks=`` force that, ``lazy=False``
forces an eager read.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

__all__ = [
    "open_image",
    "open_multiscale",
    "write_ome_tiff",
    "write_ome_zarr",
    "LAZY_THRESHOLD_BYTES",
    "detect_format",
    "read_navigator",
    "write_navigator",
    "list_images",
]

#: Files whose pixels take more than this many bytes uncompressed are read lazily (dask)
#: unless ``lazy=False`` is passed: 256 MiB.
LAZY_THRESHOLD_BYTES = 256 * 2**20

_MRC_SUFFIXES = (".mrc", ".mrcs", ".st", ".map", ".rec", ".ali", ".ccp4", ".preali")
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_SUPPORTED = (
    "TIFF/OME-TIFF/BigTIFF, MRC/CCP4 (.mrc .st .map .rec .ali, also .map.gz), "
    "Gatan DM3/DM4, Zeiss CZI, Leica LIF, Nikon ND2, PNG, JPEG, BMP"
)
# light-microscope containers: (format, suffixes, first-bytes test, what the file starts with)
_CONTAINERS = (
    ("czi", (".czi",), lambda h: h[:10] == b"ZISRAWFILE", "ZISRAWFILE"),
    ("lif", (".lif",), lambda h: h[:4] == b"\x70\x00\x00\x00" and h[8:9] == b"\x2a", "the LIF test value 0x70"),
    ("nd2", (".nd2",), lambda h: h[:4] == b"\xda\xce\xbe\x0a" or h[4:12] == b"jP  \r\n\x87\n", "the ND2 magic number"),
)


# ---------------------------------------------------------------------------------------
# what readers hand back before the image is built
# ---------------------------------------------------------------------------------------
@dataclass
class RawImage:
    """What a format reader found, before overrides are applied and the image is built.

    Attributes
    ----------
    data : numpy.ndarray or dask.array.Array
        Pixels, axes in the order of ``dims``.
    dims : tuple of str
        Subset of ``("c", "z", "y", "x")`` in that order.
    pixel_size : dict
        Pixel size in µm per spatial dim; a dim missing from the dict is uncalibrated.
    origin : dict
        Physical position in µm of the first pixel centre per spatial dim (default 0).
    origin_px : dict
        The same origin expressed in pixels, for files that store it in pixels (DM origin,
        MRC ``nxstart``); used to rescale the origin when ``pixel_size=`` overrides the file.
    missing_reason : str
        Why the pixel size is unknown (used in the :class:`MissingPixelSizeError` message).
    """

    data: Any
    dims: tuple[str, ...]
    pixel_size: dict[str, float] = field(default_factory=dict)
    origin: dict[str, float] = field(default_factory=dict)
    origin_px: dict[str, float] = field(default_factory=dict)
    channels: list[str] | None = None
    colors: dict[str, str] | None = None
    modality: str | None = None
    frame: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    missing_reason: str = "the file stores no physical pixel size"
    z_is_stack: bool = False


def want_lazy(lazy: bool | None, chunks: Any, nbytes: int) -> bool:
    """Decide whether to return a dask-backed image (see :data:`LAZY_THRESHOLD_BYTES`)."""
    if lazy is not None:
        return bool(lazy)
    if chunks is not None:
        return True
    return nbytes > LAZY_THRESHOLD_BYTES


def fmt_path(path: Any) -> str:
    """How error messages name a file."""
    return f"'{os.fspath(path)}'"


# ---------------------------------------------------------------------------------------
# format detection
# ---------------------------------------------------------------------------------------
def _looks_like_dm(head: bytes) -> bool:
    if len(head) < 24:
        return False
    version = int.from_bytes(head[0:4], "big")
    if version == 3:
        order = int.from_bytes(head[8:12], "big")
        return order in (0, 1)
    if version == 4:
        order = int.from_bytes(head[12:16], "big")
        return order in (0, 1)
    return False


def _looks_like_mrc(head: bytes) -> bool:
    """MRC2014 stamp, or (older files) a sane header: positive sizes and a known mode."""
    if len(head) < 1024:
        return False
    if head[208:212] in (b"MAP ", b"MAP\x00"):
        return True
    for order in ("little", "big"):
        nx, ny, nz, mode = (int.from_bytes(head[i : i + 4], order, signed=True) for i in (0, 4, 8, 12))
        if 0 < nx < 2**20 and 0 < ny < 2**20 and 0 < nz < 2**24 and mode in (0, 1, 2, 3, 4, 6, 12, 101):
            return True
    return False


def detect_format(path: str | os.PathLike) -> str:
    """Return the format family of a file from its content: ``"tiff"``, ``"mrc"``, ``"dm"``,
    ``"czi"``, ``"lif"``, ``"nd2"``, ``"plain"`` (PNG/JPEG/BMP/GIF).

    The first bytes decide; the suffix is consulted only for MRC files that carry no
    ``MAP`` stamp and for gzip-compressed MRC (``.map.gz``, ``.mrc.gz``).

    Raises
    ------
    FileFormatError
        When the content matches no supported format (the message names the file, what its
        first bytes look like and the supported formats).
    """
    from ..errors import FileFormatError

    p = Path(path)
    with open(p, "rb") as fh:
        head = fh.read(1024)
    name = p.name.lower()
    if not head:
        raise FileFormatError(f"{fmt_path(p)} is empty (0 bytes); it holds no image")
    if head[:4] in _TIFF_MAGIC:
        return "tiff"
    for fmt, _suffixes, test, _magic in _CONTAINERS:
        if test(head):
            return fmt
    if head[:2] == b"\x1f\x8b":
        inner = name[:-3] if name.endswith(".gz") else name
        if inner.endswith(_MRC_SUFFIXES):
            return "mrc"
        raise FileFormatError(
            f"{fmt_path(p)} is gzip-compressed but not named like an MRC map (.map.gz, .mrc.gz); "
            "decompress it first"
        )
    if head[:8] == b"\x89PNG\r\n\x1a\n" or head[:3] == b"\xff\xd8\xff" or head[:2] == b"BM" or head[:4] == b"GIF8":
        return "plain"
    if _looks_like_dm(head):
        return "dm"
    if head[208:212] in (b"MAP ", b"MAP\x00"):
        return "mrc"
    if name.endswith(_MRC_SUFFIXES) and _looks_like_mrc(head):
        return "mrc"
    hint = ""
    suffix = p.suffix.lower()
    if suffix in (".tif", ".tiff", ".btf"):
        hint = " It is named like a TIFF but does not start with a TIFF header (II*/MM*)."
    elif suffix in (".dm3", ".dm4"):
        hint = " It is named like a DigitalMicrograph file but has no DM3/DM4 header."
    elif name.endswith(_MRC_SUFFIXES):
        hint = " It is named like an MRC file but its 1024-byte header is not a valid MRC header."
    for fmt, suffixes, _test, magic in _CONTAINERS:
        if suffix in suffixes:
            hint = f" It is named like a {fmt.upper()} file but does not start with {magic} (damaged or not {fmt.upper()})."
    raise FileFormatError(
        f"{fmt_path(p)} is not in a format clemlab can read (it starts with {head[:16]!r}).{hint} "
        f"Supported: {_SUPPORTED}"
    )


# ---------------------------------------------------------------------------------------
# overrides and building the image
# ---------------------------------------------------------------------------------------
def finish(
    raw: RawImage,
    path: str | os.PathLike,
    *,
    pixel_size: Any = None,
    units: str = "µm",
    origin: Any = None,
    channels: Sequence[str] | None = None,
    modality: str | None = None,
    frame: str | None = None,
) -> xr.DataArray:
    """Apply the user's overrides to what a reader found and build the clemlab image.

    ``pixel_size=`` and ``origin=`` (in ``units``) always win over the file. When only
    ``pixel_size=`` is given and the file stores its origin in pixels, that origin is
    rescaled with the new pixel size; a physical origin from the file is kept as is.
    """
    import numpy as np

    from ..errors import ImageError, MissingPixelSizeError
    from ..image import as_image, as_number, spread_per_dim, unit_to_um

    where = f"file {fmt_path(path)}"
    factor = unit_to_um(units)
    sdims = tuple(d for d in raw.dims if d != "c")
    attrs = dict(raw.attrs)

    if pixel_size is not None:
        given = spread_per_dim(pixel_size, sdims, "pixel_size=", where)
        for d, v in given.items():
            if isinstance(v, (bool, np.bool_)):  # True would otherwise pass as 1 µm
                raise ImageError(f"pixel_size= must be a positive, finite number, got {v!r} for {d!r} ({where}); "
                                 "a bool is not a size: pass the physical size of one pixel, e.g. pixel_size=0.1 "
                                 "with units='µm'")
        sizes = {d: as_number(v, "pixel_size=", True, where) * factor for d, v in given.items()}
        for d in sdims:
            if d not in sizes and d in raw.pixel_size:
                sizes[d] = raw.pixel_size[d]
        attrs["pixel_size_source"] = "pixel_size= argument"
    else:
        sizes = {d: raw.pixel_size[d] for d in sdims if d in raw.pixel_size}
    missing = [d for d in sdims if d not in sizes]
    if "x" in missing or "y" in missing:
        raise MissingPixelSizeError(
            f"{where} has no usable pixel size: {raw.missing_reason}. Pass it yourself, e.g. "
            f"clemlab.open_image(path, pixel_size=0.1, units='µm') (a number, a sequence in "
            f"array order {sdims}, or a dict keyed by dim)"
        )
    if missing == ["z"]:
        # A stack of 2-D images (time series, tilt series, uncalibrated focus series): the
        # plane spacing is unknown. Use the x pixel size so geometry stays usable, and say so.
        sizes["z"] = sizes["x"]
        attrs["z_calibrated"] = False
        warnings.warn(
            f"{where}: the spacing between planes (z) is unknown, so it was set to the x pixel "
            f"size ({sizes['x']:g} µm); pass pixel_size=(dz, dy, dx) if you know it",
            UserWarning,
            stacklevel=3,
        )

    if origin is not None:
        given = spread_per_dim(origin, sdims, "origin=", where)
        origins = {d: as_number(v, "origin=", False, where) * factor for d, v in given.items()}
        for d in sdims:
            origins.setdefault(d, raw.origin.get(d, 0.0))
    else:
        origins = {}
        for d in sdims:
            if pixel_size is not None and d in raw.origin_px:
                origins[d] = raw.origin_px[d] * sizes[d]
            else:
                origins[d] = raw.origin.get(d, 0.0)

    names = list(channels) if channels is not None else raw.channels
    colors = raw.colors
    if colors and names is not None and raw.channels is not None and names != raw.channels:
        # renamed channels keep their colours by position
        colors = {new: colors[old] for old, new in zip(raw.channels, names) if old in colors}
    attrs["source"] = os.fspath(path)
    return as_image(
        raw.data,
        pixel_size=sizes,
        origin=origins,
        units="µm",
        dims=raw.dims,
        channels=names if ("c" in raw.dims or channels is not None) else None,
        modality=modality if modality is not None else raw.modality,
        frame=frame if frame is not None else raw.frame,
        colors=colors,
        source=os.fspath(path),
        attrs=attrs,
    )


def _check_path(path: Any) -> Path:
    from ..errors import FileFormatError

    try:
        p = Path(os.fspath(path))
    except TypeError:
        raise FileFormatError(f"path must be a file path (str or os.PathLike), got {type(path).__name__}") from None
    if not p.exists():
        parent = p.parent if str(p.parent) else Path(".")
        hint = "" if parent.is_dir() else f" (the folder '{parent}' does not exist either)"
        raise FileFormatError(f"no such file: {fmt_path(p)}{hint}")
    if p.is_dir():
        raise FileFormatError(
            f"{fmt_path(p)} is a directory, not an image file; pass the path of one file "
            "(OME-Zarr folders are read by the zarr reader)"
        )
    if not os.access(p, os.R_OK):
        raise FileFormatError(f"{fmt_path(p)} is not readable (permission denied)")
    return p


def _name_file(exc: Exception, path: Path) -> Exception:
    """Make sure a clemlab error message names the file."""
    msg = str(exc)
    if os.fspath(path) in msg:
        return exc
    new = type(exc)(f"{fmt_path(path)}: {msg}")
    new.__cause__ = exc
    return new


def open_image(
    path: str | os.PathLike,
    *,
    pixel_size: Any = None,
    units: str = "µm",
    origin: Any = None,
    channels: Sequence[str] | None = None,
    modality: str | None = None,
    frame: str | None = None,
    chunks: Any = None,
    lazy: bool | None = None,
    series: int = 0,
    crop_databar: bool = True,
    scene: int | str | None = None,
    image: int | str | None = None,
    timepoint: int | None = None,
) -> xr.DataArray:
    """Open a microscope image file as a clemlab image, with its physical pixel size.

    Parameters
    ----------
    path : str or os.PathLike
        The file. Its content decides the reader (TIFF/OME-TIFF/BigTIFF, MRC/CCP4 incl.
        ``.map.gz``, DM3/DM4, PNG/JPEG/BMP); the suffix only breaks ties.
    pixel_size : float or sequence or dict, optional
        Physical pixel size in ``units``; always overrides what the file says. One number
        for all spatial axes, a sequence in array order (``(dz, dy, dx)``), or a dict keyed
        by dim. Required for files without calibration (PNG, JPEG, uncalibrated TIFFs).
    units : str
        Unit of ``pixel_size`` and ``origin`` (``"µm"``, ``"nm"``, ``"Å"``, ``"mm"``, ...).
    origin : float or sequence or dict, optional
        Position of the centre of the first pixel, in ``units``; overrides the file's origin.
    channels : sequence of str, optional
        Channel names (for images with a ``c`` dim), overriding the file's.
    modality : str, optional
        ``"LM"``, ``"EM"``, ... stored in ``attrs["modality"]``.
    frame : str, optional
        Name of the coordinate frame of the coords (defaults to ``modality``).
    chunks : int, tuple or dict, optional
        Dask chunks; implies a lazy (dask-backed) result.
    lazy : bool, optional
        ``True``: dask-backed without reading pixels; ``False``: read into memory;
        default: lazy when the pixels exceed :data:`LAZY_THRESHOLD_BYTES` (256 MiB).
    series : int
        Which image of a multi-image TIFF (tifffile series) or DM file to read.
    crop_databar : bool
        Remove the instrument data bar below FEI/Thermo Fisher and JEOL SEM images
        (reported in ``attrs["databar_cropped_px"]``).
    scene, image : int or str, optional
        Which image of a container file to open, by index or name: a CZI scene, a LIF image,
        an ND2 XY position (the two keywords are synonyms). Required when the file holds
        several; the error then lists them (as does :func:`list_images`).
    timepoint : int, optional
        Which time point of a time series (CZI, LIF, ND2) to open; required when there are
        several, since clemlab images have no time dim.

    Returns
    -------
    xarray.DataArray
        dims a subset of ``("c", "z", "y", "x")``, coords in µm (pixel centres), numpy- or
        dask-backed; ``attrs["source"]`` is the path.

    Raises
    ------
    FileFormatError
        Missing, unreadable, truncated or unknown file (an ``OSError``).
    MissingPixelSizeError
        The file has no (real-space) pixel size and ``pixel_size=`` was not given.
    ImageError, UnitError
        Bad ``pixel_size``/``origin``/``units`` arguments, an unsupported image layout (an
        x-z scan is refused, never relabelled y-x), or an ambiguous container without
        ``scene=``/``image=``.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from clemlab.image import as_image
    >>> d = tempfile.mkdtemp()
    >>> p = write_ome_tiff(as_image(np.ones((4, 5), np.uint8), pixel_size=0.1), os.path.join(d, "a.ome.tif"))
    >>> img = open_image(p)
    >>> img.dims, img.clem.pixel_size["x"]
    (('y', 'x'), 0.1)
    """
    from ..errors import ClemlabError, FileFormatError, ImageError, MissingPixelSizeError, UnitError
    from ..image import unit_to_um

    from . import zarr as zarr_io

    if isinstance(path, (str, os.PathLike)) and zarr_io.is_ome_zarr(path):  # lazy, level 0
        raw = zarr_io.read_ome_zarr(path, chunks=chunks)
        return finish(raw, path, pixel_size=pixel_size, units=units, origin=origin, channels=channels,
                      modality=modality, frame=frame)
    p = _check_path(path)
    try:
        unit_to_um(units)  # unknown unit: UnitError listing the known units, before any reading
    except UnitError as exc:
        raise UnitError(f"{fmt_path(p)}: bad units={units!r}: {exc}") from None
    if scene is not None and image is not None and scene != image:
        raise ImageError(f"{fmt_path(p)}: pass scene= or image= (synonyms), not both")
    choice = scene if scene is not None else image
    try:
        fmt = detect_format(p)
        if fmt not in ("czi", "lif", "nd2") and (choice is not None or timepoint is not None):
            raise ImageError(
                f"{fmt_path(p)} is not a CZI/LIF/ND2 container: scene=, image= and timepoint= do not "
                "apply (use series= for a multi-image TIFF or DM file)"
            )
        if fmt in ("czi", "lif", "nd2"):
            raw = _read_container(fmt, p, choice, timepoint, lazy, chunks)
        elif fmt == "tiff":
            from . import tiff

            raw = tiff.read_tiff(p, lazy=lazy, chunks=chunks, series=series, crop_databar=crop_databar)
        elif fmt == "mrc":
            from . import mrc

            raw = mrc.read_mrc(p, lazy=lazy, chunks=chunks)
        elif fmt == "dm":
            from . import dm

            raw = dm.read_dm(p, lazy=lazy, chunks=chunks, series=series)
        else:
            if pixel_size is None:
                raise MissingPixelSizeError(
                    f"{fmt_path(p)} is a plain picture (PNG/JPEG/BMP) and stores no physical "
                    "pixel size; pass it yourself, e.g. "
                    "clemlab.open_image(path, pixel_size=0.01, units='µm')"
                )
            from . import plain

            raw = plain.read_plain(p, lazy=lazy, chunks=chunks)
        return finish(
            raw, p, pixel_size=pixel_size, units=units, origin=origin, channels=channels,
            modality=modality, frame=frame,
        )
    except ClemlabError as exc:
        new = _name_file(exc, p)
        if new is exc:
            raise
        raise new from exc
    except (OSError, MemoryError) as exc:
        raise FileFormatError(f"could not read {fmt_path(p)}: {exc}") from exc


def _read_container(fmt: str, path: Path, choice: int | str | None, timepoint: int | None, lazy: bool | None,
                    chunks: Any) -> RawImage:
    """Read one image of a CZI / LIF / ND2 file (the readers import their libraries on first use)."""
    if fmt == "czi":
        from . import czi

        return czi.read_czi(path, scene=choice, timepoint=timepoint, lazy=lazy, chunks=chunks)
    if fmt == "lif":
        from . import lif

        return lif.read_lif(path, image=choice, timepoint=timepoint, lazy=lazy, chunks=chunks)
    from . import nd2

    return nd2.read_nd2(path, scene=choice, timepoint=timepoint, lazy=lazy, chunks=chunks)


def list_images(path: str | os.PathLike) -> Any:
    """What a microscope file holds: one row per image (CZI scene, LIF image, ND2 position,
    image series of a multi-image TIFF).

    Parameters
    ----------
    path : str or os.PathLike
        Any file :func:`open_image` reads; a file holding one image gives one row.

    Returns
    -------
    pandas.DataFrame
        Indexed by the image index (what ``open_image(path, scene=i)`` takes; for a TIFF,
        ``open_image(path, series=i)``), columns
        ``name``, ``dims`` (the file's own axes, e.g. ``λ Y X`` for a LIF emission sweep),
        ``sizes``, ``dtype``, ``pixel_size_x_um``, ``pixel_size_y_um``, ``pixel_size_z_um``
        (NaN where the file has none), ``pixel_size_source``, ``channels``.

    Raises
    ------
    FileFormatError
        Missing, unreadable, truncated or unknown file.
    """
    import pandas as pd

    from ..errors import ClemlabError, FileFormatError

    p = _check_path(path)
    try:
        fmt = detect_format(p)
        if fmt == "czi":
            from . import czi

            rows = czi.list_czi(p)
        elif fmt == "lif":
            from . import lif

            rows = lif.list_lif(p)
        elif fmt == "nd2":
            from . import nd2

            rows = nd2.list_nd2(p)
        elif fmt == "tiff":
            rows = [_describe_single(p, series=i) for i in range(_tiff_series_count(p))]
        else:
            rows = [_describe_single(p)]
    except ClemlabError as exc:
        new = _name_file(exc, p)
        if new is exc:
            raise
        raise new from exc
    except (OSError, MemoryError) as exc:
        raise FileFormatError(f"could not read {fmt_path(p)}: {exc}") from exc
    table = []
    for row in rows:
        px = row.get("pixel_size_um") or {}
        table.append({
            "name": row["name"],
            "dims": " ".join(row["dims"]),
            "sizes": ", ".join(f"{k} {v}" for k, v in row["sizes"].items()),
            "dtype": row["dtype"],
            "pixel_size_x_um": px.get("x", float("nan")),
            "pixel_size_y_um": px.get("y", float("nan")),
            "pixel_size_z_um": px.get("z", float("nan")),
            "pixel_size_source": row.get("pixel_size_source", "none"),
            "channels": _short_list(row.get("channels")),
        })
    frame = pd.DataFrame(table)
    frame.index.name = "index"
    return frame


def _short_list(names: Sequence[str] | None, keep: int = 4) -> str:
    """Channel names for a table cell: all of a few, else the first and last ones and the count."""
    if not names:
        return ""
    if len(names) <= keep:
        return ", ".join(names)
    return f"{', '.join(names[:keep - 1])}, ..., {names[-1]} ({len(names)})"


def _tiff_series_count(path: Path) -> int:
    """How many images (tifffile series) a TIFF holds; pyramid levels belong to their series."""
    import tifffile

    with tifffile.TiffFile(os.fspath(path)) as tf:
        return max(1, len(tf.series))


def _describe_single(path: Path, series: int = 0) -> dict[str, Any]:
    """The row of one image of a file (read lazily, metadata only); ``series`` picks the image
    of a multi-image TIFF (``open_image(path, series=...)``)."""
    from ..errors import MissingPixelSizeError

    kw = {"series": series} if series else {}
    calibrated = True
    try:
        img = open_image(path, lazy=True, **kw)
    except MissingPixelSizeError:
        img = open_image(path, lazy=True, pixel_size=1.0, **kw)  # only to learn dims, sizes and dtype
        calibrated = False
    px = {d: float(v) for d, v in img.clem.pixel_size.items()} if calibrated else {}
    return {
        "name": Path(path).name if not series else f"{Path(path).name} series {series}",
        "dims": tuple(img.dims),
        "sizes": dict(img.sizes),
        "dtype": str(img.dtype),
        "pixel_size_um": px,
        "pixel_size_source": img.attrs.get("pixel_size_source", "none") if calibrated else "none",
        "channels": [str(c) for c in img.coords["c"].values] if "c" in img.dims else None,
    }


def open_multiscale(path: str | os.PathLike, **kwargs: Any) -> Any:
    """Open every resolution level of a (pyramidal) TIFF or an OME-Zarr as a multiscale ``xarray.DataTree``.

    Parameters
    ----------
    path : str or os.PathLike
        A TIFF / OME-TIFF; files without a pyramid give a tree with the single child ``scale0``.
    **kwargs
        As for :func:`open_image` (``pixel_size=``, ``units=``, ``origin=``, ``series=``,
        ``chunks=``, ...). Levels are always dask-backed.

    Returns
    -------
    xarray.DataTree
        Children ``scale0`` (full resolution), ``scale1``, ...; each holds a Dataset with one
        variable ``"image"``: a clemlab image whose coords are in the same physical frame as
        ``scale0`` (a level downsampled by ``f`` has pixel size ``f * s0`` and its first
        pixel centre at ``origin0 + (f - 1) / 2 * s0``).
    """
    from . import tiff, zarr as zarr_io

    if zarr_io.is_ome_zarr(path):
        return zarr_io.open_multiscale(path, **kwargs)
    return tiff.open_multiscale(path, **kwargs)


def write_ome_zarr(image: Any, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Write a multiscale OME-Zarr (NGFF 0.5, sharded), streamed and atomic; see :func:`clemlab.io.zarr.write_ome_zarr`."""
    from . import zarr as zarr_io

    return zarr_io.write_ome_zarr(image, path, **kwargs)


def write_ome_tiff(image: xr.DataArray, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Write a clemlab image to an OME-TIFF, atomically; see :func:`clemlab.io.tiff_write.write_ome_tiff`."""
    from . import tiff_write

    return tiff_write.write_ome_tiff(image, path, **kwargs)


def read_navigator(path: str | os.PathLike) -> Any:
    """Read a SerialEM navigator (``.nav``, text or XML); see :func:`clemlab.io.serialem.read_navigator`."""
    from . import serialem

    return serialem.read_navigator(path)


def write_navigator(targets: Any, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Write targets (stage µm) as a SerialEM navigator; see :func:`clemlab.io.serialem.write_navigator`."""
    from . import serialem

    return serialem.write_navigator(targets, path, **kwargs)

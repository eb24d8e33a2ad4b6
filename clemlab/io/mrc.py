"""MRC / CCP4 reader (``.mrc .mrcs .st .map .rec .ali``, gzip-compressed ``.map.gz``) via mrcfile.

Conventions
-----------
- Voxel size per cell axis = cell length / sampling: ``cella.x / mx``, ``cella.y / my``,
  ``cella.z / mz`` (Å), *not* divided by ``nx, ny, nz`` (they differ for crystallographic
  maps such as EMD-3001). A zero cell length or sampling means "uncalibrated" along that
  axis. A voxel size of exactly 1 Å is accepted as given (IMOD writes it for uncalibrated
  files, but it is also a real size): pass ``pixel_size=`` when you know better.
- Origin = physical position of the centre of the first voxel: the header ``origin``
  (x, y, z in Å, MRC2014 / EMDB / Chimera convention) when any of it is non-zero, otherwise
  ``(nxstart, nystart, nzstart) * voxel size`` (``nxstart`` counts along the column axis,
  ``nystart`` along rows, ``nzstart`` along sections). The latter is kept in voxels so it
  follows a ``pixel_size=`` override.
- Axis order: data are stored with columns along cell axis ``mapc``, rows along ``mapr``,
  sections along ``maps``. When ``(mapc, mapr, maps) != (1, 2, 3)`` the array is transposed
  to ``(z, y, x)`` and ``attrs["mrc_axis_mapping"]`` records what was done.
- Cells with angles other than 90° (crystallographic maps like EMD-3001, beta = 94.3°) are
  refused with :class:`~clemlab.errors.ImageError`: their voxels are not on an orthogonal
  grid, and a clemlab image cannot represent that without resampling.
- A single section (``nz == 1``) becomes ``(y, x)``. Image stacks (``ispg == 0``, or
  ``.st``/``.ali``/``.mrcs`` files) are ``(z, y, x)`` with the section spacing from the header
  (``cella.z / mz``) when it is non-zero, otherwise reported as unknown.
- Modes 0 (int8), 1 (int16), 2 (float32), 6 (uint16), 12 (float16) are read; complex modes
  3/4 are refused. Large files are memory-mapped and wrapped in dask without reading pixels.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FileFormatError, ImageError
from . import RawImage, fmt_path, want_lazy

__all__ = ["read_mrc"]

_A_TO_UM = 1e-4
_STACK_SUFFIXES = (".st", ".ali", ".mrcs", ".preali")


def _open_header(path: Path, where: str) -> Any:
    import mrcfile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with mrcfile.open(os.fspath(path), mode="r", permissive=True, header_only=True) as m:
                header = m.header.copy()
                ext = int(m.header.nsymbt)
    except Exception as exc:  # mrcfile raises ValueError / OSError / EOFError on bad files
        raise FileFormatError(f"{where} is not a readable MRC file: {exc}") from None
    if header is None:
        raise FileFormatError(f"{where} has no valid MRC header")
    return header, ext


def read_mrc(path: str | os.PathLike, *, lazy: bool | None = None, chunks: Any = None) -> RawImage:
    """Read an MRC/CCP4 file with its voxel size and origin.

    Parameters
    ----------
    path : path-like
        MRC/CCP4 file, optionally gzip-compressed.
    lazy, chunks : see :func:`clemlab.io.open_image`.

    Returns
    -------
    RawImage
        dims ``(z, y, x)`` or ``(y, x)``; pixel size and origin in µm.

    Raises
    ------
    FileFormatError
        Unreadable, truncated or malformed header.
    ImageError
        Non-orthogonal cell, complex data, invalid axis mapping.
    """
    import mrcfile.utils

    path = Path(path)
    where = fmt_path(path)
    header, ext = _open_header(path, where)
    nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
    mode = int(header.mode)
    if min(nx, ny, nz) <= 0:
        raise FileFormatError(f"{where}: MRC header gives a non-positive size (nx, ny, nz) = ({nx}, {ny}, {nz})")
    if mode in (3, 4):
        raise ImageError(f"{where} holds complex data (MRC mode {mode}); take the amplitude or real part first")
    try:
        dtype = mrcfile.utils.data_dtype_from_header(header)
    except ValueError as exc:
        raise FileFormatError(f"{where}: unsupported MRC mode {mode}: {exc}") from None

    # --- geometry -----------------------------------------------------------------------
    alpha, beta, gamma = (float(header.cellb[k]) for k in ("alpha", "beta", "gamma"))
    cella = tuple(float(header.cella[k]) for k in ("x", "y", "z"))
    if any(c > 0 for c in cella) and any(abs(a - 90.0) > 1e-3 and a != 0 for a in (alpha, beta, gamma)):
        raise ImageError(
            f"{where} has a non-orthogonal unit cell (alpha, beta, gamma = {alpha:g}°, {beta:g}°, "
            f"{gamma:g}°), typical of crystallographic maps. clemlab images need orthogonal axes; "
            "resample the map onto an orthogonal grid first (e.g. in ChimeraX: "
            "'volume resample #1 onGrid #2' or 'vop resample' with an orthogonal reference)"
        )
    mapping = (int(header.mapc), int(header.mapr), int(header.maps))
    if sorted(mapping) != [1, 2, 3]:
        raise ImageError(f"{where}: MRC axis mapping (mapc, mapr, maps) = {mapping} is not a permutation of (1, 2, 3)")
    sampling = (int(header.mx), int(header.my), int(header.mz))
    voxel_um: dict[int, float] = {}  # cell axis (1=x, 2=y, 3=z) -> µm
    for ax in (1, 2, 3):
        c, m = cella[ax - 1], sampling[ax - 1]
        if c > 0 and m > 0 and math.isfinite(c):
            voxel_um[ax] = c / m * _A_TO_UM
    # file axes of the numpy array (sections, rows, cols) -> cell axes
    file_cell_axes = (mapping[2], mapping[1], mapping[0])
    starts = {mapping[0]: int(header.nxstart), mapping[1]: int(header.nystart), mapping[2]: int(header.nzstart)}
    hdr_origin = tuple(float(header.origin[k]) for k in ("x", "y", "z"))

    name = path.name.lower()
    name = name[:-3] if name.endswith(".gz") else name
    is_stack = int(header.ispg) == 0 or name.endswith(_STACK_SUFFIXES)

    # --- data ---------------------------------------------------------------------------
    shape = (nz, ny, nx)
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    offset = 1024 + ext
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    if not gz and path.stat().st_size < offset + nbytes:
        raise FileFormatError(
            f"{where} is truncated: the header announces {nx} x {ny} x {nz} voxels of {np.dtype(dtype)} "
            f"({offset + nbytes} bytes with header) but the file has {path.stat().st_size} bytes"
        )
    if want_lazy(lazy, chunks, nbytes):
        import dask.array as da

        if gz:
            arr = _read_eager(path, where)
        else:
            arr = _MappedVoxels(path, dtype, offset, shape)
        data = da.from_array(arr, chunks=chunks if chunks is not None else "auto", asarray=False)
    else:
        data = _read_eager(path, where)
    if tuple(data.shape) != shape:
        data = data.reshape(shape)

    # transpose file axes to (z, y, x) = cell axes (3, 2, 1)
    perm = tuple(file_cell_axes.index(ax) for ax in (3, 2, 1))
    attrs: dict[str, Any] = {"mrc_mode": mode, "mrc_ispg": int(header.ispg)}
    if perm != (0, 1, 2):
        data = data.transpose(perm)
        attrs["mrc_axis_mapping"] = (
            f"file axes (mapc, mapr, maps) = {mapping}; the data were transposed to (z, y, x)"
        )
    sizes, origin, origin_px = {}, {}, {}
    use_hdr_origin = any(v != 0 and math.isfinite(v) for v in hdr_origin)
    for dim, ax in (("z", 3), ("y", 2), ("x", 1)):
        if ax in voxel_um:
            sizes[dim] = voxel_um[ax]
        if use_hdr_origin:
            origin[dim] = hdr_origin[ax - 1] * _A_TO_UM
        else:
            origin_px[dim] = float(starts[ax])
            origin[dim] = float(starts[ax]) * voxel_um.get(ax, 0.0)
    attrs["origin_source"] = "MRC header origin" if use_hdr_origin else "MRC nxstart/nystart/nzstart x voxel size"
    if is_stack:
        attrs["mrc_image_stack"] = True

    dims: tuple[str, ...] = ("z", "y", "x")
    if data.shape[0] == 1:
        data = data[0]
        dims = ("y", "x")
        for dct in (sizes, origin, origin_px):
            dct.pop("z", None)
    missing = ""
    if "x" not in sizes or "y" not in sizes:
        missing = (
            f"its MRC header gives a zero voxel size (cella = {cella} Å, mx, my, mz = {sampling})"
        )
    if dims[0] == "z" and "z" not in sizes and "z" in origin:
        origin.pop("z")
        origin_px.pop("z", None)
    attrs["pixel_size_source"] = "MRC cella / (mx, my, mz)" if sizes else "none"
    return RawImage(
        data=data,
        dims=dims,
        pixel_size=sizes,
        origin=origin,
        origin_px=origin_px,
        attrs=attrs,
        missing_reason=missing or "the MRC header gives no voxel size",
    )


class _MappedVoxels:
    """The voxels of an uncompressed MRC file as dask's source: each read maps the file and
    returns an in-memory copy of the region asked for.

    ``dask.array.from_array`` copies an input that has a ``copy`` method whole, which for a
    ``numpy.memmap`` reads the whole file at opening; this object offers only what
    ``from_array`` reads (``shape``, ``dtype``, ``ndim``, ``[]``). It pickles as its file's
    path and layout, so a dask.distributed worker maps the file itself.
    """

    def __init__(self, path: Path, dtype: np.dtype, offset: int, shape: tuple[int, ...]):
        self.path, self.dtype, self.offset, self.shape = Path(path), np.dtype(dtype), int(offset), tuple(shape)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        voxels = np.memmap(os.fspath(self.path), dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape)
        return np.array(voxels[key])

    def __dask_tokenize__(self) -> tuple:
        stat = self.path.stat()
        return (os.fspath(self.path.resolve()), stat.st_size, stat.st_mtime_ns, self.offset, str(self.dtype), self.shape)


def _read_eager(path: Path, where: str) -> np.ndarray:
    import mrcfile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with mrcfile.open(os.fspath(path), mode="r", permissive=True) as m:
                if m.data is None:
                    raise FileFormatError(f"{where}: the MRC data block could not be read (truncated?)")
                data = np.array(m.data)
    except FileFormatError:
        raise
    except Exception as exc:
        raise FileFormatError(f"{where}: could not read the MRC data (truncated or corrupt): {exc}") from None
    if data.ndim == 2:
        data = data[np.newaxis]
    return data

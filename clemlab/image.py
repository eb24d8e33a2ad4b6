"""Images as :class:`xarray.DataArray`: construction, validation and the ``.clem`` accessor.

An image (see ``design.md`` section 2) has dims that are a subset of ``("c", "z", "y", "x")``
in that order, with ``y`` and ``x`` always present. Spatial coords hold pixel-centre
positions in µm (float64, uniform spacing, coord attr ``units = "µm"``); the centre of the
first pixel sits at ``origin`` (0 by default). The ``c`` coord holds channel names.

Points are ``(N, D)`` arrays in ``(x, y[, z])`` order; arrays are indexed ``(z, y, x)``.
The conversion between the two lives in :mod:`clemlab.transforms`; the accessor only
gathers the per-axis pixel sizes and origins and hands them over.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from . import transforms as _tf
from .errors import ImageError, MissingPixelSizeError, UnitError

__all__ = [
    "ALL_DIMS",
    "SPATIAL_DIMS",
    "UNIT",
    "as_image",
    "is_image",
    "check_image",
    "unit_to_um",
    "normalize_unit",
    "ClemAccessor",
    "frame_of",
    "same_frame",
]

#: Allowed dims, in the only allowed order.
ALL_DIMS = ("c", "z", "y", "x")
#: Spatial dims in array order.
SPATIAL_DIMS = ("z", "y", "x")
#: The one canonical length unit in memory.
UNIT = "µm"

# Length of one unit in µm. Keys are lower-cased spellings people write in files.
_UNIT_TO_UM = {
    "µm": 1.0,
    "\u03bcm": 1.0,  # Greek small letter mu
    "um": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "micrometers": 1.0,
    "micrometres": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "nanometre": 1e-3,
    "nanometers": 1e-3,
    "nanometres": 1e-3,
    "å": 1e-4,
    "\u212b": 1e-4,  # Angstrom sign
    "a": 1e-4,
    "angstrom": 1e-4,
    "angstroms": 1e-4,
    "pm": 1e-6,
    "mm": 1e3,
    "millimeter": 1e3,
    "millimetre": 1e3,
    "cm": 1e4,
    "centimeter": 1e4,
    "centimetre": 1e4,
    "m": 1e6,
    "meter": 1e6,
    "metre": 1e6,
    "in": 25400.0,
    "inch": 25400.0,
}


def normalize_unit(unit: str) -> str:
    """Return the canonical lower-case key of a length unit, or raise :class:`UnitError`.

    Parameters
    ----------
    unit : str
        A unit as written in files or by people: ``"um"``, ``"micron"``, ``"µm"``,
        ``"\\u00B5m"``, ``"nm"``, ``"Å"``, ``"A"``, ``"mm"``, ...

    Examples
    --------
    >>> normalize_unit("\\u00B5m"), normalize_unit("Micron"), normalize_unit("A")
    ('µm', 'µm', 'å')
    """
    if not isinstance(unit, str):
        raise UnitError(f"unit must be a string such as 'µm' or 'nm', got {unit!r}")
    key = unit.strip()
    # MICRO SIGN (U+00B5) and GREEK SMALL LETTER MU (U+03BC) both mean micro.
    key = key.replace("\u03bc", "µ")
    if key == "A" or key == "\u212b":
        return "å"
    low = key.lower()
    if low in _UNIT_TO_UM:
        factor = _UNIT_TO_UM[low]
        return "µm" if factor == 1.0 else low
    known = "µm (um, micron), nm, Å (A, angstrom), pm, mm, cm, m, inch"
    raise UnitError(f"unknown length unit {unit!r}; use one of: {known}")


def unit_to_um(unit: str) -> float:
    """Length of one ``unit`` in µm (``unit_to_um("nm") == 1e-3``).

    Raises :class:`UnitError`, listing the known units, for an unknown unit.
    """
    return _UNIT_TO_UM[normalize_unit(unit)]


def as_number(value: Any, argname: str, positive: bool, where: str = "") -> float:
    """``float(value)``, finite (and > 0 when ``positive``), else :class:`ImageError`.

    The message names ``argname`` and, when given, ``where`` (e.g. the file).
    """
    ctx = f" ({where})" if where else ""
    if isinstance(value, (bool, np.bool_)):  # float(True) == 1.0 would pass silently as 1 µm
        raise ImageError(f"{argname} must be a number, got {value!r}{ctx}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ImageError(f"{argname} must be a number, got {value!r}{ctx}") from None
    if not math.isfinite(v) or (positive and v <= 0):
        need = "a positive, finite number" if positive else "a finite number"
        hint = "; pass the physical size of one pixel, e.g. pixel_size=0.1 with units='µm'" if positive else ""
        raise ImageError(f"{argname} must be {need}, got {value!r}{ctx}{hint}")
    return v


def spread_per_dim(value: Any, sdims: tuple[str, ...], argname: str, where: str = "") -> dict:
    """Spread a scalar, a sequence (array order) or a mapping over the spatial dims ``sdims``.

    A mapping may leave dims out (the result then lacks them); a sequence must give one
    value per dim. Raises :class:`ImageError` naming ``argname`` (and ``where``).
    """
    ctx = f" of {where}" if where else ""
    if isinstance(value, Mapping):
        unknown = set(value) - set(sdims)
        if unknown:
            raise ImageError(
                f"{argname} has entries for {sorted(unknown)}, which are not spatial dims "
                f"{sdims}{ctx}"
            )
        return dict(value)
    if isinstance(value, (str, bytes)):
        raise ImageError(f"{argname} must be a number, a sequence or a dict, got {value!r}")
    if isinstance(value, numbers.Number) or np.ndim(value) == 0:
        return {d: value for d in sdims}
    if isinstance(value, (Sequence, np.ndarray)):
        if len(value) != len(sdims):
            raise ImageError(
                f"{argname} has {len(value)} values but the image{ctx} has {len(sdims)} spatial "
                f"dims {sdims}; give them in array order or as a dict keyed by dim"
            )
        return dict(zip(sdims, value))
    raise ImageError(f"{argname} must be a number, a sequence or a dict, got {type(value).__name__}")


def _per_dim(value: Any, sdims: tuple[str, ...], what: str, default: float | None) -> dict:
    """:func:`spread_per_dim` with every dim filled (``default``) or a missing-size error."""
    if value is None:
        if default is None:
            raise MissingPixelSizeError(
                f"no {what} given; pass {what}= (a number in `units`, a sequence in array "
                f"order {sdims}, or a dict keyed by dim)"
            )
        return {d: default for d in sdims}
    given = spread_per_dim(value, sdims, what)
    missing = [d for d in sdims if d not in given]
    if missing and default is None:
        raise MissingPixelSizeError(f"{what} gives no value for dims {missing}")
    return {d: given.get(d, default) for d in sdims}


def _default_dims(ndim: int, has_channels: bool) -> tuple[str, ...]:
    if ndim == 2:
        return ("y", "x")
    if ndim == 3:
        return ("c", "y", "x") if has_channels else ("z", "y", "x")
    if ndim == 4:
        return ("c", "z", "y", "x")
    raise ImageError(
        f"an image must have 2 to 4 dims (c, z, y, x), got an array with {ndim}; "
        "squeeze or select the extra axes first"
    )


def _check_dims(dims: Sequence[str], ndim: int) -> tuple[str, ...]:
    dims = tuple(dims)
    if len(dims) != ndim:
        raise ImageError(f"dims {dims} name {len(dims)} axes but the data has {ndim}")
    if len(set(dims)) != len(dims) or not set(dims) <= set(ALL_DIMS):
        raise ImageError(f"dims must be distinct names from {ALL_DIMS}, got {dims}")
    if "y" not in dims or "x" not in dims:
        raise ImageError(f"dims must include 'y' and 'x', got {dims}")
    if list(dims) != [d for d in ALL_DIMS if d in dims]:
        order = tuple(d for d in ALL_DIMS if d in dims)
        raise ImageError(
            f"dims must be in the order {ALL_DIMS}, got {dims}; transpose the data to {order}"
        )
    return dims


def frame_of(obj: Any) -> str | None:
    """The frame name ``obj`` carries, or None when it carries none (frameless).

    Images, datasets and tables carry it in ``attrs["frame"]`` (DataArray, Dataset, pandas
    DataFrame from :func:`clemlab.targets_from_points`), mapped points in ``.frame``
    (:meth:`clemlab.Registration.map_points`). An empty name counts as none.
    """
    attrs = getattr(obj, "attrs", None)
    name = attrs.get("frame") if isinstance(attrs, Mapping) else getattr(obj, "frame", None)
    return str(name) if isinstance(name, str) and name else None


def same_frame(a: str | None, b: str | None) -> bool:
    """Whether frame names ``a`` and ``b`` can name one frame.

    A frameless side (None) matches anything: data without a frame is never refused.
    Names compare case-insensitively, so ``"LM"`` (images, landmarks) and ``"lm"`` (the NGFF
    coordinate systems clemlab writes) are one frame.
    """
    return a is None or b is None or a.casefold() == b.casefold()


def as_image(
    data: Any,
    pixel_size: Any = None,
    origin: Any = None,
    units: str = UNIT,
    dims: Sequence[str] | None = None,
    channels: Sequence[str] | None = None,
    modality: str | None = None,
    frame: str | None = None,
    colors: Mapping[str, str] | None = None,
    source: str | None = None,
    name: str | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> xr.DataArray:
    """Build a clemlab image (an :class:`xarray.DataArray`) from numpy or dask data.

    Parameters
    ----------
    data : array_like, numpy or dask, shape matching ``dims``
        Pixel values. Dask arrays stay lazy.
    pixel_size : float or sequence or dict
        Physical size of one pixel in ``units``: one number for all spatial axes, a sequence
        in array order (e.g. ``(dz, dy, dx)``), or a dict keyed by dim (``{"y": .., "x": ..}``).
        Required; non-square pixels stay non-square.
    origin : float or sequence or dict, optional
        Physical position of the centre of the first pixel, in ``units``, same forms as
        ``pixel_size``. Default 0.
    units : str
        Unit of ``pixel_size`` and ``origin`` (``"µm"``, ``"um"``, ``"nm"``, ``"Å"``, ...).
        Everything is converted to µm.
    dims : sequence of str, optional
        Dim names, a subset of ``("c", "z", "y", "x")`` in that order. Default: ``(y, x)``
        for 2-D; ``(c, y, x)`` for 3-D when ``channels`` is given, else ``(z, y, x)``;
        ``(c, z, y, x)`` for 4-D.
    channels : sequence of str, optional
        Channel names (``"GFP"``, ``"beads"``), one per entry of the ``c`` axis.
        Default ``"C0", "C1", ...``.
    modality : str, optional
        ``"LM"``, ``"EM"``, ... stored in ``attrs["modality"]``.
    frame : str, optional
        Name of the coordinate frame the coords are in; defaults to ``modality``.
    colors : dict, optional
        Display colour per channel name (``{"GFP": "#00ff00"}``), in ``attrs["colors"]``.
    source : str, optional
        Path the data came from, in ``attrs["source"]``.
    name : str, optional
        Name of the DataArray.
    attrs : dict, optional
        Further JSON-able attributes.

    Returns
    -------
    xarray.DataArray
        The image, coords in µm.

    Raises
    ------
    MissingPixelSizeError
        If ``pixel_size`` is not given.
    ImageError
        On wrong dims, non-positive or non-finite pixel size, wrong channel count.
    UnitError
        On an unknown unit.

    Examples
    --------
    >>> import numpy as np
    >>> img = as_image(np.zeros((4, 6)), pixel_size=10, units="nm", modality="EM")
    >>> img.dims, float(img.x[1]), img.x.attrs["units"]
    (('y', 'x'), 0.01, 'µm')
    """
    if isinstance(data, xr.DataArray):
        data = data.data
    if not hasattr(data, "shape") or not hasattr(data, "dtype"):
        data = np.asarray(data)
    if data.dtype.kind not in "biuf":
        raise ImageError(
            f"image data must be numeric (bool, int, uint or float), got dtype {data.dtype}; "
            "convert RGB/complex data to a real channel first"
        )
    ndim = len(data.shape)
    dims = _check_dims(dims, ndim) if dims is not None else _default_dims(ndim, channels is not None)
    if 0 in data.shape:
        raise ImageError(f"image is empty: shape {tuple(data.shape)} for dims {dims}")
    factor = unit_to_um(units)
    sdims = tuple(d for d in dims if d != "c")
    sizes = {
        d: as_number(v, f"pixel_size for '{d}'", positive=True) * factor
        for d, v in _per_dim(pixel_size, sdims, "pixel_size", None).items()
    }
    origins = {
        d: as_number(v, f"origin for '{d}'", positive=False) * factor
        for d, v in _per_dim(origin, sdims, "origin", 0.0).items()
    }
    coords: dict[str, Any] = {}
    for d in sdims:
        n = data.shape[dims.index(d)]
        values = origins[d] + sizes[d] * np.arange(n, dtype=np.float64)
        coords[d] = xr.Variable(d, values, attrs={"units": UNIT, "pixel_size": sizes[d]})
    if "c" in dims:
        nc = data.shape[dims.index("c")]
        names = list(channels) if channels is not None else [f"C{i}" for i in range(nc)]
        if len(names) != nc:
            raise ImageError(f"{len(names)} channel names given for {nc} channels: {names}")
        if len(set(names)) != len(names):
            raise ImageError(f"channel names must be distinct, got {names}")
        coords["c"] = [str(n) for n in names]
    elif channels is not None and len(channels) != 1:
        raise ImageError(f"channels {list(channels)} given but the image has no 'c' dim")
    out_attrs: dict[str, Any] = dict(attrs or {})
    if modality is not None:
        out_attrs["modality"] = str(modality)
    if frame is not None or modality is not None:
        out_attrs["frame"] = str(frame if frame is not None else modality)
    if colors:
        out_attrs["colors"] = {str(k): str(v) for k, v in colors.items()}
    if source is not None:
        out_attrs["source"] = str(source)
    out_attrs.setdefault("clem:transforms", {})
    return xr.DataArray(data, dims=dims, coords=coords, name=name, attrs=out_attrs)


def _image_problem(obj: Any) -> str | None:
    """Return a description of why ``obj`` is not a clemlab image, or None."""
    if not isinstance(obj, xr.DataArray):
        return f"expected an xarray.DataArray image, got {type(obj).__name__}; build one with clemlab.as_image"
    dims = tuple(obj.dims)
    try:
        _check_dims(dims, len(dims))
    except ImageError as exc:
        return str(exc)
    for d in dims:
        if d == "c":
            continue
        if d not in obj.coords:
            return f"spatial dim '{d}' has no coordinate; build the image with clemlab.as_image"
        values = np.asarray(obj.coords[d].values, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            return f"coordinate '{d}' holds non-finite values"
        if values.size >= 2:
            steps = np.diff(values)
            step = (values[-1] - values[0]) / (values.size - 1)
            if step <= 0 or not np.allclose(steps, step, rtol=1e-6, atol=0):
                return f"coordinate '{d}' is not uniformly increasing (pixel-centre positions expected)"
        elif "pixel_size" not in obj.coords[d].attrs:
            return f"coordinate '{d}' has one value and no 'pixel_size' attr; its pixel size is unknown"
        units = obj.coords[d].attrs.get("units")
        if units is None:
            return f"coordinate '{d}' has no 'units' attr; clemlab images are in µm"
        try:
            if unit_to_um(units) != 1.0:
                return f"coordinate '{d}' is in {units!r}; clemlab images are in µm (convert first)"
        except UnitError as exc:
            return str(exc)
    return None


def is_image(obj: Any) -> bool:
    """True when ``obj`` is a DataArray that follows the clemlab image model."""
    return _image_problem(obj) is None


def check_image(obj: Any, argname: str = "image") -> xr.DataArray:
    """Return ``obj`` if it is a valid image, else raise :class:`ImageError` naming ``argname``."""
    problem = _image_problem(obj)
    if problem is not None:
        raise ImageError(f"{argname}: {problem}")
    return obj


@xr.register_dataarray_accessor("clem")
class ClemAccessor:
    """Stateless view of an image's physical geometry: ``image.clem``.

    Nothing is cached: every property is derived from the coords and attrs, so a sliced or
    copied image always reports its own geometry.
    """

    def __init__(self, obj: xr.DataArray):
        self._obj = obj

    # -- geometry -------------------------------------------------------------------------
    @property
    def spatial_dims(self) -> tuple[str, ...]:
        """Spatial dims in array order, e.g. ``("z", "y", "x")``."""
        return tuple(d for d in self._obj.dims if d in SPATIAL_DIMS)

    @property
    def ndim(self) -> int:
        """Number of spatial dims (2 or 3): the ``D`` of points for this image."""
        return len(self.spatial_dims)

    def _step(self, d: str) -> float:
        coord = self._obj.coords[d]
        if coord.size >= 2:
            v = coord.values
            return float((v[-1] - v[0]) / (coord.size - 1))
        return float(coord.attrs["pixel_size"])

    @property
    def pixel_size(self) -> dict[str, float]:
        """Pixel size in µm per spatial dim, e.g. ``{"y": 0.1, "x": 0.1}``."""
        check_image(self._obj)
        return {d: self._step(d) for d in self.spatial_dims}

    @property
    def origin(self) -> dict[str, float]:
        """Position in µm of the centre of the first pixel, per spatial dim."""
        return {d: float(self._obj.coords[d].values[0]) for d in self.spatial_dims}

    @property
    def extent(self) -> dict[str, tuple[float, float]]:
        """Physical span in µm per spatial dim, pixel edges: ``{dim: (low, high)}``."""
        size, orig = self.pixel_size, self.origin
        return {
            d: (orig[d] - size[d] / 2, orig[d] + size[d] * (self._obj.sizes[d] - 0.5))
            for d in self.spatial_dims
        }

    @property
    def mpl_extent(self) -> tuple[float, float, float, float]:
        """``(left, right, bottom, top)`` in µm for ``imshow(..., origin="upper")``."""
        ext = self.extent
        return (ext["x"][0], ext["x"][1], ext["y"][1], ext["y"][0])

    def _xyz(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel size and origin in point order ``(x, y[, z])``."""
        size, orig = self.pixel_size, self.origin
        order = _tf.POINT_AXES[: self.ndim]
        return np.array([size[d] for d in order]), np.array([orig[d] for d in order])

    def to_pixel(self, points: Any) -> np.ndarray:
        """Physical points (µm) -> continuous pixel coordinates.

        Parameters
        ----------
        points : array_like, shape (N, D) or (D,)
            Positions in µm, columns ``(x, y[, z])``.

        Returns
        -------
        numpy.ndarray, shape like ``points``
            Pixel coordinates, columns ``(x, y[, z])`` = (column, row[, plane]); integer values
            are pixel centres. Use :func:`clemlab.transforms.xy_to_rc` for array index order.
        """
        size, orig = self._xyz()
        return _tf.physical_to_pixel(points, size, orig)

    def to_physical(self, pixels: Any) -> np.ndarray:
        """Continuous pixel coordinates ``(x, y[, z])`` -> physical points in µm, same order."""
        size, orig = self._xyz()
        return _tf.pixel_to_physical(pixels, size, orig)

    # -- frames and transforms ------------------------------------------------------------
    @property
    def frame(self) -> str | None:
        """Name of the coordinate frame the coords are in (``attrs["frame"]``)."""
        return self._obj.attrs.get("frame")

    @property
    def modality(self) -> str | None:
        """``attrs["modality"]``: ``"LM"``, ``"EM"``, ..."""
        return self._obj.attrs.get("modality")

    @property
    def transforms(self) -> dict[str, _tf.Transform]:
        """Known transforms from this image's frame into other frames, as objects."""
        raw = self._obj.attrs.get("clem:transforms") or {}
        return {name: _tf.transform_from_dict(d) for name, d in raw.items()}

    def transform_to(self, frame: str) -> _tf.Transform:
        """The transform mapping points of this image's frame into ``frame``.

        Raises :class:`ImageError` listing the known frames when there is none.
        """
        if frame == self.frame:
            return _tf.Identity(ndim=self.ndim, source_frame=frame, target_frame=frame)
        raw = self._obj.attrs.get("clem:transforms") or {}
        if frame not in raw:
            known = sorted(raw) + ([self.frame] if self.frame else [])
            raise ImageError(
                f"image in frame {self.frame!r} has no transform to frame {frame!r}; known "
                f"frames: {known}. Attach one with image.clem.with_transform({frame!r}, tf)"
            )
        return _tf.transform_from_dict(raw[frame])

    def with_transform(self, frame: str, transform: _tf.Transform) -> xr.DataArray:
        """Return a shallow copy whose attrs also map this image's frame into ``frame``."""
        if not isinstance(transform, _tf.Transform):
            raise ImageError(f"transform must be a clemlab Transform, got {type(transform).__name__}")
        if transform.ndim != self.ndim:
            raise ImageError(
                f"a {transform.ndim}-D transform cannot map a {self.ndim}-D image's frame"
            )
        out = self._obj.copy(deep=False)
        out.attrs = dict(out.attrs)
        tfs = dict(out.attrs.get("clem:transforms") or {})
        tfs[str(frame)] = transform.to_dict()
        out.attrs["clem:transforms"] = tfs
        return out

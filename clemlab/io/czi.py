"""Zeiss CZI files, read through czifile (Christoph Gohlke's reader, built on tifffile).

What is read, and from where:

- pixel size: ``Metadata/Scaling/Items/Distance[@Id=X|Y|Z]/Value`` (metres; a value of 0
  means "not calibrated");
- channels: ``Metadata/Information/Image/Dimensions/Channels/Channel`` in C order; the
  ``Name`` attribute names the channel, the dye (``Fluor`` / ``DyeName``) and the emission /
  excitation wavelengths (nm) go to ``attrs["channel_info"]``;
- scenes: the subblocks' ``S`` index, named from ``.../Dimensions/S/Scenes/Scene/@Name``;
- tiles: every full-resolution subblock of a scene, at its ``X``/``Y`` start in the file's
  pixel frame (``attrs["tile_positions_px"]``, ``(x, y)`` per tile in mosaic-index order);
  pyramid subblocks (stored smaller than their extent) are skipped;
- stage position (``attrs["stage_position"]``, µm): the scene's ``CenterPosition``, else the
  ``StageXPosition``/``StageYPosition`` recorded with the first tile (the field centre when
  that tile was taken), else the scene's ``Positions/Position``; ``source`` and
  ``refers_to`` say which.

Mosaics: :func:`read_czi` assembles a scene from its tiles at their stored positions, with
no blending: where tiles overlap, the tile with the higher mosaic index is kept (the order ZEN
acquired and displays them); ``attrs["mosaic"]`` states this. :func:`read_czi_tiles` returns
the tiles and their positions instead, for :func:`clemlab.mosaic_from_tiles` (feathered
overlaps, refined positions).

Pixels are read lazily: one dask task per output block (at most :data:`BLOCK` pixels a side)
of one plane, opening the file and decoding only the tiles that cross the block.
"""

from __future__ import annotations

import os
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FileFormatError, ImageError
from . import RawImage, fmt_path, want_lazy
from ._containers import choose, pick_timepoint, unique_names

__all__ = ["read_czi", "read_czi_tiles", "list_czi", "BLOCK"]

#: Side (px) of the blocks a lazily read CZI plane is split into.
BLOCK = 4096

# Subblock compressions czifile decodes (through imagecodecs where compressed).
_DECODABLE = {0: "uncompressed", 1: "JPEG", 2: "LZW", 4: "JPEG XR"}
_COMPRESSION_NAMES = {5: "zstd (zstd0)", 6: "zstd with header (zstd1)"}
# Dims a clemlab image has a place for; any other CZI dim must have one value per scene.
_HANDLED = set("XYCZTSM")


@dataclass
class _Tile:
    index: int  # position in the file's subblock directory
    x: int
    y: int
    w: int
    h: int
    m: int
    c: int
    z: int
    t: int


@dataclass
class _Scene:
    key: int
    name: str
    tiles: list[_Tile] = field(default_factory=list)

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """(x0, y0, width, height) in the file's pixel frame."""
        x0 = min(t.x for t in self.tiles)
        y0 = min(t.y for t in self.tiles)
        x1 = max(t.x + t.w for t in self.tiles)
        y1 = max(t.y + t.h for t in self.tiles)
        return x0, y0, x1 - x0, y1 - y0

    def values(self, dim: str) -> list[int]:
        return sorted({getattr(t, dim) for t in self.tiles})

    def n_tiles(self) -> int:
        return len({t.m for t in self.tiles})


@dataclass
class _Layout:
    """What the subblock directory and the XML say about the whole file."""

    path: Path
    dtype: np.dtype
    samples: int
    scenes: list[_Scene]
    pixel_size: dict[str, float]
    channel_names: list[str] | None
    channel_info: dict[str, dict]
    scene_xml: dict[int, ET.Element]
    first_tile_meta: dict[int, int]  # scene key -> directory index of its first tile


def _open(path: Path, where: str) -> Any:
    import czifile  # a dependency, loaded on first use so `import clemlab` stays light

    try:
        return czifile.CziFile(os.fspath(path), detectmosaic=False)
    except Exception as exc:  # czifile raises ValueError, struct.error, OSError on bad files
        raise FileFormatError(f"{where} is not a readable CZI file (truncated or corrupt?): {exc}") from None


def _text(el: ET.Element | None, path: str) -> str | None:
    if el is None:
        return None
    found = el.find(path)
    if found is None or found.text is None:
        return None
    return found.text.strip() or None


def _number(text: str | None) -> float | None:
    try:
        v = float(text) if text is not None else None
    except ValueError:
        return None
    return v if v is not None and np.isfinite(v) else None


def _scan(path: Path) -> _Layout:
    where = fmt_path(path)
    size = path.stat().st_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # czifile warns, then guesses, on damaged files
        with _open(path, where) as f:
            try:
                entries = list(f.subblock_directory)
                xml = f.metadata()
            except Exception as exc:
                raise FileFormatError(f"{where}: cannot read its subblock directory (truncated or corrupt?): {exc}") from None
            if not entries:
                raise FileFormatError(f"{where} holds no image subblocks (truncated or corrupt?)")
            # the subblock stored last must end inside the file, else the file was cut short
            last = max(entries, key=lambda e: e.file_position)
            end = None
            if last.file_position < size:
                try:
                    segment = last.data_segment()
                    end = segment.data_offset + segment.data_size
                except Exception:
                    end = None
            if end is None or end > size:
                raise FileFormatError(
                    f"{where} is truncated: its last image subblock (at byte {last.file_position}) ends "
                    f"{'past' if end is None else f'at byte {end}, past'} the end of the file ({size} bytes)"
                )
    root = None
    if xml:
        try:
            root = ET.fromstring(xml)
        except ET.ParseError as exc:
            raise FileFormatError(f"{where}: its XML metadata is not valid XML ({exc})") from None

    scenes: dict[int, _Scene] = {}
    dtype = None
    samples = 1
    for i, e in enumerate(entries):
        dims = {d.dimension: d for d in e.dimension_entries}
        if "X" not in dims or "Y" not in dims:
            continue
        if int(getattr(e, "pyramid_type", 0) or 0) != 0 or any(
            d.size != d.stored_size for k, d in dims.items() if k in "XY"
        ):
            continue  # a pyramid level: the full-resolution tiles are read instead
        for k, d in dims.items():
            if k not in _HANDLED and d.start != 0:
                raise ImageError(
                    f"{where} has a {k!r} dimension with more than one index (CZI dims: "
                    f"{sorted(dims)}); clemlab reads scenes, tiles, channels, z and time only"
                )
        if e.compression not in _DECODABLE:
            name = _COMPRESSION_NAMES.get(e.compression, f"code {e.compression}")
            raise FileFormatError(
                f"{where} stores its pixels with {name} compression, which czifile does not decode; "
                "re-save it uncompressed or as JPEG XR in ZEN, or export it to OME-TIFF"
            )
        etype = np.dtype(e.dtype)
        if dtype is None:
            dtype = etype.base if etype.shape else etype
            samples = int(np.prod(etype.shape)) if etype.shape else 1
        s = dims["S"].start if "S" in dims else 0
        mosaic = e.mosaic_index if e.mosaic_index is not None else (dims["M"].start if "M" in dims else 0)
        tile = _Tile(
            index=i, x=int(dims["X"].start), y=int(dims["Y"].start), w=int(dims["X"].size), h=int(dims["Y"].size),
            m=int(mosaic), c=int(dims["C"].start) if "C" in dims else 0,
            z=int(dims["Z"].start) if "Z" in dims else 0, t=int(dims["T"].start) if "T" in dims else 0,
        )
        scenes.setdefault(int(s), _Scene(int(s), "")).tiles.append(tile)
    if not scenes:
        raise FileFormatError(f"{where} holds no full-resolution image subblocks")

    pixel_size: dict[str, float] = {}
    image_el = root.find("Metadata/Information/Image") if root is not None else None
    if root is not None:
        for dist in root.findall("Metadata/Scaling/Items/Distance"):
            axis = (dist.get("Id") or "").lower()
            v = _number(_text(dist, "Value"))
            if axis in ("x", "y", "z") and v is not None and v > 0:
                pixel_size[axis] = v * 1e6

    channel_names = None
    channel_info: dict[str, dict] = {}
    if image_el is not None:
        chans = image_el.findall("Dimensions/Channels/Channel")
        if chans:
            channel_names = unique_names([c.get("Name") or c.get("Id") for c in chans], "C")
            for name, ch in zip(channel_names, chans):
                info: dict[str, Any] = {}
                dye = _text(ch, "Fluor") or _text(ch, "DyeName")
                if dye:
                    info["dye"] = dye
                for key, tag in (("emission_nm", "EmissionWavelength"), ("excitation_nm", "ExcitationWavelength")):
                    v = _number(_text(ch, tag))
                    if v is not None and v > 0:
                        info[key] = v
                if info:
                    channel_info[name] = info

    scene_xml: dict[int, ET.Element] = {}
    if image_el is not None:
        for sc in image_el.findall("Dimensions/S/Scenes/Scene"):
            try:
                scene_xml[int(sc.get("Index", "-1"))] = sc
            except ValueError:
                continue
    ordered = [scenes[k] for k in sorted(scenes)]
    for sc in ordered:
        sc.tiles.sort(key=lambda t: (t.m, t.t, t.c, t.z))
        el = scene_xml.get(sc.key)
        sc.name = (el.get("Name") if el is not None else None) or f"scene {sc.key}"
    names = unique_names([sc.name for sc in ordered], "scene ")
    for sc, name in zip(ordered, names):
        sc.name = name
    return _Layout(
        path=path, dtype=dtype or np.dtype(np.uint8), samples=samples, scenes=ordered, pixel_size=pixel_size,
        channel_names=channel_names, channel_info=channel_info, scene_xml=scene_xml,
        first_tile_meta={sc.key: sc.tiles[0].index for sc in ordered},
    )


def _describe(layout: _Layout, sc: _Scene) -> str:
    x0, y0, w, h = sc.bbox
    parts = [f"{h} x {w} px"]
    nt = sc.n_tiles()
    if nt > 1:
        parts.append(f"{nt} tiles")
    for dim, label in (("c", "channels"), ("z", "planes"), ("t", "time points")):
        n = len(sc.values(dim))
        if n > 1:
            parts.append(f"{n} {label}")
    return f"{sc.name!r} ({', '.join(parts)})"


def _choose_scene(layout: _Layout, scene: int | str | None, where: str) -> _Scene:
    i = choose([sc.name for sc in layout.scenes], scene, where, kind="scene", keyword="scene",
               described=[_describe(layout, sc) for sc in layout.scenes])
    return layout.scenes[i]


def _stage_position(layout: _Layout, sc: _Scene) -> dict[str, Any] | None:
    el = layout.scene_xml.get(sc.key)
    centre = _text(el, "CenterPosition")
    if centre:
        xy = [_number(v) for v in centre.split(",")]
        if len(xy) == 2 and None not in xy:
            return {"x": xy[0], "y": xy[1], "units": "µm", "source": "CZI Scene/CenterPosition",
                    "refers_to": "centre of the scene"}
    tags = _subblock_tags(layout.path, layout.first_tile_meta[sc.key])
    sx, sy = _number(str(tags.get("StageXPosition"))), _number(str(tags.get("StageYPosition")))
    if sx is not None and sy is not None:
        pos = {"x": sx, "y": sy, "units": "µm", "source": "CZI subblock StageXPosition/StageYPosition",
               "refers_to": "centre of the first tile when it was acquired"}
        fz = _number(str(tags.get("FocusPosition")))
        if fz is not None:
            pos["z"] = fz
        return pos
    if el is not None:
        p = el.find("Positions/Position")
        if p is not None:
            x, y, z = (_number(p.get(k)) for k in ("X", "Y", "Z"))
            if x is not None and y is not None:
                pos = {"x": x, "y": y, "units": "µm", "source": "CZI Scene/Positions/Position",
                       "refers_to": "position of the scene"}
                if z is not None:
                    pos["z"] = z
                return pos
    return None


def _subblock_tags(path: Path, index: int) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _open(path, fmt_path(path)) as f:
            try:
                md = f.subblock_directory[index].data_segment().metadata()
            except Exception:
                return {}
    if isinstance(md, dict):
        tags = md.get("Tags")
        return tags if isinstance(tags, dict) else {}
    return {}


def _read_tile(f: Any, tile: _Tile, where: str, samples: int) -> np.ndarray:
    try:
        data = f.subblock_directory[tile.index].data_segment().data()
    except Exception as exc:
        raise FileFormatError(
            f"{where}: could not read the pixels of subblock {tile.index} (the file is truncated or corrupt): {exc}"
        ) from None
    shape = (tile.h, tile.w, samples) if samples > 1 else (tile.h, tile.w)
    try:
        return np.asarray(data).reshape(shape)
    except ValueError:
        raise FileFormatError(
            f"{where}: subblock {tile.index} holds {np.asarray(data).size} values, expected "
            f"{int(np.prod(shape))} (the file is truncated or corrupt)"
        ) from None


def _block(path: str, tiles: tuple, origin_xy: tuple[int, int], y0: int, x0: int, h: int, w: int,
           dtype: np.dtype, samples: int) -> np.ndarray:
    """One (h, w[, samples]) block of one plane: the tiles crossing it, later tiles on top."""
    shape = (h, w, samples) if samples > 1 else (h, w)
    out = np.zeros(shape, dtype)
    where = fmt_path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _open(Path(path), where) as f:
            for tile in tiles:
                ty, tx = tile.y - origin_xy[1] - y0, tile.x - origin_xy[0] - x0
                ys, xs = max(ty, 0), max(tx, 0)
                ye, xe = min(ty + tile.h, h), min(tx + tile.w, w)
                if ye <= ys or xe <= xs:
                    continue
                data = _read_tile(f, tile, where, samples)
                out[ys:ye, xs:xe] = data[ys - ty : ye - ty, xs - tx : xe - tx]
    return out


def _plane(layout: _Layout, tiles: list[_Tile], bbox: tuple[int, int, int, int]) -> Any:
    """A lazy (y, x[, samples]) plane assembled from ``tiles`` (dask, blocks of :data:`BLOCK`)."""
    import dask
    import dask.array as da

    x0, y0, w, h = bbox
    rows = []
    for by in range(0, h, BLOCK):
        row = []
        for bx in range(0, w, BLOCK):
            bh, bw = min(BLOCK, h - by), min(BLOCK, w - bx)
            crossing = tuple(
                t for t in tiles
                if t.y - y0 < by + bh and t.y - y0 + t.h > by and t.x - x0 < bx + bw and t.x - x0 + t.w > bx
            )
            shape = (bh, bw, layout.samples) if layout.samples > 1 else (bh, bw)
            task = dask.delayed(_block, pure=True)(
                os.fspath(layout.path), crossing, (x0, y0), by, bx, bh, bw, layout.dtype, layout.samples
            )
            row.append(da.from_delayed(task, shape=shape, dtype=layout.dtype))
        rows.append(row)
    return da.block(rows)


def list_czi(path: str | os.PathLike) -> list[dict[str, Any]]:
    """One row per scene: name, dims, sizes, dtype, pixel size (µm), channels, tiles.

    Returns
    -------
    list of dict
        Keys ``name``, ``dims`` (the dims :func:`read_czi` returns, plus ``t`` for a time
        series), ``sizes`` (dict), ``dtype``, ``pixel_size_um`` (dict x/y[/z]),
        ``pixel_size_source``, ``channels``, ``tiles`` (number of mosaic tiles).
    """
    path = Path(path)
    layout = _scan(path)
    rows = []
    for sc in layout.scenes:
        sizes = _sizes(layout, sc)
        rows.append({
            "name": sc.name,
            "dims": tuple(sizes),
            "sizes": sizes,
            "dtype": str(layout.dtype),
            "pixel_size_um": dict(layout.pixel_size),
            "pixel_size_source": _SOURCE if layout.pixel_size else "none",
            "channels": _channels(layout, sc),
            "tiles": sc.n_tiles(),
        })
    return rows


_SOURCE = "CZI Metadata/Scaling/Items/Distance (m)"


def _channels(layout: _Layout, sc: _Scene) -> list[str] | None:
    cs = sc.values("c")
    if layout.samples == 3:
        return ["R", "G", "B"]
    if layout.channel_names is not None and max(cs) < len(layout.channel_names):
        return [layout.channel_names[c] for c in cs]
    return None


def _sizes(layout: _Layout, sc: _Scene) -> dict[str, int]:
    _, _, w, h = sc.bbox
    sizes: dict[str, int] = {}
    nt = len(sc.values("t"))
    if nt > 1:
        sizes["t"] = nt
    nc = len(sc.values("c")) if layout.samples == 1 else layout.samples
    if nc > 1:
        sizes["c"] = nc
    nz = len(sc.values("z"))
    if nz > 1:
        sizes["z"] = nz
    sizes["y"], sizes["x"] = h, w
    return sizes


def read_czi(path: str | os.PathLike, *, scene: int | str | None = None, timepoint: int | None = None,
             lazy: bool | None = None, chunks: Any = None) -> RawImage:
    """Read one scene of a CZI file, its tiles assembled at their stored positions.

    Parameters
    ----------
    path : path-like
        The ``.czi`` file.
    scene : int or str, optional
        Scene index or name; required when the file holds several scenes.
    timepoint : int, optional
        Time point to read; required for a time series.
    lazy, chunks : see :func:`clemlab.io.open_image`.

    Returns
    -------
    RawImage
        dims a subset of ``(c, z, y, x)``; pixel size in µm; origin 0 at the first pixel of
        the scene's bounding box; ``attrs`` with ``scene``, ``tile_positions_px``,
        ``mosaic``, ``channel_info``, ``stage_position`` where the file has them.
    """
    import dask.array as da

    path = Path(path)
    where = fmt_path(path)
    layout = _scan(path)
    sc = _choose_scene(layout, scene, where)
    times = sc.values("t")
    ti = times[pick_timepoint(len(times), timepoint, where)]
    cs, zs = sc.values("c"), sc.values("z")
    if layout.samples > 1 and len(cs) > 1:
        raise ImageError(f"{where}: scene {sc.name!r} has both colour (RGB) pixels and {len(cs)} channels; clemlab images hold one channel axis")
    bbox = sc.bbox
    planes = []
    for c in cs:
        zplanes = [_plane(layout, [t for t in sc.tiles if t.c == c and t.z == z and t.t == ti], bbox) for z in zs]
        planes.append(da.stack(zplanes))
    data = da.stack(planes)  # (c, z, y, x[, s])
    if layout.samples > 1:
        data = da.moveaxis(data[0], -1, 0)  # (s, z, y, x)
    dims = ["c", "z", "y", "x"]
    if data.shape[1] == 1:
        data, dims = data[:, 0], ["c", "y", "x"]
    channels = _channels(layout, sc)
    attrs: dict[str, Any] = {"scene": sc.name, "scene_index": layout.scenes.index(sc)}
    if data.shape[0] == 1:
        if channels:
            attrs["channel"] = channels[0]
        data, dims, channels = data[0], dims[1:], None
    nbytes = int(np.prod(data.shape)) * layout.dtype.itemsize
    if chunks is not None:
        data = data.rechunk(chunks)
    if not want_lazy(lazy, chunks, nbytes):
        data = data.compute(scheduler="synchronous")
    mosaic_tiles = sorted({(t.m, t.x, t.y) for t in sc.tiles})
    attrs["tile_positions_px"] = [[x, y] for _, x, y in mosaic_tiles]
    attrs["tile_positions_frame"] = "CZI subblock X/Y start (px, the file's pixel frame), one (x, y) per tile"
    if len(mosaic_tiles) > 1:
        attrs["mosaic"] = (
            f"assembled from {len(mosaic_tiles)} tiles at their stored positions, without blending: "
            "where tiles overlap the later tile (higher mosaic index) is kept; "
            "clemlab.io.czi.read_czi_tiles + clemlab.mosaic_from_tiles give feathered overlaps"
        )
    names = [channels[i] for i in range(len(channels))] if channels else ([attrs["channel"]] if "channel" in attrs else [])
    info = {n: layout.channel_info[n] for n in names if n in layout.channel_info}
    if info:
        attrs["channel_info"] = info
    if len(times) > 1:
        attrs["timepoint"] = times.index(ti)
    stage = _stage_position(layout, sc)
    if stage is not None:
        attrs["stage_position"] = stage
    attrs["pixel_size_source"] = _SOURCE if layout.pixel_size else "none"
    return RawImage(
        data=data,
        dims=tuple(dims),
        pixel_size={d: v for d, v in layout.pixel_size.items() if d in dims},
        channels=channels,
        modality="LM",
        attrs=attrs,
        missing_reason="its CZI metadata has no Scaling/Items/Distance for X and Y",
    )


def read_czi_tiles(path: str | os.PathLike, *, scene: int | str | None = None, channel: int | str = 0,
                   z: int = 0, timepoint: int | None = None) -> tuple[list[Any], np.ndarray, float]:
    """The tiles of one scene / channel / plane, unassembled, for :func:`clemlab.mosaic_from_tiles`.

    Parameters
    ----------
    path : path-like
        The ``.czi`` file.
    scene : int or str, optional
        Scene index or name; required when the file holds several scenes.
    channel : int or str
        Channel index or name.
    z : int
        Plane index.
    timepoint : int, optional
        Time point; required for a time series.

    Returns
    -------
    tiles : list of dask arrays, each (h, w) (or (h, w, 3) for RGB)
    positions : numpy.ndarray, shape (N, 2)
        ``(x, y)`` of each tile's first pixel, in pixels from the scene's bounding-box corner.
    pixel_size : float
        x pixel size in µm (``nan`` when the file is uncalibrated).

    Examples
    --------
    >>> tiles, pos, px = read_czi_tiles("mosaic.czi")            # doctest: +SKIP
    >>> mosaic = clemlab.mosaic_from_tiles(tiles, pos, px, modality="LM")  # doctest: +SKIP
    """
    import dask
    import dask.array as da

    path = Path(path)
    where = fmt_path(path)
    layout = _scan(path)
    sc = _choose_scene(layout, scene, where)
    times = sc.values("t")
    ti = times[pick_timepoint(len(times), timepoint, where)]
    cs, zs = sc.values("c"), sc.values("z")
    if isinstance(channel, str):
        names = _channels(layout, sc) or []
        if channel not in names:
            raise ImageError(f"{where}: scene {sc.name!r} has no channel {channel!r}; it has {names}")
        ci = names.index(channel)
    else:
        ci = channel
    if not -len(cs) <= ci < len(cs) or not -len(zs) <= z < len(zs):
        raise ImageError(f"{where}: channel={channel!r} / z={z} out of range ({len(cs)} channels, {len(zs)} planes)")
    c, zv = cs[ci], zs[z]
    chosen = [t for t in sc.tiles if t.c == c and t.z == zv and t.t == ti]
    x0, y0, _, _ = sc.bbox
    tiles, positions = [], []
    for t in chosen:
        shape = (t.h, t.w, layout.samples) if layout.samples > 1 else (t.h, t.w)
        task = dask.delayed(_block, pure=True)(os.fspath(path), (t,), (t.x, t.y), 0, 0, t.h, t.w, layout.dtype, layout.samples)
        tiles.append(da.from_delayed(task, shape=shape, dtype=layout.dtype))
        positions.append((t.x - x0, t.y - y0))
    return tiles, np.asarray(positions, dtype=float), layout.pixel_size.get("x", float("nan"))

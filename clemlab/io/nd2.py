"""Nikon ND2 files, read through the nd2 package (Talley Lambert's reader, used by napari).

What is read, and from where:

- pixel size: ``ND2File.voxel_size()`` (µm, x / y / z);
- axes: ``Y X`` -> ``y x``, ``Z`` -> ``z``, ``C`` -> ``c`` (named from the channel
  metadata; emission / excitation wavelengths in nm go to ``attrs["channel_info"]``), RGB
  samples ``S`` -> ``c`` (``R, G, B``); ``P`` (XY positions) are the file's scenes, chosen
  with ``scene=`` (by index or by the position's name); ``T`` is chosen with ``timepoint=``;
- stage position (``attrs["stage_position"]``, µm): ``stagePositionUm`` of the chosen
  position in the XY-position loop, else of the first frame's metadata.

No ND2 file is available to clemlab's tests (the nd2 package reads but does not write ND2),
so this reader is tested only for its error paths.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FileFormatError, ImageError
from . import RawImage, fmt_path, want_lazy
from ._containers import choose, pick_timepoint, unique_names

__all__ = ["read_nd2", "list_nd2"]

_KNOWN = {"T", "P", "Z", "C", "Y", "X", "S"}
_SOURCE = "ND2 voxel_size() (µm)"


def _open(path: Path) -> Any:
    import nd2  # a dependency, loaded on first use so `import clemlab` stays light

    f = None
    try:
        f = nd2.ND2File(os.fspath(path))
        # the header, attributes and experiment are parsed on first access: parse them now,
        # so that a damaged file fails here, with its name, rather than deep inside a read
        _ = (f.sizes, f.attributes, f.experiment, f.metadata)
    except Exception as exc:  # nd2 raises ValueError, OSError, struct.error on bad files
        if f is not None:
            f.close()
        raise FileFormatError(f"{fmt_path(path)} is not a readable ND2 file (truncated or corrupt?): {exc}") from None
    return f


def _positions(f: Any) -> list[Any]:
    for loop in f.experiment or []:
        if getattr(loop, "type", "") == "XYPosLoop":
            return list(loop.parameters.points)
    return []


def _position_names(f: Any, n: int) -> list[str]:
    points = _positions(f)
    names = [getattr(p, "name", None) for p in points] if len(points) == n else [None] * n
    return unique_names(names, "position ")


def _pixel_sizes(f: Any) -> dict[str, float]:
    vs = f.voxel_size()
    out = {}
    for dim in ("x", "y", "z"):
        v = float(getattr(vs, dim))
        if np.isfinite(v) and v > 0:
            out[dim] = v
    return out


def _channels(f: Any) -> tuple[list[str] | None, dict[str, dict]]:
    meta = getattr(f.metadata, "channels", None) if not isinstance(f.metadata, dict) else None
    if not meta:
        return None, {}
    names = unique_names([ch.channel.name for ch in meta], "C")
    info: dict[str, dict] = {}
    for name, ch in zip(names, meta):
        entry = {}
        for key, attr in (("emission_nm", "emissionLambdaNm"), ("excitation_nm", "excitationLambdaNm")):
            v = getattr(ch.channel, attr, None)
            if v:
                entry[key] = float(v)
        if entry:
            info[name] = entry
    return names, info


def list_nd2(path: str | os.PathLike) -> list[dict[str, Any]]:
    """One row per XY position: name, dims (the file's), sizes, dtype, pixel size (µm), channels."""
    path = Path(path)
    with _open(path) as f:
        sizes = dict(f.sizes)
        n = sizes.pop("P", 1)
        px = _pixel_sizes(f)
        names, _ = _channels(f)
        return [
            {"name": name, "dims": tuple(sizes), "sizes": dict(sizes), "dtype": str(f.dtype),
             "pixel_size_um": px, "pixel_size_source": _SOURCE if px else "none",
             "channels": names if "C" in sizes else None}
            for name in _position_names(f, n)
        ]


def read_nd2(path: str | os.PathLike, *, scene: int | str | None = None, timepoint: int | None = None,
             lazy: bool | None = None, chunks: Any = None) -> RawImage:
    """Read one XY position of a Nikon ND2 file.

    Parameters
    ----------
    path : path-like
        The ``.nd2`` file.
    scene : int or str, optional
        XY position (index or name); required when the file holds several.
    timepoint : int, optional
        Time point; required for a time series.
    lazy, chunks : see :func:`clemlab.io.open_image`.

    Returns
    -------
    RawImage
        dims a subset of ``(c, z, y, x)``; pixel size in µm; ``attrs`` with ``scene``,
        ``channel_info`` and ``stage_position`` where the file has them.
    """
    path = Path(path)
    where = fmt_path(path)
    with _open(path) as f:
        sizes = dict(f.sizes)
        axes = tuple(sizes)
        unknown = [a for a in axes if a not in _KNOWN]
        if unknown:
            raise ImageError(
                f"{where} has axes {axes}, including {unknown} (a custom loop) that clemlab cannot "
                "place; it reads T, P (positions), Z, C, Y, X"
            )
        n_pos = sizes.get("P", 1)
        names = _position_names(f, n_pos)
        pi = choose(names, scene, where, kind="position", keyword="scene",
                    described=[repr(n) for n in names])
        ti = pick_timepoint(sizes.get("T", 1), timepoint, where)
        if f.is_rgb and "C" in sizes:
            raise ImageError(f"{where} has both RGB pixels and {sizes['C']} channels; clemlab images hold one channel axis")
        channels, info = _channels(f)
        pixel_size = _pixel_sizes(f)
        dtype = np.dtype(f.dtype)
        stage = _stage_position(f, pi, where)
        nbytes = int(np.prod([v for k, v in sizes.items() if k not in "TP"])) * dtype.itemsize
        lazy = want_lazy(lazy, chunks, nbytes)
        try:
            data = f.to_dask(wrapper=False) if lazy else f.asarray()
        except Exception as exc:
            raise FileFormatError(f"{where}: could not read its pixels (the file is truncated or corrupt): {exc}") from None
    index = tuple(ti if a == "T" else pi if a == "P" else slice(None) for a in axes)
    data = data[index]
    kept = [a for a in axes if a not in "TP"]
    order = [a for a in ("C", "S", "Z", "Y", "X") if a in kept]
    data = data.transpose([kept.index(a) for a in order])
    dims = tuple({"C": "c", "S": "c", "Z": "z", "Y": "y", "X": "x"}[a] for a in order)
    if "S" in kept:
        channels = ["R", "G", "B"] if sizes["S"] == 3 else None
        info = {}
    elif "C" not in kept:
        channels = None
    attrs: dict[str, Any] = {"scene": names[pi], "scene_index": pi}
    if channels is not None and "c" in dims and len(channels) != data.shape[0]:
        channels = None
    if "c" not in dims and channels:
        attrs["channel"] = channels[0]
        channels = None
    shown = channels or ([attrs["channel"]] if "channel" in attrs else [])
    if any(n in info for n in shown):
        attrs["channel_info"] = {n: info[n] for n in shown if n in info}
    if "T" in sizes:
        attrs["timepoint"] = ti
    if stage is not None:
        attrs["stage_position"] = stage
    attrs["pixel_size_source"] = _SOURCE if pixel_size else "none"
    if chunks is not None:
        data = data.rechunk(chunks)
    return RawImage(
        data=data, dims=dims, pixel_size={d: v for d, v in pixel_size.items() if d in dims},
        channels=channels, modality="LM", attrs=attrs,
        missing_reason="its ND2 metadata gives no voxel size",
    )


def _stage_position(f: Any, pi: int, where: str) -> dict[str, Any] | None:
    points = _positions(f)
    source = None
    pos = None
    if len(points) > pi:
        pos, source = points[pi].stagePositionUm, "ND2 XYPosLoop point stagePositionUm"
    else:
        try:
            fm = f.frame_metadata(0)
            pos = fm.channels[0].position.stagePositionUm
            source = "ND2 frame 0 metadata stagePositionUm"
        except Exception:
            return None
    try:
        x, y, z = (float(v) for v in pos)
    except (TypeError, ValueError):
        return None
    return {"x": x, "y": y, "z": z, "units": "µm", "source": source, "refers_to": "stage position of the field"}

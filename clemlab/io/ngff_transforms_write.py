"""A registration written as NGFF 0.6 coordinate transformations beside the image it belongs to.

See :func:`write_registration` for the layout and the sampling bound of non-linear maps;
:func:`clemlab.read_transform` reads it back.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import TransformError
from ..transforms import Identity, LinearTransform, RigidProjection, Transform, Translation
from .ngff_transforms import UNIT_TO_UM, _Field

__all__ = ["write_registration", "NGFF_VERSION", "FIELD_GROUP"]

#: The NGFF version of a group that carries a registration.
NGFF_VERSION = "0.6"
#: Group (beside the images) holding fields stored as arrays, as the spec names it.
FIELD_GROUP = "coordinateTransformations"
#: Largest number of points evaluated to choose a field's sampling.
_MAX_CHECK_POINTS = 1 << 24
_NGFF_ORDER = ("z", "y", "x")


def write_registration(group: Any, registration: Any, source: str = "lm", target: str = "em", *,
                       image_frame: str | None = None, pixel_size: float | None = None,
                       max_error_px: float = 0.05, extent: Any = None, overwrite: bool = False) -> dict:
    """Store a registration in an OME-Zarr image group as NGFF 0.6 coordinate transformations.

    Parameters
    ----------
    group : zarr.Group
        The open, writable root group (zarr v3, zarr-python 3) of an OME-Zarr image: its
        ``ome.multiscales`` (NGFF 0.5, or 0.6) describe the image.
    registration : Registration or Transform
        Maps ``(x, y[, z])`` µm points from ``source`` to ``target``.
    source, target : str
        Names of the two coordinate systems (physical, µm), e.g. ``"lm"`` and ``"em"``.
    image_frame : str, optional
        The system the image's pixels live in: ``target`` (default; the output of
        :func:`clemlab.correlate`) or ``source``.
    pixel_size : float, optional
        Target pixel size, µm, that sets the sampling bound of a non-linear map. Default: the
        finest spatial pixel of the image's first level when the image lives in ``target``.
    max_error_px : float
        Largest error the sampling of a non-linear map may add, in target pixels.
    extent : sequence of (min, max), optional
        Region of the source system to sample a non-linear map over, µm, one pair per
        ``(x, y[, z])``. Default: the preimage of the image's extent (image in ``target``) or the
        image's extent (image in ``source``), one cell wider on each side.
    overwrite : bool
        Replace a ``source`` -> ``target`` registration already stored in the group.

    Returns
    -------
    dict
        The group's new ``ome`` metadata.

    Notes
    -----
    **Layout.** NGFF 0.5 has no named coordinate systems, so the group becomes an NGFF 0.6
    image (``ome.version = "0.6"``); arrays and all other attributes stay as they are::

        zarr.json   ome.multiscales[0].coordinateSystems: the image's own ("physical",
                        unless already named) with its axes, and image_frame; datasets map
                        each level to "physical"
                    ome.multiscales[0].coordinateTransformations: physical -> image_frame
                        (identity; a scale where the image's unit is not µm; inside a
                        byDimension of the space axes where channel/time axes are dropped)
                    ome.scene.coordinateSystems: target (the common reference, first as
                        the spec recommends), then source (2-3 space axes, µm)
                    ome.scene.coordinateTransformations: source -> target
        coordinateTransformations/<source>_to_<target>/   a non-linear map's field
            zarr.json   ome.multiscales: axes (displacement, [z,] y, x), level "0" scaled and
                        translated to the source system
            0/          float64 array (D, [nz,] ny, nx): displacement vectors, NGFF axis order

    Why there: the group is the image (other tools open it as one), so the registration goes
    into its own ``zarr.json``. The spec allows ``multiscales > coordinateTransformations``
    only for maps that start or end in the image's own ("intrinsic") system, and those must
    name systems of the same multiscales: hence the link ``physical -> image_frame`` there.
    The map between the two named frames touches neither end of the image, so it goes in a
    ``scene``, whose references without ``path`` name systems of the same ``zarr.json``
    (``image_frame`` is therefore listed in both, identically). Arrays of transformations go
    in a group called ``coordinateTransformations`` beside the images, as the spec's scene
    layout says; each field is itself a multiscale group, as the spec requires.
    ome-zarr-models' NGFF 0.6 models (``v06.Image``, ``v06.scene.Scene``) accept the root and
    the field group.

    **Linear models** are written exactly: ``identity``, ``translation``, or ``affine`` (an
    ``M x (N+1)`` matrix, also 3-D -> 2-D projections). **Non-linear models** (thin-plate
    spline, polynomial, projective) are written as ``sequence[displacements, affine]``: ``A``
    is the least-squares affine approximation of the map ``f`` over the sampled region, and
    the field holds ``r(p) = A^-1(f(p)) - p`` on a regular grid in the source system
    (linear interpolation), so ``f = A(p + r(p))``. Storing the small non-linear remainder
    (not ``f(p) - p``) keeps the field's gradient far below 1, where the field's inverse
    converges by fixed-point iteration.

    **Sampling bound.** The grid spacing is halved until the error that linear interpolation
    of the field adds to the mapped point, ``|A (r_interp - r)|``, is at most
    ``max_error_px / D`` target pixels at every cell's edge midpoints and centre. Within a
    cell where ``r`` is close to quadratic, the multilinear interpolation error is at most the
    sum of its ``D`` edge-midpoint errors, so the error anywhere in the sampled region is at
    most ``max_error_px`` (default 0.05) target pixels. Outside the sampled region the stored
    map is undefined (readers give NaN there).
    """
    tf = getattr(registration, "transform", registration)
    if not isinstance(tf, Transform):
        raise TransformError("registration must be a clemlab Registration or Transform, "
                             f"got {type(registration).__name__}")
    if not (isinstance(source, str) and isinstance(target, str) and source and target) or source == target \
            or "/" in source + target:
        raise TransformError("source and target must be two different names without '/', "
                             f"got {source!r} and {target!r}")
    image_frame = target if image_frame is None else image_frame
    if image_frame not in (source, target):
        raise TransformError(f"image_frame must be {source!r} or {target!r}, got {image_frame!r}")
    attrs = dict(group.attrs)
    ome = dict(attrs.get("ome") or {})
    if not ome.get("multiscales"):
        raise TransformError("the group has no ome.multiscales: write the image first (write_ome_zarr)")
    scene = dict(ome.get("scene") or {})
    existing = [t for t in scene.get("coordinateTransformations", [])
                if (t.get("input") or {}).get("name") == source and (t.get("output") or {}).get("name") == target]
    if existing and not overwrite:
        raise TransformError(f"the group already stores a {source!r} -> {target!r} registration; pass "
                             "overwrite=True to replace it")

    ms = _as_v06_multiscale(dict(ome["multiscales"][0]))
    intrinsic = ms["datasets"][0]["coordinateTransformations"][0]["output"]["name"]
    if intrinsic in (source, target):
        raise TransformError(f"the image's own coordinate system is named {intrinsic!r}, like a frame of the "
                             "registration; give the frames other names (source=, target=)")
    image_axes = next(cs["axes"] for cs in ms["coordinateSystems"] if cs["name"] == intrinsic)
    space = [a for a in image_axes if a.get("type") == "space"]
    dims = {source: tf.ndim, target: tf.ndim_out}
    if len(space) != dims[image_frame]:
        raise TransformError(f"the image has {len(space)} space axes but the registration's {image_frame!r} "
                             f"side is {dims[image_frame]}-D")
    systems = {f: _system(f, dims[f], space if f == image_frame else None) for f in (target, source)}

    level0 = _level_matrix(ms["datasets"][0], image_axes)  # index -> intrinsic units, image axis order
    idx_space = [i for i, a in enumerate(image_axes) if a.get("type") == "space"]
    units = np.array([_um_per_unit(a) for a in space])
    px = pixel_size
    if px is None:
        if image_frame != target:
            raise TransformError("the image lives in the source frame: pass pixel_size= (the target pixel, µm) "
                                 "to set the sampling bound")
        px = float(np.min(np.abs(np.diag(level0)[idx_space]) * units))

    field_path = f"{FIELD_GROUP}/{source}_to_{target}"
    if isinstance(tf, LinearTransform) and np.array_equal(tf.matrix[-1], np.eye(tf.ndim + 1)[-1]) \
            or isinstance(tf, RigidProjection):
        reg = _linear_json(tf)
        if overwrite and field_path in group:  # the replaced registration's field
            del group[field_path]
    else:
        if extent is None:
            shape = group[ms["datasets"][0]["path"]].shape
            extent = _default_extent(tf, _image_box(level0, shape, idx_space, units), image_frame == target)
        reg = _field_json(group, field_path, tf, np.asarray(extent, dtype=np.float64), px,
                          max_error_px, systems[source], overwrite)
    reg = {"name": f"{source} to {target}", **reg, "input": {"name": source}, "output": {"name": target}}

    link = _link_json(image_axes, units, intrinsic, image_frame)
    others = [t for t in ms.get("coordinateTransformations") or []
              if not ((t.get("input") or {}).get("name") == intrinsic
                      and (t.get("output") or {}).get("name") == image_frame)]
    ms["coordinateTransformations"] = others + [link]
    ms["coordinateSystems"] = [cs for cs in ms["coordinateSystems"] if cs.get("name") != image_frame] \
        + [systems[image_frame]]
    kept_systems = [cs for cs in scene.get("coordinateSystems", []) if cs.get("name") not in systems]
    kept_tfs = [t for t in scene.get("coordinateTransformations", []) if t not in existing]
    ome.update(version=NGFF_VERSION, multiscales=[ms] + list(ome["multiscales"][1:]),
               scene={"coordinateSystems": [systems[target], systems[source]] + kept_systems,
                      "coordinateTransformations": kept_tfs + [reg]})
    attrs["ome"] = ome
    group.attrs.put(attrs)  # last: the metadata never names a field that is not written yet
    return ome


# ---------------------------------------------------------------------------------------
# metadata pieces
# ---------------------------------------------------------------------------------------
def _um_per_unit(axis: dict) -> float:
    unit = axis.get("unit") or "micrometer"
    if unit not in UNIT_TO_UM:
        raise TransformError(f"the image's axis {axis.get('name')!r} has unit {unit!r}, not a length")
    return UNIT_TO_UM[unit]


def _system(name: str, ndim: int, like: list[dict] | None) -> dict:
    names = [a["name"] for a in like] if like else list(_NGFF_ORDER[-ndim:])
    return {"name": name, "axes": [{"name": n, "type": "space", "unit": "micrometer"} for n in names]}


def _as_v06_multiscale(ms: dict) -> dict:
    """A multiscale in 0.6 form: a named intrinsic system; each level mapped to it."""
    if "coordinateSystems" in ms:
        return ms
    axes = ms.pop("axes", None)
    if not axes:
        raise TransformError("the image's multiscales metadata has neither axes nor coordinateSystems")
    ms["coordinateSystems"] = [{"name": "physical", "axes": axes}]
    datasets = []
    for ds in ms["datasets"]:
        cts = ds.get("coordinateTransformations") or [{"type": "identity"}]
        one = dict(cts[0]) if len(cts) == 1 else {"type": "sequence", "transformations": cts}
        one.update(input={"path": ds["path"]}, output={"name": "physical"})
        datasets.append({**ds, "coordinateTransformations": [one]})
    ms["datasets"] = datasets
    return ms


def _level_matrix(ds: dict, axes: list[dict]) -> np.ndarray:
    from .ngff_transforms import _Document, _build

    op = _build(ds["coordinateTransformations"][0], len(axes), len(axes), _Document({}))
    return op.matrix


def _link_json(image_axes: list[dict], units: np.ndarray, intrinsic: str, frame: str) -> dict:
    """The image's own system -> the named (µm, space-only) system it lives in.

    Channel and time axes are dropped by a ``byDimension`` whose one part maps the space axes
    (``inputAxes``: their indices in the image) to the frame's axes, the form the spec's own
    example ``byDimension2`` gives for an input axis that has no output (a non-square
    ``affine`` says the same, but validators of NGFF 0.6 metadata, ome-zarr-models 1.8.1 among
    them, require a multiscale's transforms to keep its number of axes); a space-only image in
    µm is linked by ``identity``, or by ``scale`` where its unit is not µm.
    """
    space = [i for i, a in enumerate(image_axes) if a.get("type") == "space"]
    if np.all(units == 1.0):
        body = {"type": "identity"}
    else:
        body = {"type": "scale", "scale": units.tolist()}
    if len(space) < len(image_axes):
        body = {"type": "byDimension", "transformations": [
            {"transformation": body, "inputAxes": space, "outputAxes": list(range(len(space)))}]}
    return {**body, "input": {"name": intrinsic}, "output": {"name": frame}}


def _reverse(ndim: int) -> np.ndarray:
    """Homogeneous permutation ``(x, y[, z])`` <-> ``([z,] y, x)`` (its own inverse)."""
    m = np.eye(ndim + 1)
    m[:ndim, :ndim] = np.eye(ndim)[::-1]
    return m


def _ngff_matrix(m: np.ndarray, d_in: int, d_out: int) -> np.ndarray:
    """A clemlab homogeneous matrix (``(x, y[, z])`` columns) in NGFF axis order."""
    return _reverse(d_out) @ m @ _reverse(d_in)


def _linear_json(tf: Transform) -> dict:
    if isinstance(tf, Identity):
        return {"type": "identity"}
    if isinstance(tf, Translation):
        return {"type": "translation", "translation": tf.translation[::-1].tolist()}
    if isinstance(tf, RigidProjection):
        m = np.zeros((3, 4))
        m[:2, :3] = tf.scale * (tf.rotation * [1.0, 1.0, tf.axial_scale])[:2]
        m[:2, 3] = tf.translation
        m[2, 3] = 1.0
    else:
        m = tf.matrix
    return {"type": "affine", "affine": _ngff_matrix(m, tf.ndim, tf.ndim_out)[:-1].tolist()}


# ---------------------------------------------------------------------------------------
# non-linear maps: a sampled field
# ---------------------------------------------------------------------------------------
def _default_extent(tf: Transform, box: np.ndarray, in_target: bool) -> np.ndarray:
    """Bounding box ``(D, 2)`` in source µm of the image's ``box`` (clemlab order, µm).

    A box in the target is mapped back through samples on its faces: for a map without
    folds they bound the preimage of the whole box.
    """
    d = len(box)
    if not in_target:
        return box
    faces = []
    for k in range(d):
        grids = [np.linspace(box[j, 0], box[j, 1], 65) if j != k else box[j] for j in range(d)]
        faces.append(np.stack(np.meshgrid(*grids, indexing="ij"), -1).reshape(-1, d))
    pts = tf.inverse(np.vstack(faces))
    if not np.all(np.isfinite(pts)):
        raise TransformError("the registration cannot be inverted over the image's extent; pass extent=")
    return np.stack([pts.min(axis=0), pts.max(axis=0)], axis=1)


def _image_box(level0: np.ndarray, shape: tuple[int, ...], space_idx: list[int], units: np.ndarray) -> np.ndarray:
    """The image's pixel-centre box ``(D, 2)``, µm, clemlab order ``(x, y[, z])``."""
    lo = level0[:-1, -1]
    hi = level0[:-1, :-1] @ (np.array(shape, dtype=np.float64) - 1) + lo
    box = np.stack([np.minimum(lo, hi), np.maximum(lo, hi)], axis=1)[space_idx] * units[:, None]
    return box[::-1]


def _affine_fit(tf: Transform, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Least-squares affine approximation ``(D+1, D+1)`` of ``tf`` over the box (clemlab order)."""
    d = lo.size
    grid = np.stack(np.meshgrid(*[np.linspace(lo[k], hi[k], 17) for k in range(d)], indexing="ij"), -1)
    p = grid.reshape(-1, d)
    q = tf(p)
    sol, *_ = np.linalg.lstsq(np.c_[p, np.ones(len(p))], q, rcond=None)
    m = np.eye(d + 1)
    m[:d] = sol.T
    return m


def _field_json(group: Any, field_path: str, tf: Transform, extent: np.ndarray, px: float,
                max_error_px: float, source_system: dict, overwrite: bool) -> dict:
    d = tf.ndim
    if tf.ndim_out != d:
        raise TransformError(f"a non-linear {d}-D -> {tf.ndim_out}-D map cannot be stored as a displacement field")
    if extent.shape != (d, 2) or not np.all(extent[:, 1] > extent[:, 0]):
        raise TransformError(f"extent must be {d} (min, max) pairs with min < max, µm; got {extent.tolist()}")
    if not (max_error_px > 0 and px > 0):
        raise TransformError(f"max_error_px and pixel_size must be positive, got {max_error_px!r}, {px!r}")
    lo, hi = extent[:, 0], extent[:, 1]
    a = _affine_fit(tf, lo, hi)
    a_inv = np.linalg.inv(a)

    def remainder(p):
        q = tf(p)
        return q @ a_inv[:d, :d].T + a_inv[:d, d] - p

    span = hi - lo
    h = float(span.max()) / 16
    budget = max_error_px / d * px
    while True:
        n = np.maximum(np.ceil(span / h).astype(int) + 3, 2)  # one cell beyond the extent each side
        origin = lo - h
        if int(np.prod(2 * n - 1)) > _MAX_CHECK_POINTS:
            raise TransformError(
                f"sampling the map within {max_error_px} px of {px} µm over {span.tolist()} µm needs a grid finer "
                f"than {h:.3g} µm; give a smaller extent= or a larger max_error_px=")
        nodes = _grid(origin, h, n)
        values = remainder(nodes.reshape(-1, d)).reshape(nodes.shape)
        field = _Field(np.flip(values, axis=-1).transpose(*range(d - 1, -1, -1), d),
                       _ngff_index_matrix(origin, h, d), "displacements", "linear")
        fine = _grid(origin, h / 2, 2 * n - 1).reshape(-1, d)
        err = np.max(np.linalg.norm((np.flip(field.sample(fine[:, ::-1]), -1) - remainder(fine)) @ a[:d, :d].T,
                                    axis=1))
        if err <= budget:
            break
        h = h / min(4.0, max(1.15, 1.05 * math.sqrt(err / budget)))  # the error scales as h²

    arr = np.moveaxis(field.values, -1, 0)  # (D, [nz,] ny, nx): the vector axis first, as the spec orders it
    _write_field(group, field_path, arr, origin[::-1], h, source_system, overwrite)
    affine = _ngff_matrix(a, d, d)[:-1].tolist()
    return {"type": "sequence", "transformations": [
        {"type": "displacements", "path": field_path, "interpolation": "linear"},
        {"type": "affine", "affine": affine}]}


def _grid(origin: np.ndarray, h: float, n: np.ndarray) -> np.ndarray:
    """Nodes ``origin + h * i`` (clemlab order), shape ``(*n, D)`` with ``n`` in clemlab order."""
    axes = [origin[k] + h * np.arange(n[k]) for k in range(len(n))]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1)


def _ngff_index_matrix(origin: np.ndarray, h: float, d: int) -> np.ndarray:
    """Grid index (NGFF axis order) -> source µm (NGFF order)."""
    m = np.eye(d + 1)
    m[:d, :d] *= h
    m[:d, d] = origin[::-1]
    return m


def _write_field(group: Any, field_path: str, arr: np.ndarray, origin_ngff: np.ndarray, h: float,
                 source_system: dict, overwrite: bool) -> None:
    if field_path in group and not overwrite:
        raise TransformError(f"the group already holds {field_path!r}; pass overwrite=True to replace it")
    d = arr.shape[0]
    sub = group.require_group(FIELD_GROUP).create_group(field_path.split("/", 1)[1], overwrite=True)
    sub.create_array("0", shape=arr.shape, dtype="float64", chunks=arr.shape)[...] = arr
    axes = [{"name": "d", "type": "displacement", "discrete": True}] + source_system["axes"]
    name = source_system["name"]
    sub.attrs.put({"ome": {"version": NGFF_VERSION, "multiscales": [{
        "name": field_path.split("/", 1)[1],
        "coordinateSystems": [{"name": name, "axes": axes}],
        "datasets": [{"path": "0", "coordinateTransformations": [{
            "type": "sequence", "input": {"path": "0"}, "output": {"name": name},
            "transformations": [{"type": "scale", "scale": [1.0] + [h] * d},
                                {"type": "translation", "translation": [0.0] + origin_ngff.tolist()}]}]}],
    }]}})

"""NGFF 0.6 coordinate systems and transformations (RFC-5), read into clemlab transforms.

An OME-Zarr 0.6 hierarchy describes a graph: named coordinate systems are its nodes, the
``coordinateTransformations`` of ``scene`` and ``multiscales`` metadata its edges. The spec
lists the types ``identity``, ``scale``, ``translation``, ``affine``, ``rotation``, ``mapAxis``,
``projectAxis``, ``sequence``, ``byDimension``, ``bijection``, ``displacements`` and
``coordinates``. :func:`read_transform` finds a path between two named systems (an edge is
walked backwards only where its transformation can be inverted: the linear ones in closed
form, ``bijection`` through its stored inverse, a displacement field by fixed-point
iteration), chains the steps and returns one clemlab transform.

Conventions. NGFF lists coordinates in the order of a system's ``axes`` (usually ``z, y, x``)
and in each axis's ``unit``; clemlab points are ``(N, D)`` arrays in µm with columns
``(x, y[, z])``. :func:`read_transform` converts both ways (space axes named x/y/z are
matched by name, others by position: the last axis is x); an axis without a unit is taken
as µm. :func:`map_ngff_points` works in NGFF's own order and units, on any axes (the interface
of the conformance suite, ``clemlab ngff-transform``).

Sampled fields are interpolated as their ``interpolation`` says (``linear`` by default,
``nearest``, ``bspline-cubic``); a point outside the sampled grid maps to NaN, never to an
extrapolated guess.
"""

from __future__ import annotations

import json
import os
from collections import deque
from typing import Any

import numpy as np

from ..errors import FileFormatError, TransformError
from ..transforms import Affine, Transform

__all__ = ["read_transform", "map_ngff_points", "FieldTransform", "UNIT_TO_UM"]

#: µm per unit, for the UDUNITS-2 length names NGFF allows on space axes.
UNIT_TO_UM = {
    "yoctometer": 1e-18, "zeptometer": 1e-15, "attometer": 1e-12, "femtometer": 1e-9,
    "picometer": 1e-6, "angstrom": 1e-4, "nanometer": 1e-3, "micrometer": 1.0,
    "millimeter": 1e3, "centimeter": 1e4, "decimeter": 1e5, "meter": 1e6, "hectometer": 1e8,
    "kilometer": 1e9, "megameter": 1e12, "gigameter": 1e15, "terameter": 1e18,
    "petameter": 1e21, "exameter": 1e24, "zettameter": 1e27, "yottameter": 1e30,
    "inch": 25400.0, "foot": 304800.0, "yard": 914400.0, "mile": 1609344e3,
    "parsec": 3.0856775814913673e22,
}


class _NotInvertible(TransformError):
    """An edge of the graph that cannot be walked backwards."""


# ---------------------------------------------------------------------------------------
# operations on points in NGFF order: (N, n_in) -> (N, n_out)
# ---------------------------------------------------------------------------------------
class _Linear:
    """``x -> M x~`` with the homogeneous ``(n_out+1, n_in+1)`` matrix ``M``."""

    def __init__(self, matrix: np.ndarray):
        self.matrix = np.asarray(matrix, dtype=np.float64)
        self.n_in, self.n_out = self.matrix.shape[1] - 1, self.matrix.shape[0] - 1

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        return pts @ self.matrix[:-1, :-1].T + self.matrix[:-1, -1]

    def inverse(self) -> _Linear:
        m = self.matrix
        if m.shape[0] != m.shape[1] or not np.isfinite(np.linalg.cond(m[:-1, :-1])) \
                or abs(np.linalg.det(m[:-1, :-1])) < 1e-300:
            raise _NotInvertible(f"a {self.n_in}-D -> {self.n_out}-D linear map that is not invertible")
        return _Linear(np.linalg.inv(m))


class _Chain:
    """Operations applied first to last."""

    def __init__(self, ops: list):
        self.ops = ops
        self.n_in, self.n_out = ops[0].n_in, ops[-1].n_out

    def __call__(self, pts):
        for op in self.ops:
            pts = op(pts)
        return pts

    def inverse(self):
        return _Chain([op.inverse() for op in reversed(self.ops)])


class _Bijection:
    """A forward operation with its stored inverse."""

    def __init__(self, forward, backward):
        self.forward, self.backward = forward, backward
        self.n_in, self.n_out = forward.n_in, forward.n_out

    def __call__(self, pts):
        return self.forward(pts)

    def inverse(self):
        return _Bijection(self.backward, self.forward)


class _ByDimension:
    """Parts acting on subsets of the axes: ``out[o_k] = part_k(in[i_k])``."""

    def __init__(self, parts: list[tuple[Any, list[int], list[int]]], n_in: int, n_out: int):
        self.parts, self.n_in, self.n_out = parts, n_in, n_out

    def __call__(self, pts):
        out = np.full((len(pts), self.n_out), np.nan)
        for op, ia, oa in self.parts:
            out[:, oa] = op(pts[:, ia])
        return out

    def inverse(self):
        used = sorted(i for _, ia, _ in self.parts for i in ia)
        if self.n_in != self.n_out or used != list(range(self.n_in)):
            raise _NotInvertible("a byDimension whose parts do not use every input axis exactly once")
        return _ByDimension([(op.inverse(), oa, ia) for op, ia, oa in self.parts], self.n_out, self.n_in)


class _Field:
    """A sampled ``displacements`` or ``coordinates`` field (see :class:`FieldTransform`)."""

    def __init__(self, values: np.ndarray, index_to_input: np.ndarray, kind: str, interpolation: str):
        self.values = np.asarray(values, dtype=np.float64)  # (*grid, n_out), grid in input-axis order
        self.index_to_input = np.asarray(index_to_input, dtype=np.float64)  # (n_in+1, n_in+1)
        self.kind, self.interpolation = kind, interpolation
        self.n_in, self.n_out = self.values.ndim - 1, self.values.shape[-1]
        self._input_to_index = np.linalg.inv(self.index_to_input)
        if kind == "displacements" and self.n_out != self.n_in:
            raise TransformError(f"a displacement field on a {self.n_in}-D grid must hold {self.n_in}-D "
                                 f"vectors, not {self.n_out}-D ones")

    def sample(self, pts: np.ndarray) -> np.ndarray:
        """Interpolated vectors at ``pts`` (input units), NaN outside the grid."""
        from scipy import ndimage

        idx = pts @ self._input_to_index[:-1, :-1].T + self._input_to_index[:-1, -1]
        shape = np.array(self.values.shape[:-1])
        eps = 1e-9  # a point on the grid's edge, up to float round-off, is inside
        inside = np.all((idx >= -eps) & (idx <= shape - 1 + eps), axis=1)
        out = np.full((len(pts), self.n_out), np.nan)
        if not inside.any():
            return out
        coords = np.clip(idx[inside], 0, shape - 1).T
        order = {"nearest": 0, "linear": 1, "bspline-cubic": 3}[self.interpolation]
        for k in range(self.n_out):
            out[inside, k] = ndimage.map_coordinates(self.values[..., k], coords, order=order,
                                                     mode="nearest", prefilter=order > 1)
        return out

    def __call__(self, pts):
        v = self.sample(pts)
        return pts + v if self.kind == "displacements" else v

    def inverse(self):
        if self.kind != "displacements":
            raise _NotInvertible("a coordinates field (no closed-form inverse; store a bijection)")
        return _FieldInverse(self)


class _FieldInverse:
    """Inverse of a displacement field by fixed-point iteration ``x = y - d(x)``.

    Converges where the field's gradient has norm below 1 (a field storing the non-linear
    remainder of a registration, as :func:`write_registration` writes it); a point that does
    not converge to 1e-10 of the field's extent in 200 steps maps to NaN.
    """

    def __init__(self, field: _Field):
        self.field = field
        self.n_in = self.n_out = field.n_in

    def __call__(self, pts):
        f = self.field
        extent = np.abs(f.index_to_input[:-1, :-1] @ (np.array(f.values.shape[:-1]) - 1)).max()
        tol = 1e-10 * max(1.0, float(extent))
        x = pts - np.nan_to_num(f.sample(pts))
        for _ in range(200):
            new = pts - f.sample(x)
            step = np.linalg.norm(new - x, axis=1)
            x = np.where(np.isnan(new), x, new)
            if not np.any(step > tol):
                break
        done = f(x)
        bad = ~(np.linalg.norm(done - pts, axis=1) <= 10 * tol)
        x[bad] = np.nan
        return x

    def inverse(self):
        return self.field


# ---------------------------------------------------------------------------------------
# JSON -> operations
# ---------------------------------------------------------------------------------------
class _Document:
    """One metadata document: its ``ome`` dict and, where known, the zarr group it sits in."""

    def __init__(self, ome: dict, group: Any = None, path: str = ""):
        self.ome, self.group, self.path = ome, group, path

    def array(self, rel: str) -> Any:
        if self.group is None:
            raise TransformError(f"the transformation stores its parameters at {rel!r}, but only the "
                                 "metadata was given; pass the store's path or zarr group")
        try:
            return self.group[rel]
        except (KeyError, FileNotFoundError) as exc:
            raise TransformError(f"{rel!r} named by a transformation is not in the store ({exc})") from None


def _matrix_param(t: dict, key: str, doc: _Document) -> np.ndarray:
    if key in t:
        return np.asarray(t[key], dtype=np.float64)
    if "path" in t:
        return np.asarray(doc.array(t["path"])[...], dtype=np.float64)
    raise TransformError(f"a {t.get('type')!r} transformation needs {key!r} (or 'path'): {json.dumps(t)[:200]}")


def _homogeneous(lin: np.ndarray, shift: np.ndarray) -> np.ndarray:
    n_out, n_in = lin.shape
    m = np.zeros((n_out + 1, n_in + 1))
    m[:n_out, :n_in], m[:n_out, n_in], m[n_out, n_in] = lin, shift, 1.0
    return m


def _build(t: dict, n_in: int, n_out: int | None, doc: _Document):
    """The operation of the transformation dict ``t`` on ``n_in``-D points."""
    if not isinstance(t, dict) or "type" not in t:
        raise TransformError(f"a transformation must be an object with a 'type', got {json.dumps(t)[:200]}")
    kind = t["type"]
    if kind == "identity":
        n = n_in if n_out is None else n_out
        if n != n_in:
            raise TransformError(f"an identity cannot map {n_in}-D points to {n}-D ones")
        return _Linear(np.eye(n_in + 1))
    if kind in ("scale", "translation"):
        v = _matrix_param(t, kind, doc).reshape(-1)
        if v.size != n_in:
            raise TransformError(f"a {kind} of {v.size} values cannot act on {n_in}-D points")
        return _Linear(_homogeneous(np.diag(v), np.zeros(n_in)) if kind == "scale"
                       else _homogeneous(np.eye(n_in), v))
    if kind in ("affine", "rotation"):
        m = _matrix_param(t, kind, doc)
        cols = n_in + 1 if kind == "affine" else n_in
        if m.ndim != 2 or m.shape[1] != cols:
            raise TransformError(f"an {kind} acting on {n_in}-D points needs {cols} columns, got shape {m.shape}")
        lin, shift = (m[:, :-1], m[:, -1]) if kind == "affine" else (m, np.zeros(len(m)))
        return _Linear(_homogeneous(lin, shift))
    if kind == "mapAxis":
        perm = [int(i) for i in t["mapAxis"]]
        if sorted(perm) != list(range(n_in)):
            raise TransformError(f"mapAxis {perm} is not a permutation of the {n_in} input axes")
        return _Linear(_homogeneous(np.eye(n_in)[perm], np.zeros(n_in)))
    if kind == "projectAxis":
        dropped = set(int(i) for i in t.get("droppedInputs", []))
        kept = [i for i in range(n_in) if i not in dropped]
        created = sorted(int(i) for i in t.get("createdOutputs", []))
        total = len(kept) + len(created)
        rows = [i for i in range(total) if i not in created]
        lin = np.zeros((total, n_in))
        lin[rows, kept] = 1.0
        return _Linear(_homogeneous(lin, np.zeros(total)))
    if kind == "sequence":
        parts = t.get("transformations") or []
        if not parts:
            raise TransformError("a sequence needs a non-empty 'transformations' list")
        ops, n = [], n_in
        for k, p in enumerate(parts):
            ops.append(_build(p, n, n_out if k == len(parts) - 1 else None, doc))
            n = ops[-1].n_out
        if all(isinstance(o, _Linear) for o in ops):
            m = ops[0].matrix
            for o in ops[1:]:
                m = o.matrix @ m
            return _Linear(m)
        return _Chain(ops)
    if kind == "bijection":
        fwd = _build(t["forward"], n_in, n_out, doc)
        back = _build(t["inverse"], fwd.n_out, n_in, doc)
        return _Bijection(fwd, back)
    if kind == "byDimension":
        return _by_dimension(t, n_in, n_out, doc)
    if kind in ("displacements", "coordinates"):
        return _field(t, n_in, doc)
    raise TransformError(f"unknown NGFF transformation type {kind!r}")


def _by_dimension(t: dict, n_in: int, n_out: int | None, doc: _Document):
    items = []
    for item in t.get("transformations") or []:
        ia = item.get("inputAxes", item.get("input_axes"))
        oa = item.get("outputAxes", item.get("output_axes"))
        if ia is None or oa is None:
            raise TransformError(f"each byDimension part needs inputAxes and outputAxes: {json.dumps(item)[:200]}")
        items.append((item.get("transformation", item), [int(i) for i in ia], [int(i) for i in oa]))
    if not items:
        raise TransformError("a byDimension needs a non-empty 'transformations' list")
    n_out = n_out if n_out is not None else 1 + max(o for _, _, oa in items for o in oa)
    covered = sorted(o for _, _, oa in items for o in oa)
    if covered != list(range(n_out)):
        raise TransformError(f"the byDimension parts' outputAxes {covered} must name each of the "
                             f"{n_out} output axes exactly once")
    if any(i < 0 or i >= n_in for _, ia, _ in items for i in ia):
        raise TransformError(f"a byDimension inputAxes index is outside the {n_in} input axes")
    parts = [(_build(p, len(ia), len(oa), doc), ia, oa) for p, ia, oa in items]
    if all(isinstance(op, _Linear) for op, _, _ in parts):
        m = np.zeros((n_out + 1, n_in + 1))
        m[n_out, n_in] = 1.0
        for op, ia, oa in parts:
            m[np.ix_(oa, ia)] = op.matrix[:-1, :-1]
            m[oa, n_in] = op.matrix[:-1, -1]
        return _Linear(m)
    return _ByDimension(parts, n_in, n_out)


def _field(t: dict, n_in: int, doc: _Document) -> _Field:
    """A displacement/coordinate field stored as a multiscale group (or a bare array) at ``path``."""
    kind = t["type"]
    interpolation = t.get("interpolation", "linear")
    if interpolation not in ("linear", "nearest", "bspline-cubic"):
        raise TransformError(f"{kind} interpolation {interpolation!r} is not supported; "
                             "clemlab reads 'linear', 'nearest' and 'bspline-cubic'")
    if "path" not in t:
        raise TransformError(f"a {kind} transformation needs a 'path' to its field")
    node = doc.array(t["path"])
    attrs = dict(getattr(node, "attrs", {}))
    ome = attrs.get("ome", attrs)
    ms = (ome.get("multiscales") or [None])[0]
    if ms is None:  # a bare array, indexed in input units with the vector axis last
        values, index_to_input, vec_axis, axes = np.asarray(node[...]), np.eye(n_in + 1), -1, None
    else:
        ds = ms["datasets"][0]
        values = np.asarray(node[ds["path"]][...])
        axes = _intrinsic_axes(ms)
        types = [a.get("type") for a in axes] if axes else []
        want = "displacement" if kind == "displacements" else "coordinate"
        vec_axis = types.index(want) if want in types else None
        if vec_axis is None:
            raise TransformError(f"the field at {t['path']!r} has no axis of type {want!r}")
        level = _build(_dataset_transform(ds), values.ndim, values.ndim, doc)
        if not isinstance(level, _Linear):
            raise TransformError(f"the field at {t['path']!r} maps its grid to space non-linearly")
        keep = [i for i in range(values.ndim) if i != vec_axis] + [values.ndim]
        index_to_input = level.matrix[np.ix_(keep, keep)]
    values = np.moveaxis(values, vec_axis, -1)
    if values.ndim - 1 != n_in:
        raise TransformError(f"the field at {t['path']!r} is sampled on a {values.ndim - 1}-D grid but "
                             f"its input coordinate system is {n_in}-D")
    return _Field(values, index_to_input, kind, interpolation)


def _dataset_transform(ds: dict) -> dict:
    """A dataset's transformation as one dict (0.6: one entry; 0.4/0.5: a list = a sequence)."""
    cts = ds.get("coordinateTransformations") or [{"type": "identity"}]
    return cts[0] if len(cts) == 1 else {"type": "sequence", "transformations": cts}


def _intrinsic_axes(ms: dict) -> list[dict] | None:
    if "coordinateSystems" in ms:
        ct = (ms.get("datasets") or [{}])[0].get("coordinateTransformations") or [{}]
        name = _ref(ct[0].get("output"))[1] if ct[0].get("output") is not None else None
        for cs in ms["coordinateSystems"]:
            if name is None or cs.get("name") == name:
                return cs.get("axes")
    return ms.get("axes")


# ---------------------------------------------------------------------------------------
# the graph of coordinate systems
# ---------------------------------------------------------------------------------------
def _ref(x: Any, base: str = "") -> tuple[str, str]:
    """``(group path, system name)`` of an ``input``/``output`` reference (object or string)."""
    if isinstance(x, str):
        return base, x
    if isinstance(x, dict) and "name" in x:
        sub = x.get("path") or ""
        return (f"{base}/{sub}".strip("/") if sub else base), x["name"]
    raise TransformError(f"a coordinate system reference needs a 'name', got {json.dumps(x)[:200]}")


class _Graph:
    def __init__(self):
        self.systems: dict[tuple[str, str], list[dict]] = {}
        self.edges: list[tuple[tuple[str, str], tuple[str, str], dict, _Document]] = []
        self.loaded: set[str] = set()
        self._ops: dict[tuple[int, tuple[str, str]], Any] = {}  # one build per edge (fields read once)

    def add_document(self, doc: _Document) -> None:
        self.loaded.add(doc.path)
        ome = doc.ome
        blocks = [ome["scene"]] if isinstance(ome.get("scene"), dict) else []
        blocks += [m for m in ome.get("multiscales") or [] if isinstance(m, dict)]
        if "coordinateTransformations" in ome and "coordinateSystems" in ome and not blocks:
            blocks = [ome]  # a bare graph document (the spec's examples)
        for b in blocks:
            for cs in b.get("coordinateSystems") or []:
                self.systems[(doc.path, cs["name"])] = cs.get("axes") or []
            for t in b.get("coordinateTransformations") or []:
                if "input" in t and "output" in t:
                    self.edges.append((_ref(t["input"], doc.path), _ref(t["output"], doc.path), t, doc))

    def load_referenced(self, opener) -> None:
        """Add the documents of subgroups that edges reference (scene -> images), recursively."""
        todo = [p for e in self.edges for p in (e[0][0], e[1][0]) if p not in self.loaded]
        while todo:
            path = todo.pop()
            if path in self.loaded:
                continue
            doc = opener(path)
            if doc is None:
                self.loaded.add(path)
                continue
            n = len(self.edges)
            self.add_document(doc)
            todo += [p for e in self.edges[n:] for p in (e[0][0], e[1][0]) if p not in self.loaded]

    def resolve(self, name: Any, role: str) -> tuple[str, str]:
        if isinstance(name, (tuple, list)):
            key = (str(name[0]).strip("/"), str(name[1]))
            if key in self.systems:
                return key
            hits = []
        else:
            hits = [k for k in self.systems if k[1] == name]
            if len(hits) == 1:
                return hits[0]
        known = ", ".join(f"{n!r}" + (f" (in {p!r})" if p else "") for p, n in self.systems) or "none"
        if len(hits) > 1:
            raise TransformError(f"the {role} coordinate system {name!r} is defined in several groups "
                                 f"({[p for p, _ in hits]}); pass (group path, name)")
        raise TransformError(f"the {role} coordinate system {name!r} is not defined in this hierarchy; "
                             f"known systems: {known}")

    def path(self, src: tuple[str, str], dst: tuple[str, str]) -> list[tuple[dict, _Document, bool]]:
        """Shortest chain of ``(transformation, document, backwards?)`` from ``src`` to ``dst``."""
        prev: dict[tuple[str, str], Any] = {src: None}
        queue = deque([src])
        while queue:
            node = queue.popleft()
            if node == dst:
                break
            for a, b, t, doc in self.edges:
                for here, there, back in ((a, b, False), (b, a, True)):
                    if here == node and there not in prev:
                        if back and not self._invertible(t, doc, a):
                            continue
                        prev[there] = (node, t, doc, back)
                        queue.append(there)
        if dst not in prev:
            raise TransformError(
                f"no chain of invertible transformations leads from coordinate system {src[1]!r} to "
                f"{dst[1]!r} in this hierarchy (a transformation without a closed-form inverse, such "
                "as a coordinates field or a dropped axis, is walked forwards only)")
        steps = []
        node = dst
        while prev[node] is not None:
            node, t, doc, back = prev[node]
            steps.append((t, doc, back))
        return steps[::-1]

    def _invertible(self, t: dict, doc: _Document, src: tuple[str, str]) -> bool:
        try:
            self.op(t, doc, src, None).inverse()
        except _NotInvertible:
            return False
        return True

    def op(self, t: dict, doc: _Document, src: tuple[str, str], dst: tuple[str, str] | None):
        key = (id(t), src)
        if key not in self._ops:
            n_in = len(self.systems.get(src, []))
            if not n_in:
                raise TransformError(f"coordinate system {src[1]!r} is not defined or has no axes")
            dst = dst if dst is not None else _ref(t["output"], doc.path)
            n_out = len(self.systems[dst]) if dst in self.systems else None
            self._ops[key] = _build(t, n_in, n_out, doc)
        return self._ops[key]


# ---------------------------------------------------------------------------------------
# public entry points
# ---------------------------------------------------------------------------------------
def _open(where: Any) -> tuple[_Graph, Any]:
    """The graph of ``where`` (path, URL, zarr group or metadata dict) and its root group."""
    group = None
    if isinstance(where, dict):
        d = where.get("attributes", where)
        ome = d.get("ome", d)
    else:
        import zarr

        if hasattr(where, "attrs") and hasattr(where, "members"):
            group = where
        else:
            target = os.fspath(where) if isinstance(where, os.PathLike) else str(where)
            try:
                group = zarr.open_group(target, mode="r")
            except Exception as exc:  # zarr raises several types for a missing/invalid group
                raise FileFormatError(f"cannot open {target!r} as a zarr group: {exc}") from None
        attrs = dict(group.attrs)
        ome = attrs.get("ome", attrs)
    if not isinstance(ome, dict):
        raise FileFormatError("the metadata has no 'ome' object")
    graph = _Graph()
    graph.add_document(_Document(ome, group, ""))

    def opener(path):
        if group is None:
            return None
        try:
            sub = group[path]
        except (KeyError, FileNotFoundError):
            return None
        a = dict(sub.attrs)
        return _Document(a.get("ome", a), sub, path)

    graph.load_referenced(opener)
    return graph, group


def _native_op(graph: _Graph, source: Any, target: Any):
    src = graph.resolve(source, "source")
    dst = graph.resolve(target, "target")
    if src == dst:
        n = len(graph.systems[src])
        return _Linear(np.eye(n + 1)), src, dst
    ops = []
    for t, doc, back in graph.path(src, dst):
        a, b = _ref(t["input"], doc.path), _ref(t["output"], doc.path)
        op = graph.op(t, doc, a, b)
        ops.append(op.inverse() if back else op)
    if all(isinstance(o, _Linear) for o in ops):
        m = ops[0].matrix
        for o in ops[1:]:
            m = o.matrix @ m
        return _Linear(m), src, dst
    return _Chain(ops), src, dst


def map_ngff_points(where: Any, source: Any, target: Any, coordinates: Any) -> np.ndarray:
    """Map points between two coordinate systems in NGFF's own axis order and units.

    Parameters
    ----------
    where : str, os.PathLike, zarr.Group or dict
        An OME-Zarr group (path or URL zarr opens) or its parsed ``zarr.json``/``ome`` dict.
    source, target : str or (str, str)
        Coordinate system names, or ``(group path, name)`` where a name is used in several groups.
    coordinates : array_like, shape (N, n_source_axes)
        Points in the order of the source system's ``axes``, in their units.

    Returns
    -------
    numpy.ndarray, shape (N, n_target_axes)
        In the target system's axis order and units; NaN where a sampled field does not reach.

    Raises
    ------
    TransformError
        An unknown system, no path between them, or a malformed transformation.
    """
    graph, _ = _open(where)
    op, src, _ = _native_op(graph, source, target)
    pts = np.asarray(coordinates, dtype=np.float64)
    pts = pts.reshape(1, -1) if pts.ndim == 1 else pts
    if pts.ndim != 2 or pts.shape[1] != len(graph.systems[src]):
        raise TransformError(f"coordinates in {src[1]!r} need {len(graph.systems[src])} values each, "
                             f"got shape {np.shape(coordinates)}")
    return op(pts)


def _to_clemlab(axes: list[dict], name: str) -> np.ndarray:
    """Homogeneous matrix: NGFF coordinates of system ``name`` -> clemlab ``(x, y[, z])`` µm."""
    n = len(axes)
    kinds = [a.get("type", "space") for a in axes]
    if any(k != "space" for k in kinds) or n not in (2, 3):
        raise TransformError(
            f"coordinate system {name!r} has axes {[(a.get('name'), a.get('type')) for a in axes]}; "
            "clemlab points need 2 or 3 space axes: use clemlab.io.ngff_transforms.map_ngff_points for others")
    names = [a.get("name") for a in axes]
    order = ("x", "y", "z")[:n]
    column = [order.index(nm) for nm in names] if sorted(names) == sorted(order) else list(range(n))[::-1]
    m = np.zeros((n + 1, n + 1))
    m[n, n] = 1.0
    for i, a in enumerate(axes):
        unit = a.get("unit") or "micrometer"
        if unit not in UNIT_TO_UM:
            raise TransformError(f"axis {a.get('name')!r} of {name!r} has unit {unit!r}, not a length "
                                 f"clemlab knows ({', '.join(sorted(UNIT_TO_UM))})")
        m[column[i], i] = UNIT_TO_UM[unit]
    return m


def read_transform(where: Any, source: Any, target: Any) -> Transform:
    """The clemlab transform from one NGFF 0.6 coordinate system to another.

    Parameters
    ----------
    where : str, os.PathLike, zarr.Group or dict
        An OME-Zarr 0.6 group (a local path or any URL zarr opens: ``file://``, ``s3://``,
        ``https://``, ``memory://``), an open zarr group, or its parsed ``zarr.json`` /
        ``ome`` dict (then fields stored as arrays cannot be read).
    source, target : str or (str, str)
        Names of coordinate systems with 2 or 3 space axes, e.g. ``"lm"`` and ``"em"``;
        ``(group path, name)`` where a name is used in several groups of a scene.

    Returns
    -------
    Transform
        Maps ``(N, D)`` points in µm, columns ``(x, y[, z])``, from ``source`` to ``target``
        (frames named after them). An :class:`~clemlab.transforms.Affine` when every step is
        linear (exact to float round-off); else a :class:`FieldTransform` for the whole chain.

    Raises
    ------
    TransformError
        A system is not defined, no chain of (invertible where walked backwards)
        transformations connects them, a system has non-space axes or a non-length unit, or a
        transformation is malformed.
    FileFormatError
        ``where`` cannot be opened as a zarr group.

    Examples
    --------
    >>> tf = cl.read_transform("corr.ome.zarr", "lm", "em")   # doctest: +SKIP
    >>> tf(landmarks_lm)                                      # doctest: +SKIP
    """
    graph, _ = _open(where)
    op, src, dst = _native_op(graph, source, target)
    c_in = _to_clemlab(graph.systems[src], src[1])
    c_out = _to_clemlab(graph.systems[dst], dst[1])
    if isinstance(op, _Linear):
        m = c_out @ op.matrix @ np.linalg.inv(c_in)
        if m.shape[0] != m.shape[1]:
            raise TransformError(f"{src[1]!r} is {c_in.shape[0] - 1}-D but {dst[1]!r} is "
                                 f"{c_out.shape[0] - 1}-D; clemlab reads maps between equal dimensions")
        return Affine(m, source_frame=src[1], target_frame=dst[1])
    return FieldTransform(op, c_in, c_out, source_frame=src[1], target_frame=dst[1])


class FieldTransform(Transform):
    """A chain of NGFF transformations with at least one sampled field, on clemlab points.

    Applies ``to_ngff`` (clemlab ``(x, y[, z])`` µm -> the source system's order and units),
    the chain, then ``from_ngff``. Fields are interpolated as stored (``linear`` by default);
    points outside a field's grid map to NaN. ``inverse`` walks the chain backwards, a
    displacement field by fixed-point iteration (see the module notes); a ``coordinates``
    field has no inverse unless stored as a ``bijection``.

    Built by :func:`read_transform`; ``to_dict`` holds the fields' samples as nested lists.
    """

    def __init__(self, op: Any, to_clemlab_in: np.ndarray, to_clemlab_out: np.ndarray, *,
                 source_frame: str | None = None, target_frame: str | None = None):
        d_in, d_out = to_clemlab_in.shape[0] - 1, to_clemlab_out.shape[0] - 1
        if d_in != d_out:
            raise TransformError(f"clemlab reads maps between equal dimensions, got {d_in}-D -> {d_out}-D")
        super().__init__(d_in, source_frame, target_frame)
        self._op, self._c_in, self._c_out = op, to_clemlab_in, to_clemlab_out
        self._to_ngff = np.linalg.inv(to_clemlab_in)

    def _apply(self, pts: np.ndarray) -> np.ndarray:
        native = pts @ self._to_ngff[:-1, :-1].T + self._to_ngff[:-1, -1]
        out = self._op(native)
        return out @ self._c_out[:-1, :-1].T + self._c_out[:-1, -1]

    @property
    def inverse(self) -> FieldTransform:
        try:
            back = self._op.inverse()
        except _NotInvertible as exc:
            raise TransformError(f"the map from {self.source_frame!r} to {self.target_frame!r} cannot be "
                                 f"inverted: it contains {exc}") from None
        return FieldTransform(back, self._c_out, self._c_in, source_frame=self.target_frame,
                              target_frame=self.source_frame)

    def _params_dict(self) -> dict[str, Any]:
        return {"op": _op_to_dict(self._op), "to_clemlab_in": self._c_in.tolist(),
                "to_clemlab_out": self._c_out.tolist()}

    @classmethod
    def _from_params(cls, d: dict[str, Any]) -> FieldTransform:
        return cls(_op_from_dict(d["op"]), np.asarray(d["to_clemlab_in"], dtype=np.float64),
                   np.asarray(d["to_clemlab_out"], dtype=np.float64),
                   source_frame=d.get("source_frame"), target_frame=d.get("target_frame"))


def _op_to_dict(op: Any) -> dict[str, Any]:
    """Plain JSON-able form of an operation (``FieldTransform.to_dict``; fields as nested lists)."""
    if isinstance(op, _Linear):
        return {"op": "linear", "matrix": op.matrix.tolist()}
    if isinstance(op, _Chain):
        return {"op": "chain", "ops": [_op_to_dict(o) for o in op.ops]}
    if isinstance(op, _Bijection):
        return {"op": "bijection", "forward": _op_to_dict(op.forward), "inverse": _op_to_dict(op.backward)}
    if isinstance(op, _ByDimension):
        return {"op": "byDimension", "n_in": op.n_in, "n_out": op.n_out,
                "parts": [[_op_to_dict(o), ia, oa] for o, ia, oa in op.parts]}
    if isinstance(op, _FieldInverse):
        return {"op": "field_inverse", "field": _op_to_dict(op.field)}
    return {"op": "field", "kind": op.kind, "interpolation": op.interpolation,
            "values": op.values.tolist(), "index_to_input": op.index_to_input.tolist()}


def _op_from_dict(d: dict[str, Any]) -> Any:
    kind = d["op"]
    if kind == "linear":
        return _Linear(np.asarray(d["matrix"], dtype=np.float64))
    if kind == "chain":
        return _Chain([_op_from_dict(o) for o in d["ops"]])
    if kind == "bijection":
        return _Bijection(_op_from_dict(d["forward"]), _op_from_dict(d["inverse"]))
    if kind == "byDimension":
        return _ByDimension([(_op_from_dict(o), list(ia), list(oa)) for o, ia, oa in d["parts"]],
                            d["n_in"], d["n_out"])
    if kind == "field_inverse":
        return _FieldInverse(_op_from_dict(d["field"]))
    if kind == "field":
        return _Field(np.asarray(d["values"], dtype=np.float64), np.asarray(d["index_to_input"], dtype=np.float64),
                      d["kind"], d["interpolation"])
    raise TransformError(f"unknown operation {kind!r} in a FieldTransform dict")

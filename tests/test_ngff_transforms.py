"""NGFF 0.6 coordinate transformations: the conformance suite, round trips, refusals.

Ground truth: the registration itself (clemlab's own transform), an independent reader made
of zarr-python, numpy and scipy in this file, and the public conformance suite
``ome-zarr-transformations-conformance`` run against ``clemlab ngff-transform``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from scipy.interpolate import RegularGridInterpolator

import clemlab as cl
from clemlab.errors import TransformError

ROOT = Path(cl.__file__).resolve().parent.parent
INSTALL = "python -m pip install --ignore-requires-python ome-zarr-transformations-conformance==0.1.2"


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


# ---------------------------------------------------------------------------------------
# the public conformance suite
# ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_conformance_suite_passes_every_case():
    spec = importlib.util.find_spec("transformation_conformance")
    if spec is None:
        if os.environ.get("CLEMLAB_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"the NGFF conformance suite is not installed; run: {INSTALL}")
        pytest.skip(f"the NGFF conformance suite is not installed; run: {INSTALL}")
    cases = Path(spec.origin).parent / "cases"  # where version 0.1.2's wheel puts them
    n_cases = sum(1 for p in cases.iterdir() if p.is_dir())
    assert n_cases >= 24
    run = subprocess.run(
        [sys.executable, "-m", "transformation_conformance", "-B", str(cases), "--",
         sys.executable, "-m", "clemlab.cli", "ngff-transform"],
        capture_output=True, text=True, env=_env(), timeout=600)
    rows = [line.split("\t") for line in run.stdout.splitlines() if line.strip()]
    failing = [r for r in rows if r[1] != "pass"]
    assert not failing, f"conformance cases not passing: {failing}\n{run.stderr[-2000:]}"
    assert len(rows) == n_cases and run.returncode == 0


# ---------------------------------------------------------------------------------------
# round trips through a zarr v3 image group
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sample():
    return cl.synthetic_clem(seed=0)


def _distorted_landmarks(sample):
    """The sample's bead pairs with a smooth non-linear distortion (~0.3 µm = 30 EM px) added."""
    dst = sample.fiducials_em.copy()
    c = dst.mean(axis=0)
    dst = dst + 0.3 * np.c_[np.sin((dst[:, 1] - c[1]) / 4.0), np.cos((dst[:, 0] - c[0]) / 5.0)]
    return cl.Landmarks.from_points(sample.fiducials_lm, dst)


def _image_group(store, em, channels: bool = False):
    """A zarr v3 OME-Zarr 0.5 image group of ``em``, as an OME-Zarr writer lays it out."""
    ps, org = em.clem.pixel_size, em.clem.origin
    root = zarr.open_group(store, mode="w", zarr_format=3)
    shape = ((2,) if channels else ()) + em.shape
    root.create_array("0", shape=shape, dtype=em.dtype, chunks=shape)
    axes = [{"name": "y", "type": "space", "unit": "micrometer"}, {"name": "x", "type": "space", "unit": "micrometer"}]
    scale, shift = [ps["y"], ps["x"]], [org["y"], org["x"]]
    if channels:
        axes, scale, shift = [{"name": "c", "type": "channel"}] + axes, [1.0] + scale, [0.0] + shift
    root.attrs.put({"ome": {"version": "0.5", "multiscales": [{"name": "correlated", "axes": axes, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale},
                                                    {"type": "translation", "translation": shift}]}]}]}})
    return root


def _em_points(em, n=4000, seed=1):
    ext = em.clem.extent
    rng = np.random.default_rng(seed)
    return np.c_[rng.uniform(*ext["x"], n), rng.uniform(*ext["y"], n)]


def _independent_map(store_path, points_xy):
    """lm -> em with zarr-python, numpy and scipy only: parse the scene, apply its steps."""
    root = zarr.open_group(store_path, mode="r")
    ome = root.attrs["ome"]
    (t,) = [t for t in ome["scene"]["coordinateTransformations"]
            if t["input"]["name"] == "lm" and t["output"]["name"] == "em"]
    steps = t["transformations"] if t["type"] == "sequence" else [t]
    p = np.asarray(points_xy, dtype=float)[:, ::-1]  # NGFF order (y, x)
    for s in steps:
        if s["type"] == "translation":
            p = p + np.asarray(s["translation"])
        elif s["type"] == "affine":
            m = np.asarray(s["affine"])
            p = p @ m[:, :2].T + m[:, 2]
        elif s["type"] == "displacements":
            field = root[s["path"]]
            ds = field.attrs["ome"]["multiscales"][0]["datasets"][0]
            scale, shift = [x[k] for x, k in zip(ds["coordinateTransformations"][0]["transformations"],
                                                   ("scale", "translation"))]
            vec = np.asarray(field[ds["path"]][...])  # (2, ny, nx): displacement axis first
            axes = [shift[i] + scale[i] * np.arange(vec.shape[i]) for i in (1, 2)]
            p = p + np.stack([RegularGridInterpolator(axes, vec[k])(p) for k in range(2)], axis=1)
        else:  # pragma: no cover - the writer uses no other step
            raise AssertionError(f"unexpected step {s['type']}")
    return p[:, ::-1]


@pytest.mark.parametrize("model", ["affine", "similarity", "rigid", "translation"])
def test_linear_registration_round_trip_is_exact(tmp_path, sample, model):
    reg = cl.register(cl.Landmarks.from_points(sample.fiducials_lm, sample.fiducials_em), model=model)
    store = tmp_path / "c.ome.zarr"
    cl.write_registration(_image_group(store, sample.em), reg)
    tf = cl.read_transform(store, "lm", "em")
    pts_lm = reg.transform.inverse(_em_points(sample.em))
    truth = reg.transform(pts_lm)
    assert np.abs(tf(pts_lm) - truth).max() < 1e-9
    assert np.abs(_independent_map(store, pts_lm) - truth).max() < 1e-9
    assert np.abs(cl.read_transform(store, "em", "lm")(truth) - pts_lm).max() < 1e-9
    assert (tf.source_frame, tf.target_frame) == ("lm", "em")


@pytest.mark.parametrize("model", ["tps", "polynomial"])
def test_nonlinear_registration_within_stated_sampling_error(tmp_path, sample, model):
    reg = cl.register(_distorted_landmarks(sample), model=model)
    store = tmp_path / "c.ome.zarr"
    root = _image_group(store, sample.em)
    cl.write_registration(root, reg)
    px = sample.em.clem.pixel_size["x"]
    pts_em = _em_points(sample.em, 20000)
    pts_lm = np.vstack([reg.transform.inverse(pts_em), sample.fiducials_lm])  # landmarks: where the spline bends most
    truth = reg.transform(pts_lm)
    ext = sample.em.clem.extent
    in_em = (truth[:, 0] >= ext["x"][0]) & (truth[:, 0] <= ext["x"][1]) & (truth[:, 1] >= ext["y"][0]) \
        & (truth[:, 1] <= ext["y"][1])
    got = cl.read_transform(store, "lm", "em")(pts_lm)
    assert np.all(np.isfinite(got[in_em]))
    err = np.linalg.norm(got - truth, axis=1)[in_em]
    assert err.max() <= 0.05 * px  # the bound stated in write_registration's docstring
    assert err.max() > 1e-6 * px  # really sampled, not an exact formula
    independent = _independent_map(store, pts_lm[in_em])
    assert np.abs(independent - got[in_em]).max() < 1e-9
    back = cl.read_transform(store, "em", "lm")(truth[in_em])
    scale = np.sqrt(abs(np.linalg.det(np.asarray(
        root.attrs["ome"]["scene"]["coordinateTransformations"][0]["transformations"][1]["affine"])[:, :2])))
    assert np.linalg.norm(back - pts_lm[in_em], axis=1).max() <= 0.05 * px / scale * 1.5


def test_image_with_channels_is_linked_to_its_frame(tmp_path, sample):
    reg = cl.register(cl.Landmarks.from_points(sample.fiducials_lm, sample.fiducials_em), model="affine")
    store = tmp_path / "c.ome.zarr"
    cl.write_registration(_image_group(store, sample.em, channels=True), reg)
    # (c, y, x) in the image's own system: the channel is dropped on the way to the named frames
    out = cl.map_ngff_points(store, "physical", "lm", [[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(out[0][::-1], reg.transform.inverse([[3.0, 2.0]])[0], atol=1e-12)
    with pytest.raises(TransformError, match="space axes"):
        cl.read_transform(store, "physical", "em")
    with pytest.raises(TransformError, match="no chain"):  # the dropped channel cannot come back
        cl.map_ngff_points(store, "lm", "physical", [[1.0, 2.0]])


def test_memory_store_and_existing_registration(sample):
    reg = cl.register(cl.Landmarks.from_points(sample.fiducials_lm, sample.fiducials_em), model="affine")
    root = _image_group(zarr.storage.MemoryStore(), sample.em)
    cl.write_registration(root, reg)
    np.testing.assert_allclose(cl.read_transform(root, "lm", "em").matrix, reg.transform.matrix, atol=1e-12)
    with pytest.raises(TransformError, match="overwrite=True"):
        cl.write_registration(root, reg)
    other = cl.register(cl.Landmarks.from_points(sample.fiducials_lm, sample.fiducials_em), model="translation")
    cl.write_registration(root, other, overwrite=True)
    np.testing.assert_allclose(cl.read_transform(root, "lm", "em").matrix, other.transform.matrix, atol=1e-12)


# ---------------------------------------------------------------------------------------
# reading any graph: units, axis order, paths, refusals
# ---------------------------------------------------------------------------------------
def _doc(systems, transforms):
    return {"ome": {"version": "0.6", "scene": {"coordinateSystems": systems, "coordinateTransformations": transforms}}}


def _cs(name, names=("z", "y", "x"), unit="micrometer"):
    return {"name": name, "axes": [{"name": n, "type": "space", "unit": unit} for n in names]}


def test_units_and_axis_order_become_clemlab_points():
    # "a" in nm with axes (z, y, x), "c" in µm, "b" in mm with axes (x, y, z): each step converts units
    doc = _doc([_cs("a", unit="nanometer"), _cs("b", ("x", "y", "z"), "millimeter"), _cs("c")], [
        {"type": "sequence", "input": {"name": "a"}, "output": {"name": "c"}, "transformations": [
            {"type": "translation", "translation": [1000.0, 2000.0, 3000.0]}, {"type": "scale", "scale": [1e-3] * 3}]},
        {"type": "sequence", "input": {"name": "c"}, "output": {"name": "b"}, "transformations": [
            {"type": "mapAxis", "mapAxis": [2, 1, 0]}, {"type": "scale", "scale": [1e-3, 1e-3, 1e-3]}]},
    ])
    tf = cl.read_transform(doc, "a", "b")
    p = np.array([[10.0, 20.0, 30.0]])  # clemlab (x, y, z) µm
    np.testing.assert_allclose(tf(p), p + [3.0, 2.0, 1.0], atol=1e-12)  # every step µm-consistent
    np.testing.assert_allclose(cl.map_ngff_points(doc, "a", "b", [[30e3, 20e3, 10e3]]), [[0.013, 0.022, 0.031]])
    np.testing.assert_allclose(cl.read_transform(doc, "b", "a")(p + [3.0, 2.0, 1.0]), p, atol=1e-12)


def test_no_path_and_unknown_names_are_refused_by_name():
    doc = _doc([_cs("a"), _cs("b"), _cs("c")], [
        {"type": "identity", "input": {"name": "a"}, "output": {"name": "b"}}])
    with pytest.raises(TransformError, match="'a'.*'c'"):
        cl.read_transform(doc, "a", "c")
    with pytest.raises(TransformError, match="'potato'.*known systems"):
        cl.read_transform(doc, "potato", "a")


def test_coordinates_field_maps_forward_only(tmp_path):
    root = zarr.open_group(tmp_path / "s.zarr", mode="w", zarr_format=3)
    grid = np.stack(np.meshgrid(np.arange(3.0), np.arange(4.0), indexing="ij"), axis=0)  # (2, 3, 4): (y, x) index
    f = root.require_group("coordinateTransformations").create_group("coords")
    f.create_array("0", shape=grid.shape, dtype="float64")[...] = 2.0 * grid + 5.0
    f.attrs.put({"ome": {"version": "0.6", "multiscales": [{
        "coordinateSystems": [{"name": "in", "axes": [{"name": "c", "type": "coordinate", "discrete": True},
                                                      {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]}],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 0.5, 0.5],
                                                                   "input": {"path": "0"}, "output": {"name": "in"}}]}]}]}})
    root.attrs.put(_doc([_cs("in", ("y", "x")), _cs("out", ("y", "x"))], [
        {"type": "coordinates", "path": "coordinateTransformations/coords", "input": {"name": "in"},
         "output": {"name": "out"}}]))
    # point (y, x) = (0.25, 0.75) µm is grid index (0.5, 1.5): linear interpolation of 2 * index + 5
    np.testing.assert_allclose(cl.map_ngff_points(root, "in", "out", [[0.25, 0.75], [0.0, 0.0]]),
                               [[6.0, 8.0], [5.0, 5.0]])
    assert np.isnan(cl.map_ngff_points(root, "in", "out", [[5.0, 5.0]])).all()  # outside the grid: no guess
    with pytest.raises(TransformError, match="no chain"):
        cl.map_ngff_points(root, "out", "in", [[6.0, 8.0]])
    run = subprocess.run([sys.executable, "-m", "clemlab.cli", "ngff-transform", str(tmp_path / "s.zarr"),
                          "out", "in", "[[6, 8]]"], capture_output=True, text=True, env=_env())
    assert run.returncode != 0 and "no chain" in json.loads(run.stdout)["message"]
    run = subprocess.run([sys.executable, "-m", "clemlab.cli", "ngff-transform", str(tmp_path / "s.zarr"),
                          "in", "out", "[[0.25, 0.75]]"], capture_output=True, text=True, env=_env())
    assert run.returncode == 0 and json.loads(run.stdout) == {"coordinates": [[6.0, 8.0]]}


def test_written_metadata_validates_against_ome_zarr_models_v06(tmp_path, sample):
    v06 = pytest.importorskip("ome_zarr_models.v06", reason="ome-zarr-models >= 1.8 validates NGFF 0.6")
    from ome_zarr_models.v06.scene import Scene

    reg = cl.register(_distorted_landmarks(sample), model="tps")
    store = tmp_path / "c.ome.zarr"
    cl.write_registration(_image_group(store, sample.em), reg)
    root = zarr.open_group(store, mode="r")
    v06.Image.from_zarr(root)
    Scene.from_zarr(root)
    v06.Image.from_zarr(root["coordinateTransformations/lm_to_em"])


def test_read_back_field_warps_like_the_registration(tmp_path):
    from clemlab.datasets import synthetic_clem_small

    small = synthetic_clem_small(seed=0)
    reg = cl.register(_distorted_landmarks(small), model="tps")
    store = tmp_path / "c.ome.zarr"
    cl.write_registration(_image_group(store, small.em), reg)
    tf = cl.read_transform(store, "lm", "em")
    p = reg.transform.inverse(_em_points(small.em, 200))
    np.testing.assert_array_equal(cl.transform_from_dict(json.loads(json.dumps(tf.to_dict())))(p), tf(p))
    ours = cl.correlate(small.em, small.lm, tf).compute()
    theirs = cl.correlate(small.em, small.lm, reg).compute()
    for name in ours.data_vars:
        a, b = ours[name].values.astype(float), theirs[name].values.astype(float)
        # positions agree within 0.05 EM px: bilinear resampling differs by at most a count or two
        assert np.nanmax(np.abs(a - b)) <= 0.01 * np.nanmax(b) + 2


def test_image_in_the_source_frame_and_a_projection(tmp_path, sample):
    reg = cl.register(_distorted_landmarks(sample), model="tps")
    store = tmp_path / "lm.ome.zarr"
    lm = sample.lm.isel(c=0)
    with pytest.raises(TransformError, match="pixel_size="):
        cl.write_registration(_image_group(store, lm), reg, image_frame="lm")
    cl.write_registration(_image_group(store, lm), reg, image_frame="lm", pixel_size=0.01)
    p = np.c_[np.linspace(3, 40, 50), np.linspace(5, 45, 50)]  # inside the LM image
    err = np.linalg.norm(cl.read_transform(store, "physical", "em")(p) - reg.transform(p), axis=1)
    assert err.max() <= 0.05 * 0.01
    # a 3-D -> 2-D projection is one affine of 2 rows and 4 columns
    proj = cl.RigidProjection(rotation=np.eye(3), scale=2.0, translation=(1.0, -1.0), axial_scale=0.9)
    root = _image_group(tmp_path / "em.ome.zarr", sample.em)
    cl.write_registration(root, proj)
    q = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(cl.map_ngff_points(root, "lm", "em", q[:, ::-1])[:, ::-1], proj(q), atol=1e-12)
    with pytest.raises(TransformError, match="equal dimensions"):
        cl.read_transform(root, "lm", "em")

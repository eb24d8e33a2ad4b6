"""OME-Zarr: streamed multiscale writing, lazy reading, NGFF validation, ome-zarr-py, bad input."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
import zarr

import clemlab as cl
from clemlab import transforms as T
from clemlab.errors import FileFormatError, ImageError
from clemlab.io import open_multiscale


def em_image(shape=(300, 500), chunks=(128, 128)):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 60000, shape, dtype=np.uint16)
    img = cl.as_image(da.from_array(data, chunks=chunks), pixel_size=0.004, origin=(1.0e5, 2.0e5), modality="EM")
    return img.clem.with_transform("stage", T.Translation([3.0, -4.0], source_frame="EM", target_frame="stage"))


def test_roundtrip_levels_geometry_and_lazy(tmp_path):
    img = em_image()
    path = cl.write_ome_zarr(img, tmp_path / "em.ome.zarr", scale_factors=(2, 4), chunks=32)
    group = zarr.open_group(str(path), mode="r")
    assert group.metadata.zarr_format == 3
    ome = group.attrs["ome"]
    ms = ome["multiscales"][0]
    assert ome["version"] == "0.5" and [a["name"] for a in ms["axes"]] == ["y", "x"]
    assert all(a["unit"] == "micrometer" and a["type"] == "space" for a in ms["axes"])
    # inner chunks of 32 inside shards of 8 x 8 chunks, Blosc LZ4
    arr = group["0"]
    assert arr.chunks == (32, 32) and arr.shards == (256, 256)
    assert arr.compressors[0].cname.value == "lz4"
    back = cl.open_image(path)
    assert isinstance(back.data, da.Array) and back.data.chunks == ((256, 44), (256, 244))  # one task per shard
    np.testing.assert_array_equal(back.values, img.values)
    assert back.clem.pixel_size == pytest.approx({"y": 0.004, "x": 0.004})
    assert back.clem.origin == pytest.approx({"y": 1.0e5, "x": 2.0e5}, abs=1e-9)
    assert back.clem.frame == "EM" and back.clem.transform_to("stage") == img.clem.transform_to("stage")
    tree = open_multiscale(path)
    assert list(tree.children) == ["scale0", "scale1", "scale2"]
    s2 = tree["scale2"]["image"]
    assert s2.shape == (75, 125)
    assert s2.clem.pixel_size["x"] == pytest.approx(0.016)
    assert s2.clem.origin["x"] == pytest.approx(2.0e5 + 1.5 * 0.004, abs=1e-9)
    # block means, rounded: an independent numpy reference
    ref = img.values.reshape(75, 4, 125, 4).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(s2.values - ref).max() <= 1.0
    # physical extent is the same at every level
    for k in ("scale1", "scale2"):
        lv = tree[k]["image"]
        assert lv.clem.extent["x"][0] == pytest.approx(back.clem.extent["x"][0], abs=1e-9)


def test_ngff_schema_and_ome_zarr_py(tmp_path):
    from ome_zarr.format import FormatV05
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr_models.v05 import Image

    lm = cl.as_image(np.random.default_rng(1).integers(0, 255, (2, 5, 64, 96), dtype=np.uint8),
                     pixel_size=(0.3, 0.1, 0.1), channels=["GFP", "beads"], colors={"GFP": "#00ff00"}, modality="LM")
    path = cl.write_ome_zarr(lm, tmp_path / "lm.ome.zarr", chunks=32)
    model = Image.from_zarr(zarr.open_group(str(path), mode="r"))  # pydantic models of the NGFF 0.5 schema
    assert [a.name for a in model.ome_attributes.multiscales[0].axes] == ["c", "z", "y", "x"]
    nodes = list(Reader(parse_url(str(path), fmt=FormatV05()))())
    cts = nodes[0].metadata["coordinateTransformations"]
    assert cts[0][0]["scale"] == pytest.approx([1.0, 0.3, 0.1, 0.1])
    assert cts[1][0]["scale"] == pytest.approx([1.0, 0.3, 0.2, 0.2])  # z not downsampled
    assert cts[1][1]["translation"] == pytest.approx([0.0, 0.0, 0.05, 0.05])
    assert nodes[0].metadata["channel_names"] == ["GFP", "beads"]
    back = cl.open_image(path)
    assert list(back.c.values) == ["GFP", "beads"] and back.attrs["colors"]["GFP"] == "#00ff00"
    np.testing.assert_array_equal(back.values, lm.values)


def test_correlated_dataset_written_with_transform(tmp_path):
    em = cl.as_image(np.zeros((64, 80), np.uint8), pixel_size=0.05, modality="EM")
    lm = cl.as_image(np.ones((1, 30, 40), np.uint8) * 9, pixel_size=0.1, channels=["GFP"], modality="LM")
    tf = T.Similarity(1.0, 0.05, [0.2, 0.1], source_frame="LM", target_frame="EM")
    corr = cl.correlate(em, lm, tf)
    path = cl.write_ome_zarr(corr, tmp_path / "corr.ome.zarr")
    back = cl.open_image(path)
    assert list(back.c.values) == ["EM", "GFP"]
    assert T.transform_from_dict(back.attrs["clem:transform_lm_to_em"]) == tf
    np.testing.assert_array_equal(back.sel(c="GFP").values, corr["LM"].isel(c=0).values)


def test_atomic_and_overwrite(tmp_path):
    img = em_image((64, 64), (32, 32))
    path = tmp_path / "a.ome.zarr"
    cl.write_ome_zarr(img, path)
    with pytest.raises(FileFormatError, match="exists; pass overwrite=True"):
        cl.write_ome_zarr(img, path)
    bad = img.copy(data=img.data.map_blocks(lambda b: 1 / 0, dtype=img.dtype))
    with pytest.raises(ZeroDivisionError):
        cl.write_ome_zarr(bad, path, overwrite=True)
    np.testing.assert_array_equal(cl.open_image(path).values, img.values)  # old pyramid intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ome.zarr"]  # no temp folder left
    cl.write_ome_zarr(img.copy(data=img.data[::-1]), path, overwrite=True)
    np.testing.assert_array_equal(cl.open_image(path).values, img.values[::-1])


def test_bad_input(tmp_path):
    g = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=2)
    g.create_array("0", shape=(4, 4), dtype="u1")
    with pytest.raises(FileFormatError, match="without OME-Zarr 'multiscales' metadata.*as_image"):
        cl.open_image(tmp_path / "plain.zarr")
    img = em_image((64, 64), (32, 32))
    with pytest.raises(ImageError, match="scale_factors must be increasing integers"):
        cl.write_ome_zarr(img, tmp_path / "b.ome.zarr", scale_factors=(2, 3))
    with pytest.raises(ImageError, match="chunks must be a positive int"):
        cl.write_ome_zarr(img, tmp_path / "b.ome.zarr", chunks=(0, 4))
    with pytest.raises(FileFormatError, match="does not exist; create it first"):
        cl.write_ome_zarr(img, tmp_path / "nope" / "b.ome.zarr")
    (tmp_path / "folder").mkdir()
    with pytest.raises(FileFormatError, match="is a directory"):
        cl.open_image(tmp_path / "folder")


def test_ngff_05_zarr_v3_group_is_read(tmp_path):
    """A zarr v3 group with NGFF 0.5 metadata (nested under "ome") and a v3 level array."""
    path = tmp_path / "v3.ome.zarr"
    data = np.arange(12 * 10, dtype=np.uint16).reshape(12, 10)
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    g.create_array("s0", shape=data.shape, chunks=(5, 5), dtype="uint16")[:] = data
    g.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "y", "type": "space", "unit": "nanometer"}, {"name": "x", "type": "space", "unit": "nanometer"}],
        "datasets": [{"path": "s0", "coordinateTransformations": [
            {"type": "scale", "scale": [8.0, 4.0]}, {"type": "translation", "translation": [100.0, 200.0]}]}]}]}
    img = cl.open_image(path)
    np.testing.assert_array_equal(img.values, data)
    assert img.clem.pixel_size == pytest.approx({"y": 0.008, "x": 0.004})
    assert img.clem.origin == pytest.approx({"y": 0.1, "x": 0.2})


def test_damaged_or_incomplete_metadata(tmp_path):
    path = tmp_path / "a.ome.zarr"
    cl.write_ome_zarr(em_image((64, 64), (32, 32)), path, scale_factors=())
    (path / "zarr.json").write_text('{"zarr_format": 3, "node_type": "gr', encoding="utf-8")
    with pytest.raises(FileFormatError, match=r"cannot read '.*a\.ome\.zarr' as a zarr group.*damaged"):
        cl.open_image(path)
    good = tmp_path / "b.ome.zarr"
    cl.write_ome_zarr(em_image((64, 64), (32, 32)), good, scale_factors=())
    g = zarr.open_group(str(good), mode="r+")
    ome = g.attrs["ome"]
    ome["multiscales"][0]["datasets"][0]["path"] = "missing"
    g.attrs["ome"] = ome
    with pytest.raises(FileFormatError, match="level 0 of .*'missing'.* not a readable zarr array"):
        cl.open_image(good)
    arr = tmp_path / "array.zarr"
    zarr.create_array(str(arr), shape=(4, 4), dtype="uint8", zarr_format=3)
    with pytest.raises(FileFormatError, match="is a zarr array, not a group"):
        cl.open_image(arr)


def small_registration(model="affine"):
    rng = np.random.default_rng(11)
    src = rng.uniform(0, 4, (8, 2))
    truth = T.Affine(np.array([[1.02, 0.05, 0.3], [-0.04, 0.98, -0.2], [0, 0, 1]]), source_frame="LM", target_frame="EM")
    dst = truth(src) + rng.normal(0, 0.01, src.shape)
    lmk = cl.Landmarks.from_points(src, dst, source_frame="LM", target_frame="EM", sigma_src=0.02, sigma_dst=0.01)
    lmk.set_active("P3", False)
    return cl.register(lmk, model=model), lmk


def test_registration_and_landmarks_in_group_attrs(tmp_path):
    from clemlab.registration import Registration

    reg, lmk = small_registration()
    em = cl.as_image(np.random.default_rng(2).integers(0, 255, (64, 80), dtype=np.uint8), pixel_size=0.05, modality="EM")
    lm = cl.as_image(np.full((1, 40, 48), 9, np.uint8), pixel_size=0.1, channels=["GFP"], modality="LM")
    corr = cl.correlate(em, lm, reg)
    path = cl.write_ome_zarr(corr, tmp_path / "corr.ome.zarr", registration=reg, landmarks=lmk, scale_factors=(2,))
    meta = zarr.open_group(str(path), mode="r").attrs["clemlab"]
    assert meta["registration"]["model"] == "affine" and len(meta["landmarks"]["pairs"]) == 8
    assert "clem:registration" not in meta["attrs"]  # stored once, beside the image attrs
    tree = open_multiscale(path)
    pts = np.random.default_rng(3).uniform(-10, 10, (50, 2))
    for k in ("scale0", "scale1"):
        back = tree[k]["image"]
        reg2 = Registration.from_dict(back.attrs["clem:registration"])
        np.testing.assert_array_equal(reg2.transform(pts), reg.transform(pts))  # bit for bit
        np.testing.assert_array_equal(reg2.residuals, reg.residuals)
        assert reg2.landmarks == reg.landmarks and reg2.model == reg.model
        assert cl.Landmarks.from_json_dict(back.attrs["clem:landmarks"]) == lmk
    # re-writing what was read keeps them (they travel in the attrs); an explicit argument wins
    back = cl.open_image(path)
    again = cl.write_ome_zarr(back, tmp_path / "again.ome.zarr")
    assert Registration.from_dict(cl.open_image(again).attrs["clem:registration"]).transform == reg.transform
    other, _ = small_registration("similarity")
    third = cl.write_ome_zarr(back, tmp_path / "third.ome.zarr", registration=other)
    out = cl.open_image(third)
    assert out.attrs["clem:registration"]["model"] == "similarity" and cl.Landmarks.from_json_dict(out.attrs["clem:landmarks"]) == lmk
    # a plain image written without them carries neither
    assert "clem:registration" not in cl.open_image(cl.write_ome_zarr(em, tmp_path / "em.ome.zarr")).attrs


def test_correlate_carries_its_registration_into_the_file(tmp_path):
    from clemlab.registration import Registration

    reg, lmk = small_registration()
    em = cl.as_image(np.zeros((32, 40), np.uint8), pixel_size=0.1, modality="EM")
    lm = cl.as_image(np.zeros((1, 20, 24), np.uint8), pixel_size=0.2, channels=["GFP"], modality="LM")
    corr = cl.correlate(em, lm, reg)  # no registration= to the writer: correlate's attrs carry it
    back = cl.open_image(cl.write_ome_zarr(corr, tmp_path / "c.ome.zarr", scale_factors=()))
    reg2 = Registration.from_dict(back.attrs["clem:registration"])
    pts = np.random.default_rng(5).uniform(0, 4, (20, 2))
    np.testing.assert_array_equal(reg2.transform(pts), reg.transform(pts))
    assert cl.Landmarks.from_json_dict(back.attrs["clem:landmarks"]) == lmk
    # a bare transform carries only itself
    plain = cl.correlate(em, lm, reg.transform)
    assert "clem:registration" not in plain.attrs and "clem:transform_lm_to_em" in plain.attrs


def test_registration_and_landmarks_bad_input(tmp_path):
    from clemlab.errors import LandmarkError, RegistrationError

    reg, lmk = small_registration()
    img = em_image((64, 64), (32, 32))
    with pytest.raises(RegistrationError, match="registration= must be a clemlab Registration .*got Affine"):
        cl.write_ome_zarr(img, tmp_path / "r.ome.zarr", registration=reg.transform)
    with pytest.raises(RegistrationError, match="got dict"):
        cl.write_ome_zarr(img, tmp_path / "r.ome.zarr", registration=reg.to_dict())
    with pytest.raises(LandmarkError, match="landmarks= must be a clemlab Landmarks table .*got ndarray"):
        cl.write_ome_zarr(img, tmp_path / "r.ome.zarr", landmarks=lmk.src())
    assert not (tmp_path / "r.ome.zarr").exists() and list(tmp_path.iterdir()) == []

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
    path = cl.write_ome_zarr(img, tmp_path / "em.ome.zarr", scale_factors=(2, 4))
    meta = json.loads((path / ".zattrs").read_text())
    ms = meta["multiscales"][0]
    assert ms["version"] == "0.4" and [a["name"] for a in ms["axes"]] == ["y", "x"]
    assert all(a["unit"] == "micrometer" and a["type"] == "space" for a in ms["axes"])
    # zarr chunks == dask chunks written
    assert zarr.open_array(str(path / "0"), mode="r").chunks == (128, 128)
    back = cl.open_image(path)
    assert isinstance(back.data, da.Array) and back.data.chunks == img.data.chunks
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
    from ome_zarr.format import FormatV04
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr_models.v04 import Image

    lm = cl.as_image(np.random.default_rng(1).integers(0, 255, (2, 5, 64, 96), dtype=np.uint8),
                     pixel_size=(0.3, 0.1, 0.1), channels=["GFP", "beads"], colors={"GFP": "#00ff00"}, modality="LM")
    path = cl.write_ome_zarr(lm, tmp_path / "lm.ome.zarr", chunks=32)
    model = Image.from_zarr(zarr.open_group(str(path), mode="r"))  # pydantic models of the NGFF 0.4 schema
    assert [a.name for a in model.attributes.multiscales[0].axes] == ["c", "z", "y", "x"]
    nodes = list(Reader(parse_url(str(path), fmt=FormatV04()))())
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

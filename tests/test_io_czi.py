"""Zeiss CZI through open_image / list_images, against the real files of ../shared/data.

Expected values come from the folder's README (czifile / aicspylibczi / bioio-czi test suites);
pixel values are compared with czifile's own assembly of the same file.
"""

from __future__ import annotations

import subprocess
import sys

import czifile
import dask.array as da
import numpy as np
import pytest

import clemlab
from clemlab.errors import FileFormatError, ImageError
from clemlab.io import open_image
from clemlab.io.czi import read_czi_tiles

DIR = "czi-aicspylibczi"
PX = 1.0833333333333333


def test_single_scene_file(shared_data):
    path = shared_data(f"{DIR}/s_1_t_1_c_1_z_1.czi")
    img = open_image(path)
    assert img.dims == ("y", "x") and img.shape == (325, 475) and img.dtype == np.uint16
    assert img.clem.pixel_size == pytest.approx({"y": PX, "x": PX}, rel=1e-9)
    assert img.attrs["channel"] == "Bright"
    assert img.attrs["tile_positions_px"] == [[39856, 39272]]
    assert img.attrs["pixel_size_source"].startswith("CZI Metadata/Scaling")
    np.testing.assert_array_equal(img.values, czifile.imread(path).squeeze())
    # the stage position of the tile, in µm, agrees with its pixel offset times the pixel size
    stage = img.attrs["stage_position"]
    assert stage["units"] == "µm" and "StageXPosition" in stage["source"]
    centre_x = (39856 + 475 / 2) * PX
    assert abs(stage["x"] - centre_x) < 10  # within the ROI offset Zeiss records (7 µm)


def test_mosaic_assembled_from_tile_positions(shared_data):
    path = shared_data(f"{DIR}/mosaic_test.czi")
    img = open_image(path)
    assert img.shape == (624, 1756) and img.dtype == np.uint16
    assert img.attrs["tile_positions_px"] == [[0, 0], [832, 0]]
    assert "assembled from 2 tiles" in img.attrs["mosaic"] and "without blending" in img.attrs["mosaic"]
    assert img.attrs["channel"] == "EGFP" and img.attrs["channel_info"]["EGFP"]["emission_nm"] == 509
    assert img.attrs["scene"] == "TR1"
    assert img.attrs["stage_position"]["source"] == "CZI Scene/CenterPosition"
    assert img.attrs["stage_position"]["x"] == pytest.approx(59892.178)
    np.testing.assert_array_equal(img.values, czifile.imread(path).squeeze())
    assert img.coords["x"].values[-1] == pytest.approx(1755 * PX)


def test_mosaic_tiles_for_mosaic_from_tiles(shared_data):
    path = shared_data(f"{DIR}/mosaic_test.czi")
    tiles, positions, px = read_czi_tiles(path)
    assert [t.shape for t in tiles] == [(624, 924), (624, 924)]
    np.testing.assert_array_equal(positions, [[0, 0], [832, 0]])
    assert px == pytest.approx(PX)
    with czifile.CziFile(path) as f:
        first = f.subblock_directory[0].data_segment().data().squeeze()
    np.testing.assert_array_equal(np.asarray(tiles[0]), first)
    mosaic = clemlab.mosaic_from_tiles(tiles, positions, px, modality="LM")
    assembled = open_image(path)
    assert mosaic.shape == assembled.shape
    # outside the 92-px overlap the feathered and the plain assembly hold the same pixels
    np.testing.assert_array_equal(mosaic.values[:, :832], assembled.values[:, :832])
    np.testing.assert_array_equal(mosaic.values[:, 924:], assembled.values[:, 924:])


def test_two_channel_tiled_file(shared_data):
    path = shared_data(f"{DIR}/tiles.czi")
    img = open_image(path)
    assert img.dims == ("c", "y", "x") and img.shape == (2, 512, 510) and img.dtype == np.uint8
    assert img.clem.pixel_size["x"] == pytest.approx(0.83026582, rel=1e-7)
    assert list(img.coords["c"].values) == ["Ch1", "T PMT"]
    assert img.attrs["channel_info"]["Ch1"]["dye"] == "ATTO 488"
    assert img.attrs["tile_positions_px"] == [[-127, -128], [127, -128], [-127, 128], [127, 128]]
    np.testing.assert_array_equal(img.values, czifile.imread(path).squeeze())


def test_lazy_read_is_dask_and_equal(shared_data):
    path = shared_data(f"{DIR}/tiles.czi")
    lazy = open_image(path, lazy=True)
    assert isinstance(lazy.data, da.Array)
    np.testing.assert_array_equal(lazy.values, open_image(path).values)
    chunked = open_image(path, chunks=(1, 128, 128))
    assert chunked.data.chunks[1][0] == 128


def test_list_images(shared_data):
    table = clemlab.list_images(shared_data(f"{DIR}/mosaic_test.czi"))
    assert list(table["name"]) == ["TR1"]
    row = table.iloc[0]
    assert row["dims"] == "y x" and row["sizes"] == "y 624, x 1756"
    assert row["pixel_size_x_um"] == pytest.approx(PX) and row["pixel_size_z_um"] == pytest.approx(1.0)
    assert row["channels"] == "EGFP"
    table = clemlab.list_images(shared_data(f"{DIR}/tiles.czi"))
    assert table.iloc[0]["channels"] == "Ch1, T PMT" and table.iloc[0]["dims"] == "c y x"


def test_scene_choice_by_name_and_index(shared_data):
    path = shared_data(f"{DIR}/mosaic_test.czi")
    by_name = open_image(path, scene="TR1")
    np.testing.assert_array_equal(by_name.values, open_image(path, scene=0).values)
    with pytest.raises(ImageError, match=r"no scene named 'TR2'.*0: 'TR1' \(624 x 1756 px, 2 tiles\)"):
        open_image(path, scene="TR2")
    with pytest.raises(ImageError, match="scene=3 is out of range"):
        open_image(path, scene=3)
    with pytest.raises(ImageError, match=r"timepoint=2 is out of range \(the file has 1 time points\)"):
        open_image(path, timepoint=2)


def test_truncated_czi_is_refused_naming_the_file(shared_data, tmp_path):
    data = shared_data(f"{DIR}/mosaic_test.czi").read_bytes()
    for fraction in (0.9, 0.5, 0.001):
        cut = tmp_path / f"cut_{fraction}.czi"
        cut.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(FileFormatError, match="truncated") as info:
            open_image(cut)
        assert str(cut) in str(info.value)
        with pytest.raises(FileFormatError, match="truncated"):
            clemlab.list_images(cut)


def test_file_named_czi_that_is_not(tmp_path):
    fake = tmp_path / "fake.czi"
    fake.write_bytes(b"not a zeiss file" * 10)
    with pytest.raises(FileFormatError, match="named like a CZI file but does not start with ZISRAWFILE"):
        open_image(fake)


def test_import_clemlab_does_not_load_the_readers():
    code = (
        "import clemlab, clemlab.io, sys; "
        "bad = [m for m in ('czifile', 'liffile', 'nd2', 'clemlab.io.czi') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

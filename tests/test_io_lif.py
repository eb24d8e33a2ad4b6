"""Leica LIF through open_image / list_images, against the real file of ../shared/data.

Expected values come from the folder's README; pixel values are compared with liffile's own
read of the same image.
"""

from __future__ import annotations

import dask.array as da
import liffile
import numpy as np
import pytest

import clemlab
from clemlab.errors import FileFormatError, ImageError
from clemlab.io import open_image

LIF = "lif-readlif/LeicaLASX_wavelength-sweep_example.lif"
NAMES = ["x_y_lambdaEmi", "x_y_lambdaExc", "x_y_z_t_lambdaEmi"]
PX = 0.104814


def test_list_images_names_dims_and_pixel_sizes(shared_data):
    table = clemlab.list_images(shared_data(LIF))
    assert list(table["name"]) == NAMES
    assert list(table["dims"]) == ["λ Y X", "Λ Y X", "T λ Z Y X"]
    assert list(table["sizes"]) == ["λ 20, Y 64, X 64", "Λ 15, Y 64, X 64", "T 2, λ 10, Z 11, Y 64, X 64"]
    assert table["pixel_size_x_um"].to_numpy() == pytest.approx([PX] * 3, rel=1e-5)
    assert table["pixel_size_y_um"].to_numpy() == pytest.approx([PX] * 3, rel=1e-5)
    assert np.isnan(table["pixel_size_z_um"][0]) and table["pixel_size_z_um"][2] == pytest.approx(0.5, rel=1e-2)
    assert (table["dtype"] == "uint8").all()


def test_ambiguous_file_lists_its_images(shared_data):
    path = shared_data(LIF)
    with pytest.raises(ImageError) as info:
        open_image(path)
    msg = str(info.value)
    assert str(path) in msg and "holds 3 images" in msg and "image=<name or index>" in msg
    for name in NAMES:
        assert repr(name) in msg


def test_emission_sweep_becomes_named_channels(shared_data):
    img = open_image(shared_data(LIF), image="x_y_lambdaEmi")
    assert img.dims == ("c", "y", "x") and img.shape == (20, 64, 64)
    names = list(img.coords["c"].values)
    assert names[0] == "λem 550 nm" and names[-1] == "λem 740 nm"
    assert img.attrs["channel_axis"].startswith("emission wavelength")
    assert img.clem.pixel_size == pytest.approx({"y": PX, "x": PX}, rel=1e-5)
    with liffile.LifFile(shared_data(LIF)) as lif:
        np.testing.assert_array_equal(img.values, lif.images[0].asarray())


def test_excitation_sweep_by_index(shared_data):
    img = open_image(shared_data(LIF), image=1)
    assert img.shape == (15, 64, 64) and img.attrs["image"] == "x_y_lambdaExc"
    assert img.coords["c"].values[0] == "λex 490 nm"
    assert img.attrs["channel_axis"].startswith("excitation wavelength")


def test_time_series_needs_a_timepoint_and_keeps_z(shared_data):
    path = shared_data(LIF)
    with pytest.raises(ImageError, match=r"time series of 2 time points.*timepoint=<0\.\.1>"):
        open_image(path, image=2)
    img = open_image(path, image="x_y_z_t_lambdaEmi", timepoint=1)
    assert img.dims == ("c", "z", "y", "x") and img.shape == (10, 11, 64, 64)
    z = img.coords["z"].values
    assert z[0] == pytest.approx(-2.5) and np.diff(z) == pytest.approx([0.5] * 10, rel=1e-2)
    with liffile.LifFile(path) as lif:
        np.testing.assert_array_equal(img.values, lif.images[2].asarray()[1])
    lazy = open_image(path, image=2, timepoint=1, lazy=True)
    assert isinstance(lazy.data, da.Array)
    np.testing.assert_array_equal(lazy.values, img.values)


def test_stage_position_in_micrometres(shared_data):
    img = open_image(shared_data(LIF), image=0)
    stage = img.attrs["stage_position"]
    # StagePosX="0.0352668276465" StagePosY="0.01003858372743" (metres) in the file's XML
    assert stage["x"] == pytest.approx(35266.8276465) and stage["y"] == pytest.approx(10038.58372743)
    assert stage["units"] == "µm" and "StagePosX" in stage["source"]


def test_missing_image_names_the_file_and_lists_images(shared_data):
    path = shared_data(LIF)
    with pytest.raises(ImageError) as info:
        open_image(path, image="x_y_z")
    msg = str(info.value)
    assert str(path) in msg and "no image named 'x_y_z'" in msg and "'x_y_lambdaExc'" in msg
    with pytest.raises(ImageError, match="image=7 is out of range"):
        open_image(path, image=7)


def test_truncated_lif(shared_data, tmp_path):
    data = shared_data(LIF).read_bytes()
    head = tmp_path / "head.lif"
    head.write_bytes(data[:5000])  # the XML header is cut
    with pytest.raises(FileFormatError, match="not a readable Leica image file") as info:
        open_image(head, image=0)
    assert str(head) in str(info.value)
    half = tmp_path / "half.lif"
    half.write_bytes(data[: len(data) // 2])  # the last image's pixels are cut
    with pytest.raises(FileFormatError, match="truncated or corrupt") as info:
        open_image(half, image=2, timepoint=0)
    assert str(half) in str(info.value)


def test_scene_and_image_are_synonyms(shared_data):
    path = shared_data(LIF)
    np.testing.assert_array_equal(open_image(path, scene=1).values, open_image(path, image=1).values)
    with pytest.raises(ImageError, match="not both"):
        open_image(path, scene=0, image=1)


def test_info_summary_names_sources(shared_data):
    from clemlab.io.info import info

    path = shared_data(LIF)
    text = info(path, image="x_y_z_t_lambdaEmi", timepoint=0)
    assert "LIF file, 3 image(s)" in text and all(name in text for name in NAMES)
    assert "pixel size from: LIF DimensionDescription" in text
    assert "first pixel centre (µm): z -2.5" in text
    assert "stage position (µm): x 35343.5" in text
    ambiguous = info(path)
    assert "no single image to describe" in ambiguous and "image=<name or index>" in ambiguous

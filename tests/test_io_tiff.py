"""clemlab.io.tiff: real vendor files (shared data), synthetic TIFFs, OME-TIFF round trips."""

from __future__ import annotations

import json
import zipfile

import dask.array as da
import numpy as np
import pytest
import tifffile
import xarray as xr

from clemlab.errors import FileFormatError, MissingPixelSizeError
from clemlab.image import as_image
from clemlab.io import list_images, open_image, open_multiscale, write_ome_tiff

RS = "rosettasciio-calibrated"
TEM_UM = 0.16867469  # DM tag of the shared TEM image, µm


@pytest.fixture(scope="module")
def fei_dir(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("fei")
    with zipfile.ZipFile(shared_data(f"{RS}/tiff_FEI_Helios.zip")) as z:
        z.extractall(out)
    return out


@pytest.fixture(scope="module")
def zeiss_dir(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("zeiss")
    with zipfile.ZipFile(shared_data(f"{RS}/tiff_Zeiss_SEM.zip")) as z:
        z.extractall(out)
    return out


# --- the DM3 / ImageJ-TIFF / DM-TIFF trio ---------------------------------------------------
@pytest.mark.parametrize(
    "name", ["test_loading_image_saved_with_imageJ.tif", "test_loading_image_saved_with_DM.tif"]
)
def test_trio_tiffs_pixel_size(shared_data, name):
    img = open_image(shared_data(f"{RS}/{name}"))
    assert img.dims == ("y", "x") and img.shape == (68, 68)
    assert img.clem.pixel_size == pytest.approx({"y": 0.16867, "x": 0.16867}, abs=1e-5)
    assert img.x.attrs["units"] == "µm"


def test_dm_tiff_origin_matches_dm3(shared_data):
    # DM exports the calibrated value of the first pixel (offset) = -Origin * scale
    img = open_image(shared_data(f"{RS}/test_loading_image_saved_with_DM.tif"))
    assert img.clem.origin == pytest.approx({"x": 828 * TEM_UM, "y": 760 * TEM_UM}, rel=1e-6)


def test_imagej_no_scale_is_uncalibrated(shared_data):
    p = shared_data(f"{RS}/test_loading_image_saved_with_imageJ_no_scale.tif")
    with pytest.raises(MissingPixelSizeError, match="without a scale") as info:
        open_image(p)
    assert "pixel_size=" in str(info.value) and str(p) in str(info.value)
    assert open_image(p, pixel_size=0.2).clem.pixel_size["x"] == 0.2


def test_imagej_stack_z_spacing(shared_data):
    img = open_image(shared_data(f"{RS}/test_loading_image_saved_with_imageJ_stack.tif"))
    assert img.dims == ("z", "y", "x") and img.shape == (2, 68, 68)
    assert img.clem.pixel_size == pytest.approx({"z": 2.5, "y": 0.16867, "x": 0.16867}, abs=1e-5)


def test_dm_stack_stays_non_square(shared_data):
    with pytest.warns(UserWarning, match="spacing between planes"):
        img = open_image(shared_data(f"{RS}/test_loading_image_saved_with_DM_stack.tif"))
    assert img.dims == ("z", "y", "x")
    ps = img.clem.pixel_size
    assert ps["x"] == pytest.approx(0.16867, abs=1e-5)
    assert ps["y"] == pytest.approx(1.68674, abs=1e-5)
    assert img.attrs["z_calibrated"] is False
    assert img.attrs["stack_axis"] == {"scale": 2.5, "units": "s"}


# --- FEI / Thermo Fisher --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["FEI-Helios-Ebeam-8bits.tif", "FEI-Helios-Ebeam-16bits.tif"])
def test_fei_ebeam(fei_dir, name):
    img = open_image(fei_dir / name)
    assert img.clem.pixel_size == pytest.approx({"y": 3.3724, "x": 3.3724}, rel=1e-5)
    # file is (x, y) = (512, 471); [Image] ResolutionY = 442 -> 29-row data bar cropped
    assert img.shape == (442, 512)
    assert img.attrs["databar_cropped_px"] == 29
    full = open_image(fei_dir / name, crop_databar=False)
    assert full.shape == (471, 512) and full.attrs["databar_px"] == 29
    np.testing.assert_array_equal(full.values[:442], img.values)


def test_fei_navcam(fei_dir):
    img = open_image(fei_dir / "FEI-Helios-navcam.tif", crop_databar=False)
    assert img.shape == (551, 768)
    assert img.clem.pixel_size["x"] == pytest.approx(264.0, rel=1e-4)  # 0.2640 mm
    assert img.clem.pixel_size["y"] == pytest.approx(264.0, rel=1e-4)


@pytest.mark.parametrize(
    "name", ["FEI-Helios-navcam-with-no-IRBeam.tif", "FEI-Helios-navcam-with-no-IRBeam-bad-floats.tif"]
)
def test_fei_without_calibration(fei_dir, name):
    with pytest.raises(MissingPixelSizeError, match="FEI") as info:
        open_image(fei_dir / name)
    assert "pixel_size=" in str(info.value) and name in str(info.value)
    # ... but it loads (bad floats included) once the pixel size is given
    img = open_image(fei_dir / name, pixel_size=0.264, units="mm", crop_databar=False)
    assert img.shape == (551, 768)
    assert img.clem.pixel_size["x"] == pytest.approx(264.0)


# --- Zeiss, AxioVision, Olympus ----------------------------------------------------------
def test_zeiss_sem(zeiss_dir):
    img = open_image(zeiss_dir / "test_tiff_Zeiss_SEM_1k.tif")
    assert img.shape == (768, 1024)
    assert img.clem.pixel_size["x"] == pytest.approx(2.614514, rel=1e-6)
    img = open_image(zeiss_dir / "test_tiff_Zeiss_SEM_512pix.tif")
    assert img.shape == (384, 512)
    assert img.clem.pixel_size["x"] == pytest.approx(0.011649976, rel=1e-6)


def test_zeiss_sem_multipage(zeiss_dir):
    with pytest.warns(UserWarning, match="spacing between planes"):
        img = open_image(zeiss_dir / "ZEISS_SEM_multipage.tif")
    assert img.shape == (2, 1536, 2048)
    assert img.clem.pixel_size["x"] == pytest.approx(0.01233, rel=1e-3)  # 'Image Pixel Size' 12.33 nm


def test_axiovision(shared_data):
    img = open_image(shared_data(f"{RS}/optical_Zeiss_AxioVision_BW.tif"))
    assert img.shape == (10, 13)
    assert img.clem.pixel_size["x"] == pytest.approx(169.333, rel=1e-5)


@pytest.mark.parametrize("series", [0, 1])
def test_olympus_sis(shared_data, series):
    img = open_image(shared_data(f"{RS}/olympus_SIS.tif"), series=series)
    assert img.clem.pixel_size["x"] == pytest.approx(2.3928e-5, rel=1e-4)  # 2.3928e-11 m
    if series == 0:  # the RGB preview of the same field
        assert img.dims == ("c", "y", "x") and list(img.c.values) == ["R", "G", "B"]
    else:
        assert img.dims == ("y", "x") and img.dtype == np.uint16 and img.shape == (101, 112)


# --- 3DCT -----------------------------------------------------------------------------------
def test_3dct_confocal_stack(shared_data):
    img = open_image(shared_data("3dct/small_cf.tif"))
    assert img.dims == ("z", "y", "x") and img.shape == (90, 100, 110)
    # 62500 px/cm -> 0.16 µm; z from the JSON description's spacing/unit (0.16 um)
    assert img.clem.pixel_size == pytest.approx({"z": 0.16, "y": 0.16, "x": 0.16})


def test_3dct_ion_beam_uncalibrated(shared_data):
    p = shared_data("3dct/small_ib.tif")
    with pytest.raises(MissingPixelSizeError, match="uncalibrated") as info:
        open_image(p)
    assert "pixel_size=" in str(info.value)
    assert open_image(p, pixel_size=0.5).shape == (60, 50)


# --- synthetic: ImageJ, resolution tags, vendors ----------------------------------------------
@pytest.mark.parametrize("unit", ["micron", "\\u00B5m", "um", "nm"])
def test_imagej_written_by_tifffile(tmp_path, unit):
    p = tmp_path / "ij.tif"
    data = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    tifffile.imwrite(p, data, imagej=True, resolution=(1 / 0.25, 1 / 0.5), metadata={"unit": unit, "spacing": 2.0, "axes": "ZYX"})
    img = open_image(p)
    f = 1e-3 if unit == "nm" else 1.0
    assert img.dims == ("z", "y", "x")
    assert img.clem.pixel_size == pytest.approx({"z": 2.0 * f, "y": 0.5 * f, "x": 0.25 * f})
    np.testing.assert_array_equal(img.values, data)


@pytest.mark.parametrize("unit,factor", [("INCH", 25400.0), ("CENTIMETER", 1e4)])
def test_plain_resolution_tags(tmp_path, unit, factor):
    p = tmp_path / "r.tif"
    tifffile.imwrite(p, np.zeros((4, 6), np.uint8), resolution=(200.0, 100.0), resolutionunit=unit)
    img = open_image(p)
    assert img.clem.pixel_size == pytest.approx({"x": factor / 200.0, "y": factor / 100.0})


def test_resolution_without_unit_is_uncalibrated(tmp_path):
    p = tmp_path / "r.tif"
    tifffile.imwrite(p, np.zeros((4, 6), np.uint8), resolution=(1, 1), resolutionunit="NONE")
    with pytest.raises(MissingPixelSizeError, match="uncalibrated"):
        open_image(p)


def test_rgb_tiff(tmp_path):
    p = tmp_path / "rgb.tif"
    rgb = np.random.default_rng(1).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    tifffile.imwrite(p, rgb, photometric="rgb", resolution=(1e4, 1e4), resolutionunit="CENTIMETER")
    img = open_image(p)
    assert img.dims == ("c", "y", "x") and list(img.c.values) == ["R", "G", "B"]
    np.testing.assert_array_equal(img.values, np.moveaxis(rgb, -1, 0))


def test_tescan_private_tag(tmp_path):
    p = tmp_path / "tescan.tif"
    text = "[MAIN]\r\nDevice=MIRA3\r\nPixelSizeX=5.2e-009\r\nPixelSizeY=5.2e-009\r\n"
    tifffile.imwrite(p, np.zeros((4, 6), np.uint8), resolution=(96, 96), resolutionunit="INCH", extratags=[(50431, "B", len(text), text.encode(), False)])
    img = open_image(p)
    assert img.clem.pixel_size == pytest.approx({"y": 0.0052, "x": 0.0052})
    assert img.attrs["instrument"] == "Tescan"


def test_jeol_sidecar(tmp_path):
    p = tmp_path / "jeol.tif"
    data = np.zeros((1024, 1280), np.uint8)
    data[960:] = 255  # data bar
    tifffile.imwrite(p, data, resolution=(96, 96), resolutionunit="INCH")
    p.with_suffix(".txt").write_text(
        "$CM_FORMAT JEOL-SEM\n$CM_FULL_SIZE 1280 960\n$CM_MAG 5000\n$$SM_MICRON_BAR 160\n$$SM_MICRON_MARKER 5um\n"
    )
    img = open_image(p)
    assert img.clem.pixel_size["x"] == pytest.approx(5 / 160)
    assert img.shape == (960, 1280) and img.attrs["databar_cropped_px"] == 64
    assert int(img.max()) == 0


# --- lazy -------------------------------------------------------------------------------------
def test_lazy_tiff_is_dask_and_equal(tmp_path):
    p = tmp_path / "big.tif"
    data = np.random.default_rng(2).integers(0, 4000, (4, 256, 300), dtype=np.uint16)
    tifffile.imwrite(p, data, imagej=True, resolution=(10, 10), metadata={"unit": "um", "spacing": 0.3, "axes": "ZYX"}, tile=(64, 64))
    img = open_image(p, lazy=True)
    assert isinstance(img.data, da.Array)
    assert img.clem.pixel_size == pytest.approx({"z": 0.3, "y": 0.1, "x": 0.1})
    np.testing.assert_array_equal(img.values, data)
    chunked = open_image(p, chunks=(1, 128, 128))
    assert isinstance(chunked.data, da.Array) and chunked.data.chunksize == (1, 128, 128)
    eager = open_image(p, lazy=False)
    assert isinstance(eager.data, np.ndarray)


# --- OME-TIFF ---------------------------------------------------------------------------------
def _roundtrip(tmp_path, img, name="rt.ome.tif"):
    p = write_ome_tiff(img, tmp_path / name)
    assert tifffile.TiffFile(p).is_ome
    back = open_image(p)
    assert back.dims == img.dims
    assert back.dtype == img.dtype
    np.testing.assert_array_equal(back.values, img.values)
    for d in img.dims:
        np.testing.assert_array_equal(back[d].values, img[d].values)  # exact coords
    assert {k: v for k, v in back.attrs.items() if k != "source"} == {k: v for k, v in img.attrs.items() if k != "source"}
    assert back.attrs["source"] == str(p)
    return back


def test_ome_roundtrip_2d(tmp_path):
    img = as_image(np.arange(20, dtype=np.float32).reshape(4, 5), pixel_size=0.1, modality="EM")
    _roundtrip(tmp_path, img)


def test_ome_roundtrip_cyx_nonsquare_origin_colors_transforms(tmp_path):
    from clemlab.transforms import Affine

    data = np.random.default_rng(3).integers(0, 60000, (2, 9, 11), dtype=np.uint16)
    img = as_image(
        data, pixel_size={"y": 0.13, "x": 0.1}, origin={"y": -12.345678901, "x": 20000.1}, dims=("c", "y", "x"),
        channels=["GFP", "beads"], colors={"GFP": "#00ff00", "beads": "#ff00ff"}, modality="LM", frame="lm-session-1",
    )
    tf = Affine(np.array([[1.01, 0.02, 5.5], [-0.03, 0.99, -7.25], [0, 0, 1]]), source_frame="lm-session-1", target_frame="EM")
    img = img.clem.with_transform("EM", tf)
    back = _roundtrip(tmp_path, img)
    assert list(back.c.values) == ["GFP", "beads"]
    assert back.attrs["colors"] == {"GFP": "#00ff00", "beads": "#ff00ff"}
    np.testing.assert_array_equal(back.clem.transform_to("EM").matrix, tf.matrix)
    # standard OME-XML holds the same geometry for other readers
    ome = tifffile.TiffFile(tmp_path / "rt.ome.tif").ome_metadata
    assert 'PhysicalSizeX="0.1"' in ome and 'PhysicalSizeY="0.13"' in ome and 'Name="beads"' in ome
    assert 'PositionX="20000.1"' in ome


def test_ome_roundtrip_czyx(tmp_path):
    data = np.random.default_rng(4).random((3, 4, 6, 5)).astype(np.float32)
    img = as_image(data, pixel_size=(0.35, 0.065, 0.065), origin=(1.5, -2.0, 3.25), channels=["a", "b", "c"])
    back = _roundtrip(tmp_path, img)
    assert back.clem.pixel_size["z"] == pytest.approx(0.35)


def test_ome_roundtrip_dask_and_bool(tmp_path):
    data = np.random.default_rng(5).random((5, 32, 48)) > 0.5
    img = as_image(da.from_array(data, chunks=(1, 16, 16)), pixel_size=(1.0, 0.5, 0.25), modality="EM")
    back = _roundtrip(tmp_path, img, "dask.ome.tif")
    assert back.dtype == bool


def test_ome_written_atomically(tmp_path):
    img = as_image(np.ones((4, 4), np.uint8), pixel_size=1)
    p = tmp_path / "a.ome.tif"
    p.write_bytes(b"old")
    with pytest.raises(FileFormatError, match="exists; pass overwrite=True"):
        write_ome_tiff(img, p)
    assert p.read_bytes() == b"old"
    with pytest.raises(FileExistsError, match="is not a TIFF file"):  # only a TIFF is replaced
        write_ome_tiff(img, p, overwrite=True)
    tifffile.imwrite(p, np.zeros((2, 2), np.uint8))
    write_ome_tiff(img, p, overwrite=True)
    assert [q.name for q in tmp_path.iterdir()] == ["a.ome.tif"]  # no temp file left
    assert open_image(p).shape == (4, 4)


def test_foreign_ome_tiff(tmp_path):
    """An OME-TIFF not written by clemlab: PhysicalSize* with units, channel names, plane position."""
    p = tmp_path / "foreign.ome.tif"
    data = np.zeros((2, 3, 8, 10), np.uint16)
    meta = {
        "axes": "CZYX", "PhysicalSizeX": 65.0, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 70.0,
        "PhysicalSizeYUnit": "nm", "PhysicalSizeZ": 0.2, "PhysicalSizeZUnit": "µm",
        "Channel": {"Name": ["DAPI", "GFP"], "Color": [65535, 16711935]},
        "Plane": {"PositionX": [100.0] * 6, "PositionXUnit": ["µm"] * 6, "PositionY": [0.5] * 6, "PositionYUnit": ["mm"] * 6},
    }
    tifffile.imwrite(p, data, ome=True, metadata=meta)
    img = open_image(p)
    assert img.dims == ("c", "z", "y", "x") and list(img.c.values) == ["DAPI", "GFP"]
    assert img.clem.pixel_size == pytest.approx({"z": 0.2, "y": 0.07, "x": 0.065})
    assert img.clem.origin == pytest.approx({"z": 0.0, "y": 500.0, "x": 100.0})
    assert img.attrs["colors"] == {"DAPI": "#0000ff", "GFP": "#00ff00"}


def test_ome_pyramid_multiscale(tmp_path):
    p = tmp_path / "pyr.ome.tif"
    data = np.random.default_rng(6).integers(0, 255, (64, 96), dtype=np.uint8)
    meta = {"axes": "YX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}
    with tifffile.TiffWriter(p, ome=True) as tw:
        tw.write(data, subifds=2, tile=(16, 16), metadata=meta)
        tw.write(data[::2, ::2], subfiletype=1, tile=(16, 16))
        tw.write(data[::4, ::4], subfiletype=1, tile=(16, 16))
    img = open_image(p)
    assert img.shape == (64, 96)  # full resolution
    tree = open_multiscale(p)
    assert isinstance(tree, xr.DataTree)
    assert sorted(tree.children) == ["scale0", "scale1", "scale2"]
    s0, s2 = tree["scale0"]["image"], tree["scale2"]["image"]
    assert s2.shape == (16, 24) and isinstance(s2.data, da.Array)
    assert s2.clem.pixel_size == pytest.approx({"y": 2.0, "x": 2.0})
    assert s2.clem.origin == pytest.approx({"y": 0.75, "x": 0.75})  # (4 - 1) / 2 * 0.5
    for d in ("y", "x"):  # every level covers the same area
        assert s0.clem.extent[d] == pytest.approx(s2.clem.extent[d])
    np.testing.assert_array_equal(s2.values, data[::4, ::4])


def test_multiscale_of_plain_tiff_has_one_level(tmp_path):
    p = tmp_path / "one.tif"
    tifffile.imwrite(p, np.zeros((8, 8), np.uint8), resolution=(1e4, 1e4), resolutionunit="CENTIMETER")
    tree = open_multiscale(p)
    assert list(tree.children) == ["scale0"]


def test_ome_annotation_is_json(tmp_path):
    img = as_image(np.zeros((3, 3), np.uint8), pixel_size=0.3, origin=0.1, modality="EM")
    p = write_ome_tiff(img, tmp_path / "j.ome.tif")
    ome = tifffile.TiffFile(p).ome_metadata
    assert 'Namespace="clemlab"' in ome
    import xml.etree.ElementTree as ET

    m = [el for el in ET.fromstring(ome).iter() if el.tag.endswith("}M")][0]
    payload = json.loads(m.text)
    assert payload["pixel_size"] == {"y": 0.3, "x": 0.3} and payload["attrs"]["modality"] == "EM"


def test_auto_lazy_above_threshold(tmp_path, monkeypatch):
    import clemlab.io as cio

    p = tmp_path / "auto.tif"
    data = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    tifffile.imwrite(p, data, resolution=(1e4, 1e4), resolutionunit="CENTIMETER")
    assert isinstance(open_image(p).data, np.ndarray)
    monkeypatch.setattr(cio, "LAZY_THRESHOLD_BYTES", 1000)  # the file holds 8192 bytes of pixels
    img = open_image(p)
    assert isinstance(img.data, da.Array)
    np.testing.assert_array_equal(img.values, data)
    assert isinstance(open_image(p, lazy=False).data, np.ndarray)


def test_list_images_shows_every_series_of_a_multi_image_ome_tiff(tmp_path):
    """Two images written by tifffile into one OME-TIFF: one row each, opened by series=."""
    path = tmp_path / "two.ome.tif"
    a = np.arange(40 * 30, dtype=np.uint16).reshape(40, 30)
    b = np.ones((3, 20, 50), dtype=np.uint8)
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(a, metadata={"axes": "YX", "PhysicalSizeX": 0.1, "PhysicalSizeY": 0.1})
        tw.write(b, metadata={"axes": "CYX", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25})
    table = list_images(path)
    assert len(table) == 2
    assert table["sizes"].tolist() == ["y 40, x 30", "c 3, y 20, x 50"]
    assert table["pixel_size_x_um"].tolist() == pytest.approx([0.1, 0.25])
    second = open_image(path, series=1)
    assert second.sizes == {"c": 3, "y": 20, "x": 50} and second.clem.pixel_size["x"] == pytest.approx(0.25)

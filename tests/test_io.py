"""clemlab.io: format dispatch, plain pictures, overrides and bad input (each message checked)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tifffile

from clemlab.errors import FileFormatError, ImageError, MissingPixelSizeError, UnitError
from clemlab.image import as_image
from clemlab.io import detect_format, open_image, write_ome_tiff

PNG_DIR = "deepclem/example_unregistered"


def test_import_is_light():
    code = (
        "import clemlab.io, sys; "
        "bad = [m for m in ('rsciio', 'matplotlib', 'mrcfile', 'PIL') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- dispatch on content -------------------------------------------------------------------
def test_detect_format_by_content_not_suffix(tmp_path, shared_data):
    tif = tmp_path / "actually_a_tiff.png"
    tifffile.imwrite(tif, np.zeros((4, 4), np.uint8), resolution=(10, 10), resolutionunit="CENTIMETER")
    assert detect_format(tif) == "tiff"
    img = open_image(tif)
    assert img.clem.pixel_size == pytest.approx({"y": 1000.0, "x": 1000.0})
    assert detect_format(shared_data("mrcfile-emdb-maps/emd_3197.map.gz")) == "mrc"
    assert detect_format(shared_data("rosettasciio-calibrated/test_dm_image_um_unit.dm3")) == "dm"
    assert detect_format(shared_data(f"{PNG_DIR}/EM.png")) == "plain"


# --- plain pictures --------------------------------------------------------------------------
def test_png_needs_pixel_size(shared_data):
    p = shared_data(f"{PNG_DIR}/EM.png")
    with pytest.raises(MissingPixelSizeError, match="pixel_size=") as info:
        open_image(p)
    assert str(p) in str(info.value)


def test_png_rgb_with_pixel_size(shared_data):
    img = open_image(shared_data(f"{PNG_DIR}/EM.png"), pixel_size=10, units="nm", modality="EM")
    assert img.dims == ("c", "y", "x")
    assert img.shape == (3, 530, 1002)  # README: 1002 x 530 (w x h), RGB
    assert list(img.c.values) == ["R", "G", "B"]
    assert img.clem.pixel_size == pytest.approx({"y": 0.01, "x": 0.01})
    assert img.attrs["modality"] == "EM" and img.attrs["frame"] == "EM"
    lm = open_image(shared_data(f"{PNG_DIR}/Chromatin.png"), pixel_size=0.1)
    assert lm.shape == (3, 1024, 1280)


def test_grayscale_png_with_alpha_is_2d(tmp_path):
    from PIL import Image

    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    Image.fromarray(arr, "L").convert("LA").save(tmp_path / "g.png")
    img = open_image(tmp_path / "g.png", pixel_size=(2.0, 1.0))
    assert img.dims == ("y", "x")
    np.testing.assert_array_equal(img.values, arr)
    assert img.clem.pixel_size == {"y": 2.0, "x": 1.0}


def test_jpeg_and_rgba_png(tmp_path):
    from PIL import Image

    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 7
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = open_image(tmp_path / "a.png", pixel_size=1)
    assert img.shape == (3, 5, 6) and int(img.sel(c="R").max()) == 200
    Image.fromarray(rgba[..., :3], "RGB").save(tmp_path / "a.jpg")
    assert open_image(tmp_path / "a.jpg", pixel_size=1).dims == ("c", "y", "x")


# --- overrides -------------------------------------------------------------------------------
def _tiff(tmp_path, name="a.tif", shape=(6, 8)):
    p = tmp_path / name
    tifffile.imwrite(p, np.arange(np.prod(shape), dtype=np.uint16).reshape(shape), resolution=(1e4, 1e4), resolutionunit="CENTIMETER")
    return p


def test_pixel_size_argument_overrides_file(tmp_path):
    p = _tiff(tmp_path)
    assert open_image(p).clem.pixel_size == pytest.approx({"y": 1.0, "x": 1.0})
    img = open_image(p, pixel_size={"y": 30, "x": 20}, units="nm", origin=(5, 7))
    assert img.clem.pixel_size == pytest.approx({"y": 0.03, "x": 0.02})
    assert img.clem.origin == pytest.approx({"y": 0.005, "x": 0.007})
    assert img.attrs["pixel_size_source"] == "pixel_size= argument"


def test_channels_modality_frame_arguments(tmp_path):
    p = tmp_path / "rgb.tif"
    tifffile.imwrite(p, np.zeros((4, 5, 3), np.uint8), photometric="rgb")
    img = open_image(p, pixel_size=1, channels=["a", "b", "c"], modality="LM", frame="stage")
    assert list(img.c.values) == ["a", "b", "c"]
    assert img.attrs["modality"] == "LM" and img.attrs["frame"] == "stage"


# --- bad input: every message checked ------------------------------------------------------
def test_missing_file_names_path(tmp_path):
    p = tmp_path / "nope.tif"
    with pytest.raises(FileFormatError, match="no such file") as info:
        open_image(p)
    assert str(p) in str(info.value)
    assert isinstance(info.value, OSError)


def test_directory_is_refused(tmp_path):
    with pytest.raises(FileFormatError, match="is a directory") as info:
        open_image(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_text_file_named_tif(tmp_path):
    p = tmp_path / "x.tif"
    p.write_text("hello, I am not an image\n")
    with pytest.raises(FileFormatError, match="not in a format clemlab can read") as info:
        open_image(p)
    msg = str(info.value)
    assert str(p) in msg and "named like a TIFF" in msg and "Supported" in msg


def test_empty_file(tmp_path):
    p = tmp_path / "empty.mrc"
    p.write_bytes(b"")
    with pytest.raises(FileFormatError, match="is empty") as info:
        open_image(p)
    assert str(p) in str(info.value)


def test_truncated_tiff(tmp_path):
    p = tmp_path / "t.tif"
    tifffile.imwrite(p, np.arange(200 * 300, dtype=np.uint16).reshape(200, 300), resolution=(1e4, 1e4), resolutionunit="CENTIMETER")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(FileFormatError, match="truncated or corrupt") as info:
        open_image(p)
    assert str(p) in str(info.value)


def test_truncated_tiff_header(tmp_path):
    p = tmp_path / "t2.tif"
    tifffile.imwrite(p, np.zeros((20, 30), np.uint8))
    p.write_bytes(p.read_bytes()[:6])
    with pytest.raises(FileFormatError) as info:
        open_image(p)
    assert str(p) in str(info.value)


def test_tiff_without_pixel_size(tmp_path):
    p = tmp_path / "plain.tif"
    tifffile.imwrite(p, np.zeros((4, 5), np.uint8))
    with pytest.raises(MissingPixelSizeError, match=r"pixel_size=") as info:
        open_image(p)
    assert str(p) in str(info.value)


@pytest.mark.parametrize("bad", [-1.0, 0, float("nan"), float("inf"), "abc"])
def test_bad_pixel_size_argument(tmp_path, bad):
    p = _tiff(tmp_path)
    with pytest.raises(ImageError, match=r"pixel_size=") as info:
        open_image(p, pixel_size=bad)
    assert str(p) in str(info.value)


def test_wrong_number_of_pixel_sizes(tmp_path):
    p = _tiff(tmp_path)
    with pytest.raises(ImageError, match=r"pixel_size= has 3 values") as info:
        open_image(p, pixel_size=(1, 2, 3))
    assert str(p) in str(info.value)


def test_bad_origin_argument(tmp_path):
    p = _tiff(tmp_path)
    with pytest.raises(ImageError, match=r"origin= must be a finite number"):
        open_image(p, origin=float("nan"))


def test_unknown_unit_lists_known_units(tmp_path):
    p = _tiff(tmp_path)
    with pytest.raises(UnitError, match="unknown length unit 'furlong'") as info:
        open_image(p, pixel_size=1, units="furlong")
    msg = str(info.value)
    assert "nm" in msg and "µm" in msg and str(p) in msg


def test_bad_series_lists_series(tmp_path):
    p = _tiff(tmp_path)
    with pytest.raises(ImageError, match="series=5 does not exist") as info:
        open_image(p, series=5)
    assert str(p) in str(info.value)


def test_write_refuses_non_image(tmp_path):
    with pytest.raises(ImageError, match="image"):
        write_ome_tiff(np.zeros((3, 3)), tmp_path / "x.ome.tif")
    img = as_image(np.zeros((3, 3)), pixel_size=1)
    with pytest.raises(FileFormatError, match="does not exist"):
        write_ome_tiff(img, tmp_path / "no" / "dir" / "x.ome.tif")

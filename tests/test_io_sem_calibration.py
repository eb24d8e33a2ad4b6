"""SEM calibrations read from files written here in the instruments' documented layouts.

- JEOL: the image TIFF carries no calibration (screen-default 96 dpi); the side-car
  ``<name>.txt`` holds ``$KEY value`` lines. ``$CM_FIELD_OF_VIEW`` gives the scanned field
  (width and height with units); without it, the magnification ``$CM_MAG`` gives a nominal
  size (JEOL: 128 mm field of view at magnification 1).
- OpenFIBSEM / fibsem-os: ``FibsemImage.save`` calls ``tifffile.imwrite(path, data,
  metadata=FibsemImageMetadata.to_dict())``: JSON in the ImageDescription with ``pixel_size``
  ``{"x", "y"}`` in metres and the stage position in ``microscope_state.stage_position`` (m).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

import clemlab
from clemlab.errors import MissingPixelSizeError
from clemlab.io import open_image


def _jeol(tmp_path, lines, shape=(960, 1280), name="jeol", encoding="latin-1"):
    p = tmp_path / f"{name}.tif"
    tifffile.imwrite(p, np.zeros(shape, np.uint8), resolution=(96, 96), resolutionunit="INCH")
    p.with_suffix(".txt").write_text("$CM_FORMAT JEOL-SEM\n" + "\n".join(lines) + "\n", encoding=encoding)
    return p


@pytest.mark.parametrize("encoding", ["latin-1", "utf-8"])
def test_jeol_field_of_view(tmp_path, encoding):
    p = _jeol(tmp_path, ["$CM_FULL_SIZE 1280 960", "$CM_MAG 5000", "$CM_FIELD_OF_VIEW 25.4µm 19.05µm"],
              encoding=encoding)
    img = open_image(p)
    assert img.clem.pixel_size == pytest.approx({"x": 25.4 / 1280, "y": 19.05 / 960})
    assert "$CM_FIELD_OF_VIEW" in img.attrs["pixel_size_source"] and "jeol.txt" in img.attrs["pixel_size_source"]


def test_jeol_field_of_view_with_spaces_and_nm(tmp_path):
    p = _jeol(tmp_path, ["$CM_FIELD_OF_VIEW 2540 nm 1905 nm"])
    assert open_image(p).clem.pixel_size == pytest.approx({"x": 2.54 / 1280, "y": 1.905 / 960})


def test_jeol_field_of_view_wins_over_micron_bar(tmp_path):
    # the micron bar is a rounded marker; the field of view is the exact scanned width
    p = _jeol(tmp_path, ["$CM_FULL_SIZE 1280 960", "$$SM_MICRON_BAR 160", "$$SM_MICRON_MARKER 5um",
                         "$CM_FIELD_OF_VIEW 25.6µm 19.2µm"])
    assert open_image(p).clem.pixel_size["x"] == pytest.approx(0.02)


def test_jeol_nominal_from_magnification(tmp_path):
    # no field of view and no micron bar: 128 mm / 5000 / 1280 px = 0.02 µm, said to be nominal
    p = _jeol(tmp_path, ["$CM_FULL_SIZE 1280 960", "$CM_MAG 5000"])
    img = open_image(p)
    assert img.clem.pixel_size == pytest.approx({"x": 128_000 / 5000 / 1280, "y": 128_000 / 5000 / 1280})
    source = img.attrs["pixel_size_source"]
    assert "nominal" in source and "$CM_MAG 5000" in source


def test_jeol_magnification_uses_the_saved_width(tmp_path):
    # a 640-px image of the same 25.6-µm field: twice the pixel size
    p = _jeol(tmp_path, ["$CM_MAG 5000"], shape=(480, 640))
    assert open_image(p).clem.pixel_size["x"] == pytest.approx(0.04)


def test_jeol_without_any_calibration_is_refused(tmp_path):
    p = _jeol(tmp_path, ["$CM_FULL_SIZE 1280 960", "$CM_TITLE sample"])
    with pytest.raises(MissingPixelSizeError, match=r"\$CM_FIELD_OF_VIEW.*\$CM_MAG"):
        open_image(p)


def _fibsem_metadata(pixel_m=4.2e-9, beam="ELECTRON"):
    # the layout of FibsemImageMetadata.to_dict() (fibsem-os, metadata v6)
    return {
        "image": {"resolution": [64, 48], "dwell_time": 1e-6, "hfw": 64 * pixel_m, "beam_type": beam,
                  "autocontrast": False, "save": True, "filename": "ref_image", "path": "/data"},
        "version": "v6",
        "pixel_size": {"x": pixel_m, "y": pixel_m},
        "microscope_state": {
            "timestamp": 1700000000.0,
            "stage_position": {"name": None, "x": 1.5e-3, "y": -2.25e-4, "z": 3.9e-3, "r": 0.855, "t": 0.3054,
                               "coordinate_system": "RAW"},
            "electron_beam": None, "ion_beam": None, "electron_detector": None, "ion_detector": None,
        },
        "user": {}, "experiment": {}, "system_info": {}, "hardware_geometry": {},
    }


def test_fibsem_json_description(tmp_path):
    p = tmp_path / "ref_image.tif"
    tifffile.imwrite(p, np.zeros((48, 64), np.uint8), metadata=_fibsem_metadata())
    description = json.loads(tifffile.TiffFile(p).pages[0].description)
    assert description["pixel_size"] == {"x": 4.2e-9, "y": 4.2e-9}  # the layout really is JSON
    img = open_image(p)
    assert img.clem.pixel_size == pytest.approx({"y": 0.0042, "x": 0.0042})
    assert img.attrs["pixel_size_source"] == "OpenFIBSEM metadata pixel_size (m)"
    assert img.attrs["beam_type"] == "ELECTRON"
    stage = img.attrs["stage_position"]
    assert stage["x"] == pytest.approx(1500.0) and stage["y"] == pytest.approx(-225.0)
    assert stage["z"] == pytest.approx(3900.0) and stage["units"] == "µm"


def test_fibsem_without_pixel_size_is_refused(tmp_path):
    md = _fibsem_metadata()
    md["pixel_size"] = {"x": 0.0, "y": 0.0}
    p = tmp_path / "blank.tif"
    tifffile.imwrite(p, np.zeros((48, 64), np.uint8), metadata=md)
    with pytest.raises(MissingPixelSizeError, match="OpenFIBSEM metadata has no positive pixel_size"):
        open_image(p)


def test_every_reader_records_the_pixel_size_source(tmp_path):
    plain = tmp_path / "res.tif"
    tifffile.imwrite(plain, np.zeros((4, 4), np.uint8), resolution=(1e4, 1e4), resolutionunit="CENTIMETER")
    assert open_image(plain).attrs["pixel_size_source"] == "TIFF resolution tags"
    assert open_image(plain, pixel_size=2).attrs["pixel_size_source"] == "pixel_size= argument"
    table = clemlab.list_images(plain)
    assert table.iloc[0]["pixel_size_source"] == "TIFF resolution tags"
    assert table.iloc[0]["pixel_size_x_um"] == pytest.approx(1.0)


# --- stage positions kept from TIFFs that record them -----------------------------------------
def test_fei_stage_position_in_micrometres(shared_data, tmp_path):
    import zipfile

    with zipfile.ZipFile(shared_data("rosettasciio-calibrated/tiff_FEI_Helios.zip")) as z:
        z.extract("FEI-Helios-Ebeam-8bits.tif", tmp_path)
    img = open_image(tmp_path / "FEI-Helios-Ebeam-8bits.tif")
    stage = img.attrs["stage_position"]
    # [Stage] StageX=2.576e-05 StageY=-0.000194177 StageZ=0.007965 (metres)
    assert stage["x"] == pytest.approx(25.76) and stage["y"] == pytest.approx(-194.177)
    assert stage["z"] == pytest.approx(7965.0) and stage["source"].startswith("FEI [Stage]")


def test_ome_plane_position_is_kept_as_stage_position(tmp_path):
    p = tmp_path / "plane.ome.tif"
    tifffile.imwrite(
        p, np.zeros((8, 8), np.uint8), ome=True,
        metadata={"axes": "YX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5,
                  "Plane": {"PositionX": [1.5], "PositionXUnit": ["mm"], "PositionY": [-20.0], "PositionYUnit": ["µm"]}},
    )
    img = open_image(p)
    assert img.attrs["stage_position"]["x"] == pytest.approx(1500.0)
    assert img.attrs["stage_position"]["y"] == pytest.approx(-20.0)
    assert img.attrs["stage_position"]["source"] == "OME-XML Plane PositionX/Y/Z"
    assert float(img.coords["x"][0]) == pytest.approx(1500.0)  # the plane position is also the origin


def test_info_and_list_images_of_an_uncalibrated_tiff(tmp_path):
    from clemlab.io.info import info

    p = tmp_path / "bare.tif"
    tifffile.imwrite(p, np.zeros((5, 7), np.uint16))
    row = clemlab.list_images(p).iloc[0]
    assert row["pixel_size_source"] == "none" and np.isnan(row["pixel_size_x_um"]) and row["sizes"] == "y 5, x 7"
    assert "pixel size: none" in info(p)
    jeol = _jeol(tmp_path, ["$CM_MAG 5000"])
    assert "pixel size from: JEOL side-car jeol.txt: nominal, from $CM_MAG 5000" in info(jeol)

"""The image model: as_image, validation, unit normalisation, the .clem accessor."""

from __future__ import annotations

import subprocess
import sys

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import clemlab as cl
from clemlab import transforms as T
from clemlab.errors import ImageError, MissingPixelSizeError, UnitError
from clemlab.image import normalize_unit, unit_to_um


@pytest.mark.parametrize(
    "unit, factor",
    [("um", 1), ("micron", 1), ("µm", 1), ("\u00b5m", 1), ("\u03bcm", 1), ("Micron", 1),
     ("nm", 1e-3), ("Å", 1e-4), ("\u212b", 1e-4), ("A", 1e-4), ("angstrom", 1e-4), ("mm", 1e3),
     ("cm", 1e4), ("m", 1e6), ("inch", 25400)],
)
def test_units_normalised_to_um(unit, factor):
    assert unit_to_um(unit) == pytest.approx(factor, rel=1e-15)


def test_unknown_unit_lists_known_ones():
    with pytest.raises(UnitError, match=r"unknown length unit 'furlong'.*µm.*nm.*Å"):
        normalize_unit("furlong")
    with pytest.raises(UnitError, match="unknown length unit"):
        cl.as_image(np.zeros((3, 3)), pixel_size=1, units="parsec")


def test_as_image_coords_in_um_pixel_centres():
    img = cl.as_image(np.zeros((4, 5), np.uint8), pixel_size=(20, 10), origin=(100, 50), units="nm",
                      modality="EM")
    assert img.dims == ("y", "x")
    np.testing.assert_allclose(img.x.values, 0.05 + 0.01 * np.arange(5))
    np.testing.assert_allclose(img.y.values, 0.1 + 0.02 * np.arange(4))
    assert img.x.attrs["units"] == "µm" and img.x.dtype == np.float64
    assert img.clem.pixel_size == pytest.approx({"y": 0.02, "x": 0.01})  # non-square stays
    assert img.clem.origin == pytest.approx({"y": 0.1, "x": 0.05})
    assert img.attrs["modality"] == "EM" and img.clem.frame == "EM"
    # extent is pixel edges
    assert img.clem.extent["x"] == pytest.approx((0.045, 0.095))
    assert img.clem.mpl_extent == pytest.approx((0.045, 0.095, 0.17, 0.09))
    assert cl.is_image(img)


def test_default_origin_is_first_pixel_centre_at_zero():
    img = cl.as_image(np.zeros((3, 3)), pixel_size=0.5)
    assert float(img.x[0]) == 0.0 and float(img.y[2]) == 1.0


def test_channels_and_stack_dims():
    img = cl.as_image(np.zeros((2, 3, 4, 5)), pixel_size={"z": 0.3, "y": 0.1, "x": 0.1},
                      channels=["GFP", "beads"], colors={"GFP": "#00ff00"})
    assert img.dims == ("c", "z", "y", "x")
    assert list(img.c.values) == ["GFP", "beads"]
    assert img.clem.ndim == 3 and img.clem.pixel_size["z"] == pytest.approx(0.3)
    assert img.attrs["colors"] == {"GFP": "#00ff00"}
    assert cl.as_image(np.zeros((2, 4, 5)), pixel_size=1, channels=["a", "b"]).dims == ("c", "y", "x")
    assert cl.as_image(np.zeros((2, 4, 5)), pixel_size=1).dims == ("z", "y", "x")


def test_to_pixel_to_physical_round_trip_and_order():
    img = cl.as_image(np.zeros((10, 20, 30)), pixel_size=(0.2, 0.05, 0.01), origin=(1, 2, 3))
    pts = np.array([[3.01, 2.05, 1.2], [3.29, 2.95, 2.8]])  # (x, y, z)
    pix = img.clem.to_pixel(pts)
    np.testing.assert_allclose(pix[0], [1, 1, 1], atol=1e-9)
    np.testing.assert_allclose(img.clem.to_physical(pix), pts, atol=1e-12)
    # pixel (x=1, y=1, z=1) is array element [1, 1, 1]: x coord matches
    assert float(img.x[1]) == pytest.approx(3.01)


def test_accessor_is_stateless_after_slicing():
    img = cl.as_image(np.zeros((10, 10)), pixel_size=0.1)
    sub = img.isel(x=slice(4, None, 2))
    assert sub.clem.pixel_size["x"] == pytest.approx(0.2)
    assert sub.clem.origin["x"] == pytest.approx(0.4)


def test_dask_stays_lazy():
    data = da.zeros((2048, 2048), chunks=512, dtype=np.uint16)
    img = cl.as_image(data, pixel_size=0.01)
    assert isinstance(img.data, da.Array)


def test_transforms_in_attrs():
    img = cl.as_image(np.zeros((3, 3)), pixel_size=1, modality="LM")
    tf = T.Similarity(2.0, 0.1, [1, 2], source_frame="LM", target_frame="EM")
    img2 = img.clem.with_transform("EM", tf)
    assert "EM" not in img.attrs["clem:transforms"]  # with_transform returns a copy
    assert img2.clem.transform_to("EM") == tf
    assert isinstance(img2.attrs["clem:transforms"]["EM"], dict)  # plain JSON-able attrs
    assert isinstance(img2.clem.transform_to("LM"), T.Identity)
    with pytest.raises(ImageError, match="no transform to frame 'stage'.*with_transform"):
        img2.clem.transform_to("stage")
    with pytest.raises(ImageError, match="3-D transform"):
        img.clem.with_transform("EM", T.Affine(matrix=np.eye(4)))


@pytest.mark.parametrize("bad", [0, -1, np.nan, np.inf, "abc"])
def test_bad_pixel_size_named(bad):
    with pytest.raises(ImageError, match=r"pixel_size( for '(x|y)')? must be"):
        cl.as_image(np.zeros((3, 3)), pixel_size=bad)


def test_missing_pixel_size_says_how():
    with pytest.raises(MissingPixelSizeError, match="pass pixel_size="):
        cl.as_image(np.zeros((3, 3)))


@pytest.mark.parametrize(
    "shape, dims, message",
    [
        ((3, 3), ("x", "y"), r"order \('c', 'z', 'y', 'x'\).*transpose"),
        ((3, 3), ("y", "t"), "distinct names from"),
        ((3, 3, 3), ("z", "y"), "name 2 axes but the data has 3"),
        ((3, 3, 3), ("c", "z", "y"), "must include 'y' and 'x'"),
        ((2, 2, 2, 2, 2), None, "2 to 4 dims"),
        ((0, 3), None, "empty"),
    ],
)
def test_wrong_dims(shape, dims, message):
    with pytest.raises(ImageError, match=message):
        cl.as_image(np.zeros(shape), pixel_size=1, dims=dims)


def test_check_image_rejects_non_images():
    with pytest.raises(ImageError, match="expected an xarray.DataArray"):
        cl.check_image(np.zeros((3, 3)))
    plain = xr.DataArray(np.zeros((3, 3)), dims=("y", "x"))
    with pytest.raises(ImageError, match="has no coordinate"):
        cl.check_image(plain, "em")
    bad = cl.as_image(np.zeros((3, 3)), pixel_size=1).assign_coords(x=[0.0, 1.0, 5.0])
    assert not cl.is_image(bad)
    with pytest.raises(ImageError, match="not uniformly increasing"):
        cl.check_image(bad)
    with pytest.raises(ImageError, match="must be numeric"):
        cl.as_image(np.array([["a", "b"], ["c", "d"]]), pixel_size=1)


def test_import_is_light():
    code = (
        "import sys, clemlab\n"
        "heavy = [m for m in ('matplotlib', 'ipywidgets', 'distributed', 'rsciio', 'tifffile', 'mrcfile', 'ipympl', 'cv2', 'zarr', 'skimage', 'scipy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "clemlab.Affine; clemlab.Landmarks\n"
        "assert 'matplotlib' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

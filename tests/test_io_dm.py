"""clemlab.io.dm: Gatan DM3/DM4 through rosettasciio (shared data)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from clemlab.errors import ImageError, MissingPixelSizeError
from clemlab.io import open_image

RS = "rosettasciio-calibrated"
TEM_UM = 0.16867469251155853


def test_dm3_pixel_size_and_origin(shared_data):
    img = open_image(shared_data(f"{RS}/test_dm_image_um_unit.dm3"))
    assert img.dims == ("y", "x") and img.shape == (68, 68)
    assert img.clem.pixel_size == pytest.approx({"y": 0.16867, "x": 0.16867}, abs=1e-5)
    # DM Origin = -828 (x) / -760 (y) px; calibrated = (index - Origin) * scale
    assert img.clem.origin == pytest.approx({"x": 828 * TEM_UM, "y": 760 * TEM_UM})


def test_dm3_origin_follows_pixel_size_override(shared_data):
    img = open_image(shared_data(f"{RS}/test_dm_image_um_unit.dm3"), pixel_size=0.2)
    assert img.clem.origin == pytest.approx({"x": 828 * 0.2, "y": 760 * 0.2})


def test_dm3_lazy(shared_data):
    img = open_image(shared_data(f"{RS}/test_dm_image_um_unit.dm3"), lazy=True)
    assert isinstance(img.data, da.Array)
    eager = open_image(shared_data(f"{RS}/test_dm_image_um_unit.dm3"))
    np.testing.assert_array_equal(img.values, eager.values)


def test_stem_image_nm(shared_data):
    img = open_image(shared_data(f"{RS}/test_STEM_image.dm3"))
    assert img.clem.pixel_size["x"] == pytest.approx(0.24853801727294922e-3)


def test_diffraction_pattern_is_not_real_space(shared_data):
    p = shared_data(f"{RS}/test_diffraction_pattern.dm3")
    with pytest.raises(MissingPixelSizeError, match="diffraction pattern") as info:
        open_image(p)
    msg = str(info.value)
    assert "reciprocal" in msg and "1/nm" in msg and "pixel_size=" in msg and str(p) in msg
    img = open_image(p, pixel_size=1.0)
    assert img.attrs["reciprocal_calibration"]["units"] == "1/nm"


_REAL = {1: "int16", 2: "float32", 6: "uint8", 7: "int32", 9: "int8", 10: "uint16", 11: "uint32", 12: "float64", 14: "uint8"}


@pytest.mark.parametrize("ext", ["dm3", "dm4"])
@pytest.mark.parametrize("k", sorted(_REAL))
def test_dm_dtypes_real(shared_data, ext, k):
    p = shared_data(f"{RS}/dm_dtypes_2x2/test-{k}.{ext}")
    with pytest.raises(MissingPixelSizeError, match="no units"):
        open_image(p)
    img = open_image(p, pixel_size=1)
    assert img.dims == ("y", "x") and img.dtype == np.dtype(_REAL[k])
    expected = [[1, 1], [1, 1]] if k == 14 else [[1, 2], [3, 4]]
    np.testing.assert_array_equal(img.values, expected)


@pytest.mark.parametrize("name", ["test-8.dm3", "test-8.dm4", "test-23.dm3", "test-23.dm4"])
def test_dm_rgb(shared_data, name):
    img = open_image(shared_data(f"{RS}/dm_dtypes_2x2/{name}"), pixel_size=1)
    assert img.dims == ("c", "y", "x") and list(img.c.values) == ["R", "G", "B"]
    for c in "RGB":
        np.testing.assert_array_equal(img.sel(c=c).values, [[1, 2], [3, 4]])


@pytest.mark.parametrize("name", ["test-3.dm3", "test-5.dm3", "test-13.dm3", "test-3.dm4", "test-5.dm4", "test-13.dm4", "test-27.dm4", "test-28.dm4"])
def test_dm_complex_refused(shared_data, name):
    p = shared_data(f"{RS}/dm_dtypes_2x2/{name}")
    with pytest.raises(ImageError, match="complex") as info:
        open_image(p, pixel_size=1)
    assert "abs()" in str(info.value) and str(p) in str(info.value)

"""clemlab.io.mrc: EMDB maps (shared data) and synthetic MRC files written with mrcfile."""

from __future__ import annotations

import gzip
import shutil

import dask.array as da
import mrcfile
import numpy as np
import pytest

from clemlab.errors import FileFormatError, ImageError, MissingPixelSizeError
from clemlab.io import open_image

EMDB = "mrcfile-emdb-maps"


@pytest.mark.parametrize("name", ["EMD-3197.map", "emd_3197.map.gz"])
def test_emd_3197_voxel_size_and_origin(shared_data, name):
    img = open_image(shared_data(f"{EMDB}/{name}"))
    assert img.dims == ("z", "y", "x") and img.shape == (20, 20, 20)
    assert img.clem.pixel_size == pytest.approx({"z": 0.00114, "y": 0.00114, "x": 0.00114})  # 11.4 Å
    # header origin is 0, nxstart = -2 -> first voxel centre at x = -2 * 11.4 Å
    assert img.clem.origin == pytest.approx({"z": 0.0, "y": 0.0, "x": -0.00228})
    with mrcfile.open(shared_data(f"{EMDB}/EMD-3197.map")) as m:
        np.testing.assert_array_equal(img.values, m.data)


def test_emd_3001_non_orthogonal_is_refused(shared_data):
    p = shared_data(f"{EMDB}/EMD-3001.map")
    with pytest.raises(ImageError, match="non-orthogonal unit cell") as info:
        open_image(p)
    msg = str(info.value)
    assert "94.326" in msg and str(p) in msg and "resample" in msg


def test_lazy_mrc_is_memmapped_dask(shared_data):
    img = open_image(shared_data(f"{EMDB}/EMD-3197.map"), lazy=True)
    assert isinstance(img.data, da.Array)
    eager = open_image(shared_data(f"{EMDB}/EMD-3197.map"))
    np.testing.assert_array_equal(img.values, eager.values)
    img = open_image(shared_data(f"{EMDB}/EMD-3197.map"), chunks=(5, 20, 20))
    assert img.data.chunksize == (5, 20, 20)


def test_lazy_mrc_reads_no_voxels_until_computed(tmp_path):
    # opening lazily maps the file: nothing of the volume's size is allocated until a region
    # is computed, and a region read is that region of the file
    import pickle
    import tracemalloc

    vol = np.arange(8 * 512 * 512, dtype=np.float32).reshape(8, 512, 512)  # 8 MiB
    path = _write(tmp_path / "vol.mrc", vol, voxel_size=2.0)
    tracemalloc.start()
    try:
        img = open_image(path, lazy=True, chunks=(1, 256, 256))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < vol.nbytes / 8, f"opening allocated {peak / 2**20:.1f} MiB"
    np.testing.assert_array_equal(img.isel(z=3, y=slice(100, 300)).values, vol[3, 100:300])
    again = pickle.loads(pickle.dumps(img.data))  # as a dask.distributed worker receives it
    assert len(pickle.dumps(img.data)) < vol.nbytes / 8
    np.testing.assert_array_equal(again[5].compute(), vol[5])


def _write(path, data, voxel_size=None, **header):
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
        if header.pop("stack", False):
            m.set_image_stack()  # before voxel_size: it sets mz = 1
        if voxel_size is not None:
            m.voxel_size = voxel_size
        for k, v in header.items():
            if k == "origin":
                m.header.origin = v
            else:
                setattr(m.header, k, v)
    return path


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.float32, np.uint16, np.float16])
def test_mrc_modes(tmp_path, dtype):
    data = (np.arange(2 * 3 * 4) % 50).astype(dtype).reshape(2, 3, 4)
    p = _write(tmp_path / "m.mrc", data, voxel_size=(2.0, 3.0, 4.0))
    img = open_image(p)
    assert img.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(img.values, data)
    # mrcfile voxel_size is (x, y, z) in Å
    assert img.clem.pixel_size == pytest.approx({"z": 4e-4, "y": 3e-4, "x": 2e-4})


def test_mrc_header_origin_wins(tmp_path):
    data = np.zeros((3, 4, 5), np.float32)
    p = _write(tmp_path / "o.mrc", data, voxel_size=10.0, origin=(100.0, 200.0, 300.0), nxstart=7)
    img = open_image(p)
    assert img.clem.origin == pytest.approx({"z": 0.03, "y": 0.02, "x": 0.01})
    assert img.attrs["origin_source"] == "MRC header origin"


def test_mrc_nstart_origin_follows_pixel_size_override(tmp_path):
    p = _write(tmp_path / "s.mrc", np.zeros((3, 4, 5), np.float32), voxel_size=10.0, nxstart=-4, nystart=2)
    img = open_image(p)
    assert img.clem.origin == pytest.approx({"z": 0.0, "y": 2e-3, "x": -4e-3})
    img = open_image(p, pixel_size=1, units="nm")
    assert img.clem.origin == pytest.approx({"z": 0.0, "y": 2e-3, "x": -4e-3})
    assert img.clem.pixel_size["x"] == pytest.approx(1e-3)


def test_single_section_is_2d(tmp_path):
    data = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    p = _write(tmp_path / "one.mrc", data, voxel_size=5.0)
    img = open_image(p)
    assert img.dims == ("y", "x") and img.shape == (3, 4)


def test_image_stack(tmp_path):
    data = np.random.default_rng(0).random((4, 6, 7)).astype(np.float32)
    p = _write(tmp_path / "tilt.st", data, voxel_size=(8.0, 8.0, 8.0), stack=True)
    img = open_image(p)
    assert img.dims == ("z", "y", "x") and img.shape == (4, 6, 7)
    assert img.attrs["mrc_image_stack"] is True
    assert img.clem.pixel_size == pytest.approx({"z": 8e-4, "y": 8e-4, "x": 8e-4})


def test_permuted_axes_are_transposed(tmp_path):
    # file columns run along z, rows along x, sections along y: (mapc, mapr, maps) = (3, 1, 2)
    zyx = np.random.default_rng(1).random((5, 3, 4)).astype(np.float32)  # (z, y, x) sizes 5, 3, 4
    file_data = np.transpose(zyx, (1, 2, 0))  # (sections=y, rows=x, cols=z)
    p = tmp_path / "perm.mrc"
    with mrcfile.new(p) as m:
        m.set_data(file_data)
        m.header.mapc, m.header.mapr, m.header.maps = 3, 1, 2
        # cell axes: x has 4 samples of 2 Å, y 3 of 3 Å, z 5 of 4 Å
        m.header.mx, m.header.my, m.header.mz = 4, 3, 5
        m.header.cella = (8.0, 9.0, 20.0)
    img = open_image(p)
    assert img.shape == (5, 3, 4)
    np.testing.assert_array_equal(img.values, zyx)
    assert img.clem.pixel_size == pytest.approx({"z": 4e-4, "y": 3e-4, "x": 2e-4})
    assert "transposed" in img.attrs["mrc_axis_mapping"]


def test_zero_voxel_size_is_uncalibrated(tmp_path):
    p = _write(tmp_path / "u.mrc", np.zeros((2, 3, 4), np.float32))
    with pytest.raises(MissingPixelSizeError, match="zero voxel size") as info:
        open_image(p)
    assert "pixel_size=" in str(info.value) and str(p) in str(info.value)
    assert open_image(p, pixel_size=1.5, units="nm").clem.pixel_size["z"] == pytest.approx(1.5e-3)


def test_one_angstrom_is_accepted(tmp_path):
    p = _write(tmp_path / "a.mrc", np.zeros((2, 3, 4), np.float32), voxel_size=1.0)
    assert open_image(p).clem.pixel_size["x"] == pytest.approx(1e-4)


def test_complex_mrc_refused(tmp_path):
    p = _write(tmp_path / "c.mrc", np.zeros((2, 3, 4), np.complex64), voxel_size=1.0)
    with pytest.raises(ImageError, match="complex"):
        open_image(p)


def test_truncated_mrc(tmp_path):
    p = _write(tmp_path / "t.mrc", np.zeros((10, 30, 40), np.float32), voxel_size=1.0)
    p.write_bytes(p.read_bytes()[:5000])
    with pytest.raises(FileFormatError, match="truncated") as info:
        open_image(p)
    assert str(p) in str(info.value)


def test_gzipped_mrc(tmp_path):
    src = _write(tmp_path / "g.mrc", np.arange(24, dtype=np.int16).reshape(2, 3, 4), voxel_size=3.0)
    gz = tmp_path / "g.mrc.gz"
    with open(src, "rb") as fi, gzip.open(gz, "wb") as fo:
        shutil.copyfileobj(fi, fo)
    img = open_image(gz, lazy=True)
    assert isinstance(img.data, da.Array)
    np.testing.assert_array_equal(img.values, np.arange(24).reshape(2, 3, 4))

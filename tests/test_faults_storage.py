"""Fault cases of the OME-Zarr store (issue 18, items 9 and 12): an existing path is never
replaced by default, overwrite=True replaces only an OME-Zarr image, and a damaged or missing
chunk raises naming the store and the chunk instead of reading as zeros."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import zarr

import clemlab as cl
from clemlab.errors import FileFormatError


def _image(seed=0, shape=(600, 700)):
    # no zero pixel: a chunk read as fill would show
    return cl.as_image(np.random.default_rng(seed).integers(1, 255, shape, dtype=np.uint8), pixel_size=0.1)


@pytest.fixture
def store(tmp_path):
    """A clemlab store of 600 x 700 px in 64² chunks (shards of 512²: keys 0/c/0/0 ... 0/c/1/1)."""
    img = _image()
    return cl.write_ome_zarr(img, tmp_path / "a.ome.zarr", chunks=64, scale_factors=()), img


def test_existing_store_refused_by_default(store):
    path, img = store
    with pytest.raises(FileExistsError, match=r"a\.ome\.zarr' exists; pass overwrite=True to replace it"):
        cl.write_ome_zarr(_image(1), path)
    np.testing.assert_array_equal(cl.open_image(path).values, img.values)


def test_overwrite_replaces_an_ome_zarr_store(store):
    path, _ = store
    new = _image(2)
    cl.write_ome_zarr(new, path, overwrite=True)
    np.testing.assert_array_equal(cl.open_image(path).values, new.values)


def test_overwrite_never_replaces_an_unrelated_folder(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "notes.txt").write_text("a user's notes")
    with pytest.raises(FileExistsError, match="is not an OME-Zarr image.*never another folder"):
        cl.write_ome_zarr(_image(), folder, overwrite=True)
    assert (folder / "notes.txt").read_text() == "a user's notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # no temporary folder left


def test_overwrite_never_replaces_a_plain_zarr_group(tmp_path):
    path = tmp_path / "data.zarr"
    zarr.open_group(str(path), mode="w").create_array("labels", shape=(4,), dtype="u1")[:] = 7
    with pytest.raises(FileExistsError, match="not an OME-Zarr image"):
        cl.write_ome_zarr(_image(), path, overwrite=True)
    assert zarr.open_group(str(path), mode="r")["labels"][:].tolist() == [7] * 4


def test_overwrite_never_replaces_a_file(tmp_path):
    path = tmp_path / "x.ome.zarr"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="is a file, not an OME-Zarr folder"):
        cl.write_ome_zarr(_image(), path, overwrite=True)
    assert path.read_bytes() == b"precious"


def test_memory_url_not_an_ome_zarr_is_never_replaced():
    import fsspec

    url = "memory://clemlab-faults/other"
    fs = fsspec.filesystem("memory")
    fs.pipe(url + "/table.csv", b"a,b\n1,2\n")
    try:
        with pytest.raises(FileExistsError, match="not an OME-Zarr image"):
            cl.write_ome_zarr(_image(), url, overwrite=True)
        assert fs.cat(url + "/table.csv") == b"a,b\n1,2\n"
    finally:
        fs.rm("/clemlab-faults", recursive=True)


def _damage(path, how):
    shard = path / "0" / "c" / "0" / "1"
    data = shard.read_bytes()
    if how == "truncated":
        shard.write_bytes(data[: len(data) // 2])
    elif how == "zeroed bytes":  # random pixels: Blosc stores them raw, only the checksum sees this
        shard.write_bytes(data[:100] + bytes(200) + data[300:])
    elif how == "missing":
        shard.unlink()
    elif how == "empty":
        shard.write_bytes(b"")


@pytest.mark.parametrize("how", ["truncated", "zeroed bytes"])
def test_damaged_chunk_named(store, how):
    path, _ = store
    _damage(path, how)
    img = cl.open_image(path)  # lazy: opening reads metadata only
    with pytest.raises(FileFormatError, match=r"a\.ome\.zarr': chunk 0/c/0/1 is damaged and cannot be decoded"):
        img.values


@pytest.mark.parametrize("how", ["missing", "empty"])
def test_missing_chunk_of_a_complete_store_named(store, how):
    path, img = store
    _damage(path, how)
    back = cl.open_image(path)
    with pytest.raises(FileFormatError, match=r"chunk 0/c/0/1 is missing or empty, but clemlab wrote this store "
                                              r"complete"):
        back.values
    # the undamaged part still reads
    np.testing.assert_array_equal(back.isel(x=slice(0, 512)).values, img.values[:, :512])


def test_missing_shard_read_in_parts_is_named(tmp_path):
    """A shard larger than a read part (4096 px, read in 2048-px parts): its absence is named
    from every part, and the other shard still reads."""
    data = np.random.default_rng(0).integers(1, 255, (4096, 4608), dtype=np.uint8)
    path = cl.write_ome_zarr(cl.as_image(data, pixel_size=0.01), tmp_path / "b.ome.zarr", scale_factors=[])
    (path / "0" / "c" / "0" / "0").unlink()
    back = cl.open_image(path)
    for region in ((slice(0, 2048), slice(0, 2048)), (slice(2048, 4096), slice(2048, 4096))):
        with pytest.raises(FileFormatError, match=r"chunk 0/c/0/0 is missing or empty"):
            back.isel(y=region[0], x=region[1]).values
    np.testing.assert_array_equal(back.isel(x=slice(4096, 4608)).values, data[:, 4096:])


def test_missing_chunk_of_a_store_not_marked_complete_reads_as_fill(store):
    """zarr's rule for stores clemlab did not vouch for: an absent chunk is the fill value."""
    path, img = store
    group = zarr.open_group(str(path), mode="r+")
    group.attrs.update({"clemlab": {**group.attrs["clemlab"], "complete": False}})
    _damage(path, "missing")
    back = cl.open_image(path).values
    assert (back[:512, 512:] == 0).all()
    np.testing.assert_array_equal(back[:, :512], img.values[:, :512])


def test_copied_store_stays_readable(store, tmp_path):
    path, img = store
    copy = tmp_path / "copy.ome.zarr"
    shutil.copytree(path, copy)
    np.testing.assert_array_equal(cl.open_image(copy).values, img.values)

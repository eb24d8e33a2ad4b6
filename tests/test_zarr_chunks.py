"""Direct whole-chunk zarr v2 I/O (clemlab/io/_zarr_chunks.py) against zarr-python itself."""

import os
import pickle

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from numcodecs import Blosc, Zstd

from clemlab.io._zarr_chunks import ChunkWriter, read_dask, v2_layout


def _files(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            if not n.startswith(".z"):
                p = os.path.join(dirpath, n)
                out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


def _make(path, shape, chunks, dtype, compressor, sep="/"):
    return zarr.create_array(str(path), shape=shape, chunks=chunks, dtype=dtype, zarr_format=2, fill_value=0,
                             chunk_key_encoding={"name": "v2", "separator": sep}, compressors=compressor,
                             config={"write_empty_chunks": True}, overwrite=True)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("sep", ["/", "."])
@pytest.mark.parametrize("compressor", [Blosc("lz4", 5, Blosc.SHUFFLE), Zstd(1), None], ids=["blosc", "zstd", "raw"])
def test_writer_bytes_equal_zarr_and_read_back(tmp_path, dtype, sep, compressor):
    rng = np.random.default_rng(3)
    shape, chunks = (50, 70), (16, 32)  # far-edge chunks are short in both dims
    data = (rng.random(shape) * 1000).astype(dtype)
    ref = _make(tmp_path / "ref", shape, chunks, dtype, compressor, sep)
    ref[...] = data
    _make(tmp_path / "mine", shape, chunks, dtype, compressor, sep)
    layout = v2_layout(tmp_path / "mine")
    assert layout is not None and layout["chunks"] == chunks and layout["sep"] == sep
    w = ChunkWriter(tmp_path / "mine", layout)
    with dask.config.set(scheduler="threads"):
        da.store(da.from_array(data, chunks=chunks), w, lock=False)
    assert w._zarr is None  # every block was a whole chunk: zarr was never needed
    assert _files(tmp_path / "mine") == _files(tmp_path / "ref")  # byte for byte
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "mine"), mode="r")[...], data)
    back = read_dask(tmp_path / "ref", v2_layout(tmp_path / "ref"))
    assert back.chunks == da.from_array(data, chunks=chunks).chunks
    got = back.compute()
    np.testing.assert_array_equal(got, data)
    assert got.dtype == np.dtype(dtype)


def test_missing_chunk_reads_fill_and_blocks_are_writable(tmp_path):
    z = zarr.create_array(str(tmp_path / "a"), shape=(40, 40), chunks=(16, 16), dtype="int16", zarr_format=2,
                          fill_value=7, chunk_key_encoding={"name": "v2", "separator": "/"})
    z[:16, :16] = 1  # only chunk (0, 0) exists
    arr = read_dask(tmp_path / "a", v2_layout(tmp_path / "a"))
    np.testing.assert_array_equal(arr.compute(), z[...])
    block = arr.blocks[0, 0].compute()
    block[0, 0] = 5  # a writable array, like zarr's
    assert arr.blocks[2, 2].compute().shape == (8, 8)


def test_unaligned_region_falls_back_to_zarr_and_writer_pickles(tmp_path):
    _make(tmp_path / "a", (30, 30), (10, 10), "uint8", Blosc("lz4", 5, Blosc.SHUFFLE))
    w = ChunkWriter(tmp_path / "a", v2_layout(tmp_path / "a"))
    w[5:15, 0:10] = np.full((10, 10), 9, np.uint8)  # straddles two chunks
    assert w._zarr is not None
    w2 = pickle.loads(pickle.dumps(w))
    assert w2._zarr is None
    w2[20:30, 20:30] = np.full((10, 10), 4, np.uint8)
    out = zarr.open_array(str(tmp_path / "a"), mode="r")[...]
    assert out[5:15, 0:10].min() == 9 and out[20:, 20:].min() == 4 and out[0, 0] == 0


def test_layouts_it_does_not_handle_return_none(tmp_path):
    assert v2_layout(tmp_path / "nothing") is None
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / ".zarray").write_text("{not json")
    assert v2_layout(tmp_path / "bad") is None
    zarr.create_array(str(tmp_path / "f"), shape=(4, 4), chunks=(2, 2), dtype="uint8", zarr_format=2, order="F")
    assert v2_layout(tmp_path / "f") is None
    zarr.create_array(str(tmp_path / "v3"), shape=(4, 4), chunks=(2, 2), dtype="uint8", zarr_format=3)
    assert v2_layout(tmp_path / "v3") is None

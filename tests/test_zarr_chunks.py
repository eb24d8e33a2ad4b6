"""Direct whole-chunk zarr v2 I/O (clemlab/io/_zarr_chunks.py) against zarr-python itself."""

import os
import pickle

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from numcodecs import Blosc, Zstd

from clemlab.io._zarr_chunks import BackgroundWriter, ChunkWriter, read_dask, v2_layout


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


def _direct_io_works(folder) -> bool:
    """Whether this filesystem accepts O_DIRECT (probed independently of clemlab)."""
    if not hasattr(os, "O_DIRECT"):
        return False
    probe = os.path.join(folder, "probe")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644))
    except OSError:
        return False
    finally:
        if os.path.exists(probe):
            os.remove(probe)
    return True


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered"])
@pytest.mark.parametrize("compressor", [Blosc("lz4", 5, Blosc.SHUFFLE), None], ids=["blosc", "raw"])
def test_background_writer_bytes_equal_zarr(tmp_path, direct, compressor):
    # 1 MiB chunks go through the background writer: raw ones are 4 KiB-aligned, Blosc ones
    # (header + incompressible noise) have an unaligned tail written through the page cache
    rng = np.random.default_rng(5)
    shape, chunks = (2100, 1500), (1024, 1024)
    data = rng.integers(0, 256, shape, dtype=np.uint8)
    ref = _make(tmp_path / "ref", shape, chunks, "uint8", compressor)
    ref[...] = data
    _make(tmp_path / "mine", shape, chunks, "uint8", compressor)
    bg = BackgroundWriter(threads=2, buffers=2, direct=direct)
    w = ChunkWriter(tmp_path / "mine", v2_layout(tmp_path / "mine"), bg)
    with dask.config.set(scheduler="threads", num_workers=2):
        da.store(da.from_array(data, chunks=chunks), w, lock=False)
    bg.close()
    assert bg._made <= 2  # memory stays bounded by the staging buffers
    assert bg.direct == (direct and _direct_io_works(tmp_path))
    assert _files(tmp_path / "mine") == _files(tmp_path / "ref")
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "mine"), mode="r")[...], data)
    assert pickle.loads(pickle.dumps(w))._background is None  # other processes write synchronously


@pytest.mark.parametrize("codec", [Blosc("lz4", 5, Blosc.SHUFFLE), Blosc("zstd", 1, Blosc.BITSHUFFLE),
                                   Blosc("blosclz", 9, Blosc.NOSHUFFLE), Blosc("lz4", 3, Blosc.SHUFFLE, blocksize=1 << 16)],
                         ids=["lz4", "zstd-bit", "blosclz", "lz4-blocks"])
def test_blosc_compressed_straight_into_a_buffer_equals_numcodecs(codec):
    # chunks of 1 MiB and more are compressed into the writer's staging buffers by the same
    # c-blosc call numcodecs makes outside the main thread (one blosc thread: deterministic
    # bytes; from the main thread numcodecs lets several blosc threads store blocks in
    # completion order): the bytes must be numcodecs' own, from any calling thread
    import threading

    from clemlab.io._zarr_chunks import _blosc_encoder

    encode_into = _blosc_encoder(codec)
    assert encode_into is not None  # numcodecs' Blosc extension exports blosc_compress_ctx
    rng = np.random.default_rng(9)
    arrays = [rng.integers(0, 256, (1024, 1100), np.uint8),  # incompressible: stored verbatim
              np.add.outer(np.arange(700), np.arange(900)).astype(np.uint16),  # compressible
              rng.normal(size=(300, 500)).astype(np.float32), np.zeros((513, 1024), np.uint16)]
    for a in arrays:
        buf = bytearray(a.nbytes + 16)
        got = {}

        def run(key, a=a, buf=buf):
            n = encode_into(a, buf)
            got[key] = bytes(buf[:n])

        def reference(a=a):
            got["numcodecs"] = bytes(codec.encode(a))

        run("main")
        for target, args in ((run, ("worker",)), (reference, ())):
            t = threading.Thread(target=target, args=args)
            t.start()
            t.join()
        assert got["main"] == got["worker"] == got["numcodecs"]
        np.testing.assert_array_equal(np.frombuffer(codec.decode(got["main"]), a.dtype).reshape(a.shape), a)
    with pytest.raises(ValueError):  # a buffer too small for the worst case is refused, not overrun
        encode_into(arrays[0], bytearray(arrays[0].nbytes))


def test_incompressible_chunks_are_stored_verbatim_after_a_probe(monkeypatch):
    # once a chunk size has come out of Blosc verbatim, later chunks are probed first; noise is
    # then copied behind Blosc's own header (bytes equal to numcodecs'), anything the probe
    # finds compressible is compressed as usual, and a chunk whose only compressible part the
    # probe misses is stored verbatim but still decodes to the same values
    from clemlab.io import _zarr_chunks

    monkeypatch.setattr(_zarr_chunks, "_ENCODERS", {})
    codec = Blosc("lz4", 5, Blosc.SHUFFLE)
    enc = _zarr_chunks._blosc_encoder(codec)
    compress_calls = []
    real = enc._compress
    monkeypatch.setattr(enc, "_compress", lambda src, *a: compress_calls.append(src.nbytes) or real(src, *a))
    rng = np.random.default_rng(2)
    shape = (1024, 1024)
    buf = bytearray(2 * 1024 * 1024 + 16)

    def encode(a):
        compress_calls.clear()
        n = enc(a, buf)
        return bytes(buf[:n])

    first = rng.integers(0, 65536, shape, dtype=np.uint16)
    assert encode(first) == bytes(codec.encode(first)) and compress_calls == [first.nbytes]
    noise = rng.integers(0, 65536, shape, dtype=np.uint16)
    assert encode(noise) == bytes(codec.encode(noise))
    assert compress_calls and max(compress_calls) < noise.nbytes // 8  # only the probe was compressed
    probed = noise.copy()
    probed[: shape[0] // 8] = 7  # a flat band where the first probe slice sits
    assert encode(probed) == bytes(codec.encode(probed)) and compress_calls[-1] == probed.nbytes
    missed = noise.copy()
    missed[20:60] = 0  # between probe slices: 4 % of the chunk would have compressed
    got = encode(missed)
    assert len(got) == missed.nbytes + 16 and len(codec.encode(missed)) < missed.nbytes
    np.testing.assert_array_equal(np.frombuffer(codec.decode(got), np.uint16).reshape(shape), missed)


def test_recycled_incompressible_chunks_go_to_disk_without_a_copy(tmp_path, monkeypatch):
    # warp outputs live on recycled memory with 16 bytes free in front: an incompressible one
    # gets Blosc's verbatim header written there and goes to disk from its own memory; the
    # files equal zarr's, compressible chunks and the padded edge chunks take the usual path
    from clemlab import _recycle
    from clemlab.io import _zarr_chunks

    monkeypatch.setattr(_zarr_chunks, "_ENCODERS", {})
    rng = np.random.default_rng(4)
    shape, chunks = (3072, 2500), (1024, 1024)
    data = rng.integers(0, 256, shape, dtype=np.uint8)
    data[1024:2048, 1024:2048] = 3  # one compressible chunk

    def block(block_info=None):
        (r0, r1), (c0, c1) = block_info[None]["array-location"]
        out = _recycle.empty((r1 - r0, c1 - c0), np.uint8, lead=16)
        out[...] = data[r0:r1, c0:c1]
        return out

    arr = da.map_blocks(block, dtype=np.uint8, chunks=((1024,) * 3, (1024, 1024, 452)))
    ref = _make(tmp_path / "ref", shape, chunks, "uint8", Blosc("lz4", 5, Blosc.SHUFFLE))
    ref[...] = data
    _make(tmp_path / "mine", shape, chunks, "uint8", Blosc("lz4", 5, Blosc.SHUFFLE))
    views = []
    real = BackgroundWriter.submit_view
    monkeypatch.setattr(BackgroundWriter, "submit_view", lambda self, path, *a: views.append(path) or real(self, path, *a))
    bg = BackgroundWriter(buffers=2)
    w = ChunkWriter(tmp_path / "mine", v2_layout(tmp_path / "mine"), bg)
    da.store(arr, w, lock=False, scheduler="synchronous")
    bg.close()
    assert _files(tmp_path / "mine") == _files(tmp_path / "ref")
    # 9 chunks: 3 padded edge chunks, 1 compressible, the first full noise chunk teaches the header
    assert len(views) == 4 and bg._views == 0


def test_zero_copy_writes_are_bounded_like_the_staging_buffers(tmp_path, monkeypatch):
    # a writer with one staging buffer holds at most one pending zero-copy write: the second
    # submit_view waits until the first file is on disk, so memory stays bounded
    import threading

    gate = threading.Event()
    real = BackgroundWriter._write

    def slow(self, path, data):
        gate.wait(10)
        real(self, path, data)

    monkeypatch.setattr(BackgroundWriter, "_write", slow)
    bg = BackgroundWriter(threads=2, buffers=1)
    payload = np.full(2 << 20, 9, np.uint8)
    bg.submit_view(str(tmp_path / "a"), memoryview(payload), payload)
    second = threading.Thread(target=bg.submit_view, args=(str(tmp_path / "b"), memoryview(payload), payload))
    second.start()
    second.join(0.3)
    assert second.is_alive() and bg._views == 1  # waiting for the first write
    gate.set()
    second.join(10)
    bg.close()
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes() == payload.tobytes()


def test_with_lead_only_for_whole_recycled_arrays():
    from clemlab import _recycle

    a = _recycle.empty((1024, 1100), np.uint16, lead=32)
    a[...] = 5
    frame = _recycle.with_lead(a.reshape(-1), 16)
    assert frame is not None and frame.nbytes == a.nbytes + 16
    assert np.frombuffer(frame, np.uint8).ctypes.data % 4096 == 16  # 32 bytes in, 16 of them asked for
    assert np.array_equal(np.frombuffer(frame, np.uint16, offset=16), a.reshape(-1))
    assert _recycle.with_lead(a, 48) is None  # more than was reserved
    assert _recycle.with_lead(a[1:], 16) is None and _recycle.with_lead(a.copy(), 16) is None
    assert _recycle.with_lead(_recycle.empty((1024, 1100), np.uint16), 16) is None  # no lead
    with pytest.raises(ValueError, match="multiple of 16"):
        _recycle.empty((1024, 1024), np.uint8, lead=5)


def test_writer_without_blosc_library_access_encodes_normally(tmp_path, monkeypatch):
    # where the c-blosc function cannot be reached, chunks are encoded by numcodecs and copied
    import numcodecs.blosc

    from clemlab.io import _zarr_chunks

    monkeypatch.setattr(_zarr_chunks, "_BLOSC_FUNC", [])
    monkeypatch.setattr(numcodecs.blosc, "VERSION_STRING", "2.15.1")  # another signature: not called
    assert _zarr_chunks._blosc_compress_ctx() is None
    monkeypatch.setattr(_zarr_chunks, "_BLOSC_FUNC", [None])
    monkeypatch.setattr(_zarr_chunks, "_ENCODERS", {})
    assert _zarr_chunks._blosc_encoder(Blosc("lz4", 5, Blosc.SHUFFLE)) is None
    data = np.add.outer(np.arange(1500), np.arange(1400)).astype(np.uint16)
    ref = _make(tmp_path / "ref", data.shape, (1024, 1024), "uint16", Blosc("lz4", 5, Blosc.SHUFFLE))
    ref[...] = data
    _make(tmp_path / "mine", data.shape, (1024, 1024), "uint16", Blosc("lz4", 5, Blosc.SHUFFLE))
    bg = BackgroundWriter(buffers=2)
    w = ChunkWriter(tmp_path / "mine", v2_layout(tmp_path / "mine"), bg)
    da.store(da.from_array(data, chunks=1024), w, lock=False, scheduler="threads")
    bg.close()
    assert _files(tmp_path / "mine") == _files(tmp_path / "ref")


def test_background_writer_without_direct_io_filesystem(tmp_path, monkeypatch):
    # Filesystems without O_DIRECT (older tmpfs, some FUSE and network mounts) refuse it at open
    # with EINVAL; every local filesystem of this machine accepts it (kernel 6.x tmpfs does), so
    # the refusal is simulated at os.open. The writer must notice on the first file and write
    # that file and all later ones normally.
    import errno

    real_open = os.open

    def no_direct(path, flags, *args):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_direct)
    bg = BackgroundWriter(direct=True)
    payloads = [np.arange(3 << 20, dtype=np.uint8) * k for k in (3, 7)]
    for k, payload in enumerate(payloads):
        bg.submit(str(tmp_path / "sub" / str(k)), payload)
    bg.close()
    assert not bg.direct
    for k, payload in enumerate(payloads):
        assert (tmp_path / "sub" / str(k)).read_bytes() == payload.tobytes()


def test_background_writer_reports_errors(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    bg = BackgroundWriter(buffers=1)
    good = tmp_path / "ok" / "0"
    bg.submit(str(good), np.ones(2 << 20, np.uint8))
    bg.submit(str(tmp_path / "afile" / "0" / "0"), np.ones(2 << 20, np.uint8))  # its folder cannot exist
    with pytest.raises(OSError):
        bg.close()
    assert good.read_bytes() == b"\x01" * (2 << 20)  # the other write completed
    view_bg = BackgroundWriter(buffers=1)
    payload = np.full(3 << 20, 2, np.uint8)
    view_bg.submit_view(str(tmp_path / "v" / "0"), memoryview(payload), payload)
    view_bg.submit_view(str(tmp_path / "afile" / "1"), memoryview(payload), payload)
    with pytest.raises(OSError):
        view_bg.close()
    assert (tmp_path / "v" / "0").read_bytes() == payload.tobytes() and view_bg._views == 0
    with pytest.raises(RuntimeError, match="after close"):
        bg.submit(str(good), b"x")


def test_failed_write_leaves_nothing_behind(tmp_path):
    import clemlab as cl

    def block(x, block_info=None):
        if block_info[0]["chunk-location"] == (1, 1):
            raise ValueError("this block cannot be computed")
        return x

    arr = da.zeros((3072, 3072), np.uint8, chunks=1024).map_blocks(block, dtype=np.uint8)
    img = cl.as_image(arr, pixel_size=0.01, modality="EM")
    with pytest.raises(ValueError, match="cannot be computed"):
        cl.write_ome_zarr(img, tmp_path / "x.ome.zarr", scale_factors=[])
    assert list(tmp_path.iterdir()) == []  # no half-written pyramid, no temporary folder


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_incompressible_blosc_chunks_are_used_in_place(tmp_path, dtype):
    # noise is stored verbatim by Blosc (flag BLOSC_MEMCPYED); a smooth ramp is compressed:
    # both read back exactly, as writable arrays, whatever the shuffle
    rng = np.random.default_rng(11)
    noise = rng.integers(0, 256, (64, 64 * np.dtype(dtype).itemsize), dtype=np.uint8).view(dtype)  # random bits
    ramp = np.add.outer(np.arange(64), np.arange(64)).astype(dtype)
    z = _make(tmp_path / "a", (64, 128), (64, 64), dtype, Blosc("lz4", 5, Blosc.SHUFFLE))
    z[:, :64] = noise
    z[:, 64:] = ramp
    raw0 = (tmp_path / "a" / "0" / "0").read_bytes()
    assert raw0[2] & 0x02 and (dtype == "uint8" or not (tmp_path / "a" / "0" / "1").read_bytes()[2] & 0x02)
    arr = read_dask(tmp_path / "a", v2_layout(tmp_path / "a"))
    a, b = arr.blocks[0, 0].compute(), arr.blocks[0, 1].compute()
    np.testing.assert_array_equal(a, noise)
    np.testing.assert_array_equal(b, ramp)
    a[0, 0] = 1  # writable
    b[0, 0] = 1


@pytest.mark.parametrize("compressor", [Blosc("lz4", 5, Blosc.SHUFFLE), None], ids=["blosc", "raw"])
def test_damaged_chunk_file_names_the_file(tmp_path, compressor):
    from clemlab.errors import FileFormatError

    z = _make(tmp_path / "a", (64, 64), (64, 64), "uint16", compressor)
    z[...] = np.add.outer(np.arange(64), np.arange(64)).astype(np.uint16)
    chunk = tmp_path / "a" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:40])  # truncated
    with pytest.raises(FileFormatError, match=r"0/0.*damaged or truncated"):
        read_dask(tmp_path / "a", v2_layout(tmp_path / "a")).compute()

"""Whole-chunk I/O for local zarr v2 arrays, without zarr-python's per-call machinery.

zarr-python 3 sends every ``array[region]`` read or write through its asyncio event loop
thread and codec pipeline. For the access pattern of clemlab's streaming writer and lazy
reader (one dask task = one whole chunk of a local folder) that hop costs more than the
codec itself (``benchmarks/bench_warp.py``, row ``io-floor``). A zarr v2 chunk is simply a
file ``<array>/<i>/<j>`` (or ``<i>.<j>``) holding ``compressor.encode(chunk)``, the chunk in
C order padded to the full chunk shape with ``fill_value`` at the array's far edges; this
module reads and writes exactly that, with the same numcodecs codec, so zarr (any version)
reads what is written here and the bytes equal zarr's own (tested). Anything this module
does not cover (filters, F order, object or structured dtypes, partial chunks, zarr v3
arrays) returns ``None`` / falls back to zarr.

Chunk files of 1 MiB and more are written by :class:`BackgroundWriter`: a few threads write
them with ``O_DIRECT`` (straight from reusable page-aligned buffers to the disk, bypassing the
page cache) while the dask threads go on computing. Blosc chunks are compressed straight into
those buffers by the c-blosc function numcodecs itself calls (:func:`_blosc_encoder`), and
chunks a probe finds incompressible are copied there verbatim behind Blosc's header, or, when
the chunk lives on recycled memory with room in front (the lazy warp's outputs:
:func:`clemlab._recycle.with_lead`), get the header written there and go to disk from their
own memory with no copy at all. Copying a large output into the page cache
costs as much CPU as resampling it on virtual machines (fresh host pages, 1-3 ms/MB measured),
and a written mosaic of tens of gigabytes would only evict useful pages anyway. Filesystems
without ``O_DIRECT`` (tmpfs, some network mounts) get ordinary writes from the same threads.
``CLEMLAB_DIRECT_IO=0`` turns direct I/O off.
"""

from __future__ import annotations

import errno
import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .. import _recycle
from ..errors import FileFormatError

__all__ = ["v2_layout", "read_dask", "ChunkWriter", "BackgroundWriter"]

#: Chunk files at least this large go through the direct-I/O path of BackgroundWriter.
DIRECT_MIN_BYTES = 1 << 20
_ALIGN = 4096  # O_DIRECT alignment of buffer address, length and file offset (any block size <= 4 KiB)
_BLOSC_OVERHEAD = 16  # BLOSC_MAX_OVERHEAD: a Blosc frame is at most this much larger than its data
_BLOSC_MEMCPYED = 0x02  # Blosc header flag (byte 2): the data follow the 16-byte header verbatim


def v2_layout(array_path: str | os.PathLike) -> dict | None:
    """The chunk layout of a local zarr v2 array, or None if this module cannot handle it.

    Parameters
    ----------
    array_path : path-like
        The array's folder (holding ``.zarray``).

    Returns
    -------
    dict or None
        ``shape``, ``chunks`` (tuples of int, array order), ``dtype`` (numpy dtype),
        ``fill_value``, ``codec`` (numcodecs codec or None), ``sep`` ("/" or ".").
    """
    p = Path(array_path) / ".zarray"
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.get("zarr_format") != 2 or meta.get("order", "C") != "C" or meta.get("filters"):
        return None
    try:
        dtype = np.dtype(meta["dtype"])
    except (TypeError, KeyError):
        return None
    if dtype.kind not in "biuf" or dtype.fields:
        return None
    codec = None
    if meta.get("compressor"):
        from numcodecs import get_codec

        try:
            codec = get_codec(dict(meta["compressor"]))
        except (ValueError, KeyError, TypeError):
            return None
    fill = meta.get("fill_value")
    return {
        "shape": tuple(int(n) for n in meta["shape"]),
        "chunks": tuple(int(n) for n in meta["chunks"]),
        "dtype": dtype,
        "fill_value": 0 if fill is None else fill,
        "codec": codec,
        "sep": meta.get("dimension_separator", "."),
    }


def _chunk_file(root: str, idx: tuple[int, ...], sep: str) -> str:
    if not idx:
        return os.path.join(root, "0")
    if sep == "/":
        return os.path.join(root, *(str(i) for i in idx))
    return os.path.join(root, ".".join(str(i) for i in idx))


def _read_chunk(root: str, idx: tuple[int, ...], layout: dict) -> np.ndarray:
    """One chunk as a writable array, trimmed at the array's far edges."""
    chunks, shape, dtype = layout["chunks"], layout["shape"], layout["dtype"]
    trim = tuple(slice(0, min(c, n - i * c)) for i, c, n in zip(idx, chunks, shape))
    try:
        with open(_chunk_file(root, idx, layout["sep"]), "rb", buffering=0) as fh:
            raw = _recycle.empty(os.fstat(fh.fileno()).st_size, np.uint8)  # not zero-filled; reused pages
            got = fh.readinto(raw)
    except FileNotFoundError:  # never written: the fill value, as zarr reads it
        return np.full(tuple(s.stop for s in trim), layout["fill_value"], dtype)
    codec = layout["codec"]
    nbytes = int(np.prod(chunks)) * dtype.itemsize
    offset = 0 if codec is None else _blosc_verbatim_offset(codec, raw, nbytes)
    if got == len(raw) and offset is not None and len(raw) == offset + nbytes:
        full = raw[offset:].view(dtype).reshape(chunks)  # writable, no second copy
    else:
        full = _recycle.empty(chunks, dtype)
        try:
            if codec is None:
                if got != nbytes:
                    raise ValueError(f"{got} bytes, expected {nbytes}")
                full.reshape(-1).view(np.uint8)[:] = raw[:got]
            else:
                codec.decode(raw[:got], out=full)
        except Exception as exc:  # a damaged or truncated chunk file
            path = _chunk_file(root, idx, layout["sep"])
            raise FileFormatError(f"cannot decode zarr chunk {path!r} ({type(exc).__name__}: {exc}); "
                                  "the file is damaged or truncated: rewrite the array") from None
    return full if all(s.stop == c for s, c in zip(trim, chunks)) else full[trim]


def _blosc_verbatim_offset(codec: Any, raw: np.ndarray, nbytes: int) -> int | None:
    """Where the chunk's bytes start in a Blosc frame that stores them verbatim, else None.

    Blosc stores incompressible data (most EM images) uncompressed after its 16-byte header,
    flagged ``BLOSC_MEMCPYED`` (0x02), whatever shuffle was asked for; such a chunk is then used
    in place instead of being copied out by ``decode``.
    """
    if getattr(codec, "codec_id", None) != "blosc" or len(raw) < 16:
        return None
    flags = int(raw[2])
    size = int.from_bytes(raw[4:8].tobytes(), "little")
    cbytes = int.from_bytes(raw[12:16].tobytes(), "little")
    if flags & _BLOSC_MEMCPYED and size == nbytes and cbytes == len(raw) == _BLOSC_OVERHEAD + nbytes:
        return _BLOSC_OVERHEAD
    return None


def read_dask(array_path: str | os.PathLike, layout: dict, name: str | None = None):
    """A dask array reading the zarr v2 array chunk by chunk (dask chunks = zarr chunks).

    Parameters
    ----------
    array_path : path-like
        The array's folder.
    layout : dict
        From :func:`v2_layout`.
    name : str, optional
        Dask name; default derived from the path, the layout and the ``.zarray`` file's
        modification time (so a rewritten array gets a new name).

    Returns
    -------
    dask.array.Array
        Shape ``layout["shape"]``, dtype ``layout["dtype"]``.
    """
    import itertools

    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    root = str(Path(array_path))
    shape, chunks = layout["shape"], layout["chunks"]
    dchunks = tuple(tuple(min(c, n - k) for k in range(0, n, c)) if n else (0,) for n, c in zip(shape, chunks))
    if name is None:
        stamp = os.stat(os.path.join(root, ".zarray")).st_mtime_ns
        name = "clemlab-zarr-" + tokenize(root, stamp, shape, chunks, str(layout["dtype"]))
    layer = {
        (name,) + idx: (_read_chunk, root, idx, layout)
        for idx in itertools.product(*(range(len(c)) for c in dchunks))
    }
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[])
    return da.Array(graph, name, dchunks, dtype=layout["dtype"])


class ChunkWriter:
    """A ``dask.array.store`` target writing whole chunks of a local zarr v2 array directly.

    ``writer[region] = block`` for a region that is exactly one chunk (the far-edge chunks
    may be short) encodes and writes that chunk's file; any other region goes through the
    zarr array (opened on first need, so the writer pickles to dask.distributed workers as
    a path and a layout).

    Parameters
    ----------
    array_path : path-like
        The array's folder (created by zarr, so ``.zarray`` exists).
    layout : dict
        From :func:`v2_layout`.
    background : BackgroundWriter, optional
        Hands chunk files of at least ``DIRECT_MIN_BYTES`` to this writer (in this process
        only; the caller must ``close()`` it before using the array). Default: every chunk is
        written before ``__setitem__`` returns.
    """

    def __init__(self, array_path: str | os.PathLike, layout: dict, background: BackgroundWriter | None = None):
        self.root = str(Path(array_path))
        self.layout = layout
        self.shape = layout["shape"]
        self.dtype = layout["dtype"]
        self.ndim = len(self.shape)
        self._zarr = None
        self._background = background

    def __getstate__(self) -> dict:
        # a copy sent to another process (dask.distributed, multiprocessing) writes
        # synchronously: nobody there would wait for a background write to finish
        state = dict(self.__dict__)
        state["_zarr"] = None
        state["_background"] = None
        return state

    def _chunk_index(self, key: Any) -> tuple[int, ...] | None:
        if not isinstance(key, tuple) or len(key) != self.ndim:
            return None
        idx = []
        for s, c, n in zip(key, self.layout["chunks"], self.shape):
            if not isinstance(s, slice) or s.step not in (None, 1):
                return None
            start, stop = s.start or 0, n if s.stop is None else s.stop
            if start % c or stop != min(start + c, n):
                return None
            idx.append(start // c)
        return tuple(idx)

    def __setitem__(self, key: Any, value: Any) -> None:
        idx = self._chunk_index(key)
        value = np.asarray(value)
        if idx is None or value.dtype != self.dtype:
            if self._zarr is None:
                import zarr

                self._zarr = zarr.open_array(self.root, mode="r+")
            self._zarr[key] = value
            return
        chunks = self.layout["chunks"]
        if value.shape != chunks:  # far-edge chunk: zarr v2 stores it padded to full size
            full = np.full(chunks, self.layout["fill_value"], self.dtype)
            full[tuple(slice(0, s) for s in value.shape)] = value
            value = full
        value = np.ascontiguousarray(value)
        codec = self.layout["codec"]
        path = _chunk_file(self.root, idx, self.layout["sep"])
        if self._background is not None and value.nbytes >= DIRECT_MIN_BYTES:
            encode_into = _blosc_encoder(codec)
            if encode_into is not None:
                header = encode_into.verbatim_header(value)
                frame = None if header is None else _recycle.with_lead(value, _BLOSC_OVERHEAD)
                if frame is not None:  # incompressible, with room for the header in front: no copy
                    frame[:_BLOSC_OVERHEAD] = header
                    self._background.submit_view(path, frame, value)
                    return
                # encoded straight into a staging buffer
                self._background.submit_filled(path, value.nbytes + _BLOSC_OVERHEAD,
                                               lambda out: encode_into.encode(value, out, header))
                return
        data = value if codec is None else codec.encode(value)
        with memoryview(data) as mv, mv.cast("B") as raw:
            if self._background is not None and raw.nbytes >= DIRECT_MIN_BYTES:
                self._background.submit(path, raw)
            else:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                _write_plain(path, raw)


_BLOSC_LOCK = threading.Lock()
_BLOSC_FUNC: list = []  # [ctypes function or None], looked up once


def _blosc_compress_ctx() -> Any:
    """``blosc_compress_ctx`` of the c-blosc that numcodecs' Blosc extension is built with, or None.

    numcodecs' ``Blosc.encode`` calls exactly this function, into a fresh ``bytes`` object;
    calling it here lets a chunk be compressed straight into a reused staging buffer. Used only
    with c-blosc 1.x (whose signature this is) and after a self-test on a small array gave
    ``Blosc.encode``'s bytes; None otherwise (other builds, platforms or versions): callers
    then use ``codec.encode``.
    """
    with _BLOSC_LOCK:
        if not _BLOSC_FUNC:
            func = None
            try:
                import ctypes

                import numcodecs.blosc as nb
                from numcodecs import Blosc

                if str(nb.VERSION_STRING).startswith("1."):
                    func = ctypes.CDLL(nb.__file__).blosc_compress_ctx  # already loaded: same library
                    func.restype = ctypes.c_int
                    func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p,
                                     ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
                    probe = (np.arange(4096, dtype=np.uint16) % 251).astype(np.uint16)  # one block: deterministic
                    out = np.zeros(probe.nbytes + _BLOSC_OVERHEAD, np.uint8)
                    n = func(5, 1, 2, probe.nbytes, probe.ctypes.data, out.ctypes.data, out.nbytes, b"lz4", 0, 1)
                    if not 0 < n <= out.nbytes or out[:n].tobytes() != bytes(Blosc("lz4", 5, Blosc.SHUFFLE).encode(probe)):
                        func = None
            except (ImportError, OSError, AttributeError):
                func = None
            _BLOSC_FUNC.append(func)
        return _BLOSC_FUNC[0]


_PROBES = 8  # slices of a chunk compressed to decide whether it is worth compressing at all
_PROBE_BYTES = 16384  # bytes per probe slice
_ENCODERS: dict = {}


def _blosc_encoder(codec: Any) -> Any:
    """``encode_into(value, out) -> nbytes`` for a numcodecs Blosc codec, or None.

    ``encode_into`` writes a Blosc frame of ``value`` (C-contiguous) into ``out``, a writable
    buffer of at least ``value.nbytes + 16`` bytes, and returns its length. The frame is
    the one ``codec.encode(value)`` returns in a dask worker thread (same c-blosc call, same
    arguments; tested), except that a chunk found incompressible is stored verbatim without
    trying: once a chunk of this size has come out of Blosc verbatim (``BLOSC_MEMCPYED``: noisy
    EM data), later chunks of that size are first probed (:data:`_PROBES` slices of
    :data:`_PROBE_BYTES` spread over the chunk, compressed together); if the probe does not
    compress either, the chunk is copied behind the same 16-byte header, as Blosc would after
    failing on every block. A chunk whose unprobed parts would have compressed (a small fill
    corner, say) is then stored uncompressed: it still decodes to the same values with any
    Blosc reader. None for other codecs, automatic shuffle, or when the library function is
    unavailable.
    """
    if getattr(codec, "codec_id", None) != "blosc" or getattr(codec, "shuffle", None) not in (0, 1, 2):
        return None
    key = (codec.cname, int(codec.clevel), int(codec.shuffle), int(getattr(codec, "blocksize", 0) or 0))
    enc = _ENCODERS.get(key)
    if enc is None:
        func = _blosc_compress_ctx()
        if func is None:
            return None
        enc = _ENCODERS.setdefault(key, _BloscInto(func, *key))
    return enc


class _BloscInto:
    """Blosc compression into a caller's buffer (see :func:`_blosc_encoder`)."""

    def __init__(self, func: Any, cname: Any, clevel: int, shuffle: int, blocksize: int):
        self.func = func
        self.cname = cname.encode("ascii") if isinstance(cname, str) else bytes(cname)
        self.clevel, self.shuffle, self.blocksize = clevel, shuffle, blocksize
        self.verbatim: dict = {}  # (nbytes, typesize) -> the 16-byte header of a verbatim frame

    def _compress(self, src: np.ndarray, typesize: int, dest: Any, blocksize: int) -> int:
        import ctypes

        nbytes = src.nbytes
        buf = (ctypes.c_char * (nbytes + _BLOSC_OVERHEAD)).from_buffer(dest)  # raises if too small / read-only
        # one internal thread, as numcodecs outside the main thread: the bytes are then
        # deterministic (several blosc threads store blocks in completion order); ctypes
        # releases the GIL for the call
        n = self.func(self.clevel, self.shuffle, typesize, nbytes, src.ctypes.data, ctypes.addressof(buf),
                      nbytes + _BLOSC_OVERHEAD, self.cname, blocksize, 1)
        del buf
        if n <= 0:
            raise RuntimeError(f"Blosc compression failed (code {n}) for {self.cname.decode()} level {self.clevel}")
        return n

    def _incompressible(self, flat: np.ndarray, typesize: int) -> bool:
        step = flat.size // _PROBES
        width = _PROBE_BYTES // typesize * typesize
        if step < width:
            return False
        sample = np.concatenate([flat[k * step : k * step + width] for k in range(_PROBES)])
        out = np.empty(sample.nbytes + _BLOSC_OVERHEAD, np.uint8)
        n = self._compress(sample, typesize, out, width)
        return bool(out[2] & _BLOSC_MEMCPYED) and n == sample.nbytes + _BLOSC_OVERHEAD

    def verbatim_header(self, value: np.ndarray) -> bytes | None:
        """Blosc's 16-byte header for storing ``value`` verbatim, if a probe finds it incompressible.

        None until a chunk of this size and item size has come out of Blosc verbatim, or when
        the probe compresses.
        """
        header = self.verbatim.get((value.nbytes, value.dtype.itemsize))
        if header is not None and self._incompressible(value.reshape(-1).view(np.uint8), value.dtype.itemsize):
            return header
        return None

    def __call__(self, value: np.ndarray, out: Any) -> int:
        return self.encode(value, out, self.verbatim_header(value))

    def encode(self, value: np.ndarray, out: Any, header: bytes | None) -> int:
        """Write ``value``'s frame into ``out``: verbatim behind ``header`` if given, else compressed."""
        nbytes, typesize = value.nbytes, value.dtype.itemsize
        if header is not None:
            with memoryview(out) as mv, mv.cast("B") as raw:
                if raw.nbytes < nbytes + _BLOSC_OVERHEAD:
                    raise ValueError(f"a {raw.nbytes}-byte buffer cannot hold {nbytes + _BLOSC_OVERHEAD} bytes")
                raw[:_BLOSC_OVERHEAD] = header
                np.frombuffer(raw, np.uint8, nbytes, _BLOSC_OVERHEAD)[:] = value.reshape(-1).view(np.uint8)
            return nbytes + _BLOSC_OVERHEAD
        n = self._compress(value, typesize, out, self.blocksize)
        if n == nbytes + _BLOSC_OVERHEAD:
            with memoryview(out) as mv, mv.cast("B") as raw:
                if raw[2] & _BLOSC_MEMCPYED:  # stored verbatim: remember the header for chunks of this size
                    self.verbatim[(nbytes, typesize)] = bytes(raw[:_BLOSC_OVERHEAD])
        return n


_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    done = 0
    while done < data.nbytes:
        done += os.pwrite(fd, data[done:], offset + done)


def _write_plain(path: str, data: memoryview) -> None:
    """Write ``data`` to ``path`` (created or truncated) through the page cache."""
    fd = os.open(path, _WRITE_FLAGS, 0o666)
    try:
        _pwrite_all(fd, data, 0)
    finally:
        os.close(fd)


class BackgroundWriter:
    """Write files from a few background threads, with ``O_DIRECT`` where the filesystem allows.

    :meth:`submit` copies the bytes into one of a few reusable page-aligned buffers (blocking
    while all of them hold pending writes, so memory stays bounded) and returns; a writer thread
    writes the file. With ``O_DIRECT`` the disk reads the buffer itself: no CPU time is spent
    copying into the page cache. The first error of any write is raised by the next
    :meth:`submit` and by :meth:`close`, which waits for every pending write.

    Parameters
    ----------
    threads : int
        Writer threads (they wait on the disk, not on the CPU).
    buffers : int
        Staging buffers, each the size of the largest file submitted (rounded up to 4 KiB).
    direct : bool, optional
        Use ``O_DIRECT``. Default: where the OS has it, unless ``CLEMLAB_DIRECT_IO=0``. A
        filesystem that refuses it gets ordinary writes (decided on the first file).
    """

    def __init__(self, threads: int = 2, buffers: int = 6, direct: bool | None = None):
        from concurrent.futures import ThreadPoolExecutor

        if direct is None:
            direct = os.environ.get("CLEMLAB_DIRECT_IO", "1").strip() != "0"
        self.direct = bool(direct) and hasattr(os, "O_DIRECT")
        self._nbuf = max(1, int(buffers))
        self._free: list[np.ndarray] = []
        self._made = 0
        self._views = 0  # pending writes straight from the caller's memory (submit_view)
        self._pending = 0
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._pool = ThreadPoolExecutor(max(1, int(threads)), thread_name_prefix="clemlab-writer")
        self._closed = False

    def _take(self, n: int) -> np.ndarray:
        size = -(-n // _ALIGN) * _ALIGN
        with self._cond:
            while True:
                self._raise_error()
                for i, buf in enumerate(self._free):
                    if len(buf) >= size:
                        return self._free.pop(i)
                if self._free:  # only smaller buffers are free: replace one
                    self._free.pop()
                    self._made -= 1
                if self._made < self._nbuf:
                    self._made += 1
                    break
                self._cond.wait()
        try:
            # page-aligned (an anonymous mapping), and reused by later writers once released
            return _recycle.empty(max(size, _recycle.MIN_BYTES), np.uint8)
        except BaseException:
            with self._cond:
                self._made -= 1
                self._cond.notify_all()
            raise

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, path: str, data: Any) -> None:
        """Queue writing ``data`` (a bytes-like object) to the file ``path``.

        ``data`` is copied before this returns, so the caller may reuse it. The file's
        folder is created if missing.
        """
        with memoryview(data) as mv, mv.cast("B") as raw:
            n = raw.nbytes

            def copy(buf: np.ndarray) -> int:
                buf[:n] = raw
                return n

            self.submit_filled(path, n, copy)

    def submit_filled(self, path: str, capacity: int, fill: Any) -> None:
        """Queue writing the bytes that ``fill(buffer)`` puts into a staging buffer.

        ``fill`` receives a writable buffer of at least ``capacity`` bytes, writes the file's
        content at its start and returns its length; it runs in the calling thread before
        this returns (e.g. a compressor writing straight into the buffer, with no copy).
        """
        if self._closed:
            raise RuntimeError("BackgroundWriter.submit after close()")
        buf = self._take(capacity)
        try:
            n = int(fill(buf))
            if not 0 <= n <= len(buf):
                raise ValueError(f"fill wrote {n} bytes into a {len(buf)}-byte buffer")
        except BaseException:
            with self._cond:
                self._free.append(buf)
                self._cond.notify_all()
            raise
        with self._cond:
            self._pending += 1
        try:
            self._pool.submit(self._run, path, memoryview(buf)[:n], buf)
        except BaseException:
            self._done(buf, None)
            raise

    def submit_view(self, path: str, data: memoryview, keep: Any) -> None:
        """Queue writing ``data`` as it is, with no copy (``keep``, its owner, is held until written).

        ``data`` must not change until written; for direct I/O it should start on a page
        boundary (any other start is written through the page cache). Blocks while as many
        such writes as there are staging buffers are pending, so memory stays bounded.
        """
        if self._closed:
            raise RuntimeError("BackgroundWriter.submit after close()")
        with self._cond:
            while True:
                self._raise_error()
                if self._views < self._nbuf:
                    break
                self._cond.wait()
            self._views += 1
            self._pending += 1
        try:
            self._pool.submit(self._run, path, data, None, keep)
        except BaseException:
            self._done(None, None)
            raise

    def _done(self, buf: np.ndarray | None, error: BaseException | None) -> None:
        with self._cond:
            if error is not None and self._error is None:
                self._error = error
            if buf is None:
                self._views -= 1
            else:
                self._free.append(buf)
            self._pending -= 1
            self._cond.notify_all()

    def _run(self, path: str, data: memoryview, buf: np.ndarray | None, keep: Any = None) -> None:
        error = None
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._write(path, data)
        except BaseException as exc:  # kept and raised in the submitting thread
            error = exc
        del data, keep
        self._done(buf, error)

    def _write(self, path: str, data: memoryview) -> None:
        n = data.nbytes
        if self.direct and np.frombuffer(data, np.uint8).ctypes.data % _ALIGN == 0:
            try:
                fd = os.open(path, _WRITE_FLAGS | os.O_DIRECT, 0o666)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self.direct = False  # this filesystem has no direct I/O
            else:
                try:
                    head = n // _ALIGN * _ALIGN
                    try:
                        _pwrite_all(fd, data[:head], 0)
                    except OSError as exc:
                        if exc.errno != errno.EINVAL:
                            raise
                        self.direct = False  # alignment refused: write it all buffered
                        head = 0
                    if head < n:  # the unaligned tail (and the zarr/blosc header) through the page cache
                        import fcntl

                        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
                        _pwrite_all(fd, data[head:], head)
                finally:
                    os.close(fd)
                return
        _write_plain(path, data)

    def close(self, *, raise_error: bool = True) -> None:
        """Wait for every pending write, stop the threads and free the buffers.

        Raises the first write error (``raise_error=False``: only wait, e.g. while another
        error is already propagating). Safe to call more than once.
        """
        with self._cond:
            while self._pending:
                self._cond.wait()
        if not self._closed:
            self._closed = True
            self._pool.shutdown(wait=True)
            with self._cond:
                self._free.clear()  # the buffers go back to clemlab._recycle's pool
        if raise_error:
            self._raise_error()

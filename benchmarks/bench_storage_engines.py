"""Disk-to-disk warp written as sharded zarr v3: zarr-python 3 against tensorstore (and clemlab's writer).

Run::

    python benchmarks/bench_storage_engines.py --size 8192 --dtype uint8 --rounds 3

An input of ``size``² pixels is stored as a sharded zarr v3 array (shards 4096², inner chunks 512²,
Blosc LZ4 level 5, byte shuffle, CRC-32C), read lazily (one dask task per shard), warped by clemlab (rotation
10° + scale 1.1, bilinear, output chunks of one shard) and written to the same sharded layout by
each engine, with the threaded scheduler and 2 threads:

- ``zarr``: ``dask.array.store`` into a ``zarr.Array`` (zarr-python 3, default settings);
- ``zarr-conc64`` / ``zarr-workers2``: the same inside ``zarr.config.set({...})`` (a context:
  the setting is restored on exit) with ``async.concurrency=64`` / ``threading.max_workers=2``;
- ``tensorstore``: the same regions written with ``TensorStore.write`` (driver ``zarr3``, file kvstore);
- ``clemlab``: ``clemlab.write_ome_zarr`` of this checkout, one level;
- ``warp-only``: the warp with the result dropped (what the engines add is their time minus this).

Every engine runs in a fresh subprocess per round (round-robin, so a slow spell of the shared
machine hits all alike) and is timed twice in it (first call maps fresh memory); the faster call
is kept, with its CPU seconds (less sensitive to other load than wall time) and the peak RSS.
"""

from __future__ import annotations

import _checkout  # noqa: F401  (first: this checkout's clemlab, not an installed copy)

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

SHARD, INNER, PIXEL, STAGE = 4096, 512, 0.005, 1.0e5
ENGINES = ("clemlab", "zarr", "zarr-conc64", "zarr-workers2", "tensorstore", "warp-only")
CONFIGS = {"zarr-conc64": {"async.concurrency": 64}, "zarr-workers2": {"threading.max_workers": 2}}


def _codec():
    """Blosc LZ4 and a CRC-32C checksum, as clemlab writes."""
    from zarr.codecs import BloscCodec, Crc32cCodec

    return [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"), Crc32cCodec()]


def _create(path: str, shape: tuple, dtype: str):
    import zarr

    return zarr.create_array(path, shape=shape, dtype=dtype, chunks=(INNER, INNER), shards=(SHARD, SHARD),
                             compressors=_codec(), fill_value=0, overwrite=True, config={"write_empty_chunks": True})


def make_input(path: str, size: int, dtype: str) -> None:
    """An EM-like image (smooth pattern + noise: Blosc finds it incompressible, as real EM is)."""
    import dask
    import dask.array as da

    def block(block_info=None):
        (r0, r1), (c0, c1) = block_info[None]["array-location"]
        y, x = np.mgrid[r0:r1, c0:c1].astype(np.float32)
        v = 0.5 + 0.25 * np.sin(x / 37.0) * np.cos(y / 23.0) + 0.25 * np.sin((x + y) / 211.0)
        v += np.random.default_rng(r0 * 7 + c0).normal(0, 0.03, v.shape).astype(np.float32)
        top = np.iinfo(dtype).max
        return np.clip(v * top, 0, top).astype(dtype)

    arr = da.map_blocks(block, dtype=dtype, chunks=((SHARD,) * (size // SHARD),) * 2)
    with dask.config.set(scheduler="threads", num_workers=2):
        da.store(arr, _create(path, arr.shape, dtype), lock=False)


class _TensorStoreRegions:
    """``target[region] = block`` for dask.array.store, written through tensorstore."""

    def __init__(self, arr):
        self._arr = arr

    def __setitem__(self, key, value):
        self._arr[key].write(value).result()


def child(cfg: dict) -> dict:
    import dask
    import dask.array as da
    import zarr

    import clemlab as cl
    from clemlab import transforms as T

    size, dtype, engine, out = cfg["size"], cfg["dtype"], cfg["engine"], cfg["out"]
    data = da.from_zarr(zarr.open_array(cfg["src"], mode="r"), chunks=(SHARD, SHARD))
    img = cl.as_image(data, pixel_size=PIXEL, origin=(STAGE, STAGE), modality="EM")
    centre = np.array([STAGE, STAGE]) + size * PIXEL / 2
    tf = T.Translation(-centre).then(T.Similarity(1.1, np.deg2rad(10.0))).then(T.Translation(centre))
    tf = tf.with_frames("EM", "OUT")
    like = cl.as_image(da.zeros_like(data), pixel_size=PIXEL, origin=(STAGE, STAGE), modality="OUT")

    def run():
        warped = cl.warp(img, tf, like=like, chunks=SHARD)
        with dask.config.set(scheduler="threads", num_workers=2):
            if engine == "clemlab":
                cl.write_ome_zarr(warped, out, scale_factors=[])
            elif engine.startswith("zarr"):
                target = _create(out, warped.shape, dtype)
                with zarr.config.set(CONFIGS.get(engine, {})):
                    da.store(warped.data, target, lock=False)
            elif engine == "tensorstore":
                import tensorstore as ts

                _create(out, warped.shape, dtype)  # the same metadata, written by zarr-python
                arr = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": out}}).result()
                da.store(warped.data, _TensorStoreRegions(arr), lock=False)
            else:
                warped.data.map_blocks(lambda b: np.zeros((1, 1), b.dtype), chunks=(1, 1)).compute()

    calls = []
    for _ in range(2):
        shutil.rmtree(out, ignore_errors=True)
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        calls.append((time.perf_counter() - t0, time.process_time() - c0))
    with open("/proc/self/status") as fh:
        rss = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024
    files = sum(len(f) for _, _, f in os.walk(out))
    dt, cpu = min(calls)
    return {"engine": engine, "seconds": dt, "cpu_seconds": cpu, "peak_rss_mb": rss, "files": files}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=8192, help="image side in px (multiple of 4096)")
    ap.add_argument("--dtype", default="uint8")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    tmp = tempfile.mkdtemp(prefix="clemlab-bench-storage-")
    try:
        src, out = os.path.join(tmp, "in.zarr"), os.path.join(tmp, "out.zarr")
        make_input(src, args.size, args.dtype)
        engines = args.engines.split(",")
        runs: dict = {e: [] for e in engines}
        print(f"{args.size}² {args.dtype}, shards {SHARD}², chunks {INNER}², Blosc LZ4, 2 threads, "
              f"{args.rounds} rounds (load average {os.getloadavg()[0]:.2f})")
        for _ in range(args.rounds):
            for e in engines:
                cfg = json.dumps({"engine": e, "size": args.size, "dtype": args.dtype, "src": src, "out": out})
                proc = subprocess.run([sys.executable, __file__, "--child", cfg], capture_output=True, text=True)
                if proc.returncode:
                    raise RuntimeError(f"{e} failed:\n{proc.stderr[-3000:]}")
                runs[e].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"{'engine':15} {'best s':>7} {'best cpu s':>10} {'RSS MB':>7} {'files':>5}  cpu s per round")
        for e, rs in runs.items():
            print(f"{e:15} {min(r['seconds'] for r in rs):7.2f} {min(r['cpu_seconds'] for r in rs):10.2f} "
                  f"{max(r['peak_rss_mb'] for r in rs):7.0f} {rs[0]['files']:5d}  "
                  f"{[round(r['cpu_seconds'], 2) for r in rs]}")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

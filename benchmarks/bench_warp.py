"""Throughput and memory of clemlab's lazy warp against OpenCV, dask-image and scipy.

Run::

    python benchmarks/bench_warp.py              # 16384² uint8 and uint16, + 32768² uint8, TPS
    python benchmarks/bench_warp.py --size 4096  # quicker

An EM image of ``size``² pixels is stored as zarr on disk (2048² chunks), warped with an affine
(rotation 10°, scale 1.1, bilinear) onto a grid of the same size and written to zarr on disk
with the threaded scheduler and 2 threads. Baselines measured in the same run:
``cv2.warpAffine`` on the in-memory array (cv2.setNumThreads(2)), ``dask_image.ndinterp.
affine_transform`` (same chunks, zarr to zarr, 2 threads) and ``scipy.ndimage.affine_transform``
(in memory, one core). Each configuration runs in its own subprocess, which reports its peak RSS
(``VmHWM`` from ``/proc/self/status``; ``ru_maxrss`` survives ``exec`` on Linux). Targets (issue 5): >= 0.7x OpenCV, >= 8x
dask-image, peak RSS < 1.5 GB and < +20 % when the side doubles (time <= 4.4x), a 50-landmark
thin-plate-spline warp <= 1.5x the affine time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

CHUNK = 2048
ANGLE, SCALE = np.deg2rad(10.0), 1.1
PIXEL = 0.005  # µm
STAGE = 1.0e5  # µm: realistic stage coordinates


def _make_input(path: str, size: int, dtype: str) -> None:
    import dask.array as da

    def block(block_info=None):
        (r0, r1), (c0, c1) = block_info[None]["array-location"]
        y, x = np.mgrid[r0:r1, c0:c1].astype(np.float32)
        v = 0.5 + 0.25 * np.sin(x / 37.0) * np.cos(y / 23.0) + 0.25 * np.sin((x + y) / 211.0)
        rng = np.random.default_rng(r0 * 7 + c0)
        v += rng.normal(0, 0.03, v.shape).astype(np.float32)
        top = 255 if dtype == "uint8" else 65535
        return np.clip(v * top, 0, top).astype(dtype)

    arr = da.map_blocks(block, dtype=dtype, chunks=((CHUNK,) * (size // CHUNK),) * 2)
    arr.to_zarr(path, overwrite=True)


def _index_matrix(size: int) -> np.ndarray:
    """Output index (row, col) -> source index, rotation + scale about the centre."""
    c, s = np.cos(ANGLE), np.sin(ANGLE)
    lin = np.array([[c, -s], [s, c]]) / SCALE
    centre = np.array([size / 2, size / 2])
    m = np.eye(3)
    m[:2, :2] = lin
    m[:2, 2] = centre - lin @ centre
    return m


def _transform(size: int, kind: str):
    from clemlab import transforms as T

    centre = np.array([STAGE, STAGE]) + size * PIXEL / 2
    sim = T.Translation(-centre).then(T.Similarity(SCALE, ANGLE)).then(T.Translation(centre))
    sim = sim.with_frames("EM", "OUT")
    if kind == "affine":
        return sim
    rng = np.random.default_rng(0)
    src = rng.uniform(STAGE, STAGE + size * PIXEL, (50, 2))
    dst = sim(src) + rng.normal(0, 3 * PIXEL, (50, 2))  # a few px of non-linear distortion
    if hasattr(T, "ThinPlateSpline"):
        return T.ThinPlateSpline.from_estimate(src, dst, source_frame="EM", target_frame="OUT")
    raise SystemExit("clemlab.transforms.ThinPlateSpline is not available")


def child(cfg: dict) -> dict:
    """One measured configuration (runs in a fresh subprocess)."""
    import dask
    import dask.array as da
    import zarr

    size, src, out = cfg["size"], cfg["src"], cfg["out"]
    name = cfg["name"]
    if name in ("clemlab", "clemlab-tps"):
        import cv2  # noqa: F401  (imported before timing, as the OpenCV baseline is)

        import clemlab as cl

        data = da.from_zarr(src)
        img = cl.as_image(data, pixel_size=PIXEL, origin=(STAGE, STAGE), modality="EM")
        like = cl.as_image(da.zeros_like(data), pixel_size=PIXEL, origin=(STAGE, STAGE), modality="OUT")
        tf = _transform(size, "affine" if name == "clemlab" else "tps")
        t0 = time.perf_counter()
        res = cl.warp(img, tf, like=like, chunks=CHUNK)
        with dask.config.set(scheduler="threads", num_workers=2):
            res.data.to_zarr(out, overwrite=True)
        dt = time.perf_counter() - t0
    elif name == "dask-image":
        from dask_image.ndinterp import affine_transform

        data = da.from_zarr(src)
        t0 = time.perf_counter()
        res = affine_transform(data, _index_matrix(size), output_shape=data.shape, output_chunks=(CHUNK, CHUNK), order=1)
        with dask.config.set(scheduler="threads", num_workers=2):
            res.to_zarr(out, overwrite=True)
        dt = time.perf_counter() - t0
    elif name == "opencv":
        import cv2

        cv2.setNumThreads(2)
        arr = zarr.open_array(src, mode="r")[...]
        m = _index_matrix(size)
        mcv = np.array([[m[1, 1], m[1, 0], m[1, 2]], [m[0, 1], m[0, 0], m[0, 2]]])  # (row, col) -> (x, y)
        t0 = time.perf_counter()
        cv2.warpAffine(arr, mcv, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        dt = time.perf_counter() - t0
    elif name == "scipy":
        from scipy import ndimage

        arr = zarr.open_array(src, mode="r")[...]
        t0 = time.perf_counter()
        ndimage.affine_transform(arr, _index_matrix(size), order=1)
        dt = time.perf_counter() - t0
    else:
        raise ValueError(name)
    # VmHWM: this process's own peak (ru_maxrss would keep the parent's peak across exec)
    with open("/proc/self/status") as fh:
        rss = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024  # MiB
    return {"name": name, "seconds": dt, "mpx_per_s": size * size / dt / 1e6, "peak_rss_mb": rss}


def run(name: str, size: int, src: str, out: str) -> dict:
    cfg = json.dumps({"name": name, "size": size, "src": src, "out": out})
    proc = subprocess.run([sys.executable, __file__, "--child", cfg], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=16384, help="image side in px (multiple of 2048)")
    ap.add_argument("--no-double", action="store_true", help="skip the doubled side")
    ap.add_argument("--no-scipy", action="store_true", help="skip the (slow) scipy baseline")
    ap.add_argument("--no-tps", action="store_true", help="skip the thin-plate-spline warp")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    size = args.size
    tmp = tempfile.mkdtemp(prefix="clemlab-bench-")
    try:
        print(f"warp {size}x{size}, zarr {CHUNK}^2 chunks, rotation 10 deg + scale 1.1, bilinear, 2 threads")
        print(f"{'dtype':7} {'engine':12} {'s':>7} {'Mpx/s':>8} {'RSS MB':>8}")
        results = {}
        for dtype in ("uint8", "uint16"):
            src = os.path.join(tmp, f"in-{dtype}.zarr")
            _make_input(src, size, dtype)
            names = ["clemlab", "opencv", "dask-image"] + ([] if args.no_scipy else ["scipy"])
            if dtype == "uint8" and not args.no_tps:
                names.append("clemlab-tps")
            for name in names:
                r = run(name, size, src, os.path.join(tmp, "out.zarr"))
                results[(dtype, name)] = r
                print(f"{dtype:7} {name:12} {r['seconds']:7.2f} {r['mpx_per_s']:8.1f} {r['peak_rss_mb']:8.0f}", flush=True)
            base = results[(dtype, "clemlab")]["mpx_per_s"]
            for other in names[1:]:
                if other.startswith("clemlab"):
                    continue
                print(f"  {dtype}: clemlab / {other} throughput = {base / results[(dtype, other)]['mpx_per_s']:.2f}x")
            shutil.rmtree(src, ignore_errors=True)
        if not args.no_tps:
            tps = results[("uint8", "clemlab-tps")]["seconds"] / results[("uint8", "clemlab")]["seconds"]
            print(f"  TPS (50 landmarks) time / affine time = {tps:.2f}x")
        if not args.no_double:
            src = os.path.join(tmp, "in-double.zarr")
            _make_input(src, 2 * size, "uint8")
            r2 = run("clemlab", 2 * size, src, os.path.join(tmp, "out.zarr"))
            r1 = results[("uint8", "clemlab")]
            print(f"uint8   clemlab@{2 * size} {r2['seconds']:7.2f} {r2['mpx_per_s']:8.1f} {r2['peak_rss_mb']:8.0f}")
            print(f"  doubling the side: time x{r2['seconds'] / r1['seconds']:.2f} (4x pixels), "
                  f"peak RSS {100 * (r2['peak_rss_mb'] / r1['peak_rss_mb'] - 1):+.0f}%")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

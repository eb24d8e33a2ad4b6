"""warp + OME-Zarr write on a real dask.distributed LocalCluster: bytes equal the threaded run
(an affine warp, and a thin-plate spline, whose chunks are planned in tasks of their own)."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
from scipy import ndimage

import clemlab as cl
from clemlab import transforms as T

distributed = pytest.importorskip("distributed")


def _inputs():
    g = ndimage.gaussian_filter(np.random.default_rng(3).random((600, 700)), 2)
    em = cl.as_image(da.from_array((g / g.max() * 255).astype(np.uint8), chunks=(200, 250)), pixel_size=0.01,
                     origin=(1.0e5, 1.0e5), modality="EM")
    c = np.array([1.0e5 + 3.5, 1.0e5 + 3.0])
    tf = T.Translation(-c).then(T.Similarity(1.05, 0.2)).then(T.Translation(c + 0.1)).with_frames("EM", "OUT")
    like = cl.as_image(np.zeros((500, 640), np.uint8), pixel_size=0.011, origin=(1.0e5 + 0.3, 1.0e5 + 0.2), modality="OUT")
    pts = 1.0e5 + np.random.default_rng(4).uniform(0, 7, (12, 2))
    tps = T.ThinPlateSpline.from_estimate(pts, tf(pts) + np.random.default_rng(5).normal(0, 0.02, (12, 2)),
                                          source_frame="EM", target_frame="OUT")
    return em, tf, like, tps


def _run(path):
    em, tf, like, tps = _inputs()
    out = cl.warp(em, tf, like=like, chunks=(128, 160))
    cl.write_ome_zarr(out, path, scale_factors=(2, 4))
    # 32-px zarr chunks: written block by block (8 x 32 = 256 px blocks), on the cluster too
    cl.write_ome_zarr(out, path.with_suffix(".blocks"), scale_factors=(2, 4), chunks=32)
    curved = cl.warp(em, tps, like=like, chunks=(64, 80))  # 8 x 8 chunks: 4 planning tasks
    assert sum(str(k[0]).startswith("plan-") for k in dict(curved.data.__dask_graph__())) == 4
    assert np.count_nonzero(curved.values) > 0.8 * curved.size  # the spline lands on the image
    cl.write_ome_zarr(curved, path.with_suffix(".tps"), scale_factors=())
    files = {}
    for suffix in ("", ".blocks", ".tps"):
        root = path.with_suffix(suffix) if suffix else path
        files.update({suffix + "/" + k: (root / k).read_bytes() for k in _files(root)})
    return files


def _files(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def test_local_cluster_bytes_identical(tmp_path):
    with dask.config.set(scheduler="threads"):
        ref = _run(tmp_path / "threads.ome.zarr")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        with distributed.Client(cluster) as client:
            got = _run(tmp_path / "cluster.ome.zarr")
            assert len(client.scheduler_info()["workers"]) == 2
    finally:
        cluster.close()
    assert cluster.status.name == "closed"
    assert got.keys() == ref.keys() and len(ref) > 10
    assert all(got[k] == ref[k] for k in ref)

"""Lazy warp engine: one task per output chunk, footprint reads, OpenCV vs scipy, map bound."""

from __future__ import annotations

import threading

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

import clemlab as cl
from clemlab import transforms as T
from clemlab.errors import ImageError
from clemlab.resample import POSITION_BOUND_PX, map_tolerance
from clemlab.resample.nodes import coarse_map


class CountingArray:
    """Array-like that records every region read (for dask.array.from_array)."""

    def __init__(self, arr):
        self.arr, self.shape, self.dtype, self.ndim = arr, arr.shape, arr.dtype, arr.ndim
        self.reads = []
        self._lock = threading.Lock()

    def __getitem__(self, key):
        with self._lock:
            self.reads.append(key)
        return self.arr[key]


class Swirl(T.Transform):
    """A smooth non-linear test map: ``x' = x + a sin(y / L)``, ``y' = y + a cos(x / L)``."""

    def __init__(self, a, length, centre, inverse=False, source_frame=None, target_frame=None):
        super().__init__(2, source_frame, target_frame)
        self._a, self._l, self._c, self._inv = float(a), float(length), np.asarray(centre, float), bool(inverse)

    def _fwd(self, p):
        q = p - self._c
        return np.c_[q[:, 0] + self._a * np.sin(q[:, 1] / self._l), q[:, 1] + self._a * np.cos(q[:, 0] / self._l)] + self._c

    def _apply(self, pts):
        if not self._inv:
            return self._fwd(pts)
        x = pts.copy()
        for _ in range(60):  # fixed point: contraction for a / L < 1
            x = x - (self._fwd(x) - pts)
        return x

    @property
    def inverse(self):
        return Swirl(self._a, self._l, self._c, not self._inv, self.target_frame, self.source_frame)

    def _params_dict(self):
        return {"a": self._a, "length": self._l, "centre": self._c.tolist(), "inverse": self._inv}

    @classmethod
    def _from_params(cls, d):
        return cls(d["a"], d["length"], d["centre"], d["inverse"], d.get("source_frame"), d.get("target_frame"))


def texture(shape, seed=0, vmax=255.0):
    g = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 3)
    return (g - g.min()) / (g.max() - g.min()) * vmax


STAGE = 1.0e5  # µm: stage coordinates of a real grid
SRC_PX, DST_PX = 0.004, 0.005


def source(dtype, shape=(300, 360), seed=0):
    vmax = {np.uint8: 255, np.uint16: 60000, np.float32: 1000.0}[dtype]
    data = texture(shape, seed, vmax).astype(dtype)
    return cl.as_image(data, pixel_size=SRC_PX, origin=(STAGE + 0.37, STAGE - 0.21), modality="EM")


def target(shape=(200, 230)):
    return cl.as_image(np.zeros(shape, np.uint8), pixel_size=DST_PX, origin=(STAGE + 0.1, STAGE + 0.05), modality="TGT")


TRANSFORMS = {  # linear parts; centred on the stage positions by _center_on
    "rotation+scale": T.Similarity(1.1, 0.35, [0.0, 0.0]).matrix,
    "shear": np.array([[1.0, 0.08, 0.0], [-0.05, 0.97, 0.0], [0, 0, 1]]),
}


def _center_on(m, src, dst):
    """Affine with linear part ``m`` mapping the source centre onto the target centre (µm)."""
    cs = np.array([float(src.x.mean()), float(src.y.mean())])
    cd = np.array([float(dst.x.mean()), float(dst.y.mean())]) + [0.013, -0.007]
    out = np.eye(3)
    out[:2, :2] = np.asarray(m)[:2, :2]
    out[:2, 2] = cd - out[:2, :2] @ cs
    return T.Affine(matrix=out, source_frame="EM", target_frame="TGT")


def scipy_reference(src, dst, tf, order=1):
    """Independent reference: exact physical mapping per output pixel + map_coordinates."""
    yy, xx = np.meshgrid(dst.y.values, dst.x.values, indexing="ij")
    p = tf.inverse(np.c_[xx.ravel(), yy.ravel()])
    cols = (p[:, 0] - float(src.x[0])) / src.clem.pixel_size["x"]
    rows = (p[:, 1] - float(src.y[0])) / src.clem.pixel_size["y"]
    ref = ndimage.map_coordinates(src.values.astype(np.float64), [rows, cols], order=order, cval=0, mode="constant")
    inner = (rows > 1) & (rows < src.sizes["y"] - 2) & (cols > 1) & (cols < src.sizes["x"] - 2)
    return ref.reshape(xx.shape), inner.reshape(xx.shape)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("chunking", ["numpy", (64, 64), (100, 1000), (37, 53)])
@pytest.mark.parametrize("tfname", sorted(TRANSFORMS))
def test_lazy_equals_scipy_reference(dtype, chunking, tfname):
    src, dst = source(dtype), target()
    tf = _center_on(TRANSFORMS[tfname], src, dst)
    if chunking != "numpy":
        src = src.copy(data=da.from_array(src.values, chunks=chunking))
    out = cl.warp(src, tf, like=dst, chunks=(48, 70))
    assert isinstance(out.data, da.Array) and out.dtype == dtype
    assert out.data.numblocks == (5, 4)  # 200 / 48, 230 / 70 -> one task per output chunk
    ref, inner = scipy_reference(src, dst, tf)
    assert inner.sum() > 0.5 * inner.size
    got = out.values.astype(np.float64)
    tol = 1.0 if dtype != np.float32 else 1e-3 * 1000
    np.testing.assert_array_less(np.abs(got - ref)[inner], tol + 1e-9)
    if dtype != np.float32:  # integers: OpenCV and scipy round the same, nearly everywhere
        assert np.mean(got[inner] == np.rint(ref[inner])) > 0.99


def test_reads_only_the_footprint():
    data = texture((512, 512)).astype(np.uint8)
    counting = CountingArray(data)
    src = cl.as_image(da.from_array(counting, chunks=(64, 64)), pixel_size=1.0, modality="EM")
    tf = T.Translation([-300.0, -300.0], source_frame="EM", target_frame="T")  # output (0..99) <- source (300..399)
    like = cl.as_image(np.zeros((100, 100), np.uint8), pixel_size=1.0, modality="T")
    out = cl.warp(src, tf, like=like, chunks=50)
    counting.reads.clear()  # dask's meta probe (an empty slice) at from_array time
    with dask.config.set(scheduler="synchronous"):
        block = out.data.blocks[0, 0].compute()
    # output rows/cols 0..49 come from source 300..349 (+-1 px margin): source chunks 4 and 5
    read_rows = {k[0].start for k in counting.reads}
    assert read_rows <= {256, 320} and len(counting.reads) <= 4
    np.testing.assert_array_equal(block, data[300:350, 300:350])
    counting.reads.clear()
    np.testing.assert_array_equal(out.values, data[300:400, 300:400])
    assert len(counting.reads) <= 9  # never the whole 8 x 8 source


def test_numpy_and_dask_inputs_identical_and_channels():
    lm = cl.as_image(np.stack([texture((120, 140), s) for s in (1, 2)]).astype(np.uint16), pixel_size=0.1,
                     channels=["a", "b"], modality="LM")
    em = cl.as_image(np.zeros((150, 170), np.uint8), pixel_size=0.07, origin=(1.0, 0.5), modality="EM")
    tf = T.Similarity(1.0, 0.2, [0.5, -0.3], source_frame="LM", target_frame="EM")
    a = cl.warp(lm, tf, like=em, chunks=64)
    b = cl.warp(lm.copy(data=da.from_array(lm.values, chunks=(1, 50, 60))), tf, like=em, chunks=(40, 90))
    assert a.dims == ("c", "y", "x") and a.data.chunks[0] == (2,) and b.data.chunks[0] == (1, 1)
    np.testing.assert_array_equal(a.values, b.values)


def test_an_in_memory_image_is_read_in_place_not_copied():
    # a numpy image is the warp's source as it is: preparing the warp allocates nothing of its
    # size (a copy would double the memory an in-memory warp needs), and computing reads it
    import tracemalloc

    arr = texture((2048, 2048), 3).astype(np.float32)  # 16 MiB
    img = cl.as_image(arr, pixel_size=0.1, modality="LM")
    tf = T.Similarity(1.0, 0.1, [2.0, -1.0], source_frame="LM", target_frame="LM")
    tracemalloc.start()
    try:
        out = cl.warp(img, tf, like=img, chunks=512)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < arr.nbytes / 4, f"preparing the warp allocated {peak / 2**20:.1f} MiB"
    expected = cl.warp(img.copy(data=da.from_array(arr.copy(), chunks=1024)), tf, like=img, chunks=512).values
    np.testing.assert_array_equal(out.values, expected)

def test_higher_order_and_3d_use_scipy_per_chunk():
    src = cl.as_image(texture((90, 100), 3).astype(np.float64), pixel_size=0.1, modality="EM")
    dst = cl.as_image(np.zeros((70, 80)), pixel_size=0.1, origin=(0.6, 0.8), modality="T")
    tf = T.Similarity(1.05, 0.1, [0.2, -0.4], source_frame="EM", target_frame="T")
    out = cl.warp(src, tf, like=dst, order=3, chunks=25).values
    ref, inner = scipy_reference(src, dst, tf, order=3)
    # the spline prefilter of a padded footprint differs from the whole image's only slightly
    np.testing.assert_allclose(out[inner], ref[inner], atol=2e-3 * 255)
    z, y, x = np.mgrid[0:20, 0:30, 0:40]
    vol = cl.as_image((x + 2 * y + 3 * z).astype(np.float32), pixel_size=(0.3, 0.1, 0.1), modality="LM")
    t3 = T.Translation([0.25, 0.3, 0.6], source_frame="LM", target_frame="EM")
    like = cl.as_image(np.zeros((10, 12, 14), np.float32), pixel_size=0.1, origin=(1.5, 1.0, 1.0), modality="EM")
    lazy = cl.warp(vol.copy(data=da.from_array(vol.values, chunks=(7, 11, 13))), t3, like=like, chunks=(4, 5, 6))
    assert lazy.data.numblocks == (3, 3, 3)
    xs, ys, zs = np.meshgrid(like.x.values - 0.25, like.y.values - 0.3, like.z.values - 0.6, indexing="xy")
    np.testing.assert_allclose(lazy.values, np.transpose(xs / 0.1 + 2 * ys / 0.1 + 3 * zs / 0.3, (2, 0, 1)), atol=1e-3)


def _position_error(tf, src, dst, n=10_000, seed=0, chunks=(96, 128)):
    """Warp ramp images (value = source row / col index) and compare with exact evaluation."""
    rows, cols = np.mgrid[0 : src.sizes["y"], 0 : src.sizes["x"]].astype(np.float32)
    ramps = cl.as_image(np.stack([rows, cols]), pixel_size=src.clem.pixel_size["x"],
                        origin=(float(src.y[0]), float(src.x[0])), channels=["r", "c"], modality="EM")
    out = cl.warp(ramps, tf, like=dst, chunks=chunks, fill=np.nan).values
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, dst.sizes["y"], n), rng.integers(0, dst.sizes["x"], n)
    p = tf.inverse(np.c_[dst.x.values[j], dst.y.values[i]])
    er = (p[:, 1] - float(src.y[0])) / src.clem.pixel_size["y"]
    ec = (p[:, 0] - float(src.x[0])) / src.clem.pixel_size["x"]
    inside = (er > 1) & (er < src.sizes["y"] - 2) & (ec > 1) & (ec < src.sizes["x"] - 2)
    assert inside.sum() > 0.5 * n
    return np.hypot(out[0, i, j] - er, out[1, i, j] - ec)[inside]


def test_nonlinear_map_within_bound_of_exact_evaluation():
    src = cl.as_image(np.zeros((400, 420), np.float32), pixel_size=0.01, origin=(STAGE, STAGE), modality="EM")
    dst = cl.as_image(np.zeros((300, 330), np.uint8), pixel_size=0.012, origin=(STAGE + 0.5, STAGE + 0.6), modality="T")
    tf = Swirl(0.15, 0.4, [STAGE + 2, STAGE + 2], source_frame="EM", target_frame="T")
    err = _position_error(tf, src, dst)
    assert err.max() < POSITION_BOUND_PX  # map tolerance + OpenCV's sampling error + float32 rounding
    # the coarse map itself, against exact evaluation, stays within map_tolerance()
    from clemlab.resample.index_map import _grid_matrix, _IndexMap

    imap = _IndexMap(tf, _grid_matrix(src), _grid_matrix(dst))
    maps, spacing, est = coarse_map(imap, (40, 50), (150, 170), np.zeros(2), np.float64)
    idx = np.indices((150, 170)).reshape(2, -1).T
    exact = imap(idx, (40, 50)).reshape(150, 170, 2)
    assert 1 < spacing < 64 and est <= map_tolerance()
    assert np.abs(maps - exact).max() < map_tolerance() * 1.5


@pytest.mark.skipif(not hasattr(T, "ThinPlateSpline"), reason="ThinPlateSpline not in clemlab.transforms")
def test_tps_50_landmarks_within_bound():
    rng = np.random.default_rng(5)
    src_pts = rng.uniform(0, 4.0, (50, 2)) + STAGE
    dst_pts = src_pts + rng.normal(0, 0.02, (50, 2)) + [0.3, -0.2]
    tps = T.ThinPlateSpline.from_estimate(src_pts, dst_pts, source_frame="EM", target_frame="T")
    src = cl.as_image(np.zeros((400, 400), np.float32), pixel_size=0.01, origin=(STAGE, STAGE), modality="EM")
    dst = cl.as_image(np.zeros((300, 300), np.uint8), pixel_size=0.012, origin=(STAGE + 0.5, STAGE + 0.2), modality="T")
    assert _position_error(tps, src, dst, seed=1).max() < POSITION_BOUND_PX


@pytest.mark.parametrize("shape", [(512, 640), (509, 637)])
def test_smooth_maps_are_resampled_as_affine_cells_within_bound(shape):
    """Piecewise-affine path: a TPS over a large field (BigWarp's parameterisation, landmark
    noise 0.02 px: 35 cells of 64-256 px) is tiled by cells that cover the chunk once, each affine to within
    map_tolerance() of exact evaluation at every pixel; the warp through it samples within
    0.05 px; a strong swirl is refused (None) and goes through cv2.remap instead."""
    from clemlab.resample.cells import _CELL_AREA, _CELL_MAX, cell_affines
    from clemlab.resample.index_map import _grid_matrix, _IndexMap

    rng = np.random.default_rng(21)
    src = cl.as_image(np.zeros((1100, 1200), np.float32), pixel_size=0.01, origin=(STAGE, STAGE), modality="EM")
    dst = cl.as_image(np.zeros((900, 1000), np.uint8), pixel_size=0.012, origin=(STAGE + 0.3, STAGE + 0.4), modality="T")
    pts = STAGE + rng.uniform(0, 11.0, (30, 2))
    tps = T.ThinPlateSpline.from_estimate(pts, _center_on(TRANSFORMS["rotation+scale"], src, dst)(pts)
                                          + rng.normal(0, 0.0002, (30, 2)), bigwarp=True,
                                          source_frame="EM", target_frame="T")
    imap = _IndexMap(tps, _grid_matrix(src), _grid_matrix(dst))
    start, origin = (100, 200), np.array([37.0, 52.0])  # odd shape: cells split unevenly
    cells = cell_affines(imap, start, shape, origin)
    assert cells is not None
    boxes, mats, rest = cells
    assert rest == []  # nothing left to cv2.remap
    assert 1 < len(boxes) == len(mats) <= shape[0] * shape[1] // _CELL_AREA and mats.shape[1:] == (2, 3)
    assert min(max(h, w) for _, _, h, w in boxes) < _CELL_MAX  # some cells were split
    cover = np.zeros(shape, int)
    worst = 0.0
    for (r0, c0, h, w), m in zip(boxes, mats):
        cover[r0 : r0 + h, c0 : c0 + w] += 1
        i, j = np.mgrid[0:h, 0:w]
        x = m[0, 0] * j + m[0, 1] * i + m[0, 2]  # OpenCV's inverse map: (col, row) of the source
        y = m[1, 0] * j + m[1, 1] * i + m[1, 2]
        exact = imap(np.c_[i.ravel() + r0, j.ravel() + c0], start) - origin
        worst = max(worst, float(np.hypot(y.ravel() - exact[:, 0], x.ravel() - exact[:, 1]).max()))
    assert (cover == 1).all()
    assert worst < map_tolerance() * 1.5
    # each cell's affine is the least-squares fit with its offset moved to the middle of the
    # residuals' range on its lattice, per axis: 5 x 5 points (first pixel to one past the
    # last), or for two quadtree siblings merged into one cell (2:1) their lattices' union
    u = np.linspace(0, 1, 5)

    def lattice(n, pair):
        a = -(-n // 2)  # the first sibling's side
        return np.r_[a * u[:-1], a + (n - a) * u] if pair else n * u

    pairs = 0
    for (r0, c0, h, w), m in zip(boxes, mats):
        pair = 1.8 < max(h, w) / min(h, w) < 2.2  # quadtree cells are square, or thin at the chunk's edge
        pairs += pair
        i, j = (a.ravel() for a in np.meshgrid(lattice(h, pair and h > w), lattice(w, pair and w > h), indexing="ij"))
        exact = imap(np.c_[i + r0, j + c0], start) - origin
        res = exact - np.c_[m[1, 0] * j + m[1, 1] * i + m[1, 2], m[0, 0] * j + m[0, 1] * i + m[0, 2]]
        np.testing.assert_allclose(res.max(axis=0), -res.min(axis=0), atol=1e-9)
    assert pairs > 0
    assert _position_error(tps, src, dst, seed=4, chunks=shape).max() < POSITION_BOUND_PX
    swirl = Swirl(0.02, 0.05, [STAGE + 5, STAGE + 5], source_frame="EM", target_frame="T")
    assert cell_affines(_IndexMap(swirl, _grid_matrix(src), _grid_matrix(dst)), start, shape, origin) is None


def test_affine_fits_recover_affine_maps_and_fail_on_nan():
    """The cell fit returns OpenCV's (x, y) matrix of an affine map exactly (deviation 0) on
    uniform and on uneven (merged odd-sided pairs) lattices; a NaN value fails the cell."""
    from clemlab.resample.cells import _affine_fits

    a = np.array([[0.9, 0.2, 13.0], [-0.15, 1.05, -7.0]])  # source (row, col) = a @ (row, col, 1)
    rows = np.array([[0.0, 16, 32, 48, 64], [0.0, 24.5, 49, 73.5, 98]])
    cols = np.array([[0.0, 16, 32, 48, 64, 79.75, 95.5, 111.25, 127]] * 2)  # halves of 64 and 63 px
    r, c = np.meshgrid(rows[0], cols[0], indexing="ij"), np.meshgrid(rows[1], cols[1], indexing="ij")
    vals = np.stack([np.stack([a[0, 0] * i + a[0, 1] * j + a[0, 2], a[1, 0] * i + a[1, 1] * j + a[1, 2]], -1)
                     .reshape(-1, 2) for i, j in (r, c)])
    mats, err = _affine_fits(rows, cols, vals, np.array([[64.0, 127.0], [98.0, 127.0]]))
    np.testing.assert_allclose(err, 0, atol=1e-9)
    expected = np.array([[a[1, 1], a[1, 0], a[1, 2]], [a[0, 1], a[0, 0], a[0, 2]]])  # (x, y) = (col, row)
    np.testing.assert_allclose(mats, np.stack([expected, expected]), atol=1e-9)
    vals[1, 7, 0] = np.nan
    _, err = _affine_fits(rows, cols, vals, np.array([[64.0, 127.0], [98.0, 127.0]]))
    assert err[0] < 1e-9 and not err[1] <= 1.0


def test_cells_leave_a_sharp_fold_to_remap_within_bound():
    """Two landmarks pulled 2 px apart make a sharp local fold in an otherwise smooth spline:
    the chunk is resampled as affine cells except for the boxes around the fold, which go
    through cv2.remap (their own coarse nodes). Cells and boxes cover the chunk once, within
    the OpenCV call budget, and every output pixel of the boxes samples within 0.05 px of the
    exact spline; so do random pixels of the whole chunk. Without the fold nothing is left."""
    from clemlab.resample.cells import _CELL_AREA, _REMAP_SHARE
    from clemlab.resample.index_map import _chunk_rows, _grid_matrix, _IndexMap
    from clemlab.resample.plan import _plan

    rng = np.random.default_rng(21)
    src = cl.as_image(np.zeros((1100, 1200), np.float32), pixel_size=0.01, origin=(STAGE, STAGE), modality="EM")
    dst = cl.as_image(np.zeros((900, 1000), np.uint8), pixel_size=0.012, origin=(STAGE + 0.3, STAGE + 0.4), modality="T")
    aff = _center_on(TRANSFORMS["rotation+scale"], src, dst)
    pts = STAGE + rng.uniform(0, 11.0, (30, 2))
    near = aff.inverse(np.array([[STAGE + 2.3, STAGE + 2.9], [STAGE + 2.5, STAGE + 2.9]]))  # output px ~(242, 208)
    shape = (900, 1000)
    for pull, folded in ((0.01, True), (0.0, False)):
        tps = T.ThinPlateSpline.from_estimate(
            np.r_[pts, near], np.r_[aff(pts) + rng.normal(0, 0.0002, (30, 2)), aff(near) + [[-pull, 0], [pull, 0]]],
            bigwarp=True, source_frame="EM", target_frame="T")
        imap = _IndexMap(tps, _grid_matrix(src), _grid_matrix(dst))
        kind, (boxes, mats, remaps) = _plan(imap, _chunk_rows(((0, 0), shape, np.zeros(2))), map_tolerance())[0]
        assert kind == "cells" and len(boxes) == len(mats)
        assert bool(remaps) == folded
        if not folded:
            break
        cover = np.zeros(shape, int)
        for r0, c0, h, w in boxes + [box for box, _, _ in remaps]:
            cover[r0 : r0 + h, c0 : c0 + w] += 1
        assert (cover == 1).all()
        assert len(boxes) + len(remaps) <= shape[0] * shape[1] // _CELL_AREA
        left = sum(h * w for (_, _, h, w), _, _ in remaps)
        assert 0 < left <= _REMAP_SHARE * shape[0] * shape[1]
        assert any(r0 <= 242 < r0 + h and c0 <= 208 < c0 + w for (r0, c0, h, w), _, _ in remaps)  # the fold
        # every pixel of the boxes, through the warp itself (float32 ramps of source indices)
        rows, cols = np.mgrid[0:1100, 0:1200].astype(np.float32)
        ramps = cl.as_image(np.stack([rows, cols]), pixel_size=0.01, origin=(STAGE, STAGE), channels=["r", "c"],
                            modality="EM")
        out = cl.warp(ramps, tps, like=dst, chunks=shape, fill=np.nan).values
        for (r0, c0, h, w), _, _ in remaps:
            i, j = (a.ravel() + o for a, o in zip(np.mgrid[0:h, 0:w], (r0, c0)))
            exact = imap(np.c_[i, j], 0)
            inside = ((exact > 1) & (exact < np.array([1100, 1200]) - 2)).all(axis=1)  # away from the source edge
            assert inside.mean() > 0.5
            err = np.hypot(out[0, i, j] - exact[:, 0], out[1, i, j] - exact[:, 1])[inside]
            assert np.isfinite(err).all() and err.max() < POSITION_BOUND_PX
        assert _position_error(tps, src, dst, seed=6, chunks=shape).max() < POSITION_BOUND_PX


@pytest.mark.parametrize("g", [120, 56, 24, 8, 4, 40, 64, 100])
def test_remap_strips_sample_the_bilinear_node_map(g):
    """The strip-wise, two-stage upsampling of the coarse map (nodes by g/8, then strips by 8)
    samples where one bilinear upsampling of the nodes (cv2.resize by g, whole chunk) points,
    for node spacings of 8 x odd (two stages) and others (one stage), odd chunk shapes and
    chunks thinner than one strip or one node interval."""
    from clemlab import _opencv
    from clemlab.resample.kernel import _remap_strips
    from clemlab.resample.nodes import _upsample, node_positions

    cv2 = _opencv.load()
    rows, cols = np.mgrid[0:1400, 0:1400].astype(np.float32)
    border = dict(borderMode=cv2.BORDER_CONSTANT, borderValue=float("nan"))
    for shape in [(1000, 517), (333, 130), (7, 300)]:
        gg = min(g, max(shape))
        r, c = np.meshgrid(node_positions(shape[0], gg), node_positions(shape[1], gg), indexing="ij")
        nodes = np.stack([0.9 * r + 0.1 * c + 30 + 5 * np.sin(c / 300),
                          0.95 * c - 0.05 * r + 40 + 4 * np.cos(r / 250)], axis=-1)
        got = _remap_strips(cv2, np.stack([rows, cols]), nodes, gg, shape, cv2.INTER_LINEAR, border)
        assert got.shape == (2,) + shape
        full = np.ascontiguousarray(_upsample(nodes.astype(np.float32), gg, shape)[..., ::-1])
        for k, plane in enumerate((rows, cols)):
            ref = cv2.remap(plane, full, None, cv2.INTER_LINEAR, **border)
            np.testing.assert_allclose(got[k], ref, atol=2e-3, equal_nan=True)
        # and both sample the map itself to OpenCV's 1/32 px
        assert np.nanmax(np.abs(got[0] - full[..., 1])) < 1 / 32 + 2e-3


def test_nonlinear_warps_match_scipy_reference():
    """A mild TPS (BigWarp's parameterisation) and a strong swirl, chunked: equal to the exact
    per-pixel scipy reference to within the grey-level change of 0.05 px, and their sampled
    positions (float32 ramps) within 0.05 px of exact evaluation."""
    src, dst = source(np.uint8), target()
    rng = np.random.default_rng(8)
    lo = np.array([float(src.x[0]), float(src.y[0])])
    pts = lo - 4.3 + rng.uniform(0, 10, (20, 2))  # landmarks over 10 µm, ~0.5 px of distortion
    mild = T.ThinPlateSpline.from_estimate(pts, _center_on(TRANSFORMS["rotation+scale"], src, dst)(pts)
                                           + rng.normal(0, 0.002, (20, 2)), bigwarp=True,
                                           source_frame="EM", target_frame="TGT")
    strong = Swirl(0.02, 0.05, lo + 0.7, source_frame="EM", target_frame="TGT").then(
        _center_on(np.eye(3), src, dst).with_frames(None, "TGT"))
    grad = np.abs(np.gradient(src.values.astype(np.float64))).max()  # grey levels per px
    for tf in (mild, strong):
        got = cl.warp(src.copy(data=da.from_array(src.values, chunks=(64, 64))), tf, like=dst,
                      chunks=(96, 128)).values.astype(np.float64)
        ref, inner = scipy_reference(src, dst, tf)
        assert inner.sum() > 0.5 * inner.size
        np.testing.assert_array_less(np.abs(got - ref)[inner], 1.0 + 0.05 * grad)
        assert np.mean(np.abs(got - ref)[inner] <= 1.0) > 0.99
        assert _position_error(tf, src, dst, seed=2).max() < POSITION_BOUND_PX


def test_nonlinear_chunks_are_planned_once_per_group(monkeypatch):
    """Non-linear maps: one planning task per group of up to _PLAN_GROUP² chunks, shared by
    every channel chunk; each chunk's pixels equal resampling it with a plan of its own."""
    from clemlab.resample import graph as W
    from clemlab.resample.task import _resample
    calls = []
    plan = W._plan
    monkeypatch.setattr(W, "_plan", lambda imap, chunks, tol: calls.append(len(chunks)) or plan(imap, chunks, tol))
    src = source(np.uint8)
    lm = cl.as_image(np.stack([src.values, 255 - src.values]), pixel_size=src.clem.pixel_size["x"],
                     origin=(float(src.y[0]), float(src.x[0])), channels=["a", "b"], modality="EM")
    dst = target()
    rng = np.random.default_rng(3)
    lo = np.array([float(src.x[0]), float(src.y[0])])
    pts = lo - 4.3 + rng.uniform(0, 10, (20, 2))
    tps = T.ThinPlateSpline.from_estimate(pts, _center_on(TRANSFORMS["rotation+scale"], src, dst)(pts)
                                          + rng.normal(0, 0.01, (20, 2)), bigwarp=True,
                                          source_frame="EM", target_frame="TGT")
    data = da.from_array(lm.values, chunks=(1, 64, 64))
    out = cl.warp(lm.copy(data=data), tps, like=dst, chunks=(40, 48))
    graph = dict(out.data.__dask_graph__())
    plans = [k for k in graph if isinstance(k, tuple) and str(k[0]).startswith("plan-")]
    nby, nbx = (len(c) for c in out.data.chunks[1:])
    g = W._PLAN_GROUP
    assert nby > g and nbx > g and len(plans) == -(-nby // g) * -(-nbx // g)
    assert all(graph[k][3] == map_tolerance(np.uint8) for k in plans)  # the tolerance of the source dtype
    got = out.values
    assert len(calls) == len(plans) and sum(calls) <= nby * nbx  # planned once for both channels
    for key, task in graph.items():
        if key[0] != out.data.name or task[0] is not W._warp_task:
            continue
        spec = task[2]
        (y0, y1), (x0, x1) = ((a, b) for a, b in zip(spec["lo"], spec["hi"]))
        c = key[1]
        alone = _resample(lm.values[c : c + 1, y0:y1, x0:x1], spec)  # planned by itself
        (r, cc), (h, w) = spec["out_start"], spec["out_shape"]
        np.testing.assert_array_equal(got[c : c + 1, r : r + h, cc : cc + w], alone)


def test_entirely_outside_warns_and_fills():
    src = source(np.uint8)
    far = T.Translation([1000.0, 0.0], source_frame="EM", target_frame="TGT")
    with pytest.warns(UserWarning, match="maps the whole output grid outside the source image.*direction"):
        out = cl.warp(src, far, like=target(), fill=7)
    assert out.dtype == np.uint8 and np.all(out.values == 7)
    assert len(dict(out.data.dask)) == out.data.npartitions  # the source is not even in the graph


def test_grid_and_default_chunks():
    src = source(np.uint8)
    tf = T.Identity(source_frame="EM", target_frame="G")
    xs = float(src.x[10]) + SRC_PX * np.arange(50)
    ys = float(src.y[20]) + SRC_PX * np.arange(40)
    out = cl.warp(src, tf, grid={"y": ys, "x": xs})
    assert out.clem.frame == "G" and out.data.chunks == ((40,), (50,))
    np.testing.assert_array_equal(out.values, src.values[20:60, 10:60])
    # a strongly shrinking warp gets smaller default chunks (footprints stay bounded)
    big = cl.as_image(np.zeros((300, 300), np.uint8), pixel_size=SRC_PX * 100, origin=(STAGE, STAGE), modality="G")
    shrink = cl.warp(src, tf, like=big)
    assert shrink.data.chunks[0][0] == 8192 // 100


def test_bad_input_messages():
    src, dst = source(np.uint8), target()
    tf = T.Identity(source_frame="EM", target_frame="TGT")
    with pytest.raises(ImageError, match="either like= or grid="):
        cl.warp(src, tf, like=dst, grid={"y": [0, 1], "x": [0, 1]})
    with pytest.raises(ImageError, match=r"grid\['x'\] must hold at least 2 uniformly"):
        cl.warp(src, tf, grid={"y": [0.0, 1.0], "x": [0.0, 5.0, 6.0]})
    with pytest.raises(ImageError, match="grid must be a dict"):
        cl.warp(src, tf, grid=[1, 2])
    with pytest.raises(ImageError, match="needs the transform"):
        cl.warp(src, grid={"y": [0.0, 1.0], "x": [0.0, 1.0]})
    with pytest.raises(ImageError, match="chunks has entries for \\['q'\\]"):
        cl.warp(src, tf, like=dst, chunks={"q": 3})
    with pytest.raises(ImageError, match="fill must be a number"):
        cl.warp(src, tf, like=dst, fill="black")
    with pytest.raises(ImageError, match="order must be an integer 0-5"):
        cl.warp(src, tf, like=dst, order=7)


def test_correlate_frames_and_levels_read_one_level():
    em_data = texture((256, 256), 4).astype(np.uint8)
    counting = CountingArray(em_data)
    em = cl.as_image(da.from_array(counting, chunks=64), pixel_size=0.01, origin=(STAGE, STAGE), modality="EM")
    coarse = cl.as_image(em_data.reshape(64, 4, 64, 4).mean(axis=(1, 3)).astype(np.uint8), pixel_size=0.04,
                         origin=(STAGE + 0.015, STAGE + 0.015), modality="EM")
    tree = xr.DataTree.from_dict({"scale0": xr.Dataset({"image": em}), "scale2": xr.Dataset({"image": coarse})})
    lm = cl.as_image(texture((40, 40), 5).astype(np.uint16)[None], pixel_size=0.08, origin=(STAGE, STAGE),
                     channels=["GFP"], modality="LM")
    c = np.array([STAGE + 1.3, STAGE + 1.3])
    tf = T.Translation(-c).then(T.Rigid(0.05, [0.1, -0.1])).then(T.Translation(c)).with_frames("LM", "EM")
    counting.reads.clear()  # dask's meta probe at from_array time
    with pytest.raises(ImageError, match="levels \\['scale0', 'scale2'\\]; level=1"):
        cl.correlate(tree, lm, tf, level=1)
    corr = cl.correlate(tree, lm, tf, level=2)
    assert corr["EM"].shape == (64, 64) and corr.attrs["frame"] == "EM"
    corr.compute()
    assert counting.reads == []  # scale0 never touched
    # frame="LM": EM warped onto the LM grid, from the coarsest level still finer than LM
    corr_lm = cl.correlate(tree, lm, tf, frame="LM")
    assert corr_lm["EM"].dims == ("y", "x") and corr_lm["EM"].shape == (40, 40)
    assert corr_lm["EM"].clem.frame == "LM" and corr_lm["LM"].dims == ("c", "y", "x")
    corr_lm.compute()
    assert counting.reads == []
    ref = cl.warp(coarse, tf.inverse, like=lm.isel(c=0)).values
    np.testing.assert_array_equal(corr_lm["EM"].values, ref)
    with pytest.raises(ImageError, match="frame must be 'EM' or 'LM'"):
        cl.correlate(em, lm, tf, frame="stage")


def _block_mean(a, r):
    """Reference block mean by ``r`` (trailing rows/cols dropped), rounded like clemlab's pyramid."""
    n, m = a.shape[0] // r * r, a.shape[1] // r * r
    mean = a[:n, :m].astype(np.float64).reshape(n // r, r, m // r, r).mean(axis=(1, 3))
    return np.clip(np.rint(mean), 0, np.iinfo(a.dtype).max).astype(a.dtype)


def test_warp_written_block_by_block_equals_whole(tmp_path, monkeypatch):
    """A lazy warp written to OME-Zarr in several passes (chunks 16: shards of 128 px; blocks
    limited to one shard, so a 300 x 333 output takes 3 x 3 passes) gives the pyramid of the
    whole image."""
    import zarr

    from clemlab.io import zarr as cz

    monkeypatch.setattr(cz, "STORE_BLOCK_BYTES", 128 * 128)

    src = source(np.uint8, shape=(420, 470))
    tf = _center_on(TRANSFORMS["rotation+scale"], src, target((300, 333)))
    out = cl.warp(src, tf, like=target((300, 333)), chunks=(48, 40))
    path = cl.write_ome_zarr(out, tmp_path / "w.ome.zarr", scale_factors=(2, 4), chunks=16)
    lev0 = out.values
    ref = [lev0, _block_mean(lev0, 2), _block_mean(_block_mean(lev0, 2), 2)]
    group = zarr.open_group(str(path), mode="r")
    for k, r in enumerate(ref):
        np.testing.assert_array_equal(group[str(k)][...], r)

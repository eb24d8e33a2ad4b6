"""Mosaics: feathered assembly, position refinement, SerialEM mdoc layouts, pyramid reads."""

from __future__ import annotations

import threading
from pathlib import Path

import dask
import dask.array as da
import mrcfile
import numpy as np
import pytest
from scipy import ndimage

import clemlab as cl
from clemlab.errors import FileFormatError, ImageError
from clemlab.mosaic import Montage, mosaic_multiscale

MDOC_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mdocfile-serialem-mdoc"
if not MDOC_DIR.exists():
    MDOC_DIR = Path("/work/shared/data/mdocfile-serialem-mdoc")


def scene(shape=(900, 900), seed=0):
    g = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 2)
    return ((g - g.min()) / (g.max() - g.min()) * 200 + 20).astype(np.float32)


def cut_tiles(img, grid=(4, 4), tile=256, step=180, err=20, seed=1):
    rng = np.random.default_rng(seed)
    true, tiles = [], []
    for r in range(grid[0]):
        for c in range(grid[1]):
            y, x = 30 + r * step + rng.integers(-err, err + 1), 30 + c * step + rng.integers(-err, err + 1)
            tiles.append(img[y : y + tile, x : x + tile])
            true.append((x, y))
    true = np.array(true, float)
    nominal = np.array([(30 + c * step, 30 + r * step) for r in range(grid[0]) for c in range(grid[1])], float)
    return tiles, true, nominal


def test_assembly_exact_at_true_positions_and_feathered():
    img = scene()
    tiles, true, _ = cut_tiles(img)
    mos = cl.mosaic_from_tiles(tiles, true, pixel_size=0.01, chunks=200)
    assert mos.dims == ("y", "x") and isinstance(mos.data, da.Array) and mos.dtype == np.float32
    x0, y0 = true.min(axis=0).astype(int)
    assert mos.clem.origin == pytest.approx({"y": y0 * 0.01, "x": x0 * 0.01})
    vals = mos.values
    covered = vals > 0
    ref = img[y0 : y0 + vals.shape[0], x0 : x0 + vals.shape[1]]
    np.testing.assert_allclose(vals[covered], ref[covered], atol=1e-3)  # consistent tiles blend to the scene
    # feathering: with a tile brightened by 50, the seam ramps linearly instead of jumping
    bright = [t + (50 if i == 5 else 0) for i, t in enumerate(tiles)]
    m2 = cl.mosaic_from_tiles(bright, true, pixel_size=0.01).values - vals
    row = int(true[5, 1] - y0 + 128)
    prof = m2[row, int(true[5, 0] - x0) : int(true[5, 0] - x0) + 40]
    assert prof[0] < 5 and np.all(np.diff(prof[:30]) >= -1e-3) and prof[-1] > prof[0] + 10
    # sub-pixel positions are resampled bilinearly
    shifted = cl.mosaic_from_tiles(tiles[:1], true[:1] + 0.5, pixel_size=0.01).values
    np.testing.assert_allclose(shifted[5:50, 5:50], (tiles[0][5:50, 4:49] + tiles[0][5:50, 5:50] + tiles[0][4:49, 4:49] + tiles[0][4:49, 5:50])[:, :] / 4, atol=0.05)


def test_refine_positions_to_subpixel():
    img = scene()
    tiles, true, nominal = cut_tiles(img)
    refined, report = cl.refine_positions(tiles, nominal)
    err_before = (nominal - true) - (nominal - true).mean(axis=0)
    err_after = (refined - true) - (refined - true).mean(axis=0)
    assert np.sqrt((err_before**2).sum(axis=1).mean()) > 5
    assert np.sqrt((err_after**2).sum(axis=1).mean()) < 0.5
    assert {"i", "j", "dx", "dy", "residual_px", "used"} <= set(report.columns)
    assert report["used"].sum() >= 20 and report.loc[report.used, "residual_px"].max() < 1.0
    with pytest.raises(ImageError, match="no two tiles overlap by at least min_overlap=16"):
        cl.refine_positions(tiles[:2], [[0, 0], [1000, 0]])


def test_mdoc_atlas_layout_with_synthetic_tiles():
    mdoc = MDOC_DIR / "montage_section.mdoc"
    mont = Montage(mdoc)
    assert len(mont.z) == 62 and mont.tile_shape == (3976, 5064) and mont.frames == (7, 9)
    assert mont.pixel_size_um == pytest.approx(0.0656139)
    assert mont.missing_slots() == [(26928, 0)]

    def tile(z):  # synthetic stand-in for the (absent) LMM.mrc sections, counted
        reads.append(z)
        return np.full((3976, 5064), z, np.uint16)

    reads = []
    tiles = [da.from_delayed(dask.delayed(tile)(z), shape=(3976, 5064), dtype=np.uint16) for z in range(62)]
    mos = cl.open_montage(mdoc, tiles=tiles, positions="piece")
    assert mos.shape == (31176, 31992)  # FullMontSize, never allocated
    assert mos.attrs["clem:montage"]["full_size_xy"] == [31992, 31176]
    assert mos.clem.pixel_size["x"] == pytest.approx(0.0656139)
    # a pixel at the centre of piece ZValue=1 (PieceCoordinates 0 3400): only that tile is read
    with dask.config.set(scheduler="synchronous"):
        v = int(mos.isel(y=3400 + 2000, x=2500).values)
    assert v == 1 and reads == [1]
    aligned = cl.open_montage(mdoc, tiles=tiles)
    assert aligned.attrs["clem:montage"]["positions"] == "AlignedPieceCoordsVS"
    multi = Montage(MDOC_DIR / "montage_section_multiple.mdoc", section=3)
    assert len(multi.z) == 9 and multi.pixel_size_um == pytest.approx(0.00768)


def test_montage_from_mrc_and_bad_input(tmp_path):
    img = scene((400, 400)).astype(np.int16)
    tiles, true, _ = cut_tiles(img, grid=(2, 2), tile=128, step=100, err=0)
    stack = tmp_path / "mont.mrc"
    with mrcfile.new(str(stack)) as m:
        m.set_data(np.stack(tiles))
    lines = ["PixelSpacing = 20.0", "ImageFile = mont.mrc", "ImageSize = 128 128", "Montage = 1", ""]
    for z, (x, y) in enumerate(true - true.min(axis=0)):
        lines += [f"[ZValue = {z}]", f"PieceCoordinates = {int(x)} {int(y)} 0", ""]
    (tmp_path / "mont.mrc.mdoc").write_text("\n".join(lines))
    mos = cl.open_montage(stack)
    assert mos.shape == (228, 228) and mos.clem.pixel_size["x"] == pytest.approx(0.002)
    np.testing.assert_array_equal(mos.values, img[30:258, 30:258])
    tree = cl.open_montage(stack, multiscale=True, levels=2)
    assert tree["scale1"]["image"].shape == (114, 114)
    # the mdoc lists a fifth piece the stack does not hold
    (tmp_path / "mont.mrc.mdoc").write_text("\n".join(lines + ["[ZValue = 4]", "PieceCoordinates = 200 200 0", ""]))
    with pytest.raises(FileFormatError, match="lists 5 pieces up to section 4 but .*mont.mrc' holds only 4"):
        cl.open_montage(stack)
    with pytest.raises(FileFormatError, match="no SerialEM mdoc for the montage"):
        cl.open_montage(tmp_path / "other.mrc")
    (tmp_path / "lost.mrc.mdoc").write_text("\n".join(lines))
    with pytest.raises(FileFormatError, match="lost.mrc' named by .* does not exist"):
        cl.open_montage(tmp_path / "lost.mrc.mdoc")
    with pytest.raises(ImageError, match="positions must be a finite \\(N, 2\\)"):
        cl.mosaic_from_tiles(tiles, true[:3])


class Reads:
    def __init__(self):
        self.ids, self.lock = [], threading.Lock()

    def tile(self, i):
        with self.lock:
            self.ids.append(i)
        return np.full((2048, 2048), i % 251, np.uint8)


def test_overview_reads_only_needed_tiles():
    reads = Reads()
    n, step = 40, 1948  # 100 px overlap
    tiles = [da.from_delayed(dask.delayed(reads.tile)(i), shape=(2048, 2048), dtype=np.uint8) for i in range(n * n)]
    pos = np.array([(c * step, r * step) for r in range(n) for c in range(n)], float)
    tree = mosaic_multiscale(tiles, pos, pixel_size=0.005, levels=4, chunks=1024)
    full = tree["scale0"]["image"]
    assert full.shape == (39 * step + 2048,) * 2 and reads.ids == []
    lv = tree["scale3"]["image"]  # factor 8
    view = lv.isel(y=slice(2048, 3072), x=slice(3072, 4096))  # 1024 px wide, one chunk
    with dask.config.set(scheduler="threads", num_workers=2):
        vals = view.values
    x0, x1 = 3072 * 8, 4096 * 8
    y0, y1 = 2048 * 8, 3072 * 8
    expected = {r * n + c for r in range(n) for c in range(n)
                if c * step < x1 and c * step + 2048 > x0 and r * step < y1 and r * step + 2048 > y0}
    assert set(reads.ids) == expected and len(reads.ids) == len(expected)
    # blended values: the feathered mean of the tiles' constant values lies between them
    assert vals.min() >= min(i % 251 for i in expected) and vals.max() <= max(i % 251 for i in expected)
    assert tree["scale3"]["image"].clem.pixel_size["x"] == pytest.approx(0.04)
    assert tree["scale3"]["image"].clem.origin["x"] == pytest.approx(3.5 * 0.005)


def write_idoc(folder, tiles_mrc_order, piece_xy, aligned_xy=None, stage=None, pixel_a=25.5, drop=()):
    """A SerialEM-style image series: mont.idoc + mont0000.tif ... (TIFFs top row first)."""
    import tifffile

    ny, nx = tiles_mrc_order[0].shape
    lines = ["ImageSeries = 1", f"ImageSize = {nx} {ny}", "Montage = 1", "DataMode = 6", f"PixelSpacing = {pixel_a}",
             "", "[T = SerialEM: synthetic test montage]", ""]
    for i, (tile, (x, y)) in enumerate(zip(tiles_mrc_order, piece_xy)):
        name = f"mont{i:04d}.tif"
        tifffile.imwrite(folder / name, np.ascontiguousarray(tile[::-1]))  # SerialEM: no flip for TIFF
        lines += [f"[Image = {name}]"]
        if i not in drop:
            lines += [f"PieceCoordinates = {int(x)} {int(y)} 0"]
        lines += [f"PixelSpacing = {pixel_a}", "MinMaxMean = 0 1 0.5"]
        if aligned_xy is not None:
            lines += [f"AlignedPieceCoords = {int(aligned_xy[i][0])} {int(aligned_xy[i][1])} 0"]
        if stage is not None:
            lines += [f"StagePosition = {stage[i][0]:.6f} {stage[i][1]:.6f}"]
        lines += [""]
    (folder / "mont.idoc").write_text("\n".join(lines))
    return folder / "mont.idoc"


def test_idoc_montage_from_tiff_tiles(tmp_path):
    img = (scene((360, 420), seed=3) * 100).astype(np.uint16)  # MRC row order = the mosaic's
    rng = np.random.default_rng(4)
    nominal = np.array([(20 + c * 110, 15 + r * 90) for r in range(3) for c in range(3)], float)
    true = nominal + rng.integers(-6, 7, nominal.shape)
    tiles = [img[int(y) : int(y) + 100, int(x) : int(x) + 128] for x, y in true]
    piece = nominal - nominal.min(axis=0)  # the stage's nominal lattice, as SerialEM writes it
    aligned = true - true.min(axis=0)
    a = np.array([[0.0, 0.0025], [-0.0025, 0.0]])  # stage µm per montage pixel: rotated 90° and mirrored
    centres = piece + (np.array([128, 100]) - 1) / 2
    stage = centres @ a.T + [120.0, -35.0]
    idoc = write_idoc(tmp_path, tiles, piece, aligned, stage)

    mos = cl.open_montage(idoc)
    assert isinstance(mos.data, da.Array) and mos.dtype == np.uint16
    x0, y0 = true.min(axis=0).astype(int)
    x1, y1 = (true.max(axis=0) + [128, 100]).astype(int)
    assert mos.shape == (y1 - y0, x1 - x0)
    assert mos.clem.pixel_size == pytest.approx({"y": 0.00255, "x": 0.00255})
    assert mos.attrs["clem:montage"]["positions"] == "AlignedPieceCoords"
    assert mos.attrs["clem:montage"]["idoc"] == str(idoc) and mos.attrs["clem:montage"]["pieces"] == 9
    vals = mos.values
    covered = np.zeros(vals.shape, bool)
    for x, y in true - [x0, y0]:
        covered[int(y) : int(y) + 100, int(x) : int(x) + 128] = True
    np.testing.assert_array_equal(vals[covered], img[y0:y1, x0:x1][covered])  # exact ground truth
    assert np.all(vals[~covered] == 0)
    # the nominal lattice (before SerialEM aligned the pieces) gives another layout
    nominal_mos = cl.open_montage(idoc, positions="piece")
    assert nominal_mos.shape == tuple(int(v) for v in (piece.max(axis=0) + [128, 100])[::-1])
    tree = cl.open_montage(idoc, multiscale=True, levels=2)
    lv1 = tree["scale1"]["image"]
    assert lv1.clem.pixel_size["x"] == pytest.approx(0.0051) and lv1.shape == (vals.shape[0] // 2 + vals.shape[0] % 2,
                                                                               vals.shape[1] // 2 + vals.shape[1] % 2)
    # the stage fit reads the idoc's [Image] sections like an mdoc's [ZValue] sections
    tf = cl.io.serialem.mdoc_pixel_to_stage(idoc)
    np.testing.assert_allclose(tf.matrix[:2, :2], a, atol=1e-9)


def test_idoc_bad_input(tmp_path):
    img = (scene((200, 260), seed=5) * 100).astype(np.uint16)
    piece = np.array([(0, 0), (100, 0), (0, 80), (100, 80)], float)
    tiles = [img[int(y) : int(y) + 96, int(x) : int(x) + 128] for x, y in piece]
    idoc = write_idoc(tmp_path, tiles, piece)
    assert cl.open_montage(idoc).shape == (176, 228)
    (tmp_path / "mont0003.tif").unlink()
    with pytest.raises(FileFormatError, match=r"names 1 tile file\(s\) that do not exist: '.*mont0003\.tif'"):
        cl.open_montage(idoc)
    write_idoc(tmp_path, tiles, piece, drop=(2,))
    with pytest.raises(FileFormatError, match=r"section \[Image = mont0002\.tif\] has no PieceCoordinates"):
        cl.open_montage(idoc)
    write_idoc(tmp_path, tiles, piece)
    import tifffile

    tifffile.imwrite(tmp_path / "mont0001.tif", np.zeros((50, 128), np.uint16))  # replaced after the fact
    mos = cl.open_montage(idoc)
    with pytest.raises(FileFormatError, match=r"tile '.*mont0001\.tif' holds an image of shape \(50, 128\)"):
        mos.values
    with pytest.raises(FileFormatError, match="image-series file '.*nothere.idoc' does not exist"):
        cl.open_montage(tmp_path / "nothere.idoc")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_pyramid_levels_are_block_means(dtype):
    rng = np.random.default_rng(7)
    tile = (rng.random((256, 320)) * 250).astype(dtype)
    tree = mosaic_multiscale([tile], [[0.0, 0.0]], levels=7, chunks=64)
    for k in range(1, 7):  # factors 2..64: both the area-resampling and the row-sum paths
        f = 2**k
        ref = tile[: 256 // f * f, : 320 // f * f].reshape(256 // f, f, 320 // f, f).mean(axis=(1, 3))
        got = tree[f"scale{k}"]["image"].values
        assert got.shape == ref.shape and got.dtype == dtype
        if dtype == np.float32:
            np.testing.assert_allclose(got, ref, rtol=1e-5)
        else:  # rounded once, after blending
            assert np.abs(got - np.rint(ref)).max() <= 1 and np.mean(got != np.rint(ref)) < 0.01

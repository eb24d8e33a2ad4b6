"""The `clemlab` command, run as a user runs it (a subprocess): demo, register (every landmark
format), correlate, targets, register-images, help, progress and Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import clemlab as cl


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "clemlab.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The small synthetic sample as files: LM and EM OME-TIFFs, bead landmarks (LM -> EM)."""
    d = tmp_path_factory.mktemp("sample")
    s = cl.synthetic_clem_small(seed=1)
    cl.write_ome_tiff(s.lm, d / "lm.ome.tif")
    cl.write_ome_tiff(s.em, d / "em.ome.tif")
    rng = np.random.default_rng(0)
    lms = cl.Landmarks.from_points(s.fiducials_lm + rng.normal(0, 0.01, s.fiducials_lm.shape), s.fiducials_em)
    lms.save(d / "pairs.json")
    return s, d, lms


def test_demo_writes_files_and_reports_errors(tmp_path):
    out = tmp_path / "demo"
    res = run("demo", "--out", out)
    assert res.returncode == 0, res.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["correlated.ome.tif", "landmarks.json", "overlay.png", "transform.json"]
    fre = float(re.search(r"fiducial residual RMS ([\d.]+) nm", res.stdout).group(1))
    tre = float(re.search(r"held-out points: RMS ([\d.]+) nm", res.stdout).group(1))
    assert 0 < fre < 60 and 0 < tre < 60
    # the picture is slide-sized: at least 1500 px wide
    from PIL import Image

    with Image.open(out / "overlay.png") as im:
        assert im.format == "PNG" and im.size[0] >= 1500
    # the files are what they say: the transform is close to the sample's true one
    sample = cl.synthetic_clem(seed=0)
    tf = cl.transform_from_dict(json.loads((out / "transform.json").read_text()))
    assert isinstance(tf, cl.Affine)
    assert np.abs(tf(sample.targets_lm) - sample.targets_em).max() < 0.1  # µm
    assert len(cl.Landmarks.read(out / "landmarks.json")) == len(sample.fiducials_lm)
    corr = cl.open_image(out / "correlated.ome.tif")
    assert list(corr.c.values) == ["EM"] + list(sample.lm.c.values)
    assert corr.clem.pixel_size["x"] == pytest.approx(sample.em.clem.pixel_size["x"])
    np.testing.assert_array_equal(corr.sel(c="EM").values, sample.em.values.astype(np.uint16))


def test_register_bigwarp_real_file_prints_summary(shared_data, tmp_path):
    path = shared_data("bigwarp/landmarks2d-blobs.csv")
    res = run("register", path, "--out", tmp_path / "reg.json")
    assert res.returncode == 0, res.stderr
    assert "BigWarp CSV landmarks" in res.stdout and "do not state their unit" in res.stdout
    assert "affine registration LM -> EM, 5 active pairs" in res.stdout
    expected = cl.register(cl.Landmarks.from_bigwarp(path), "affine")
    residual_line = next(ln for ln in expected.summary().splitlines() if ln.startswith("residuals"))
    assert residual_line in res.stdout
    reg = cl.Registration.load(tmp_path / "reg.json")
    np.testing.assert_allclose(reg.transform.matrix, expected.transform.matrix)
    assert reg.landmarks.names == ["Pt-0", "Pt-1", "Pt-2", "Pt-3", "Pt-4"]


def test_register_bigwarp_3d_real_file(shared_data):
    res = run("register", shared_data("bigwarp/mri-stack-translation-landmarks.csv"), "--model", "translation")
    assert res.returncode == 0, res.stderr
    assert "translation registration LM -> EM, 5 active pairs, 3 parameters" in res.stdout


@pytest.mark.parametrize("fmt", ["json", "csv", "bigwarp", "ecclem"])
def test_register_reads_every_landmark_format(tmp_path, fmt):
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 10, (7, 2))
    lms = cl.Landmarks.from_points(src, src @ np.array([[1.4, 0.2], [-0.2, 1.4]]).T + [3.0, -2.0])
    path = {"json": lambda: lms.save(tmp_path / "p.json"), "csv": lambda: lms.save(tmp_path / "p.csv"),
            "bigwarp": lambda: lms.to_bigwarp(tmp_path / "bw.csv"), "ecclem": lambda: lms.to_ecclem(tmp_path / "e.xml")}[fmt]()
    res = run("register", path, "--model", "similarity", "--out", tmp_path / "reg.json")
    assert res.returncode == 0, res.stderr
    assert "similarity registration" in res.stdout
    reg = cl.Registration.load(tmp_path / "reg.json")
    assert reg.transform.scale == pytest.approx(np.hypot(1.4, 0.2))
    np.testing.assert_allclose(reg.transform(src), lms.dst(), atol=1e-9)


def test_register_units_convert_to_um(tmp_path):
    src = np.array([[0.0, 0.0], [10, 0], [0, 10], [10, 12]])
    path = cl.Landmarks.from_points(src, src * 2 + 5).to_bigwarp(tmp_path / "bw.csv")
    res = run("register", path, "--units-fixed", "nm", "--out", tmp_path / "reg.json")
    assert res.returncode == 0, res.stderr
    assert "moving in µm, fixed in nm" in res.stdout
    tf = cl.Registration.load(tmp_path / "reg.json").transform
    np.testing.assert_allclose(tf(src), (src * 2 + 5) * 1e-3, atol=1e-12)  # nm -> µm


def test_register_out_refused_then_overwritten(tmp_path, files):
    _, d, _ = files
    out = tmp_path / "reg.json"
    out.write_text('{"a user": "registration"}\n')
    res = run("register", d / "pairs.json", "--out", out)
    assert res.returncode == 2
    assert f"{out} exists; pass --overwrite to replace it" in res.stderr and "Traceback" not in res.stderr
    assert out.read_text() == '{"a user": "registration"}\n'
    res = run("register", d / "pairs.json", "--out", out, "--overwrite")
    assert res.returncode == 0, res.stderr
    assert cl.Registration.load(out).model == "affine"


def test_warnings_print_as_one_line(tmp_path):
    path = tmp_path / "bw.csv"
    rows = [f'"P{i}","true","{x}","{y}","{2 * x + 1}","{2 * y - 1}"' for i, (x, y) in
            enumerate([(0, 0), (10, 0), (0, 10), (10, 10)])]
    path.write_text("\n".join(rows + ['"P9","true","5.0","5.0","Infinity","Infinity"']) + "\n")
    res = run("register", path)
    assert res.returncode == 0, res.stderr
    assert "clemlab: warning:" in res.stderr and "skipped unpaired BigWarp landmarks ['P9']" in res.stderr
    assert "UserWarning" not in res.stderr


def test_correlate_to_ome_zarr_puts_lm_on_the_em_grid(tmp_path, files):
    s, d, _ = files
    out = tmp_path / "corr.ome.zarr"
    res = run("correlate", d / "lm.ome.tif", d / "em.ome.tif", "--landmarks", d / "pairs.json", "--out", out)
    assert res.returncode == 0, res.stderr
    assert "warping LM onto the EM grid (512 x 512 px)" in res.stderr and "100%" in res.stderr
    img = cl.open_image(out)
    assert list(img.c.values) == ["EM", "nuclei", "GFP", "beads"]
    assert img.sizes == {"c": 4, "y": 512, "x": 512}
    np.testing.assert_allclose(img.x.values, s.em.x.values)
    np.testing.assert_allclose(img.y.values, s.em.y.values)
    np.testing.assert_array_equal(img.sel(c="EM").values, s.em.values)
    # the LM beads land on the EM beads: detected in the written LM channel, they sit at the
    # true EM bead positions (ground truth of the simulation)
    beads = cl.detect_fiducials(img.sel(c="beads"), polarity="bright", diameter=(0.2, 0.5))
    found = np.asarray(beads[["x", "y"]])
    dist = np.linalg.norm(found[:, None] - s.fiducials_em[None], axis=2).min(axis=0)
    inside = np.all((s.fiducials_em > 0.3) & (s.fiducials_em < 4.8), axis=1)
    assert inside.sum() >= 3 and np.all(dist[inside] < 0.05)  # µm
    # the registration travels with the store
    assert cl.Registration.from_dict(img.attrs["clem:registration"]).model == "affine"


def test_correlate_to_ome_tiff_from_a_registration_file(tmp_path, files):
    s, d, lms = files
    reg_path = tmp_path / "reg.json"
    assert run("register", d / "pairs.json", "--model", "similarity", "--out", reg_path).returncode == 0
    out = tmp_path / "corr.ome.tif"
    res = run("correlate", d / "lm.ome.tif", d / "em.ome.tif", "--registration", reg_path, "--out", out,
              "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "%" not in res.stderr
    img = cl.open_image(out)
    assert list(img.c.values) == ["EM", "nuclei", "GFP", "beads"]
    expected = cl.correlate(s.em, s.lm, cl.register(lms, "similarity"))
    np.testing.assert_array_equal(img.sel(c="GFP").values, expected["LM"].sel(c="GFP").values)


@pytest.mark.slow
def test_ctrl_c_leaves_no_half_written_output(tmp_path):
    rng = np.random.default_rng(0)
    em = cl.as_image(rng.integers(0, 255, (6144, 6144), dtype=np.uint8), pixel_size=0.01, modality="EM")
    lm = cl.as_image(rng.integers(0, 4000, (3, 768, 768), dtype=np.uint16), pixel_size=0.1,
                     channels=["a", "b", "c"], modality="LM")
    cl.write_ome_tiff(em, tmp_path / "em.ome.tif")
    cl.write_ome_tiff(lm, tmp_path / "lm.ome.tif")
    cl.Landmarks.from_points([[0, 0], [60, 0], [0, 60], [60, 60]],
                             [[1, 1], [61, 1], [1, 61], [61, 61.5]]).save(tmp_path / "p.json")
    before = sorted(os.listdir(tmp_path))
    for out in ("big.ome.zarr", "big.ome.tif"):
        proc = subprocess.Popen([sys.executable, "-m", "clemlab.cli", "correlate", "lm.ome.tif", "em.ome.tif",
                                 "--landmarks", "p.json", "--out", out, "--order", "3"], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen = ""
        while "% of part" not in seen and proc.poll() is None:  # the progress line is being drawn
            seen += proc.stderr.read(1)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 130, err
        assert "interrupted; no output was left half-written" in err and "Traceback" not in err
        assert sorted(os.listdir(tmp_path)) == before  # no output, no temporary left behind


def _nav_text(label, stage_xy, scale_mat, width, height, regis=2):
    return (f"AdocVersion = 2.00\n\n[Item = {label}]\nColor = 2\nStageXYZ = {stage_xy[0]} {stage_xy[1]} 0\n"
            f"NumPts = 5\nRegis = {regis}\nType = 2\nMapID = 7\nMapBinning = 1\nMontBinning = 1\n"
            f"MapScaleMat = {' '.join(str(v) for v in np.ravel(scale_mat))}\nMapWidthHeight = {width} {height}\n"
            "PtsX = 0 1 1 0 0\nPtsY = 0 0 1 1 0\n")


def test_targets_from_points_with_a_stated_stage(tmp_path, files):
    s, d, lms = files
    pts = s.targets_lm[:3]
    (tmp_path / "points.csv").write_text("name,x,y\n" + "".join(f"T{i},{float(x)!r},{float(y)!r}\n" for i, (x, y) in enumerate(pts)))
    out = tmp_path / "t.nav"
    res = run("targets", tmp_path / "points.csv", "--landmarks", d / "pairs.json", "--em", d / "em.ome.tif",
              "--stage-centre", 250, -120, "--rotation", 12, "--out", out)
    assert res.returncode == 0, res.stderr
    assert "3 targets, stage µm" in res.stdout and (tmp_path / "t.csv").exists()
    # independent: the fitted map to EM µm, EM µm -> pixels, then the stated stage geometry
    em_um = cl.register(lms, "affine").transform(pts)
    px = (em_um - [float(s.em.x[0]), float(s.em.y[0])]) / 0.01
    c, si = np.cos(np.radians(12)), np.sin(np.radians(12))
    centre = np.array([(512 - 1) / 2, (512 - 1) / 2])
    expected = [250, -120] + ((px - centre) * [1, -1] * 0.01) @ np.array([[c, -si], [si, c]]).T
    nav = cl.read_navigator(out)
    assert nav.labels == ["T0", "T1", "T2"]
    got = np.array([item.stage_xyz[:2] for item in nav])
    np.testing.assert_allclose(got, expected, atol=2e-4)  # 4 decimals in the file
    assert all("error" in item.note for item in nav)


def test_targets_from_a_navigator_map_and_regions(tmp_path, files):
    s, d, lms = files
    mat = np.array([[100.0, 0.0], [0.0, -100.0]])  # pixels per stage µm: 0.01 µm pixels, rows against y
    (tmp_path / "s.nav").write_text(_nav_text("map-A", (40.0, 30.0), mat, 512, 512, regis=2))
    # a square region (roi) in LM µm
    square = np.array([[2.0, 2.0], [3.0, 2.0], [3.0, 3.0], [2.0, 3.0]])
    (tmp_path / "regions.csv").write_text("roi,x,y\n" + "".join(f"cell1,{x},{y}\n" for x, y in square))
    out = tmp_path / "r.nav"
    res = run("targets", tmp_path / "regions.csv", "--landmarks", d / "pairs.json", "--em", d / "em.ome.tif",
              "--nav", tmp_path / "s.nav", "--map", "map-A", "--out", out)
    assert res.returncode == 0, res.stderr
    item = cl.read_navigator(out)["cell1"]
    assert item.kind == "polygon" and item.regis == 2
    # the navigator formula: stage = StageXYZ + inv(M) (pixel - centre)
    tf = cl.register(lms, "affine").transform
    px = (tf(square) - [float(s.em.x[0]), float(s.em.y[0])]) / 0.01
    stage = [40.0, 30.0] + (px - 255.5) @ np.linalg.inv(mat).T
    np.testing.assert_allclose(item.points[:4], stage, atol=2e-4)


def test_register_images_verdicts(tmp_path):
    from clemlab.datasets import synthetic_cells

    d, other = synthetic_cells(1, rotation=40.0), synthetic_cells(51)
    cl.write_ome_tiff(d.lm, tmp_path / "lm.ome.tif")
    cl.write_ome_tiff(d.em, tmp_path / "em.ome.tif")
    cl.write_ome_tiff(other.em, tmp_path / "other.ome.tif")
    res = run("register-images", tmp_path / "lm.ome.tif", tmp_path / "em.ome.tif", "--out", tmp_path / "r.json")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("verdict: good")
    tf = cl.Registration.load(tmp_path / "r.json").transform
    q = d.em.clem.to_physical(np.array([[100.0, 100.0], [1900, 300], [1000, 1800]]))
    assert np.abs(tf(d.true_inverse(q)) - q).max() < 0.2  # µm, one LM pixel
    res = run("register-images", tmp_path / "lm.ome.tif", tmp_path / "other.ome.tif", "--out", tmp_path / "x.json")
    assert res.returncode in (3, 4), res.stdout
    assert re.match(r"verdict: (failed|ambiguous)", res.stdout) and "not written" in res.stdout
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("command", ["demo", "info", "register", "register-images", "correlate", "targets",
                                     "ngff-transform"])
def test_every_command_has_help_with_examples(command):
    res = run(command, "--help")
    assert res.returncode == 0, res.stderr
    assert "examples:" in res.stdout and f"clemlab {command}" in res.stdout


def test_debug_shows_the_traceback(tmp_path):
    quiet = run("register", tmp_path / "missing.json")
    loud = run("register", tmp_path / "missing.json", "--debug")
    assert quiet.returncode == loud.returncode == 2
    assert "Traceback" not in quiet.stderr and quiet.stderr.count("\n") == 1
    assert "Traceback" in loud.stderr and "missing.json does not exist" in loud.stderr


def test_version_and_info_of_a_real_lif(shared_data):
    done = run("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"clemlab {cl.__version__}"
    lif = shared_data("lif-readlif/LeicaLASX_wavelength-sweep_example.lif")
    done = run("info", lif, "--scene", "x_y_lambdaEmi")
    assert done.returncode == 0, done.stderr
    assert "x_y_lambdaEmi" in done.stdout and "LIF DimensionDescription" in done.stdout
    assert "0.1048" in done.stdout  # µm per pixel as the file's README gives

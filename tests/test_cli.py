"""The `clemlab` command: demo end to end, register, and errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

import clemlab as cl


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "clemlab.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_demo_writes_files_and_reports_errors(tmp_path):
    out = tmp_path / "demo"
    res = run("demo", "--out", str(out))
    assert res.returncode == 0, res.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["correlated.ome.tif", "landmarks.json", "overlay.png", "transform.json"]
    assert (out / "overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fre = float(re.search(r"fiducial residual RMS ([\d.]+) nm", res.stdout).group(1))
    tre = float(re.search(r"held-out points: RMS ([\d.]+) nm", res.stdout).group(1))
    assert 0 < fre < 60 and 0 < tre < 60
    # the files are what they say: the transform is close to the sample's true one
    sample = cl.synthetic_clem(seed=0)
    tf = cl.transform_from_dict(json.loads((out / "transform.json").read_text()))
    assert isinstance(tf, cl.Affine)
    pts = sample.targets_lm
    assert np.abs(tf(pts) - sample.targets_em).max() < 0.1  # µm
    lms = cl.Landmarks.read(out / "landmarks.json")
    assert len(lms) == len(sample.fiducials_lm)
    corr = cl.open_image(out / "correlated.ome.tif")
    assert list(corr.c.values) == ["EM"] + list(sample.lm.c.values)
    assert corr.clem.pixel_size["x"] == pytest.approx(sample.em.clem.pixel_size["x"])
    np.testing.assert_array_equal(corr.sel(c="EM").values, sample.em.values.astype(np.uint16))


def test_register_command(tmp_path):
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 10, (6, 2))
    lms = cl.Landmarks.from_points(src, src * 1.5 + 3)
    path = lms.save(tmp_path / "pairs.csv")
    res = run("register", str(path), "--model", "similarity", "--out", str(tmp_path / "reg.json"))
    assert res.returncode == 0, res.stderr
    assert "similarity registration" in res.stdout
    reg = cl.Registration.load(tmp_path / "reg.json")
    assert reg.transform.scale == pytest.approx(1.5)


def test_register_command_bad_file(tmp_path):
    res = run("register", str(tmp_path / "missing.json"))
    assert res.returncode == 2
    assert "missing.json does not exist" in res.stderr and "Traceback" not in res.stderr


def test_version_and_info_of_a_real_lif(shared_data):
    done = run("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"clemlab {cl.__version__}"
    lif = shared_data("lif-readlif/LeicaLASX_wavelength-sweep_example.lif")
    done = run("info", str(lif), "--scene", "x_y_lambdaEmi")
    assert done.returncode == 0, done.stderr
    assert "x_y_lambdaEmi" in done.stdout and "LIF DimensionDescription" in done.stdout
    assert "0.1048" in done.stdout  # µm per pixel as the file's README gives

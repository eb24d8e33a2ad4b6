"""Bad or unlucky input to the `clemlab` command (issue 18): each case a distinct mistake a user
makes, answered by one readable line that names the problem and the fix (exit status 2, no
traceback), and nothing the user had is replaced or lost."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import clemlab as cl


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "clemlab.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def refused(res, *words):
    """The command failed with one line holding every one of ``words``."""
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("clemlab: error: "), res.stderr
    for w in words:
        assert w in line, (w, line)
    return line


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    s = cl.synthetic_clem_small(seed=2)
    cl.write_ome_tiff(s.lm, d / "lm.ome.tif")
    cl.write_ome_tiff(s.em, d / "em.ome.tif")
    cl.Landmarks.from_points(s.fiducials_lm, s.fiducials_em).save(d / "pairs.json")
    (d / "points.csv").write_text("name,x,y\nT1,1.0,1.0\n")
    return s, d


# --- outputs: never replace what a user has ----------------------------------------------
def test_register_out_exists(tmp_path, files):
    _, d = files
    (tmp_path / "r.json").write_text("mine")
    refused(run("register", d / "pairs.json", "--out", tmp_path / "r.json"), "exists", "--overwrite")
    assert (tmp_path / "r.json").read_text() == "mine"


def test_correlate_out_store_exists(tmp_path, files):
    _, d = files
    (tmp_path / "c.ome.zarr").mkdir()
    (tmp_path / "c.ome.zarr" / "notes.txt").write_text("mine")
    refused(run("correlate", d / "lm.ome.tif", d / "em.ome.tif", "--landmarks", d / "pairs.json",
                "--out", tmp_path / "c.ome.zarr"), "exists", "--overwrite")
    assert (tmp_path / "c.ome.zarr" / "notes.txt").read_text() == "mine"


def test_correlate_out_tiff_exists(tmp_path, files):
    _, d = files
    (tmp_path / "c.ome.tif").write_bytes(b"mine")
    refused(run("correlate", d / "lm.ome.tif", d / "em.ome.tif", "--landmarks", d / "pairs.json",
                "--out", tmp_path / "c.ome.tif"), "exists", "--overwrite")
    assert (tmp_path / "c.ome.tif").read_bytes() == b"mine"


def test_targets_csv_beside_the_navigator_exists(tmp_path, files):
    _, d = files
    (tmp_path / "t.csv").write_text("mine")
    refused(run("targets", d / "points.csv", "--landmarks", d / "pairs.json", "--em", d / "em.ome.tif",
                "--stage-centre", 0, 0, "--out", tmp_path / "t.nav"), "t.csv exists", "--overwrite")
    assert (tmp_path / "t.csv").read_text() == "mine" and not (tmp_path / "t.nav").exists()


def test_targets_csv_would_be_the_input_even_with_overwrite(tmp_path, files):
    _, d = files
    src = tmp_path / "t.csv"
    src.write_text("name,x,y\nT1,1.0,1.0\n")
    refused(run("targets", src, "--landmarks", d / "pairs.json", "--em", d / "em.ome.tif", "--stage-centre", 0, 0,
                "--out", tmp_path / "t.nav", "--overwrite"), "the targets file itself", "another --out")
    assert src.read_text() == "name,x,y\nT1,1.0,1.0\n"


def test_demo_folder_holds_earlier_results(tmp_path):
    (tmp_path / "overlay.png").write_bytes(b"mine")
    refused(run("demo", "--out", tmp_path), "overlay.png", "--overwrite")
    assert (tmp_path / "overlay.png").read_bytes() == b"mine"


def test_demo_out_is_a_file(tmp_path):
    (tmp_path / "f").write_text("mine")
    refused(run("demo", "--out", tmp_path / "f"), "is a file", "folder")


def test_out_folder_missing(tmp_path, files):
    _, d = files
    refused(run("register", d / "pairs.json", "--out", tmp_path / "no" / "r.json"), "does not exist", "create it")


def test_correlate_out_without_a_known_suffix(tmp_path, files):
    _, d = files
    refused(run("correlate", d / "lm.ome.tif", d / "em.ome.tif", "--landmarks", d / "pairs.json",
                "--out", tmp_path / "c.png"), ".ome.zarr", ".ome.tif")


# --- landmark files ------------------------------------------------------------------------
def test_landmarks_missing(tmp_path):
    refused(run("register", tmp_path / "none.csv"), "none.csv does not exist")


def test_landmarks_path_is_a_folder(tmp_path):
    refused(run("register", tmp_path), "is a folder", "landmarks file")


def test_landmarks_not_utf8(tmp_path):
    (tmp_path / "l.csv").write_bytes(b"\xff\xfe\x00n\x00a")
    refused(run("register", tmp_path / "l.csv"), "not UTF-8", "UTF-8")


def test_landmarks_of_an_unknown_layout(tmp_path):
    (tmp_path / "l.csv").write_text("a;b;c\n1;2;3\n")
    refused(run("register", tmp_path / "l.csv"), "not a landmark file clemlab reads", "BigWarp CSV", "ec-CLEM XML")


def test_units_given_for_a_json_file_in_um(files):
    _, d = files
    refused(run("register", d / "pairs.json", "--units-fixed", "nm"), "µm by definition", "drop --units")


def test_unknown_unit(tmp_path):
    src = np.array([[0.0, 0], [1, 0], [0, 1]])
    path = cl.Landmarks.from_points(src, src).to_bigwarp(tmp_path / "bw.csv")
    refused(run("register", path, "--units-fixed", "furlong"), "furlong")


def test_unknown_model(files):
    _, d = files
    refused(run("register", d / "pairs.json", "--model", "banana"), "banana", "affine")


def test_too_few_pairs_for_the_model(tmp_path):
    path = cl.Landmarks.from_points([[0.0, 0], [1, 0]], [[0.0, 0], [1, 0]]).save(tmp_path / "two.json")
    line = refused(run("register", path, "--model", "affine"))
    assert "affine" in line


# --- images and channels -------------------------------------------------------------------
def test_em_with_several_channels(tmp_path, files):
    _, d = files
    refused(run("correlate", d / "lm.ome.tif", d / "lm.ome.tif", "--landmarks", d / "pairs.json",
                "--out", tmp_path / "c.ome.zarr"), "3 channels", "--em-channel")
    assert not (tmp_path / "c.ome.zarr").exists()


def test_channel_not_in_the_image(tmp_path, files):
    _, d = files
    refused(run("correlate", d / "lm.ome.tif", d / "lm.ome.tif", "--em-channel", "DAPI", "--landmarks",
                d / "pairs.json", "--out", tmp_path / "c.ome.zarr"), "'DAPI'", "nuclei")


def test_png_without_pixel_size(tmp_path, shared_data, files):
    _, d = files
    refused(run("correlate", d / "lm.ome.tif", shared_data("deepclem/example_unregistered/EM.png"),
                "--landmarks", d / "pairs.json", "--out", tmp_path / "c.ome.zarr"), "EM.png stores no physical pixel size",
            "--em-pixel-size")


def test_landmarks_and_registration_both_given(tmp_path, files):
    _, d = files
    res = run("correlate", d / "lm.ome.tif", d / "em.ome.tif", "--landmarks", d / "pairs.json",
              "--registration", d / "pairs.json", "--out", tmp_path / "c.ome.zarr")
    assert res.returncode == 2 and "not allowed with argument" in res.stderr


# --- targets and the stage -----------------------------------------------------------------
def test_targets_without_stage_information(tmp_path, files):
    _, d = files
    refused(run("targets", d / "points.csv", "--landmarks", d / "pairs.json", "--em", d / "em.ome.tif",
                "--out", tmp_path / "t.nav"), "stage positions", "--nav NAV --map LABEL", "--stage-centre")


def test_targets_map_without_nav(tmp_path, files):
    _, d = files
    refused(run("targets", d / "points.csv", "--landmarks", d / "pairs.json", "--em", d / "em.ome.tif",
                "--map", "12", "--stage-centre", 0, 0, "--out", tmp_path / "t.nav"), "--map", "--nav")


def _nav(path, width, height):
    path.write_text("AdocVersion = 2.00\n\n[Item = m1]\nStageXYZ = 0 0 0\nRegis = 1\nType = 2\n"
                    f"MapScaleMat = 100 0 0 -100\nMapWidthHeight = {width} {height}\nNumPts = 1\nPtsX = 0\nPtsY = 0\n")
    return path


def test_targets_map_is_not_the_em_image(tmp_path, files):
    _, d = files
    nav = _nav(tmp_path / "s.nav", 1024, 512)
    refused(run("targets", d / "points.csv", "--landmarks", d / "pairs.json", "--em", d / "em.ome.tif",
                "--nav", nav, "--map", "m1", "--out", tmp_path / "t.nav"), "1024 x 512", "512 x 512",
            "the map's own image")
    assert not (tmp_path / "t.nav").exists()


def test_targets_map_label_missing(tmp_path, files):
    _, d = files
    nav = _nav(tmp_path / "s.nav", 512, 512)
    refused(run("targets", d / "points.csv", "--landmarks", d / "pairs.json", "--em", d / "em.ome.tif",
                "--nav", nav, "--map", "zz", "--out", tmp_path / "t.nav"), "no item 'zz'", "['m1']")


def test_targets_table_without_x(tmp_path, files):
    _, d = files
    (tmp_path / "p.csv").write_text("name,X_um,Y_um\nT1,1,1\n")
    refused(run("targets", tmp_path / "p.csv", "--landmarks", d / "pairs.json", "--em", d / "em.ome.tif",
                "--stage-centre", 0, 0, "--out", tmp_path / "t.nav"), "['x', 'y']", "X_um")


def test_targets_table_with_text_positions(tmp_path, files):
    _, d = files
    (tmp_path / "p.csv").write_text("name,x,y\nT1,one,1\n")
    refused(run("targets", tmp_path / "p.csv", "--landmarks", d / "pairs.json", "--em", d / "em.ome.tif",
                "--stage-centre", 0, 0, "--out", tmp_path / "t.nav"), "numbers in µm")


def test_targets_outside_the_em_field_are_flagged(tmp_path, files):
    s, d = files
    x, y = (float(v) for v in s.fiducials_lm[0])  # a bead: inside the EM field
    (tmp_path / "p.csv").write_text(f"name,x,y\nfar,500.0,500.0\nnear,{x!r},{y!r}\n")
    res = run("targets", tmp_path / "p.csv", "--landmarks", d / "pairs.json", "--em", d / "em.ome.tif",
              "--stage-centre", 0, 0, "--out", tmp_path / "t.nav")
    assert res.returncode == 0, res.stderr
    assert "1 target(s) fall outside the EM image" in res.stdout
    nav = cl.read_navigator(tmp_path / "t.nav")
    assert "OUTSIDE EM FIELD" in nav["far"].note and "OUTSIDE" not in nav["near"].note


# --- register-images -----------------------------------------------------------------------
def test_register_images_units_without_initial(tmp_path, files):
    _, d = files
    refused(run("register-images", d / "lm.ome.tif", d / "em.ome.tif", "--units-moving", "nm"), "--initial")


def test_register_images_multichannel_moving_needs_a_channel(files):
    _, d = files
    line = refused(run("register-images", d / "lm.ome.tif", d / "em.ome.tif"))
    assert "channel" in line

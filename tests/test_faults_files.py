"""Issue 18, files: bad or unlucky inputs to clemlab's readers and writers, one case each.

Each case asserts the right answer, or an error whose words name the file (or argument), the
problem and the fix. Nothing a user made may be replaced or lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import mrcfile
import numpy as np
import pandas as pd
import pytest
import tifffile

import clemlab as cl
from clemlab.cli import run_demo
from clemlab.errors import FileFormatError, ImageError, LandmarkError
from clemlab.io import read_navigator


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))


def _lms(n=6, seed=0):
    src = np.random.default_rng(seed).uniform(0, 50, (n, 2))
    return cl.Landmarks.from_points(src, src * 1.1 + 2)


def _tiff(path, value=3):
    return cl.write_ome_tiff(cl.as_image(np.full((16, 16), value, np.uint8), pixel_size=0.5), path)


def _targets():
    return pd.DataFrame({"name": ["a", "b", "c"], "x": [1.0, 2.0, 3.0], "y": [3.0, 4.0, 5.0]})


# -- item 8: pixel sizes ------------------------------------------------------------------
@pytest.mark.parametrize("bad", [True, False, np.True_, -0.5, 0, float("nan"), float("inf"), "0.1",
                                 {"x": True, "y": 1.0}, [0.1, -0.1]])
def test_bad_pixel_size_is_refused_with_its_name(tmp_path, bad):
    p = _tiff(tmp_path / "a.ome.tif")
    with pytest.raises(ImageError, match=r"pixel_size=") as info:
        cl.open_image(p, pixel_size=bad)
    assert str(p) in str(info.value)


def test_rgb_em_is_refused_by_correlate_naming_the_channel_axis(tmp_path):
    p = tmp_path / "rgb.tif"
    tifffile.imwrite(p, np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8), photometric="rgb")
    em = cl.open_image(p, pixel_size=0.01, modality="EM")
    lm = cl.as_image(np.ones((32, 32), np.uint16), pixel_size=0.1, modality="LM")
    reg = cl.register(_lms(), model="affine")
    with pytest.raises(ImageError, match=r"channel axis 'c' of length 3.*em\.isel\(c=0\).*em\.mean\('c'\)"):
        cl.correlate(em, lm, reg)
    assert cl.correlate(em.mean("c"), lm, reg)["EM"].dims == ("y", "x")  # the fix works


# -- item 9: overwrites -------------------------------------------------------------------
WRITERS = {
    "Landmarks.save json": ("l.json", lambda p, **k: _lms().save(p, **k)),
    "Landmarks.save csv": ("l.csv", lambda p, **k: _lms().save(p, **k)),
    "to_bigwarp": ("bw.csv", lambda p, **k: _lms().to_bigwarp(p, **k)),
    "to_ecclem": ("e.xml", lambda p, **k: _lms().to_ecclem(p, **k)),
    "Registration.save": ("r.json", lambda p, **k: cl.register(_lms(), model="affine").save(p, **k)),
    "write_ome_tiff": ("a.ome.tif", lambda p, **k: _tiff(p) if not k else
                       cl.write_ome_tiff(cl.as_image(np.zeros((16, 16), np.uint8), pixel_size=0.5), p, **k)),
    "write_navigator": ("t.nav", lambda p, **k: cl.write_navigator(_targets(), p, csv=False, **k)),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_writers_refuse_to_replace_and_replace_only_their_own_format(tmp_path, writer):
    name, write = WRITERS[writer]
    p = tmp_path / name
    write(p)
    before = p.read_bytes()
    with pytest.raises(FileExistsError, match=r"exists; pass overwrite=True") as info:
        write(p)
    assert str(p) in str(info.value) and p.read_bytes() == before
    write(p, overwrite=True)  # a file of the same format is replaced on request
    foreign = tmp_path / ("x" + "".join(p.suffixes))
    foreign.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))  # someone's image under that name
    with pytest.raises(FileExistsError, match=r"is not a .* file; overwrite=True replaces only a file of the format"):
        write(foreign, overwrite=True)
    assert foreign.read_bytes() == b"\x89PNG\r\n\x1a\n" + bytes(100)
    assert sorted(q.name for q in tmp_path.iterdir()) == sorted([p.name, foreign.name])


def test_cli_register_out_refuses_an_existing_file_until_overwrite(tmp_path):
    lms = _lms().save(tmp_path / "l.json")
    out = tmp_path / "r.json"
    out.write_text('{"mine": 1}\n')
    cmd = [sys.executable, "-m", "clemlab.cli", "register", str(lms), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    assert proc.returncode == 2 and f"{out} exists; pass --overwrite" in proc.stderr
    assert "--overwrite" in proc.stderr and out.read_text() == '{"mine": 1}\n'
    proc = subprocess.run(cmd + ["--overwrite"], capture_output=True, text=True, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert cl.Registration.load(out).model == "affine"


def test_demo_refuses_existing_files_before_doing_the_work(tmp_path):
    (tmp_path / "landmarks.json").write_text("my clicks\n")
    with pytest.raises(FileExistsError, match=r"already holds landmarks.json .*overwrite=True"):
        run_demo(tmp_path, verbose=False)
    # a file that is not JSON under the demo's name is kept even when replacing is asked for,
    # and refused before the work: nothing else is written
    with pytest.raises(FileExistsError, match=r"landmarks.json exists and is not a JSON file"):
        run_demo(tmp_path, verbose=False, overwrite=True)
    assert (tmp_path / "landmarks.json").read_text() == "my clicks\n"
    assert sorted(q.name for q in tmp_path.iterdir()) == ["landmarks.json"]


# -- item 10: atomic writes ---------------------------------------------------------------
def test_a_failing_landmarks_save_leaves_the_old_file(tmp_path, monkeypatch):
    p = _lms(4).save(tmp_path / "l.json")
    before = p.read_bytes()
    lms = _lms(8)
    monkeypatch.setattr(cl.Landmarks, "to_json_dict", lambda self: {"bad": object()})  # json.dumps fails
    with pytest.raises(TypeError):
        lms.save(p, overwrite=True)
    assert p.read_bytes() == before and [q.name for q in tmp_path.iterdir()] == ["l.json"]


KILLED_WRITER = r"""
import sys, time
import dask, dask.array as da, numpy as np
import clemlab as cl

def slow(block):
    time.sleep(0.2)
    return block

arr = da.ones((40, 64, 64), np.uint8, chunks=(1, 64, 64)).map_blocks(slow, dtype=np.uint8)
with dask.config.set(scheduler="synchronous"):
    cl.write_ome_tiff(cl.as_image(arr, pixel_size=0.5), sys.argv[1], overwrite=True)
"""


def test_a_writer_killed_mid_write_leaves_the_old_file_and_its_temporary_goes(tmp_path):
    p = _tiff(tmp_path / "a.ome.tif", value=9)
    before = p.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(p)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not [q for q in tmp_path.iterdir() if q.name.endswith(".tmp") and q.stat().st_size > 0]:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)  # some planes written
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert p.read_bytes() == before  # the old file is intact
    assert int(cl.open_image(p).max()) == 9
    _tiff(tmp_path / "a.ome.tif.new")  # an unrelated write leaves the temporary alone...
    cl.write_ome_tiff(cl.as_image(np.full((16, 16), 4, np.uint8), pixel_size=0.5), p, overwrite=True)
    # ...the next write to the same path removes the dead writer's temporary
    assert sorted(q.name for q in tmp_path.iterdir()) == ["a.ome.tif", "a.ome.tif.new"]


# -- item 11: autosave across processes ---------------------------------------------------
CLICKER = r"""
import sys, warnings
warnings.simplefilter("ignore")
import clemlab as cl
lms = cl.Landmarks(autosave=sys.argv[1])
base = float(sys.argv[2])
for i in range(15):
    lms.add([base + i, 1.0], [base + i, 2.0])
"""


def test_two_processes_autosaving_one_file_lose_no_click(tmp_path):
    p = tmp_path / "clicks.json"
    procs = [subprocess.Popen([sys.executable, "-c", CLICKER, str(p), str(base)], env=_env(),
                              stderr=subprocess.PIPE) for base in (0.0, 100.0)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-2000:]
    saved = cl.Landmarks.read(p)
    assert len(saved) == 30 and len(set(saved.names)) == 30
    assert sorted(saved.src()[:, 0]) == sorted([float(i) for i in range(15)] + [100.0 + i for i in range(15)])


def test_the_second_picker_is_told_another_one_is_writing(tmp_path):
    p = tmp_path / "clicks.json"
    first = cl.Landmarks(autosave=p)
    first.add([1.0, 1.0], [2.0, 2.0])
    code = "import clemlab as cl, sys; cl.Landmarks(autosave=sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert f"another picker or process is already autosaving to {p}" in proc.stderr
    del first


def test_concurrent_edits_merge_a_move_and_a_delete(tmp_path):
    p = tmp_path / "clicks.json"
    a = _lms(3).copy(autosave=p)
    a.save(p)
    with pytest.warns(UserWarning, match="already autosaving"):
        b = cl.Landmarks.read(p, autosave=p)
    a.remove("P1")
    with pytest.warns(UserWarning, match="changed by another picker or process; its edits and this one's are merged"):
        b.move("P2", dst=[7.0, 8.0])
    on_disk = cl.Landmarks.read(p)
    assert on_disk.names == ["P2", "P3"] and on_disk.dst()[0].tolist() == [7.0, 8.0]


# -- item 12: damaged inputs --------------------------------------------------------------
def _nav_text(tmp_path):
    return cl.write_navigator(_targets(), tmp_path / "t.nav", csv=False).read_text()


def test_truncated_navigator_names_the_last_complete_item(tmp_path):
    text = _nav_text(tmp_path)
    p = tmp_path / "cut.nav"
    p.write_text(text[: text.index("[Item = c]") + len("[Item = c]\nColor = 0\n")])
    with pytest.raises(FileFormatError, match=r"cut\.nav' is truncated or damaged: item 'c' .*the last complete item is 'b'"):
        read_navigator(p)


def test_navigator_cut_mid_line_is_refused(tmp_path):
    text = _nav_text(tmp_path)
    p = tmp_path / "cut.nav"
    p.write_text(text.rstrip("\n")[:-1])  # "PtsY = 5" cut to "PtsY = "
    with pytest.raises(FileFormatError, match=r"(does not end with a line break|truncated or damaged).*'b'"):
        read_navigator(p)


def test_navigator_point_count_mismatch_is_refused(tmp_path):
    p = tmp_path / "n.nav"
    p.write_text(_nav_text(tmp_path).replace("NumPts = 1", "NumPts = 4", 1))
    with pytest.raises(FileFormatError, match=r"item 'a' .* NumPts = 4 but 1 PtsX and 1 PtsY"):
        read_navigator(p)


def test_truncated_xml_navigator_is_refused(tmp_path):
    nav = read_navigator(cl.write_navigator(_targets(), tmp_path / "t.nav", csv=False))
    text = nav.to_xml()
    p = tmp_path / "x.nav"
    p.write_text(text[: len(text) // 2])
    with pytest.raises(FileFormatError, match="x.nav"):
        read_navigator(p)


def test_tiff_header_with_absurd_dimensions_is_refused_at_open(tmp_path):
    p = tmp_path / "big.tif"
    tifffile.imwrite(p, np.zeros((16, 16), np.uint8))
    with tifffile.TiffFile(p, mode="r+b") as tf:
        tf.pages[0].tags["ImageWidth"].overwrite(1_000_000)
        tf.pages[0].tags["ImageLength"].overwrite(1_000_000)
    with pytest.raises(FileFormatError, match=r"big\.tif': page 0 announces 1000000x1000000 pixels.*re-export"):
        cl.open_image(p, lazy=True, pixel_size=1)


def test_truncated_tiled_tiff_is_refused_at_open_even_lazily(tmp_path):
    p = tmp_path / "t.tif"
    tifffile.imwrite(p, np.arange(256 * 256, dtype=np.uint16).reshape(256, 256), tile=(64, 64), compression="zlib")
    p.write_bytes(p.read_bytes()[:-2000])
    with pytest.raises(FileFormatError, match=r"t\.tif' is truncated or corrupt: page 0 has pixel data up to byte"):
        cl.open_image(p, lazy=True, pixel_size=1)


def test_damaged_tile_read_lazily_names_the_file_and_the_block(tmp_path):
    p = tmp_path / "d.tif"
    tifffile.imwrite(p, np.arange(256 * 256, dtype=np.uint16).reshape(256, 256), tile=(64, 64), compression="zlib")
    with tifffile.TiffFile(p) as tf:
        off, cnt = tf.pages[0].dataoffsets[6], tf.pages[0].databytecounts[6]
    raw = bytearray(p.read_bytes())
    raw[off:off + cnt] = b"\xff" * cnt
    p.write_bytes(bytes(raw))
    img = cl.open_image(p, lazy=True, pixel_size=1)
    np.testing.assert_array_equal(img[:64, :64].values, np.arange(256 * 256).reshape(256, 256)[:64, :64])
    with pytest.raises(FileFormatError, match=r"d\.tif': the pixels \[64:128, 128:192\] \(block \(1, 2\)"):
        img.values


def test_truncated_mrc_is_refused_at_open(tmp_path):
    p = tmp_path / "a.mrc"
    with mrcfile.new(p) as f:
        f.set_data(np.zeros((4, 64, 64), np.float32))
        f.voxel_size = 1.0
    p.write_bytes(p.read_bytes()[:40000])
    with pytest.raises(FileFormatError, match=r"a\.mrc' is truncated: the header announces 64 x 64 x 4 voxels"):
        cl.open_image(p, lazy=True)


def test_truncated_dm3_is_refused_at_open(tmp_path, shared_data):
    raw = shared_data("rosettasciio-calibrated/test_STEM_image.dm3").read_bytes()
    p = tmp_path / "cut.dm3"
    p.write_bytes(raw[: int(len(raw) * 0.9)])
    with pytest.raises(FileFormatError, match=r"cut\.dm3' is not a readable DM3/DM4 file \(truncated or corrupt"):
        cl.open_image(p, lazy=True)


# -- item 13: bad text files --------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_a_byte_order_mark_reads_as_utf8(tmp_path, suffix):
    lms = _lms()
    p = lms.save(tmp_path / f"l{suffix}")
    p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes())
    assert cl.Landmarks.read(p) == lms


def test_bigwarp_file_with_byte_order_mark(tmp_path):
    lms = _lms()
    p = lms.to_bigwarp(tmp_path / "bw.csv")
    p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes())
    assert cl.Landmarks.from_bigwarp(p).names == lms.names


def test_navigator_with_byte_order_mark(tmp_path):
    p = tmp_path / "b.nav"
    p.write_bytes(b"\xef\xbb\xbf" + _nav_text(tmp_path).encode())
    assert read_navigator(p).labels == ["a", "b", "c"]


def test_utf16_landmarks_csv_is_refused_with_the_fix(tmp_path):
    p = tmp_path / "u.csv"
    p.write_text(_lms().to_csv_text(), encoding="utf-16")
    with pytest.raises(LandmarkError, match=r"u\.csv, line 1: .*not UTF-8 text; it looks like UTF-16: save it as UTF-8"):
        cl.Landmarks.read(p)


def test_latin1_landmarks_csv_names_the_line(tmp_path):
    p = tmp_path / "l.csv"
    p.write_bytes(_lms().to_csv_text().replace("P3", "Pé").encode("latin-1"))
    with pytest.raises(LandmarkError, match=r"l\.csv, line 4: byte 0xe9 is not UTF-8 text; save it as UTF-8"):
        cl.Landmarks.read(p)


def test_latin1_bigwarp_names_the_line(tmp_path):
    p = _lms().to_bigwarp(tmp_path / "bw.csv")
    p.write_bytes(p.read_text().replace("P2", "Pé").encode("latin-1"))
    with pytest.raises(LandmarkError, match=r"BigWarp landmarks file .*bw\.csv, line 2: byte 0xe9"):
        cl.Landmarks.from_bigwarp(p)


def test_latin1_navigator_names_the_line_not_a_replacement_character(tmp_path):
    p = tmp_path / "l.nav"
    p.write_bytes(_nav_text(tmp_path).replace("Note = b", "Note = bé").encode("latin-1"))
    with pytest.raises(FileFormatError, match=r"l\.nav', line 19: byte 0xe9 is not UTF-8 text.*re-save the navigator as UTF-8"):
        read_navigator(p)


def test_latin1_landmarks_table_names_the_line(tmp_path):
    p = tmp_path / "t.csv"
    p.write_bytes("name,x_src,y_src,x_dst,y_dst\nPé,1,2,3,4\n".encode("latin-1"))
    with pytest.raises(LandmarkError, match=r"landmarks table .*t\.csv, line 2"):
        cl.Landmarks.from_table(p)


def _json_with(tmp_path, change):
    doc = _lms().to_json_dict()
    change(doc)
    p = tmp_path / "l.json"
    p.write_text(json.dumps(doc))
    return p


@pytest.mark.parametrize("change,words", [
    (lambda d: d["pairs"][1].update(src="1,2"), r"pair 1, key 'src' is str '1,2'; it must be a list of numbers"),
    (lambda d: d["pairs"][0].update(src=[True, 1.0]), r"pair 0, key 'src' holds True \(bool\) where a number"),
    (lambda d: d["pairs"][2].update(dst=["a", 1.0]), r"pair 2, key 'dst' holds 'a' \(str\) where a number"),
    (lambda d: d.update(ndim="2"), r"key 'ndim' is '2'; it must be the number 2 or 3"),
    (lambda d: d["pairs"].__setitem__(3, [1, 2]), r"pair 3 is list \[1, 2\]; each pair is an object"),
    (lambda d: d["pairs"][0].update(active="maybe"), r"'active' must be true/false, got 'maybe'"),
    (lambda d: d.update(pairs={"a": 1}), r"'pairs' must be a list"),
])
def test_wrong_json_types_name_the_key(tmp_path, change, words):
    p = _json_with(tmp_path, change)
    with pytest.raises(LandmarkError, match=rf"landmarks file .*l\.json.*{words}"):
        cl.Landmarks.read(p)


def test_landmarks_csv_missing_a_column(tmp_path):
    p = tmp_path / "l.csv"
    p.write_text(_lms().to_csv_text().replace("y_dst", "ydst"))
    with pytest.raises(LandmarkError, match=r"l\.csv: landmarks table lacks columns \['y_dst'\]"):
        cl.Landmarks.read(p)


def test_bigwarp_with_too_few_columns(tmp_path):
    p = _lms().to_bigwarp(tmp_path / "bw.csv")
    p.write_text("\n".join(",".join(r.split(",")[:5]) for r in p.read_text().splitlines()) + "\n")
    with pytest.raises(LandmarkError, match=r"bw\.csv: every row needs 6 \(2-D\) or 8 \(3-D\) columns.*got rows of \[5\]"):
        cl.Landmarks.from_bigwarp(p)


def test_ecclem_non_numeric_coordinate_names_the_point(tmp_path):
    p = _lms().to_ecclem(tmp_path / "e.xml")
    p.write_text(p.read_text().replace('<coordinate dimension="0">', '<coordinate dimension="0">x', 1))
    with pytest.raises(LandmarkError, match=r"e\.xml: <dataset type='source'>, <point id='0'> has a non-numeric"):
        cl.Landmarks.from_ecclem(p)


def test_ecclem_bad_dimension_attribute_names_the_point(tmp_path):
    p = _lms().to_ecclem(tmp_path / "e.xml")
    p.write_text(p.read_text().replace('<coordinate dimension="1">', '<coordinate dimension="y">', 1))
    with pytest.raises(LandmarkError, match=r"<point id='0'> has a <coordinate> whose dimension is not 0, 1 or 2"):
        cl.Landmarks.from_ecclem(p)

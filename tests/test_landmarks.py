"""Landmarks table: construction, edits, autosave, JSON and CSV round trips, bad input."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clemlab import FileFormatError, LandmarkError, Landmarks


def make(ndim=2, n=5, seed=0, sigma=False):
    rng = np.random.default_rng(seed)
    src = rng.uniform(-100, 100, (n, ndim)) + 1e-7 * rng.random((n, ndim))  # awkward floats
    dst = rng.uniform(1e4, 1e5, (n, ndim)) / 3
    kw = {"sigma_src": rng.uniform(0.01, 0.05, n), "sigma_dst": 0.004} if sigma else {}
    return Landmarks.from_points(src, dst, **kw), src, dst


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("sigma", [False, True])
@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_round_trip_exact(tmp_path, ndim, sigma, suffix):
    lms, src, dst = make(ndim, sigma=sigma)
    lms.set_active("P2", False)
    path = lms.save(tmp_path / f"lm{suffix}")
    again = Landmarks.read(path)
    assert again == lms
    np.testing.assert_array_equal(again.src(active_only=False), src)  # bit-exact floats
    np.testing.assert_array_equal(again.dst(active_only=False), dst)
    assert again.active.tolist() == [True, False, True, True, True]


def test_dataframe_columns():
    lms, _, _ = make(3)
    df = lms.to_dataframe()
    assert list(df.columns) == ["name", "active", "x_src", "y_src", "z_src", "x_dst", "y_dst", "z_dst"]
    df.loc[0, "x_src"] = 1e9  # a copy: the table is unchanged
    assert lms.src()[0, 0] != 1e9


def test_edits_and_autosave_after_each(tmp_path):
    path = tmp_path / "auto.json"
    lms = Landmarks(autosave=path)
    name = lms.add([1.0, 2.0], [10.0, 20.0])
    assert Landmarks.read(path).names == [name]
    lms.add([3.0, 4.0], [30.0, 40.0], name="bead-7")
    lms.move("bead-7", dst=[31.0, 41.0])
    assert Landmarks.read(path).dst().tolist() == [[10.0, 20.0], [31.0, 41.0]]
    lms.set_active(name, False)
    assert Landmarks.read(path).active.tolist() == [False, True]
    lms.remove(name)
    assert Landmarks.read(path).names == ["bead-7"]
    lms.clear()
    assert len(Landmarks.read(path)) == 0
    # no temp files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auto.json"]


def test_autosave_readonly_folder_fails_at_construction(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    # root ignores folder permissions: then use a folder no one can create files in
    target = ro if not os.access(ro, os.W_OK) else Path("/proc")
    try:
        with pytest.raises(FileFormatError, match=f"folder {target} is not writable"):
            Landmarks(autosave=target / "a.json")
    finally:
        ro.chmod(stat.S_IRWXU)
    with pytest.raises(FileFormatError, match="does not exist"):
        Landmarks(autosave=tmp_path / "nope" / "a.json")


def test_nan_landmarks_rejected_with_names():
    with pytest.raises(LandmarkError, match=r"landmarks \['P2'\] have NaN or infinite"):
        Landmarks.from_points([[0, 0], [np.nan, 1]], [[0, 0], [1, 1]])
    lms, _, _ = make()
    with pytest.raises(LandmarkError, match="NaN"):
        lms.add([np.inf, 0], [0, 0])
    assert len(lms) == 5  # nothing half-added


def test_bad_tables_and_files(tmp_path):
    with pytest.raises(LandmarkError, match="same shape"):
        Landmarks.from_points(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(LandmarkError, match=r"\(N, 2\) or \(N, 3\)"):
        Landmarks.from_points(np.zeros(3), np.zeros(3))
    with pytest.raises(LandmarkError, match=r"lacks columns \['y_dst'\]"):
        Landmarks(pd.DataFrame({"name": ["a"], "active": [True], "x_src": [0], "y_src": [0], "x_dst": [0]}))
    with pytest.raises(LandmarkError, match="unique; repeated: \\['a'\\]"):
        Landmarks.from_points(np.zeros((2, 2)), np.zeros((2, 2)), names=["a", "a"])
    csv = tmp_path / "bad.csv"
    csv.write_text("name,active,x_src,y_src,x_dst,y_dst\nP1,true,1,2,3,four\n")
    with pytest.raises(LandmarkError, match=r"bad.csv: row 2, column 'y_dst' holds 'four'"):
        Landmarks.read(csv)
    csv.write_text("name,active,x_src,y_src,x_dst\nP1,true,1,2,3\n")
    with pytest.raises(LandmarkError, match=r"lacks columns \['y_dst'\]"):
        Landmarks.read(csv)
    js = tmp_path / "new.json"
    doc = make()[0].to_json_dict()
    doc["version"] = 99
    js.write_text(json.dumps(doc))
    with pytest.raises(LandmarkError, match="schema version 99, newer .* upgrade clemlab"):
        Landmarks.read(js)
    js.write_text("{not json")
    with pytest.raises(LandmarkError, match="new.json is not valid JSON"):
        Landmarks.read(js)
    with pytest.raises(FileFormatError, match="missing.json does not exist"):
        Landmarks.read(tmp_path / "missing.json")


def test_listeners_and_replace():
    lms, _, _ = make()
    seen = []
    lms.on_change(lambda l: seen.append(len(l)))
    other, _, _ = make(n=3, seed=5)
    lms.replace(other)
    assert lms == other and seen == [3]

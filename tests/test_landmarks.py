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
    # no temp files left behind (only the hidden lock files that guard the autosave)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".auto.json.save.lock", ".auto.json.session.lock",
                                                         "auto.json"]


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


# ---------------------------------------------------------------------------------------
# interchange: BigWarp CSV, ec-CLEM XML, any table
# ---------------------------------------------------------------------------------------
import csv as _csv  # noqa: E402


@pytest.mark.parametrize("fname, ndim", [("landmarks2d-blobs.csv", 2), ("mri-stack-translation-landmarks.csv", 3)])
def test_real_bigwarp_files(shared_data, tmp_path, fname, ndim):
    path = shared_data(f"bigwarp/{fname}")
    lms = Landmarks.from_bigwarp(path)
    rows = list(_csv.reader(path.open()))
    assert lms.ndim == ndim and lms.names == [r[0] for r in rows] == [f"Pt-{i}" for i in range(5)]
    np.testing.assert_array_equal(lms.src(), np.array([[float(v) for v in r[2 : 2 + ndim]] for r in rows]))
    np.testing.assert_array_equal(lms.dst(), np.array([[float(v) for v in r[2 + ndim :]] for r in rows]))
    again = Landmarks.from_bigwarp(lms.to_bigwarp(tmp_path / "bw.csv"))
    assert again == lms


@pytest.mark.parametrize("ndim", [2, 3])
def test_bigwarp_round_trip_exact(tmp_path, ndim):
    lms, _, _ = make(ndim)
    lms.set_active("P3", False)
    path = lms.to_bigwarp(tmp_path / "bw.csv")
    first = path.read_text().splitlines()[0]
    assert first.startswith('"P1","true","') and len(first.split(",")) == 2 + 2 * ndim
    assert Landmarks.from_bigwarp(path) == lms


def test_bigwarp_unpaired_and_bad_files(tmp_path):
    p = tmp_path / "bw.csv"
    p.write_text('"Pt-0","true","1.0","2.0","3.0","4.0"\n"Pt-1","true","5.0","6.0","Infinity","Infinity"\n'
                 '"Pt-2","true","7.0","8.5","9.0","1.0"\n"Pt-3","false","0.5","8.0","1.0","7.0"\n')
    with pytest.warns(UserWarning, match=r"skipped unpaired BigWarp landmarks \['Pt-1'\]"):
        lms = Landmarks.from_bigwarp(p)
    assert lms.names == ["Pt-0", "Pt-2", "Pt-3"] and lms.active.tolist() == [True, True, False]
    p.write_text('"Pt-0","true","1.0","2.0","3.0"\n')
    with pytest.raises(LandmarkError, match="6 \\(2-D\\) or 8 \\(3-D\\) columns"):
        Landmarks.from_bigwarp(p)
    p.write_text('"Pt-0","true","1.0","two","3.0","4.0"\n')
    with pytest.raises(LandmarkError, match="row 1 has text where numbers belong"):
        Landmarks.from_bigwarp(p)
    with pytest.raises(FileFormatError, match="does not exist"):
        Landmarks.from_bigwarp(tmp_path / "none.csv")


def test_bigwarp_tps_parameterisation(shared_data):
    """BigWarp builds its spline from fixed (target) to moving (source) landmarks."""
    import skimage.transform as skt

    from clemlab import register
    from clemlab import transforms as T

    lms = Landmarks.from_bigwarp(shared_data("bigwarp/landmarks2d-blobs.csv"))
    reg = register(lms, "tps", bigwarp=True)
    src, dst = lms.src(), lms.dst()
    exact = T.ThinPlateSpline.from_estimate(dst, src)  # fixed -> moving
    q = np.random.default_rng(0).uniform(60, 180, (50, 2))
    np.testing.assert_array_equal(reg.transform.inverse(q), exact(q))
    np.testing.assert_allclose(reg.transform.inverse(q), skt.ThinPlateSplineTransform.from_estimate(dst, src)(q), atol=1e-3)
    np.testing.assert_allclose(reg.transform(src), dst, atol=1e-9)  # the forward map still hits the pairs
    plain = register(lms, "tps")
    assert np.abs(plain.transform(q) - reg.transform(q)).max() > 1e-3  # the two parameterisations differ


def test_ecclem_round_trip_and_hand_written(tmp_path):
    lms, src, dst = make(2)
    path = lms.to_ecclem(tmp_path / "t.xml")
    again = Landmarks.from_ecclem(path)
    np.testing.assert_array_equal(again.src(), src)
    np.testing.assert_array_equal(again.dst(), dst)
    # as ec-CLEM writes 2-D sets: three coordinates with z = 0, inside a root element, with history
    xml = ["<root>", '<transformation type="SIMILARITY"><dataset type="source" n="1" dimension="3"><point id="0">'
           '<coordinate dimension="0">9</coordinate><coordinate dimension="1">9</coordinate><coordinate dimension="2">0</coordinate>'
           '</point></dataset><dataset type="target" n="1" dimension="3"><point id="0"><coordinate dimension="0">1</coordinate>'
           '<coordinate dimension="1">1</coordinate><coordinate dimension="2">0</coordinate></point></dataset></transformation>',
           '<transformation type="AFFINE" noiseModel="ISOTROPIC">']
    for kind, pts in (("source", src), ("target", dst)):
        xml.append(f'<dataset type="{kind}" n="{len(pts)}" dimension="3" pointType="FIDUCIAL">')
        for i, (x, y) in enumerate(pts.tolist()):
            xml.append(f'<point id="{i}"><coordinate dimension="1">{y!r}</coordinate>'
                       f'<coordinate dimension="0">{x!r}</coordinate><coordinate dimension="2">0.0</coordinate></point>')
        xml.append("</dataset>")
    xml.append("</transformation></root>")
    p = tmp_path / "hand.xml"
    p.write_text("".join(xml))
    hand = Landmarks.from_ecclem(p)
    assert hand.ndim == 2 and len(hand) == 5
    np.testing.assert_array_equal(hand.src(), src)
    p.write_text("<root><transformation>")
    with pytest.raises(LandmarkError, match="not valid XML"):
        Landmarks.from_ecclem(p)
    p.write_text('<root><transformation><dataset type="source" n="0" dimension="2"/></transformation></root>')
    with pytest.raises(LandmarkError, match="needs a source and a target"):
        Landmarks.from_ecclem(p)


def test_from_table_with_column_mapping(tmp_path):
    p = tmp_path / "points.csv"
    p.write_text("id,X_LM,Y_LM,X_EM,Y_EM\nbead1,100,200,1000,2000\nbead2,300,50,3000,500\nbead3,0,0,10,20\n")
    lms = Landmarks.from_table(p, columns={"name": "id", "x_src": "X_LM", "y_src": "Y_LM",
                                            "x_dst": "X_EM", "y_dst": "Y_EM"}, units="nm")
    assert lms.names == ["bead1", "bead2", "bead3"]
    np.testing.assert_allclose(lms.src()[0], [0.1, 0.2])
    np.testing.assert_allclose(lms.dst()[1], [3.0, 0.5])
    with pytest.raises(LandmarkError, match=r"lacks the columns for \['x_src', 'y_src'.*pass columns="):
        Landmarks.from_table(p)
    p.write_text("x_src,y_src,x_dst,y_dst\n1,2,3,x\n")
    with pytest.raises(LandmarkError, match="column 'y_dst' holds text"):
        Landmarks.from_table(p)
    with pytest.raises(LandmarkError, match="maps unknown clemlab columns"):
        Landmarks.from_table(p, columns={"xx": "a"})


def test_empty_landmarks_have_shaped_arrays():
    from clemlab import RegistrationError, register

    assert Landmarks().src().shape == (0, 2) and Landmarks(ndim=3, ndim_dst=2).dst().shape == (0, 2)
    with pytest.raises(RegistrationError, match="needs at least 3 point pairs, got 0"):
        register(Landmarks())

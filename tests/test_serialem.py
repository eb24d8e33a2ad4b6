"""SerialEM autodoc / navigator reading and writing (clemlab.io.serialem)."""

from __future__ import annotations

import json
import re
import os

import numpy as np
import pandas as pd
import pytest

from clemlab.errors import FileFormatError
from clemlab.io import read_navigator, write_navigator
from clemlab.io.serialem import (
    format_autodoc,
    mdoc_pixel_to_stage,
    parse_autodoc,
    read_autodoc,
    stage_affine,
)

NAV = "pyem-serialem-nav"


def _norm(text: str) -> str:
    return text.replace("\r\n", "\n").rstrip("\n") + "\n"


# ---------------------------------------------------------------------------------------
# an independent minimal parser, written from the format description only
# ---------------------------------------------------------------------------------------
def minimal_nav_parse(text: str) -> list[dict]:
    items, cur = [], None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[Item = ") and line.endswith("]"):
            cur = {"label": line[len("[Item = "):-1]}
            items.append(cur)
        elif " = " in line and cur is not None:
            k, v = line.split(" = ", 1)
            cur[k] = v
    return items


# ---------------------------------------------------------------------------------------
# real files
# ---------------------------------------------------------------------------------------
def test_sort_nav_items_stage_and_map_matrix(shared_data):
    nav = read_navigator(shared_data(f"{NAV}/sort.nav"))
    assert nav.flavour == "text"
    assert nav.labels == ["12-A", "206", "refmap", "176", "000", "175", "175_nopx"]
    assert [it.kind for it in nav] == ["map", "polygon", "map", "point", "point", "point", "point"]
    m = nav["12-A"]
    np.testing.assert_array_equal(m.stage_xyz, [75.8717, 11.681, -39.8515])
    expected = json.loads(shared_data(f"{NAV}/test_expectedvalues.json").read_text())["map_matrix"]
    np.testing.assert_allclose(m.map_matrix, expected, rtol=1e-6)
    assert m.map_shape == (3640, 3520)  # 910 x 880 at MapBinning 16 -> x4 at MontBinning 4
    assert nav["206"].drawn_id == m.map_id == 1338070642
    assert nav.by_map_id(nav["176"].drawn_id).label == "12-A"
    np.testing.assert_array_equal(nav["176"].points, [[63.1081, 26.1926]])
    assert nav["176"].section["XYinPc"] == "845.285 1361.29"  # unknown-to-us keys kept verbatim
    assert nav["206"].points.shape == (4, 2) and nav["206"].regis == 1
    df = nav.to_dataframe()
    assert list(df["label"]) == nav.labels and df.loc[3, "x"] == 63.1081


def test_xml_flavour_matches_text(shared_data):
    text = read_navigator(shared_data(f"{NAV}/sort.nav"))
    xml = read_navigator(shared_data(f"{NAV}/sort_xml.nav"))
    assert xml.flavour == "xml"
    assert xml.labels == text.labels[:6]
    for a, b in zip(xml, text):
        assert a.section.entries == b.section.entries
    np.testing.assert_allclose(xml["12-A"].map_matrix, text["12-A"].map_matrix)
    assert xml.header["AdocVersion"] == "2.00"


@pytest.mark.parametrize("rel", [f"{NAV}/sort.nav", f"{NAV}/sort_sorted.nav", f"{NAV}/sort_xml.nav",
                                 f"{NAV}/tutorial1/nav1.nav", f"{NAV}/tutorial2/nav.nav", "correlator/clem.nav"])
def test_real_files_written_back_unchanged(shared_data, tmp_path, rel):
    src = shared_data(rel)
    nav = read_navigator(src)
    out = nav.write(tmp_path / "back.nav")
    assert _norm(out.read_text()) == _norm(src.read_text())
    again = read_navigator(out)
    assert [it.section.entries for it in again] == [it.section.entries for it in nav]
    # the other flavour holds the same items and keys too
    other = read_navigator(nav.write(tmp_path / "other.nav", "xml" if nav.flavour == "text" else "text"))
    assert [it.section.entries for it in other] == [it.section.entries for it in nav]


def test_correlator_nav(shared_data):
    nav = read_navigator(shared_data("correlator/clem.nav"))
    assert len(nav) == 13 and nav.labels[0] == "Leica"
    leica = nav["Leica"]
    assert leica.kind == "map" and leica.section["Imported"] == "1" and leica.regis == 2
    np.testing.assert_array_equal(leica.map_matrix, np.diag([7.751, 7.751]))
    assert leica.map_shape == (14800, 14823)
    np.testing.assert_array_equal(nav["12"].stage_xyz, [230.737, -657.93, 0.0])
    # CorRelator wrote the outline with 7.692 px/µm but MapScaleMat 7.751: the corners agree
    # with our pixel -> stage map in order and sign, and to the 0.8 % of that inconsistency
    corners = leica.pixel_to_stage()(np.array([[-0.5, -0.5], [14822.5, -0.5], [14822.5, 14799.5], [-0.5, 14799.5]]))
    np.testing.assert_allclose(corners, leica.points[:4], rtol=0.01)


@pytest.mark.parametrize("rel,label", [(f"{NAV}/tutorial1/nav1.nav", "Map"), (f"{NAV}/sort.nav", "12-A"),
                                       (f"{NAV}/sort.nav", "refmap")])
def test_pixel_to_stage_reproduces_map_outline(shared_data, rel, label):
    """SerialEM's outline of a map (PtsX/PtsY) is the stage position of its image corners."""
    item = read_navigator(shared_data(rel))[label]
    h, w = item.map_shape
    corners = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])
    np.testing.assert_allclose(item.pixel_to_stage()(corners), item.points[:4], atol=2e-3)
    centre = item.pixel_to_stage()([(w - 1) / 2, (h - 1) / 2])
    np.testing.assert_allclose(centre[0], item.stage_xyz[:2])


def test_imported_map_holes_self_consistent(shared_data):
    item = read_navigator(shared_data(f"{NAV}/tutorial2/nav.nav"))["1"]
    holes = np.loadtxt(shared_data(f"{NAV}/tutorial2/holes.txt"), delimiter=",")
    h, w = item.map_shape
    flipped = np.c_[holes[:, 0], h - 1 - holes[:, 1]]  # TIFF rows top-down -> MRC order
    stage = item.pixel_to_stage()(flipped)
    assert len(np.unique(np.round(stage, 6), axis=0)) == 6
    assert np.all(np.abs(stage) < 6.4)
    np.testing.assert_allclose(stage[0], [(13 - 63.5) / 10, -((127 - 13) - 63.5) / 10])


def test_autodoc_parser_is_a_drop_in_for_read_mdoc(shared_data):
    from clemlab.mosaic import read_mdoc

    for name in ("montage_section.mdoc", "tilt_series.mdoc", "frame_set_single.mdoc", "frame_set_multiple.mdoc"):
        p = shared_data(f"mdocfile-serialem-mdoc/{name}")
        doc = read_autodoc(p)
        header, sections = read_mdoc(p)
        mine = [{"_kind": s.kind, "_index": int(s.name) if s.name.lstrip("-").isdigit() else s.name, **s.to_dict()}
                for s in doc.sections[1:] if s.kind != "T"]
        assert doc.header.to_dict() == header
        assert mine == sections
    doc = read_autodoc(shared_data("mdocfile-serialem-mdoc/montage_section.mdoc"))
    assert len(doc.find("ZValue")) == 62 and len(doc.find("MontSection")) == 1
    assert doc.find("T")[1].name.startswith("Tilt axis angle = -86.7")


def test_montage_pixel_to_stage_fit(shared_data):
    p = shared_data("mdocfile-serialem-mdoc/montage_section.mdoc")
    tf = mdoc_pixel_to_stage(p)
    sv = np.linalg.svd(tf.linear, compute_uv=False)
    # the fitted scale is the pixel size (656.139 Å) within the stage calibration (a few %)
    np.testing.assert_allclose(sv, 0.0656139, rtol=0.03)
    doc = read_autodoc(p)
    z0 = doc.find("ZValue")[0]
    centre = z0.numbers("PieceCoordinates")[:2] + (doc.header.numbers("ImageSize") - 1) / 2
    np.testing.assert_allclose(tf(centre)[0], z0.numbers("StagePosition"), atol=0.05)


def test_stage_affine_conventions():
    tf = stage_affine((10.0, 20.0), 0.5, (101, 201))
    np.testing.assert_allclose(tf([100, 50])[0], [10, 20])
    np.testing.assert_allclose(tf([101, 50])[0], [10.5, 20])       # +x pixel -> +x stage
    np.testing.assert_allclose(tf([100, 51])[0], [10, 19.5])       # +row -> -y stage (mirror)
    tilted = stage_affine((0, 0), 1.0, (3, 3), tilt=60.0, mirror=False)
    np.testing.assert_allclose(tilted([1, 2])[0], [0, 2.0])        # 1 / cos 60° = 2
    rot = stage_affine((0, 0), 1.0, (3, 3), rotation=90.0, mirror=False)
    np.testing.assert_allclose(rot([2, 1])[0], [0, 1], atol=1e-12)


# ---------------------------------------------------------------------------------------
# the generic autodoc format
# ---------------------------------------------------------------------------------------
ADOC = """AdocVersion = 2.00
LastSavedAs = C:\\x.nav
# a comment

[Item = a b]
Color = 0
Custom = 1 2 3
Custom = 4
FutureKey = with = sign
Type = 7
"""


def test_autodoc_keeps_order_repeats_comments_and_unknown_types(tmp_path):
    doc = parse_autodoc(ADOC)
    assert doc.header.keys() == ["AdocVersion", "LastSavedAs"]
    assert ("#", " a comment") in doc.header.entries
    item = doc.sections[1]
    assert (item.kind, item.name) == ("Item", "a b")
    assert item.get_all("Custom") == ["1 2 3", "4"] and item["Custom"] == "4"
    assert item["FutureKey"] == "with = sign"
    np.testing.assert_array_equal(item.numbers("Custom"), [4.0])
    assert format_autodoc(doc) == ADOC
    p = tmp_path / "u.nav"
    p.write_text(ADOC)
    nav = read_navigator(p)
    assert nav[0].kind == "type 7" and nav[0].type == 7
    nav.write(tmp_path / "v.nav")
    assert _norm((tmp_path / "v.nav").read_text()) == ADOC


@pytest.mark.parametrize("line,lineno", [("Color 0", 3), ("[Item a]", 3), ("= 5", 3)])
def test_malformed_lines_named(tmp_path, line, lineno):
    p = tmp_path / "bad.nav"
    p.write_text(f"AdocVersion = 2.00\n[Item = 1]\n{line}\n")
    with pytest.raises(FileFormatError, match=rf"bad\.nav', line {lineno}: .*{re.escape(line)}"):
        read_navigator(p)


def test_bad_navigator_files(tmp_path, shared_data):
    with pytest.raises(FileFormatError, match="no such file: '.*missing.nav'"):
        read_navigator(tmp_path / "missing.nav")
    (tmp_path / "bin.nav").write_bytes(b"\x00\x01\x02")
    with pytest.raises(FileFormatError, match="binary file, not a SerialEM navigator"):
        read_navigator(tmp_path / "bin.nav")
    with pytest.raises(FileFormatError, match=r"not navigator items.*read_autodoc"):
        read_navigator(shared_data("mdocfile-serialem-mdoc/tilt_series.mdoc"))
    (tmp_path / "x.nav").write_text("<navigator><Item>oops</Item></navigator>")
    with pytest.raises(FileFormatError, match="has no name attribute"):
        read_navigator(tmp_path / "x.nav")
    (tmp_path / "y.nav").write_text("<navigator><Item name='a'>")
    with pytest.raises(FileFormatError, match="not valid XML"):
        read_navigator(tmp_path / "y.nav")
    (tmp_path / "e.nav").write_text("# nothing\n")
    with pytest.raises(FileFormatError, match="not a SerialEM navigator"):
        read_navigator(tmp_path / "e.nav")
    nav = read_navigator(shared_data(f"{NAV}/sort.nav"))
    with pytest.raises(FileFormatError, match="'206' .*polygon.* has no MapScaleMat"):
        nav["206"].map_matrix
    with pytest.raises(KeyError, match="no navigator item labelled 'zzz'"):
        nav["zzz"]


# ---------------------------------------------------------------------------------------
# writing targets
# ---------------------------------------------------------------------------------------
def _targets():
    return pd.DataFrame({
        "name": ["t1", "t 2", "region"],
        "x": [12.345678, -3.5, 100.0],
        "y": [-7.25, 8.0, 50.0],
        "z": [1.0, 1.0, 1.0],
        "error": [0.21, 0.34, 0.5],
        "outside_field": [False, True, False],
        "outline": [None, None, np.array([[99, 49], [101, 49], [101, 51], [99, 51]], float)],
    })


def test_write_navigator_round_trip_and_independent_parser(tmp_path):
    reg = pd.DataFrame({"name": ["R1", "R2", "R3"], "x": [0.0, 10.0, 0.0], "y": [0.0, 0.0, 10.0]})
    p = write_navigator(_targets(), tmp_path / "t.nav", registration_points=reg, regis=3, group_id=77)
    text = p.read_bytes().decode()
    assert text.startswith("AdocVersion = 2.00\r\n")
    items = minimal_nav_parse(text)
    assert [i["label"] for i in items] == ["R1", "R2", "R3", "t1", "t 2", "region"]
    t1 = items[3]
    assert t1["Type"] == "0" and t1["NumPts"] == "1" and t1["Regis"] == "3" and t1["GroupID"] == "77"
    assert [float(v) for v in t1["StageXYZ"].split()] == [12.3457, -7.25, 1.0]
    assert t1["PtsX"] == "12.3457" and t1["PtsY"] == "-7.25" and "error 0.21 um" in t1["Note"]
    assert "OUTSIDE EM FIELD" in items[4]["Note"]
    poly = items[5]
    assert poly["Type"] == "1" and poly["NumPts"] == "5" and poly["Color"] == "1"
    assert poly["PtsX"].split() == ["99", "101", "101", "99", "99"]
    assert [i.get("RegPt") for i in items[:3]] == ["1", "2", "3"] and "RegPt" not in t1
    # read back by clemlab: exact values; written again: identical bytes
    nav = read_navigator(p)
    np.testing.assert_array_equal(nav["t1"].stage_xyz, [12.3457, -7.25, 1.0])
    np.testing.assert_array_equal(nav["region"].points[:, 1], [49, 49, 51, 51, 49])
    assert nav.write(tmp_path / "again.nav").read_bytes() == p.read_bytes()
    csv = pd.read_csv(tmp_path / "t.csv")
    assert list(csv["name"]) == ["t1", "t 2", "region"] and "outline" not in csv
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    # XML flavour: same items
    px = write_navigator(_targets(), tmp_path / "t_xml.nav", flavour="xml", csv=False)
    assert [it.section.entries for it in read_navigator(px)] == [it.section.entries for it in read_navigator(
        write_navigator(_targets(), tmp_path / "u.nav", csv=False))]


def test_write_navigator_outside_field_dropped_when_asked(tmp_path):
    p = write_navigator(_targets(), tmp_path / "t.nav", include_outside=False, csv=False)
    assert read_navigator(p).labels == ["t1", "region"]
    assert not (tmp_path / "t.csv").exists()


def test_write_navigator_bad_input(tmp_path):
    t = _targets()
    with pytest.raises(FileFormatError, match=r"lacks column\(s\) \['y'\].*map_targets"):
        write_navigator(t.drop(columns="y"), tmp_path / "a.nav")
    with pytest.raises(FileFormatError, match=r"\['t1', 't1'\]|\['t1'\] occur more than once"):
        write_navigator(t.assign(name=["t1", "t1", "r"]), tmp_path / "a.nav")
    with pytest.raises(FileFormatError, match=r"\['t 2'\] have NaN/inf positions"):
        write_navigator(t.assign(x=[1.0, np.nan, 2.0]), tmp_path / "a.nav")
    with pytest.raises(FileFormatError, match=r"name 'a\]b' cannot be a navigator label"):
        write_navigator(t.assign(name=["a]b", "x", "y"]), tmp_path / "a.nav")
    with pytest.raises(FileFormatError, match="outline must be an"):
        write_navigator(t.assign(outline=[None, None, np.zeros((2, 2))]), tmp_path / "a.nav")
    with pytest.raises(FileFormatError, match="takes a table"):
        write_navigator([[1, 2]], tmp_path / "a.nav")
    with pytest.raises(FileFormatError, match="folder .* does not exist"):
        write_navigator(t, tmp_path / "no" / "a.nav")
    assert not (tmp_path / "a.nav").exists()




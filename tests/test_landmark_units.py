"""BigWarp files carry no units: units_moving / units_fixed say them, and clemlab converts to µm."""

from __future__ import annotations

import numpy as np
import pytest

import clemlab
from clemlab.errors import LandmarkError
from clemlab.landmarks import Landmarks


def _write_bigwarp(path, moving_um, fixed_nm):
    rows = [f'"Pt-{i}","true",{float(m[0])!r},{float(m[1])!r},{float(f[0])!r},{float(f[1])!r}' for i, (m, f) in enumerate(zip(moving_um, fixed_nm))]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_bigwarp_units_convert_to_micrometres(tmp_path):
    rng = np.random.default_rng(3)
    moving_um = rng.uniform(0, 50, (8, 2))
    angle = 0.2
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    fixed_um = moving_um @ rot.T * 1.7 + [12.0, -4.0] + rng.normal(0, 0.05, (8, 2))
    path = _write_bigwarp(tmp_path / "lm_um_em_nm.csv", moving_um, fixed_um * 1000.0)
    lms = Landmarks.from_bigwarp(path, units_moving="um", units_fixed="nm")
    np.testing.assert_allclose(lms.src(), moving_um, rtol=1e-12)
    np.testing.assert_allclose(lms.dst(), fixed_um, rtol=1e-12)
    by_hand = Landmarks.from_points(moving_um, fixed_um)
    reg, ref = clemlab.register(lms, model="similarity"), clemlab.register(by_hand, model="similarity")
    np.testing.assert_allclose(reg.loo_errors, ref.loo_errors, rtol=1e-9)
    assert np.nanmax(reg.loo_errors) < 1.0  # µm: the 0.05-µm noise, not 1000x that


def test_bigwarp_default_is_micrometres_and_bad_unit_is_named(tmp_path):
    path = _write_bigwarp(tmp_path / "bw.csv", [[0, 0], [1, 0], [0, 1]], [[0, 0], [2, 0], [0, 2]])
    np.testing.assert_allclose(Landmarks.from_bigwarp(path).dst(), [[0, 0], [2, 0], [0, 2]])
    with pytest.raises(LandmarkError, match="bw.csv"):
        Landmarks.from_bigwarp(path, units_fixed="furlong")


# -- CSV and ec-CLEM: units per side -------------------------------------------------------------

def _pairs(seed=5, n=8):
    rng = np.random.default_rng(seed)
    src = rng.uniform(1, 11, (n, 2))  # µm, inside a 12.8-µm LM field
    angle = 0.3
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = (src - 6) @ rot.T * 0.4 + 2.5 + rng.normal(0, 0.02, (n, 2))  # µm, inside a 5.12-µm EM field
    return src, dst


def test_csv_with_columns_in_nm_on_one_side_converts_to_micrometres(tmp_path):
    src, dst = _pairs()
    path = tmp_path / "clicks.csv"
    rows = ["ID,X_LM,Y_LM,X_EM_nm,Y_EM_nm"] + [f"p{i},{float(s[0])!r},{float(s[1])!r},{float(d[0]) * 1e3!r},{float(d[1]) * 1e3!r}"
                                              for i, (s, d) in enumerate(zip(src, dst))]
    path.write_text("\n".join(rows) + "\n")
    cols = {"name": "ID", "x_src": "X_LM", "y_src": "Y_LM", "x_dst": "X_EM_nm", "y_dst": "Y_EM_nm"}
    lms = Landmarks.from_csv(path, units_fixed="nm", columns=cols)
    np.testing.assert_allclose(lms.dst(), dst, rtol=1e-12)
    np.testing.assert_allclose(lms.src(), src, rtol=1e-12)
    assert lms.units_read == {"src": "µm", "dst": "nm"}
    assert "read as LM µm, EM nm" in repr(lms)
    reg, ref = clemlab.register(lms, model="similarity"), clemlab.register(Landmarks.from_points(src, dst), model="similarity")
    np.testing.assert_allclose(reg.loo_errors, ref.loo_errors, rtol=1e-9)


def test_clemlab_csv_read_in_mm_and_um(tmp_path):
    src, dst = _pairs(6)
    path = Landmarks.from_points(src * 1e-3, dst).save(tmp_path / "own.csv")  # source numbers in mm
    lms = Landmarks.from_csv(path, units_moving="mm")
    np.testing.assert_allclose(lms.src(), src, rtol=1e-12)
    with pytest.raises(LandmarkError, match="own.csv.*unknown length unit 'parsec'"):
        Landmarks.from_csv(path, units_fixed="parsec")


def test_ecclem_units_per_side_and_round_trip_of_units_read(tmp_path):
    src, dst = _pairs(7)
    path = Landmarks.from_points(src, dst * 1e3).to_ecclem(tmp_path / "ec.xml")  # target numbers in nm
    lms = Landmarks.from_ecclem(path, units_fixed="nm")
    np.testing.assert_allclose(lms.dst(), dst, rtol=1e-12)
    back = Landmarks.read(lms.save(tmp_path / "saved.json"))
    assert back.units_read == {"src": "µm", "dst": "nm"} and back == lms


def test_summary_states_the_unit_of_every_figure(tmp_path):
    src, dst = _pairs(8)
    path = _write_bigwarp(tmp_path / "bw.csv", src, dst * 1e3)
    reg = clemlab.register(Landmarks.from_bigwarp(path, units_fixed="nm"), model="similarity")
    text = reg.summary()
    head = text.splitlines()[0]
    assert "landmarks in µm (read as LM µm, EM nm)" in head
    loo = np.sqrt(np.nanmean(reg.loo_errors ** 2)) * 1e3
    assert f"leave-one-out error: RMS {loo:.1f} nm" in text
    assert "residual nm" in text and "residual (nm)" in reg._repr_html_()
    # errors of tens of µm print in µm, not as millions of nm
    far = Landmarks.from_points(src * 40, dst * 40 + np.random.default_rng(0).normal(0, 8, dst.shape))
    text = clemlab.register(far, model="similarity").summary()
    assert "residual µm" in text and " nm" not in text.split("WARNING")[0]


# -- a spread that does not fit the images warns, naming the unit mix-up ---------------------------

def _sample():
    from clemlab.datasets import synthetic_clem_small

    return synthetic_clem_small(seed=0)


def test_landmarks_in_nm_read_as_um_warn_where_they_meet_images():
    s = _sample()
    wrong = Landmarks.from_points(s.fiducials_lm, s.fiducials_em * 1e3)  # EM side in nm, taken as µm
    with pytest.warns(UserWarning, match=r"register_images\(initial=\.\.\.\): the EM landmarks spread over .* µm, "
                                         r"\d+x the EM image extent .*likely in nm .* units_fixed='nm'"):
        clemlab.register_images(s.lm, s.em, initial=wrong, channel="nuclei")
    reg = clemlab.register(wrong, model="affine")
    # the unit warning names the likely cause; the warp then refuses the 1000x scale outright
    with pytest.warns(UserWarning, match="correlate with a registration: the EM landmarks .* units_fixed='nm'"), \
            pytest.raises(clemlab.ImageError, match="check the units of the landmarks"):
        clemlab.correlate(s.em, s.lm, reg)
    with pytest.warns(UserWarning, match="warp with a registration: the EM landmarks"), \
            pytest.raises(clemlab.ImageError, match="check the units of the landmarks"):
        clemlab.warp(s.lm, reg, like=s.em)
    small = Landmarks.from_points(s.fiducials_lm * 1e-3, s.fiducials_em)  # LM side in mm
    with pytest.warns(UserWarning, match="LM landmarks spread over"):
        said = small.check_units(s.lm, s.em)
    assert len(said) == 1 and "LM landmarks" in said[0] and "units_moving='mm'" in said[0]


def test_right_units_do_not_warn(recwarn):
    s = _sample()
    right = Landmarks.from_points(s.fiducials_lm, s.fiducials_em)
    assert right.check_units(s.lm, s.em) == []
    clemlab.correlate(s.em, s.lm, clemlab.register(right, model="affine"))
    assert not [w for w in recwarn if "landmarks spread" in str(w.message)]


def test_picker_loading_nm_landmarks_warns(tmp_path):
    pytest.importorskip("ipywidgets")
    from clemlab.widgets import LandmarkPicker

    s = _sample()
    wrong = Landmarks.from_points(s.fiducials_lm, s.fiducials_em * 1e3)
    with pytest.warns(UserWarning, match="LandmarkPicker: the EM landmarks"):
        LandmarkPicker(s.lm, s.em, landmarks=wrong)

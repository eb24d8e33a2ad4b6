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

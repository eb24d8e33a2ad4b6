"""Targets: LM ROIs -> EM frame and stage, with predicted errors (clemlab.targets)."""

from __future__ import annotations

import numpy as np
import pytest

import clemlab as cl
from clemlab.errors import ImageError, RegistrationError
from clemlab.image import as_image
from clemlab.io.serialem import read_navigator, stage_affine
from clemlab.targets import (
    map_targets,
    plot_targets,
    stage_transform,
    targets_from_mask,
    targets_from_points,
    targets_from_polygons,
    targets_from_spots,
)


@pytest.fixture(scope="module")
def sample():
    return cl.datasets.synthetic_clem_small(seed=0)


@pytest.fixture(scope="module")
def reg(sample):
    rng = np.random.default_rng(1)
    src = sample.fiducials_lm + rng.normal(0, 0.02, sample.fiducials_lm.shape)
    return cl.register(cl.Landmarks.from_points(src, sample.fiducials_em, source_frame="LM", target_frame="EM"))


def test_points_and_polygons():
    t = targets_from_points([[1.0, 2.0], [3.0, 4.0]], names=["a", "b"])
    assert list(t["name"]) == ["a", "b"] and t["sigma"].isna().all() and t.attrs["frame"] == "LM"
    # an L-shaped polygon: area centroid (not the vertex mean)
    ell = [[0, 0], [2, 0], [2, 1], [1, 1], [1, 2], [0, 2]]
    p = targets_from_polygons([ell, [[0, 0], [3, 0], [0, 3], [0, 0]]])
    np.testing.assert_allclose(p.loc[0, ["x", "y"]].to_numpy(float), [5 / 6, 5 / 6])
    np.testing.assert_allclose(p.loc[1, ["x", "y"]].to_numpy(float), [1, 1])
    assert len(p.loc[1, "outline"]) == 3  # closing vertex dropped
    with pytest.raises(ImageError, match="polygon 0 must be an \\(M, 2\\) array of at least 3"):
        targets_from_polygons([[[0, 0], [1, 1]]])
    with pytest.raises(ImageError, match=r"names must be unique; \['a'\] repeat"):
        targets_from_points([[1, 2], [3, 4]], names=["a", "a"])
    with pytest.raises(ImageError, match="NaN"):
        targets_from_points([[np.nan, 2]])


def test_mask_centroids_and_outlines():
    yy, xx = np.mgrid[0:80, 0:100]
    lab = np.zeros((80, 100), np.int32)
    lab[(xx - 30) ** 2 + (yy - 20) ** 2 <= 8**2] = 3
    lab[(xx - 70) ** 2 + (yy - 55) ** 2 <= 12**2] = 7
    img = as_image(lab, pixel_size=0.5, origin=(10.0, 100.0))  # (y, x) origin
    t = targets_from_mask(img)
    assert list(t["name"]) == ["R3", "R7"] and list(t["label"]) == [3, 7]
    np.testing.assert_allclose(t[["x", "y"]].to_numpy(float), [[100 + 15, 10 + 10], [100 + 35, 10 + 27.5]], atol=1e-9)
    r = np.linalg.norm(t.loc[1, "outline"] - t.loc[1, ["x", "y"]].to_numpy(float), axis=1)
    assert abs(r.mean() - 12 * 0.5) < 0.3
    np.testing.assert_allclose(t["area_um2"], [np.sum(lab == 3) * 0.25, np.sum(lab == 7) * 0.25])
    b = targets_from_mask(as_image(lab > 0, pixel_size=0.5, origin=(10.0, 100.0)))
    np.testing.assert_allclose(b[["x", "y"]].to_numpy(float), t[["x", "y"]].to_numpy(float))


def test_mask_bad_input():
    with pytest.raises(ImageError, match="mask has no objects .*check the threshold"):
        targets_from_mask(as_image(np.zeros((10, 10), np.uint8), pixel_size=1.0))
    lab = np.zeros((10, 10), np.uint8)
    lab[2, 2] = 1
    with pytest.raises(ImageError, match="no objects .* >= 5 px.*lower min_area"):
        targets_from_mask(as_image(lab, pixel_size=1.0), min_area=5)
    with pytest.raises(ImageError, match="integer labels or booleans, got dtype float"):
        targets_from_mask(as_image(np.ones((10, 10), np.float32), pixel_size=1.0))


def test_spots_find_the_gfp_target(sample):
    t = targets_from_spots(sample.lm, channel="GFP")
    assert (t["kind"] == "spot").all() and (t["sigma"] > 0).all()
    d = np.linalg.norm(t[["x", "y"]].to_numpy(float)[:, None] - sample.targets_lm[None], axis=2).min(axis=0)
    assert np.all(d < 0.05)  # every true punctum target found within 50 nm
    with pytest.raises(ImageError, match=r"channel 'RFP' is not in the image; channels: \['nuclei', 'GFP', 'beads'\]"):
        targets_from_spots(sample.lm, channel="RFP")
    with pytest.raises(ImageError, match="choose one with channel="):
        targets_from_spots(sample.lm)


def test_map_targets_matches_registration(sample, reg):
    pts = np.vstack([sample.targets_lm, [[2.0, 2.0]]])
    t = targets_from_points(pts, sigma=[0.03] * len(sample.targets_lm) + [np.nan])
    m = map_targets(reg, t, em=sample.em)
    np.testing.assert_allclose(m[["x", "y"]].to_numpy(float), reg.transform(pts))
    assert list(m["includes_target_fle"]) == [True] * len(sample.targets_lm) + [False]
    exact = reg.map_points(pts[-1:])
    measured = reg.map_points(pts[:1], include_target_fle=True, target_sigma=0.03)
    np.testing.assert_allclose(m["error"].iloc[-1], exact.error[0])
    np.testing.assert_allclose(m["error"].iloc[0], measured.error[0])
    axes, dirs = measured.ellipses(0.95)
    np.testing.assert_allclose(m.loc[0, ["ellipse_major", "ellipse_minor"]].to_numpy(float), axes[0])
    # the true target lies within a few predicted errors
    assert np.linalg.norm(m.loc[0, ["x", "y"]].to_numpy(float) - sample.targets_em[0]) < 3 * m.loc[0, "error"]
    # forcing exact targets drops the target's own error
    m2 = map_targets(reg, t, include_target_fle=False)
    assert np.all(m2["error"].iloc[:-1].to_numpy() < m["error"].iloc[:-1].to_numpy())
    assert not m2["outside_field"].any()


def test_outside_field_flagged_and_exported(sample, reg, tmp_path):
    far = reg.transform.inverse(np.array([[sample.em.clem.extent["x"][1] + 5, 1.0]]))
    t = targets_from_points(np.vstack([sample.targets_lm[:1], far]), names=["in", "out"])
    m = map_targets(reg, t, em=sample.em)
    assert list(m["outside_field"]) == [False, True]
    p = cl.write_navigator(m, tmp_path / "t.nav")
    nav = read_navigator(p)
    assert nav.labels == ["in", "out"] and "OUTSIDE EM FIELD" in nav["out"].note
    assert read_navigator(cl.write_navigator(m, tmp_path / "u.nav", include_outside=False)).labels == ["in"]


def test_stage_transform_and_stage_targets(sample, reg, tmp_path):
    em = sample.em
    h, w = em.sizes["y"], em.sizes["x"]
    p2s = stage_affine((120.0, -40.0), 0.01, (h, w), rotation=30.0)
    s = stage_transform(em, p2s)
    pix = np.array([[0, 0], [w - 1, 0], [17, 300]], float)
    np.testing.assert_allclose(s(em.clem.to_physical(pix)), p2s(pix), atol=1e-9)
    t = targets_from_points(sample.targets_lm, sigma=0.03)
    m_em = map_targets(reg, t, em=em)
    m_st = map_targets(reg, t, em=em, stage=s)
    np.testing.assert_allclose(m_st[["x", "y"]].to_numpy(float), s(m_em[["x", "y"]].to_numpy(float)))
    np.testing.assert_allclose(m_st[["em_x", "em_y"]].to_numpy(float), m_em[["x", "y"]].to_numpy(float))
    # stage = similarity with scale 1 (0.01 µm pixels, EM pixel 0.01 µm): errors preserved
    np.testing.assert_allclose(m_st["error"], m_em["error"], rtol=1e-9)
    assert m_st.attrs["frame"] == "stage"
    nav = read_navigator(cl.write_navigator(m_st, tmp_path / "s.nav"))
    np.testing.assert_allclose(nav[0].stage_xyz[:2], m_st.loc[0, ["x", "y"]].to_numpy(float), atol=6e-5)


def test_stage_transform_real_map(shared_data):
    item = read_navigator(shared_data("pyem-serialem-nav/tutorial1/nav1.nav"))["Map"]
    em = as_image(np.zeros((64, 64), np.uint8), pixel_size=0.0106, frame="EM")  # stand-in for map1.mrc
    s = stage_transform(em, item.pixel_to_stage())
    np.testing.assert_allclose(s(em.clem.to_physical([[5.0, 9.0]])), item.pixel_to_stage()([[5.0, 9.0]]))


def test_map_targets_bad_input(reg, sample):
    t = targets_from_points([[1.0, 1.0]])
    with pytest.raises(RegistrationError, match="reg must be a Registration"):
        map_targets(object(), t)
    with pytest.raises(RegistrationError, match="targets must be a target table"):
        map_targets(reg, [[1, 2]])
    with pytest.raises(RegistrationError, match="targets table is empty"):
        map_targets(reg, t.iloc[:0])
    with pytest.raises(RegistrationError, match=r"lacks column\(s\) \['y'\]"):
        map_targets(reg, t.drop(columns="y"))
    with pytest.raises(RegistrationError, match="confidence must be between 0 and 1"):
        map_targets(reg, t, confidence=95)


def test_plot_targets_draws_ellipses_to_scale(sample, reg):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.patches import Ellipse

    m = map_targets(reg, targets_from_points(sample.targets_lm, sigma=0.05), em=sample.em)
    ax = plot_targets(m, sample.em)
    ells = [p for p in ax.patches if isinstance(p, Ellipse)]
    assert len(ells) == len(m)
    np.testing.assert_allclose(ells[0].width, 2 * m.loc[0, "ellipse_major"])
    np.testing.assert_allclose(ells[0].center, m.loc[0, ["x", "y"]].to_numpy(float))
    import matplotlib.pyplot as plt

    plt.close(ax.figure)
    with pytest.raises(RegistrationError, match="pass the table from map_targets"):
        plot_targets(targets_from_points([[1, 1]]))

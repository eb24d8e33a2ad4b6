"""LandmarkPicker / OverlayViewer without a browser: synthetic matplotlib events.

Mouse events are built from physical (data) coordinates through ``ax.transData`` and rounded
to whole display pixels, as a browser delivers them; the landmarks must then sit within half
a display pixel (per axis) of the intended physical positions.
"""

from __future__ import annotations

import gc
import json
import re
import os
import stat
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from clemlab.datasets import synthetic_clem_small
from clemlab.errors import FileFormatError, ImageError, LandmarkError, MissingPixelSizeError
from clemlab.image import as_image
from clemlab.landmarks import Landmarks
from clemlab.registration import register

pytest.importorskip("ipympl")
pytestmark = pytest.mark.filterwarnings("ignore:Passing unrecognized arguments:DeprecationWarning")
from matplotlib.backend_bases import KeyEvent, MouseEvent  # noqa: E402

from clemlab.widgets import LandmarkPicker, OverlayViewer  # noqa: E402
from clemlab.widgets._display import window  # noqa: E402


@pytest.fixture(scope="module")
def sample():
    return synthetic_clem_small(seed=1)


def _display_xy(ax, xy):
    x, y = ax.transData.transform(np.asarray(xy, float))
    return float(np.round(x)), float(np.round(y))


def mouse(ax, xy, kind="button_press_event", button=1):
    """Send one mouse event at physical ``xy`` (µm) to ``ax``'s canvas, in whole pixels."""
    x, y = _display_xy(ax, xy)
    MouseEvent(kind, ax.figure.canvas, x, y, button=button)._process()


def click(ax, xy):
    mouse(ax, xy)
    mouse(ax, xy, "button_release_event")


def key(picker, k):
    ax = picker.axes[0]
    KeyEvent("key_press_event", ax.figure.canvas, k, 10, 10)._process()


def half_px(ax):
    """Half a display pixel in µm along x and y for ``ax``."""
    inv = ax.transData.inverted()
    a, b, c = inv.transform([(100, 100), (101, 100), (100, 101)])
    return abs(b[0] - a[0]) / 2, abs(c[1] - a[1]) / 2


def saved(path):
    return Landmarks.read(path)


@pytest.fixture
def picker(sample, tmp_path):
    p = LandmarkPicker(sample.lm, sample.em, autosave=tmp_path / "lm.json")
    yield p
    p.close()


def test_clicks_add_pairs_at_the_clicked_physical_positions(sample, picker, tmp_path):
    lm_ax, em_ax = picker.axes
    auto = tmp_path / "lm.json"
    assert saved(auto) == Landmarks(ndim=2)  # written at construction: empty
    assert picker.logic.active_view == "lm"
    src, dst = sample.fiducials_lm[:4], sample.fiducials_em[:4]
    for i, (s, t) in enumerate(zip(src, dst)):
        click(lm_ax, s)
        assert picker.logic.active_view == "em" and picker.logic.pending[0] == "lm"
        assert len(saved(auto)) == i  # a half pair is not a landmark yet
        click(em_ax, t)
        assert picker.logic.active_view == "lm" and picker.logic.pending is None
        on_disk = saved(auto)
        assert len(on_disk) == i + 1 and on_disk == picker.landmarks
    hx, hy = half_px(lm_ax)
    got = picker.landmarks.src()
    assert np.all(np.abs(got[:, 0] - src[:, 0]) <= hx) and np.all(np.abs(got[:, 1] - src[:, 1]) <= hy)
    hx, hy = half_px(em_ax)
    got = picker.landmarks.dst()
    assert np.all(np.abs(got[:, 0] - dst[:, 0]) <= hx) and np.all(np.abs(got[:, 1] - dst[:, 1]) <= hy)
    # a pair may also start in the EM view
    click(em_ax, sample.fiducials_em[4])
    assert picker.logic.active_view == "lm"
    click(lm_ax, sample.fiducials_lm[4])
    np.testing.assert_allclose(picker.landmarks.src()[4], sample.fiducials_lm[4], atol=2 * max(half_px(lm_ax)))
    np.testing.assert_allclose(picker.landmarks.dst()[4], sample.fiducials_em[4], atol=2 * max(half_px(em_ax)))
    # numbered markers drawn in both views; in EM each carries its live left-out error
    loo = register(picker.landmarks, model="affine").loo_errors
    labels = {"lm": ["P1", "P2", "P3", "P4", "P5"], "em": [f"P{i + 1} · {e * 1e3:.0f} nm" for i, e in enumerate(loo)]}
    for view, ax in zip(("lm", "em"), (lm_ax, em_ax)):
        assert [t.get_text() for t in picker._art[view]["texts"]] == labels[view]
        xs, ys = picker._art[view]["active"].get_data()
        pts = picker.landmarks.src() if view == "lm" else picker.landmarks.dst()
        np.testing.assert_array_equal(np.c_[xs, ys], pts)


def test_registration_table_and_model_dropdown(sample, picker):
    lm_ax, em_ax = picker.axes
    assert picker.registration is None
    for s, t in zip(sample.fiducials_lm[:5], sample.fiducials_em[:5]):
        click(lm_ax, s)
        click(em_ax, t)
    reg = picker.registration
    ref = register(picker.landmarks, model="affine")
    np.testing.assert_allclose(reg.residuals, ref.residuals)
    np.testing.assert_allclose(reg.loo_errors, ref.loo_errors)
    # the fit of the clicked points recovers the true transform to the clicking precision
    # (a few LM display pixels)
    probe = sample.targets_lm if len(sample.targets_lm) else sample.fiducials_lm
    assert np.max(np.linalg.norm(reg.map_points(probe) - sample.transform(probe), axis=1)) < 8 * max(half_px(lm_ax))
    html = picker.table.value
    assert "affine" in html and f"{reg.rms * 1e3:.1f} nm" in html
    for r, l in zip(reg.residuals, reg.loo_errors):
        assert f"<td>{r * 1e3:.1f}</td><td>{l * 1e3:.1f}</td>" in html
    picker.model_dropdown.value = "rigid"
    assert picker.registration.model == "rigid" and "rigid" in picker.table.value
    np.testing.assert_allclose(picker.registration.rms, register(picker.landmarks, model="rigid").rms)


def test_prediction_marks_the_partner_and_can_be_accepted(sample, picker, tmp_path):
    lm_ax, em_ax = picker.axes
    for s, t in zip(sample.fiducials_lm[:3], sample.fiducials_em[:3]):
        click(lm_ax, s)
        assert picker.logic.prediction is None or len(picker.landmarks) >= 3
        click(em_ax, t)
    assert picker.registration is not None  # 3 pairs determine an affine map
    click(lm_ax, sample.fiducials_lm[3])
    view, q = picker.logic.prediction
    assert view == "em"
    xs, ys = picker._art["em"]["prediction"].get_data()
    np.testing.assert_allclose([xs[0], ys[0]], q)
    # it predicts the true partner to the clicking precision (a few LM display pixels)
    tol = 8 * max(half_px(lm_ax))
    assert np.linalg.norm(q - sample.fiducials_em[3]) < tol
    assert len(picker._art["lm"]["prediction"].get_data()[0]) == 0
    # the other way round: an EM click predicts the LM point
    picker.logic.delete()  # drop the pending LM point
    click(em_ax, sample.fiducials_em[4])
    view, q = picker.logic.prediction
    assert view == "lm" and np.linalg.norm(q - sample.fiducials_lm[4]) < tol
    key(picker, "enter")  # accept the prediction
    assert len(saved(tmp_path / "lm.json")) == 4
    np.testing.assert_allclose(picker.landmarks.src()[3], q)
    assert picker.logic.prediction is None and len(picker._art["lm"]["prediction"].get_data()[0]) == 0


def test_drag_delete_toggle_clear_and_undo_redo_every_action(sample, picker, tmp_path):
    lm_ax, em_ax = picker.axes
    auto = tmp_path / "lm.json"
    for s, t in zip(sample.fiducials_lm[:4], sample.fiducials_em[:4]):
        click(lm_ax, s)
        click(em_ax, t)
    states = [picker.landmarks.copy()]
    # select P2 in the EM view and drag it
    p2 = picker.landmarks.dst()[1]
    target = p2 + [0.15, -0.1]
    mouse(em_ax, p2)
    assert picker.logic.selected == "P2"
    mouse(em_ax, p2 + [0.05, 0.0], "motion_notify_event")
    assert len(saved(auto)) == 4 and np.array_equal(saved(auto).dst()[1], p2)  # not saved mid-drag
    mouse(em_ax, target, "motion_notify_event")
    mouse(em_ax, target, "button_release_event")
    hx, hy = half_px(em_ax)
    moved = picker.landmarks.dst()[1]
    assert abs(moved[0] - target[0]) <= hx and abs(moved[1] - target[1]) <= hy
    np.testing.assert_array_equal(picker.landmarks.src()[1], states[0].src()[1])  # LM side untouched
    assert saved(auto) == picker.landmarks
    states.append(picker.landmarks.copy())
    # toggle P2 inactive (key "a"), then delete it (button)
    key(picker, "a")
    assert not picker.landmarks.active[1] and not saved(auto).active[1]
    assert len(picker.registration.residuals) == 3
    states.append(picker.landmarks.copy())
    picker.buttons["delete"].click()
    assert picker.landmarks.names == ["P1", "P3", "P4"] and saved(auto) == picker.landmarks
    states.append(picker.landmarks.copy())
    picker.buttons["clear"].click()
    assert len(picker.landmarks) == 0 and len(saved(auto)) == 0
    states.append(picker.landmarks.copy())
    # undo everything back, one step at a time, checking memory and file each time
    for expected in reversed(states[:-1]):
        key(picker, "ctrl+z")
        assert picker.landmarks == expected and saved(auto) == expected
    for expected in states[1:]:
        picker.buttons["redo"].click()
        assert picker.landmarks == expected and saved(auto) == expected
    assert not picker.logic.can_redo and picker.buttons["redo"].disabled


def test_half_pair_is_undoable_and_a_second_click_in_the_same_view_replaces_it(sample, picker):
    lm_ax, em_ax = picker.axes
    click(lm_ax, sample.fiducials_lm[0])
    click(lm_ax, sample.fiducials_lm[1])
    np.testing.assert_allclose(picker.logic.pending[1], sample.fiducials_lm[1], atol=2 * max(half_px(lm_ax)))
    picker.logic.undo()
    np.testing.assert_allclose(picker.logic.pending[1], sample.fiducials_lm[0], atol=2 * max(half_px(lm_ax)))
    picker.logic.undo()
    assert picker.logic.pending is None and picker.logic.active_view == "lm"
    key(picker, "ctrl+y")
    assert picker.logic.pending is not None
    key(picker, "escape")
    assert picker.logic.pending is None and len(picker.landmarks) == 0


def test_toolbar_zoom_holds_the_widgetlock_and_clicks_add_nothing(sample, picker):
    lm_ax, em_ax = picker.axes
    canvas = lm_ax.figure.canvas
    canvas.toolbar.zoom()  # the toolbar's zoom mode takes the lock
    assert canvas.widgetlock.locked()
    click(lm_ax, sample.fiducials_lm[0])
    assert picker.logic.pending is None
    canvas.toolbar.zoom()
    click(lm_ax, sample.fiducials_lm[0])
    assert picker.logic.pending is not None


def test_restore_from_autosave_gives_an_identical_state(sample, tmp_path):
    auto = tmp_path / "a.json"
    p = LandmarkPicker(sample.lm, sample.em, autosave=auto)
    for s, t in zip(sample.fiducials_lm[:4], sample.fiducials_em[:4]):
        click(p.axes[0], s)
        click(p.axes[1], t)
    p.logic.toggle_active("P3")
    before, reg = p.landmarks.copy(), p.registration
    p.close()
    del p  # its table autosaves until it is gone
    gc.collect()
    q = LandmarkPicker(sample.lm, sample.em, autosave=auto)
    try:
        assert q.landmarks == before
        np.testing.assert_array_equal(q.registration.transform.matrix, reg.transform.matrix)
        for view in ("lm", "em"):
            assert [t.get_text().split(" ")[0] for t in q._art[view]["texts"]] == before.names
    finally:
        q.close()
    del q
    gc.collect()
    # passing other landmarks too: the autosave file wins, with a warning
    other = Landmarks.from_points(sample.fiducials_lm[:3], sample.fiducials_em[:3])
    with pytest.warns(UserWarning, match="restoring 4 pairs from autosave file") as record:
        r = LandmarkPicker(sample.lm, sample.em, landmarks=other, autosave=auto)
    try:
        assert r.landmarks == before
        assert not [w for w in record if "already" in str(w.message)]  # no other picker is writing
    finally:
        r.close()


def test_starting_landmarks_are_copied_and_saved(sample, tmp_path):
    pairs = Landmarks.from_points(sample.fiducials_lm, sample.fiducials_em)
    p = LandmarkPicker(sample.lm, sample.em, landmarks=pairs, autosave=tmp_path / "s.json")
    p.logic.delete("P1")
    assert len(pairs) == len(sample.fiducials_lm)  # the caller's table is not edited
    assert saved(tmp_path / "s.json") == p.landmarks and len(p.landmarks) == len(pairs) - 1
    p.close()


def test_close_disconnects_and_closes(sample, tmp_path):
    p = LandmarkPicker(sample.lm, sample.em, autosave=tmp_path / "c.json")
    lm_ax, em_ax = p.axes
    canvas = lm_ax.figure.canvas
    cids = p._cids["lm"]
    p.close()
    assert canvas.comm is None and p.widget.comm is None  # widgets closed
    registered = set().union(*(set(v) for v in canvas.callbacks.callbacks.values()))
    assert cids and not set(cids) & registered
    assert len(lm_ax.figure.axes) == 0


def test_bad_inputs(sample, tmp_path):
    with pytest.raises(MissingPixelSizeError, match="lm is a bare ndarray without pixel size"):
        LandmarkPicker(np.zeros((3, 16, 16)), sample.em)
    with pytest.raises(MissingPixelSizeError, match=r"em has no coordinates for \['y', 'x'\]"):
        LandmarkPicker(sample.lm, xr.DataArray(np.zeros((16, 16)), dims=("y", "x")))
    with pytest.raises(ImageError, match="em has 2 channels; pass one channel"):
        LandmarkPicker(sample.lm, as_image(np.zeros((2, 8, 8)), pixel_size=1, channels=["a", "b"]))
    with pytest.raises(ImageError, match=r"lm has a z axis.*lm.isel\(z=k\)"):
        LandmarkPicker(as_image(np.zeros((2, 8, 8)), pixel_size=1), sample.em)
    with pytest.raises(LandmarkError, match="landmarks must be a clemlab Landmarks table"):
        LandmarkPicker(sample.lm, sample.em, landmarks=[[0, 0]])
    # autosave in a folder one cannot write to: refused now, not at the first click
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    target = ro if not os.access(ro, os.W_OK) else Path("/proc")  # root ignores permissions
    try:
        with pytest.raises(FileFormatError, match=f"folder {target} is not writable"):
            LandmarkPicker(sample.lm, sample.em, autosave=target / "a.json")
    finally:
        ro.chmod(stat.S_IRWXU)
    # an autosave file from a newer schema
    newer = tmp_path / "newer.json"
    doc = Landmarks.from_points([[0, 0]], [[1, 1]]).to_json_dict() | {"version": 99}
    newer.write_text(json.dumps(doc))
    with pytest.raises(LandmarkError, match="schema version 99, newer than this clemlab"):
        LandmarkPicker(sample.lm, sample.em, autosave=newer)
    assert json.loads(newer.read_text())["version"] == 99  # left untouched


def test_single_channel_lm_is_accepted_as_one_channel(sample, tmp_path):
    lm2d = sample.lm.sel(c="beads", drop=True).rename("beads")
    p = LandmarkPicker(lm2d, sample.em, autosave=tmp_path / "b.json")
    try:
        assert p.channels == ["beads"]
        click(p.axes[0], sample.fiducials_lm[0])
        click(p.axes[1], sample.fiducials_em[0])
        assert len(p.landmarks) == 1
    finally:
        p.close()


class _Reads:
    """Array wrapper recording the index of every read dask makes."""

    def __init__(self, a):
        self.a, self.shape, self.dtype, self.ndim, self.reads = a, a.shape, a.dtype, a.ndim, []

    def __getitem__(self, key):
        if all(len(range(*k.indices(n))) for k, n in zip(key, self.shape)):  # not dask's meta probe
            self.reads.append(key)
        return self.a[key]


def _read_pixels(rec):
    return sum(np.prod([len(range(*k.indices(n))) for k, n in zip(key, rec.shape)]) for key in rec.reads)


def test_large_em_views_read_only_the_pyramid_level_and_window_they_show(sample, tmp_path):
    n = 4096
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (n, n), dtype=np.uint8)
    rec0, rec2 = _Reads(base), _Reads(base[::4, ::4].copy())
    ps = 5.12 / n
    lvl0 = as_image(da.from_array(rec0, chunks=512), pixel_size=ps, modality="EM")
    lvl2 = as_image(da.from_array(rec2, chunks=512), pixel_size=4 * ps, origin=1.5 * ps, modality="EM")
    tree = xr.DataTree.from_dict({"scale0": xr.Dataset({"image": lvl0}),
                                  "scale1": xr.Dataset({"image": lvl2})})
    p = LandmarkPicker(sample.lm, tree, autosave=tmp_path / "t.json")
    try:
        em_ax = p.axes[1]
        assert rec0.reads == [] and rec2.reads  # the full view comes from the coarse level
        shown = p._views["em"].artist.get_array().shape
        assert max(shown) <= em_ax.get_window_extent().width * 2
        # zoom into a 0.2 µm window: full resolution, only the chunks in view
        em_ax.set_xlim(2.0, 2.2)
        em_ax.set_ylim(2.2, 2.0)
        assert 0 < _read_pixels(rec0) <= 4 * 512 * 512
        win = p._views["em"].window
        assert float(win.x[0]) <= 2.0 and float(win.x[-1]) >= 2.2 - ps
        np.testing.assert_array_equal(p._views["em"].data, base[int(win.y[0] / ps + .5):][: win.sizes["y"],
                                      int(win.x[0] / ps + .5):][:, : win.sizes["x"]])
        # clicks still land at physical positions
        click(p.axes[0], sample.fiducials_lm[0])
        click(em_ax, (2.1, 2.1))
        hx, hy = half_px(em_ax)
        got = p.landmarks.dst()[0]
        assert abs(got[0] - 2.1) <= hx and abs(got[1] - 2.1) <= hy
    finally:
        p.close()


def test_window_of_a_single_level_is_strided_to_the_screen():
    img = as_image(np.arange(1000 * 1000, dtype=np.float32).reshape(1000, 1000), pixel_size=0.01)
    win = window([img], (-0.005, 9.995), (9.995, -0.005), 250, 250)
    assert win.sizes["x"] == 250 and float(win.x[1] - win.x[0]) == pytest.approx(0.04)
    small = window([img], (1.0, 1.1), (1.0, 1.1), 250, 250)
    assert float(small.x[1] - small.x[0]) == pytest.approx(0.01) and small.sizes["x"] < 20


# -- OverlayViewer -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corr(sample):
    # LM channels rendered straight on the EM grid (true transform) so the test does not
    # depend on warp(): channel 0 bright left half, channel 1 a bright square
    em = sample.em
    ny, nx = em.shape
    a = np.zeros((2, ny, nx), np.float32)
    a[0, :, : nx // 2] = 1.0
    a[1, ny // 4: ny // 2, nx // 4: nx // 2] = 1.0
    a += np.random.default_rng(0).random(a.shape, dtype=np.float32) * 0.01
    lm = as_image(a, pixel_size=em.clem.pixel_size["x"], channels=["GFP", "beads"],
                  colors={"GFP": "#00ff00", "beads": "#ff00ff"})
    return xr.Dataset({"EM": em, "LM": lm})


def test_overlay_controls_change_the_rendered_image(corr, tmp_path):
    ov = OverlayViewer(corr, opacity=0.5)

    def rendered():
        ov.figure.canvas.draw()
        return np.asarray(ov.figure.canvas.buffer_rgba()).copy()

    try:
        first = rendered()
        rgba = ov._lm_view.artist.get_array()
        np.testing.assert_allclose(rgba[..., 3].max(), 0.5, atol=1e-6)
        ov.opacity_slider.value = 0.9
        assert not np.array_equal(rendered(), first)
        np.testing.assert_allclose(ov._lm_view.artist.get_array()[..., 3].max(), 0.9, atol=1e-6)
        # green GFP half: the composite is green there, and hiding GFP removes it
        rgb = ov._lm_view.artist.get_array()
        h, w = rgb.shape[:2]
        assert rgb[h * 3 // 4, w // 8, 1] > 0.9 and rgb[h * 3 // 4, w // 8, 0] < 0.1
        ov.channel_rows[0].children[0].value = False  # the GFP checkbox
        assert ov._lm_view.artist.get_array()[h * 3 // 4, w // 8, 3] < 0.05
        out = ov.save_png(tmp_path / "o.png")
        from PIL import Image

        assert Image.open(out).size[0] > 100
        with pytest.raises(ImageError, match="folder .* does not exist"):
            ov.save_png(tmp_path / "no" / "o.png")
        assert any("µm" in t.get_text() or "nm" in t.get_text() for t in ov._scale_artists if hasattr(t, "get_text"))
    finally:
        ov.close()


def test_overlay_bad_inputs(sample, corr):
    with pytest.raises(ImageError, match="needs all three"):
        OverlayViewer(sample.em, sample.lm)
    with pytest.raises(ImageError, match=r"corr lacks variables \['LM'\]"):
        OverlayViewer(corr[["EM"]])
    with pytest.raises(MissingPixelSizeError, match="em is a bare ndarray"):
        OverlayViewer(np.zeros((8, 8)), sample.lm, sample.transform)
    with pytest.raises(ValueError, match="opacity must be between 0 and 1"):
        OverlayViewer(corr, opacity=2)


def test_overlay_from_em_lm_registration_draws_residual_arrows(sample):
    rng = np.random.default_rng(3)
    noisy = sample.fiducials_em + rng.normal(0, 0.005, sample.fiducials_em.shape)
    reg = register(Landmarks.from_points(sample.fiducials_lm, noisy))
    ov = OverlayViewer(sample.em, sample.lm, reg)
    try:
        q = ov._arrows
        np.testing.assert_allclose(q.U, reg.residual_vectors[:, 0] * ov._arrow_gain)
        np.testing.assert_allclose(q.V, reg.residual_vectors[:, 1] * ov._arrow_gain)
        np.testing.assert_allclose(q.X, noisy[:, 0])
        ov.arrows_checkbox.value = False
        assert ov._arrows is None
    finally:
        ov.close()


def test_overlay_predicted_error_contours(sample):
    rng = np.random.default_rng(4)
    noisy = sample.fiducials_em + rng.normal(0, 0.005, sample.fiducials_em.shape)
    reg = register(Landmarks.from_points(sample.fiducials_lm, noisy))
    ov = OverlayViewer(sample.em, sample.lm, reg)
    try:
        assert ov._contours is None and not ov.error_checkbox.disabled
        ov.error_checkbox.value = True
        levels = ov._contours.levels
        # the contoured field is the registration's mapping error at EM positions, in nm
        em = ov._error_map
        q = np.array([[float(em.x[5]), float(em.y[9])]])
        assert float(em[9, 5]) == pytest.approx(reg.predicted_error(reg.transform.inverse(q))[0] * 1e3)
        assert len(levels) >= 3 and levels.min() < float(em.max()) and levels.max() > float(em.min())
        assert em.attrs["units"] == "nm"
        ov.error_checkbox.value = False
        assert ov._contours is None
    finally:
        ov.close()


# -- an honest picker: refusals, uncertainty, every model, help --------------------------------
def _pairs(picker, sample, n):
    lm_ax, em_ax = picker.axes
    for s, t in zip(sample.fiducials_lm[:n], sample.fiducials_em[:n]):
        click(lm_ax, s)
        click(em_ax, t)


def test_accept_prediction_refuses_a_partner_outside_the_other_image(sample, picker):
    _pairs(picker, sample, 4)
    lm_ax, _ = picker.axes
    # an LM point whose EM partner falls beyond the (smaller) EM field
    ext = sample.em.clem.extent
    outside_em = np.array([ext["x"][1] + 0.5, np.mean(ext["y"])])
    p = picker.registration.transform.inverse(outside_em[None])[0]
    picker.logic.press("lm", p)
    with pytest.raises(LandmarkError, match=r"predicted EM partner at .* is not accepted: it lies outside the EM image"):
        picker.logic.accept_prediction()
    key(picker, "enter")  # through the widget: refused in words, nothing added
    assert "lies outside the EM image" in picker.message.value and len(picker.landmarks) == 4
    # a click outside an image is refused too, so the statistics only ever hold pairs inside both
    with pytest.raises(LandmarkError, match=r"click at .* refused: it lies outside the EM image"):
        picker.logic.press("em", outside_em)
    assert len(picker.registration.residuals) == 4


def test_accept_prediction_refuses_an_empty_region(sample, tmp_path):
    em = sample.em.copy()
    bx, by = sample.fiducials_em[5]
    gap = (abs(em.x - bx) < 0.5) & (abs(em.y - by) < 0.5)
    em = em.where(~gap, 0).astype(sample.em.dtype)  # never acquired around bead 6 (a mosaic gap)
    p = LandmarkPicker(sample.lm, em, autosave=tmp_path / "e.json")
    try:
        for i in range(4):
            p.logic.press("lm", sample.fiducials_lm[i])
            p.logic.press("em", sample.fiducials_em[i])
        p.logic.press("lm", sample.fiducials_lm[5])
        with pytest.raises(LandmarkError, match=r"it lies on an empty region of the EM image \(every pixel around it is 0"):
            p.logic.accept_prediction()
        assert len(p.landmarks) == 4
    finally:
        p.close()


def test_prediction_ellipse_covers_the_true_partner_at_the_stated_rate(sample, tmp_path):
    """Over many noisy 4-pair fits, the drawn 95 % ellipse holds the true partner ~95 % of the time."""
    from clemlab.widgets._logic import PickerLogic

    rng = np.random.default_rng(3)
    inside, n_trials = 0, 300
    truth = sample.transform
    probe = sample.fiducials_lm[5]
    for _ in range(n_trials):
        src = sample.fiducials_lm[:5] + rng.normal(0, 0.03, (5, 2))
        dst = sample.fiducials_em[:5] + rng.normal(0, 0.03, (5, 2))
        lg = PickerLogic(Landmarks.from_points(src, dst), model="similarity")
        click_lm = probe + rng.normal(0, 0.03, 2)
        lg.press("lm", click_lm)
        view, centre, (w, h), angle = lg.prediction_ellipse
        assert view == "em"
        d = truth(probe[None])[0] + rng.normal(0, 0.03, 2) - centre  # a partner clicked with the same noise
        a = np.radians(angle)
        u = np.array([np.cos(a) * d[0] + np.sin(a) * d[1], -np.sin(a) * d[0] + np.cos(a) * d[1]])
        inside += (u[0] / (w / 2)) ** 2 + (u[1] / (h / 2)) ** 2 <= 1
    assert 0.9 <= inside / n_trials <= 0.99, inside / n_trials


def test_the_ellipse_is_drawn_and_the_model_menu_offers_every_model(sample, picker):
    from clemlab.transforms import MODELS

    offered = {v for _, v in picker.model_dropdown.options}
    fits_2d = set(MODELS) - {"identity", "rigid-projection"}
    assert offered == fits_2d and "tps" in offered
    _pairs(picker, sample, 6)
    picker.model_dropdown.value = "tps"
    assert picker.registration.model == "tps"
    picker.logic.press("lm", sample.fiducials_lm[6] if len(sample.fiducials_lm) > 6 else sample.targets_lm[0])
    ell = picker._art["em"]["ellipse"]
    assert ell.get_visible() and ell.width > 0
    np.testing.assert_allclose(ell.get_center(), picker.logic.prediction[1])


def test_help_toggle_lists_the_shortcuts_and_sliders_have_room(picker):
    assert picker.help.layout.display == "none"
    picker.help_button.value = True
    assert picker.help.layout.display != "none"
    for k in ("Enter", "Escape", "Delete", "ctrl+z", "ctrl+y", "<kbd>a</kbd>", "<kbd>s</kbd>"):
        assert k in picker.help.value
    # with no proposals their buttons hide, and nothing else with them (figures, controls)
    def shown(widget):
        return widget.layout.display in (None, "") and all(shown(c) for c in getattr(widget, "children", ())
                                                          if c is not picker._proposal_row and c is not picker.help)
    assert picker._proposal_row.layout.display == "none" and shown(picker.widget)
    sliders = [picker.em_contrast_slider] + [row.children[2] for row in picker._channel_rows]
    assert all(s.layout.width not in (None, "auto", "") and int(s.layout.width.rstrip("px")) >= 300 for s in sliders)


def test_no_debug_labels_in_the_widgets(sample, picker):
    import ipywidgets as w

    reg = register(Landmarks.from_points(sample.fiducials_lm, sample.fiducials_em))
    ov = OverlayViewer(sample.em, sample.lm, reg)
    try:
        def texts(widget):
            out = [getattr(widget, "value", "")] if isinstance(widget, (w.Label, w.HTML)) else []
            for c in getattr(widget, "children", ()):
                out += texts(c)
            return out

        shown = texts(picker.widget) + texts(ov.widget)
        assert not any(re.search(r"\b[0-9a-f]{8}\b", str(t)) for t in shown), shown
    finally:
        ov.close()


def test_snap_moves_a_rough_em_click_onto_the_bead(tmp_path):
    from clemlab.datasets import synthetic_clem

    sample = synthetic_clem(seed=0)
    ext = sample.em.clem.extent
    inner = [i for i, q in enumerate(sample.fiducials_em)
             if ext["x"][0] + 2 < q[0] < ext["x"][1] - 2 and ext["y"][0] + 2 < q[1] < ext["y"][1] - 2]
    rng = np.random.default_rng(0)
    rough = sample.fiducials_em + rng.uniform(-0.25, 0.25, sample.fiducials_em.shape)
    lms = Landmarks.from_points(sample.fiducials_lm, rough)
    p = LandmarkPicker(sample.lm, sample.em, landmarks=lms, model="similarity")
    try:
        name = p.landmarks.names[inner[0]]
        before = np.linalg.norm(rough[inner[0]] - sample.fiducials_em[inner[0]])
        p.logic.select(name)
        got = p.snap()
        after = np.linalg.norm(p.landmarks.dst()[inner[0]] - sample.fiducials_em[inner[0]])
        assert after < 0.05 < before and after < 3 * got["sigma"] + 0.01
        p.logic.undo()
        np.testing.assert_allclose(p.landmarks.dst()[inner[0]], rough[inner[0]])
    finally:
        p.close()


def test_snap_and_refine_refuse_in_words(sample, picker):
    with pytest.raises(LandmarkError, match="no pair is selected"):
        picker.snap()
    with pytest.raises(LandmarkError, match="click at least two pairs"):
        picker.refine_from_images()


def test_refine_from_images_offers_proposals_to_accept_or_reject(tmp_path):
    from clemlab.datasets import synthetic_clem

    sample = synthetic_clem(seed=0)
    rng = np.random.default_rng(0)
    clicks = Landmarks.from_points(sample.fiducials_lm[:2] + rng.normal(0, 0.3, (2, 2)), sample.fiducials_em[:2])
    p = LandmarkPicker(sample.lm, sample.em, landmarks=clicks, model="similarity")
    try:
        match = p.refine_from_images()
        props = list(p.logic.proposals)
        assert len(props) >= 3 and match.verdict in ("good", "ambiguous")
        src = np.array([q["src"] for q in props])
        dst = np.array([q["dst"] for q in props])
        err = np.linalg.norm(sample.transform(src) - dst, axis=1)
        assert np.median(err) < 0.1  # the proposals are true correspondences
        assert p.buttons["take"].disabled is False and "proposed pairs" in p.status.value
        p.logic.accept_proposal()
        p.logic.reject_proposal()
        assert len(p.landmarks) == 3 and len(p.logic.proposals) == len(props) - 2
        n = p.logic.accept_all_proposals()
        assert len(p.landmarks) == 3 + n and not p.logic.proposals
        p.logic.undo()
        assert len(p.landmarks) == 3
    finally:
        p.close()

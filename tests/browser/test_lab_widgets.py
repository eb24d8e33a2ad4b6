"""LandmarkPicker and OverlayViewer in a real JupyterLab, driven in headless Chromium.

The test writes a notebook into the server's fresh root folder, runs it, clicks four LM/EM
correspondences on the ipympl canvases and checks what the kernel recorded (through the
picker's autosave file) against the clicked physical positions, then drags the overlay's
opacity slider and checks the rendered overlay changed.
"""

from __future__ import annotations

import json
import time

import nbformat
import numpy as np
import pytest

from clemlab.datasets import synthetic_clem_small

pytestmark = pytest.mark.browser

SEED = 1
SETUP = f"""\
%matplotlib widget
import json
import clemlab as cl
from clemlab.datasets import synthetic_clem_small
d = synthetic_clem_small(seed={SEED})
picker = cl.LandmarkPicker(d.lm, d.em, autosave="clicked.json", figsize=(4, 4))
picker"""
GEOMETRY = """\
import ipywidgets as w

def write_geometry(_b=None):
    geo = {}
    for name, ax in zip(("lm", "em"), picker.axes):
        fig = ax.figure
        fig.canvas.draw()  # final axes box (imshow's equal aspect is applied at draw time)
        geo[name] = {"matrix": ax.transData.get_matrix().tolist(), "height": fig.bbox.height,
                     "width": fig.bbox.width, "dpi": fig.dpi}
    with open("geometry.json", "w") as fh:
        json.dump(geo, fh)
    done.value = f"geometry written {geo_button.n}"
    geo_button.n += 1

geo_button = w.Button(description="write geometry")
geo_button.n = 0
geo_button.on_click(write_geometry)
done = w.Label()
w.HBox([geo_button, done])"""
OVERLAY = """\
reg = cl.register(cl.Landmarks.from_points(d.fiducials_lm, d.fiducials_em))
overlay = cl.OverlayViewer(d.em, d.lm, reg, opacity=0.8, figsize=(4, 4))
overlay"""


def _wait(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _read_json(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_notebook(path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in (SETUP, GEOMETRY, OVERLAY)]
    nbformat.write(nb, path)


def _page_xy(box, geo, xy):
    """Page position (CSS px) of physical ``xy`` (µm) on a figure canvas at ``box``."""
    m = np.asarray(geo["matrix"])
    dx, dy, _ = m @ [xy[0], xy[1], 1.0]
    scale = box["width"] / geo["width"]  # CSS px per figure px (1 at device pixel ratio 1)
    return box["x"] + dx * scale, box["y"] + (geo["height"] - dy) * scale


def _px_um(geo):
    """Size of one display pixel in µm along x and y."""
    m = np.asarray(geo["matrix"])
    return 1.0 / abs(m[0, 0]), 1.0 / abs(m[1, 1])


def test_click_four_pairs_then_move_the_overlay_opacity(lab, page):
    _write_notebook(lab.root / "picker.ipynb")
    sample = synthetic_clem_small(seed=SEED)
    page.goto(lab.url("lab/tree/picker.ipynb") + "&reset")  # a fresh workspace: only this notebook open
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=90_000)
    # run the three cells in turn (Shift+Enter runs a cell and moves to the next)
    page.locator(".jp-Notebook .jp-Cell .jp-InputArea-editor").first.click()
    for _ in range(3):
        page.keyboard.press("Shift+Enter")
    canvases = page.locator("div.jupyter-matplotlib-canvas-div")
    _wait(lambda: canvases.count() >= 3, 120, "three ipympl figures")
    button = page.get_by_role("button", name="write geometry")
    button.wait_for(timeout=60_000)
    auto = lab.root / "clicked.json"
    _wait(lambda: _read_json(auto) is not None, 30, "the autosave file")

    geo_file = lab.root / "geometry.json"

    def geometry(n):
        button.click()
        page.get_by_text(f"geometry written {n}").wait_for(timeout=30_000)
        return _read_json(geo_file)

    geo = geometry(0)
    tops = {"lm": canvases.nth(0).locator("canvas").last, "em": canvases.nth(1).locator("canvas").last}
    tops["lm"].scroll_into_view_if_needed()

    def box(view):  # where the canvas is now (the notebook may scroll)
        b = tops[view].bounding_box()
        assert b["width"] == pytest.approx(geo[view]["width"], abs=1)  # drawn 1:1
        return b

    lm_pts, em_pts = sample.fiducials_lm[:4], sample.fiducials_em[:4]
    for i, (s, t) in enumerate(zip(lm_pts, em_pts)):
        page.mouse.click(*_page_xy(box("lm"), geo["lm"], s))
        page.mouse.click(*_page_xy(box("em"), geo["em"], t))
        _wait(lambda: len((_read_json(auto) or {}).get("pairs", [])) == i + 1, 30, f"pair {i + 1} saved")
    assert geometry(1) == geo  # the view did not move while clicking

    pairs = _read_json(auto)["pairs"]
    got_lm = np.array([p["src"] for p in pairs])
    got_em = np.array([p["dst"] for p in pairs])
    for got, want, g in ((got_lm, lm_pts, geo["lm"]), (got_em, em_pts, geo["em"])):
        px, py = _px_um(g)
        assert np.all(np.abs(got[:, 0] - want[:, 0]) <= px), (got, want, px)
        assert np.all(np.abs(got[:, 1] - want[:, 1]) <= py), (got, want, py)
    # the page shows the same state
    page.get_by_text("4 pairs (4 active)").first.wait_for(timeout=10_000)

    # -- overlay: drag the opacity slider, the rendered overlay changes ----------------
    overlay_canvas = canvases.nth(2)
    overlay_canvas.scroll_into_view_if_needed()
    before_png = overlay_canvas.screenshot()
    slider = page.locator(".widget-slider", has_text="LM opacity")
    handle = slider.locator(".noUi-handle").first
    readout = slider.locator(".widget-readout")
    assert readout.text_content().strip() == "0.80"

    def drag_left():
        handle.scroll_into_view_if_needed()
        hb = handle.bounding_box()
        page.mouse.move(hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2)
        page.mouse.down()
        page.mouse.move(hb["x"] - 60, hb["y"] + hb["height"] / 2, steps=5)
        page.mouse.up()
        return readout.text_content().strip() != "0.80"

    _wait(drag_left, 30, "the opacity slider to move", interval=0.5)
    _wait(lambda: overlay_canvas.screenshot() != before_png, 30, "the overlay canvas to change")
    assert float(readout.text_content()) < 0.8

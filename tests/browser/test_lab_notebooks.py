"""Every tutorial in notebooks/, opened in a real JupyterLab in Chromium and run from the menu.

For each notebook: Run > Run All Cells, wait until every code cell has run, save, and check
the saved file has no error output; the page must show at least one rendered figure or live
widget canvas. A screenshot of each notebook (scrolled to its first figure) is written at a
1366 x 768 laptop size, and the click-correspondences notebook (the widgets) also at
1920 x 1080; the folder is printed (set ``CLEMLAB_SCREENSHOTS`` to choose it).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.browser

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
SIZES = {"laptop": (1366, 768), "desktop": (1920, 1080)}
#: Rendered matplotlib figures (inline PNG/SVG) and live ipympl canvases.
FIGURES = ".jp-RenderedImage img, .jp-RenderedSVG svg, div.jupyter-matplotlib-canvas-div"
WIDGET_NOTEBOOK = "05_click_correspondences"


@pytest.fixture(scope="module")
def lab_notebooks(lab):
    """The notebooks folder copied into the server's root (notebooks write beside themselves)."""
    dest = lab.root / "notebooks"
    if not dest.exists():
        shutil.copytree(NOTEBOOK_DIR, dest, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return dest


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = Path(os.environ.get("CLEMLAB_SCREENSHOTS") or tmp_path_factory.mktemp("notebook_screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _wait(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _all_ran(page, n_code: int) -> bool:
    prompts = page.locator(".jp-CodeCell .jp-InputArea-prompt").all_text_contents()
    done = [p for p in prompts if p.strip().startswith("[") and p.strip()[1:-2].strip().isdigit()]
    return len(done) >= n_code and not any("*" in p for p in prompts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_jupyterlab_and_shows_figures(path, lab, lab_notebooks, browser, shots, capsys):
    nb_file = lab_notebooks / path.name
    n_code = sum(c.cell_type == "code" for c in nbformat.read(nb_file, as_version=4).cells)
    width, height = SIZES["laptop"]
    ctx = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
    page = ctx.new_page()
    try:
        page.goto(lab.url(f"lab/tree/notebooks/{path.name}") + "&reset")  # a fresh workspace: only this notebook open
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
        page.get_by_text("| Idle").first.wait_for(timeout=90_000)
        if page.locator(".jp-FileBrowser").first.is_visible():
            page.keyboard.press("Control+b")  # fold the file browser: the notebook gets the width
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        _wait(lambda: _all_ran(page, n_code), 600, f"every cell of {path.name} to run")
        page.get_by_text("| Idle").first.wait_for(timeout=120_000)
        page.keyboard.press("Control+s")
        _wait(lambda: "Saving completed" in page.content() or _saved(nb_file, n_code), 30, "the save")
        _wait(lambda: _saved(nb_file, n_code), 30, f"{path.name} saved with its outputs")
        ran = nbformat.read(nb_file, as_version=4)
        errors = [o for c in ran.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if o.get("output_type") == "error"]
        assert not errors, [f"{e.get('ename')}: {e.get('evalue')}" for e in errors]
        figures = page.locator(FIGURES)
        _wait(lambda: figures.count() >= 1, 60, f"a rendered figure or widget canvas in {path.name}")
        no_news = page.get_by_role("button", name="No", exact=True)
        if no_news.count():
            no_news.first.click()  # JupyterLab's "get notified about news?" toast
        figures.first.evaluate("e => e.scrollIntoView({block: 'start'})")
        time.sleep(1.0)  # let ipympl draw into its canvas
        names = [("laptop", page.screenshot(path=str(shots / f"{path.stem}-1366x768.png")))]
        if path.stem == WIDGET_NOTEBOOK:
            page.set_viewport_size({"width": SIZES["desktop"][0], "height": SIZES["desktop"][1]})
            time.sleep(1.0)
            figures.first.evaluate("e => e.scrollIntoView({block: 'start'})")
            names.append(("desktop", page.screenshot(path=str(shots / f"{path.stem}-1920x1080.png"))))
        with capsys.disabled():
            print(f"\n{path.name}: {figures.count()} figures/canvases; screenshots in {shots}")
    finally:
        ctx.close()


def _saved(nb_file: Path, n_code: int) -> bool:
    try:
        nb = nbformat.read(nb_file, as_version=4)
    except Exception:  # being written
        return False
    return sum(c.cell_type == "code" and c.get("execution_count") is not None for c in nb.cells) >= n_code

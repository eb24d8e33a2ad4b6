"""Every tutorial, executed the way JupyterLab runs it, shows what it is about.

nbval (run by the suite over ``notebooks/``) checks that cells run and compares the
deterministic printed outputs; it inherits ``MPLBACKEND=Agg`` from CI, under which plain
``plt.show()`` draws nothing. Here each notebook runs through nbclient in a kernel whose
environment has no ``MPLBACKEND``, as a JupyterLab user's kernel has, and must produce at least
one figure (PNG/SVG) or live widget output. A notebook that forces a backend with
``matplotlib.use`` hides its figures from users and is refused outright.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
FIGURE_TYPES = ("image/png", "image/svg+xml", "application/vnd.jupyter.widget-view+json")


def shown_figures(nb) -> int:
    """How many outputs of ``nb`` are figures or live widgets."""
    return sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if o.get("output_type") in ("display_data", "execute_result")
               and any(t in o.get("data", {}) for t in FIGURE_TYPES))


def test_every_tutorial_is_found():
    assert len(NOTEBOOKS) >= 7, NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_no_notebook_forces_a_matplotlib_backend(path):
    nb = nbformat.read(path, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert not re.search(r"matplotlib\.use\s*\(|\buse\s*\(\s*['\"]agg", code, re.IGNORECASE), (
        f"{path.name} calls matplotlib.use: its figures would not show in JupyterLab; use %matplotlib inline")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_run_like_jupyterlab_shows_a_figure(path, tmp_path):
    from nbclient import NotebookClient

    # a copy of the folder: notebooks write files beside themselves (autosave, outputs)
    work = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOK_DIR, work, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    nb = nbformat.read(work / path.name, as_version=4)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}})
    client.execute(env=env)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    assert shown_figures(nb) >= 1, f"{path.name} shows no figure or widget when run in JupyterLab"

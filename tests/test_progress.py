"""clemlab.progress: a bar for long dask work, in a terminal, in a Jupyter kernel, on a cluster."""

from __future__ import annotations

import io

import dask
import dask.array as da
import nbformat
import numpy as np
import pytest
from dask.callbacks import Callback

import clemlab as cl


def _lazy_image():
    data = da.from_array(np.arange(1024 * 1024, dtype=np.uint16).reshape(1024, 1024) % 4000, chunks=256)
    return cl.as_image(data, pixel_size=0.01, modality="EM")


def test_text_bar_reaches_100_percent_while_writing_and_restores_callbacks(tmp_path):
    before = set(Callback.active)
    out = io.StringIO()
    with dask.config.set(scheduler="threads"), cl.progress("writing a mosaic", stream=out):
        cl.write_ome_zarr(_lazy_image(), tmp_path / "m.ome.zarr", scale_factors=(2,))
    text = out.getvalue()
    assert text.startswith("writing a mosaic\n")
    assert "100% of part" in text.split("\r")[-1]
    assert set(Callback.active) == before
    np.testing.assert_array_equal(cl.open_image(tmp_path / "m.ome.zarr").values, _lazy_image().values)


def test_disabled_progress_prints_nothing():
    out = io.StringIO()
    with cl.progress("quiet", enabled=False, stream=out):
        da.ones((100, 100), chunks=10).sum().compute()
    assert out.getvalue() == ""


def test_under_a_distributed_client_the_dashboard_is_named():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        out = io.StringIO()
        with cl.progress("warping", stream=out):
            assert da.ones((100, 100), chunks=10).sum().compute() == 10000
    assert "running on the dask.distributed cluster" in out.getvalue()
    assert client.dashboard_link in out.getvalue()


@pytest.mark.slow
def test_in_a_jupyter_kernel_the_bar_is_a_widget(tmp_path):
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import clemlab as cl, dask, dask.array as da\n"
        "with dask.config.set(scheduler='threads'), cl.progress('summing'):\n"
        "    total = da.ones((2000, 2000), chunks=200).sum().compute()\n"
        "print(total)")])
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    assert not [o for o in outputs if o.output_type == "error"], outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    assert any(o.output_type == "stream" and "4000000" in o.text for o in outputs)

"""Responsiveness and memory of the LandmarkPicker (a benchmark, not a test).

1. Click latency: in-kernel time from a mouse click to the finished redraw of both views
   (event handling, landmark edit + atomic autosave, affine refit with leave-one-out errors,
   marker update, Agg render of both figures and the PNG diff ipympl sends to the page), for a
   4096 x 4096 EM image and a picker holding 20 pairs. Target: median < 50 ms.
   Baseline measured in the same run: the naive view, the same click handled by redrawing a
   figure that shows the full-resolution 4096 x 4096 array (no level/window selection).
2. Memory: resident size after 100 open/close cycles of the picker versus after 10.
   Target: within 10 %.

Run:  python benchmarks/bench_widgets.py [--clicks 40] [--cycles 100]
"""

from __future__ import annotations

import _checkout  # noqa: F401  (first: this checkout's clemlab, not an installed copy)

import argparse
import gc
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from matplotlib.backend_bases import MouseEvent

from clemlab.datasets import synthetic_clem_small
from clemlab.image import as_image
from clemlab.landmarks import Landmarks
from clemlab.widgets import LandmarkPicker
from clemlab.widgets._display import new_widget_figure


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def big_em(n: int = 4096) -> "xarray.DataArray":  # noqa: F821
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (n, n), dtype=np.uint8)
    return as_image(img, pixel_size=5.12 / n, modality="EM")


def pairs(sample, n: int = 20) -> Landmarks:
    rng = np.random.default_rng(1)
    src = rng.uniform(1.0, 11.0, (n, 2))
    dst = sample.transform(src) + rng.normal(0, 0.005, (n, 2))
    return Landmarks.from_points(src, dst)


def send_click(ax, xy) -> None:
    x, y = ax.transData.transform(xy)
    canvas = ax.figure.canvas
    MouseEvent("button_press_event", canvas, round(x), round(y), button=1)._process()
    MouseEvent("button_release_event", canvas, round(x), round(y), button=1)._process()


def finish_redraw(figs) -> None:
    """What the kernel does before the page can show the new picture.

    ipympl's ``draw()`` renders with Agg and sends the PNG diff to the page. Without a page
    ipympl would also encode a second, full PNG for the notebook file (``syncing_data_url``);
    a connected page switches that off, and so does this benchmark.
    """
    for fig in figs:
        fig.canvas.syncing_data_url = False
        fig.canvas.draw()


def bench_picker(sample, em, n_clicks: int, folder: Path) -> list[float]:
    p = LandmarkPicker(sample.lm, em, landmarks=pairs(sample), autosave=folder / "bench.json")
    finish_redraw(p.figures)
    rng = np.random.default_rng(2)
    lm_ax, em_ax = p.axes
    times = []
    for i in range(n_clicks):
        ax = lm_ax if i % 2 == 0 else em_ax
        xy = rng.uniform(1.0, 11.0, 2) if ax is lm_ax else rng.uniform(0.5, 4.5, 2)
        blits = p.blits
        t0 = time.perf_counter()
        send_click(ax, xy)  # the picker redraws its markers itself (blitting, sent to the page)
        if p.blits == blits:  # it asked for a full redraw instead: do it
            finish_redraw(p.figures)
        times.append(time.perf_counter() - t0)
    added = len(p.landmarks) - 20  # (a click on an existing marker selects it instead)
    p.close()
    return times, added


def bench_naive(em, n_clicks: int) -> list[float]:
    """Baseline: full-resolution imshow; a click adds a marker and redraws."""
    fig = new_widget_figure((4.6, 4.6))
    ax = fig.add_subplot()
    ax.imshow(np.asarray(em.values), extent=em.clem.mpl_extent, cmap="gray", interpolation="nearest")
    (marks,) = ax.plot([], [], "+")
    pts = []
    fig.canvas.mpl_connect("button_press_event",
                           lambda e: (pts.append((e.xdata, e.ydata)), marks.set_data(*zip(*pts))))
    finish_redraw([fig])
    rng = np.random.default_rng(2)
    times = []
    for _ in range(n_clicks):
        t0 = time.perf_counter()
        send_click(ax, rng.uniform(0.5, 4.5, 2))
        finish_redraw([fig])
        times.append(time.perf_counter() - t0)
    fig.canvas.close()
    return times


def bench_memory(sample, em, cycles: int, folder: Path) -> tuple[float, float]:
    lms = pairs(sample)
    at10 = None
    for i in range(1, cycles + 1):
        p = LandmarkPicker(sample.lm, em, landmarks=lms, autosave=folder / f"m{i % 2}.json")
        (folder / f"m{i % 2}.json").unlink()
        p.close()
        del p
        if i == 10:
            gc.collect()
            at10 = rss_mib()
    gc.collect()
    return at10, rss_mib()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clicks", type=int, default=40)
    ap.add_argument("--cycles", type=int, default=100)
    args = ap.parse_args()
    sample = synthetic_clem_small(seed=0)
    em = big_em()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        picker, added = bench_picker(sample, em, args.clicks, folder)
        naive = bench_naive(em, max(10, args.clicks // 4))
        m_picker, m_naive = statistics.median(picker), statistics.median(naive)
        print(f"click -> finished redraw, 4096^2 EM, 20-pair affine fit ({args.clicks} clicks, {added} pairs added)")
        print(f"  picker           median {m_picker * 1e3:7.1f} ms   p90 {np.percentile(picker, 90) * 1e3:7.1f} ms"
              f"   target < 50 ms: {'OK' if m_picker < 0.05 else 'MISSED'}")
        print(f"  baseline (naive full-resolution imshow) median {m_naive * 1e3:7.1f} ms")
        print(f"  ratio picker / baseline: {m_picker / m_naive:.2f}")
        at10, at_end = bench_memory(sample, em, args.cycles, folder)
        print(f"memory (RSS) after 10 open/close cycles {at10:.1f} MiB, after {args.cycles}: {at_end:.1f} MiB"
              f"  ratio {at_end / at10:.3f}  target <= 1.10: {'OK' if at_end <= 1.1 * at10 else 'MISSED'}")


if __name__ == "__main__":
    main()

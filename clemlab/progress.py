"""Progress of long dask computations (warping and writing a mosaic), in a notebook or a terminal.

``with clemlab.progress("writing the mosaic"): ...`` shows, while the block computes with dask's
local schedulers, the share of tasks done, which computation this is (a writer streams a large
image in several) and the time since the start: as an ipywidgets bar in a Jupyter kernel, as
one redrawn line on stderr elsewhere. dask's callbacks are as before once the block ends, and
Ctrl-C (interrupting the kernel) passes through unchanged.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["progress"]

#: Least time between two redraws, s: drawing must not slow the computation down.
REDRAW_INTERVAL_S = 0.5


def _in_notebook_kernel() -> bool:
    """True inside a Jupyter kernel with ipywidgets installed (IPython is not imported here)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None or not hasattr(shell, "kernel"):
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


class _TextView:
    """One line on ``stream``, redrawn in place with a carriage return."""

    def __init__(self, label: str, stream: Any):
        self.stream = stream
        print(label, file=stream, flush=True)

    def draw(self, share: float, part: int, seconds: float) -> None:
        bar = "#" * int(30 * share)
        self.stream.write(f"\r[{bar:<30}] {share:4.0%} of part {part} | {seconds:5.1f} s")
        self.stream.flush()

    def close(self) -> None:
        print(file=self.stream, flush=True)


class _WidgetView:
    """An ipywidgets progress bar with the label and a status line, shown in the cell."""

    def __init__(self, label: str):
        import ipywidgets as w
        from IPython.display import display

        self.bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, description="",
                                   layout=w.Layout(width="320px"))
        self.status = w.Label("starting")
        display(w.VBox([w.Label(label), w.HBox([self.bar, self.status])]))

    def draw(self, share: float, part: int, seconds: float) -> None:
        self.bar.value = share
        self.status.value = f"{share:4.0%} of part {part} · {seconds:.1f} s"

    def close(self) -> None:
        self.bar.bar_style = "success" if self.bar.value >= 1.0 else "warning"


def _distributed_dashboard() -> str | None:
    """The dashboard address of the current dask.distributed client, or None without one."""
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return None
    try:
        client = distributed.get_client()
    except ValueError:  # no client
        return None
    return getattr(client, "dashboard_link", None) or "the client's dashboard"


def _callback(view: Any) -> Any:
    """A dask callback that reports the running computation's share of finished tasks to ``view``."""
    from dask.callbacks import Callback

    class _Progress(Callback):
        def __init__(self):
            super().__init__()
            self.part, self.t0, self.drawn = 0, time.monotonic(), 0.0

        def _start_state(self, dsk, state):
            self.part += 1
            self._draw(state, force=True)

        def _posttask(self, key, result, dsk, state, worker_id):
            self._draw(state)

        def _finish(self, dsk, state, errored):
            self._draw(state, force=True)

        def _draw(self, state, force=False):
            now = time.monotonic()
            if not force and now - self.drawn < REDRAW_INTERVAL_S:
                return
            self.drawn = now
            done = len(state["finished"])
            total = done + sum(len(state[k]) for k in ("ready", "waiting", "running"))
            view.draw(done / total if total else 1.0, self.part, now - self.t0)

    return _Progress()


@contextlib.contextmanager
def progress(label: str, *, enabled: bool = True, stream: Any = None) -> Iterator[None]:
    """Show the progress of the dask computations run inside the block.

    Parameters
    ----------
    label : str
        What is being done, shown above the bar (e.g. ``"writing mosaic.ome.zarr"``).
    enabled : bool
        False shows nothing (for scripts that want quiet output).
    stream : file-like, optional
        Where the text line goes outside a notebook (default ``sys.stderr``); given a stream,
        the text line is drawn even in a notebook.

    Examples
    --------
    >>> with clemlab.progress("warping LM onto the EM mosaic"):            # doctest: +SKIP
    ...     clemlab.write_ome_zarr(clemlab.correlate(em, lm, reg), "out.ome.zarr")

    Notes
    -----
    Local dask schedulers (threads, processes, synchronous) report through dask's callbacks;
    under a ``dask.distributed`` client the work runs on the cluster, whose dashboard shows the
    progress: the block then shows a link to it.
    """
    if not enabled:
        yield
        return
    dashboard = _distributed_dashboard()
    if dashboard is not None:  # the work runs on the cluster: local callbacks never fire
        text = f"{label}: running on the dask.distributed cluster; its progress is at {dashboard}"
        if stream is None and _in_notebook_kernel():
            import ipywidgets as w
            from IPython.display import display

            display(w.HTML(f"{label}: running on the dask.distributed cluster; progress on "
                           f"<a href='{dashboard}' target='_blank'>its dashboard</a>"))
        else:
            print(text, file=sys.stderr if stream is None else stream, flush=True)
        yield
        return
    view = _WidgetView(label) if stream is None and _in_notebook_kernel() else \
        _TextView(label, sys.stderr if stream is None else stream)
    try:
        with _callback(view):
            yield
    finally:
        view.close()

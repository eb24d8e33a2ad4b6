"""Drawing helpers shared by the widgets: input checks, pyramid levels, view windows.

A view never pulls more pixels than it can show: for the axes limits and size on screen it
picks the coarsest pyramid level (or the largest stride of a single-level image) that still
gives about one image pixel per screen pixel, and reads only the window in view. Dask-backed
images therefore stay lazy except for that small window.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable

import numpy as np
import xarray as xr

from ..errors import ImageError, MissingPixelSizeError
from ..image import check_image

__all__ = ["as_levels", "window", "ViewImage", "new_widget_figure"]


def _one_image(img: Any, argname: str, channels: bool) -> xr.DataArray:
    if isinstance(img, xr.DataArray):
        missing = [d for d in ("y", "x") if d in img.dims and d not in img.coords]
        if missing:
            raise MissingPixelSizeError(
                f"{argname} has no coordinates for {missing}, so its pixel size is unknown; "
                "build it with clemlab.as_image(data, pixel_size=..., units='µm')"
            )
    elif hasattr(img, "shape") and hasattr(img, "dtype"):
        raise MissingPixelSizeError(
            f"{argname} is a bare {type(img).__name__} without pixel size; wrap it with "
            "clemlab.as_image(array, pixel_size=..., units='µm')"
        )
    img = check_image(img, argname)
    if "z" in img.dims:
        raise ImageError(
            f"{argname} has a z axis; the widgets show 2-D images: select a plane "
            f"({argname}.isel(z=k)) or project ({argname}.max('z')) first"
        )
    if channels:
        if "c" not in img.dims:  # a (y, x) LM image is one channel
            img = img.expand_dims(c=[str(img.name) if img.name is not None else "LM"])
    elif "c" in img.dims:
        if img.sizes["c"] != 1:
            raise ImageError(
                f"{argname} has {img.sizes['c']} channels; pass one channel ({argname}.isel(c=k))"
            )
        img = img.isel(c=0, drop=True)
    return img


def as_levels(image: Any, argname: str, channels: bool) -> list[xr.DataArray]:
    """Validated pyramid levels, finest first.

    Parameters
    ----------
    image : xarray.DataArray or xarray.DataTree
        A clemlab image ``([c,] y, x)`` or a multiscale tree with children ``scale0``,
        ``scale1``, ... each holding one image variable (``"image"``).
    argname : str
        Name used in error messages.
    channels : bool
        True for LM: the result always has a ``c`` axis (a ``(y, x)`` image becomes one
        channel). False for EM: the result is ``(y, x)``.
    """
    if isinstance(image, xr.DataTree):
        keys = sorted((k for k in image.children if k.startswith("scale")), key=lambda k: int(k[5:] or 0))
        if not keys:
            raise ImageError(f"{argname} is a DataTree without children scale0, scale1, ...")
        levels = []
        for k in keys:
            ds = image[k].to_dataset()
            names = ["image"] if "image" in ds.data_vars else list(ds.data_vars)
            if len(names) != 1:
                raise ImageError(f"{argname}/{k} must hold one image variable, has {list(ds.data_vars)}")
            levels.append(_one_image(ds[names[0]], f"{argname}/{k}", channels))
        return sorted(levels, key=lambda a: a.clem.pixel_size["x"])
    return [_one_image(image, argname, channels)]


def window(levels: list[xr.DataArray], xlim: tuple[float, float], ylim: tuple[float, float],
           width_px: float, height_px: float) -> xr.DataArray:
    """The part of the image in view, at the resolution the screen can show (lazy).

    Parameters
    ----------
    levels : list of xarray.DataArray
        From :func:`as_levels`, finest first.
    xlim, ylim : (float, float)
        Axes limits, µm (any order).
    width_px, height_px : float
        Size of the axes on screen, display pixels.

    Returns
    -------
    xarray.DataArray
        A strided window (at least 2 x 2 pixels) of the chosen level; not computed.
    """
    x0, x1 = sorted(map(float, xlim))
    y0, y1 = sorted(map(float, ylim))
    need = min((x1 - x0) / max(width_px, 1.0), (y1 - y0) / max(height_px, 1.0))  # µm per screen px
    level = levels[0]
    for lv in levels:
        if max(lv.clem.pixel_size.values()) <= need:
            level = lv
    ps = level.clem.pixel_size
    step = max(1, int(np.floor(need / max(ps.values()))))
    idx = {}
    for d, lo, hi in (("x", x0, x1), ("y", y0, y1)):
        n = level.sizes[d]
        o = float(level.coords[d].values[0])
        i0 = int(np.clip(np.floor((lo - o) / ps[d]) - step, 0, n - 1))
        i1 = int(np.clip(np.ceil((hi - o) / ps[d]) + step + 1, i0 + 1, n))
        i0 = i0 - i0 % step
        if (i1 - i0 + step - 1) // step < 2:  # keep two samples so the extent is defined
            i0, i1 = max(0, min(i0, n - 2 * step)), min(n, max(i1, i0 + 2 * step))
        idx[d] = slice(i0, i1, step)
    return level.isel(y=idx["y"], x=idx["x"])


def tinted_composite(data: np.ndarray, channels: list[str], visible: dict, colors: dict,
                     contrast: dict) -> np.ndarray:
    """Channels ``(c, h, w)`` -> RGB ``(h, w, 3)`` in 0-1: each visible channel stretched
    between its ``contrast`` percentiles (:func:`clemlab.viz.stretch`) and tinted."""
    from matplotlib.colors import to_rgb

    from ..viz import stretch

    out = np.zeros(data.shape[1:] + (3,))
    for i, ch in enumerate(channels):
        if visible[ch]:
            out += stretch(data[i], *contrast[ch])[..., None] * np.asarray(to_rgb(colors[ch]))
    return np.clip(out, 0.0, 1.0)


@contextmanager
def _non_interactive():
    import matplotlib.pyplot as plt

    with plt.ioff():
        yield


def new_widget_figure(figsize: tuple[float, float]):
    """A matplotlib Figure whose canvas is an ipympl widget, outside pyplot's registry.

    Created with interactive mode off, so it is shown only where the caller places its
    canvas (no second auto-displayed copy), and closing it leaves nothing behind in pyplot.
    Works without a running kernel as well (tests, benchmarks).
    """
    from ipympl.backend_nbagg import Canvas, FigureManager
    from matplotlib.figure import Figure

    with _non_interactive():
        fig = Figure(figsize=figsize)
        canvas = Canvas(fig)
        FigureManager(canvas, 0)
    canvas.header_visible = False
    canvas.footer_visible = False
    return fig


class ViewImage:
    """One image drawn in an axes at physical extent, re-read when the view changes.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    levels : list of xarray.DataArray
        From :func:`as_levels`.
    render : callable
        ``render(window) -> array`` turning the (computed) window into what ``imshow``
        takes: ``(h, w)`` values in 0-1 or ``(h, w, 3|4)`` RGB(A).
    **imshow_kw
        Passed to ``imshow`` (``cmap``, ``zorder``...).
    """

    def __init__(self, ax, levels: list[xr.DataArray], render: Callable[[xr.DataArray], np.ndarray],
                 **imshow_kw):
        self.ax = ax
        self.levels = levels
        self.render = render
        self.window: xr.DataArray | None = None
        self._key = None
        self.data: Any = None  # the computed window, kept for re-rendering (contrast, colours)
        full = levels[-1].clem.mpl_extent
        imshow_kw.setdefault("interpolation", "nearest")
        imshow_kw.setdefault("origin", "upper")
        self.artist = ax.imshow(np.zeros((2, 2)), extent=full, vmin=0, vmax=1, **imshow_kw)
        ax.set_xlim(full[0], full[1])
        ax.set_ylim(full[2], full[3])
        ax.set_autoscale_on(False)
        self._cids = [ax.callbacks.connect("xlim_changed", self._limits_changed),
                      ax.callbacks.connect("ylim_changed", self._limits_changed)]

    def _limits_changed(self, _ax=None) -> None:
        self.refresh()

    def refresh(self, force: bool = False) -> bool:
        """Read the window for the current limits (if it changed) and redraw the image."""
        bbox = self.ax.get_window_extent()
        win = window(self.levels, self.ax.get_xlim(), self.ax.get_ylim(), bbox.width, bbox.height)
        xs, ys = win.coords["x"].values, win.coords["y"].values
        key = (xs[0], xs[1], xs.size, ys[0], ys[1], ys.size)
        if key == self._key and not force:
            return False
        if key != self._key:
            self.window = win
            self.data = np.asarray(win.values)  # only the window in view is read
            self._key = key
        self.artist.set_data(self.render(self.data))
        self.artist.set_extent(win.clem.mpl_extent)
        return True

    def rerender(self) -> None:
        """Apply changed display settings (contrast, colours) to the current window."""
        if self.data is None:
            self.refresh()
        else:
            self.artist.set_data(self.render(self.data))

    def disconnect(self) -> None:
        for cid in self._cids:
            self.ax.callbacks.disconnect(cid)
        self._cids = []


def close_figure(fig) -> None:
    """Close a widget figure: its toolbar, its canvas, and its artists."""
    toolbar = getattr(fig.canvas, "toolbar", None)
    if toolbar is not None and hasattr(toolbar, "close"):
        toolbar.close()
    if hasattr(fig.canvas, "close"):
        fig.canvas.close()
    fig.clear()


def close_tree(widget) -> None:
    """Close an ipywidgets widget and all its descendants."""
    for child in getattr(widget, "children", ()):
        close_tree(child)
    widget.close()

"""Static matplotlib figures: LM-on-EM overlay with a scale bar.

Display code only; no geometry is computed here beyond choosing what to draw.
Large images are shown decimated (at most ``max_pixels`` per side), so a figure never
pulls a whole mosaic into memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from .image import check_image

__all__ = ["plot_overlay", "stretch", "composite_rgb", "add_scale_bar"]

_DEFAULT_COLORS = ["#ff00ff", "#00ff00", "#00aaff", "#ffaa00", "#ff0000", "#ffffff"]


def stretch(values: Any, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Map the ``low``-``high`` percentile range of ``values`` to 0-1 (float64, clipped)."""
    a = np.asarray(values, dtype=np.float64)
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return np.zeros_like(a)
    lo, hi = np.percentile(finite, [low, high])
    if hi <= lo:
        return np.zeros_like(a)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0)


def _rgb(color: str) -> np.ndarray:
    from matplotlib.colors import to_rgb

    return np.asarray(to_rgb(color))


def composite_rgb(channels: xr.DataArray, colors: dict[str, str] | None = None,
                  names: list[str] | None = None) -> np.ndarray:
    """Additive colour composite of channels ``(c, y, x)`` -> RGB ``(y, x, 3)`` in 0-1.

    Each channel is contrast-stretched (:func:`stretch`) and tinted with its colour from
    ``colors`` (default: the image's ``attrs["colors"]``, then a fixed palette).
    """
    if "c" not in channels.dims:
        channels = channels.expand_dims(c=[channels.name or "C0"])
    colors = dict(channels.attrs.get("colors") or {}) | dict(colors or {})
    names = list(channels.coords["c"].values) if names is None else names
    out = np.zeros(channels.shape[-2:] + (3,))
    for i, name in enumerate(names):
        tint = _rgb(colors.get(str(name), _DEFAULT_COLORS[i % len(_DEFAULT_COLORS)]))
        out += stretch(channels.sel(c=name).values)[..., None] * tint
    return np.clip(out, 0.0, 1.0)


def _nice_length(span: float) -> float:
    """A 1-2-5 length close to a fifth of ``span`` (µm)."""
    target = span / 5.0
    exp = np.floor(np.log10(target))
    for m in (5.0, 2.0, 1.0):
        if m * 10**exp <= target:
            return float(m * 10**exp)
    return float(10**exp)


def _format_length(um: float) -> str:
    if um >= 1000:
        return f"{um / 1000:g} mm"
    if um >= 1:
        return f"{um:g} µm"
    return f"{um * 1000:g} nm"


def add_scale_bar(ax, extent: tuple[float, float, float, float], color: str = "white") -> float:
    """Draw a scale bar in the lower right of ``ax`` (data units µm); returns its length in µm.

    ``extent`` is the image's ``(left, right, bottom, top)`` as given to ``imshow``.
    """
    from matplotlib.patches import Rectangle

    left, right, bottom, top = extent
    width, height = abs(right - left), abs(bottom - top)
    length = _nice_length(width)
    x0 = max(left, right) - 0.05 * width - length
    y0 = max(bottom, top) - 0.06 * height  # near the lower edge (y grows downwards)
    ax.add_patch(Rectangle((x0, y0), length, 0.012 * height, color=color, lw=0))
    ax.text(x0 + length / 2, y0 - 0.015 * height, _format_length(length), color=color,
            ha="center", va="bottom", fontsize=9)
    return length


def _decimate(img: xr.DataArray, max_pixels: int) -> xr.DataArray:
    step = int(np.ceil(max(img.sizes["y"], img.sizes["x"]) / max_pixels))
    return img.isel(y=slice(None, None, step), x=slice(None, None, step)) if step > 1 else img


def plot_overlay(corr: xr.Dataset, channels: list[str] | None = None, alpha: float = 0.6,
                 colors: dict[str, str] | None = None, ax=None, scale_bar: bool = True,
                 points: Any = None, max_pixels: int = 2048, title: str | None = None):
    """LM channels blended over the EM image, axes in µm, with a scale bar.

    Parameters
    ----------
    corr : xarray.Dataset
        Output of :func:`clemlab.correlate`: variables ``"EM"`` ``(y, x)`` and ``"LM"``
        ``([c,] y, x)`` on one grid.
    channels : list of str, optional
        LM channels to show (default all).
    alpha : float
        Opacity of the LM composite, 0-1.
    colors : dict, optional
        Colour per channel name, overriding the image's ``attrs["colors"]``.
    ax : matplotlib.axes.Axes, optional
        Axes to draw in; default a new figure.
    scale_bar : bool
        Draw a scale bar.
    points : array_like, shape (N, 2), optional
        Points in µm ``(x, y)`` (e.g. landmarks) to mark.
    max_pixels : int
        Longest side drawn; larger images are decimated for display.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    em = check_image(corr["EM"], "corr['EM']")
    lm = corr["LM"]
    if channels is not None:
        lm = lm.sel(c=list(channels))
    em_d, lm_d = _decimate(em, max_pixels), _decimate(lm, max_pixels)
    extent = em.clem.mpl_extent
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 7 * em.sizes["y"] / em.sizes["x"]))
    else:
        fig = ax.figure
    base = stretch(em_d.values, 0.5, 99.5)
    rgb = composite_rgb(lm_d, colors)
    blend = (1 - alpha * rgb.max(axis=-1, keepdims=True)) * base[..., None] + alpha * rgb
    ax.imshow(np.clip(blend, 0, 1), extent=extent, origin="upper", interpolation="nearest")
    if points is not None:
        p = np.asarray(points, float).reshape(-1, 2)
        ax.plot(p[:, 0], p[:, 1], "o", mfc="none", mec="yellow", ms=10, mew=1.5)
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    if title:
        ax.set_title(title)
    if scale_bar:
        add_scale_bar(ax, extent)
    return fig

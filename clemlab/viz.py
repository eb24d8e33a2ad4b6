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

__all__ = ["plot_overlay", "plot_residuals", "plot_error_map", "stretch", "composite_rgb", "add_scale_bar"]

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
    bar = ax.add_patch(Rectangle((x0, y0), length, 0.012 * height, facecolor=color, edgecolor="black", lw=0.8))
    bar.set_zorder(4)
    text = ax.text(x0 + length / 2, y0 - 0.015 * height, _format_length(length), color=color,
                   ha="center", va="bottom", fontsize=10, fontweight="bold", zorder=4)
    _outlined(text)
    return length


def _decimate(img: xr.DataArray, max_pixels: int) -> xr.DataArray:
    step = int(np.ceil(max(img.sizes["y"], img.sizes["x"]) / max_pixels))
    return img.isel(y=slice(None, None, step), x=slice(None, None, step)) if step > 1 else img


def _outlined(artist_or_text, width: float = 2.5) -> None:
    """A dark outline around white text or lines, so they read on any background."""
    from matplotlib import patheffects

    artist_or_text.set_path_effects([patheffects.withStroke(linewidth=width, foreground="black")])


def _arrow_scale(lengths: np.ndarray, span: float) -> float:
    """A 1-2-5 magnification that draws the longest residual about a twelfth of ``span``."""
    longest = float(np.max(lengths, initial=0.0))
    if longest <= 0:
        return 1.0
    return _nice_length(span / 12.0 / longest * 5.0)


def _draw_residuals(ax, reg, span: float, arrow_scale: float | None) -> float:
    """Fiducial rings at the target-frame landmarks and residual arrows magnified by the
    returned factor, with a reference arrow that states the scale."""
    dst = reg.landmarks.dst()
    vec = np.asarray(reg.residual_vectors, float)
    k = float(arrow_scale) if arrow_scale is not None else _arrow_scale(np.linalg.norm(vec, axis=1), span)
    ax.plot(dst[:, 0], dst[:, 1], "o", mfc="none", mec="yellow", ms=9, mew=1.4, label="fiducials (EM)")
    quiver = ax.quiver(dst[:, 0], dst[:, 1], vec[:, 0] * k, vec[:, 1] * k, angles="xy", scale_units="xy",
                       scale=1, color=np.where(reg.outlier_flags, "red", "orange"), width=0.004,
                       label=f"residuals x{k:g}")
    ref_um = _nice_length(span / 10.0 / k * 5.0)  # reference arrow about a tenth of the field
    key = ax.quiverkey(quiver, 0.1, 0.035, ref_um * k, f"{_format_length(ref_um)} residual (arrows x{k:g})",
                       labelpos="E", coordinates="axes", color="orange", labelcolor="white",
                       fontproperties={"size": 9})
    _outlined(key.text)
    return k


def plot_overlay(corr: xr.Dataset, channels: list[str] | None = None, alpha: float = 0.6,
                 colors: dict[str, str] | None = None, ax=None, scale_bar: bool = True,
                 points: Any = None, max_pixels: int = 2048, title: str | None = None,
                 legend: bool = True, registration: Any = None, arrow_scale: float | None = None):
    """LM channels in colour over the EM image in grey, axes in µm, with a scale bar and legend.

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
        Draw a scale bar (its length in µm or nm, lower right).
    points : array_like, shape (N, 2), optional
        Points in µm ``(x, y)`` to mark with rings.
    max_pixels : int
        Longest side drawn; larger images are decimated for display.
    title : str, optional
    legend : bool
        Name each LM channel with its colour (and the fiducials and arrows, when drawn).
    registration : clemlab.Registration, optional
        A 2-D registration onto this grid's frame: its landmarks are ringed at their
        target-frame (EM) positions and their residuals drawn as arrows, magnified by
        ``arrow_scale``, with a reference arrow that states the scale in physical units.
    arrow_scale : float, optional
        Magnification of the residual arrows (default: a 1-2-5 value that draws the longest
        about a twelfth of the field).

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    em = check_image(corr["EM"], "corr['EM']")
    lm = corr["LM"]
    if "c" not in lm.dims:
        lm = lm.expand_dims(c=[lm.name or "LM"])
    if channels is not None:
        lm = lm.sel(c=list(channels))
    em_d, lm_d = _decimate(em, max_pixels), _decimate(lm, max_pixels)
    extent = em.clem.mpl_extent
    if ax is None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 7 * em.sizes["y"] / em.sizes["x"]))
    else:
        fig = ax.figure
    names = [str(c) for c in lm_d.coords["c"].values]
    palette = dict(lm_d.attrs.get("colors") or {}) | dict(colors or {})
    tints = {n: palette.get(n, _DEFAULT_COLORS[i % len(_DEFAULT_COLORS)]) for i, n in enumerate(names)}
    base = stretch(em_d.values, 0.5, 99.5)
    rgb = composite_rgb(lm_d, tints)
    blend = (1 - alpha * rgb.max(axis=-1, keepdims=True)) * base[..., None] + alpha * rgb
    ax.imshow(np.clip(blend, 0, 1), extent=extent, origin="upper", interpolation="antialiased")
    if points is not None:
        p = np.asarray(points, float).reshape(-1, 2)
        ax.plot(p[:, 0], p[:, 1], "o", mfc="none", mec="yellow", ms=10, mew=1.5, label="points")
    if registration is not None:
        if registration.landmarks.ndim_dst != 2:
            raise ValueError("plot_overlay draws the residuals of 2-D registrations only")
        _draw_residuals(ax, registration, abs(extent[1] - extent[0]), arrow_scale)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    if title:
        ax.set_title(title)
    if scale_bar:
        add_scale_bar(ax, extent)
    if legend:
        from matplotlib.patches import Patch

        handles = [Patch(color=tints[n], label=n if n.upper().startswith("LM") else f"LM {n}") for n in names] + [Patch(color="0.6", label="EM")]
        handles += [h for h in ax.get_legend_handles_labels()[0]]
        leg = ax.legend(handles=handles, loc="upper right", fontsize=9, framealpha=0.75, facecolor="black",
                        edgecolor="none", labelcolor="white")
        leg.set_zorder(5)
    return fig


def plot_residuals(reg, ax=None, scale: float | None = None, image=None):
    """Quiver plot of the landmark residuals of a registration, in the target frame.

    Parameters
    ----------
    reg : Registration
        2-D registration.
    ax : matplotlib.axes.Axes, optional
    scale : float, optional
        Arrow magnification (default: the longest arrow spans a tenth of the landmark spread).
    image : xarray.DataArray, optional
        Target-frame image drawn underneath (grey).

    Returns
    -------
    matplotlib.figure.Figure
        Arrows start at the measured target position and point to where the fit puts the
        source landmark; each pair is labelled with its name and left-out error (nm).
    """
    import matplotlib.pyplot as plt

    dst = reg.landmarks.dst()
    if dst.shape[1] != 2:
        raise ValueError("plot_residuals draws 2-D registrations")
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 6))
    else:
        fig = ax.figure
    if image is not None:
        ax.imshow(stretch(_decimate(image, 1024).values), cmap="gray", extent=image.clem.mpl_extent)
    vec = reg.residual_vectors
    spread = float(np.ptp(dst, axis=0).max()) or 1.0
    longest = float(np.linalg.norm(vec, axis=1).max()) or 1.0
    k = scale if scale is not None else 0.1 * spread / longest
    flags = reg.outlier_flags
    ax.quiver(dst[:, 0], dst[:, 1], vec[:, 0] * k, vec[:, 1] * k, angles="xy", scale_units="xy", scale=1,
              color=np.where(flags, "red", "orange"), width=0.006)
    ax.plot(dst[:, 0], dst[:, 1], "o", mfc="none", mec="cyan", ms=6)
    for (x, y), name, loo in zip(dst, reg.names, reg.loo_errors):
        ax.annotate(f"{name} {loo * 1e3:.0f} nm", (x, y), textcoords="offset points", xytext=(5, 5),
                    fontsize=7, color="cyan" if image is not None else "black")
    if image is None:
        ax.invert_yaxis()
        ax.set_aspect("equal")
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    ax.set_title(f"residuals x{k:.0f} ({reg.model}, RMS {reg.rms * 1e3:.0f} nm)")
    return fig


def plot_error_map(reg, like, ax=None, include_target_fle: bool = False, levels=None):
    """Predicted registration error over an image's field, with the landmarks.

    Parameters
    ----------
    reg : Registration
    like : xarray.DataArray
        Image whose field is mapped (see :meth:`Registration.error_map`); drawn underneath.
    ax : matplotlib.axes.Axes, optional
    include_target_fle : bool
        Map the target error (mapping plus the point's own localisation error).
    levels : sequence of float, optional
        Contour levels in nm.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    err = reg.error_map(like, include_target_fle=include_target_fle) * 1e3
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 6))
    else:
        fig = ax.figure
    base = like.isel(c=0) if "c" in like.dims else like
    ax.imshow(stretch(_decimate(base, 1024).values), cmap="gray", extent=like.clem.mpl_extent)
    mesh = ax.contourf(err.x, err.y, err.values, levels=levels or 12, cmap="viridis", alpha=0.55)
    lines = ax.contour(err.x, err.y, err.values, levels=mesh.levels, colors="white", linewidths=0.5)
    ax.clabel(lines, fmt="%.0f", fontsize=7)
    fig.colorbar(mesh, ax=ax, label=f"predicted {err.attrs['what']} (nm)")
    on_target = like.attrs.get("frame") == reg.landmarks.target_frame
    pts = reg.landmarks.dst() if on_target else reg.landmarks.src()
    ax.plot(pts[:, 0], pts[:, 1], "o", mfc="none", mec="red", ms=8)
    ax.set_xlim(like.clem.mpl_extent[:2])
    ax.set_ylim(like.clem.mpl_extent[2:])
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    return fig

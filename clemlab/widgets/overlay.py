"""OverlayViewer: LM channels blended on EM, inline (ipympl + ipywidgets)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .._atomic import atomic_write
from ..errors import ImageError
from ..registration import Registration
from ..viz import add_scale_bar, stretch
from ._controls import channel_rows, contrast_slider
from ._display import ViewImage, as_levels, close_figure, close_tree, new_widget_figure, tinted_composite

__all__ = ["OverlayViewer"]

_PALETTE = ["#ff00ff", "#00ff00", "#00aaff", "#ffaa00", "#ff0000", "#ffffff"]


class OverlayViewer:
    """LM channels over the EM image, with opacity, channel, colour and contrast controls.

    Call as ``OverlayViewer(corr)`` with the output of :func:`clemlab.correlate`, or as
    ``OverlayViewer(em, lm, reg)`` (then the LM image is warped onto the EM grid here).

    Parameters
    ----------
    corr_or_em : xarray.Dataset or xarray.DataArray
        A correlated dataset (variables ``"EM"`` ``(y, x)`` and ``"LM"`` ``([c,] y, x)`` on
        one grid, µm), or the EM image.
    lm : xarray.DataArray, optional
        LM image ``([c,] y, x)`` when the first argument is the EM image.
    registration : Registration or Transform, optional
        LM -> EM mapping (required with ``lm``). A :class:`Registration` also enables the
        landmark residual arrows.
    opacity : float
        Initial opacity of the LM layer, 0-1.
    residual_arrows : bool
        Draw each active landmark's residual vector (EM frame), magnified to be visible.
    figsize : (float, float)
        Figure size, inches.

    Attributes
    ----------
    opacity_slider : ipywidgets.FloatSlider
    em_contrast_slider : ipywidgets.FloatRangeSlider
    channel_rows : list of ipywidgets.HBox
        Per LM channel: show/hide checkbox, colour picker, contrast range slider.
    """

    def __init__(self, corr_or_em: Any, lm: Any = None, registration: Any = None, *,
                 opacity: float = 0.6, residual_arrows: bool = True,
                 figsize: tuple[float, float] = (6.0, 6.0)):
        import ipywidgets as w

        from ..correlate import correlate

        if isinstance(corr_or_em, xr.Dataset):
            if lm is not None:
                raise ImageError("OverlayViewer(corr) takes a correlated Dataset alone; "
                                 "or call OverlayViewer(em, lm, registration)")
            missing = [v for v in ("EM", "LM") if v not in corr_or_em.data_vars]
            if missing:
                raise ImageError(f"corr lacks variables {missing}; make it with clemlab.correlate(em, lm, reg)")
            corr = corr_or_em
        else:
            if lm is None or registration is None:
                raise ImageError("OverlayViewer(em, lm, registration) needs all three (or pass "
                                 "the Dataset from clemlab.correlate)")
            as_levels(corr_or_em, "em", channels=False)  # clear messages for bad input first
            as_levels(lm, "lm", channels=True)
            corr = correlate(corr_or_em, lm, registration)
        if not 0 <= float(opacity) <= 1:
            raise ValueError(f"opacity must be between 0 and 1, got {opacity}")
        self.registration = registration if isinstance(registration, Registration) else None
        self.corr = corr
        self._em = as_levels(corr["EM"], "corr['EM']", channels=False)
        self._lm = as_levels(corr["LM"], "corr['LM']", channels=True)
        self.channels = [str(c) for c in self._lm[0].coords["c"].values]
        given = dict(corr["LM"].attrs.get("colors") or {})
        self._colors = {c: given.get(c, _PALETTE[i % len(_PALETTE)]) for i, c in enumerate(self.channels)}
        self._visible = {c: True for c in self.channels}
        self._lm_contrast = {c: (1.0, 99.8) for c in self.channels}
        self._em_contrast = (0.5, 99.5)
        self._opacity = float(opacity)
        self._closed = False

        self.figure = fig = new_widget_figure(figsize)
        fig.subplots_adjust(left=0.12, right=0.97, bottom=0.08, top=0.96)
        self.ax = ax = fig.add_subplot()
        ax.set_xlabel("x (µm)")
        ax.set_ylabel("y (µm)")
        self._em_view = ViewImage(ax, self._em, lambda a: stretch(a, *self._em_contrast), cmap="gray", zorder=0)
        self._lm_view = ViewImage(ax, self._lm, self._render_lm, zorder=1)
        self._scale_artists: list = []
        self._arrows = None
        self._contours = None
        self._error_map = None
        self._lim_cid = ax.callbacks.connect("xlim_changed", lambda _a: self._draw_scale_bar())

        # -- controls -----------------------------------------------------------------------
        self.opacity_slider = w.FloatSlider(value=self._opacity, min=0, max=1, step=0.01,
                                            description="LM opacity", readout_format=".2f",
                                            style={"description_width": "110px"}, layout=w.Layout(width="380px"))
        self.opacity_slider.observe(lambda ch: self._set(opacity=ch["new"]), names="value")
        self.channel_rows = channel_rows(self.channels, self._colors, self._lm_contrast,
                                         lambda c, **kw: self._set(channel=c, **kw))
        self.em_contrast_slider = contrast_slider(self._em_contrast, "EM contrast %",
                                                  lambda v: self._set(em_contrast=v))
        self.arrows_checkbox = w.Checkbox(value=bool(residual_arrows and self.registration is not None),
                                          description="landmark residual arrows", indent=False,
                                          disabled=self.registration is None, layout=w.Layout(width="auto"))
        self.arrows_checkbox.observe(lambda ch: self._set(), names="value")
        self.error_checkbox = w.Checkbox(value=False, description="predicted error contours (nm)",
                                         indent=False, disabled=self.registration is None,
                                         layout=w.Layout(width="auto"))
        self.error_checkbox.observe(lambda ch: self._set(), names="value")
        self.png_path = w.Text(value="overlay.png", description="file", layout=w.Layout(width="260px"))
        self.save_button = w.Button(description="Save PNG", icon="download")
        self.save_button.on_click(lambda _b: self._save_clicked())
        self.saved = w.Label()

        def wrap():  # a Layout per box: one shared Layout would hide every box with any of them
            return w.Layout(flex_flow="row wrap", align_items="center")

        self.widget = w.VBox([
            fig.canvas,
            w.HBox([self.opacity_slider, self.em_contrast_slider], layout=wrap()),
            w.VBox(self.channel_rows),
            w.HBox([self.arrows_checkbox, self.error_checkbox], layout=wrap()),
            w.HBox([self.png_path, self.save_button, self.saved], layout=wrap()),
        ])
        self._em_view.refresh(force=True)
        self._lm_view.refresh(force=True)
        self._draw_arrows()
        self._draw_scale_bar()
        self._render()

    # -- public API -------------------------------------------------------------------------
    @property
    def axes(self):
        """The matplotlib axes (EM frame, µm)."""
        return self.ax

    @property
    def opacity(self) -> float:
        return self._opacity

    @opacity.setter
    def opacity(self, value: float) -> None:
        self.opacity_slider.value = float(value)

    def save_png(self, path: str | os.PathLike, dpi: int = 150, *, overwrite: bool = False) -> Path:
        """Write the current view (overlay, arrows, scale bar) as a PNG file, atomically; returns
        its path. An existing file is replaced only with ``overwrite=True``."""
        p = Path(path)
        if not p.parent.is_dir():
            raise ImageError(f"cannot save {p}: folder {p.parent} does not exist")
        return atomic_write(p, lambda tmp: self.figure.savefig(tmp, dpi=dpi, format="png"), overwrite=overwrite,
                            fmt="PNG")

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def close(self) -> None:
        """Disconnect callbacks and close the figure and controls."""
        if self._closed:
            return
        self._closed = True
        self.ax.callbacks.disconnect(self._lim_cid)
        self._em_view.disconnect()
        self._lm_view.disconnect()
        close_figure(self.figure)
        close_tree(self.widget)

    # -- drawing --------------------------------------------------------------------------------
    def _render_lm(self, data: np.ndarray) -> np.ndarray:
        """RGBA layer: tinted, contrast-stretched channels; alpha = opacity x brightness."""
        rgb = tinted_composite(data, self.channels, self._visible, self._colors, self._lm_contrast)
        alpha = self._opacity * rgb.max(axis=-1, keepdims=True)
        return np.concatenate([rgb, alpha], axis=-1)

    def _set(self, channel=None, visible=None, color=None, contrast=None, opacity=None, em_contrast=None):
        if channel is not None:
            if visible is not None:
                self._visible[channel] = bool(visible)
            if color is not None:
                self._colors[channel] = color
            if contrast is not None:
                self._lm_contrast[channel] = tuple(contrast)
        if opacity is not None:
            self._opacity = float(opacity)
        if em_contrast is not None:
            self._em_contrast = tuple(em_contrast)
            self._em_view.rerender()
        self._lm_view.rerender()
        self._draw_arrows()
        self._draw_error_contours()
        self._render()

    def _draw_arrows(self) -> None:
        if self._arrows is not None:
            self._arrows.remove()
            self._arrows = None
        reg = self.registration
        if reg is None or not self.arrows_checkbox.value or len(reg.residuals) == 0:
            return
        dst = reg.landmarks.dst()
        vec = reg.residual_vectors
        x0, x1 = self.ax.get_xlim()
        biggest = float(np.max(np.hypot(*vec.T))) if len(vec) else 0.0
        gain = 0.08 * abs(x1 - x0) / biggest if biggest > 0 else 1.0  # longest arrow ~8% of the view
        self._arrows = self.ax.quiver(dst[:, 0], dst[:, 1], vec[:, 0] * gain, vec[:, 1] * gain,
                                      angles="xy", scale_units="xy", scale=1, color="#ffff00",
                                      width=0.004, zorder=3)
        self._arrow_gain = gain

    def _draw_error_contours(self) -> None:
        """Contours of the registration's predicted mapping error over the EM field (nm)."""
        if self._contours is not None:
            self._contours.remove()
            self._contours = None
        reg = self.registration
        if reg is None or not self.error_checkbox.value:
            return
        if self._error_map is None:  # computed once: it depends on the registration only
            err_um = reg.error_map(self.corr["EM"], frame="target")
            self._error_map = (err_um * 1e3).assign_attrs({**err_um.attrs, "units": "nm"})
        err = self._error_map
        self._contours = self.ax.contour(err.x.values, err.y.values, err.values, levels=8,
                                         colors="#00ffff", linewidths=0.8, zorder=2)
        self.ax.clabel(self._contours, fmt="%.0f nm", fontsize=7)

    def _draw_scale_bar(self) -> None:
        for a in self._scale_artists:
            a.remove()
        before = set(self.ax.patches) | set(self.ax.texts)
        x0, x1 = self.ax.get_xlim()
        y0, y1 = self.ax.get_ylim()
        add_scale_bar(self.ax, (x0, x1, y0, y1))
        self._scale_artists = [a for a in list(self.ax.patches) + list(self.ax.texts) if a not in before]

    def _render(self) -> None:
        """Ask for a redraw (an explicit ``canvas.draw()`` here would hand ipympl a picture
        before the page has the canvas, which the page then fails to draw)."""
        self.figure.canvas.draw_idle()

    def _save_clicked(self) -> None:
        try:
            self.saved.value = f"saved {self.save_png(self.png_path.value)}"
        except (OSError, ValueError) as exc:
            self.saved.value = f"not saved: {exc}"

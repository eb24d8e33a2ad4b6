"""ipywidgets control rows shared by the widgets: per-channel display rows, contrast sliders
and the help toggle.

Sliders get a fixed width (a flex ``width="auto"`` lets a slider shrink to a few pixels in an
HBox), long enough to set percentiles to 0.1 % and short enough that two fit beside each other
on a 1366-pixel laptop screen.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["SLIDER_WIDTH", "channel_rows", "contrast_slider", "help_toggle"]

#: Width of a contrast range slider, description and readout included.
SLIDER_WIDTH = "380px"


def contrast_slider(value: tuple[float, float], description: str, on_change: Callable[[tuple], None]):
    """A percentile range slider (0-100 %), readout to 0.1 %; calls ``on_change((lo, hi))``."""
    import ipywidgets as w

    sl = w.FloatRangeSlider(value=value, min=0, max=100, step=0.1, description=description,
                            readout_format=".1f", continuous_update=False,
                            style={"description_width": "110px"}, layout=w.Layout(width=SLIDER_WIDTH))
    sl.observe(lambda ch: on_change(tuple(ch["new"])), names="value")
    return sl


def channel_rows(channels: list[str], colors: dict, contrast: dict,
                 on_change: Callable[..., None]) -> list:
    """One row per LM channel: show/hide checkbox, colour, contrast range (percentiles).

    ``on_change(channel, visible=..., color=..., contrast=...)`` is called with the one setting
    that changed.
    """
    import ipywidgets as w

    rows = []
    for ch in channels:
        cb = w.Checkbox(value=True, description=ch, indent=False, layout=w.Layout(width="110px"))
        cp = w.ColorPicker(value=colors[ch], concise=True, layout=w.Layout(width="32px"))
        sl = contrast_slider(contrast[ch], "contrast %", lambda v, c=ch: on_change(c, contrast=v))
        cb.observe(lambda ch_, c=ch: on_change(c, visible=ch_["new"]), names="value")
        cp.observe(lambda ch_, c=ch: on_change(c, color=ch_["new"]), names="value")
        rows.append(w.HBox([cb, cp, sl], layout=w.Layout(align_items="center")))
    return rows


def help_toggle(html_text: str):
    """``(button, panel)``: a "Help" toggle button and the HTML panel it shows or hides."""
    import ipywidgets as w

    panel = w.HTML(html_text, layout=w.Layout(display="none", border="1px solid #ccc", padding="2px 10px"))
    button = w.ToggleButton(value=False, description="Help", icon="question-circle",
                            tooltip="show mouse actions and keyboard shortcuts", layout=w.Layout(width="auto"))

    def show(change):
        panel.layout.display = "" if change["new"] else "none"

    button.observe(show, names="value")
    return button, panel

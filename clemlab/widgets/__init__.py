"""Inline widgets (ipympl + ipywidgets): :class:`LandmarkPicker` and :class:`OverlayViewer`.

Click logic lives in :mod:`clemlab.widgets._logic` (no drawing, tested without a browser);
``picker`` and ``overlay`` draw. ipywidgets, ipympl and matplotlib load when a widget is built.
"""

from .overlay import OverlayViewer
from .picker import LandmarkPicker

__all__ = ["LandmarkPicker", "OverlayViewer"]

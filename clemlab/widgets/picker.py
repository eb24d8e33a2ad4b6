"""LandmarkPicker: click LM/EM correspondences inline (ipympl + ipywidgets).

Drawing and event plumbing only; what a click means lives in :mod:`clemlab.widgets._logic`.
"""

from __future__ import annotations

import html
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LandmarkError, RegistrationError
from ..landmarks import Landmarks
from ..viz import stretch
from ._content import crop_around, matching_image, point_problem
from ._controls import channel_rows, contrast_slider, help_toggle
from ._display import ViewImage, as_levels, close_figure, close_tree, new_widget_figure, tinted_composite
from ._logic import VIEWS, PickerLogic

__all__ = ["LandmarkPicker", "initial_landmarks"]

_PALETTE = ["#ff00ff", "#00ff00", "#00aaff", "#ffaa00", "#ff0000", "#ffffff"]
#: Every 2-D model ``register`` fits, as (menu label, model name).
_MODELS = [("translation", "translation"), ("rigid", "rigid"), ("similarity", "similarity"),
           ("affine", "affine"), ("projective (tilt)", "projective"), ("polynomial (order 2)", "polynomial"),
           ("thin-plate spline", "tps")]
_MARK = {"lm": "#ffff00", "em": "#ffff00"}
_PROPOSAL = "#00e5ff"
_R95 = float(np.sqrt(-2 * np.log(0.05)))  # radius of the 95 % circle of a 2-D isotropic normal, in sigmas
_PREDICTION = "#ff8000"

HELP = """
<b>Mouse</b> (in a view)
<ul style='margin:2px 0 4px 1.2em;padding:0'>
<li>click a structure in the view framed in orange, then its partner in the other view: a pair</li>
<li>click a marker to select its pair; drag it to move it</li>
<li>scroll to zoom at the pointer; the toolbar's pan/zoom tools move the view (clicks then do not add points)</li>
</ul>
<b>Keys</b> (with the pointer over a view)
<table style='border-collapse:collapse'>
<tr><td style='padding-right:12px'><kbd>Enter</kbd></td><td>accept the predicted partner (orange circle; its ellipse holds the partner 95 % of the time)</td></tr>
<tr><td><kbd>Escape</kbd></td><td>drop the pending point, or clear the selection</td></tr>
<tr><td><kbd>Delete</kbd> / <kbd>Backspace</kbd></td><td>delete the selected pair (or the pending point)</td></tr>
<tr><td><kbd>a</kbd></td><td>use / ignore the selected pair in the fit</td></tr>
<tr><td><kbd>s</kbd></td><td>snap the selected pair's EM point to the image content (local patch match)</td></tr>
<tr><td><kbd>ctrl+z</kbd> / <kbd>ctrl+y</kbd></td><td>undo / redo (every edit, "clear all" included)</td></tr>
</table>
<b>From the images</b>: <i>Refine from images</i> registers the images themselves, starting from your
clicks (two or more pairs), and offers the correspondences it finds (cyan) one at a time: accept or
reject each. The table's <i>left-out</i> column is each pair's error when the fit is made without it:
a pair far above the others is probably a wrong click.
"""


def initial_landmarks(landmarks: Landmarks | None, autosave: str | os.PathLike | None,
                      source_frame: str = "LM", target_frame: str = "EM") -> Landmarks:
    """The table a picker starts from.

    An existing ``autosave`` file wins (it holds the latest clicks; a warning says so when
    ``landmarks`` differs from it). Otherwise a copy of ``landmarks`` (or an empty 2-D table)
    that autosaves to ``autosave``, written once now. Folder permissions and the file's
    schema version are checked here, so problems show at construction, not at a click.
    """
    if landmarks is not None and not isinstance(landmarks, Landmarks):
        raise LandmarkError(
            f"landmarks must be a clemlab Landmarks table or None, got {type(landmarks).__name__}; "
            "build one with Landmarks.from_points(lm_points, em_points)"
        )
    if autosave is not None and Path(autosave).exists():
        restored = Landmarks.read(autosave, autosave=autosave)
        if landmarks is not None and restored != landmarks:
            warnings.warn(f"restoring {len(restored)} pairs from autosave file {autosave}; the "
                          f"landmarks passed in ({len(landmarks)} pairs) are not used", stacklevel=3)
        if restored.ndim != 2:
            raise LandmarkError(f"autosave file {autosave} holds 3-D landmarks; the picker edits 2-D ones")
        return restored
    if landmarks is None:
        lms = Landmarks(ndim=2, source_frame=source_frame, target_frame=target_frame, autosave=autosave)
    else:
        if landmarks.ndim != 2:
            raise LandmarkError(f"the picker edits 2-D landmarks (x, y), got {landmarks.ndim}-D ones")
        lms = landmarks.copy(autosave=autosave)
    if autosave is not None:
        lms.save(autosave)
    return lms


class LandmarkPicker:
    """Click corresponding points in an LM and an EM image, side by side, inline.

    Click in one view, then in the other: that adds a pair (the view expected next is
    framed in colour and switches by itself). Click a marker to select it, drag it to move it;
    the buttons (and keys: Delete, ``ctrl+z``, ``ctrl+y``, ``a``, Enter, Escape) delete,
    undo, redo, toggle active, accept the predicted partner, or drop a pending point. Once
    there are enough pairs for the model, the fit marks where the partner of a new click
    should be, and the table lists each pair's residual and leave-one-out error.

    Parameters
    ----------
    lm : xarray.DataArray or xarray.DataTree
        Source image ``(c, y, x)`` (or ``(y, x)``, shown as one channel), coords in µm.
    em : xarray.DataArray or xarray.DataTree
        Target image ``(y, x)``, numpy- or dask-backed, or a multiscale tree (``scale0``,
        ``scale1``, ...): each view reads only the level and window it shows.
    landmarks : Landmarks, optional
        Pairs to start from (copied; edit them through :attr:`landmarks`).
    autosave : path-like, optional
        JSON file rewritten atomically after every edit. If it exists, the picker restores
        its content (it wins over ``landmarks``).
    model : str
        Any 2-D model :func:`clemlab.register` fits: ``"translation"``, ``"rigid"``,
        ``"similarity"``, ``"affine"``, ``"projective"``, ``"polynomial"``, ``"tps"``.
    figsize : (float, float)
        Size of each view, inches.
    pick_radius : float
        How close (display pixels) a click must be to a marker to select it.

    Attributes
    ----------
    landmarks : Landmarks
        The current pairs (LM points are ``src``, EM points ``dst``; µm, ``(x, y)``).
    registration : Registration or None
        The current fit, None while there are too few active pairs.
    axes : (Axes, Axes)
        The LM and EM matplotlib axes (data coordinates in µm).
    """

    def __init__(self, lm: Any, em: Any, landmarks: Landmarks | None = None,
                 autosave: str | os.PathLike | None = None, model: str = "affine", *,
                 figsize: tuple[float, float] = (4.6, 4.6), pick_radius: float = 8.0):
        import ipywidgets as w

        self._levels = {"lm": as_levels(lm, "lm", channels=True), "em": as_levels(em, "em", channels=False)}
        frames = (self._levels["lm"][0].attrs.get("frame") or "LM",
                  self._levels["em"][0].attrs.get("frame") or "EM")
        lms = initial_landmarks(landmarks, autosave, *frames)
        lms.check_units(self._levels["lm"][0], self._levels["em"][0], "LandmarkPicker")
        self.logic = PickerLogic(lms, model=model, check_point=self._point_problem)
        self.pick_radius = float(pick_radius)
        self._closed = False

        # -- LM display settings: per channel visible / colour / contrast percentiles -----
        lm0 = self._levels["lm"][0]
        self.channels = [str(c) for c in lm0.coords["c"].values]
        given = dict(lm0.attrs.get("colors") or {})
        self._colors = {c: given.get(c, _PALETTE[i % len(_PALETTE)]) for i, c in enumerate(self.channels)}
        self._visible = {c: True for c in self.channels}
        self._lm_contrast = {c: (1.0, 99.8) for c in self.channels}
        self._em_contrast = (0.5, 99.5)

        # -- figures ------------------------------------------------------------------------
        self._figs, self._axes, self._views, self._art, self._cids = {}, {}, {}, {}, {}
        self._bg: dict = {"lm": None, "em": None}  # rendered views without the markers
        self.blits = 0
        for view in VIEWS:
            fig = new_widget_figure(figsize)
            fig.subplots_adjust(left=0.15, right=0.97, bottom=0.1, top=0.93)
            ax = fig.add_subplot()
            ax.set_xlabel("x (µm)")
            ax.set_ylabel("y (µm)")
            self._figs[view], self._axes[view] = fig, ax
            if view == "lm":
                self._views[view] = ViewImage(ax, self._levels[view], self._render_lm)
            else:
                self._views[view] = ViewImage(ax, self._levels[view], self._render_em, cmap="gray")
            self._views[view].refresh(force=True)
            self._art[view] = self._make_artists(ax, view)
            ax.title.set_animated(True)
            for sp in ax.spines.values():
                sp.set_animated(True)
            c = fig.canvas
            self._cids[view] = [
                c.mpl_connect("button_press_event", self._on_press),
                c.mpl_connect("motion_notify_event", self._on_motion),
                c.mpl_connect("button_release_event", self._on_release),
                c.mpl_connect("key_press_event", self._on_key),
                c.mpl_connect("scroll_event", self._on_scroll),
                c.mpl_connect("draw_event", lambda _e, v=view: self._on_draw(v)),
            ]

        # -- controls -----------------------------------------------------------------------
        self._channel_rows = channel_rows(self.channels, self._colors, self._lm_contrast, self._set_lm)
        self.em_contrast_slider = contrast_slider(self._em_contrast, "EM contrast %", self._on_em_contrast)

        def button(text, icon, action, tip):
            b = w.Button(description=text, icon=icon, tooltip=tip, layout=w.Layout(width="auto"))
            b.on_click(lambda _b: self._run(action))
            return b

        lg = self.logic
        self.buttons = {
            "undo": button("Undo", "undo", lg.undo, "undo the last action (ctrl+z)"),
            "redo": button("Redo", "repeat", lg.redo, "redo (ctrl+y)"),
            "delete": button("Delete", "trash", lg.delete, "delete the selected pair, or the pending point (Delete)"),
            "toggle": button("Toggle active", "toggle-on", lg.toggle_active, "use / ignore the selected pair in the fit (a)"),
            "accept": button("Accept prediction", "check", lg.accept_prediction,
                             "complete the pair at the predicted point (Enter)"),
            "snap": button("Snap", "crosshairs", self.snap, "move the selected pair's EM point to where the "
                           "LM patch around its LM point matches best (s)"),
            "clear": button("Clear all", "eraser", lg.clear, "remove every pair (undoable)"),
            "refine": button("Refine from images", "magic", self.refine_from_images,
                             "register the images themselves from your clicks; offers the pairs it finds"),
            "take": button("Accept proposal", "plus", lg.accept_proposal, "add the ringed cyan pair"),
            "reject": button("Reject proposal", "minus", lg.reject_proposal, "drop the ringed cyan pair"),
            "take_all": button("Accept all", "check-double", lg.accept_all_proposals, "add every proposed pair"),
            "reject_all": button("Reject all", "times", lg.reject_all_proposals, "drop every proposed pair"),
        }
        values = [v for _, v in _MODELS]
        options = _MODELS if model in values else _MODELS + [(model, model)]
        self.model_dropdown = w.Dropdown(options=options, value=model, description="model",
                                         style={"description_width": "45px"}, layout=w.Layout(width="230px"))
        self.model_dropdown.observe(lambda ch: self._run(lambda: self.logic.set_model(ch["new"])), names="value")
        self.help_button, self.help = help_toggle(HELP)
        self.status = w.HTML()
        self.table = w.HTML()
        self.message = w.HTML()

        def wrap():  # a Layout per box: one shared Layout would hide every box with any of them
            return w.Layout(flex_flow="row wrap", align_items="center")

        b = self.buttons
        edit_row = w.HBox([b[k] for k in ("undo", "redo", "delete", "toggle", "accept", "snap", "clear")]
                          + [self.model_dropdown, self.help_button], layout=wrap())
        self._proposal_row = w.HBox([b[k] for k in ("take", "reject", "take_all", "reject_all")], layout=wrap())
        images_row = w.HBox([b["refine"], self._proposal_row], layout=wrap())
        figs = w.HBox([self._figs["lm"].canvas, self._figs["em"].canvas], layout=wrap())
        controls = w.HBox([w.VBox(self._channel_rows), w.VBox([self.em_contrast_slider])], layout=wrap())
        self.widget = w.VBox([figs, self.status, self.message, edit_row, images_row, self.help, controls, self.table])
        self._note = ""  # what the last command did, shown once in the message line
        self.logic.on_update(lambda _l: self._redraw())
        self._redraw()

    # -- public API -------------------------------------------------------------------------
    @property
    def landmarks(self) -> Landmarks:
        return self.logic.landmarks

    @property
    def registration(self):
        return self.logic.registration

    @property
    def axes(self):
        """``(lm_axes, em_axes)``: matplotlib axes, data coordinates in µm."""
        return self._axes["lm"], self._axes["em"]

    @property
    def figures(self):
        """``(lm_figure, em_figure)``."""
        return self._figs["lm"], self._figs["em"]

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def snap(self, name: str | None = None) -> dict:
        """Move pair ``name``'s EM point (default: the selected pair) to where the LM patch around
        its LM point matches the EM image best, near where it was clicked.

        The LM channels shown are matched (see :func:`clemlab.imagereg.snap.snap_point`), through
        the current fit's local rotation and scale. Undoable. Returns ``{"name", "moved",
        "sigma"}`` (µm); raises LandmarkError with the reason when there is no clear match.
        """
        from ..imagereg.snap import snap_point

        lg = self.logic
        name = lg._target(name)
        reg = lg.registration
        if reg is None:
            raise LandmarkError("snap compares the images through the current fit, and there is none yet "
                                f"({lg.fit_message}); add pairs first, or choose the translation model")
        i = lg.landmarks.names.index(name)
        p, q = lg.landmarks.src(False)[i], lg.landmarks.dst(False)[i]
        lm_px = min(self._levels["lm"][0].clem.pixel_size.values())
        half = 40 * lm_px  # enough for the default patch and search radius, in LM µm
        lm = matching_image(crop_around(self._levels["lm"][0], p, half), self._visible)
        scale = float(np.sqrt(abs(np.linalg.det(_local_jacobian(reg.transform, p)))))
        em = crop_around(self._em_level_for(lm_px * scale), q, half * scale).compute()
        try:
            got = snap_point(lm, em, p, q, reg.transform)
        except RegistrationError as exc:
            raise LandmarkError(str(exc)) from None
        lg.snap_to(name, got.point, got.sigma)
        note = f"snapped {name}: EM point moved by {got.moved * 1e3:.0f} nm (± {got.sigma * 1e3:.0f} nm, 1 σ)"
        self._note = note
        return {"name": name, "moved": got.moved, "sigma": got.sigma}

    def refine_from_images(self):
        """Register the images themselves (:func:`clemlab.register_images`), seeded by the active
        pairs, and offer the correspondences found as proposals to accept or reject.

        Returns the :class:`~clemlab.imagereg.ImageMatch`. Needs at least two active pairs.
        """
        from ..imagereg import register_images

        lg = self.logic
        lms = lg.landmarks
        if int(lms.active.sum()) < 2:
            raise LandmarkError("refine from images starts from your clicks: click at least two pairs "
                                "(structures you recognise in both images) first")
        seed = Landmarks.from_points(lms.src(), lms.dst(), source_frame=lms.source_frame,
                                     target_frame=lms.target_frame)
        lm_px = min(self._levels["lm"][0].clem.pixel_size.values())
        lm = matching_image(self._levels["lm"][0], self._visible)
        em = self._em_level_for(lm_px)
        try:
            match = register_images(lm, em, model=lg.model, initial=seed)
        except RegistrationError as exc:
            raise LandmarkError(f"refine from images failed: {exc}") from None
        found = match.landmarks
        if match.verdict == "failed" or len(found) == 0 or not found.active.any():
            lg.set_proposals(np.zeros((0, 2)), np.zeros((0, 2)))
            raise LandmarkError(f"refine from images found no trustworthy correspondences: {match.why}")
        sig = found.sigmas()
        n = lg.set_proposals(found.src(), found.dst(), None if sig is None else sig[1],
                             note=f"images say <b>{html.escape(match.verdict)}</b>: {html.escape(match.why)}")
        self._note = f"refine from images: {n} proposed pairs (cyan); accept or reject each"
        return match

    def _em_level_for(self, pixel_um: float):
        """The coarsest EM pyramid level whose pixels are no larger than ``pixel_um``."""
        levels = self._levels["em"]
        ok = [lv for lv in levels if max(lv.clem.pixel_size.values()) <= pixel_um * 1.01]
        return ok[-1] if ok else levels[0]

    def _point_problem(self, view: str, xy) -> str | None:
        return point_problem(self._levels[view], xy, view.upper())

    def close(self) -> None:
        """Disconnect every callback and close the figures and controls."""
        if self._closed:
            return
        self._closed = True
        self.logic._observers.clear()
        for view in VIEWS:
            fig = self._figs[view]
            for cid in self._cids[view]:
                fig.canvas.mpl_disconnect(cid)
            self._views[view].disconnect()
            close_figure(fig)
        close_tree(self.widget)
        self._views.clear()
        self._art.clear()

    # -- rendering ----------------------------------------------------------------------------
    def _render_lm(self, data: np.ndarray) -> np.ndarray:
        return tinted_composite(data, self.channels, self._visible, self._colors, self._lm_contrast)

    def _render_em(self, data: np.ndarray) -> np.ndarray:
        return stretch(data, *self._em_contrast)

    def _set_lm(self, ch: str, visible=None, color=None, contrast=None) -> None:
        if visible is not None:
            self._visible[ch] = bool(visible)
        if color is not None:
            self._colors[ch] = color
        if contrast is not None:
            self._lm_contrast[ch] = tuple(contrast)
        self._views["lm"].rerender()
        self._figs["lm"].canvas.draw_idle()

    def _on_em_contrast(self, value) -> None:
        self._em_contrast = tuple(value)
        self._views["em"].rerender()
        self._figs["em"].canvas.draw_idle()

    def _make_artists(self, ax, view: str) -> dict:
        from matplotlib.patches import Ellipse

        col = _MARK[view]
        kw = dict(linestyle="none", zorder=5, animated=True)  # drawn by blitting (see _blit)
        return {
            "active": ax.plot([], [], "+", color=col, ms=12, mew=1.6, **kw)[0],
            "inactive": ax.plot([], [], "x", color="#999999", ms=9, mew=1.4, **kw)[0],
            "selected": ax.plot([], [], "o", mfc="none", mec="#00ffff", ms=16, mew=1.8, **kw)[0],
            "pending": ax.plot([], [], "+", color="#ff3030", ms=16, mew=2.0, **kw)[0],
            "prediction": ax.plot([], [], "o", mfc="none", mec=_PREDICTION, ms=14, mew=1.6, **kw)[0],
            "ellipse": ax.add_patch(Ellipse((0, 0), 0, 0, fill=False, ec=_PREDICTION, lw=1.2, ls="--",
                                            visible=False, zorder=5, animated=True)),
            "proposals": ax.plot([], [], ".", color=_PROPOSAL, ms=6, **kw)[0],
            "proposal": ax.plot([], [], "o", mfc="none", mec=_PROPOSAL, ms=15, mew=1.8, **kw)[0],
            "proposal_ellipse": ax.add_patch(Ellipse((0, 0), 0, 0, fill=False, ec=_PROPOSAL, lw=1.0,
                                                     visible=False, zorder=5, animated=True)),
            "texts": [],
        }

    def _redraw(self) -> None:
        if self._closed:
            return
        lg = self.logic
        names = lg.landmarks.names
        active = lg.landmarks.active
        pred = lg.prediction
        ellipse = lg.prediction_ellipse
        loo = {}
        if lg.registration is not None:
            loo = dict(zip(lg.registration.names, lg.registration.loo_errors))
        for view in VIEWS:
            art, ax = self._art[view], self._axes[view]
            pts = lg.points(view).copy()
            if lg.drag is not None and lg.drag["view"] == view:
                pts[names.index(lg.drag["name"])] = lg.drag["at"]
            art["active"].set_data(pts[active, 0], pts[active, 1])
            art["inactive"].set_data(pts[~active, 0], pts[~active, 1])
            sel = [names.index(lg.selected)] if lg.selected in names else []
            art["selected"].set_data(pts[sel, 0], pts[sel, 1])
            pend = lg.pending[1] if lg.pending is not None and lg.pending[0] == view else None
            art["pending"].set_data(*(([pend[0]], [pend[1]]) if pend is not None else ([], [])))
            pr = pred[1] if pred is not None and pred[0] == view else None
            art["prediction"].set_data(*(([pr[0]], [pr[1]]) if pr is not None else ([], [])))
            ell = art["ellipse"]
            if ellipse is not None and ellipse[0] == view:
                ell.set_center(ellipse[1])
                ell.width, ell.height = ellipse[2]
                ell.angle = ellipse[3]
                ell.set_visible(True)
            else:
                ell.set_visible(False)
            side = "src" if view == "lm" else "dst"
            props = np.array([pp[side] for pp in lg.proposals]).reshape(-1, 2)
            art["proposals"].set_data(props[1:, 0], props[1:, 1])
            art["proposal"].set_data(props[:1, 0], props[:1, 1])
            pe = art["proposal_ellipse"]
            if len(props) and view == "em" and np.isfinite(lg.proposals[0]["sigma"]):
                d = 2 * _R95 * lg.proposals[0]["sigma"]
                pe.set_center(props[0])
                pe.width = pe.height = d
                pe.set_visible(True)
            else:
                pe.set_visible(False)
            texts = art["texts"]
            while len(texts) > len(names):
                texts.pop().remove()
            while len(texts) < len(names):
                texts.append(ax.annotate("", (0, 0), xytext=(5, 5), textcoords="offset points",
                                         color=_MARK[view], fontsize=9, zorder=6, animated=True))
            for t, n, p, a in zip(texts, names, pts, active):
                t.xy = (p[0], p[1])
                e = loo.get(n, np.nan)
                t.set_text(n if view == "lm" or not np.isfinite(e) else f"{n} · {e * 1e3:.0f} nm")
                t.set_color(_MARK[view] if a else "#999999")
            expected = lg.active_view == view
            ax.set_title(f"{view.upper()}" + ("  ← click here" if expected else ""),
                         color="#d04000" if expected else "black", fontsize=10)
            for s in ax.spines.values():
                s.set_edgecolor("#ff8000" if expected else "black")
                s.set_linewidth(2.5 if expected else 0.8)
            self._blit(view)
        self._update_text()

    def _animated(self, view: str) -> list:
        art, ax = self._art[view], self._axes[view]
        lines = [art[k] for k in ("active", "inactive", "selected", "pending", "prediction", "ellipse",
                                  "proposals", "proposal", "proposal_ellipse")]
        return [*ax.spines.values(), ax.title, *lines, *art["texts"]]

    def _on_draw(self, view: str) -> None:
        """After a full render: keep it as background, then draw the markers on top."""
        if self._closed:
            return
        fig = self._figs[view]
        self._bg[view] = (fig.canvas.copy_from_bbox(fig.bbox), tuple(fig.bbox.bounds))
        for a in self._animated(view):
            fig.draw_artist(a)

    def _blit(self, view: str) -> None:
        """Redraw only the markers over the saved background (fast); else a full redraw."""
        fig = self._figs[view]
        bg = self._bg[view]
        if bg is None or bg[1] != tuple(fig.bbox.bounds):
            fig.canvas.draw_idle()
            return
        fig.canvas.restore_region(bg[0])
        for a in self._animated(view):
            fig.draw_artist(a)
        fig.canvas.blit(fig.bbox)
        self.blits += 1

    def _update_text(self) -> None:
        lg = self.logic
        n, na = len(lg.landmarks), int(lg.landmarks.active.sum())
        parts = [f"<b>{n}</b> pairs ({na} active)", f"next click: <b>{lg.active_view.upper()}</b>"]
        if lg.pending is not None:
            v, p = lg.pending
            parts.append(f"pending {v.upper()} point at ({p[0]:.3f}, {p[1]:.3f}) µm")
        if lg.prediction is not None:
            v, q = lg.prediction
            parts.append(f"predicted {v.upper()} partner at ({q[0]:.3f}, {q[1]:.3f}) µm")
        if lg.selected is not None:
            parts.append(f"selected {html.escape(lg.selected)}")
        if lg.proposals:
            parts.append(f"<span style='color:#008ba3'>{len(lg.proposals)} proposed pairs (ringed: next)</span>")
        self.status.value = " · ".join(parts)
        if lg.proposals and lg.proposal_note:
            self.status.value += f"<br>{lg.proposal_note}"
        self.table.value = _table_html(lg)
        self.buttons["undo"].disabled = not lg.can_undo
        self.buttons["redo"].disabled = not lg.can_redo
        self.buttons["delete"].disabled = lg.selected is None and lg.pending is None
        self.buttons["toggle"].disabled = lg.selected is None
        self.buttons["accept"].disabled = lg.prediction is None
        self.buttons["clear"].disabled = n == 0 and lg.pending is None
        self.buttons["snap"].disabled = lg.selected is None or lg.registration is None
        self.buttons["refine"].disabled = int(lg.landmarks.active.sum()) < 2
        for k in ("take", "reject", "take_all", "reject_all"):
            self.buttons[k].disabled = not lg.proposals
        self._proposal_row.layout.display = "" if lg.proposals else "none"

    def _run(self, action) -> None:
        """Run a command; show a user error in the message line instead of raising in a callback."""
        self._note = ""
        try:
            action()
        except (LandmarkError, RegistrationError, ValueError) as exc:
            self.message.value = f"<span style='color:#c00000'>{html.escape(str(exc))}</span>"
            self._redraw()
            return
        self.message.value = html.escape(self._note)

    # -- events -------------------------------------------------------------------------------
    def _view_of(self, event) -> str | None:
        for view in VIEWS:
            if event.inaxes is self._axes.get(view):
                return view
        return None

    def _um_per_px(self, view: str) -> float:
        ax = self._axes[view]
        x0, x1 = ax.get_xlim()
        return abs(x1 - x0) / max(ax.get_window_extent().width, 1.0)

    def _on_press(self, event) -> None:
        view = self._view_of(event)
        if view is None or event.button != 1 or event.xdata is None:
            return
        canvas = event.canvas
        # toolbar zoom/pan (or another widget) holds the lock: the click is not a landmark
        if canvas.widgetlock.locked() or getattr(getattr(canvas, "toolbar", None), "mode", ""):
            return
        self._run(lambda: self.logic.press(view, (event.xdata, event.ydata),
                                           tol=self.pick_radius * self._um_per_px(view)))

    def _on_motion(self, event) -> None:
        if self.logic.drag is None:
            return
        view = self._view_of(event)
        if view is not None and event.xdata is not None:
            self.logic.motion(view, (event.xdata, event.ydata))

    def _on_release(self, event) -> None:
        if self.logic.drag is None:
            return
        view = self._view_of(event)
        xy = None if view is None or event.xdata is None else (event.xdata, event.ydata)
        self._run(lambda: self.logic.release(view or self.logic.drag["view"], xy))

    _KEYS = {"delete": "delete", "backspace": "delete", "ctrl+z": "undo", "ctrl+y": "redo",
             "ctrl+shift+z": "redo", "ctrl+Z": "redo", "a": "toggle_active", "enter": "accept_prediction",
             "escape": "escape", "s": "snap"}

    def _on_key(self, event) -> None:
        what = self._KEYS.get(event.key)
        if what is None:
            return
        if what == "snap":
            self._run(self.snap)
            return
        if what == "escape":
            if self.logic.pending is not None:
                self._run(lambda: self.logic.delete(None) if self.logic.selected is None else self.logic.select(None))
            return
        self._run(getattr(self.logic, what))

    def _on_scroll(self, event) -> None:
        view = self._view_of(event)
        if view is None or event.xdata is None:
            return
        ax = self._axes[view]
        f = 1 / 1.25 if event.button == "up" else 1.25
        x, y = event.xdata, event.ydata
        x0, x1 = ax.get_xlim()
        y0, y1 = ax.get_ylim()
        ax.set_xlim(x + (x0 - x) * f, x + (x1 - x) * f)
        ax.set_ylim(y + (y0 - y) * f, y + (y1 - y) * f)
        self._figs[view].canvas.draw_idle()


def _local_jacobian(transform, xy, h: float = 1e-3) -> np.ndarray:
    """(2, 2) derivative of ``transform`` at ``xy`` (µm per µm), by central differences."""
    xy = np.asarray(xy, float)
    cols = [(transform((xy + d)[None])[0] - transform((xy - d)[None])[0]) / (2 * h)
            for d in (np.array([h, 0.0]), np.array([0.0, h]))]
    return np.column_stack(cols)


def _table_html(lg: PickerLogic) -> str:
    df = lg.landmarks.to_dataframe()
    reg = lg.registration
    res = dict.fromkeys(df["name"], np.nan)
    loo = dict.fromkeys(df["name"], np.nan)
    if reg is not None:
        res.update(zip(reg.names, reg.residuals))
        loo.update(zip(reg.names, reg.loo_errors))
    if reg is not None:
        head = (f"model <b>{html.escape(reg.model)}</b>, {len(reg.residuals)} active pairs, "
                f"RMS residual <b>{reg.rms * 1e3:.1f} nm</b>")
        if np.isfinite(reg.loo_errors).any():
            head += f", RMS leave-one-out <b>{np.sqrt(np.nanmean(reg.loo_errors ** 2)) * 1e3:.1f} nm</b>"
    else:
        head = f"model <b>{html.escape(lg.model)}</b>: no fit yet ({html.escape(lg.fit_message)})"

    def nm(v):
        return "–" if not np.isfinite(v) else f"{v * 1e3:.1f}"

    rows = "".join(
        f"<tr style='color:{'inherit' if r.active else '#999'}'><td>{html.escape(str(r.name))}</td>"
        f"<td>{'yes' if r.active else 'no'}</td>"
        f"<td>{r.x_src:.3f}</td><td>{r.y_src:.3f}</td><td>{r.x_dst:.3f}</td><td>{r.y_dst:.3f}</td>"
        f"<td>{nm(res[r.name])}</td><td>{nm(loo[r.name])}</td></tr>"
        for r in df.itertuples(index=False)
    )
    return (f"<div>{head}</div><table class='clemlab-pairs'><tr><th>pair</th><th>active</th>"
            "<th>LM x µm</th><th>LM y µm</th><th>EM x µm</th><th>EM y µm</th>"
            f"<th>residual nm</th><th>left-out nm</th></tr>{rows}</table>")

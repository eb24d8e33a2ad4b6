"""What a click means: the landmark picker's state machine, without any drawing.

Everything here works on physical points (µm, ``(x, y)``) and the names of the two views,
``"lm"`` (the source frame) and ``"em"`` (the target frame), so it is tested with plain
Python calls; :mod:`clemlab.widgets.picker` only turns matplotlib events into these calls
and draws the result.

State
-----
- ``pending``: the first half of a pair, ``(view, point)``, waiting for its partner;
- ``active_view``: the view the next click is expected in (switches by itself);
- ``selected``: the name of the selected pair (markers can be dragged and deleted);
- ``drag``: a marker being dragged;
- an undo and a redo stack of snapshots (landmarks table + pending half-pair), so every
  action, "clear all" included, can be undone;
- ``registration``: the current fit of the active pairs (None while there are too few), and
  ``prediction``: where the current fit puts the partner of the pending point, with its 95 %
  ellipse (``prediction_ellipse``);
- ``proposals``: pairs suggested by the images (``register_images``), each accepted or
  rejected by the user; only accepted ones enter the table.

Every point that enters the table passes ``check_point(view, xy)`` first (the picker refuses
points outside an image or on an empty/masked region, with the reason), so the fit and its
statistics only ever count pairs inside both images.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import LandmarkError, RegistrationError
from ..landmarks import Landmarks
from ..registration import Registration, register

__all__ = ["PickerLogic", "VIEWS", "other_view"]

#: The two views: ``"lm"`` shows the source frame, ``"em"`` the target frame.
VIEWS = ("lm", "em")
_SIDE = {"lm": "src", "em": "dst"}


def other_view(view: str) -> str:
    """``"em"`` for ``"lm"`` and vice versa."""
    return "em" if view == "lm" else "lm"


def _check_view(view: str) -> str:
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    return view


def _point(xy: Any) -> np.ndarray:
    p = np.asarray(xy, dtype=np.float64).reshape(-1)
    if p.shape != (2,) or not np.all(np.isfinite(p)):
        raise LandmarkError(f"a click needs a finite (x, y) position in µm, got {xy!r}")
    return p


@dataclass(frozen=True)
class _Snapshot:
    landmarks: Landmarks
    pending: tuple[str, tuple[float, float]] | None
    active_view: str


class PickerLogic:
    """State machine of the landmark picker (no matplotlib).

    Parameters
    ----------
    landmarks : Landmarks
        The table edited in place (2-D); its autosave, if any, runs after every edit.
    model : str
        Transform model fitted after every edit (``"affine"``, ``"similarity"``, ...).
    max_history : int
        Undo steps kept.
    check_point : callable, optional
        ``check_point(view, xy) -> str | None``: None when a new point at ``xy`` (µm) in
        ``view`` is acceptable, else the reason it is not (shown to the user).

    Notes
    -----
    Views are ``"lm"`` (source points, ``x_src, y_src``) and ``"em"`` (destination points).
    Points are ``(x, y)`` in µm. Methods return True when something visible changed.
    """

    def __init__(self, landmarks: Landmarks, model: str = "affine", max_history: int = 1000,
                 check_point: Callable[[str, np.ndarray], str | None] | None = None):
        if not isinstance(landmarks, Landmarks):
            raise LandmarkError(f"landmarks must be a clemlab Landmarks table, got {type(landmarks).__name__}")
        if landmarks.ndim != 2:
            raise LandmarkError(f"the picker edits 2-D landmarks (x, y), got {landmarks.ndim}-D ones")
        self.landmarks = landmarks
        self.model = str(model)
        self.max_history = int(max_history)
        self.pending: tuple[str, np.ndarray] | None = None
        self.active_view = "lm"
        self.selected: str | None = None
        self.drag: dict[str, Any] | None = None
        self._undo: list[_Snapshot] = []
        self._redo: list[_Snapshot] = []
        self._observers: list[Callable[[PickerLogic], None]] = []
        self.check_point = check_point
        self.proposals: list[dict[str, Any]] = []
        self.proposal_note = ""
        self.registration: Registration | None = None
        self.fit_message = ""
        self._refit()
        # Edits made directly on the table (picker.landmarks.add(...)) refresh the fit too;
        # a weak reference keeps a closed picker collectable.
        ref = weakref.WeakMethod(self._on_table_change)
        landmarks.on_change(lambda _lms: ref() and ref()())

    # -- observers ------------------------------------------------------------------------
    def on_update(self, callback: Callable[[PickerLogic], None]) -> None:
        """Call ``callback(logic)`` after every change of state (used to redraw)."""
        self._observers.append(callback)

    def _notify(self) -> None:
        for cb in list(self._observers):
            cb(self)

    def _on_table_change(self) -> None:
        self._refit()
        if self.selected is not None and self.selected not in self.landmarks.names:
            self.selected = None

    # -- read access ----------------------------------------------------------------------
    def points(self, view: str, active_only: bool = False) -> np.ndarray:
        """Marker positions ``(N, 2)`` (µm, ``(x, y)``) shown in ``view``, table order."""
        lms = self.landmarks
        _check_view(view)
        if len(lms) == 0:  # (an empty table's src()/dst() is not usable with every pandas)
            return np.zeros((0, 2))
        return lms.src(active_only) if view == "lm" else lms.dst(active_only)

    @property
    def prediction(self) -> tuple[str, np.ndarray] | None:
        """``(view, point)``: where the current fit puts the partner of the pending point."""
        if self.pending is None or self.registration is None:
            return None
        view, p = self.pending
        tf = self.registration.transform
        q = tf(p[None])[0] if view == "lm" else tf.inverse(p[None])[0]
        return other_view(view), q

    @property
    def prediction_ellipse(self) -> tuple[str, np.ndarray, tuple[float, float], float] | None:
        """``(view, centre, (width, height), angle_deg)``: the 95 % ellipse of the predicted
        partner, µm in that view's frame (full axes lengths; angle from +x towards +y).

        It combines the fit's mapping error with the click's own localisation error, so the
        partner lies inside it 95 % of the time under the noise model. None when there is no
        prediction or the model gives no error estimate.
        """
        pred = self.prediction
        if pred is None:
            return None
        from scipy.stats import chi2, f

        view, q = pred
        src = self.pending[1] if view == "em" else q
        reg = self.registration
        try:
            mapped = reg.map_points(src[None], include_target_fle=True)
            cov = np.asarray(mapped.covariance, float)[0]
        except (RegistrationError, ValueError, AttributeError):
            return None
        if view == "lm":  # the ellipse lives in EM: carry it into LM through the inverse's Jacobian
            h = 1e-3
            base = reg.transform.inverse(self.pending[1][None])[0]
            jac = np.column_stack([(reg.transform.inverse((self.pending[1] + d)[None])[0] - base) / h
                                   for d in (np.array([h, 0.0]), np.array([0.0, h]))])
            cov = jac @ cov @ jac.T
        if not np.all(np.isfinite(cov)):
            return None
        dof = getattr(mapped, "dof", np.inf)
        quant = chi2.ppf(0.95, 2) if not np.isfinite(dof) else 2 * f.ppf(0.95, 2, dof)
        vals, vecs = np.linalg.eigh(cov)
        vals, vecs = vals[::-1], vecs[:, ::-1]
        axes = 2 * np.sqrt(np.maximum(vals, 0) * quant)
        angle = float(np.degrees(np.arctan2(vecs[1, 0], vecs[0, 0])))
        return view, q, (float(axes[0]), float(axes[1])), angle

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    # -- fitting --------------------------------------------------------------------------
    def _refit(self) -> None:
        if not self.landmarks.active.any():
            self.registration = None
            self.fit_message = "no active pairs yet"
            return
        try:
            self.registration = register(self.landmarks, model=self.model)
            self.fit_message = ""
        except RegistrationError as exc:
            self.registration = None
            self.fit_message = str(exc)

    def set_model(self, model: str) -> None:
        """Refit with another model (``"translation"``, ``"rigid"``, ``"similarity"``, ``"affine"``)."""
        old = self.model
        self.model = str(model)
        try:
            self._refit()
        except RegistrationError:
            self.model = old
            self._refit()
            raise
        self._notify()

    # -- history --------------------------------------------------------------------------
    def _snapshot(self) -> _Snapshot:
        pend = None if self.pending is None else (self.pending[0], tuple(map(float, self.pending[1])))
        return _Snapshot(self.landmarks.copy(), pend, self.active_view)

    def _push(self) -> None:
        self._undo.append(self._snapshot())
        del self._undo[: -self.max_history]
        self._redo.clear()

    def _restore(self, snap: _Snapshot) -> None:
        if snap.landmarks != self.landmarks:
            self.landmarks.replace(snap.landmarks)
        self.pending = None if snap.pending is None else (snap.pending[0], np.array(snap.pending[1]))
        self.active_view = snap.active_view
        self.drag = None
        if self.selected not in self.landmarks.names:
            self.selected = None

    def undo(self) -> bool:
        """Undo the last action (add, half-pair, move, delete, toggle, clear)."""
        if not self._undo:
            return False
        self._redo.append(self._snapshot())
        self._restore(self._undo.pop())
        self._notify()
        return True

    def redo(self) -> bool:
        """Redo the last undone action."""
        if not self._redo:
            return False
        self._undo.append(self._snapshot())
        self._restore(self._redo.pop())
        self._notify()
        return True

    # -- mouse ----------------------------------------------------------------------------
    def hit(self, view: str, xy: Any, tol: float) -> str | None:
        """Name of the pair whose marker in ``view`` lies within ``tol`` µm of ``xy``."""
        pts = self.points(view)
        if len(pts) == 0:
            return None
        d = np.hypot(*(pts - _point(xy)).T)
        i = int(np.argmin(d))
        return self.landmarks.names[i] if d[i] <= tol else None

    def press(self, view: str, xy: Any, tol: float = 0.0) -> bool:
        """Left-button press at ``xy`` (µm) in ``view``.

        On a marker (within ``tol`` µm): select that pair and start dragging it. Elsewhere:
        with no pending point, start a pair here and make the other view active; with a
        pending point in the other view, complete the pair; with one in this view, replace it.
        """
        _check_view(view)
        p = _point(xy)
        name = self.hit(view, p, tol) if tol > 0 else None
        if name is not None:
            self.selected = name
            self.drag = {"name": name, "view": view, "start": p, "at": p}
            self._notify()
            return True
        self.selected = None
        self._refuse_point(view, p, "click")
        self._push()
        if self.pending is None or self.pending[0] == view:
            self.pending = (view, p)
            self.active_view = other_view(view)
        else:
            first_view, q = self.pending
            src, dst = (q, p) if first_view == "lm" else (p, q)
            self.pending = None
            self.active_view = first_view
            self.landmarks.add(src, dst)
        self._notify()
        return True

    def motion(self, view: str, xy: Any) -> bool:
        """Mouse move: moves the dragged marker (drawn only; saved on release)."""
        if self.drag is None or self.drag["view"] != view:
            return False
        self.drag["at"] = _point(xy)
        self._notify()
        return True

    def release(self, view: str, xy: Any | None = None) -> bool:
        """Button release: ends a drag, saving the new position as one undoable edit."""
        if self.drag is None:
            return False
        drag, self.drag = self.drag, None
        at = drag["at"] if xy is None or view != drag["view"] else _point(xy)
        if np.array_equal(at, drag["start"]):
            self._notify()
            return False
        try:
            self._refuse_point(drag["view"], at, "moved point")
        except LandmarkError:
            self._notify()  # the marker goes back where it was
            raise
        self._push()
        side = {_SIDE[drag["view"]]: at}
        self.landmarks.move(drag["name"], **side)
        self._notify()
        return True

    # -- commands -------------------------------------------------------------------------
    def _target(self, name: str | None) -> str:
        name = self.selected if name is None else name
        if name is None:
            raise LandmarkError("no pair is selected; click a marker first or pass a name")
        if name not in self.landmarks.names:
            raise LandmarkError(f"no landmark named {name!r}; names are {self.landmarks.names}")
        return name

    def delete(self, name: str | None = None) -> bool:
        """Delete pair ``name`` (default the selected one); with none, drop the pending point."""
        if name is None and self.selected is None:
            if self.pending is None:
                return False
            self._push()
            self.active_view = self.pending[0]
            self.pending = None
            self._notify()
            return True
        name = self._target(name)
        self._push()
        self.landmarks.remove(name)
        self.selected = None
        self._notify()
        return True

    def toggle_active(self, name: str | None = None) -> bool:
        """Switch pair ``name`` (default the selected one) between active and inactive."""
        name = self._target(name)
        self._push()
        i = self.landmarks.names.index(name)
        self.landmarks.set_active(name, not bool(self.landmarks.active[i]))
        self._notify()
        return True

    def clear(self) -> bool:
        """Remove every pair and the pending point (undoable)."""
        if len(self.landmarks) == 0 and self.pending is None:
            return False
        self._push()
        self.pending = None
        self.selected = None
        self.active_view = "lm"
        self.landmarks.clear()
        self._notify()
        return True

    def _refuse_point(self, view: str, p: np.ndarray, what: str) -> None:
        """Raise a LandmarkError naming the reason when ``p`` may not enter the table."""
        if self.check_point is None:
            return
        reason = self.check_point(view, p)
        if reason:
            raise LandmarkError(f"{what} at ({p[0]:.3f}, {p[1]:.3f}) µm refused: {reason}")

    def accept_prediction(self) -> bool:
        """Complete the pending pair with the predicted partner point.

        Refused (LandmarkError, with the reason) when the predicted partner lies outside the
        other image or on an empty or masked region of it: there is nothing there to confirm.
        """
        pred = self.prediction
        if pred is None:
            return False
        view, q = pred
        if self.check_point is not None:
            reason = self.check_point(view, q)
            if reason:
                raise LandmarkError(
                    f"the predicted {view.upper()} partner at ({q[0]:.3f}, {q[1]:.3f}) µm is not accepted: "
                    f"{reason}. Click the partner by hand where you see it, or drop the pending point (Escape)")
        return self.press(view, q, tol=0.0)

    # -- proposals from the images ---------------------------------------------------------
    def set_proposals(self, src: Any, dst: Any, sigma: Any = None, note: str = "") -> int:
        """Offer pairs found in the images (``src`` LM, ``dst`` EM, ``(N, 2)`` µm; ``sigma`` the
        EM-side 1-sigma uncertainty per pair, µm) for the user to accept or reject one by one.
        Proposals outside either image (``check_point``) are dropped. Returns how many remain."""
        src = np.asarray(src, float).reshape(-1, 2)
        dst = np.asarray(dst, float).reshape(-1, 2)
        sig = np.full(len(src), np.nan) if sigma is None else np.asarray(sigma, float).reshape(-1)
        keep = []
        for s, d, e in zip(src, dst, sig):
            if self.check_point is not None and (self.check_point("lm", s) or self.check_point("em", d)):
                continue
            keep.append({"src": s, "dst": d, "sigma": float(e)})
        self.proposals = keep
        self.proposal_note = note
        self._notify()
        return len(keep)

    def accept_proposal(self) -> bool:
        """Add the first proposal as a pair (undoable) and move to the next."""
        if not self.proposals:
            return False
        prop = self.proposals.pop(0)
        self._push()
        sig = prop["sigma"] if np.isfinite(prop["sigma"]) else None
        self.landmarks.add(prop["src"], prop["dst"], sigma_dst=sig)
        self._notify()
        return True

    def reject_proposal(self) -> bool:
        """Drop the first proposal."""
        if not self.proposals:
            return False
        self.proposals.pop(0)
        self._notify()
        return True

    def accept_all_proposals(self) -> int:
        """Add every remaining proposal as pairs (one undoable step). Returns how many."""
        n = len(self.proposals)
        if n == 0:
            return 0
        self._push()
        props, self.proposals = self.proposals, []
        for prop in props:
            sig = prop["sigma"] if np.isfinite(prop["sigma"]) else None
            self.landmarks.add(prop["src"], prop["dst"], sigma_dst=sig)
        self._notify()
        return n

    def reject_all_proposals(self) -> int:
        """Drop every remaining proposal. Returns how many."""
        n = len(self.proposals)
        self.proposals = []
        self._notify()
        return n

    def snap_to(self, name: str | None, dst: Any, sigma: float | None = None) -> bool:
        """Move pair ``name``'s EM point to ``dst`` (µm), e.g. where a patch match put it;
        one undoable edit."""
        name = self._target(name)
        q = _point(dst)
        self._refuse_point("em", q, "snapped point")
        self._push()
        self.landmarks.move(name, dst=q)
        self._notify()
        return True

    def select(self, name: str | None) -> None:
        """Select pair ``name`` (None clears the selection)."""
        self.selected = None if name is None else self._target(name)
        self._notify()

"""Fitting landmarks: :func:`register` and the :class:`Registration` result.

A registration answers two questions: what is the transform from the source frame (LM) to
the target frame (EM), and how well do the landmarks support it (per-pair residuals, their
RMS = fiducial registration error, and leave-one-out errors, which do not flatter the fit
the way in-fit residuals do).
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from . import transforms as _tf
from ._atomic import atomic_write_text
from .errors import FileFormatError, RegistrationError
from .landmarks import Landmarks

__all__ = ["register", "Registration"]

_FORMAT = "clemlab.registration"
_VERSION = 1


def _model_class(model: str | type) -> type[_tf.Transform]:
    if isinstance(model, type) and issubclass(model, _tf.Transform):
        return model
    key = str(model).lower()
    if key not in _tf.MODELS:
        raise RegistrationError(f"unknown model {model!r}; choose one of {sorted(_tf.MODELS)}")
    return _tf.MODELS[key]


def _weights(lms: Landmarks, cls, src, dst) -> np.ndarray | None:
    """Per-pair weights 1 / (sigma_dst^2 + (s sigma_src)^2) when uncertainties are stored."""
    sig = lms.sigmas()
    if sig is None:
        return None
    s_src, s_dst = sig
    if not np.all(s_src + s_dst > 0):
        return None
    first = cls.from_estimate(src, dst)
    scale = 1.0
    if first and isinstance(first, _tf.LinearTransform):
        scale = abs(np.linalg.det(first.linear)) ** (1.0 / first.ndim)
    return 1.0 / (s_dst**2 + (scale * s_src) ** 2)


def register(landmarks: Landmarks, model: str = "affine", **options) -> Registration:
    """Fit a transform model to the active landmark pairs.

    Parameters
    ----------
    landmarks : Landmarks
        Pairs source -> target (µm, ``(x, y[, z])``); inactive pairs are ignored.
    model : str
        ``"translation"``, ``"rigid"``, ``"similarity"`` or ``"affine"``.
    **options
        Passed to the model's estimator (``allow_reflection=True`` for rigid/similarity).

    Returns
    -------
    Registration

    Raises
    ------
    RegistrationError
        When the landmarks do not determine the model (too few, degenerate layout); the
        message says why and what to do.
    """
    if not isinstance(landmarks, Landmarks):
        raise RegistrationError(
            f"register() takes a Landmarks table, got {type(landmarks).__name__}; "
            "build one with Landmarks.from_points(src, dst)"
        )
    cls = _model_class(model)
    src, dst = landmarks.src(), landmarks.dst()
    weights = _weights(landmarks, cls, src, dst)
    tf = cls.from_estimate(src, dst, weights=weights, source_frame=landmarks.source_frame,
                           target_frame=landmarks.target_frame, **options)
    if not tf:
        raise RegistrationError(f"cannot fit a {cls.__name__.lower()} model: {tf.reason}")
    loo = np.full(len(src), np.nan)
    if len(src) > cls.min_points[landmarks.ndim]:
        keep = np.ones(len(src), bool)
        for i in range(len(src)):
            keep[i] = False
            part = cls.from_estimate(src[keep], dst[keep],
                                     weights=None if weights is None else weights[keep], **options)
            keep[i] = True
            if part:
                loo[i] = float(np.linalg.norm(part(src[i]) - dst[i]))
    return Registration(tf, landmarks.copy(), cls.__name__.lower(), loo_errors=loo, options=options)


class Registration:
    """The result of :func:`register`: a transform plus how far to trust it.

    Attributes
    ----------
    transform : Transform
        Maps source-frame points (µm) to target-frame points (µm).
    landmarks : Landmarks
        The pairs it was fitted to (a copy).
    model : str
        Model name.
    residual_vectors : numpy.ndarray, shape (N, D)
        ``transform(src) - dst`` for the active pairs, µm.
    residuals : numpy.ndarray, shape (N,)
        Their lengths, µm.
    rms : float
        Root-mean-square residual (fiducial registration error), µm.
    loo_errors : numpy.ndarray, shape (N,)
        Leave-one-out error per active pair: refit without it, distance at it, µm (NaN where
        the model cannot be fitted without that pair).
    """

    def __init__(self, transform: _tf.Transform, landmarks: Landmarks, model: str,
                 loo_errors: Any = None, options: dict | None = None):
        self.transform = transform
        self.landmarks = landmarks
        self.model = model
        self.options = dict(options or {})
        src, dst = landmarks.src(), landmarks.dst()
        self.residual_vectors = transform(src) - dst
        self.residuals = np.linalg.norm(self.residual_vectors, axis=1)
        self.rms = float(np.sqrt(np.mean(self.residuals**2))) if len(src) else float("nan")
        self.loo_errors = (np.full(len(src), np.nan) if loo_errors is None
                           else np.asarray(loo_errors, dtype=np.float64))

    @property
    def names(self) -> list[str]:
        """Names of the active pairs, in the order of ``residuals``."""
        df = self.landmarks.to_dataframe()
        return df["name"][df["active"]].tolist()

    def map_points(self, points: Any) -> np.ndarray:
        """Map source-frame points ``(N, D)`` (µm, ``(x, y[, z])``) into the target frame."""
        return self.transform(points)

    # -- display --------------------------------------------------------------------------
    def summary(self) -> str:
        """Plain-text summary: model, pairs, RMS and per-pair residual / left-out error (nm)."""
        lines = [
            f"{self.model} registration {self.landmarks.source_frame} -> {self.landmarks.target_frame}, "
            f"{len(self.residuals)} active pairs",
            f"RMS residual (FRE): {self.rms * 1e3:.1f} nm",
        ]
        if np.isfinite(self.loo_errors).any():
            lines.append(f"RMS leave-one-out error: {np.sqrt(np.nanmean(self.loo_errors**2)) * 1e3:.1f} nm")
        lines.append(f"{'pair':>8} {'residual nm':>12} {'left-out nm':>12}")
        for n, r, l in zip(self.names, self.residuals, self.loo_errors):
            lines.append(f"{n:>8} {r * 1e3:12.1f} {l * 1e3:12.1f}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(n)}</td><td>{r * 1e3:.1f}</td><td>{l * 1e3:.1f}</td></tr>"
            for n, r, l in zip(self.names, self.residuals, self.loo_errors)
        )
        loo = (f", RMS leave-one-out <b>{np.sqrt(np.nanmean(self.loo_errors**2)) * 1e3:.1f} nm</b>"
               if np.isfinite(self.loo_errors).any() else "")
        return (
            f"<div><b>{html.escape(self.model)}</b> registration "
            f"{html.escape(self.landmarks.source_frame)} &rarr; {html.escape(self.landmarks.target_frame)}: "
            f"{len(self.residuals)} pairs, RMS residual <b>{self.rms * 1e3:.1f} nm</b>{loo}"
            "<table><tr><th>pair</th><th>residual (nm)</th><th>left-out error (nm)</th></tr>"
            f"{rows}</table></div>"
        )

    # -- persistence ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: model, transform, landmarks, diagnostics, software version."""
        from . import __version__

        return {
            "format": _FORMAT,
            "version": _VERSION,
            "software": f"clemlab {__version__}",
            "model": self.model,
            "options": self.options,
            "transform": self.transform.to_dict(),
            "landmarks": self.landmarks.to_json_dict(),
            "rms": self.rms,
            "residuals": self.residuals.tolist(),
            "loo_errors": [None if not np.isfinite(v) else float(v) for v in self.loo_errors],
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any], where: str = "registration") -> Registration:
        """Rebuild from :meth:`to_dict` output."""
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise RegistrationError(f"{where} is not a clemlab registration (no \"format\": \"{_FORMAT}\")")
        if int(doc.get("version", 0)) > _VERSION:
            raise RegistrationError(f"{where} was written by a newer clemlab (schema {doc['version']}); upgrade clemlab")
        loo = [np.nan if v is None else v for v in doc.get("loo_errors", [])] or None
        return cls(_tf.transform_from_dict(doc["transform"]),
                   Landmarks.from_json_dict(doc["landmarks"], where=where),
                   doc["model"], loo_errors=loo, options=doc.get("options"))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the registration as JSON, atomically."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Registration:
        """Read a registration written by :meth:`save`."""
        p = Path(path)
        if not p.is_file():
            raise FileFormatError(f"registration file {p} does not exist")
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RegistrationError(f"registration file {p} is not valid JSON ({exc})") from None
        return cls.from_dict(doc, where=f"registration file {p}")

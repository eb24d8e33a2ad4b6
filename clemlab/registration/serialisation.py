"""Saving and loading a registration: a versioned JSON document.

The document holds everything needed to rebuild the :class:`Registration` exactly (model,
options, transform, landmarks, given FLE, bootstrap settings, RANSAC outliers) plus its
diagnostics for readers without clemlab; the diagnostics are recomputed on loading, not read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import transforms as _tf
from .._atomic import atomic_write_text
from ..errors import FileFormatError, RegistrationError
from ..landmarks import Landmarks

if TYPE_CHECKING:
    from .result import Registration

__all__: list[str] = []

FORMAT = "clemlab.registration"
#: Schema version written; documents with a larger one are refused.
VERSION = 1


def registration_to_dict(reg: Registration) -> dict[str, Any]:
    """JSON-able dict of ``reg``: model, transform, landmarks, diagnostics, software version."""
    from .. import __version__

    return {
        "format": FORMAT,
        "version": VERSION,
        "software": f"clemlab {__version__}",
        "model": reg.model,
        "options": reg.options,
        "transform": reg.transform.to_dict(),
        "landmarks": reg.landmarks.to_json_dict(),
        "fle_given": reg.given_fle,
        "n_bootstrap": reg.n_bootstrap,
        "seed": reg.seed,
        "outliers": reg.outliers,
        "diagnostics": {
            "rms": reg.rms,
            "fle": reg.fle if np.isfinite(reg.fle) else None,
            "fle_source": reg.fle_source,
            "residuals": reg.residuals.tolist(),
            "loo_errors": [None if not np.isfinite(v) else float(v) for v in reg.loo_errors],
            "warnings": reg.warnings,
        },
    }


def registration_from_dict(cls: type[Registration], doc: dict[str, Any],
                           where: str = "registration") -> Registration:
    """Rebuild a ``cls`` from :func:`registration_to_dict` output; ``where`` names it in errors."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise RegistrationError(f"{where} is not a clemlab registration (no \"format\": \"{FORMAT}\")")
    if int(doc.get("version", 0)) > VERSION:
        raise RegistrationError(f"{where} was written by a newer clemlab (schema {doc['version']}); upgrade clemlab")
    diag = doc.get("diagnostics", {})
    loo = [np.nan if v is None else v for v in diag.get("loo_errors", [])] or None
    return cls(_tf.transform_from_dict(doc["transform"]),
               Landmarks.from_json_dict(doc["landmarks"], where=where),
               doc["model"], loo_errors=loo, options=doc.get("options"),
               fle=doc.get("fle_given"), n_bootstrap=doc.get("n_bootstrap", 200),
               seed=doc.get("seed", 0), outliers=doc.get("outliers"))


def save_registration(reg: Registration, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``reg`` as JSON to ``path``, atomically; returns the path. An existing JSON file
    is replaced only with ``overwrite=True`` (a file of another format never is)."""
    return atomic_write_text(path, json.dumps(registration_to_dict(reg), indent=1, ensure_ascii=False) + "\n",
                             overwrite=overwrite, fmt="JSON")


def load_registration(cls: type[Registration], path: str | os.PathLike) -> Registration:
    """Read a registration file written by :func:`save_registration` as a ``cls``."""
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(f"registration file {p} does not exist")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RegistrationError(f"registration file {p} is not valid JSON ({exc})") from None
    return registration_from_dict(cls, doc, where=f"registration file {p}")

"""Compact HTML summaries for notebooks: images, registrations, landmark tables, montages.

Each builder returns a small self-contained HTML fragment (inline styles, figures as inline
PNG) that reads like a figure legend: what the object is, in physical units, and what to
check. Nothing here dumps raw attributes or internal ids. The classes call these builders
from their ``_repr_html_``; images (whose own display is xarray's) are summarised through
:func:`describe`.

Plots are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas, so building
a summary never touches pyplot's figure registry or the selected backend.
"""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Any

import numpy as np

__all__ = ["describe", "ImageSummary", "image_html", "registration_html", "registration_verdict",
           "landmarks_html", "montage_html"]

#: Rows of a landmark table shown before "... and N more".
MAX_ROWS = 30

_BOX = ("font-family:var(--jp-ui-font-family, sans-serif);font-size:13px;line-height:1.35;"
        "border:1px solid #ccc;border-radius:4px;padding:6px 10px;max-width:52em")
_TH = "text-align:left;padding:1px 10px 1px 0;color:#555;font-weight:normal;vertical-align:top"
_TD = "text-align:left;padding:1px 10px 1px 0"


def _esc(v: Any) -> str:
    return html.escape(str(v))


def _rows(pairs: list[tuple[str, str]]) -> str:
    """Two-column key/value table; values are HTML already."""
    body = "".join(f"<tr><th style='{_TH}'>{_esc(k)}</th><td style='{_TD}'>{v}</td></tr>" for k, v in pairs)
    return f"<table style='border-collapse:collapse;margin:2px 0'>{body}</table>"


def _box(title: str, body: str) -> str:
    return f"<div class='clemlab-summary' style='{_BOX}'><div><b>{title}</b></div>{body}</div>"


def _length(um: float) -> str:
    """A length in µm with a readable unit (nm below 1 µm, mm above 1000 µm)."""
    if not np.isfinite(um):
        return "–"
    a = abs(um)
    if a < 5e-5:  # below 0.05 nm: numerically zero for any microscope
        return "0 nm"
    if a < 1.0:
        return f"{um * 1e3:.3g} nm"
    if a >= 1e3:
        return f"{um / 1e3:.4g} mm"
    return f"{um:.4g} µm"


def _nbytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return ""


# -- images ------------------------------------------------------------------------------------
def _transforms_of(img) -> dict:
    raw = img.attrs.get("clem:transforms") or {}
    if isinstance(raw, str):  # written to a file and read back as text
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    return raw if isinstance(raw, dict) else {}


def image_html(img) -> str:
    """HTML summary of a clemlab image: shape, dims, pixel size (unit, source), frame, channels,
    transforms it carries, storage (in memory or lazy dask chunks) and where it came from."""
    from .image import SPATIAL_DIMS, check_image

    check_image(img)
    acc = img.clem
    name = img.attrs.get("description") or (img.name if img.name is not None else "image")
    dims = " × ".join(f"{img.sizes[d]} {d}" for d in img.dims)
    ps = acc.pixel_size
    units = {d: img.coords[d].attrs.get("units", "µm") for d in acc.spatial_dims}
    source = img.attrs.get("pixel_size_source")
    steps = [ps[d] for d in acc.spatial_dims if d in SPATIAL_DIMS]
    if np.allclose(steps, steps[0], rtol=1e-6):
        size_text = f"{_length(steps[0])} ({', '.join(reversed(acc.spatial_dims))})"
    else:
        size_text = ", ".join(f"{d} {_length(ps[d])}" for d in acc.spatial_dims)
    if source:
        size_text += f" <span style='color:#666'>(from {_esc(source)})</span>"
    ext = acc.extent
    span = " × ".join(_length(ext[d][1] - ext[d][0]) for d in reversed(acc.spatial_dims))
    rows = [("size", _esc(dims)), ("pixel size", size_text),
            ("field of view", f"{_esc(span)} <span style='color:#666'>(x × y{' × z' if 'z' in ext else ''}; "
                              f"coordinates in {_esc(sorted(set(units.values()))[0])})</span>")]
    frame = acc.frame or acc.modality
    if frame or acc.modality:
        rows.append(("frame", _esc(f"{frame or '–'}" + (f" ({acc.modality} image)" if acc.modality else ""))))
    if "c" in img.dims:
        colors = img.attrs.get("colors") or {}
        chips = []
        for c in img.coords["c"].values:
            col = colors.get(str(c)) if isinstance(colors, dict) else None
            swatch = (f"<span style='display:inline-block;width:0.8em;height:0.8em;background:{_esc(col)};"
                      "border:1px solid #888;margin-right:3px'></span>") if col else ""
            chips.append(f"{swatch}{_esc(c)}")
        rows.append(("channels", ", ".join(chips)))
    tfs = _transforms_of(img)
    if tfs:
        rows.append(("maps to", ", ".join(f"{_esc(f)} ({_esc(d.get('type', 'transform') if isinstance(d, dict) else 'transform')})"
                                          for f, d in tfs.items())))
    data = img.data
    if hasattr(data, "chunksize") and hasattr(data, "npartitions"):
        store = (f"lazy (dask): {data.npartitions} chunks of {' × '.join(map(str, data.chunksize))}, "
                 f"{_nbytes(img.nbytes)} in total, {img.dtype}")
    else:
        store = f"in memory: {_nbytes(img.nbytes)}, {img.dtype}"
    rows.append(("data", _esc(store)))
    if img.attrs.get("instrument"):
        rows.append(("instrument", _esc(img.attrs["instrument"])))
    if img.attrs.get("source"):
        rows.append(("file", _esc(img.attrs["source"])))
    return _box(_esc(name), _rows(rows))


class ImageSummary:
    """What :func:`describe` returns: shows as HTML in a notebook, as text elsewhere."""

    def __init__(self, image):
        self.image = image

    def _repr_html_(self) -> str:
        return image_html(self.image)

    def __repr__(self) -> str:
        import re

        text = re.sub(r"<tr>", "\n", image_html(self.image))
        text = re.sub(r"</th>", ": ", text)
        text = re.sub(r"<[^>]+>", "", text)
        return html.unescape(text).strip()


def describe(image) -> ImageSummary:
    """A readable summary of a clemlab image (a DataArray's own display stays xarray's).

    Parameters
    ----------
    image : xarray.DataArray
        A clemlab image ``([c,] [z,] y, x)`` with coordinates in µm.

    Returns
    -------
    ImageSummary
        Shown in a notebook as a small table: size, pixel size with its unit and where it came
        from, field of view, frame, channels with their colours, transforms the image carries,
        storage (in memory or lazy dask chunks) and the file it was read from.

    Examples
    --------
    >>> import clemlab as cl
    >>> cl.describe(cl.synthetic_clem_small(seed=0).em)   # doctest: +SKIP
    """
    from .image import check_image

    check_image(image)
    return ImageSummary(image)


# -- registrations -------------------------------------------------------------------------------
def registration_verdict(reg) -> tuple[str, str]:
    """``(level, words)``: ``level`` is ``"good"``, ``"check"`` or ``"unchecked"``; ``words`` say
    why and what to do, in the terms of the summary (left-out error, localisation noise)."""
    loo = np.asarray(reg.loo_errors, float)
    flagged = [nm for nm, f in zip(reg.names, reg.outlier_flags) if f]
    if flagged:
        return "check", (f"pair(s) {', '.join(flagged)} disagree with the others beyond the noise model: "
                         "check those clicks or refit with robust=True")
    if not np.isfinite(loo).any():
        return "unchecked", ("too few pairs to leave any out, so nothing checks the fit: "
                             "add landmarks spread over the field")
    if reg.warnings:
        return "check", f"{len(reg.warnings)} warning(s) below need a look before you trust the result"
    return "good", ("every pair agrees with the others within the localisation noise when left out of the fit")


def _residual_png(reg) -> str | None:
    """A small PNG (base64) of the residual vectors at the target landmarks, magnified."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dst = reg.landmarks.dst()
    if dst.shape[1] < 2 or len(dst) == 0:
        return None
    vec = np.asarray(reg.residual_vectors, float)[:, :2]
    dst = dst[:, :2]
    fig = Figure(figsize=(2.6, 2.6), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.2, 0.17, 0.76, 0.72))
    spread = float(np.ptp(dst, axis=0).max()) or 1.0
    longest = float(np.linalg.norm(vec, axis=1).max())
    gain = 0.15 * spread / longest if longest > 0 else 1.0
    flags = np.asarray(reg.outlier_flags, bool)
    ax.plot(dst[:, 0], dst[:, 1], "o", mfc="none", mec="#1f77b4", ms=4)
    if longest > 0:
        ax.quiver(dst[:, 0], dst[:, 1], vec[:, 0] * gain, vec[:, 1] * gain, angles="xy", scale_units="xy",
                  scale=1, color=np.where(flags, "#d00000", "#ff8000"), width=0.012)
    pad = 0.12 * spread
    ax.set_xlim(dst[:, 0].min() - pad, dst[:, 0].max() + pad)
    ax.set_ylim(dst[:, 1].max() + pad, dst[:, 1].min() - pad)  # image convention: y down
    ax.set_aspect("equal", adjustable="box")
    ax.tick_params(labelsize=7)
    ax.set_xlabel(f"x ({reg.landmarks.target_frame}, µm)", fontsize=7)
    ax.set_ylabel("y (µm)", fontsize=7)
    ax.set_title(f"residuals ×{gain:.3g}", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


_LEVEL_COLOR = {"good": "#1a7f37", "check": "#b00000", "unchecked": "#9a6700"}


def registration_html(reg) -> str:
    """HTML summary of a registration: model, frames, residual and left-out RMS (nm), the verdict
    in words, warnings, a small residual plot and the per-pair table."""
    lms = reg.landmarks
    n = len(reg.residuals)
    loo = np.asarray(reg.loo_errors, float)
    level, words = registration_verdict(reg)
    rows = [("model", _esc(f"{reg.model} ({reg.n_params} parameters)")),
            ("frames", _esc(f"{lms.source_frame} → {lms.target_frame}")),
            ("landmarks in", _esc(getattr(lms, "units_text", "µm"))),
            ("pairs", _esc(f"{n} used" + (f", {len(lms) - n} inactive" if len(lms) > n else ""))),
            ("residual RMS", _esc(_length(reg.rms)))]
    if np.isfinite(loo).any():
        rows.append(("left-out RMS", _esc(f"{_length(float(np.sqrt(np.nanmean(loo ** 2))))} "
                                          f"(worst {_length(float(np.nanmax(loo)))})")))
    if np.isfinite(reg.fle):
        rows.append(("localisation error", _esc(f"{_length(reg.fle)} (from {reg.fle_source})")))
        rows.append(("predicted error at the landmarks",
                     _esc(f"{_length(float(np.mean(reg.predicted_error(lms.src()))))} mean")))
    rows.append(("verdict", f"<b style='color:{_LEVEL_COLOR[level]}'>{_esc(level)}</b>: {_esc(words)}"))
    warn = "".join(f"<li style='color:#b00000'>{_esc(w)}</li>" for w in reg.warnings)
    flags = np.asarray(reg.outlier_flags, bool)
    table_rows = list(zip(reg.names, reg.residuals, loo, flags))
    shown = table_rows[:MAX_ROWS]
    body = "".join(
        f"<tr style='{'color:#b00000' if f else ''}'><td style='{_TD}'>{_esc(nm)}</td>"
        f"<td style='{_TD}'>{r * 1e3:.1f}</td><td style='{_TD}'>{'–' if not np.isfinite(e) else f'{e * 1e3:.1f}'}</td>"
        f"<td style='{_TD}'>{'check' if f else ''}</td></tr>"
        for nm, r, e, f in shown)
    more = (f"<div style='color:#666'>… and {len(table_rows) - len(shown)} more pairs</div>"
            if len(table_rows) > len(shown) else "")
    pairs = (f"<table style='border-collapse:collapse;font-size:12px'><tr><th style='{_TH}'>pair</th>"
             f"<th style='{_TH}'>residual (nm)</th><th style='{_TH}'>left out (nm)</th><th style='{_TH}'></th></tr>"
             f"{body}</table>{more}")
    png = _residual_png(reg)
    plot = (f"<img alt='residual vectors' style='margin-left:12px' src='data:image/png;base64,{png}'/>"
            if png else "")
    head = f"<div style='display:flex;align-items:flex-start;flex-wrap:wrap'><div>{_rows(rows)}</div>{plot}</div>"
    warn_block = f"<ul style='margin:4px 0 4px 1.2em;padding:0'>{warn}</ul>" if warn else ""
    return _box("Registration", head + warn_block + pairs)


# -- landmarks -----------------------------------------------------------------------------------
def landmarks_html(lms) -> str:
    """HTML table of landmark pairs: name, used or not, source and target positions (µm) and the
    localisation uncertainties when given."""
    df = lms.to_dataframe()
    n, n_active = len(df), int(np.asarray(lms.active).sum()) if len(df) else 0
    axes = ["x", "y", "z"]
    src_cols = [f"{a}_src" for a in axes if f"{a}_src" in df.columns]
    dst_cols = [f"{a}_dst" for a in axes if f"{a}_dst" in df.columns]
    sig = [c for c in ("sigma_src", "sigma_dst") if c in df.columns]
    head_cells = (["pair", "used"] + [f"{lms.source_frame} {c[0]} (µm)" for c in src_cols]
                  + [f"{lms.target_frame} {c[0]} (µm)" for c in dst_cols]
                  + [f"σ {lms.source_frame if c == 'sigma_src' else lms.target_frame} (nm)" for c in sig])
    header = "".join(f"<th style='{_TH}'>{_esc(h)}</th>" for h in head_cells)
    body = []
    for r in df.head(MAX_ROWS).itertuples(index=False):
        d = r._asdict()
        cells = [_esc(d["name"]), "yes" if d["active"] else "no"]
        cells += [f"{d[c]:.3f}" for c in src_cols + dst_cols]
        cells += ["–" if not np.isfinite(d[c]) else f"{d[c] * 1e3:.0f}" for c in sig]
        style = "" if d["active"] else "color:#999"
        body.append(f"<tr style='{style}'>" + "".join(f"<td style='{_TD}'>{c}</td>" for c in cells) + "</tr>")
    more = (f"<div style='color:#666'>… and {n - MAX_ROWS} more pairs</div>" if n > MAX_ROWS else "")
    dims = f"{lms.ndim}-D" + (f" → {lms.ndim_dst}-D" if lms.ndim_dst != lms.ndim else "")
    sub = _esc(f"{n} pairs ({n_active} used), {dims}, {lms.source_frame} → {lms.target_frame}, "
               f"{getattr(lms, 'units_text', 'µm')}")
    table = (f"<table style='border-collapse:collapse;font-size:12px'><tr>{header}</tr>{''.join(body)}</table>"
             if n else "<div style='color:#666'>no pairs yet</div>")
    return _box(f"Landmarks <span style='font-weight:normal'>· {sub}</span>", table + more)


# -- montages ------------------------------------------------------------------------------------
def montage_html(m) -> str:
    """HTML summary of a SerialEM montage layout: file, pieces, tile size, pixel size, full size
    and which piece positions it carries."""
    ny, nx = m.tile_shape
    ps = float(m.pixel_size_um)
    rows = [("file", _esc(m.path.name)), ("kind", _esc(f"SerialEM .{m.kind}")),
            ("pieces", _esc(f"{len(m.piece_xy)} tiles of {nx} × {ny} px")),
            ("pixel size", _esc(_length(ps)))]
    full = getattr(m, "full_size", None)
    if full is not None:
        fx, fy = full
        rows.append(("montage size", _esc(f"{fx} × {fy} px ({_length(fx * ps)} × {_length(fy * ps)})")))
    else:
        span = np.ptp(m.piece_xy, axis=0) + (nx, ny)
        rows.append(("montage size", _esc(f"about {span[0]:.0f} × {span[1]:.0f} px")))
    frames = getattr(m, "frames", None)
    if frames is not None:
        rows.append(("grid", _esc(f"{frames[0]} × {frames[1]} frames")))
    aligned = getattr(m, "aligned_xy", None)
    rows.append(("positions", _esc("nominal and aligned (" + str(getattr(m, "aligned_key", "aligned")) + ")"
                                   if aligned is not None else "nominal only (PieceCoordinates)")))
    return _box("Montage", _rows(rows))

"""Fiducials without clicking: detection, sub-pixel localisation and automatic matching.

:func:`detect_fiducials` finds bright (fluorescent beads in LM) or dark (gold / dense beads
in EM) blobs by multi-scale Laplacian-of-Gaussian detection, then localises each one by
fitting a pixel-integrated Gaussian on a flat background: maximum likelihood under Poisson
noise for photon-counting data, least squares otherwise. Each position comes with its
Cramér-Rao uncertainty. Dask-backed images are searched chunk by chunk with a halo, so a
whole EM mosaic never has to fit in memory.

:func:`match_fiducials` pairs two detection tables (or point arrays) whose frames differ by
an unknown translation, rotation, scale and possibly a mirror, when each side has points
the other lacks: triangle invariants propose hypotheses, a consensus vote and an inlier
count verify them, and the best is refined on all its inliers.

Coordinates: points are ``(N, D)`` in µm, columns ``(x, y[, z])``; images are indexed
``(z, y, x)`` (design.md section 2).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from . import transforms as _tf
from ._localize import fit_gaussians, model_and_jacobian
from .errors import ImageError, LandmarkError, RegistrationError
from .image import check_image

__all__ = ["detect_fiducials", "match_fiducials", "FiducialMatch", "FLAGS"]

#: Quality flags of a detection, in order of precedence (the first that applies is reported).
FLAGS = ("edge", "saturated", "merged", "bad_fit", "ok")

#: LoG scale per apparent diameter: sigma = diameter / _D_PER_SIGMA (between the optimum for
#: a Gaussian spot given by its FWHM, 2.355, and for a uniform disc, 2 sqrt 2).
_D_PER_SIGMA = 2.6
#: Ratio between successive LoG scales.
_SCALE_STEP = 1.3
#: Half-size of the fit window in units of the LoG scale.
_WINDOW_SIGMAS = 3.0
#: Radius (pixels) of the box over which the local noise level is averaged.
_NOISE_RADIUS = 16


# ---------------------------------------------------------------------------------------
# argument checking
# ---------------------------------------------------------------------------------------
def _number(value: Any, name: str, positive: bool = True, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ImageError(f"{name} must be a finite number, got {value!r}")
    v = float(value)
    if positive and v <= 0:
        raise ImageError(f"{name} must be positive, got {value!r}")
    return v


def _spatial_view(image: Any) -> xr.DataArray:
    """Check ``image`` and return it without a channel axis (dims (y, x) or (z, y, x))."""
    if not isinstance(image, xr.DataArray):
        raise ImageError(
            f"image must be an xarray.DataArray with µm coords (build one with clemlab.as_image), "
            f"got {type(image).__name__}"
        )
    img = check_image(image, "image")
    if "c" in img.dims:
        if img.sizes["c"] != 1:
            raise ImageError(
                f"image has {img.sizes['c']} channels {list(img.c.values)}; pick the fiducial "
                "channel first, e.g. image.sel(c='beads')"
            )
        img = img.isel(c=0)
    if any(n == 0 for n in img.shape):
        raise ImageError(f"image is empty (shape {dict(img.sizes)}); nothing to detect")
    if not (np.issubdtype(img.dtype, np.number) and not np.issubdtype(img.dtype, np.complexfloating)):
        raise ImageError(f"image must hold real numbers, got dtype {img.dtype}")
    return img


def _diameter_range(diameter: Any, pixel: float) -> tuple[float, float]:
    if diameter is None:
        return 2.0 * pixel, 8.0 * pixel
    if isinstance(diameter, numbers.Real) and not isinstance(diameter, bool):
        d = _number(diameter, "diameter")
        return d / 1.3, d * 1.3
    try:
        lo, hi = (float(v) for v in diameter)
    except (TypeError, ValueError):
        raise ImageError(
            f"diameter must be a size in µm or a range (min, max) in µm, got {diameter!r}"
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise ImageError(f"diameter range must satisfy 0 < min <= max (µm), got {diameter!r}")
    return lo, hi


# ---------------------------------------------------------------------------------------
# the per-block detector (numpy in, table out); the same code serves numpy and dask images
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    ndim: int
    sign: float  # +1 bright, -1 dark
    scales: tuple  # per scale: tuple of per-axis sigma (pixels, array axis order)
    z_min: float
    min_snr: float
    min_contrast: float
    width_px: tuple  # (min, max) fitted width, pixels along the finest axis
    mode: str  # "mle" | "lsq"
    gain: float
    offset: float
    saturation: float | None
    groups: tuple
    halo: tuple  # per axis, pixels


def _noise_map(data: np.ndarray) -> np.ndarray:
    """Local standard deviation of white noise (same shape as ``data``): the mean absolute
    second difference along the last axis, averaged over a box, scaled to a std
    (``E|d| = sqrt(6 / pi) * std`` for Gaussian noise). float64 for reproducible sums."""
    d2 = np.zeros(data.shape, dtype=np.float64)
    d2[..., 1:-1] = np.abs(data[..., 2:] - 2.0 * data[..., 1:-1] + data[..., :-2])
    d2[..., 0] = d2[..., 1] if data.shape[-1] > 2 else 0.0
    d2[..., -1] = d2[..., -2] if data.shape[-1] > 2 else 0.0
    size = [2 * _NOISE_RADIUS + 1] * data.ndim
    if data.ndim == 3:
        size[0] = 3
    return ndi.uniform_filter(d2, size=size, mode="reflect") * math.sqrt(math.pi / 6.0)


def _neg_log(data: np.ndarray, sig: tuple) -> np.ndarray:
    """Minus the scale-normalised Laplacian of Gaussian, ``-mean(sig**2) * laplace(G_sig * data)``
    (Gaussian smoothing, then the 3-point second difference per axis; float32; bright blobs
    give positive peaks)."""
    g = ndi.gaussian_filter(data, sig, mode="reflect", truncate=4.0)
    out = np.zeros_like(g)
    for a in range(g.ndim):
        out -= ndi.correlate1d(g, np.array([1.0, -2.0, 1.0], dtype=g.dtype), axis=a, mode="reflect")
    out *= float(np.mean(np.square(sig)))
    return out


def _log_norm(sig: tuple) -> float:
    """L2 norm of the kernel of :func:`_neg_log` with per-axis sigmas ``sig`` (pixels)."""
    r = [int(4 * s + 0.5) + 1 for s in sig]
    delta = np.zeros([2 * q + 1 for q in r], dtype=np.float32)
    delta[tuple(r)] = 1.0
    k = _neg_log(delta, sig).astype(np.float64)
    return float(np.sqrt(np.sum(k * k)))


def _candidates(data: np.ndarray, plan: _Plan):
    """Scale-space maxima of the noise-normalised LoG: (positions (K, D) int, scale index,
    z score)."""
    noise = np.maximum(_noise_map(data), 1e-12).astype(np.float32)
    data32 = data.astype(np.float32)
    zs, zmins = [], []
    for sig in plan.scales:
        resp = _neg_log(data32, sig)
        knorm = _log_norm(sig)
        zs.append((resp / (noise * knorm)).astype(np.float32))
        # a Gaussian blob of width sig and peak height h gives a response of about h / 2:
        # ask for half the z-score of a blob at min_snr
        zmins.append(max(plan.z_min, 0.25 * plan.min_snr / knorm))
    stack = np.stack(zs)
    out_pos, out_scale, out_z = [], [], []
    for i, sig in enumerate(plan.scales):
        lo, hi = max(i - 1, 0), min(i + 2, len(plan.scales))
        zi = stack[i]
        size = [2 * max(1, int(round(s))) + 1 for s in sig]
        local = ndi.maximum_filter(zi, size=size, mode="nearest")
        across = stack[lo:hi].max(axis=0)
        peak = (zi >= local) & (zi >= across) & (zi > zmins[i])
        pos = np.argwhere(peak)
        out_pos.append(pos)
        out_scale.append(np.full(len(pos), i))
        out_z.append(zi[peak])
    pos = np.concatenate(out_pos) if out_pos else np.empty((0, data.ndim), int)
    scale = np.concatenate(out_scale) if out_scale else np.empty(0, int)
    z = np.concatenate(out_z) if out_z else np.empty(0)
    if len(pos) > 1:  # non-maximum suppression: drop a candidate near a stronger one
        order = np.lexsort((pos[:, -1], pos[:, 0], -z))  # strongest first, ties by position
        pos, scale, z = pos[order], scale[order], z[order]
        radius = 2.0 * np.array([max(plan.scales[s]) for s in scale]) + 1.0
        tree = cKDTree(pos)
        keep = np.ones(len(pos), bool)
        for i, j in sorted(tree.query_pairs(r=float(radius.max()))):
            if keep[i] and keep[j]:
                if np.linalg.norm(pos[i] - pos[j]) < max(radius[i], radius[j]):
                    keep[j] = False
        pos, scale, z = pos[keep], scale[keep], z[keep]
    return pos, scale, z, noise


def _detect_block(block: np.ndarray, start: tuple, core: tuple, full_shape: tuple,
                  plan: _Plan) -> pd.DataFrame:
    """Detect and fit in one block; keep detections whose peak pixel lies in ``core``.

    ``start``: global index of ``block[0, 0]``; ``core``: per axis (lo, hi) global indices.
    Returns positions in global pixel coordinates (array axis order)."""
    raw = np.asarray(block)
    data = raw.astype(np.float64)
    if plan.mode == "mle":
        data = (data - plan.offset) / plan.gain
    signed = plan.sign * data
    pos, scale, z, noise = _candidates(signed, plan)
    gpos = pos + np.asarray(start)
    inside = np.all((gpos >= [c[0] for c in core]) & (gpos < [c[1] for c in core]), axis=1)
    pos, scale, z, gpos = pos[inside], scale[inside], z[inside], gpos[inside]
    rows = []
    d = plan.ndim
    for si, sig in enumerate(plan.scales):
        sel = np.flatnonzero(scale == si)
        if sel.size == 0:
            continue
        # fit on b-binned pixels when the blob is large (binned width >= 2 px): the
        # pixel-integrated model is exact for binned pixels, and the fit is b**D times cheaper
        binf = np.array([max(1, int(s // 2)) for s in sig])
        half = np.array([int(math.ceil(_WINDOW_SIGMAS * s / b)) + 1 for s, b in zip(sig, binf)])
        wshape = tuple(2 * half + 1)
        full_half = half * binf + binf // 2  # full-resolution window: p - full_half ... + extent
        fshape = tuple(2 * half * binf + binf)
        p = pos[sel]
        n = len(p)
        grids = np.meshgrid(*[np.arange(m) - fh for m, fh in zip(fshape, full_half)], indexing="ij")
        idx = [p[:, a].reshape((-1,) + (1,) * d) + grids[a][None] for a in range(d)]
        valid_f = np.ones(idx[0].shape, bool)
        for a in range(d):
            valid_f &= (idx[a] >= 0) & (idx[a] < block.shape[a])
        clipped = [np.clip(idx[a], 0, block.shape[a] - 1) for a in range(d)]
        win_f = np.where(valid_f, signed[tuple(clipped)], 0.0)
        rawwin = raw[tuple(clipped)]
        bshape = [n]
        for m, b in zip(wshape, binf):
            bshape += [m, int(b)]
        red = tuple(range(2, 2 * d + 1, 2))
        cnt = valid_f.reshape(bshape).sum(axis=red)
        nb = int(np.prod(binf))
        valid = cnt == nb
        win = win_f.reshape(bshape).sum(axis=red)
        if plan.mode == "lsq":
            win = win / nb
        # start values
        flatw = np.where(valid, win, np.nan).reshape(n, -1)
        border = np.ones(wshape, bool)
        border[tuple(slice(1, -1) for _ in range(d))] = False
        bwin = np.where(valid & border[None], win, np.nan).reshape(n, -1)
        b0 = np.nanmedian(bwin, axis=1)
        b0 = np.where(np.isfinite(b0), b0, np.nanmin(flatw, axis=1))
        amp0 = np.maximum(np.nansum(flatw - b0[:, None], axis=1), 1e-3)
        ng = max(plan.groups) + 1
        s0 = np.empty((n, ng))
        for a in range(d):
            s0[:, plan.groups[a]] = sig[a] / binf[a]
        if plan.mode == "mle":
            b0 = np.maximum(b0, 1e-3)
        cb = half + (binf // 2 - (binf - 1) / 2) / binf  # candidate pixel in binned coords
        theta0 = np.c_[np.tile(cb, (n, 1)), amp0, b0, s0]
        fit = fit_gaussians(np.where(valid, win, 0.0), valid, theta0, plan.groups, plan.mode,
                            sigma_bounds=(0.3, 4.0 * max(sig) / binf.min()))
        tb = fit.params
        # back to full-resolution pixels
        th = tb.copy()
        th[:, :d] = tb[:, :d] * binf + (binf - 1) / 2
        for a in range(d):
            th[:, d + 2 + plan.groups[a]] = tb[:, d + 2 + plan.groups[a]] * binf[a]
        if plan.mode == "lsq":
            th[:, d] = tb[:, d] * nb
        else:
            th[:, d + 1] = tb[:, d + 1] / nb
        crlb = fit.crlb[:, :d] * binf
        ctr = th[:, :d] - full_half + p + np.asarray(start)  # global pixel coords
        amp = th[:, d]
        bg = th[:, d + 1]
        widths = th[:, d + 2:]
        peak = amp.copy()
        for a in range(d):
            peak = peak / (math.sqrt(2 * math.pi) * widths[:, plan.groups[a]])
        if plan.mode == "mle":
            noise_c = np.sqrt(np.maximum(bg, 1e-12))
        else:  # RMS residual at full resolution
            mu_f = model_and_jacobian(th, fshape, plan.groups, jacobian=False)
            r = np.where(valid_f, win_f - mu_f, 0.0).reshape(n, -1)
            noise_c = np.sqrt(np.sum(r * r, axis=1) / np.maximum(valid_f.reshape(n, -1).sum(axis=1), 1))
            noise_c = np.maximum(noise_c, 1e-12)
        snr = peak / noise_c
        level = plan.sign * bg  # background in image units (before sign flip)
        contrast = peak / np.maximum(np.abs(level), 1e-12)
        half = full_half
        win = win_f
        valid = valid_f
        fit.crlb = np.c_[crlb, fit.crlb[:, d:]]
        # flags
        moved = np.any(np.abs(th[:, :d] - half) > np.maximum(1.5, 1.5 * np.asarray(sig)), axis=1)
        # th[:, :d] is now window-local at full resolution
        wlo, whi = plan.width_px
        wxy = widths[:, plan.groups[-1]]
        keep = (snr >= plan.min_snr) & (contrast >= plan.min_contrast) & (wxy >= wlo) & (wxy <= whi)
        keep &= np.all(np.isfinite(fit.crlb[:, :d]), axis=1)
        edge = np.zeros(n, bool)
        for a in range(d):
            g0 = p[:, a] + start[a] - half[a]
            g1 = p[:, a] + start[a] + half[a]
            edge |= (g0 < 0) | (g1 >= full_shape[a])
        sat = np.zeros(n, bool)
        if plan.saturation is not None:
            r2 = sum(((grids[a] / max(sig[a], 1.0)) ** 2) for a in range(d)) <= 4.0
            sat = np.any((rawwin >= plan.saturation) & valid & r2[None], axis=tuple(range(1, d + 1)))
        merged = _elongation(win, valid, th, plan) > 1.35
        bad = ~fit.converged | moved | (fit.chi2 > 2.0)
        flag = np.where(edge, "edge", np.where(sat, "saturated", np.where(
            merged, "merged", np.where(bad, "bad_fit", "ok"))))
        for i in np.flatnonzero(keep):
            rows.append((ctr[i], fit.crlb[i, :d], amp[i], widths[i], level[i], snr[i],
                         contrast[i], flag[i], z[sel][i]))
    return rows


def _elongation(win, valid, th, plan) -> np.ndarray:
    """Axis ratio of the background-subtracted signal's second moments within 2.5 fitted
    widths of the fitted centre (1 for a round spot; > 1.35 suggests two merged spots)."""
    n = len(win)
    d = plan.ndim
    if d != 2 or n == 0:
        return np.ones(n)
    ky, kx = np.meshgrid(np.arange(win.shape[1]), np.arange(win.shape[2]), indexing="ij")
    dy = ky[None] - th[:, 0, None, None]
    dx = kx[None] - th[:, 1, None, None]
    w = th[:, d + 2, None, None]
    near = (dx * dx + dy * dy) <= (2.5 * w) ** 2
    sig = np.clip(win - th[:, d + 1, None, None], 0, None) * (near & valid)
    m = np.maximum(sig.sum(axis=(1, 2)), 1e-12)
    cxx = (sig * dx * dx).sum(axis=(1, 2)) / m
    cyy = (sig * dy * dy).sum(axis=(1, 2)) / m
    cxy = (sig * dx * dy).sum(axis=(1, 2)) / m
    tr = cxx + cyy
    disc = np.sqrt(np.maximum((cxx - cyy) ** 2 / 4 + cxy**2, 0))
    l1 = tr / 2 + disc
    l2 = np.maximum(tr / 2 - disc, 1e-12)
    return np.sqrt(l1 / l2)


# ---------------------------------------------------------------------------------------
# public: detection
# ---------------------------------------------------------------------------------------
def detect_fiducials(
    image: xr.DataArray,
    polarity: str = "bright",
    diameter: Any = None,
    min_snr: float = 5.0,
    *,
    gain: float | None = None,
    offset: float | None = None,
    method: str | None = None,
    min_contrast: float = 0.0,
    saturation: float | None = None,
) -> pd.DataFrame:
    """Find fiducial particles and localise them with sub-pixel precision.

    Multi-scale Laplacian-of-Gaussian detection (scale-space maxima of the LoG response
    divided by the local noise level), then a fit of a pixel-integrated Gaussian on a flat
    background in a window around every candidate.

    Parameters
    ----------
    image : xarray.DataArray, dims (y, x) or (z, y, x)
        A clemlab image (coords in µm); a ``c`` axis of length 1 is dropped (select the
        fiducial channel first, e.g. ``lm.sel(c="beads")``). numpy- or dask-backed: a dask
        image is processed chunk by chunk with an overlap (halo) wide enough that the result
        equals that of the numpy copy; only a few chunks are in memory at a time.
    polarity : {"bright", "dark"}
        ``"bright"`` for fluorescent beads (LM), ``"dark"`` for gold particles or dense beads
        (EM bright-field).
    diameter : float or (float, float), optional
        Apparent diameter of the fiducials in the image, µm: the physical diameter for
        resolved particles (EM), about the PSF FWHM (2.355 sigma) for sub-resolution beads
        (LM). A single value means ``(d / 1.3, d * 1.3)``. Default: 2 to 8 pixels.
        Blobs whose fitted Gaussian width lies outside ``[min / 5, max / 1.8]`` are rejected.
    min_snr : float
        Minimum signal-to-noise ratio: fitted peak height over the noise standard deviation
        (``sqrt(background)`` in photons for maximum likelihood; the fit's RMS residual for
        least squares, so texture counts as noise).
    gain, offset : float, optional
        Camera gain (ADU per photo-electron) and offset (ADU). When either is given the image
        is converted to photons, ``(ADU - offset) / gain`` (defaults 1 and 0), and fitted by
        maximum likelihood under Poisson noise.
    method : {"mle", "lsq"}, optional
        Force the estimator: ``"mle"`` (Poisson maximum likelihood; for photon counts; only
        with ``polarity="bright"``) or ``"lsq"`` (least squares). Default: ``"mle"`` when
        ``gain`` or ``offset`` is given, else ``"lsq"``.
    min_contrast : float
        Minimum fitted peak height relative to the local background level (dark
        particles: the fraction of the background absorbed at the centre, e.g. 0.5 keeps
        strongly absorbing gold/beads and rejects membranes and vesicles). Default 0.
    saturation : float, optional
        Pixel value at which the detector saturates (image units); default: the maximum of
        an integer dtype, none for floats.

    Returns
    -------
    pandas.DataFrame
        One row per fiducial, sorted by ``y`` then ``x``; columns

        - ``x``, ``y`` [, ``z``]: centre, µm (physical frame of ``image``);
        - ``sigma``: 1-sigma localisation uncertainty per axis, µm (root mean square of the
          per-axis Cramér-Rao bounds, below), ready for ``Landmarks.from_points(...,
          sigma_src=df.sigma)``; ``sigma_x``, ``sigma_y`` [, ``sigma_z``]: per axis;
        - ``amplitude``: integrated signal (photons for maximum likelihood, image units x
          pixels otherwise); for dark particles, the integrated absorbed intensity;
        - ``width``: fitted Gaussian standard deviation, µm (``width_z`` too for z-stacks);
        - ``background``: local background level per pixel (photons or image units);
        - ``snr``, ``contrast`` (see parameters) and ``score`` (LoG detection z-score);
        - ``flag``: ``"ok"``, or the first problem found: ``"edge"`` (fit window cut by the
          image border), ``"saturated"``, ``"merged"`` (elongated: probably two particles),
          ``"bad_fit"`` (not converged, moved away from the candidate, or a poor fit).

        ``df.attrs`` records the method, polarity and diameter range.

    Raises
    ------
    ImageError
        Not an image, several channels, empty, constant, NaN/inf values, bad arguments, or no
        fiducials found (the message suggests what to relax).

    Examples
    --------
    >>> import clemlab as cl
    >>> s = cl.datasets.synthetic_clem_small(seed=0)
    >>> beads = cl.detect_fiducials(s.lm.sel(c="beads"), diameter=(0.2, 0.5), gain=2, offset=100)
    >>> list(beads.columns[:3])
    ['x', 'y', 'sigma']
    """
    img = _spatial_view(image)
    if polarity not in ("bright", "dark"):
        raise ImageError(f"polarity must be 'bright' or 'dark', got {polarity!r}")
    min_snr = _number(min_snr, "min_snr", positive=False)
    min_contrast = _number(min_contrast, "min_contrast", positive=False)
    gain_v = _number(gain, "gain", allow_none=True)
    offset_v = _number(offset, "offset", positive=False, allow_none=True)
    if method is None:
        method = "mle" if (gain_v is not None or offset_v is not None) else "lsq"
    if method not in ("mle", "lsq"):
        raise ImageError(f"method must be 'mle', 'lsq' or None, got {method!r}")
    if method == "mle" and polarity == "dark":
        raise ImageError("method='mle' (photon counts) needs polarity='bright'; dark particles "
                         "are fitted by least squares (method='lsq', no gain/offset)")
    sdims = img.clem.spatial_dims
    px = img.clem.pixel_size
    psize = np.array([px[dd] for dd in sdims])  # array axis order
    finest = float(psize[-2:].min())
    dlo, dhi = _diameter_range(diameter, finest)
    if dhi / finest < 1.0:
        raise ImageError(
            f"diameter range {dlo:.3g}-{dhi:.3g} µm is below one pixel ({finest:.3g} µm); "
            "sub-pixel particles cannot be detected at this pixel size"
        )
    if img.shape[-1] < 3 or img.shape[-2] < 3:
        raise ImageError(f"image is too small to search ({dict(img.sizes)}); it needs at least 3 x 3 pixels")
    # LoG scales (physical sigma, converted per axis)
    s_lo = max(dlo / _D_PER_SIGMA, 0.7 * finest)
    s_hi = max(dhi / _D_PER_SIGMA, s_lo)
    n_sc = max(1, int(math.ceil(math.log(s_hi / s_lo) / math.log(_SCALE_STEP) - 1e-9)) + 1)
    phys = np.geomspace(s_lo, s_hi, n_sc) if n_sc > 1 else np.array([s_lo])
    scales = tuple(tuple(max(float(s / p), 0.7) for p in psize) for s in phys)
    ndim = len(sdims)
    groups = (0, 0) if ndim == 2 else (1, 0, 0)
    if saturation is None and polarity == "bright" and np.issubdtype(img.dtype, np.integer):
        saturation = float(np.iinfo(img.dtype).max)
    elif saturation is not None:
        saturation = _number(saturation, "saturation", positive=False)
    smax = max(max(s) for s in scales)
    halo = tuple(int(4 * max(s[a] for s in scales) + 0.5) + 1 + 2 * int(math.ceil(1.5 * smax + 1))
                 + max(_NOISE_RADIUS + 2, int(math.ceil(_WINDOW_SIGMAS * smax)) + 2)
                 for a in range(ndim))
    plan = _Plan(ndim=ndim, sign=1.0 if polarity == "bright" else -1.0, scales=scales,
                 z_min=max(3.0, 0.8 * min_snr), min_snr=min_snr, min_contrast=min_contrast,
                 width_px=(dlo / 5 / finest, dhi / 1.8 / finest), mode=method,
                 gain=1.0 if gain_v is None else gain_v, offset=0.0 if offset_v is None else offset_v,
                 saturation=saturation, groups=groups, halo=halo)
    rows = _run_blocks(img.data, plan)
    return _table(rows, img, plan, sdims, psize, (dlo, dhi), polarity)


def _check_values(block: np.ndarray) -> np.ndarray:
    """Per-block (min, max, any-non-finite) used to report constant / NaN images."""
    b = np.asarray(block, dtype=np.float64)
    fin = np.isfinite(b)
    if not fin.all():
        return np.array([np.nan, np.nan, 1.0])
    return np.array([b.min(), b.max(), 0.0])


def _block_task(block, start, core, full_shape, plan):
    stats = _check_values(block)
    if stats[2] or stats[0] == stats[1]:
        return stats, []
    return stats, _detect_block(block, start, core, full_shape, plan)


def _run_blocks(data, plan: _Plan):
    """Run the block detector on a numpy array (one block) or on every chunk of a dask
    array (explicit tasks reading chunk + halo), and combine."""
    full_shape = tuple(data.shape)
    try:
        import dask.array as da
    except ImportError:  # pragma: no cover - dask is a dependency
        da = None
    if da is not None and isinstance(data, da.Array):
        import dask

        bounds = [np.cumsum((0,) + tuple(c)) for c in data.chunks]
        tasks = []
        for index in np.ndindex(*[len(c) for c in data.chunks]):
            core = tuple((int(bounds[a][i]), int(bounds[a][i + 1])) for a, i in enumerate(index))
            ext = tuple((max(lo - plan.halo[a], 0), min(hi + plan.halo[a], full_shape[a]))
                        for a, (lo, hi) in enumerate(core))
            piece = data[tuple(slice(lo, hi) for lo, hi in ext)]
            tasks.append(dask.delayed(_block_task, pure=True)(
                piece, tuple(lo for lo, _ in ext), core, full_shape, plan))
        results = dask.compute(*tasks)
    else:
        arr = np.asarray(data)
        results = [_block_task(arr, (0,) * arr.ndim, tuple((0, n) for n in arr.shape), full_shape, plan)]
    stats = np.array([r[0] for r in results])
    if np.any(stats[:, 2]):
        raise ImageError("image contains NaN or infinite values; replace them (e.g. "
                         "image.fillna(image.median())) before detecting fiducials")
    if np.nanmin(stats[:, 0]) == np.nanmax(stats[:, 1]):
        raise ImageError("image is constant; there are no fiducials to detect (check the channel "
                         "and the contrast)")
    return [row for r in results for row in r[1]]


def _table(rows, img, plan, sdims, psize, drange, polarity) -> pd.DataFrame:
    ndim = plan.ndim
    axes = _tf.POINT_AXES[:ndim]
    if not rows:
        raise ImageError(
            f"no fiducials found (polarity={polarity!r}, diameter {drange[0]:.3g}-{drange[1]:.3g} µm, "
            f"min_snr={plan.min_snr:g}); try the other polarity, a diameter range matching the "
            "particles' apparent size, or a lower min_snr / min_contrast"
        )
    ctr = np.array([r[0] for r in rows])  # global pixel coords, array axis order
    crlb = np.array([r[1] for r in rows])
    xy_px = _tf.rc_to_xy(ctr)
    pts = img.clem.to_physical(xy_px)
    sig_axes = _tf.rc_to_xy(crlb * psize[None, :])  # µm, (x, y[, z]) order
    widths = np.array([r[3] for r in rows])
    finest = float(psize[-2:].min())
    df = pd.DataFrame({a: pts[:, k] for k, a in enumerate(axes)})
    df["sigma"] = np.sqrt(np.mean(sig_axes[:, :2] ** 2, axis=1))
    for k, a in enumerate(axes):
        df[f"sigma_{a}"] = sig_axes[:, k]
    df["amplitude"] = [r[2] for r in rows]
    df["width"] = widths[:, plan.groups[-1]] * finest
    if ndim == 3:
        df["width_z"] = widths[:, plan.groups[0]] * float(psize[0])
    df["background"] = [r[4] for r in rows]
    df["snr"] = [r[5] for r in rows]
    df["contrast"] = [r[6] for r in rows]
    df["score"] = [float(r[8]) for r in rows]
    df["flag"] = pd.Categorical([r[7] for r in rows], categories=list(FLAGS))
    df = df.sort_values([a for a in reversed(axes)], kind="stable").reset_index(drop=True)
    df.attrs.update({"method": plan.mode, "polarity": polarity,
                     "diameter_um": [float(drange[0]), float(drange[1])],
                     "frame": img.clem.frame})
    return df


# ---------------------------------------------------------------------------------------
# public: matching
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FiducialMatch:
    """Result of :func:`match_fiducials`.

    Attributes
    ----------
    landmarks : Landmarks
        The matched pairs only (inliers), source -> target, µm, with ``sigma_src`` /
        ``sigma_dst`` when the inputs were detection tables with a ``sigma`` column; pair
        names ``"F<src row>-<dst row>"``.
    registration : Registration
        ``register(landmarks, model=...)`` on those pairs.
    src_index, dst_index : numpy.ndarray of int, shape (K,)
        Row numbers (positions) of the pairs in ``src`` and ``dst``.
    src_inlier, dst_inlier : numpy.ndarray of bool
        Per input row: True when that point was matched.
    n_inliers : int
        K.
    mirrored : bool
        True when the match needed a reflection (``det < 0``).
    expected_by_chance : float
        Number of coincidental matches expected for random point sets of these densities.
    """

    landmarks: Any
    registration: Any
    src_index: np.ndarray
    dst_index: np.ndarray
    src_inlier: np.ndarray
    dst_inlier: np.ndarray
    n_inliers: int
    mirrored: bool
    expected_by_chance: float

    @property
    def transform(self):
        """The fitted transform (``registration.transform``)."""
        return self.registration.transform

    def __repr__(self) -> str:
        return (f"FiducialMatch({self.n_inliers} pairs of {len(self.src_inlier)} source / "
                f"{len(self.dst_inlier)} target points, {self.registration.model}, "
                f"RMS residual {self.registration.rms * 1e3:.1f} nm, mirrored={self.mirrored})")


def _points_and_sigma(obj: Any, name: str):
    """(N, D) points and optional (N,) sigma from a detection table or an array."""
    if isinstance(obj, pd.DataFrame):
        cols = [c for c in ("x", "y", "z") if c in obj.columns]
        if cols[:2] != ["x", "y"]:
            raise LandmarkError(f"{name}: a table needs columns 'x' and 'y' (µm), got {list(obj.columns)}")
        pts = obj[cols].to_numpy(dtype=np.float64)
        sig = obj["sigma"].to_numpy(dtype=np.float64) if "sigma" in obj.columns else None
    else:
        try:
            pts = np.asarray(obj, dtype=np.float64)
        except (TypeError, ValueError):
            raise LandmarkError(f"{name} must be an (N, 2) array of points in µm or a detection table") from None
        sig = None
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise LandmarkError(f"{name} must have shape (N, 2), columns (x, y) in µm, got {pts.shape} "
                            "(automatic matching is 2-D)")
    if not np.all(np.isfinite(pts)):
        raise LandmarkError(f"{name} contains NaN or infinite coordinates; drop those rows")
    return pts, sig


def _triangles(pts: np.ndarray, k: int):
    """Triangles of each point with pairs of its k nearest neighbours.

    Returns vertex indices (T, 3) ordered by increasing opposite side, invariants (T, 2)
    = (shortest / longest, middle / longest side) and orientation (+1/-1)."""
    n = len(pts)
    k = min(k, n - 1)
    _, nn = cKDTree(pts).query(pts, k + 1)
    nn = nn[:, 1:]
    a, b = np.triu_indices(k, 1)
    tri = np.c_[np.repeat(np.arange(n), len(a)), nn[:, a].ravel(), nn[:, b].ravel()]
    tri = np.unique(np.sort(tri, axis=1), axis=0)
    p = pts[tri]  # (T, 3, 2)
    opp = np.stack([np.linalg.norm(p[:, 1] - p[:, 2], axis=1), np.linalg.norm(p[:, 0] - p[:, 2], axis=1),
                    np.linalg.norm(p[:, 0] - p[:, 1], axis=1)], axis=1)
    order = np.argsort(opp, axis=1)
    tri = np.take_along_axis(tri, order, axis=1)
    s = np.take_along_axis(opp, order, axis=1)
    longest = np.maximum(s[:, 2], 1e-300)
    inv = np.c_[s[:, 0] / longest, s[:, 1] / longest]
    # side ordering must be stable under noise, and the triangle not degenerate
    good = ((s[:, 1] - s[:, 0]) > 0.03 * longest) & ((s[:, 2] - s[:, 1]) > 0.03 * longest) & (inv[:, 0] > 0.15)
    q = pts[tri[good]]
    cross = ((q[:, 1, 0] - q[:, 0, 0]) * (q[:, 2, 1] - q[:, 0, 1])
             - (q[:, 1, 1] - q[:, 0, 1]) * (q[:, 2, 0] - q[:, 0, 0]))
    return tri[good], inv[good], np.sign(cross)


def _similarity_c(zs, zd):
    """Least-squares complex similarity ``zd ~ a zs + b`` per row of (H, K) complex arrays."""
    ms, md = zs.mean(axis=1, keepdims=True), zd.mean(axis=1, keepdims=True)
    xs, xd = zs - ms, zd - md
    a = np.sum(xd * np.conj(xs), axis=1) / np.maximum(np.sum(np.abs(xs) ** 2, axis=1), 1e-300)
    b = md[:, 0] - a * ms[:, 0]
    return a, b


def _mutual_pairs(mapped, dst_tree, tol):
    """Mutual nearest neighbours closer than tol: (src idx, dst idx, distance)."""
    d, j = dst_tree.query(mapped, distance_upper_bound=tol)
    ok = np.isfinite(d)
    si, dj, dd = np.flatnonzero(ok), j[ok], d[ok]
    if si.size == 0:
        return si, dj, dd
    order = np.lexsort((dd, dj))  # for each dst keep the closest src
    si, dj, dd = si[order], dj[order], dd[order]
    first = np.r_[True, dj[1:] != dj[:-1]]
    return si[first], dj[first], dd[first]


def match_fiducials(
    src: Any,
    dst: Any,
    model: str = "similarity",
    allow_mirror: bool = True,
    scale_range: tuple[float, float] = (0.1, 10.0),
    *,
    tolerance: float | None = None,
    min_inliers: int = 5,
    neighbours: int = 8,
    descriptor_tolerance: float = 0.02,
    source_frame: str = "LM",
    target_frame: str = "EM",
) -> FiducialMatch:
    """Pair two sets of fiducials without knowing the transform between their frames.

    The frames may differ by any translation and rotation, a scale within ``scale_range``
    and (``allow_mirror``) a reflection; either side may have points the other lacks and
    positions carry localisation noise. Triangles formed by each point and pairs of its
    nearest neighbours are described by two similarity- and mirror-invariant side ratios;
    triangles with matching invariants propose similarity hypotheses, which vote in
    (mirror, scale, rotation) space. The best-supported hypotheses are verified by counting
    mutually nearest points within ``tolerance``; the winner is refined iteratively on its
    inliers (with ``model`` once enough pairs exist) and the final inliers are those within
    3.5 robust standard deviations of the fit.

    Parameters
    ----------
    src, dst : pandas.DataFrame or array_like, shape (N, 2) / (M, 2)
        Points in µm, columns ``(x, y)``, in their own frames; typically the tables of
        :func:`detect_fiducials` (their ``sigma`` column becomes the landmarks'
        uncertainties). Positions in the result refer to rows of these.
    model : {"similarity", "rigid", "affine"}
        Model of the final registration (hypotheses are always similarities).
    allow_mirror : bool
        Accept matches that need a reflection (LM images are often mirrored).
    scale_range : (float, float)
        Allowed scale of the ``src -> dst`` map relative to the µm coordinates of both
        (1 = nominal pixel sizes correct).
    tolerance : float, optional
        Distance (µm, in the ``dst`` frame) within which a mapped point counts as matched
        during verification. Default: 0.15 x the median nearest-neighbour distance in ``dst``.
    min_inliers : int
        Fewest pairs accepted as a match.
    neighbours : int
        Nearest neighbours per point used to form triangles.
    descriptor_tolerance : float
        How far two triangles' side ratios may differ and still propose a hypothesis; raise
        it (e.g. 0.05) when the frames differ by a noticeably non-similar (affine) map.
    source_frame, target_frame : str
        Frame names recorded in the landmarks.

    Returns
    -------
    FiducialMatch
        ``.landmarks`` (matched pairs only), ``.registration``, ``.src_inlier`` /
        ``.dst_inlier`` flags per input row, ``.n_inliers``.

    Raises
    ------
    RegistrationError
        "no consistent match: ..." when no transform maps at least ``min_inliers`` points
        onto partners clearly beyond chance, or when two different transforms explain the
        data equally well.
    LandmarkError
        Bad inputs (wrong shape, NaN, fewer than 3 points).

    Examples
    --------
    >>> import numpy as np, clemlab as cl
    >>> rng = np.random.default_rng(0)
    >>> a = rng.uniform(0, 50, (40, 2))
    >>> tf = cl.Similarity(scale=2.0, rotation=1.0, translation=(5, -3))
    >>> m = cl.match_fiducials(a, tf(a[5:])[::-1])
    >>> m.n_inliers, round(m.transform.scale, 3)
    (35, 2.0)
    """
    from .landmarks import Landmarks
    from .registration import register

    s_pts, s_sig = _points_and_sigma(src, "src")
    d_pts, d_sig = _points_and_sigma(dst, "dst")
    for name, pts in (("src", s_pts), ("dst", d_pts)):
        if len(pts) < 3:
            raise LandmarkError(f"{name} has {len(pts)} points; matching needs at least 3 on each side "
                                f"(and at least min_inliers={min_inliers} in common)")
    if model not in ("similarity", "rigid", "affine"):
        raise RegistrationError(f"model must be 'similarity', 'rigid' or 'affine', got {model!r}")
    try:
        smin, smax = (float(v) for v in scale_range)
    except (TypeError, ValueError):
        raise RegistrationError(f"scale_range must be (min, max), got {scale_range!r}") from None
    if not (0 < smin <= smax and math.isfinite(smax)):
        raise RegistrationError(f"scale_range must satisfy 0 < min <= max, got {scale_range!r}")
    if isinstance(min_inliers, bool) or not isinstance(min_inliers, numbers.Integral) or min_inliers < 3:
        raise RegistrationError(f"min_inliers must be an integer >= 3, got {min_inliers!r}")
    d_tree = cKDTree(d_pts)
    nn_d = float(np.median(d_tree.query(d_pts, 2)[0][:, 1]))
    tol = 0.15 * nn_d if tolerance is None else _number(tolerance, "tolerance")
    area = float(np.prod(np.ptp(d_pts, axis=0) + nn_d))
    fail = "no consistent match: "

    # -- hypotheses from triangle invariants --------------------------------------------
    ts, inv_s, or_s = _triangles(s_pts, neighbours)
    td, inv_d, or_d = _triangles(d_pts, neighbours)
    if len(ts) == 0 or len(td) == 0:
        raise RegistrationError(fail + "the points form no usable triangles (too few, or collinear)")
    pairs = cKDTree(inv_s).sparse_distance_matrix(cKDTree(inv_d), descriptor_tolerance,
                                                  output_type="ndarray")
    hs, hd = pairs["i"].astype(int), pairs["j"].astype(int)
    mirror = or_s[hs] != or_d[hd]
    if not allow_mirror:
        hs, hd, mirror = hs[~mirror], hd[~mirror], mirror[~mirror]
    zs_all = s_pts[:, 0] + 1j * s_pts[:, 1]
    zd_all = d_pts[:, 0] + 1j * d_pts[:, 1]
    zs = zs_all[ts[hs]]
    zs = np.where(mirror[:, None], np.conj(zs), zs)
    a, b = _similarity_c(zs, zd_all[td[hd]])
    scale = np.abs(a)
    ok = (scale >= smin) & (scale <= smax)
    a, b, mirror = a[ok], b[ok], mirror[ok]
    if len(a) == 0:
        raise RegistrationError(fail + f"no pair of similar triangles within scale_range={scale_range}; "
                                "check the point sets overlap and the scale range")
    # votes in (mirror, log scale, rotation): histogram bins, two grids offset by half a bin
    ls = np.log(np.abs(a)) / 0.05
    ang = (np.angle(a) + np.pi) / 0.05
    nang = int(math.ceil(2 * np.pi / 0.05))
    votes = np.zeros(len(a), np.int64)
    for off in (0.0, 0.5):
        key = ((np.floor(ls + off).astype(np.int64) + 10_000) * (nang + 1)
               + np.floor(ang + off).astype(np.int64) % nang) * 2 + mirror
        _, inv_k, counts = np.unique(key, return_inverse=True, return_counts=True)
        votes = np.maximum(votes, counts[inv_k])
    order = np.argsort(-votes, kind="stable")[:60]

    def apply(a_, b_, m_, pts):
        z = pts[:, 0] + 1j * pts[:, 1]
        z = np.conj(z) if m_ else z
        w = a_ * z + b_
        return np.c_[w.real, w.imag]

    # -- verification: inlier counts of the best-voted hypotheses ------------------------
    scored = []
    for h in order:
        si, dj, _ = _mutual_pairs(apply(a[h], b[h], mirror[h], s_pts), d_tree, tol)
        scored.append((len(si), h))
    scored.sort(key=lambda t: -t[0])
    best_n, best_h = scored[0]
    if best_n < 3:
        raise RegistrationError(fail + f"no transform maps 3 or more src points onto dst points "
                                f"(tolerance {tol:.3g} µm); too few common points?")

    # -- refinement on inliers -------------------------------------------------------------
    def refine(h):
        mapped = apply(a[h], b[h], mirror[h], s_pts)
        tf = None
        prev = None
        for _ in range(10):
            si, dj, _ = _mutual_pairs(mapped, d_tree, tol)
            key = (tuple(si), tuple(dj))
            if key == prev or len(si) < 3:
                break
            prev = key
            use_affine = model == "affine" and len(si) >= 6
            cls = _tf.Affine if use_affine else (_tf.Rigid if model == "rigid" else _tf.Similarity)
            opts = {} if use_affine else {"allow_reflection": bool(mirror[h])}
            est = cls.from_estimate(s_pts[si], d_pts[dj], **opts)
            if not est:
                break
            tf = est
            mapped = tf(s_pts)
        return tf, mapped

    tf, mapped = refine(best_h)
    if tf is None:
        raise RegistrationError(fail + "the best hypothesis could not be refined (degenerate inliers)")
    si, dj, dd = _mutual_pairs(mapped, d_tree, tol)
    # final gate: 3.5 robust standard deviations (2-D residual norms: median = 1.177 sigma)
    sig_r = float(np.median(dd)) / 1.1774 if len(dd) else 0.0
    gate = min(tol, max(3.5 * sig_r, 1e-9))
    keep = dd <= gate
    si, dj = si[keep], dj[keep]
    # ambiguity: a different transform with nearly as much support
    for n_alt, h in scored[1:]:
        if n_alt < max(0.8 * len(si), min_inliers):
            break
        alt = apply(a[h], b[h], mirror[h], s_pts[si])
        if np.median(np.linalg.norm(alt - d_pts[dj], axis=1)) > tol:
            raise RegistrationError(fail + f"two different transforms each match about {len(si)} points; "
                                    "the layout is ambiguous (regular grid?) - add points or restrict "
                                    "scale_range / allow_mirror")
    # significance: coincidences expected for random sets of these densities
    in_field = np.all((mapped >= d_pts.min(axis=0) - nn_d / 2) & (mapped <= d_pts.max(axis=0) + nn_d / 2),
                      axis=1).sum()
    expected = float(in_field) * math.pi * tol**2 * len(d_pts) / max(area, 1e-300)
    need = max(min_inliers, int(math.ceil(expected + 5 * math.sqrt(expected) + 3)))
    if len(si) < need:
        raise RegistrationError(fail + f"the best transform pairs only {len(si)} points (needs {need}; "
                                f"{expected:.1f} expected by chance); too few common points - detect more "
                                "fiducials, lower min_inliers or check the images overlap")
    order = np.argsort(si)
    si, dj = si[order], dj[order]
    names = [f"F{i}-{j}" for i, j in zip(si, dj)]
    lms = Landmarks.from_points(
        s_pts[si], d_pts[dj], names=names,
        sigma_src=None if s_sig is None else s_sig[si],
        sigma_dst=None if d_sig is None else d_sig[dj],
        source_frame=source_frame, target_frame=target_frame)
    is_mirror = bool(np.linalg.det(tf.linear) < 0)
    opts = {"allow_reflection": True} if (model != "affine" and is_mirror) else {}
    reg = register(lms, model=model, **opts)
    s_in = np.zeros(len(s_pts), bool)
    s_in[si] = True
    d_in = np.zeros(len(d_pts), bool)
    d_in[dj] = True
    return FiducialMatch(lms, reg, si, dj, s_in, d_in, int(len(si)), is_mirror, expected)

"""Targets: regions of interest found in LM, carried to the EM (and its stage) with their uncertainty.

The flow::

    t = targets_from_spots(lm, channel="GFP")          # or _from_points/_from_polygons/_from_mask
    m = map_targets(reg, t, em=em)                      # EM frame, error + 95 % ellipse per target
    plot_targets(m, em)                                 # ellipses drawn to scale over the EM image
    s = map_targets(reg, t, em=em, stage=em_to_stage)   # the same in stage µm
    clemlab.write_navigator(s, "targets.nav")           # for SerialEM

A target table is a :class:`pandas.DataFrame` with one row per target: ``name``, ``kind``
(``"point"``, ``"spot"``, ``"polygon"``, ``"region"``), ``x``, ``y`` [, ``z``] (µm, columns in
``(x, y[, z])`` order), ``sigma`` (1-sigma localisation uncertainty per axis, µm, NaN when
the position is exact, e.g. drawn by hand) and ``outline`` (an ``(M, 2)`` array of polygon
vertices, µm, or None). ``df.attrs["frame"]`` names its frame.

Uncertainty: a *measured* target (a detected spot, with ``sigma``) is itself off by its
localisation error; its predicted error adds that error, mapped into the EM frame, to the
registration's mapping error (``include_target_fle=True``). An *exact* target (a point you
chose, the centroid of a drawn polygon) carries the mapping error only. See
:meth:`clemlab.registration.Registration.map_points`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from . import transforms as _tf
from .errors import ImageError, RegistrationError, TransformError

__all__ = [
    "targets_from_points",
    "targets_from_polygons",
    "targets_from_mask",
    "targets_from_spots",
    "map_targets",
    "stage_transform",
    "plot_targets",
]

_BASE = ["name", "kind", "x", "y", "sigma", "outline"]


def _names(names: Any, n: int, prefix: str) -> list[str]:
    if names is None:
        return [f"{prefix}{i + 1}" for i in range(n)]
    out = [str(v) for v in names]
    if len(out) != n:
        raise ImageError(f"names has {len(out)} entries for {n} targets; give one name per target")
    if len(set(out)) != n:
        dup = sorted({v for v in out if out.count(v) > 1})
        raise ImageError(f"target names must be unique; {dup} repeat")
    return out


def _table(names, kind, pts, sigma, outlines, frame) -> pd.DataFrame:
    cols = ["x", "y", "z"][: pts.shape[1]]
    df = pd.DataFrame({"name": names, "kind": kind})
    for i, c in enumerate(cols):
        df[c] = pts[:, i]
    df["sigma"] = sigma
    df["outline"] = outlines
    df.attrs["frame"] = frame
    return df


def targets_from_points(points: Any, names: Any = None, *, sigma: Any = None, frame: str = "LM") -> pd.DataFrame:
    """Targets at given positions.

    Parameters
    ----------
    points : array_like, shape (N, 2) or (N, 3)
        Positions, µm, columns ``(x, y[, z])``.
    names : sequence of str, optional
        Default ``"T1", "T2", ...``.
    sigma : float or array_like (N,), optional
        Localisation uncertainty (1-sigma per axis, µm) if the points were measured; None
        for exactly known points.
    frame : str
        Frame the points are in.

    Returns
    -------
    pandas.DataFrame
        The target table (see the module docstring), ``kind = "point"``.
    """
    try:
        pts = _tf.as_points(points, argname="points")
    except TransformError as exc:
        raise ImageError(str(exc)) from None
    if not np.all(np.isfinite(pts)):
        raise ImageError("points contain NaN or infinite values; remove them")
    sig = np.full(len(pts), np.nan) if sigma is None else np.broadcast_to(np.asarray(sigma, float), (len(pts),)).copy()
    return _table(_names(names, len(pts), "T"), "point", pts, sig, [None] * len(pts), frame)


def _polygon_centroid(poly: np.ndarray) -> np.ndarray:
    """Area centroid of a simple polygon (shoelace); the vertex mean if it has no area."""
    x, y = poly[:, 0], poly[:, 1]
    xs, ys = np.roll(x, -1), np.roll(y, -1)
    cross = x * ys - xs * y
    area = cross.sum() / 2
    if abs(area) < 1e-12 * max(1.0, np.ptp(x) * np.ptp(y)):
        return poly.mean(axis=0)
    return np.array([((x + xs) * cross).sum(), ((y + ys) * cross).sum()]) / (6 * area)


def targets_from_polygons(polygons: Any, names: Any = None, *, frame: str = "LM") -> pd.DataFrame:
    """Targets from polygons (regions drawn on the LM image): centroid + outline.

    Parameters
    ----------
    polygons : sequence of array_like, each (M, 2)
        Vertices, µm, ``(x, y)``; at least 3 each. Closing (repeating the first vertex) is
        optional.
    names : sequence of str, optional
        Default ``"R1", "R2", ...``.

    Returns
    -------
    pandas.DataFrame
        ``kind = "polygon"``, ``x, y`` the area centroid, ``outline`` the vertices.
    """
    polys = []
    for i, p in enumerate(polygons):
        a = np.asarray(p, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != 2 or len(a) < 3 or not np.all(np.isfinite(a)):
            raise ImageError(f"polygon {i} must be an (M, 2) array of at least 3 finite (x, y) vertices in µm, "
                             f"got shape {a.shape}")
        if np.array_equal(a[0], a[-1]) and len(a) > 3:
            a = a[:-1]
        polys.append(a)
    if not polys:
        raise ImageError("polygons is empty; give at least one (M, 2) vertex array")
    cent = np.array([_polygon_centroid(p) for p in polys])
    return _table(_names(names, len(polys), "R"), "polygon", cent, np.full(len(polys), np.nan), polys, frame)


def targets_from_mask(mask: Any, names: Any = None, *, min_area: int = 1, prefix: str = "R") -> pd.DataFrame:
    """Targets from a label or boolean mask image: one per object, centroid + outline.

    Parameters
    ----------
    mask : xarray.DataArray, dims (y, x)
        A clemlab image (coords in µm) of integer labels (0 = background) or booleans (each
        connected component, 8-connectivity, becomes one object).
    names : sequence of str, optional
        Default ``prefix + label`` (``"R1"``...).
    min_area : int
        Objects with fewer pixels are ignored.
    prefix : str

    Returns
    -------
    pandas.DataFrame
        ``kind = "region"``; ``x, y`` the pixel centroid (µm), ``outline`` the object's outer
        boundary (µm, from :func:`skimage.measure.find_contours` at level 0.5), ``label``,
        ``area_um2``.

    Raises
    ------
    ImageError
        Not a 2-D image, not integer/boolean, or no object (of at least ``min_area`` pixels).
    """
    from scipy import ndimage as ndi
    from skimage.measure import find_contours

    from .image import check_image

    img = check_image(mask, "mask")
    if img.clem.ndim != 2 or "c" in img.dims:
        raise ImageError(f"mask must be a 2-D image (y, x), got dims {img.dims}; select one plane/channel")
    arr = np.asarray(img.values)
    if arr.dtype == bool:
        labels, _ = ndi.label(arr, structure=np.ones((3, 3), int))
    elif np.issubdtype(arr.dtype, np.integer):
        labels = arr
    else:
        raise ImageError(f"mask must hold integer labels or booleans, got dtype {arr.dtype}; "
                         "threshold it first, e.g. mask = image > level")
    ids = np.unique(labels)
    ids = ids[ids > 0]
    areas = ndi.sum_labels(np.ones_like(labels), labels, ids) if len(ids) else np.zeros(0)
    ids = ids[areas >= min_area]
    if len(ids) == 0:
        raise ImageError(
            f"mask has no objects (no non-zero pixels{'' if min_area <= 1 else f' in objects of >= {min_area} px'}); "
            "check the threshold/segmentation, or lower min_area"
        )
    cents_rc = np.array(ndi.center_of_mass(np.ones_like(labels, float), labels, ids), dtype=float).reshape(-1, 2)
    cents = img.clem.to_physical(_tf.rc_to_xy(cents_rc))
    outlines = []
    for k in ids:
        contours = find_contours(np.pad(labels == k, 1).astype(float), 0.5)
        longest = max(contours, key=len) - 1.0  # undo the padding
        outlines.append(img.clem.to_physical(_tf.rc_to_xy(longest)))
    px = img.clem.pixel_size
    nm = _names(names, len(ids), "") if names is not None else [f"{prefix}{int(k)}" for k in ids]
    df = _table(nm, "region", cents, np.full(len(ids), np.nan), outlines, img.attrs.get("frame", "LM"))
    df["label"] = ids.astype(int)
    df["area_um2"] = ndi.sum_labels(np.ones_like(labels), labels, ids) * px["x"] * px["y"]
    return df


def targets_from_spots(image: Any, channel: str | None = None, names: Any = None, *,
                       polarity: str = "bright", **detect_options: Any) -> pd.DataFrame:
    """Targets at the bright (or dark) spots of one channel: "find the GFP puncta".

    Runs :func:`clemlab.fiducials.detect_fiducials` and keeps the spots flagged ``"ok"``.

    Parameters
    ----------
    image : xarray.DataArray
        LM image, dims ``(c, y, x)`` or ``(y, x)``.
    channel : str, optional
        Channel name (required when the image has several channels).
    names : sequence of str, optional
        Default ``"S1", "S2", ...`` (in the detector's order: by y, then x).
    polarity : {"bright", "dark"}
    **detect_options
        ``diameter=``, ``min_snr=``, ``gain=``, ``offset=``, ... as for ``detect_fiducials``.

    Returns
    -------
    pandas.DataFrame
        ``kind = "spot"``, ``sigma`` the localisation uncertainty per axis (µm), plus the
        detector's ``amplitude``, ``snr``, ``width``.

    Raises
    ------
    ImageError
        Unknown channel, or no spot found (the detector's message says what to relax).
    """
    from .fiducials import detect_fiducials
    from .image import check_image

    img = check_image(image, "image")
    if "c" in img.dims:
        chans = [str(c) for c in img.coords["c"].values]
        if channel is None:
            if len(chans) != 1:
                raise ImageError(f"image has channels {chans}; choose one with channel=")
            channel = chans[0]
        if channel not in chans:
            raise ImageError(f"channel {channel!r} is not in the image; channels: {chans}")
        img = img.sel(c=channel)
    spots = detect_fiducials(img, polarity=polarity, **detect_options)
    spots = spots[spots["flag"] == "ok"].reset_index(drop=True)
    if spots.empty:
        raise ImageError(f"no well-fitted spots in channel {channel!r} (all flagged edge/saturated/merged/bad_fit); "
                         "relax min_snr= or check diameter=")
    cols = ["x", "y", "z"][: img.clem.ndim]
    df = _table(_names(names, len(spots), "S"), "spot", spots[cols].to_numpy(float), spots["sigma"].to_numpy(float),
                [None] * len(spots), img.attrs.get("frame", "LM"))
    for c in ("amplitude", "snr", "width"):
        df[c] = spots[c].to_numpy()
    return df


def stage_transform(em: Any, pixel_to_stage: _tf.Transform) -> _tf.Affine:
    """EM-frame (µm) -> stage (µm) transform, from an image and its pixel -> stage map.

    Parameters
    ----------
    em : xarray.DataArray
        The EM image (map) whose pixels ``pixel_to_stage`` refers to; its coords give the
        pixel <-> EM-frame relation (pixel size, origin).
    pixel_to_stage : Transform
        Pixel ``(x, y)`` = (column, row), integers at pixel centres -> stage µm, e.g.
        ``read_navigator(nav)[label].pixel_to_stage()`` (rows in MRC file order, as clemlab
        reads MRC files) or :func:`clemlab.io.serialem.mdoc_pixel_to_stage`.

    Returns
    -------
    clemlab.transforms.Affine
        ``source_frame`` = the image's frame, ``target_frame = "stage"``.
    """
    from .image import check_image

    img = check_image(em, "em")
    if not isinstance(pixel_to_stage, _tf.Transform) or pixel_to_stage.ndim != 2:
        raise TransformError("pixel_to_stage must be a 2-D clemlab Transform (pixels -> stage µm)")
    # three pixel positions and their physical positions fix the (exact) physical -> pixel map
    pix = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    to_pixel = _tf.Affine.from_estimate(img.clem.to_physical(pix), pix)
    tf = to_pixel.then(_tf.Affine(pixel_to_stage.matrix) if isinstance(pixel_to_stage, _tf.LinearTransform)
                       else pixel_to_stage)
    if not isinstance(tf, _tf.LinearTransform):
        raise TransformError("pixel_to_stage must be linear (affine) for stage targeting")
    return _tf.Affine(tf.matrix, source_frame=img.attrs.get("frame"), target_frame="stage")


def _check_targets(targets: Any) -> pd.DataFrame:
    if not isinstance(targets, pd.DataFrame):
        raise RegistrationError(
            f"targets must be a target table (DataFrame from targets_from_points/_polygons/_mask/_spots), "
            f"got {type(targets).__name__}"
        )
    missing = [c for c in ("name", "x", "y") if c not in targets.columns]
    if missing:
        raise RegistrationError(f"targets table lacks column(s) {missing}; build it with targets_from_points()")
    if targets.empty:
        raise RegistrationError("targets table is empty: nothing to map")
    return targets


def _check_target_frames(reg: Any, df: pd.DataFrame, em: Any, stage: Any) -> None:
    """Refuse targets, EM image or stage transform in frames other than the registration's
    (frameless ones pass), naming both frames and the fix."""
    from .image import frame_of, same_frame

    src, dst = reg.landmarks.source_frame, reg.landmarks.target_frame
    arrow = f"the registration maps frame {src!r} to {dst!r}"
    escape = "pass check_frames=False only if the frame names are wrong"
    have = frame_of(df)
    if not same_frame(have, src):
        hint = (f"they are in its target frame already; build the targets in {src!r} "
                f"(targets_from_points(..., frame={src!r}))") if same_frame(have, dst) else \
            f"give targets in frame {src!r}, or the registration of frame {have!r}"
        raise RegistrationError(f"map_targets: the targets are in frame {have!r} but {arrow}; {hint}; {escape}")
    if em is not None and not same_frame(frame_of(em), dst):
        raise RegistrationError(
            f"map_targets: em is in frame {frame_of(em)!r} but {arrow}; pass the image of frame "
            f"{dst!r} (the EM image the landmarks were clicked on) as em=; {escape}"
        )
    start = getattr(stage, "source_frame", None)
    if stage is not None and not same_frame(start, dst):
        raise RegistrationError(
            f"map_targets: the stage transform maps from frame {start!r} but {arrow}; build it "
            f"from the EM image of frame {dst!r} (stage_transform(em, ...)); {escape}"
        )


def map_targets(reg: Any, targets: pd.DataFrame, *, em: Any = None, stage: _tf.Transform | None = None,
                include_target_fle: bool | None = None, target_sigma: float | None = None,
                confidence: float = 0.95, check_frames: bool = True) -> pd.DataFrame:
    """Carry targets from the source (LM) frame into the EM frame, with predicted errors.

    Parameters
    ----------
    reg : Registration
        From :func:`clemlab.register` (source LM -> target EM).
    targets : pandas.DataFrame
        Target table in the registration's source frame (µm).
    em : xarray.DataArray, optional
        EM image: targets outside its field are flagged (``outside_field``), not dropped.
    stage : Transform, optional
        EM frame -> stage (e.g. :func:`stage_transform`): the result is then in stage µm,
        ellipses included (covariance mapped by the linear part), ready for
        :func:`clemlab.write_navigator`; the EM-frame position stays in ``em_x, em_y``.
    include_target_fle : bool, optional
        Add each target's own localisation error (its ``sigma``, or ``target_sigma``) to the
        mapping error. Default: for rows with a finite ``sigma`` (measured spots) only.
    target_sigma : float, optional
        Localisation uncertainty (1-sigma per axis, µm, source frame) to use instead of the
        per-row ``sigma``.
    confidence : float
        Probability content of the error ellipses (default 0.95).
    check_frames : bool
        Refuse a target table whose ``attrs["frame"]`` is not the registration's source
        frame, an ``em`` image whose ``frame`` is not its target frame, and a ``stage``
        transform that does not start in its target frame (default). Sides without a frame
        are not checked; ``False`` skips the check, for data whose frame names are wrong.

    Returns
    -------
    pandas.DataFrame
        One row per target: ``name, kind, x, y`` [, ``z``] (µm, EM frame or stage),
        ``error`` (predicted RMS error, µm), ``ellipse_major``, ``ellipse_minor`` (semi-axes
        of the ``confidence`` ellipse, µm), ``ellipse_angle`` (degrees, major axis from +x
        towards +y), ``outside_hull`` (extrapolated beyond the landmarks),
        ``outside_field`` (outside the EM image; False without ``em``), ``includes_target_fle``,
        ``x_src, y_src``, ``sigma``, ``outline`` (mapped), and the covariance ``cov_xx, cov_xy,
        cov_yy`` (µm²). ``attrs``: ``frame``, ``confidence``, ``model``.
    """
    from .registration import MappedPoints, Registration

    if not isinstance(reg, Registration):
        raise RegistrationError(f"reg must be a Registration (from clemlab.register), got {type(reg).__name__}")
    df = _check_targets(targets)
    if check_frames:
        _check_target_frames(reg, df, em, stage)
    if not 0 < confidence < 1:
        raise RegistrationError(f"confidence must be between 0 and 1, got {confidence!r}")
    d = reg.transform.ndim
    cols = ["x", "y", "z"][:d]
    if d == 3 and "z" not in df.columns:
        raise RegistrationError("the registration is 3-D but the targets have no z column")
    src = df[cols].to_numpy(np.float64)
    if not np.all(np.isfinite(src)):
        bad = df["name"][~np.all(np.isfinite(src), axis=1)].tolist()
        raise RegistrationError(f"targets {bad} have NaN/inf positions; remove them")
    sig = df["sigma"].to_numpy(float) if "sigma" in df.columns else np.full(len(df), np.nan)
    if target_sigma is not None:
        sig = np.full(len(df), float(target_sigma))
    use = np.isfinite(sig) if include_target_fle is None else np.full(len(df), bool(include_target_fle))
    pts = np.zeros((len(df), d))
    cov = np.zeros((len(df), d, d))
    hull = np.zeros(len(df), bool)
    groups: dict[tuple, list[int]] = {}
    for i in range(len(df)):
        key = (bool(use[i]), float(sig[i]) if use[i] and np.isfinite(sig[i]) else None)
        groups.setdefault(key, []).append(i)
    for (inc, s), idx in groups.items():
        mp = reg.map_points(src[idx], include_target_fle=inc, target_sigma=s)
        pts[idx], cov[idx], hull[idx] = np.asarray(mp), mp.covariance, mp.outside_hull
    em_pts = pts.copy()
    outlines = []
    for o in (df["outline"] if "outline" in df.columns else [None] * len(df)):
        outlines.append(None if o is None or (isinstance(o, float) and np.isnan(o)) else reg.transform(np.asarray(o, float)))
    outside = np.zeros(len(df), bool)
    if em is not None:
        from .image import check_image

        img = check_image(em, "em")
        ext = img.clem.extent
        for k, c in enumerate(cols):
            if c in ext:
                lo, hi = ext[c]
                outside |= (em_pts[:, k] < lo) | (em_pts[:, k] > hi)
    frame = reg.landmarks.target_frame
    if stage is not None:
        if not isinstance(stage, _tf.LinearTransform) or stage.ndim != d:
            raise TransformError(f"stage must be a {d}-D linear clemlab Transform (EM frame -> stage µm)")
        lin = stage.linear
        pts = stage(em_pts)
        cov = np.einsum("ij,njk,lk->nil", lin, cov, lin)
        outlines = [None if o is None else stage(o) for o in outlines]
        frame = stage.target_frame or "stage"
    mapped = MappedPoints(pts, np.sqrt(np.trace(cov, axis1=1, axis2=2)), cov, hull, dof=reg.noise_dof)
    axes, dirs = mapped.ellipses(confidence)
    out = pd.DataFrame({"name": df["name"].astype(str).to_numpy(),
                        "kind": df["kind"].to_numpy() if "kind" in df.columns else "point"})
    for k, c in enumerate(cols):
        out[c] = pts[:, k]
    out["error"] = mapped.error
    out["ellipse_major"] = axes[:, 0]
    out["ellipse_minor"] = axes[:, 1]
    out["ellipse_angle"] = np.degrees(np.arctan2(dirs[:, 1, 0], dirs[:, 0, 0])) % 180.0
    out["outside_hull"] = hull
    out["outside_field"] = outside
    out["includes_target_fle"] = use
    for k, c in enumerate(cols):
        out[f"{c}_src"] = src[:, k]
    if stage is not None:
        for k, c in enumerate(cols):
            out[f"em_{c}"] = em_pts[:, k]
    out["sigma"] = sig
    out["cov_xx"], out["cov_xy"], out["cov_yy"] = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
    out["outline"] = outlines
    out.attrs.update({"frame": frame, "confidence": confidence, "model": reg.model})
    return out


def plot_targets(mapped: pd.DataFrame, em: Any = None, ax: Any = None, *, labels: bool = True,
                 color: str = "yellow", outside_color: str = "red"):
    """Draw mapped targets over the EM image: centre, confidence ellipse to scale, outline, name.

    Parameters
    ----------
    mapped : pandas.DataFrame
        From :func:`map_targets` (EM frame).
    em : xarray.DataArray, optional
        EM image drawn underneath (grey, µm axes).
    ax : matplotlib Axes, optional
    labels : bool
        Write each target's name.
    color, outside_color : str
        Colour of targets inside / outside the EM field.

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse, Polygon

    df = _check_targets(mapped)
    if "ellipse_major" not in df.columns:
        raise RegistrationError("plot_targets() draws mapped targets: pass the table from map_targets()")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 6))
    if em is not None:
        from .image import check_image
        from .viz import _decimate, add_scale_bar, stretch

        img = check_image(em, "em")
        small = _decimate(img, 1000)
        # "antialiased" filters when the screen has fewer pixels than the image (no speckle
        # from dropped pixels) and shows pixels as blocks when zoomed in
        ax.imshow(stretch(np.asarray(small.values), 0.5, 99.5), cmap="gray", extent=img.clem.mpl_extent,
                  origin="upper", interpolation="antialiased")
        add_scale_bar(ax, img.clem.mpl_extent)
    for _, r in df.iterrows():
        col = outside_color if bool(r.get("outside_field", False)) else color
        ax.add_patch(Ellipse((r["x"], r["y"]), 2 * r["ellipse_major"], 2 * r["ellipse_minor"],
                             angle=r["ellipse_angle"], fill=False, edgecolor=col, linewidth=1.2))
        ax.plot(r["x"], r["y"], "+", color=col, markersize=8)
        o = r.get("outline")
        if o is not None and not (isinstance(o, float) and np.isnan(o)):
            ax.add_patch(Polygon(np.asarray(o)[:, :2], closed=True, fill=False, edgecolor=col, linestyle="--"))
        if labels:
            ax.annotate(str(r["name"]), (r["x"], r["y"]), xytext=(5, 5), textcoords="offset points",
                        color=col, fontsize=8)
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    conf = df.attrs.get("confidence", 0.95)
    ax.set_title(f"targets, {conf:.0%} error ellipses to scale")
    if em is None:
        ax.autoscale_view()
        ax.set_aspect("equal")
        if not ax.yaxis_inverted():
            ax.invert_yaxis()
    return ax

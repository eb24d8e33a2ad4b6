"""What lies under a point of a widget's image: outside checks, empty/masked regions, and the
LM image the image matchers (snap, refine from images) see.

A point is refused when it lies outside the image's extent, or when every pixel within
:data:`EMPTY_RADIUS_PX` of it is missing (NaN) or exactly zero in every channel: the fill of
a mosaic between tiles, of a warped image outside its source, or a masked region. There is
nothing there to confirm a landmark against.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = ["EMPTY_RADIUS_PX", "point_problem", "matching_image", "crop_around"]

#: Half-size (pixels of the finest level) of the neighbourhood checked for image content.
EMPTY_RADIUS_PX = 2


def point_problem(levels: list[xr.DataArray], xy, name: str) -> str | None:
    """None when ``xy`` (µm) lies on image content of ``levels[0]``, else the reason in words."""
    img = levels[0]
    ext = img.clem.extent
    x, y = float(xy[0]), float(xy[1])
    if not (ext["x"][0] <= x <= ext["x"][1] and ext["y"][0] <= y <= ext["y"][1]):
        return (f"it lies outside the {name} image (x {ext['x'][0]:.2f} to {ext['x'][1]:.2f} µm, "
                f"y {ext['y'][0]:.2f} to {ext['y'][1]:.2f} µm)")
    col, row = img.clem.to_pixel(np.array([[x, y]]))[0]
    r = int(np.clip(round(row), 0, img.sizes["y"] - 1))
    c = int(np.clip(round(col), 0, img.sizes["x"] - 1))
    k = EMPTY_RADIUS_PX
    patch = np.asarray(img.isel(y=slice(max(r - k, 0), r + k + 1), x=slice(max(c - k, 0), c + k + 1)).values,
                       dtype=np.float64)
    if np.all(np.isnan(patch)):
        return f"it lies on a masked region of the {name} image (no pixel values there)"
    if np.all(np.nan_to_num(patch) == 0):
        return (f"it lies on an empty region of the {name} image (every pixel around it is 0: "
                "outside the acquired tiles or masked)")
    return None


def crop_around(img: xr.DataArray, xy, half_um: float) -> xr.DataArray:
    """The part of ``img`` within ``half_um`` µm of ``xy`` (a view; lazy images stay lazy)."""
    x, y = float(xy[0]), float(xy[1])
    (c0, r0), (c1, r1) = img.clem.to_pixel(np.array([[x - half_um, y - half_um], [x + half_um, y + half_um]]))
    rs = sorted((int(np.floor(r0)), int(np.ceil(r1)) + 1))
    cs = sorted((int(np.floor(c0)), int(np.ceil(c1)) + 1))
    return img.isel(y=slice(max(rs[0], 0), max(rs[1], 0)), x=slice(max(cs[0], 0), max(cs[1], 0)))


def matching_image(lm: xr.DataArray, visible: dict) -> xr.DataArray:
    """The LM channels shown, each standardised (median 0, unit spread) and summed: ``(y, x)``.

    What the user sees is what the matchers compare with the EM (beads, nuclei or both).
    """
    shown = [c for c in lm.coords["c"].values if visible.get(str(c), True)]
    if not shown:
        shown = list(lm.coords["c"].values)
    sel = lm.sel(c=shown).astype(np.float32)
    med = sel.median(("y", "x"))
    spread = sel.std(("y", "x"))
    spread = spread.where(spread > 0, 1.0)
    out = ((sel - med) / spread).sum("c")
    return out.assign_attrs(lm.attrs).compute()

"""Modality-independent neighbourhood descriptors (MIND) of a 2-D map with a validity mask.

After Heinrich et al., "MIND: Modality independent neighbourhood descriptor for multi-modal
deformable registration", Medical Image Analysis 16 (2012) 1423-1435. At each pixel ``x`` and
for each offset ``o`` of the four-neighbourhood at distance ``radius`` (+x, -x, +y, -y), the
patch distance

    D(x, o) = G_sigma * (I - I(. + o))^2   evaluated at x

(a Gaussian-weighted sum of squared differences between the patch around ``x`` and the one
around ``x + o``) is turned into a similarity ``exp(-D(x, o) / V(x))``, where ``V(x)``, the mean
of ``D(x, o)`` over the offsets, estimates the local noise and contrast; each pixel's vector is
then divided by its largest entry. The descriptor says how a pixel's neighbourhood resembles
itself in each direction, not how bright it is, so a map and its contrast-inverted or
non-linearly remapped version give the same descriptor.

The offsets are fixed directions of the grid the map is on: descriptors of two images can only
be compared on one grid. Callers therefore compute them after bringing the fixed image onto
the moving image's grid (:func:`clemlab.imagereg.represent.describe`), not before a rotation.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _opencv

#: (dy, dx) directions of the four-neighbourhood, in the descriptor's channel order.
OFFSETS = ((0, 1), (0, -1), (1, 0), (-1, 0))
#: Distance of the neighbour patches, working pixels.
RADIUS = 1
#: Gaussian weight (sigma, working pixels) of the patch distance, for the global search and
#: for patch matching. Smaller in the search, because there the EM field is about 28 pixels
#: across and the descriptor's footprint (offset plus 2 sigma) is lost at every rotated
#: template's border; patch windows lie inside the field, where a wider patch averages out
#: more noise. Chosen on benchmark pairs (how often the true pose ranks first in the search;
#: how many verdicts are "good" after matching); the result is measured by the benchmark's
#: ``--representation mind`` rows (:mod:`clemlab.imagereg.represent`).
SIGMA = {"search": 0.5, "match": 1.0}
#: ``V`` is kept within this factor of its mean over the valid pixels. Below: in flat regions
#: ``D`` is noise alone, and dividing by it would turn noise into strong descriptors; floored,
#: a flat region's descriptor is near 1 in every direction (no structure). Above: one edge pixel
#: cannot dominate. A narrow range (3 rather than 1000) ranked the true pose first
#: more often on the same pairs, for the same reason as the floor.
V_RANGE = 3.0


def _shifted(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``out[y, x] = a[y + dy, x + dx]``, edge pixels repeated past the border."""
    r = max(abs(dy), abs(dx))
    p = np.pad(a, r, mode="edge")
    h, w = a.shape
    return p[r + dy:r + dy + h, r + dx:r + dx + w]


def mind(data: np.ndarray, mask: np.ndarray | None = None, radius: int | None = None,
         sigma: float | None = None, stage: str = "match") -> tuple[np.ndarray, np.ndarray]:
    """MIND descriptors of a map (see module notes).

    Parameters
    ----------
    data : numpy.ndarray, shape (H, W)
        The map (e.g. a standardised intensity map), rows then columns.
    mask : numpy.ndarray, shape (H, W), optional
        Validity (0/1) of ``data``; default all valid.
    radius : int, optional
        Neighbour offset, pixels (default :data:`RADIUS`).
    sigma : float, optional
        Gaussian patch weight, pixels (default ``SIGMA[stage]``).
    stage : {"search", "match"}
        What the descriptors are for, which sets the default ``sigma`` (see :data:`SIGMA`).

    Returns
    -------
    descriptors : numpy.ndarray, shape (4, H, W), float32
        One channel per offset in :data:`OFFSETS`, values in (0, 1], largest per pixel 1.
    mask : numpy.ndarray, shape (H, W), float32
        ``mask`` eroded by the descriptor's footprint (the offset plus 2 sigma): pixels whose
        patches reach an invalid pixel are invalid. The image border itself is not eroded
        (the map is extended by repeating its edge there).
    """
    cv2 = _opencv.load()
    radius = RADIUS if radius is None else int(radius)
    sigma = SIGMA[stage] if sigma is None else float(sigma)
    a = np.asarray(data, np.float32)
    valid = np.ones(a.shape, np.float32) if mask is None else (np.asarray(mask) > 0).astype(np.float32)
    dist = []
    for dy, dx in OFFSETS:
        sq = (a - _shifted(a, dy * radius, dx * radius)) ** 2
        dist.append(cv2.GaussianBlur(sq, (0, 0), sigma, borderType=cv2.BORDER_REFLECT))
    dist = np.stack(dist)
    v = dist.mean(axis=0)
    ref = float(v[valid > 0].mean()) if valid.any() else 0.0
    ref = ref if ref > 0 else 1.0
    v = np.clip(v, ref / V_RANGE, ref * V_RANGE)
    desc = np.exp(-dist / v)
    desc /= desc.max(axis=0, keepdims=True)
    reach = radius + int(math.ceil(2 * sigma))
    kernel = np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)
    # erosion treats outside the array as valid: only invalid pixels inside it spread
    eroded = cv2.erode(valid, kernel) if mask is not None else valid
    return desc.astype(np.float32), eroded.astype(np.float32)

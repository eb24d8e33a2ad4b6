"""Global search over rotation, scale, mirror and translation by masked NCC (FFT).

The fixed image's field (e.g. the EM) is resampled, for every (mirror, rotation, scale) on a
grid, onto the moving image's axes as a template; one masked NCC over all translations
(:class:`~clemlab.imagereg.ncc.MaskedSearch`) scores every position of it in the moving
image at once. Each grid node keeps its best translation; poses are then merged when they
put the fixed field in nearly the same place, and the best few distinct ones are returned,
best first, with the score distribution of all nodes (the null against which the best is
judged).

MIND descriptors (``kind="mind"``) are computed on the moving map once and on each resampled
template, so that both are described on the moving grid (their offsets are directions of that
grid); their channels are scored together by :class:`~clemlab.imagereg.ncc.MaskedSearch`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import _opencv
from .ncc import MaskedSearch
from .represent import Plane, describe


@dataclass
class Candidate:
    """A pose: ``matrix`` (3, 3) maps moving µm ``(x, y, 1)`` to fixed µm; ``score`` its NCC."""

    matrix: np.ndarray
    score: float
    mirror: bool
    angle: float  # degrees
    scale: float


def linear(angle_deg: float, scale: float, mirror: bool) -> np.ndarray:
    """(2, 2) linear part ``s R(angle) M`` (M flips x when mirrored)."""
    a = math.radians(angle_deg)
    lin = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return lin @ np.diag([-1.0, 1.0]) if mirror else lin


def warp_into(fixed: Plane, pixel_map: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``fixed`` on a grid of ``shape`` whose pixel ``(col, row, 1)`` maps by
    ``pixel_map`` (3, 3) to fixed pixels; returns the data and its validity mask (0/1)."""
    cv2 = _opencv.load()
    m = np.ascontiguousarray(pixel_map[:2], np.float64)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    data = cv2.warpAffine(fixed.data, m, (shape[1], shape[0]), flags=flags, borderMode=cv2.BORDER_CONSTANT)
    ones = np.ones(fixed.data.shape, np.float32)
    mask = cv2.warpAffine(ones, m, (shape[1], shape[0]), flags=flags, borderMode=cv2.BORDER_CONSTANT)
    return data, (mask > 0.999).astype(np.float32)


def corners(plane: Plane) -> np.ndarray:
    lo, hi = plane.extent()
    return np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])


def same_pose(m1: np.ndarray, m2: np.ndarray, fixed_corners: np.ndarray, tol: float) -> bool:
    """Whether two poses put the fixed field's corners within ``tol`` µm of each other in
    the moving frame."""
    h = np.c_[fixed_corners, np.ones(len(fixed_corners))]
    a = (np.linalg.inv(m1) @ h.T)[:2]
    b = (np.linalg.inv(m2) @ h.T)[:2]
    return float(np.max(np.hypot(*(a - b)))) < tol


def global_search(moving: Plane, fixed: Plane, angles, scales, mirrors, *, keep: int = 6,
                  centre=None, radius=None, min_overlap: float = 0.5, kind: str = "intensity",
                  signed: bool = True):
    """Score every grid pose; return (distinct candidates best first, all node scores).

    Parameters
    ----------
    moving, fixed : Plane
        Representations at about the same pixel size.
    angles, scales, mirrors : sequences
        Grid of rotations (degrees), scales and mirror flags of the linear part.
    keep : int
        Number of distinct candidates returned.
    centre, radius : optional
        Only translations that put the fixed field's centre within ``radius`` µm of the
        moving-frame point ``centre`` (x, y) are considered (a search seeded by clicks).
    min_overlap : float
        Least overlap, as a fraction of the template, for a translation to count.
    kind : str
        The representation ``moving`` and ``fixed`` are (:func:`~clemlab.imagereg.represent.describe`
        turns them into what is scored).
    signed : bool
        False: a translation scores ``|NCC|``, so a match with inverted contrast counts as
        much as a direct one (for a refinement whose score ignores the contrast sign, MI).
    """
    step = moving.step
    fc = corners(fixed)
    c_fix = fc.mean(axis=0)
    to_fix_px = fixed.pixel_from_point()
    poses = [(m, a, s) for m in mirrors for s in scales for a in angles]
    templates = []
    hmax = wmax = 0
    for m, a, s in poses:
        lin = linear(a, s, m)
        inv = np.linalg.inv(lin)
        u = (fc - c_fix) @ inv.T
        half = np.ceil(np.abs(u).max(axis=0) / step).astype(int)
        hc, wc = int(half[1]), int(half[0])
        shape = (2 * hc + 1, 2 * wc + 1)
        hmax, wmax = max(hmax, shape[0]), max(wmax, shape[1])
        templates.append((lin, hc, wc, shape))
    mv_values, mv_mask = describe(kind, moving.data, np.ones(moving.shape, np.float32), "search")
    search = MaskedSearch(mv_values, mv_mask, (hmax, wmax))
    to_mov_pt = moving.point_from_pixel()
    rows = np.arange(search.size[0])
    cols = np.arange(search.size[1])
    dy = np.where(rows < search.size[0] // 2, rows, rows - search.size[0])
    dx = np.where(cols < search.size[1] // 2, cols, cols - search.size[1])
    nodes = []
    for (m, a, s), (lin, hc, wc, shape) in zip(poses, templates):
        # template pixel (col, row) -> u = ((col - wc) step, (row - hc) step) -> fixed lin u + c_fix
        tpl = np.eye(3)
        tpl[:2, :2] = lin * step
        tpl[:2, 2] = c_fix - lin @ np.array([wc * step, hc * step])
        data, mask = describe(kind, *warp_into(fixed, to_fix_px @ tpl, shape), "search")
        if mask.sum() < 16:
            continue
        c, _ = search.ncc(data, mask, min_overlap * float(mask.sum()))
        if not signed:
            c = np.where(c > -1.0, np.abs(c), -1.0)  # -1 marks shifts with too little overlap
        if centre is not None:
            # moving-frame position of the template centre for each shift
            px = moving.x0 + (dx + wc) * step
            py = moving.y0 + (dy + hc) * step
            far = (py[:, None] - centre[1]) ** 2 + (px[None, :] - centre[0]) ** 2 > radius ** 2
            c = np.where(far, -1.0, c)
        k = np.unravel_index(int(np.argmax(c)), c.shape)
        p0 = to_mov_pt @ np.array([dx[k[1]] + wc, dy[k[0]] + hc, 1.0])
        mat = np.eye(3)
        mat[:2, :2] = lin
        mat[:2, 2] = c_fix - lin @ p0[:2]
        nodes.append(Candidate(mat, float(c[k]), bool(m), float(a), float(s)))
    nodes.sort(key=lambda n: -n.score)
    size = float(np.max(fc.max(axis=0) - fc.min(axis=0)))
    distinct: list[Candidate] = []
    for n in nodes:
        if not any(same_pose(n.matrix, d.matrix, fc, 0.15 * size) for d in distinct):
            distinct.append(n)
            if len(distinct) == keep:
                break
    return distinct, np.array([n.score for n in nodes])

"""``register_images``: LM <-> EM registration from the image content, with a verdict.

Pipeline (each step in its own module):

1. :mod:`~clemlab.imagereg.represent`: both images as standardised density maps at a
   common pixel size (EM inverted, so dense chromatin is bright on both sides), compared as
   they are, as gradients, as MIND descriptors or by mutual information (``representation``).
2. :mod:`~clemlab.imagereg.search`: masked NCC over a grid of rotations (full circle, or
   around a given start), scales (around the pixel-size ratio) and both mirror branches, all
   translations at once by FFT, at a coarse pixel size (the fixed field ~28 pixels across);
   the best few distinct poses are kept.
3. :mod:`~clemlab.imagereg.refine`: for each kept pose (with ``representation="mi"`` first
   moved to the MI maximum, :func:`~clemlab.imagereg.mi.optimise_pose`), local patches are
   matched at twice the coarse resolution and robustly fitted; the best pose (most
   consistent patches) is refined level by level down to the coarser of the two pixel
   sizes; the last level's patch matches, each with its own uncertainty, are the landmarks.
4. :func:`clemlab.register` fits the requested model to those landmarks with ``robust=True``,
   so residuals, left-out errors and the predicted error map mean what they mean for
   fiducials.
5. The verdict: ``"good"`` only when the pose is distinct (the runner-up pose explains
   clearly fewer patches) and consistent (most textured patches agree with the model);
   ``"failed"`` when too few patches agree with any pose; ``"ambiguous"`` in between. The
   reasons are given in words with what to do.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import transforms as _tf
from ..errors import RegistrationError
from ..landmarks import Landmarks
from .refine import fit_sigma, match_patches, robust_fit
from .mi import optimise_pose
from .represent import check_kind, plane_of, represent
from .search import corners, global_search, same_pose

#: Fewest consistent patch matches for any verdict but "failed".
MIN_INLIERS = 6
#: Fraction of textured patches that must agree with the model for "good".
GOOD_FRACTION = 0.5
#: Below this fraction of agreeing patches the verdict is "failed".
FAIL_FRACTION = 0.25
#: The runner-up pose must explain at most this fraction of the best pose's patch evidence
#: for the best to count as distinct.
DISTINCT_RATIO = 0.6
#: Most pixels across the field at the finest refinement level.
FINEST_PIXELS = 200
#: Pixels across the fixed field at the coarse search level.
COARSE_PIXELS = 28


@dataclass
class ImageMatch:
    """Result of :func:`register_images`.

    Attributes
    ----------
    registration : clemlab.Registration or None
        The model fitted to the patch correspondences (None when the verdict is "failed"
        and no model could be fitted).
    landmarks : clemlab.Landmarks
        Patch correspondences, moving -> fixed, µm; pairs inconsistent with the pose are
        inactive. ``sigma_dst`` (1-sigma per axis, µm, fixed frame) is each match's own
        uncertainty from its NCC peak (``details["match_sigma_um"]``), widened for the
        correlation with its overlapping neighbours, so that the fit's predicted error counts
        the effective number of independent matches.
    initial : None, Transform or Landmarks
        What the search started from (as given).
    start : clemlab.transforms.Similarity or None
        The coarse pose the refinement started from.
    confidence : float
        0..1: the fraction of textured patches that agree with the model, times how clearly
        the best pose beats the runner-up.
    verdict : str
        ``"good"``, ``"ambiguous"`` or ``"failed"``.
    reasons : list of str
        Why, in words, and what to do.
    candidates : list of dict
        The distinct poses examined (angle, scale, mirror, coarse NCC, patch evidence).
    details : dict
        Figures behind the verdict (inliers, textured patches, runner-up ratio, times).
    """

    registration: Any
    landmarks: Landmarks
    initial: Any
    start: Any
    confidence: float
    verdict: str
    reasons: list = field(default_factory=list)
    candidates: list = field(default_factory=list)
    details: dict = field(default_factory=dict)

    @property
    def transform(self):
        """The fitted transform (moving -> fixed), or None."""
        return None if self.registration is None else self.registration.transform

    @property
    def why(self) -> str:
        return " ".join(self.reasons)

    def __repr__(self) -> str:
        return f"ImageMatch(verdict={self.verdict!r}, confidence={self.confidence:.2f}: {self.why})"


def _default_invert(moving, fixed) -> bool:
    a, b = moving.attrs.get("modality"), fixed.attrs.get("modality")
    if a and b:
        return str(a).upper() != str(b).upper()
    return True


def _field_size(plane) -> float:
    lo, hi = plane.extent()
    return float(np.min(hi - lo))


def _pose_params(matrix: np.ndarray) -> tuple[float, float, bool]:
    lin = matrix[:2, :2]
    mirror = bool(np.linalg.det(lin) < 0)
    m = lin @ np.diag([-1.0, 1.0]) if mirror else lin
    s = float(np.sqrt(abs(np.linalg.det(lin))))
    return math.degrees(math.atan2(m[1, 0], m[0, 0])) % 360, s, mirror


def _grid(lo: float, hi: float, step: float) -> np.ndarray:
    n = max(int(math.ceil((hi - lo) / step)) + 1, 1)
    return np.linspace(lo, hi, n) if n > 1 else np.array([(lo + hi) / 2])


def _seeded_grids(initial, coarse, fixed_field):
    """(angles, scales, mirrors, centre, radius) around a start given as a transform or clicks."""
    if isinstance(initial, Landmarks):
        src, dst = initial.src(), initial.dst()
        if len(src) < 2 or src.shape[1] != 2:
            raise RegistrationError("initial clicks need at least two 2-D pairs (moving, fixed), "
                                    f"got {len(src)}")
        z, w = src[:, 0] + 1j * src[:, 1], dst[:, 0] + 1j * dst[:, 1]
        baseline = float(np.max(np.abs(z[:, None] - z[None, :])))  # longest click separation
        starts = []
        for mirror in (False, True):
            zz = np.conj(z) if mirror else z
            a = np.sum((w - w.mean()) * np.conj(zz - zz.mean())) / np.sum(np.abs(zz - zz.mean()) ** 2)
            b = w.mean() - a * zz.mean()
            mat = np.eye(3)
            lin = np.array([[a.real, -a.imag], [a.imag, a.real]])
            mat[:2, :2] = lin @ np.diag([1.0, -1.0]) if mirror else lin  # a conj(z) flips y
            mat[:2, 2] = [b.real, b.imag]
            starts.append(mat)
        if len(src) >= 3:  # three or more clicks tell the mirror branch: keep the better fit
            res = [np.sum(np.abs((m[:2, :2] @ src.T).T + m[:2, 2] - dst) ** 2) for m in starts]
            starts = [starts[int(np.argmin(res))]]
        # rough clicks are ~1 µm off on each side: the pair's direction and length are then
        # off by up to ~2 x 1.5 µm over the separation
        click_err = 2.0
        d_angle = math.degrees(2 * click_err / max(baseline, 1e-6))
        d_scale = 2 * click_err / max(baseline, 1e-6)
    else:
        m = np.asarray(initial.matrix if hasattr(initial, "matrix") else initial, float)
        if m.shape != (3, 3):
            raise RegistrationError("initial must be a 2-D linear transform (3 x 3 matrix), "
                                    "or Landmarks with rough clicks")
        starts = [m]
        d_angle, d_scale = 6.0, 0.08
    d_angle = min(max(d_angle, 4.0), 180.0)  # clicks close together: any rotation
    d_scale = min(max(d_scale, 0.04), 0.25)
    return starts, d_angle, d_scale


def register_images(moving, fixed, model: str = "similarity", initial: Any = None, *,
                    channel=None, fixed_channel=None, scale_range: tuple[float, float] = (0.8, 1.25),
                    mirror: bool | None = None, invert: bool | None = None,
                    representation: str = "intensity", keep: int = 4, seed: int = 0) -> ImageMatch:
    """Register ``moving`` onto ``fixed`` (e.g. LM onto EM) from the image content.

    Parameters
    ----------
    moving, fixed : xarray.DataArray
        2-D clemlab images (dims ``(y, x)`` or ``(c, y, x)`` with ``channel``), coords in µm.
        Their pixel sizes set the nominal scale (1 µm = 1 µm); the true scale is searched
        within ``scale_range`` of it.
    model : str
        Model fitted to the patch correspondences by :func:`clemlab.register`
        (``"translation"``, ``"rigid"``, ``"similarity"``, ``"affine"``, ``"tps"``, ...). The
        search itself is over similarities (with mirror).
    initial : None, Transform or Landmarks, optional
        None: full search (rotation over the full circle, scales in ``scale_range``, both
        mirror branches, all translations). A linear transform (moving -> fixed): search
        near it. Landmarks (moving -> fixed, µm): rough clicks, two or more; with two, both
        mirror branches are tried.
    channel, fixed_channel : str or int, optional
        Channel of a multi-channel image (e.g. the nuclear stain).
    scale_range : (float, float)
        Range of the true scale relative to the pixel sizes, for the full search.
    mirror : bool, optional
        Restrict the search to one mirror branch (default: both).
    invert : bool, optional
        Invert the fixed image's intensities (default: when the two modalities differ, as
        chromatin is bright in fluorescence and dark in EM).
    representation : {"intensity", "gradient", "mind", "mi"}
        What both images are compared as; :mod:`clemlab.imagereg.represent` has the measured
        figures behind each choice and the command that reproduces them.

        - ``"intensity"`` (default): standardised density maps, EM inverted, by masked NCC;
          as accurate as any and the fastest, but it needs the contrast relation
          (``invert``) right (without it, pairs are refused).
        - ``"gradient"``: sign-free edge strength; measured below ``"mind"`` and ``"mi"``.
        - ``"mind"``: MIND self-similarity descriptors compared on the moving grid, for
          pairs whose intensities are related by no single function (contrast sign and
          non-linear remapping do not matter); about twice the time and error.
        - ``"mi"``: the search uses ``"intensity"`` scored by ``|NCC|`` (MI cannot be scored
          over all translations at once by FFT); each kept pose is then moved to the maximum
          of mutual information over the similarity's parameters and its patches are
          matched by MI; for an unknown contrast relation when the coarse density still
          correlates up to sign; as accurate as ``"intensity"``, two to four times its time.

        The verdict reads the patch matches the same way for every representation.
    keep : int
        Distinct coarse poses refined before choosing.
    seed : int
        Seed of the robust fits (results are deterministic).

    Returns
    -------
    ImageMatch
        ``.registration``, ``.landmarks``, ``.verdict`` (good / ambiguous / failed) with
        ``.reasons``; never raises for a pair that does not match: the verdict says so.

    Raises
    ------
    ImageError
        For images that cannot be compared (3-D, non-square pixels, channels not chosen).
    RegistrationError
        For an unusable ``initial``.
    """
    from ..registration import register

    t0 = time.perf_counter()
    check_kind(representation)
    if isinstance(initial, Landmarks):
        initial.check_units(moving, fixed, "register_images(initial=...)")
    mv_full, fx_full = plane_of(moving, channel), plane_of(fixed, fixed_channel)
    inv = _default_invert(moving, fixed) if invert is None else bool(invert)
    field_size = min(_field_size(fx_full), _field_size(mv_full))
    # the finest level: the coarser pixel size, but no finer than FINEST_PIXELS across the
    # field (finer maps add shot noise and stain detail the other modality lacks)
    finest = max(mv_full.step, fx_full.step, field_size / FINEST_PIXELS)
    coarse = max(finest, field_size / COARSE_PIXELS)
    # MI is not scored over all translations at once: its candidates come from intensity NCC,
    # by its absolute value, since MI ignores the sign of the contrast relation
    searched = "intensity" if representation == "mi" else representation
    signed = representation != "mi"
    mv_c = represent(mv_full, coarse, searched, False)
    fx_c = represent(fx_full, coarse, searched, inv)
    mirrors = (False, True) if mirror is None else (bool(mirror),)
    if initial is None:
        angle_step = math.degrees(1.4 / (COARSE_PIXELS / 2))
        angles = np.arange(0.0, 360.0, angle_step)
        lo, hi = np.log(scale_range[0]), np.log(scale_range[1])
        scales = np.exp(_grid(lo, hi, 1.4 / (COARSE_PIXELS / 2)))
        cands, scores = global_search(mv_c, fx_c, angles, scales, mirrors, keep=keep, kind=searched,
                                      signed=signed)
    else:
        starts, d_angle, d_scale = _seeded_grids(initial, coarse, field_size)
        cands, scores = [], []
        for m in starts:
            a0, s0, mir = _pose_params(m)
            if mirror is not None and mir != bool(mirror):
                continue
            angles = a0 + _grid(-d_angle, d_angle, 3.0)
            scales = s0 * np.exp(_grid(-d_scale, d_scale, 0.05))
            centre = (np.linalg.inv(m) @ np.r_[corners(fx_c).mean(axis=0), 1.0])[:2]
            c, sc = global_search(mv_c, fx_c, angles, scales, (mir,), keep=keep,
                                  centre=centre, radius=max(6.0, 3 * coarse), kind=searched, signed=signed)
            cands += c
            scores = np.r_[scores, sc]
        cands.sort(key=lambda c: -c.score)
        cands = cands[:keep]
    t_search = time.perf_counter() - t0

    # --- refine each kept pose at the first level; the most consistent one goes on ----------
    levels = []
    step = coarse / 2
    while step > finest * 1.01:
        levels.append(step)
        step /= 2
    levels.append(finest)
    patch_um = field_size / 5
    reps = {}

    def rep(step):
        if step not in reps:
            reps[step] = (represent(mv_full, step, representation, False), represent(fx_full, step, representation, inv))
        return reps[step]

    def refine_at(step, matrix, mir, radius):
        mv, fx = rep(step)
        if representation == "mi":
            matrix = optimise_pose(mv, fx, matrix)
        m = match_patches(mv, fx, matrix, patch_um, radius, kind=representation)
        new, inl = robust_fit(m, mir, tol=1.0 * step, seed=seed)
        return new, inl, m

    def chain(matrix, mir):
        """Refine through the finer levels, then once more at the finest: (matrix, inl, matches)."""
        inl = m = None
        for step in levels[1:] + levels[-1:]:
            new, inl, m = refine_at(step, matrix, mir, 3)
            if new is None:
                return None, inl, m
            matrix = new
        return matrix, inl, m

    first = []
    for c in cands:
        new, inl, m = refine_at(levels[0], c.matrix, c.mirror, 4)
        first.append((float(np.sum(m.ncc[inl])) if new is not None else 0.0, new, c))
    first.sort(key=lambda e: -e[0])
    # the two best distinct poses go through every level; their consistent patch counts at the
    # finest level decide between them
    fc = corners(fx_c)
    finals = []
    for ev, mat, c in first:
        if mat is None or any(same_pose(mat, f[1], fc, 0.1 * field_size) for f in finals if f[1] is not None):
            continue
        matrix, inl, m = chain(mat, c.mirror)
        n = int(inl.sum()) if matrix is not None else 0
        finals.append((n, matrix, inl, m, c, ev))
        if len(finals) == 2:
            break
    finals.sort(key=lambda f: -f[0])
    cand_info = [dict(angle=e[2].angle, scale=e[2].scale, mirror=e[2].mirror, coarse_ncc=e[2].score,
                      patch_evidence=e[0]) for e in first]
    if finals:
        n_best, matrix, inl, m, best, _ = finals[0]
        runner = finals[1][0] if len(finals) > 1 else 0
        ratio = runner / n_best if n_best > 0 else 1.0
        mir = best.mirror
    else:
        matrix = inl = m = best = None
        ratio, mir = 1.0, False

    n_in = int(inl.sum()) if (matrix is not None and inl is not None) else 0
    n_tried = m.n_tried if m is not None else 0
    frac = n_in / n_tried if n_tried else 0.0
    reasons = []
    registration = None
    if m is not None and len(m.src):
        names = [f"patch{i + 1}" for i in range(len(m.src))]
        active = inl if inl is not None else np.zeros(len(m.src), bool)
        lms = Landmarks.from_points(m.src, m.dst, names=names, active=list(map(bool, active)),
                                    sigma_src=0.0, sigma_dst=fit_sigma(m, active),
                                    source_frame=moving.attrs.get("frame"), target_frame=fixed.attrs.get("frame"))
    else:
        lms = Landmarks()
    if matrix is not None and n_in >= MIN_INLIERS:
        opts = {"allow_reflection": True} if model in ("rigid", "similarity") and mir else {}
        try:
            registration = register(lms, model, robust=True, seed=seed, **opts)
        except RegistrationError as exc:
            reasons.append(f"the patch correspondences do not determine a {model} model ({exc}).")
    # --- verdict ------------------------------------------------------------------------
    if registration is None or n_in < MIN_INLIERS or frac < FAIL_FRACTION:
        verdict = "failed"
        reasons.insert(0, f"only {n_in} of {n_tried} textured patches agree with any pose "
                          f"(need {MIN_INLIERS} and {FAIL_FRACTION:.0%}): the images may not show the "
                          "same field, or share too little structure.")
        reasons.append("Check that the two images overlap; pick the stain that shows nuclei "
                       "(channel=); or give two rough clicks (initial=Landmarks) to search near them.")
    else:
        verdict = "good"
        if ratio > DISTINCT_RATIO:
            verdict = "ambiguous"
            reasons.append(f"a different pose has {ratio:.0%} as many consistent patches as the best: "
                           "the content is repetitive or sparse; give two rough clicks (initial=) to choose.")
        if frac < GOOD_FRACTION:
            verdict = "ambiguous"
            reasons.append(f"only {n_in} of {n_tried} textured patches ({frac:.0%}) agree with the model: "
                           "check the overlay, or try model='affine' or 'tps' if the sample is distorted.")
        if verdict == "good":
            reasons.append(f"{n_in} of {n_tried} textured patches ({frac:.0%}) agree with the model; the "
                           f"runner-up pose has {ratio:.0%} as many.")
    confidence = float(np.clip(frac * (1 - ratio), 0, 1)) if verdict != "failed" else 0.0
    start = None
    if best is not None:
        start = _tf.Similarity(matrix=best.matrix, source_frame=moving.attrs.get("frame"),
                               target_frame=fixed.attrs.get("frame"))
    details = dict(match_sigma_um=None if m is None else m.sigma, inliers=n_in, textured_patches=n_tried, inlier_fraction=frac, runner_up_ratio=ratio,
                   coarse_pixel_um=coarse, levels_um=levels, search_s=t_search,
                   total_s=time.perf_counter() - t0, coarse_scores=np.asarray(scores))
    return ImageMatch(registration, lms, initial, start, confidence, verdict, reasons, cand_info, details)

"""The cell layer shared by the synthetic samples: cells and nuclei as smooth analytic fields
of LM-frame coordinates (µm), from which images of any modality and pixel size are sampled."""

from __future__ import annotations

import math

import numpy as np


class Specimen:
    """Cells and nuclei as smooth analytic fields of LM-frame coordinates (µm).

    Cells are the Voronoi regions of centres at least 14 µm apart (cut at ``radius`` from
    their centre), whose straight bisectors a smooth random warp bends into curved
    membranes; each holds an elliptical nucleus near its centre.

    Parameters
    ----------
    rng : numpy.random.Generator
        Draws the warp, the cells and the nuclei (in that order).
    lo, hi : numpy.ndarray, shape (2,)
        Corners ``(x, y)`` of the field to cover, µm; cells extend 8 µm past it.

    Attributes
    ----------
    centres : numpy.ndarray, shape (K, 2)
        Cell centres, µm, ``(x, y)`` (in warped coordinates).
    radius : float
        Largest distance from a cell's centre to its membrane, µm.
    nuc_centre : numpy.ndarray, shape (K, 2)
        Nucleus centres, µm, ``(x, y)``; ``nuc_a``, ``nuc_b`` (K,) their semi-axes, µm,
        ``nuc_angle`` (K,) the orientation of ``nuc_a``, radians, ``nuc_brightness`` (K,)
        their relative stain.
    """

    def __init__(self, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray):
        span = hi - lo
        # warp: a few plane waves per axis, amplitude ~0.6 µm, wavelength 6-20 µm
        n_waves = 4
        self.k = rng.uniform(-1, 1, (2, n_waves, 2))
        self.k *= (2 * np.pi / rng.uniform(6, 20, (2, n_waves, 1))) / np.linalg.norm(
            self.k, axis=-1, keepdims=True
        )
        self.phase = rng.uniform(0, 2 * np.pi, (2, n_waves))
        self.amp = rng.uniform(0.15, 0.3, (2, n_waves))
        # cells: centres at least `spacing` apart (Poisson disc), extended past the field
        self.radius = 10.5
        spacing = 14.0
        pad = 8.0
        n_target = max(1, int(round((span[0] + 2 * pad) * (span[1] + 2 * pad) / 190.0)))
        cands = rng.uniform(lo - pad, hi + pad, (40 * n_target, 2))
        centres: list[np.ndarray] = []
        for p in cands:
            if all(np.hypot(*(p - q)) >= spacing for q in centres):
                centres.append(p)
            if len(centres) >= n_target:
                break
        self.centres = np.array(centres)
        k = len(self.centres)
        # nuclei: ellipses near the cell centres
        self.nuc_centre = self.centres + rng.uniform(-0.8, 0.8, (k, 2))
        self.nuc_a = rng.uniform(3.8, 5.0, k)
        self.nuc_b = self.nuc_a * rng.uniform(0.7, 0.92, k)
        self.nuc_angle = rng.uniform(0, np.pi, k)
        self.nuc_brightness = rng.uniform(0.7, 1.3, k)

    def warp(self, x, y):
        """Warped coordinates ``(xw, yw)`` (same shapes and dtype as ``x``, ``y``)."""
        xw = x.copy()
        yw = y.copy()
        for axis, out in ((0, xw), (1, yw)):
            for i in range(self.k.shape[1]):
                kx, ky = self.k[axis, i]
                out += (self.amp[axis, i] * np.sin(kx * x + ky * y + self.phase[axis, i])).astype(
                    out.dtype, copy=False
                )
        return xw, yw

    def cell_distances(self, xw, yw, centres=None):
        """Nearest and second-nearest cell-centre distances ``(d1, d2)`` in µm."""
        centres = self.centres if centres is None else centres
        d1 = np.full(np.shape(xw), np.inf, dtype=np.asarray(xw).dtype)
        d2 = d1.copy()
        for cx, cy in centres:  # squared distances; one square root at the end
            dx = xw - cx
            d = dx * dx
            dx = yw - cy
            d += dx * dx
            np.minimum(d2, np.maximum(d1, d), out=d2)
            np.minimum(d1, d, out=d1)
        return np.sqrt(d1, out=d1), np.sqrt(d2, out=d2)

    def nucleus_sd(self, i, xw, yw):
        """Approximate signed distance (µm, negative inside) to nucleus ``i``'s envelope."""
        c, s = math.cos(self.nuc_angle[i]), math.sin(self.nuc_angle[i])
        dx = xw - self.nuc_centre[i, 0]
        dy = yw - self.nuc_centre[i, 1]
        u = c * dx + s * dy
        v = -s * dx + c * dy
        a2, b2 = self.nuc_a[i] ** 2, self.nuc_b[i] ** 2
        rho = np.sqrt(u * u / a2 + v * v / b2)
        grad = np.sqrt((u / a2) ** 2 + (v / b2) ** 2) / np.maximum(rho, 1e-6)
        return (rho - 1.0) / np.maximum(grad, 1e-6)

    def nucleus_sd_min(self, xw, yw):
        """Signed distance to the nearest nucleus (µm, negative inside one)."""
        out = np.full(np.shape(xw), np.inf)
        for i in range(len(self.centres)):
            out = np.minimum(out, self.nucleus_sd(i, xw, yw))
        return out

    def cytoplasm_clearance(self, pts):
        """For LM points (N, 2): distance (µm) to the nearest membrane or nuclear envelope
        when the point lies in cytoplasm, else a negative number."""
        x, y = pts[:, 0].astype(np.float64), pts[:, 1].astype(np.float64)
        xw, yw = self.warp(x, y)
        d1, d2 = self.cell_distances(xw, yw)
        sd = self.nucleus_sd_min(xw, yw)
        clear = np.minimum.reduce([(d2 - d1) / 2, self.radius - d1, sd])
        return clear

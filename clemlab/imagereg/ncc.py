"""Normalised cross-correlation with masks, over all translations at once (FFT).

The masked form (Padfield, "Masked object registration in the Fourier domain", IEEE TIP
2012) correlates only the pixels valid in both images at each shift, so a rotated
template's empty corners and the border of the searched image do not count as structure.

Multi-channel maps (``(C, H, W)``, e.g. MIND descriptors) are scored by one correlation
coefficient of the descriptor vectors over the overlap: each channel is centred on its own
mean within the overlap, and the cross products and variances are summed over channels before
normalising. The score is then -1..1 in the same sense as for one channel (and equals it for
``C = 1``), so every threshold and the peak analysis downstream apply unchanged.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as _fft


def _stack(a: np.ndarray) -> np.ndarray:
    """``a`` as float64 channels ``(C, H, W)``; a 2-D map is one channel."""
    a = np.asarray(a, np.float64)
    return a[None] if a.ndim == 2 else a


class MaskedSearch:
    """The searched image ``image`` ((H, W) or channels (C, H, W)) with validity ``mask``
    (H, W), prepared for repeated masked NCC against templates of at most ``max_template``
    (h, w) pixels."""

    def __init__(self, image: np.ndarray, mask: np.ndarray, max_template: tuple[int, int]):
        image = _stack(image)
        mask = np.asarray(mask, np.float64)
        self.shape = image.shape[-2:]
        self.channels = image.shape[0]
        self.size = tuple(_fft.next_fast_len(n + m - 1, real=True) for n, m in zip(self.shape, max_template))
        im = image * mask
        self._f_mask = _fft.rfft2(mask, self.size)
        self._f_im = _fft.rfft2(im, self.size)
        self._f_im2 = _fft.rfft2(im * image, self.size)

    def ncc(self, template: np.ndarray, tmask: np.ndarray, min_overlap: float) -> tuple[np.ndarray, np.ndarray]:
        """Masked NCC of ``template`` placed with its top-left pixel at every (row, col) shift.

        ``template`` is (h, w), or (C, h, w) with the searched image's channel count;
        ``tmask`` (h, w) is its validity (0/1).

        Returns
        -------
        ncc : numpy.ndarray, shape ``self.size``
            Correlation coefficient per shift; shifts are indices modulo ``self.size`` (a
            negative shift ``-k`` sits at ``size - k``). Shifts whose overlap holds fewer than
            ``min_overlap`` pixels are set to -1.
        overlap : numpy.ndarray, shape ``self.size``
            Number of pixels valid in both at each shift.
        """
        t = _stack(template)
        if t.shape[0] != self.channels:
            raise ValueError(f"template has {t.shape[0]} channels, the searched image {self.channels}")
        m = np.asarray(tmask, np.float64)
        tm = t * m
        f_m = np.conj(_fft.rfft2(m, self.size))
        f_t = np.conj(_fft.rfft2(tm, self.size))
        f_t2 = np.conj(_fft.rfft2(tm * t, self.size))
        inv = lambda f: _fft.irfft2(f, self.size)  # noqa: E731
        n = np.round(inv(self._f_mask * f_m))
        s_i = inv(self._f_im * f_m)
        s_i2 = inv(self._f_im2 * f_m)
        s_t = inv(self._f_mask * f_t)
        s_t2 = inv(self._f_mask * f_t2)
        s_it = inv(self._f_im * f_t)
        ok = n >= max(min_overlap, 2)
        nn = np.where(ok, n, 1.0)
        # per-channel centred sums, added over channels
        var_i = np.sum(s_i2 - s_i * s_i / nn, axis=0)
        var_t = np.sum(s_t2 - s_t * s_t / nn, axis=0)
        cov = np.sum(s_it - s_i * s_t / nn, axis=0)
        den = np.sqrt(np.clip(var_i, 0, None) * np.clip(var_t, 0, None))
        good = ok & (den > 1e-9 * nn * self.channels)
        out = np.full(self.size, -1.0)
        out[good] = cov[good] / den[good]
        return np.clip(out, -1, 1), n


def shift_of(index: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """The signed (row, col) shift of a correlation index modulo ``size``."""
    return tuple(int(i) if i < s // 2 else int(i) - s for i, s in zip(index, size))


def patch_ncc(fixed: np.ndarray, fmask: np.ndarray, moving: np.ndarray, radius: int) -> np.ndarray:
    """Masked NCC of a patch ``moving`` (h, w) against ``fixed`` (h + 2r, w + 2r) at shifts
    ``-r..r`` in each axis: ``out[r + dy, r + dx]`` compares ``moving`` with
    ``fixed[r + dy : r + dy + h, r + dx : r + dx + w]``. Pixels where ``fmask`` (h + 2r, w + 2r)
    is 0 do not count. Both may carry a leading channel axis (C, ...).
    """
    h, w = moving.shape[-2:]
    search = MaskedSearch(fixed, fmask, (h, w))
    c, _ = search.ncc(moving, np.ones((h, w)), min_overlap=0.6 * h * w)
    return c[: 2 * radius + 1, : 2 * radius + 1]

"""The pieces behind register_images' representations: MIND descriptors, multi-channel masked
NCC and mutual information (end-to-end tests with the truth are in test_imagereg.py)."""

import numpy as np
import pytest

from clemlab.imagereg import mi, mind, ncc
from clemlab.imagereg.represent import KINDS, Plane, describe


def _blobs(seed, shape=(64, 64), n=25, sigma=3.0):
    """Smooth random blobs plus a little noise, rows x cols."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    a = np.zeros(shape)
    for y, x, w in zip(rng.uniform(0, shape[0], n), rng.uniform(0, shape[1], n), rng.uniform(0.5, 1.5, n)):
        a += w * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma ** 2))
    return (a + rng.normal(0, 0.01, shape)).astype(np.float32)


def test_kinds_are_the_documented_ones():
    assert KINDS == ("intensity", "gradient", "mind", "mi")


def test_mind_ignores_contrast_sign_and_gain():
    a = _blobs(0)
    d, m = mind.mind(a, np.ones(a.shape))
    assert d.shape == (4,) + a.shape and d.dtype == np.float32
    assert np.allclose(d.max(axis=0), 1.0) and d.min() > 0
    for other in (-a, 3.0 * a + 7.0):
        assert np.allclose(mind.mind(other, np.ones(a.shape))[0], d, atol=1e-4)


def test_mind_mask_is_eroded_by_the_footprint_only_inside():
    a = _blobs(1)
    mask = np.ones(a.shape)
    mask[30, 30] = 0
    _, m = mind.mind(a, mask, radius=1, sigma=1.0)
    reach = 1 + 2  # offset plus 2 sigma
    assert m[30 - reach: 30 + reach + 1, 30 - reach: 30 + reach + 1].sum() == 0
    assert m[30, 30 + reach + 1] == 1 and m[0, 0] == 1  # the image border is not eroded
    # describe() passes other kinds through unchanged
    v, mm = describe("intensity", a, mask)
    assert v is a and mm is mask


def test_multichannel_ncc_pools_channels():
    a = _blobs(2)
    tpl = a[20:36, 24:40]
    mask = np.ones(a.shape)
    one, _ = ncc.MaskedSearch(a, mask, tpl.shape).ncc(tpl, np.ones(tpl.shape), 10)
    stacked, _ = ncc.MaskedSearch(a[None], mask, tpl.shape).ncc(tpl[None], np.ones(tpl.shape), 10)
    assert np.allclose(one, stacked)
    # two channels, one of them scaled and offset: the same correlation, peak at the true shift
    two = np.stack([a, 5 * a + 1])
    c, _ = ncc.MaskedSearch(two, mask, tpl.shape).ncc(np.stack([tpl, 5 * tpl + 1]), np.ones(tpl.shape), 10)
    assert np.unravel_index(np.argmax(c), c.shape) == (20, 24)
    assert c[20, 24] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="channels"):
        ncc.MaskedSearch(two, mask, tpl.shape).ncc(tpl, np.ones(tpl.shape), 10)


def test_mi_correlation_is_abs_ncc_for_gaussians():
    rng = np.random.default_rng(3)
    x = rng.normal(size=200_000)
    for rho in (0.0, 0.5, 0.9):
        y = rho * x + np.sqrt(1 - rho ** 2) * rng.normal(size=x.size)
        h = mi.joint_histogram(-x, y, 32, (-4, 4), (-4, 4))
        assert mi.correlation(mi.mutual_information(h))[0] == pytest.approx(rho, abs=0.05)


def test_patch_mi_finds_a_non_linearly_remapped_patch():
    a = _blobs(4)
    fixed = np.cos(2.5 * a / a.max() * np.pi)  # not monotone: no linear relation to ``a``
    r = 3
    tpl = a[20 + 2: 20 + 2 + 24, 20 - 1: 20 - 1 + 24]  # the patch sits at dy = 2, dx = -1
    win = fixed[20 - r: 20 + 24 + r, 20 - r: 20 + 24 + r]
    s = mi.patch_mi(win, np.ones(win.shape), tpl, r)
    assert s.shape == (2 * r + 1, 2 * r + 1)
    assert np.unravel_index(np.argmax(s), s.shape) == (r + 2, r - 1)
    assert s.max() > 0.8


def test_optimise_pose_recovers_a_small_similarity():
    a = _blobs(5, shape=(96, 96), n=60)
    moving = Plane(a, 0.0, 0.0, 1.0)
    # the fixed map is the moving one remapped non-linearly, on the same grid
    fixed = Plane(np.cos(2.5 * a / a.max() * np.pi).astype(np.float32), 0.0, 0.0, 1.0)
    ang = np.radians(3.0)
    off = np.eye(3)
    off[:2, :2] = 1.03 * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    off[:2, 2] = [1.5, -1.0]
    got = mi.optimise_pose(moving, fixed, off)
    pts = np.array([[30.0, 30.0, 1], [66.0, 30.0, 1], [48.0, 66.0, 1]]).T
    assert np.max(np.abs((got @ pts - pts)[:2])) < 0.3

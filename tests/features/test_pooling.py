"""Poolings against direct numpy implementations of their paper definitions."""

import math

import mxnet as mx
import numpy as np
import pytest

from finetune.errors import ConfigError, ShapeError, UnknownNameError
from finetune.features import (MOP, RMAC, AvgPooling, CroW, GeM, MaxPooling, SumPooling, get_pooling,
                               rmac_regions)


@pytest.fixture
def maps():
    rng = np.random.default_rng(0)
    x = rng.random((3, 6, 7, 10)).astype(np.float32)
    x[x < 0.3] = 0  # ReLU-like sparsity for CroW
    return x


def run(pool, x):
    return pool(mx.nd.array(x)).asnumpy()


def test_sum_avg_max(maps):
    assert np.allclose(run(SumPooling(), maps), maps.sum(axis=(2, 3)), rtol=1e-5)
    assert np.allclose(run(AvgPooling(), maps), maps.mean(axis=(2, 3)), rtol=1e-5)
    assert np.allclose(run(MaxPooling(), maps), maps.max(axis=(2, 3)))


def test_gem_definition_p1_is_avg_large_p_is_max(maps):
    x = maps + 0.01  # strictly positive
    p = 3.0
    ref = np.mean(x ** p, axis=(2, 3)) ** (1 / p)
    assert np.allclose(run(GeM(p), x), ref, rtol=1e-4)
    assert np.allclose(run(GeM(1.0), x), x.mean(axis=(2, 3)), rtol=1e-5)
    big = run(GeM(200.0), x.astype(np.float64).astype(np.float32))
    mx_ = x.max(axis=(2, 3))
    assert np.all(big <= mx_ * (1 + 1e-5)) and np.allclose(big, mx_, rtol=0.03)
    # monotone in p towards MAX
    assert np.all(run(GeM(10.0), x) >= run(GeM(3.0), x) - 1e-6)


def test_gem_p_is_a_learnable_parameter(maps):
    pool = GeM(3.0, learnable=True)
    assert pool.p.grad_req == "write" and GeM(3.0).p.grad_req == "null"
    x = mx.nd.array(maps + 0.01)
    with mx.autograd.record():
        y = pool(x).sum()
    y.backward()
    assert abs(float(pool.p.grad().asscalar())) > 0
    assert pool.get_config() == {"p": 3.0, "learnable": True, "eps": 1e-6}
    pool.hybridize()
    assert np.allclose(pool(x).asnumpy(), run(GeM(3.0), maps + 0.01), rtol=1e-5)


def crow_reference(X, a=2, b=2):
    """Kalantidis et al.'s reference code (crow.py), one image (C, H, W)."""
    S = X.sum(axis=0)
    z = (S ** a).sum() ** (1.0 / a)
    S = (S / z) ** (1.0 / b)
    K, h, w = X.shape
    nonzeros = np.array([np.count_nonzero(x) / float(h * w) for x in X])
    nzsum = nonzeros.sum()
    C = np.array([np.log(nzsum / d) if d > 0 else 0.0 for d in nonzeros])
    return (X * S).sum(axis=(1, 2)) * C


def test_crow_matches_reference(maps):
    maps = maps.copy()
    maps[0, 2] = 0  # an all-zero channel gets weight 0
    out = run(CroW(), maps)
    ref = np.stack([crow_reference(m.astype(np.float64)) for m in maps])
    assert np.allclose(out, ref, rtol=1e-4, atol=1e-6)
    assert out[0, 2] == 0
    ref3 = np.stack([crow_reference(m.astype(np.float64), a=3, b=1) for m in maps])
    assert np.allclose(run(CroW(a=3, b=1), maps), ref3, rtol=1e-4, atol=1e-6)


def reference_regions(H, W, L):
    """The R-MAC grid written from the paper's description (Tolias et al. 2016, sec. 3).

    Square regions of side 2*min/(l+1) (floored); l regions along the shorter side and
    l + m - 1 along the longer, spread uniformly from one border to the other (starts
    floored to cells); m (2..7, or 1 for square maps) is the count at l=1 whose overlap
    between neighbours of side min(W, H) is closest to 40 %.
    """
    short, long_ = min(H, W), max(H, W)
    m = 1
    if H != W:
        candidates = []
        for count in range(2, 8):
            stride = (long_ - short) / (count - 1)
            candidates.append((abs((short - stride) / short - 0.4), count))
        m = min(candidates, key=lambda c: c[0])[1]  # first of equal scores
    out = []
    for level in range(1, L + 1):
        side = int(2 * short / (level + 1))
        if side == 0:
            continue
        n_long = level + m - 1
        n_h, n_w = (n_long, level) if H > W else (level, n_long) if W > H else (level, level)

        def starts(n, size):
            if n == 1:
                return [0]
            return [int(math.floor(i * (size - side) / (n - 1))) for i in range(n)]

        out += [(t, l_, side) for t in starts(n_h, H) for l_ in starts(n_w, W)]
    return out


@pytest.mark.parametrize("hw", [(7, 7), (1, 1), (2, 3), (3, 4), (4, 6), (7, 10), (10, 7), (14, 20),
                                (16, 9), (5, 31), (30, 40), (24, 32)])
def test_rmac_region_grid_matches_independent_reference(hw):
    H, W = hw
    for L in (1, 2, 3, 4):
        got = rmac_regions(H, W, L)
        assert got == reference_regions(H, W, L), (H, W, L)
        for top, left, side in got:
            assert 0 <= top and top + side <= H and 0 <= left and left + side <= W


def test_rmac_known_counts():
    assert len(rmac_regions(30, 40, 3)) == 2 + 6 + 12  # 1x2, 2x3, 3x4 (paper's 20 regions)
    assert rmac_regions(30, 40, 1) == [(0, 0, 30), (0, 10, 30)]


def rmac_reference(x, L=3, global_mac=False):
    out = []
    for img in x:
        total = 0
        for t, l_, s in reference_regions(img.shape[1], img.shape[2], L):
            v = img[:, t:t + s, l_:l_ + s].max(axis=(1, 2))
            total = total + v / (np.linalg.norm(v) + 1e-6)
        if global_mac:
            g = img.max(axis=(1, 2))
            total = np.concatenate([total / (np.linalg.norm(total) + 1e-6), g / (np.linalg.norm(g) + 1e-6)])
        out.append(total)
    return np.stack(out)


def test_rmac_vectors(maps):
    assert np.allclose(run(RMAC(3), maps), rmac_reference(maps), rtol=1e-5, atol=1e-6)
    assert np.allclose(run(RMAC(2, global_mac=True), maps), rmac_reference(maps, 2, True), rtol=1e-5, atol=1e-6)
    assert RMAC(global_mac=True).output_dim(6) == 12
    with pytest.raises(ShapeError):
        RMAC()(mx.nd.zeros((2, 3)))


def test_mop_vlad_matches_brute_force():
    rng = np.random.default_rng(0)
    maps = rng.random((5, 4, 8, 8)).astype(np.float32)
    mop = MOP(n_clusters=3, patch_dim=None, levels=[(0.5, 0.25)]).fit(maps)
    out = mop.transform(maps)
    assert out.shape == (5, 4 + 3 * 4) == (5, mop.output_dim(4))
    centers = mop.centers_[0]
    for n in range(5):
        patches = []
        for t in range(0, 5, 2):  # window 4, stride 2 on an 8x8 map
            for l_ in range(0, 5, 2):
                v = maps[n, :, t:t + 4, l_:l_ + 4].max(axis=(1, 2))
                patches.append(v / np.linalg.norm(v))
        vlad = np.zeros_like(centers)
        for v in patches:
            c = np.argmin(((centers - v) ** 2).sum(1))
            vlad[c] += v - centers[c]
        vlad = vlad.ravel()
        vlad = np.sign(vlad) * np.sqrt(np.abs(vlad))
        g = maps[n].max(axis=(1, 2))
        ref = np.concatenate([g / np.linalg.norm(g), vlad / np.linalg.norm(vlad)])
        assert np.allclose(out[n], ref, atol=1e-5)


def test_mop_with_pca_state_roundtrip():
    rng = np.random.default_rng(1)
    maps = rng.random((6, 8, 8, 8)).astype(np.float32)
    mop = MOP(n_clusters=4, patch_dim=3).fit(maps)
    assert mop.transform(maps).shape == (6, 8 + 2 * 4 * 3)
    again = MOP(n_clusters=4, patch_dim=3).set_state(mop.state())
    assert np.allclose(again.transform(maps), mop.transform(maps), atol=1e-5)
    with pytest.raises(ConfigError, match="fit"):
        MOP().transform(maps)


def test_get_pooling_names_and_errors():
    assert isinstance(get_pooling("spoc"), SumPooling)
    assert isinstance(get_pooling("MAC"), MaxPooling)
    assert get_pooling("gem", p=5.0).power == 5.0
    assert isinstance(get_pooling("mop", n_clusters=2), MOP)
    with pytest.raises(UnknownNameError, match="Did you mean 'crow'"):
        get_pooling("crwo")
    with pytest.raises(ConfigError):
        get_pooling("gem", nonsense=1)
    with pytest.raises(ConfigError, match="'p' parameter of GeM"):
        GeM(0)
    with pytest.raises(ConfigError):
        RMAC(levels=0)
    assert repr(GeM(2.0)) == "GeM(p=2.0, learnable=False, eps=1e-06)"

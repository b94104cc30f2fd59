"""Global poolings of convolutional feature maps ``(N, C, H, W)`` → ``(N, D)``.

Each pooling is a Gluon block, so it runs on the device of the maps and GeM's
power ``p`` is an ordinary learnable parameter. Definitions follow the papers:

* SUM / SPoC (Babenko & Lempitsky 2015), AVG, MAX / MAC (Tolias et al. 2016);
* GeM (Radenović et al. 2018): ``(mean x^p)^(1/p)``; ``p=1`` is AVG, ``p→∞`` MAX;
* CroW (Kalantidis et al. 2016): spatial weights ``(S / ||S||_a)^(1/b)`` with
  ``S = Σ_c x`` (a = b = 2), channel weights ``log(Σ_k Q_k / Q_i)`` where
  ``Q_i`` is the fraction of non-zero positions of channel ``i`` (0 when
  ``Q_i = 0``), descriptor ``w_c · Σ_hw S·x``;
* R-MAC (Tolias et al. 2016): square regions at ``L`` scales on the grid of
  :func:`rmac_regions`, each max-pooled and L2-normalised, then summed.

MOP (orderless VLAD pooling) needs a learned codebook; it lives in ``_mop.py``, and
:func:`get_pooling` (every pooling by name) in ``_registry.py``.
"""

from __future__ import annotations

import math

import mxnet as mx
import numpy as np
from mxnet import gluon

from ..errors import ConfigError, ShapeError, check_range

__all__ = ["AvgPooling", "CroW", "GeM", "MaxPooling", "Pooling", "RMAC", "SumPooling", "rmac_regions"]

_TINY = 1e-12


class Pooling:
    """Mixin shared by every pooling: a short ``name`` and a JSON-ready config."""

    name = ""

    def get_config(self) -> dict:
        """Constructor arguments as a JSON-ready dict (used by :meth:`FeatureExtractor.save`)."""
        return {}

    def output_dim(self, channels: int) -> int:
        """Length of the descriptor for maps with ``channels`` channels."""
        return channels

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class SumPooling(Pooling, gluon.HybridBlock):
    """SUM pooling (SPoC): ``Σ_hw x[n, c, h, w]``.

    Examples
    --------
    >>> import mxnet as mx
    >>> SumPooling()(mx.nd.ones((1, 2, 3, 4))).asnumpy().tolist()
    [[12.0, 12.0]]
    """

    name = "sum"

    def hybrid_forward(self, F, x):
        return F.sum(x, axis=(2, 3))


class AvgPooling(Pooling, gluon.HybridBlock):
    """Average pooling: ``mean_hw x[n, c, h, w]``.

    Examples
    --------
    >>> import mxnet as mx
    >>> AvgPooling()(mx.nd.ones((1, 2, 3, 4))).shape
    (1, 2)
    """

    name = "avg"

    def hybrid_forward(self, F, x):
        return F.mean(x, axis=(2, 3))


class MaxPooling(Pooling, gluon.HybridBlock):
    """MAX pooling (MAC): ``max_hw x[n, c, h, w]``.

    Examples
    --------
    >>> import mxnet as mx
    >>> MaxPooling()(mx.nd.arange(8).reshape((1, 2, 2, 2))).asnumpy().tolist()
    [[3.0, 7.0]]
    """

    name = "max"

    def hybrid_forward(self, F, x):
        return F.max(x, axis=(2, 3))


class GeM(Pooling, gluon.HybridBlock):
    """Generalised mean pooling: ``(mean_hw max(x, eps)^p)^(1/p)``.

    Parameters
    ----------
    p : float
        The power; 1 is average pooling, large values approach max pooling.
    learnable : bool
        Whether ``p`` is trained with the rest of the network (its parameter
        is ``gem_p``; ``grad_req="null"`` when fixed).
    eps : float
        Values are clamped to at least ``eps`` (the power of negatives is undefined).

    Examples
    --------
    >>> import mxnet as mx
    >>> pool = GeM(p=3.0)
    >>> pool(mx.nd.ones((2, 4, 3, 3))).shape
    (2, 4)
    """

    name = "gem"

    def __init__(self, p: float = 3.0, *, learnable: bool = False, eps: float = 1e-6):
        check_range("GeM", "p", p, 0, None, low_open=True)
        super().__init__(prefix="gem_")
        self.learnable, self.eps = bool(learnable), float(eps)
        with self.name_scope():
            self.p = self.params.get("p", shape=(1,), init=mx.init.Constant(float(p)),
                                     grad_req="write" if learnable else "null")
        self.p.initialize()  # usable at once; re-initialising is harmless

    @property
    def power(self) -> float:
        """The current value of ``p``."""
        return float(self.p.data(self.p.list_ctx()[0]).asscalar())

    def get_config(self) -> dict:
        return {"p": round(self.power, 6), "learnable": self.learnable, "eps": self.eps}

    def hybrid_forward(self, F, x, p):
        p4 = F.reshape(p, (1, 1, 1, 1))
        m = F.mean(F.broadcast_power(F.maximum(x, self.eps), p4), axis=(2, 3))
        return F.broadcast_power(m, F.reshape(1.0 / p, (1, 1)))


class CroW(Pooling, gluon.HybridBlock):
    """Cross-dimensional weighting (Kalantidis, Mellina & Osindero, 2016).

    Parameters
    ----------
    a, b : float
        Spatial weights are ``(S / (Σ_hw S^a)^(1/a))^(1/b)``; the paper uses 2 and 2.

    Notes
    -----
    The channel weight counts non-zero activations, so use maps after a ReLU.

    Examples
    --------
    >>> import mxnet as mx
    >>> CroW()(mx.nd.random.uniform(shape=(2, 8, 5, 5))).shape
    (2, 8)
    """

    name = "crow"

    def __init__(self, a: float = 2.0, b: float = 2.0):
        check_range("CroW", "a", a, 0, None, low_open=True)
        check_range("CroW", "b", b, 0, None, low_open=True)
        super().__init__()
        self.a, self.b = float(a), float(b)

    def get_config(self) -> dict:
        return {"a": self.a, "b": self.b}

    def hybrid_forward(self, F, x):
        s = F.sum(x, axis=1)  # (N, H, W)
        z = F.power(F.sum(F.power(s, self.a), axis=(1, 2)), 1.0 / self.a)
        s = F.broadcast_div(s, F.reshape(F.maximum(z, _TINY), (-1, 1, 1)))
        if self.b != 1:
            s = F.power(F.maximum(s, 0), 1.0 / self.b)
        pooled = F.sum(F.broadcast_mul(x, F.expand_dims(s, axis=1)), axis=(2, 3))  # (N, C)
        q = F.mean(x > 0, axis=(2, 3))
        qsum = F.sum(q, axis=1, keepdims=True)
        w = F.where(q > 0, F.log(F.broadcast_div(qsum, F.maximum(q, _TINY))), F.zeros_like(q))
        return pooled * w


def rmac_regions(height: int, width: int, levels: int = 3, overlap: float = 0.4) -> list:
    """The R-MAC region grid of Tolias, Sicre & Jégou (ICLR 2016).

    At level ``l = 1..L`` square regions of side ``floor(2·min(W,H)/(l+1))``
    are placed uniformly, ``l`` along the shorter side and ``l + m`` along the
    longer one, where the extra count ``m`` (0 for square maps) is the one of
    1..6 whose overlap between consecutive regions of side ``min(W,H)`` is
    closest to ``overlap``. Integer rounding follows the authors' code.

    Parameters
    ----------
    height, width : int
        Map size.
    levels : int
        ``L``.
    overlap : float
        Desired overlap of neighbouring regions (0.4 in the paper).

    Returns
    -------
    list of tuple
        ``(top, left, side)`` in map cells, level by level, row-major.

    Examples
    --------
    >>> len(rmac_regions(7, 7, 3))  # 1 + 4 + 9
    14
    >>> rmac_regions(4, 6, 1)
    [(0, 0, 4), (0, 2, 4)]
    """
    H, W = int(height), int(width)
    if H < 1 or W < 1:
        raise ShapeError(f"rmac_regions: the map must be at least 1x1. Got {H}x{W}.")
    w = min(W, H)
    steps = np.array([2, 3, 4, 5, 6, 7], dtype=np.float64)
    b = (max(H, W) - w) / (steps - 1)
    idx = int(np.argmin(np.abs(((w ** 2 - w * b) / w ** 2) - overlap)))
    wd = idx + 1 if H < W else 0
    hd = idx + 1 if H > W else 0
    regions = []
    for lev in range(1, int(levels) + 1):
        wl = math.floor(2 * w / (lev + 1))
        if wl == 0:
            continue
        wl2 = math.floor(wl / 2 - 1)
        bw = 0.0 if lev + wd == 1 else (W - wl) / (lev + wd - 1)
        bh = 0.0 if lev + hd == 1 else (H - wl) / (lev + hd - 1)
        cen_w = [math.floor(wl2 + i * bw) - wl2 for i in range(lev + wd)]
        cen_h = [math.floor(wl2 + i * bh) - wl2 for i in range(lev + hd)]
        for top in cen_h:
            for left in cen_w:
                regions.append((int(top), int(left), int(wl)))
    return regions


class RMAC(Pooling, gluon.Block):
    """Regional maximum activations of convolutions (Tolias et al., 2016).

    Every region of :func:`rmac_regions` is max-pooled and L2-normalised; the
    region vectors are summed. With ``global_mac=True`` the (L2-normalised)
    sum is concatenated with the L2-normalised global MAC, giving ``2·C``
    dimensions.

    Parameters
    ----------
    levels : int
        Number of scales ``L`` (3 in the paper).
    global_mac : bool
        Concatenate the global MAC vector.
    overlap : float
        Desired region overlap (0.4).

    Examples
    --------
    >>> import mxnet as mx
    >>> RMAC(levels=3)(mx.nd.random.uniform(shape=(2, 8, 7, 9))).shape
    (2, 8)
    >>> RMAC(global_mac=True)(mx.nd.random.uniform(shape=(2, 8, 7, 9))).shape
    (2, 16)
    """

    name = "rmac"

    def __init__(self, levels: int = 3, *, global_mac: bool = False, overlap: float = 0.4):
        if int(levels) != levels or levels < 1:
            raise ConfigError(f"The 'levels' parameter of RMAC must be an int >= 1. Got {levels!r} instead.")
        check_range("RMAC", "overlap", overlap, 0, 1, low_open=True, high_open=True)
        super().__init__()
        self.levels, self.global_mac, self.overlap = int(levels), bool(global_mac), float(overlap)

    def get_config(self) -> dict:
        return {"levels": self.levels, "global_mac": self.global_mac, "overlap": self.overlap}

    def output_dim(self, channels: int) -> int:
        return 2 * channels if self.global_mac else channels

    @staticmethod
    def _l2(v):
        return mx.nd.broadcast_div(v, mx.nd.norm(v, axis=1, keepdims=True) + 1e-6)

    def forward(self, x):
        if len(x.shape) != 4:
            raise ShapeError(f"Pooling expects feature maps (N, C, H, W). Got shape {tuple(x.shape)}.")
        _, _, h, w = x.shape
        total = None
        for top, left, side in rmac_regions(h, w, self.levels, self.overlap):
            region = mx.nd.slice(x, begin=(None, None, top, left), end=(None, None, top + side, left + side))
            v = self._l2(mx.nd.max(region, axis=(2, 3)))
            total = v if total is None else total + v
        if not self.global_mac:
            return total
        return mx.nd.concat(self._l2(total), self._l2(mx.nd.max(x, axis=(2, 3))), dim=1)

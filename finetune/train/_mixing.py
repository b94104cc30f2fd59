"""Batch mixing for training: Mixup (blend two images) and CutMix (paste a rectangle of one into another).

Both draw a weight ``lam`` from ``Beta(alpha, alpha)`` and pair each image
of the batch with another image of the same batch; the loss mixes the two
labels with the same weight (:func:`mixed_losses`). The draws come from a
``numpy.random.RandomState`` seeded per batch, so a resumed run mixes its
batches exactly as the uninterrupted run did.
"""

from __future__ import annotations

import math

import mxnet as mx
import numpy as np

__all__ = ["mix_batch", "mixed_losses"]


def mix_batch(x, y, seed: int, *, mixup: float = 0.0, cutmix: float = 0.0):
    """Mixup or CutMix of one batch (with both on, one of them at random).

    Parameters
    ----------
    x : NDArray or numpy array, shape (N, C, H, W)
    y : NDArray or numpy array, shape (N,)
        Integer labels.
    seed : int
        Seed of this batch's draws.
    mixup, cutmix : float
        The ``alpha`` of each method; 0 turns it off.

    Returns
    -------
    tuple
        ``(mixed images, partner labels (float32), weight of the own labels)``.
    """
    rng = np.random.RandomState(seed % (2 ** 32))
    use_cutmix = cutmix and (not mixup or rng.uniform() < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = float(rng.beta(alpha, alpha))
    perm = mx.nd.array(rng.permutation(x.shape[0]))
    x = x.copy() if isinstance(x, mx.nd.NDArray) else mx.nd.array(x)
    other = mx.nd.take(x, perm)
    if use_cutmix:
        h, w = x.shape[2], x.shape[3]
        ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        top, left = rng.randint(0, h - ch + 1), rng.randint(0, w - cw + 1)
        x[:, :, top:top + ch, left:left + cw] = other[:, :, top:top + ch, left:left + cw]
        lam = 1.0 - ch * cw / (h * w)
    else:
        x[:] = lam * x + (1 - lam) * other
    y = y if isinstance(y, mx.nd.NDArray) else mx.nd.array(y)
    return x, mx.nd.take(y.astype("float32"), perm), lam


def mixed_losses(loss_fn, losses, outs, partners, lam: float) -> list:
    """``lam * loss(out, own label) + (1 - lam) * loss(out, partner label)`` per device."""
    return [lam * l + (1 - lam) * loss_fn(o, y2) for l, o, y2 in zip(losses, outs, partners)]

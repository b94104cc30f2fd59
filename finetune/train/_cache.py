"""Cached backbone features for head-only training.

When no backbone parameter ever trains, the backbone's BatchNorm layers are
frozen (or it has none) and the data is not augmented, the backbone maps each
image to the same features at every epoch. They are computed once, in
inference mode, and only the head is trained on them, so an epoch costs what
the head costs.

The model must be ``head(backbone(x))``: either it has ``body`` (or
``backbone``) and ``head`` child blocks (the model protocol's ``Model``), or it is a
``HybridSequential`` whose trailing children hold every trainable parameter.
The split is checked numerically on a few images before it is used.
"""

from __future__ import annotations

import logging

import mxnet as mx
import numpy as np
from mxnet import gluon

from ..models.graph import batchnorm_modes

__all__ = ["cache_reason", "compute_features", "split_backbone_head"]

log = logging.getLogger(__name__)


class _Seq:
    """Call a list of blocks one after the other (the front of a HybridSequential)."""

    def __init__(self, blocks):
        self.blocks = list(blocks)

    def __call__(self, x):
        for b in self.blocks:
            x = b(x)
        return x

    def collect_params(self):
        out = gluon.ParameterDict()
        for b in self.blocks:
            out.update(b.collect_params())
        return out


def split_backbone_head(model, trainable: set):
    """``(backbone, head)`` callables with ``model(x) == head(backbone(x))``, or ``None``."""
    backbone = getattr(model, "body", None) or getattr(model, "backbone", None)
    head = getattr(model, "head", None)
    if isinstance(backbone, gluon.Block) and isinstance(head, gluon.Block):
        return backbone, head
    if isinstance(model, gluon.nn.HybridSequential) and len(model) > 1:
        children = list(model)
        for k in range(1, len(children)):
            front = set().union(*(c.collect_params().keys() for c in children[:k]))
            if front & trainable:
                break
            rest = set().union(*(c.collect_params().keys() for c in children[k:]))
            if rest and rest <= trainable | _aux(children[k:]):
                tail = gluon.nn.HybridSequential(prefix="")
                for c in children[k:]:
                    tail.add(c)
                return _Seq(children[:k]), tail
    return None


def _aux(blocks):
    out = set()
    for b in blocks:
        out |= {n for n, p in b.collect_params().items() if p.grad_req == "null"}
    return out


def cache_reason(model, trainable: set, dataset, split) -> str | None:
    """Why features cannot be cached (``None`` when they can)."""
    if split is None:
        return "the model is not head(backbone(x)) (no backbone/head children, not a HybridSequential)"
    backbone = split[0]
    names = set(backbone.collect_params().keys())
    if names & trainable:
        return "some backbone parameters train"
    blocks = backbone.blocks if isinstance(backbone, _Seq) else [backbone]
    modes = {}
    for b in blocks:
        modes.update(batchnorm_modes(b))
    if any(m == "batch" for m in modes.values()):
        return "the backbone's BatchNorm layers use batch statistics (freeze them: freeze_bn=True)"
    augmented = dataset.train if hasattr(dataset, "train") else getattr(dataset, "augment", None)
    if augmented:
        return "the training data is augmented (train=True)"
    return None


def check_split(model, split, x) -> bool:
    """Whether ``head(backbone(x))`` equals ``model(x)`` on the batch ``x``."""
    backbone, head = split
    a = model(x).asnumpy()
    b = head(backbone(x)).asnumpy()
    return a.shape == b.shape and np.allclose(a, b, rtol=1e-4, atol=1e-5)


def compute_features(backbone, dataset, ctxs, batch_size: int, workers: int = 0, progress=None):
    """Run ``backbone`` (inference mode) over ``dataset`` in order; an ``ArrayDataset`` of (features, labels)."""
    if workers > 0 and hasattr(dataset, "loader"):  # a RecordDataset: its shared-memory loader
        loader = dataset.loader(batch_size, shuffle=False, workers=workers)
    else:
        loader = gluon.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    feats, labels = [], []
    try:
        for x, y in (progress(loader) if progress else loader):
            n = min(len(ctxs), x.shape[0])
            xs = gluon.utils.split_and_load(x, ctxs[:n], even_split=False)
            outs = [backbone(xi).as_in_context(mx.cpu()) for xi in xs]
            feats.append(mx.nd.concat(*outs, dim=0).asnumpy())
            labels.append(y.asnumpy() if hasattr(y, "asnumpy") else np.asarray(y))
    finally:
        if hasattr(loader, "close"):
            loader.close()
    return gluon.data.ArrayDataset(np.concatenate(feats).astype(np.float32),
                                   np.concatenate(labels).astype(np.float32))

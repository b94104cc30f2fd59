"""Cached backbone features for head-only training.

When no backbone parameter ever trains, the backbone's BatchNorm layers are
frozen (or it has none) and the data is not augmented, the backbone maps each
image to the same features at every epoch. They are computed once, in
inference mode, and only the head is trained on them, so an epoch costs what
the head costs.

The model must be ``head(backbone(x))``: either it is a finetune
:class:`~finetune.Model` (its ``body`` and ``head``), or it is a
``HybridSequential`` whose trailing children hold every trainable parameter.
The split is checked numerically on a few images before it is used.
"""

from __future__ import annotations

import logging

import mxnet as mx
import numpy as np
from mxnet import gluon
from .._progress import progress_bar

from ..models.graph import batchnorm_modes

__all__ = ["cache_reason", "cached_head", "check_split", "compute_features", "split_backbone_head"]

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
    from ..models import Model

    if isinstance(model, Model):  # finetune's Model is head(body(x)) by construction
        return model.body, model.head
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


def cached_head(model, trainable: set, train_ds, val_ds, *, ctxs, batch_size: int, workers_for, required: bool,
                hybridize: bool, progress: bool, log=log):
    """``(net, train, val)``: the head and the backbone's features when they can be cached, else the inputs.

    Parameters
    ----------
    model : mxnet.gluon.Block
    trainable : set of str
        Names of the parameters that train.
    train_ds, val_ds : Dataset (``val_ds`` may be ``None``)
    ctxs : list of mx.Context
    batch_size : int
    workers_for : callable
        ``workers_for(dataset) -> int``: loader processes for computing its features.
    required : bool
        Whether caching was asked for explicitly (a refusal is then a warning, not a debug message).
    hybridize, progress : bool
        Hybridize the head; show a progress bar while computing features.
    log : logging.Logger
    """
    split = split_backbone_head(model, trainable)
    reason = cache_reason(model, trainable, train_ds, split)
    if reason is None:
        x = mx.nd.array(np.stack([np.asarray(train_ds[i][0]) for i in range(min(2, len(train_ds)))]), ctx=ctxs[0])
        if not check_split(model, split, x):
            reason = "head(backbone(x)) differs from model(x)"
    if reason is not None:
        (log.warning if required else log.debug)("Not caching features: %s.", reason)
        return model, train_ds, val_ds
    log.debug("Backbone frozen and data not augmented: computing its features once.")
    bar = (lambda it: progress_bar(it, desc="features")) if progress else None
    backbone, head = split
    feats = [compute_features(backbone, d, ctxs, batch_size, workers_for(d), bar) if d is not None else None
             for d in (train_ds, val_ds)]
    if hybridize and isinstance(head, gluon.HybridBlock):
        head.hybridize(static_alloc=True)
    return head, feats[0], feats[1]

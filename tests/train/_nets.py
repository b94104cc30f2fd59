"""Tiny networks and data for the training tests (also run as subprocess scripts)."""

from __future__ import annotations

import mxnet as mx
import numpy as np
from mxnet.gluon import nn


def mlp(seed=1, bn=False, dropout=0.0):
    """input (N, 2, 4, 4) -> body (dense [+BN] [+dropout]) -> head_ dense (3 classes)."""
    mx.random.seed(seed)
    net = nn.HybridSequential(prefix="")
    body = nn.HybridSequential(prefix="body_")
    with body.name_scope():
        body.add(nn.Dense(8, activation="relu", in_units=32, prefix="fc1_"))
        if bn:
            body.add(nn.BatchNorm(in_channels=8, prefix="bn1_"))
        if dropout:
            body.add(nn.Dropout(dropout))
    head = nn.Dense(3, in_units=8, prefix="head_fc_")
    net.add(body, head)
    net.initialize(mx.init.Xavier(), ctx=mx.cpu())
    return net


def data(n=40, seed=0):
    rng = np.random.RandomState(seed)
    y = np.arange(n) % 3
    x = rng.normal(size=(n, 2, 4, 4)).astype("float32") + y[:, None, None, None].astype("float32")
    return x, y


def params(net) -> dict:
    return {k: v.data(v.list_ctx()[0]).asnumpy().copy() for k, v in net.collect_params().items()}

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


def graph_model(seed=1):
    """A finetune ``Model`` over a symbol graph: input (N, 3, 4, 4) -> conv -> BN -> pool -> head_ (3 classes)."""
    import finetune as ft

    x = mx.sym.Convolution(mx.sym.var("data"), num_filter=4, kernel=(3, 3), pad=(1, 1), name="conv0")
    x = mx.sym.Activation(mx.sym.BatchNorm(x, name="bn0"), act_type="relu", name="relu0")
    x = mx.sym.FullyConnected(mx.sym.Flatten(mx.sym.Pooling(x, global_pool=True, kernel=(2, 2), pool_type="avg",
                                                            name="pool1"), name="flatten0"), num_hidden=5, name="fc1")
    rng = np.random.RandomState(seed)
    args, _, auxs = x.infer_shape(data=(1, 3, 4, 4))
    arg = {n: mx.nd.array(rng.normal(scale=0.3, size=s)) for n, s in zip(x.list_arguments(), args) if n != "data"}
    aux = {n: mx.nd.ones(s) if n.endswith("var") else mx.nd.zeros(s) for n, s in zip(x.list_auxiliary_states(), auxs)}
    backbone = ft.Backbone.from_symbol(x, arg, aux, ft.Preprocess(size=(4, 4), resize=4))
    mx.random.seed(seed)
    return ft.HeadReplacer(3).apply(backbone)


def data(n=40, seed=0, channels=2):
    rng = np.random.RandomState(seed)
    y = np.arange(n) % 3
    x = rng.normal(size=(n, channels, 4, 4)).astype("float32") + y[:, None, None, None].astype("float32")
    return x, y


def params(net) -> dict:
    return {k: v.data(v.list_ctx()[0]).asnumpy().copy() for k, v in net.collect_params().items()}

"""Data parallelism on MXNet: parameters on every device, batches split over them, the parameter server started.

Gluon's data-parallel training needs a few steps its public API does not
cover: initialising only the parameters that have neither values nor a
deferred initialisation, marking the gradients of idle devices as fresh when
a batch has fewer images than there are devices, and starting the
``dist_*`` parameter server before any worker pushes a gradient. They reach
into MXNet internals, and this module is the one place in ``train`` that does.
"""

from __future__ import annotations

import mxnet as mx
from mxnet import gluon

__all__ = ["place_parameters", "split_batch", "start_kvstore", "zero_idle_gradients"]


def place_parameters(params, ctxs) -> None:
    """Initialise (Xavier) the parameters that have no values yet and put every parameter on ``ctxs``."""
    for p in params.values():
        if p._data is None and not p._deferred_init:
            p.initialize(mx.init.Xavier(), ctx=ctxs)
    params.reset_ctx(ctxs)


def split_batch(x, y, ctxs, float16: bool = False) -> tuple:
    """``(xs, ys)``: a batch split over the first ``min(len(ctxs), N)`` devices, images cast to float16 if asked."""
    ctxs = ctxs[:min(len(ctxs), x.shape[0])]
    xs = gluon.utils.split_and_load(x, ctxs, even_split=False)
    ys = gluon.utils.split_and_load(y, ctxs, even_split=False)
    if float16:
        xs = [xi.astype("float16") for xi in xs]
    return xs, ys


def zero_idle_gradients(params, used: int) -> None:
    """Zero the gradients of the devices after the first ``used`` (which got no images this step).

    They are marked fresh, so the Gluon trainer's step sums them (as zeros)
    instead of refusing stale gradients.
    """
    for p in params:
        if p.grad_req != "null":
            for g, w in zip(p.list_grad()[used:], p.list_data()[used:]):
                g[:] = 0
                w._fresh_grad = True


def start_kvstore(gluon_trainer) -> None:
    """Initialise the parameter server now, and let every worker finish before any pushes a gradient."""
    gluon_trainer._init_kvstore()
    gluon_trainer._init_params()
    mx.nd.waitall()
    gluon_trainer._kvstore._barrier()

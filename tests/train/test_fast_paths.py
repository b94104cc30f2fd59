"""AdamW's multi-tensor update (up to 50 parameters per operator call) gives what its per-parameter update gives."""

from __future__ import annotations

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from finetune.train import AdamW, Trainer
from finetune.train._optim import _FUSED_MAX


def _net(n_layers=3, seed=0):
    mx.random.seed(seed)
    net = gluon.nn.HybridSequential()
    for _ in range(n_layers):
        net.add(gluon.nn.Dense(6, activation="relu"))
    net.add(gluon.nn.Dense(3))
    net.initialize(mx.init.Xavier(), ctx=mx.cpu())
    return net


def _train(optimizer, n_layers=3, steps=4):
    """The parameters after ``steps`` steps of ``optimizer`` (first parameter at lr_mult 0.3, second wd_mult 0)."""
    net = _net(n_layers)
    params = net.collect_params()
    names = list(params.keys())
    params[names[0]].lr_mult = 0.3
    params[names[1]].wd_mult = 0.0
    trainer = gluon.Trainer(params, optimizer)
    rng = np.random.RandomState(1)
    x, y = mx.nd.array(rng.randn(8, 5)), mx.nd.array(np.arange(8) % 3)
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    for _ in range(steps):
        with autograd.record():
            out = loss(net(x), y)
        out.backward()
        trainer.step(8)
    return [p.data().asnumpy() for p in params.values()]


def _close(a, b):
    return max(float(np.abs(u - v).max()) for u, v in zip(a, b)) < 1e-5


class _PerParameterAdamW(AdamW):
    """AdamW updated one parameter at a time (its own ``update``)."""

    def update_multi_precision(self, index, weight, grad, state):
        if not isinstance(index, (list, tuple)):
            return mx.optimizer.Optimizer.update_multi_precision(self, index, weight, grad, state)
        for k in range(len(index)):
            mx.optimizer.Optimizer.update_multi_precision(self, index[k], weight[k], grad[k], state[k])
        return None


def test_more_parameters_than_one_call_holds():
    """60 layers, 120 arrays: three operator calls a step, the per-parameter result."""
    params = {"learning_rate": 0.01, "wd": 0.1}
    calls = []
    real = mx.nd.contrib.multi_adamw_update

    def counting(weights, *args, **kwargs):
        calls.append(len(weights))
        return real(weights, *args, **kwargs)

    mx.nd.contrib.multi_adamw_update = counting
    try:
        fused = _train(AdamW(**params), n_layers=59, steps=2)
    finally:
        mx.nd.contrib.multi_adamw_update = real
    assert max(calls) <= _FUSED_MAX and sum(calls) == 2 * 2 * 60
    assert _close(fused, _train(_PerParameterAdamW(**params), n_layers=59, steps=2))


@pytest.mark.parametrize("settings", [{}, {"wd": 0.1}, {"clip_gradient": 0.05}, {"rescale_grad": 0.5}])
def test_multi_tensor_adamw_follows_its_per_parameter_update(settings):
    params = {"learning_rate": 0.01, **settings}
    mine = AdamW(**params)
    assert mine.aggregate_num == _FUSED_MAX
    assert _close(_train(mine), _train(_PerParameterAdamW(**params)))


def test_a_checkpoint_resumes_with_the_multi_tensor_adamw(tmp_path):
    """The update counts and moments travel in the checkpoint (not aggregate_num); 2 + 2 epochs equal 4."""
    from ._nets import mlp

    rng = np.random.RandomState(0)
    x, y = rng.randn(24, 2, 4, 4).astype(np.float32), np.arange(24) % 3
    kw = dict(optimizer="adamw", optimizer_params={"lr": 0.02, "wd": 0.01}, batch_size=8, progress=False)
    whole = Trainer(mlp(), **kw).fit((x, y), epochs=4)
    first = Trainer(mlp(), out_dir=str(tmp_path / "run"), **kw).fit((x, y), epochs=2)
    again = Trainer(mlp(), **kw).fit((x, y), epochs=4, resume=first.last_checkpoint_)
    a = {k: p.data().asnumpy() for k, p in whole.model.collect_params().items()}
    b = {k: p.data().asnumpy() for k, p in again.model.collect_params().items()}
    assert all(np.allclose(a[k], b[k], atol=1e-6) for k in a)

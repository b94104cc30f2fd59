"""Optimizers: MXNet's own, plus AdamW (decoupled weight decay), which MXNet 1.9 lacks.

MXNet 1.9's registry has ``sgd``, ``nag``, ``adam`` and ``rmsprop`` but no
``adamw`` (only the low-level ``contrib.adamw_update`` operator), so
:class:`AdamW` is written here as a registered ``mx.optimizer.Optimizer``.
"""

from __future__ import annotations

import math

import mxnet as mx

from ..errors import UnknownNameError

__all__ = ["AdamW", "DEFAULTS", "make_optimizer_params"]

# Defaults per optimizer name (learning rate, momentum, weight decay).
DEFAULTS = {
    "sgd": {"learning_rate": 0.01, "momentum": 0.9, "wd": 1e-4},
    "nag": {"learning_rate": 0.01, "momentum": 0.9, "wd": 1e-4},
    "adam": {"learning_rate": 1e-3, "wd": 0.0},
    "adamw": {"learning_rate": 1e-3, "wd": 1e-2},
    "rmsprop": {"learning_rate": 1e-3, "wd": 0.0},
}


@mx.optimizer.register
class AdamW(mx.optimizer.Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019).

    ``w -= lr * (m_hat / (sqrt(v_hat) + epsilon) + wd * w)``: the decay is
    not added to the gradient, so it is not rescaled by Adam's second moment.
    Per-parameter ``lr_mult`` / ``wd_mult`` apply as usual.

    Parameters
    ----------
    learning_rate : float
    beta1, beta2, epsilon : float
        Adam's constants.
    **kwargs
        ``wd``, ``rescale_grad``, ``clip_gradient``... as for every MXNet optimizer.

    Examples
    --------
    >>> opt = mx.optimizer.create("adamw", learning_rate=0.01, wd=0.1)
    >>> type(opt).__name__
    'AdamW'
    """

    def __init__(self, learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-8, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon

    def create_state(self, index, weight):
        z = mx.nd.zeros(weight.shape, weight.context, dtype=weight.dtype)
        return (z, z.copy())

    def update(self, index, weight, grad, state):
        self._update_count(index)
        lr, wd = self._get_lr(index), self._get_wd(index)
        t = self._index_update_count[index]
        mean, var = state
        g = grad * self.rescale_grad
        if self.clip_gradient is not None:
            g = mx.nd.clip(g, -self.clip_gradient, self.clip_gradient)
        mean[:] = self.beta1 * mean + (1 - self.beta1) * g
        var[:] = self.beta2 * var + (1 - self.beta2) * mx.nd.square(g)
        c1, c2 = 1 - self.beta1 ** t, 1 - self.beta2 ** t
        step = lr * math.sqrt(c2) / c1
        weight[:] = weight - step * mean / (mx.nd.sqrt(var) + self.epsilon * math.sqrt(c2)) - lr * wd * weight


def make_optimizer_params(name: str, params: dict | None) -> dict:
    """The optimizer's defaults updated with ``params``; unknown names raise with suggestions."""
    name = name.lower()
    if name not in mx.optimizer.Optimizer.opt_registry:
        raise UnknownNameError("optimizer", name, set(DEFAULTS) | set(mx.optimizer.Optimizer.opt_registry))
    out = dict(DEFAULTS.get(name, {"learning_rate": 0.01}))
    out.update(params or {})
    if "lr" in out:
        out["learning_rate"] = out.pop("lr")
    return out

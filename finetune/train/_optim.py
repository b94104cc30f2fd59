"""Optimizers: MXNet's own, plus AdamW (decoupled weight decay), which MXNet 1.9 lacks.

MXNet 1.9's registry has ``sgd``, ``nag``, ``adam`` and ``rmsprop`` but no
``adamw`` (only the low-level ``contrib.adamw_update`` operator), so
:class:`AdamW` is written here as a registered ``mx.optimizer.Optimizer``.
"""

from __future__ import annotations

import math
from numbers import Real

import mxnet as mx

from .._validation import Interval, is_number, validate
from ..errors import ConfigError, UnknownNameError

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


#: The allowed values of the optimizer settings finetune knows; any other numeric setting must be finite.
PARAM_CONSTRAINTS = {
    "learning_rate": Interval(Real, 0, None),  # 0: the weights stay (e.g. to measure)
    "momentum": Interval(Real, 0, 1, closed="left"),
    "wd": Interval(Real, 0, None),
    "beta1": Interval(Real, 0, 1, closed="left"),
    "beta2": Interval(Real, 0, 1, closed="left"),
    "epsilon": Interval(Real, 0, None, closed="neither"),
    "gamma1": Interval(Real, 0, 1, closed="left"),
    "gamma2": Interval(Real, 0, 1, closed="left"),
    "rescale_grad": Interval(Real, 0, None, closed="neither"),
    "clip_gradient": [Interval(Real, 0, None, closed="neither"), None],
}


def make_optimizer_params(name: str, params: dict | None, owner: str = "the optimizer") -> dict:
    """The optimizer's defaults updated with ``params``, checked; unknown names raise with suggestions.

    Raises
    ------
    UnknownNameError
        ``name`` is not a registered MXNet optimizer.
    ConfigError
        A setting is out of its range (:data:`PARAM_CONSTRAINTS`: ``learning_rate`` (``lr``) in
        ``[0, inf)``, ``momentum`` in ``[0, 1)``, ...), or a numeric setting is not finite.

    Examples
    --------
    >>> make_optimizer_params("sgd", {"lr": 0.1})["learning_rate"]
    0.1
    """
    name = name.lower()
    if name not in mx.optimizer.Optimizer.opt_registry:
        raise UnknownNameError("optimizer", name, set(DEFAULTS) | set(mx.optimizer.Optimizer.opt_registry))
    if params is not None and not isinstance(params, dict):
        raise ConfigError(f"The 'optimizer_params' parameter of {owner} must be a dict. Got {params!r} instead.")
    out = dict(DEFAULTS.get(name, {"learning_rate": 0.01}))
    given = dict(params or {})
    if "lr" in given:
        given["learning_rate"] = given.pop("lr")
    out.update(given)
    finite = Interval(Real, None, None)
    constraints = {k: PARAM_CONSTRAINTS.get(k, finite) for k, v in out.items()
                   if k in PARAM_CONSTRAINTS or is_number(v)}
    validate(owner, out, constraints)
    return out

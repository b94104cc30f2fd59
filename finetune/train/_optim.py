"""Optimizers: MXNet's own, plus AdamW (decoupled weight decay), which MXNet 1.9 lacks.

MXNet 1.9's registry has ``sgd``, ``nag``, ``adam`` and ``rmsprop`` but no
``adamw`` (only the low-level ``contrib.adamw_update`` operator), so
:class:`AdamW` is written here as a registered ``mx.optimizer.Optimizer``.

Both Adams update the float32 parameters of a step with MXNet's multi-tensor
``multi_adamw_update``, up to 50 parameters per operator call: MXNet's own
``adam`` calls one operator per parameter, and on a fine-tuning step of
EfficientNet-Lite0 (119 parameters) those calls cost more than the
arithmetic. :func:`create_optimizer` gives the multi-tensor Adam for
``"adam"``; the update is MXNet's, up to float32 rounding.
"""

from __future__ import annotations

import math
import os
from numbers import Real

import mxnet as mx
import numpy as np

from .._validation import Interval, is_number, validate
from ..errors import ConfigError, UnknownNameError

__all__ = ["AdamW", "DEFAULTS", "create_optimizer", "make_optimizer_params"]

# Defaults per optimizer name (learning rate, momentum, weight decay).
DEFAULTS = {
    "sgd": {"learning_rate": 0.01, "momentum": 0.9, "wd": 1e-4},
    "nag": {"learning_rate": 0.01, "momentum": 0.9, "wd": 1e-4},
    "adam": {"learning_rate": 1e-3, "wd": 0.0},
    "adamw": {"learning_rate": 1e-3, "wd": 1e-2},
    "rmsprop": {"learning_rate": 1e-3, "wd": 0.0},
}


_FUSED_MAX = 50  # parameters per multi_adamw_update call: MXNet 1.9's kernel holds 50 (more abort the process)
_SGD_FUSED_MAX = 60  # the same for multi_sgd(_mom)_update


def _fusable(weight, grad) -> bool:
    return (np.dtype(weight.dtype) == np.dtype(grad.dtype) == np.float32 and weight.stype == "default"
            and grad.stype == "default" and weight.context == grad.context)


def _adam_groups(opt, indices, weights, grads, states, decoupled: bool):
    """Update what one multi-tensor call can; returns the positions left for the per-parameter path.

    The update counts advance for the fused parameters; ``(lr, wd, epsilon)``
    of each follow Adam's bias correction (``decoupled``: AdamW's).
    """
    # Adam's L2 decay joins the gradient: MXNet's own per-parameter operator does that
    rest = [k for k, (i, w, g) in enumerate(zip(indices, weights, grads))
            if not _fusable(w, g) or (opt._get_wd(i) and not decoupled)]
    fused = [k for k in range(len(indices)) if k not in set(rest)]
    opt._update_count([indices[k] for k in fused])
    groups = {}
    for k in fused:
        i, w, g = indices[k], weights[k], grads[k]
        t = opt._index_update_count[i]
        c1, c2 = 1.0 - opt.beta1 ** t, 1.0 - opt.beta2 ** t
        lr = opt._get_lr(i)
        eps = opt.epsilon * math.sqrt(c2) if decoupled else opt.epsilon
        wd = lr * opt._get_wd(i) if decoupled else 0.0
        groups.setdefault((w.context, eps), []).append((w, g, states[k], lr * math.sqrt(c2) / c1, wd))
    clip = opt.clip_gradient if opt.clip_gradient else -1.0
    for (_, eps), items in groups.items():
        for s in range(0, len(items), _FUSED_MAX):
            chunk = items[s:s + _FUSED_MAX]
            ws = [c[0] for c in chunk]
            mx.nd.contrib.multi_adamw_update(
                ws, [c[1] for c in chunk], [c[2][0] for c in chunk], [c[2][1] for c in chunk],
                opt.rescale_grad, lrs=[c[3] for c in chunk], wds=[c[4] for c in chunk], etas=[1.0] * len(chunk),
                beta1=opt.beta1, beta2=opt.beta2, epsilon=eps, clip_gradient=clip, out=ws)
    return rest


class _MultiTensor:
    """Mixin: lists of parameters (what MXNet's updater passes when ``aggregate_num`` > 0) go through
    :func:`_adam_groups`; single parameters and the rest take the class's own per-parameter update."""

    _decoupled = False

    def update_multi_precision(self, index, weight, grad, state):
        if not isinstance(index, (list, tuple)):
            return super().update_multi_precision(index, weight, grad, state)
        if self.multi_precision and any(np.dtype(w.dtype) == np.float16 for w in weight):
            rest = range(len(index))
        else:
            rest = _adam_groups(self, list(index), list(weight), list(grad), list(state), self._decoupled)
        for k in rest:
            super().update_multi_precision(index[k], weight[k], grad[k], state[k])
        return None

    def update(self, index, weight, grad, state):
        if isinstance(index, (list, tuple)):
            return self.update_multi_precision(index, weight, grad, state)
        return super().update(index, weight, grad, state)


class Adam(_MultiTensor, mx.optimizer.Adam):
    """MXNet's Adam, the float32 parameters of a step updated ``_FUSED_MAX`` per operator call.

    Not registered: :func:`create_optimizer` gives it for ``"adam"``, and its
    checkpoints name it ``adam`` like MXNet's.

    Examples
    --------
    >>> opt = create_optimizer("adam", {"learning_rate": 0.01})
    >>> type(opt).__name__, opt.aggregate_num
    ('Adam', 50)
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.aggregate_num = _FUSED_MAX


def create_optimizer(name: str, params: dict):
    """The optimizer ``name`` with ``params``: the multi-tensor :class:`Adam` for ``"adam"``, else MXNet's registry.

    MXNet's SGD updates 4 parameters per multi-tensor call unless
    ``MXNET_OPTIMIZER_AGGREGATION_SIZE`` says otherwise; here it updates
    :data:`_SGD_FUSED_MAX` (the most its kernel holds).

    Examples
    --------
    >>> opt = create_optimizer("sgd", {"learning_rate": 0.1})
    >>> type(opt).__name__, opt.aggregate_num
    ('SGD', 60)
    """
    if name.lower() == "adam":
        return Adam(**params)
    opt = mx.optimizer.create(name, **params)
    if type(opt) is mx.optimizer.SGD and "MXNET_OPTIMIZER_AGGREGATION_SIZE" not in os.environ:
        opt.aggregate_num = _SGD_FUSED_MAX
    return opt


@mx.optimizer.register
class AdamW(_MultiTensor, mx.optimizer.Optimizer):
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

    _decoupled = True

    def __init__(self, learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-8, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.aggregate_num = _FUSED_MAX

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

"""What a trial run changes on a model, recorded before and put back after: :class:`ModelState`.

:func:`~finetune.train.lr_find` trains the caller's model for a few steps
through a :class:`~finetune.train.Trainer`, which applies a
:class:`~finetune.train.LayerLRPolicy` (``lr_mult``, ``wd_mult``,
``grad_req``, BatchNorm modes), moves the parameters to its devices, ties them
to its Gluon trainer and trains their values, gradients and BatchNorm running
statistics. :meth:`ModelState.capture` records each of these and
:meth:`ModelState.restore` puts them back, so the test leaves the model as it
found it.

Gluon offers no public way to read or reset the trainer a parameter is tied to
(``Parameter._trainer``, which would keep the trial's optimizer state alive), so
this module reaches into it; BatchNorm modes go through
:mod:`finetune.models.graph` like everywhere else.
"""

from __future__ import annotations

import mxnet as mx

from ..errors import ModelError
from ..models import ModelProtocol
from ..models.graph import batchnorm_global_stats, batchnorm_modes, set_block_batchnorm_global_stats
from ._policy import _ORIG

__all__ = ["ModelState"]

_ABSENT = object()


class ModelState:
    """Every parameter's values, gradients, devices and training attributes, and the BatchNorm modes.

    Examples
    --------
    >>> from mxnet.gluon import nn
    >>> net = nn.Dense(2, in_units=3); net.initialize(mx.init.One())
    >>> state = ModelState.capture(net)
    >>> net.weight.lr_mult = 10.0; net.weight.grad_req = "null"; net.weight.set_data(net.weight.data() * 5)
    >>> state.restore()
    >>> net.weight.lr_mult, net.weight.grad_req, float(net.weight.data().sum().asscalar())
    (1.0, 'write', 6.0)
    """

    def __init__(self, model, params: dict, modes: dict, layers: dict | None):
        self.model, self.params, self.modes, self.layers = model, params, modes, layers

    @classmethod
    def capture(cls, model) -> "ModelState":
        """Record the state of ``model`` (a Gluon block whose parameters all have values).

        Raises
        ------
        ModelError
            A parameter has no value yet (not initialised, or its initialisation is deferred).
        """
        params, missing = {}, []
        for name, p in model.collect_params().items():
            try:
                values = p.list_data()
            except RuntimeError:  # also DeferredInitializationError
                missing.append(name)
                continue
            params[name] = {
                "value": values[0].copy(), "ctx": list(p.list_ctx()), "lr_mult": p.lr_mult, "wd_mult": p.wd_mult,
                "grad_req": p.grad_req, "orig": getattr(p, _ORIG, _ABSENT), "trainer": p._trainer,
                "grads": [g.copy() for g in p.list_grad()] if p.grad_req != "null" else None,
            }
        if missing:
            raise ModelError(f"The model has {len(missing)} parameter(s) without values "
                             f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}). Initialise them "
                             "first: give the layers their input sizes (e.g. in_units=) or pass one batch "
                             "through the model.")
        return cls(model, params, batchnorm_modes(model), _symbol_modes(model))

    def restore(self) -> None:
        """Put the recorded state back into the model."""
        self._restore_batchnorm()
        for name, p in self.model.collect_params().items():
            saved = self.params.get(name)
            if saved is None:
                continue
            p._set_trainer(None)
            p._set_trainer(saved["trainer"])
            if p.grad_req != saved["grad_req"]:
                p.grad_req = saved["grad_req"]
            if list(p.list_ctx()) != saved["ctx"]:
                p.reset_ctx(saved["ctx"])
            p.lr_mult, p.wd_mult = saved["lr_mult"], saved["wd_mult"]
            if saved["orig"] is _ABSENT:
                if hasattr(p, _ORIG):
                    delattr(p, _ORIG)
            else:
                setattr(p, _ORIG, saved["orig"])
            p.set_data(saved["value"])
            for grad, value in zip(p.list_grad() if saved["grads"] is not None else [], saved["grads"] or []):
                grad[:] = value.as_in_context(grad.context)

    def _restore_batchnorm(self) -> None:
        """Undo changed BatchNorm modes: Gluon ``nn.BatchNorm`` blocks, then a model's own graph."""
        now = batchnorm_modes(self.model)
        for mode in ("frozen", "batch"):
            names = {n for n, m in self.modes.items() if m == mode and now.get(n, mode) != mode}
            if names:
                set_block_batchnorm_global_stats(self.model, names.__contains__, value=mode == "frozen")
        if self.layers is None:
            return
        now = _symbol_modes(self.model)
        for frozen in (True, False):
            layers = [n for n, f in self.layers.items() if f == frozen and now.get(n, frozen) != frozen]
            if layers:
                self.model.freeze_batchnorm(layers, frozen=frozen)


def _symbol_modes(model):
    """``{layer: frozen}`` of a model that freezes BatchNorm in its own graph (finetune's networks), else ``None``."""
    if isinstance(model, ModelProtocol):
        return batchnorm_global_stats(model.to_symbol())
    return None

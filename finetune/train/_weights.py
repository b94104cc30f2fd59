"""Copies of a model's weights kept beside training: an exponential moving average, the best epoch's.

- :class:`WeightAverage` — the exponential moving average (EMA) of every
  parameter, updated after each optimizer step. Evaluating and saving the
  averaged weights instead of the last ones smooths out the noise of the
  final steps, which matters most with few images and few steps an epoch.
- :class:`KeepBest` — a callback that remembers the weights of the epoch with
  the best validation score (the averaged ones when averaging is on) and puts
  them back into the model when training ends. The weights travel in the
  trainer's checkpoints, so a resumed run can still go back to an epoch
  trained before the interruption.
"""

from __future__ import annotations

import contextlib
import logging

import mxnet as mx
import numpy as np

from ..errors import check_choice, check_range
from ._callbacks import Callback, _auto_mode, _better

__all__ = ["KeepBest", "WeightAverage"]

log = logging.getLogger(__name__)

_FUSED_MAX = 60  # arrays per multi_sgd_update call: MXNet 1.9's kernel holds 60 (more crash the process)


class WeightAverage:
    """Exponential moving average of parameters: ``avg = d * avg + (1 - d) * w`` after every step.

    The decay warms up as ``min(decay, (1 + t) / (10 + t))`` over the first
    steps ``t``, so the average is not dominated by the initial weights when
    a run has only a few hundred steps.

    Parameters
    ----------
    params : dict of str to mxnet.gluon.Parameter
        The parameters to average (e.g. ``model.collect_params()``); the
        average lives on the first context of each.
    decay : float
        In ``(0, 1)``; ``0.999`` averages over roughly the last thousand steps.

    Examples
    --------
    >>> import mxnet as mx
    >>> from mxnet.gluon import nn
    >>> net = nn.Dense(1, in_units=1); net.initialize(mx.init.One())
    >>> ema = WeightAverage(net.collect_params(), decay=0.5)
    >>> net.weight.set_data(mx.nd.array([[3.0]])); ema.update()
    >>> with ema.swapped():
    ...     float(net.weight.data().asscalar()) < 3.0
    True
    >>> float(net.weight.data().asscalar())
    3.0
    """

    def __init__(self, params, decay: float = 0.999):
        check_range("WeightAverage", "decay", decay, 0, 1, low_open=True, high_open=True)
        self.decay = float(decay)
        self.params = dict(params.items() if hasattr(params, "items") else params)
        self.steps = 0
        self.average = {n: p.list_data()[0].copy() for n, p in self.params.items()}

    def __repr__(self) -> str:
        return f"WeightAverage({len(self.params)} parameters, decay={self.decay}, steps={self.steps})"

    def current_decay(self) -> float:
        """The decay the next :meth:`update` uses (warmed up over the first steps)."""
        return min(self.decay, (1.0 + self.steps) / (10.0 + self.steps))

    def update(self) -> None:
        """Fold the parameters' current values into the average.

        Float32 parameters are updated by MXNet's multi-tensor SGD operator,
        one call for up to 60 of them (four operator calls per parameter from
        Python cost more than the arithmetic); others one by one.
        """
        d = self.current_decay()
        fused = []
        for n, p in self.params.items():
            avg, w = self.average[n], p.list_data()[0]
            if avg.dtype == w.dtype == np.float32 and avg.context == w.context and w.stype == "default":
                fused.append((avg, w))
                continue
            if w.dtype != avg.dtype:
                w = w.astype(avg.dtype)
            avg[:] = d * avg + (1.0 - d) * w
        for i in range(0, len(fused), _FUSED_MAX):
            chunk = fused[i:i + _FUSED_MAX]
            k = len(chunk)
            # the operator computes avg = (1 - lr * wd) * avg - lr * rescale_grad * w, here d * avg + (1 - d) * w
            mx.nd.multi_sgd_update(*(a for pair in chunk for a in pair), lrs=(1.0,) * k, wds=(1.0 - d,) * k,
                                   rescale_grad=-(1.0 - d), num_weights=k, out=[avg for avg, _ in chunk])
        self.steps += 1

    def _set(self, values) -> None:
        for n, p in self.params.items():
            p.set_data(values[n])

    @contextlib.contextmanager
    def swapped(self):
        """Inside the block the parameters hold the average; afterwards their own values again."""
        raw = {n: p.list_data()[0].copy() for n, p in self.params.items()}
        self._set(self.average)
        try:
            yield self
        finally:
            self._set(raw)

    def copy_to_model(self) -> None:
        """Overwrite the parameters with the average (e.g. before saving the model)."""
        self._set(self.average)

    def state_arrays(self) -> dict:
        """The average as ``{name: NDArray}`` (for checkpoints), plus the step count."""
        out = {f"avg:{n}": a for n, a in self.average.items()}
        out["steps"] = mx.nd.array([self.steps], dtype="float64")
        return out

    def load_state_arrays(self, arrays: dict) -> None:
        """Restore what :meth:`state_arrays` returned."""
        for n in self.average:
            key = f"avg:{n}"
            if key in arrays:
                self.average[n][:] = arrays[key].as_in_context(self.average[n].context)
        if "steps" in arrays:
            self.steps = int(arrays["steps"].asnumpy()[0])


class KeepBest(Callback):
    """Put the weights of the best validation epoch back into the model when training ends.

    The weights are those the epoch was evaluated with: the averaged ones when
    the trainer averages weights (``Trainer(ema=...)``). Ties go to the later
    epoch, so with a score that stops improving the last good weights win.

    Its state — the best score, its epoch and its weights — is saved in the
    trainer's checkpoints (the weights as the checkpoint's
    ``callbacks.arrays`` member) and comes back with
    ``Trainer.fit(..., resume=...)``. A checkpoint written before the
    weights were saved restores the score and epoch only; if that epoch is
    still the best at the end, the last epoch's weights are kept, with a
    warning in the log.

    Parameters
    ----------
    monitor : str
        A key of the history rows, e.g. ``"val_top1"`` or ``"val_loss"``.
    mode : {"auto", "max", "min"}
    min_delta : float
        Restore the best epoch only if it beats the last epoch by more than this.

    Attributes
    ----------
    best_epoch_ : int or None
    best_ : float or None
    restored_ : bool
        Whether training ended with the best epoch's weights (else the last's).

    Examples
    --------
    >>> KeepBest("val_top1")
    KeepBest(monitor='val_top1')
    """

    def __init__(self, monitor: str = "val_top1", mode: str = "auto", min_delta: float = 0.0):
        check_choice("KeepBest", "mode", mode, ("auto", "max", "min"))
        check_range("KeepBest", "min_delta", min_delta, 0)
        self.monitor, self.mode, self.min_delta = monitor, mode, float(min_delta)
        self.best_, self.best_epoch_, self._weights, self.last_ = None, None, None, None
        self.restored_ = False

    def __repr__(self) -> str:
        return f"KeepBest(monitor={self.monitor!r})"

    def on_epoch_end(self, trainer, epoch, logs):
        value = logs.get(self.monitor)
        if value is None:
            return
        self.last_ = value
        mode = _auto_mode(self.mode, self.monitor)
        if self.best_ is None or _better(mode, value, self.best_) or value == self.best_:
            self.best_, self.best_epoch_ = value, epoch
            self._weights = trainer.evaluation_weights()

    def on_train_end(self, trainer):
        if self.best_epoch_ is None or self.best_epoch_ == trainer.epoch_ - 1 or self.last_ is None:
            return
        if not _better(_auto_mode(self.mode, self.monitor), self.best_, self.last_, self.min_delta):
            log.info("Keeping the last epoch's weights: the best epoch (%d, %s %.4g) is within %.3g of it.",
                     self.best_epoch_, self.monitor, self.best_, self.min_delta)
            return
        if self._weights is None:
            log.warning("Keeping the last epoch's weights: the best epoch (%d, %s %.4g) was trained before the "
                        "resume, and the checkpoint resumed from does not hold its weights (it was written by "
                        "an earlier version).", self.best_epoch_, self.monitor, self.best_)
            return
        log.info("Keeping the weights of epoch %d (%s %.4g) instead of the last epoch's (%.4g).",
                 self.best_epoch_, self.monitor, self.best_, self.last_)
        trainer.set_weights(self._weights)
        self.restored_ = True

    def state_dict(self):
        return {"best": self.best_, "best_epoch": self.best_epoch_, "last": self.last_}

    def load_state_dict(self, state):
        self.best_, self.best_epoch_, self.last_ = state.get("best"), state.get("best_epoch"), state.get("last")
        self._weights = None

    def state_arrays(self) -> dict:
        """The best epoch's weights, ``{parameter name: NDArray}`` (empty before the first validation)."""
        if self._weights is None:
            return {}
        return {n: mx.nd.array(v, dtype=v.dtype) for n, v in self._weights.items()}

    def load_state_arrays(self, arrays: dict) -> None:
        """Restore :meth:`state_arrays`; ``{}`` (a checkpoint without them) leaves no weights to restore."""
        self._weights = {n: a.asnumpy() for n, a in arrays.items()} or None


def snapshot(params) -> dict:
    """``{name: numpy array}`` copies of the parameters' values."""
    return {n: p.list_data()[0].asnumpy().copy() for n, p in params.items()}


def restore(params, values: dict) -> None:
    """Set each parameter (on all its contexts) from a :func:`snapshot`."""
    for n, p in params.items():
        if n in values:
            p.set_data(mx.nd.array(values[n], dtype=np.asarray(values[n]).dtype))

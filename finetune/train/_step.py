"""One optimizer step of a :class:`~finetune.train.Trainer`: forward, backward, update, with the input checks.

Kept apart from the epoch loop in ``_trainer.py`` because of what it must get
right for every batch: non-finite inputs never reach the weights (checked on
the devices, read back once), the workers of a cluster all step, and the
weight average follows each update.
"""

from __future__ import annotations

import math

import mxnet as mx
from mxnet import autograd, gluon

from ._devices import zero_idle_gradients
from ._evaluate import batch_stats, input_peak
from ._mixing import mixed_losses
from ._weights import WeightAverage

__all__ = ["optimizer_step"]


def optimizer_step(trainer, net, x, y, global_n, mix=None) -> tuple:
    """Forward, backward and update of ``trainer`` on one batch: ``(stats, whether every input was finite)``.

    Non-finite inputs never update the weights. Their check is a maximum
    computed on each device (:func:`input_peak`), read back with the loss
    statistics in one transfer — unless the forward pass itself would
    write the inputs into live BatchNorm statistics, in which case it is
    read before the forward pass. One worker also skips the update when
    the loss is not finite; the workers of a cluster all step.
    """
    xs, ys = trainer._split(x, y)
    peaks = [input_peak(xi) for xi in xs]
    if peaks[0] is None:  # integer inputs hold no NaN
        peaks = None
    elif trainer._inputs_first:
        if not all(math.isfinite(float(p.asscalar())) for p in peaks):
            return None, False
        peaks = None
    if mix is not None:
        y2s = gluon.utils.split_and_load(mix[0], trainer.ctx_[:len(xs)], even_split=False)
    with autograd.record():
        outs = [net(xi) for xi in xs]
        losses = [trainer.loss(o, yi) for o, yi in zip(outs, ys)]
        if mix is not None:
            losses = mixed_losses(trainer.loss, losses, outs, y2s, mix[1])
    autograd.backward(losses)
    if len(xs) < len(trainer.ctx_):  # fewer images than devices: the idle ones contribute zeros
        zero_idle_gradients(trainer._tparams, len(xs))
    stats = None
    if trainer.num_workers_ == 1 or peaks is not None:
        stats = sum(batch_stats(o, yi, l, p) for o, yi, l, p in zip(outs, ys, losses, peaks or [None] * len(outs)))
        if peaks is not None and not math.isfinite(stats[4]):
            return stats[:4], False
        if trainer.num_workers_ == 1 and not math.isfinite(stats[0]):
            return stats[:4], True
    trainer._trainer.step(global_n)
    if trainer._distributed:
        # MXNet 1.9's threaded engine can miss the completion of a parameter-server reply
        # when one array is later waited on alone (``save_parameters`` then hangs for ever);
        # waiting for the whole engine here, once the step is queued, never has.
        mx.nd.waitall()
    if trainer.ema is not None:
        if trainer._ema is None:
            trainer._ema = WeightAverage(trainer.model.collect_params(), trainer.ema)
        trainer._ema.update()
    if stats is None:
        stats = sum(batch_stats(o, yi, l) for o, yi, l in zip(outs, ys, losses))
    return stats[:4], True


def check_weights_finite(trainer, epoch: int, row: dict) -> None:
    """Raise :class:`~finetune.errors.NonFiniteLossError` when a trained weight is NaN or infinite after ``epoch``.

    The loss of a batch is computed before its update, so the step that
    makes the weights overflow (a learning rate of ``1e39``) still shows a
    finite loss; this check, before the epoch's checkpoint and callbacks, keeps
    such weights out of every checkpoint and model directory.
    """
    norms = [p.data(trainer.ctx_[0]).norm().reshape((1,)) for p in trainer._tparams]
    if not norms or math.isfinite(mx.nd.add_n(*norms).asscalar()):
        return
    from ..errors import NonFiniteLossError

    val = f" (validation loss {row['val_loss']:.4g})" if "val_loss" in row else ""
    raise NonFiniteLossError(f"The weights became NaN or infinite in epoch {epoch}{val}: training diverged. Lower the "
                             f"learning rate (it is {row.get('lr', float('nan')):.4g} now). The last good checkpoint "
                             f"is {trainer.last_checkpoint_ or 'none'}.")

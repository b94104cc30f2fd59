"""Setting up a :class:`~finetune.train.Trainer`: its devices, kvstore and Gluon trainer, and the checks before fit.

The Trainer's settings are a :class:`~finetune.train.TrainConfig`, checked
when it is made; the functions here turn them, the policy and the devices
into what the fit loop runs on (:func:`setup`), and check what only the data
can tell (:func:`check_labels`).
"""

from __future__ import annotations

import logging

import mxnet as mx
import numpy as np
from mxnet import gluon

from .._constraints import FLOAT32_MAX
from .._context import resolve_ctx
from ..errors import ConfigError, DataError, DeviceError
from ..models import ModelProtocol
from ..models.graph import batchnorm_modes
from ._batches import check_dataset_labels
from ._devices import place_parameters, start_kvstore
from ._launch import claim_kvstore
from ._losses import LabelSmoothingLoss
from ._policy import _ORIG, LayerLRPolicy

__all__ = ["check_gpu", "check_labels", "check_policy", "setup", "updates_statistics"]

log = logging.getLogger("finetune.train._trainer")


def check_policy(policy) -> LayerLRPolicy:
    """``policy``, or the default (everything at 1x) for ``None``; anything else raises :class:`ConfigError`."""
    if policy is None:
        return LayerLRPolicy()
    if not isinstance(policy, LayerLRPolicy):
        raise ConfigError(f"The 'policy' parameter of Trainer must be a LayerLRPolicy or None. "
                          f"Got {policy!r} instead.")
    return policy


def check_gpu(ctx) -> None:
    """Raise :class:`DeviceError` unless every device of ``ctx`` is a GPU (float16 training needs them)."""
    ctxs = resolve_ctx(ctx)
    if mx.context.num_gpus() == 0 or any(c.device_type != "gpu" for c in ctxs):
        raise DeviceError(
            "mixed_precision=True needs GPU contexts (float16 kernels); MXNet sees "
            f"{mx.context.num_gpus()} GPU(s) and ctx is {ctxs}. Pass mixed_precision=False or ctx='gpu:0'."
        )


def setup(trainer) -> None:
    """Apply the policy, place the parameters on the devices, create the kvstore and the Gluon trainer."""
    trainer.ctx_ = resolve_ctx(trainer.ctx)
    model = trainer.model
    trainer.policy.apply(model, epoch=trainer.epoch_)
    params = model.collect_params()
    place_parameters(params, trainer.ctx_)
    if trainer.mixed_precision:
        model.cast("float16")
        trainer.optimizer_params["multi_precision"] = True
    if trainer.hybridize:
        model.hybridize(static_alloc=True)
    kv = trainer.kvstore
    trainer.rank_, trainer.num_workers_ = 0, 1
    trainer._distributed = bool(kv) and kv.startswith("dist")  # MXNet's parameter server
    if trainer._distributed:
        kv = claim_kvstore(kv, params)  # one per process; every parameter becomes rank 0's
        trainer.rank_, trainer.num_workers_ = kv.rank, kv.num_workers
        log.info("kvstore %s: worker %d of %d", kv.type, trainer.rank_, trainer.num_workers_)
    trainer._trainable = set(trainer.policy.trainable_names(model))
    tparams = [p for n, p in params.items() if n in trainer._trainable]
    if not tparams:
        raise ConfigError("The LayerLRPolicy leaves no parameter to train.")
    trainer._trainer = gluon.Trainer(tparams, trainer.optimizer, dict(trainer.optimizer_params), kvstore=kv,
                                     update_on_kvstore=False)
    trainer._tparams = tparams
    _check_rates(trainer._trainer.optimizer, tparams)
    if trainer.num_workers_ > 1 or trainer._distributed:
        start_kvstore(trainer._trainer)


def _check_rates(optimizer, tparams) -> None:
    """Refuse a learning rate or weight decay whose product with a parameter's multiplier leaves float32's range.

    Each value passes its own check; MXNet's update operator takes the products
    in float32 and failed with a traceback (``Invalid Parameter format for lrs``).
    """
    for what, base, mult in (("learning rate", optimizer.learning_rate, "lr_mult"), ("weight decay", optimizer.wd,
                                                                                       "wd_mult")):
        top = float(base or 0) * max(float(getattr(p, mult, 1.0)) for p in tparams)
        if not abs(top) <= FLOAT32_MAX:
            raise ConfigError(f"The {what} {base:g} times the largest per-layer multiplier gives {top:g}, beyond "
                              f"float32's range ({FLOAT32_MAX:.4g}) that MXNet computes in. Lower one of them.")


def check_labels(trainer, train_ds, val_ds) -> None:
    """With a class-index loss: every label of the data sets is a whole number below the model's class count."""
    if not _class_index_loss(trainer.loss):
        return
    model = trainer.model
    k = model.num_classes if isinstance(model, ModelProtocol) else _output_width(model, train_ds, trainer.ctx_[0])
    if k is not None and k < 2:
        raise DataError(f"A classifier needs at least 2 classes; this model has {k}. Give images of two or more "
                        "classes (one sub-folder per class).")
    check_dataset_labels(train_ds, k, "train")
    check_dataset_labels(val_ds, k, "val")
    names = model.class_names if isinstance(model, ModelProtocol) else None
    for what, ds in (("train", train_ds), ("val", val_ds)):
        theirs = getattr(ds, "class_names", None)
        if names and theirs and list(theirs) != list(names):
            raise DataError(f"The {what!r} images name the classes {list(theirs)}, the model {list(names)}: "
                            "a label is a position in that list, so the images would be read as other classes. "
                            "Pack training and validation images from folders with the same class sub-folders "
                            "(or one split of one folder), and build the model for those classes.")


def _output_width(model, dataset, ctx):
    """The number of logits a plain block gives (its class count), from one item of ``dataset``; None if unknown."""
    try:
        x = dataset[0][0]
        x = (x if isinstance(x, mx.nd.NDArray) else mx.nd.array(np.asarray(x, np.float32)))
        out = model(x.expand_dims(0).as_in_context(ctx))
    except (mx.base.MXNetError, ValueError, TypeError, IndexError, AttributeError):  # reported by training
        return None
    out = out[0] if isinstance(out, (list, tuple)) else out
    return int(out.shape[-1]) if out.ndim == 2 else None


def _class_index_loss(loss) -> bool:
    """Whether ``loss`` takes class indices as labels (so they must be whole numbers in ``[0, K)``)."""
    if isinstance(loss, LabelSmoothingLoss):
        return True
    return isinstance(loss, gluon.loss.SoftmaxCrossEntropyLoss) and getattr(loss, "_sparse_label", True)


def updates_statistics(net) -> bool:
    """Whether a training forward pass of ``net`` writes into auxiliary states (live BatchNorm statistics).

    Auxiliary states (parameters without gradients) that are not the
    statistics of a frozen BatchNorm layer count as written: a NaN input
    would reach them before any check after the forward pass.
    """
    modes = batchnorm_modes(net)
    return any(modes.get(name) != "frozen" for name, p in net.collect_params().items()
               if getattr(p, _ORIG, p.grad_req) == "null")

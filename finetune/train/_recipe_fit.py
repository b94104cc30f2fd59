"""Running a :class:`~finetune.train.Recipe`: the head warm-up, then full fine-tuning.

:meth:`Recipe.fit <finetune.train.Recipe.fit>` delegates here; the decisions
themselves (input size, policy, schedule, augmentation, test-time
augmentation) are the recipe's. The model leaves with the recipe's input
size in its preprocessing and its test-time augmentation in its
``inference`` record, so a saved model predicts the way it was validated.

With a ``dist_*`` kvstore every worker runs this with the same arguments.
MXNet serves one trainer per worker process over the parameter server, so
the head warm-up runs locally on every worker, on all the training data with
the same seed, and only the fine-tuning stage trains over the parameter
server; when it starts, every parameter becomes rank 0's (so the workers
fine-tune the same warmed-up head), and a learning rate found by the LR-range
test is rank 0's too. From then on the workers apply the same summed
gradients to the same weights, so the weight average, validation, the best
epoch kept and early stopping agree. Only rank 0 writes into ``out_dir``.
(With ``epochs=0`` the warm-up is the stage that trains over the parameter
server.)
"""

from __future__ import annotations

import json
import logging
import math
import os

import mxnet as mx

from .._file_writes import atomic_write
from ..data import RecordDataset
from ..errors import ConfigError
from ._batches import non_empty, warn_if_validation_is_training
from ._callbacks import EarlyStopping
from ._config import TrainConfig
from ._launch import broadcast, dist_kvstore, is_distributed, worker_rank
from ._lr_find import lr_find
from ._policy import LayerLRPolicy
from ._resume import recipe_settings, require_checkpoint
from ._trainer import Trainer
from ._weights import KeepBest

__all__ = ["fit_recipe"]

log = logging.getLogger("finetune.train._recipe")


def fit_recipe(recipe, model, train, val=None, *, ctx=None, out_dir=None, workers=None, progress=True,
               callbacks=None, kvstore="device", resume: bool = False, checkpoint_every: int = 0,
               plan_unlabeled=None):
    """Run ``recipe`` on ``model``; the parameters and return value are those of :meth:`Recipe.fit`.

    ``plan_unlabeled``: the unlabelled images of the self-training this run is a stage of (for the plan only).
    """
    rank = worker_rank(kvstore)  # every dist_* worker creates the process's kvstore here
    last = require_checkpoint(out_dir, "recipe") if resume else None  # resuming never starts afresh
    writer = out_dir if rank == 0 else None  # one writer per cluster
    plan = recipe.plan(model, train, val, unlabeled=plan_unlabeled)
    if rank == 0:
        log.info("%r decides:\n%s", recipe, plan)
    recipe = recipe.replace(epochs=plan.epochs)
    if recipe.schedule == "cosine" and recipe.epochs and recipe.warmup_epochs >= recipe.epochs:
        log.warning("Recipe: warmup_epochs=%g is not shorter than the %d fine-tuning epoch(s), so the learning rate "
                    "would never reach its base value; the warm-up is shortened to %g epoch(s). Set a shorter "
                    "warmup_epochs or more epochs.", recipe.warmup_epochs, recipe.epochs,
                    recipe.make_schedule(recipe.epochs).warmup_epochs)
    s = plan.size
    model.preprocess = model.preprocess.replace(size=(s, s), resize=s)
    pre = model.preprocess
    # how the trained model is meant to predict travels with it (config.json "inference")
    model.inference = {"tta": "mirror" if recipe.tta else None}
    if writer:
        os.makedirs(writer, exist_ok=True)
        atomic_write(os.path.join(writer, "plan.txt"), str(plan) + "\n")
    train_path, val_path = _path(train, "train"), _path(val, "val") if val is not None else None
    plain_train = non_empty(RecordDataset(train_path, pre), "train")
    val_ds = non_empty(RecordDataset(val_path, pre), "val") if val_path else None
    if val_ds is not None:
        warn_if_validation_is_training(plain_train, val_ds)
    head_history = []
    if resume:
        log.info("recipe: resuming the fine-tuning stage from %s", last)
    if recipe.head_epochs and not resume:
        # one stage per process trains over the parameter server: the last one
        warm_kvstore = "device" if is_distributed(kvstore) and recipe.epochs else kvstore
        warm_config = TrainConfig(optimizer="adam", optimizer_params={"learning_rate": recipe.head_lr},
                                  batch_size=recipe.batch_size, seed=recipe.seed, workers=workers, progress=progress,
                                  loss=recipe.loss_spec(), kvstore=warm_kvstore,
                                  out_dir=os.path.join(writer, "head") if writer else None)
        warm = Trainer(model, warm_config, policy=LayerLRPolicy.head_only(), ctx=ctx)
        warm.fit(plain_train, val_ds, epochs=recipe.head_epochs)
        head_history = warm.history_
    if not recipe.epochs:
        return warm if recipe.head_epochs and not resume else None
    aug = recipe.augmentation()
    train_ds = RecordDataset(train_path, pre, train=aug is not None, augment=aug)
    lr = recipe.lr
    opt = {"wd": recipe.wd}
    if recipe.optimizer in ("sgd", "nag"):
        opt["momentum"] = recipe.momentum
    policy = recipe.policy(model)
    if lr == "find":
        saved = os.path.join(out_dir, "lr_find.json") if out_dir else None
        if resume and saved and os.path.isfile(saved):
            with open(saved, encoding="utf-8") as f:
                lr = float(json.load(f)["suggestion"])
        else:
            found = lr_find(model, train_ds, policy=policy, optimizer=recipe.optimizer, optimizer_params=opt,
                            batch_size=recipe.batch_size, ctx=ctx, loss=recipe.loss(), seed=recipe.seed,
                            progress=progress)
            lr = found.suggestion
            if saved and writer:
                found.save(saved)
        if is_distributed(kvstore):  # every worker trains with rank 0's rate
            lr = float(broadcast(dist_kvstore(kvstore), [mx.nd.array([lr])])[0].asscalar())
        log.info("recipe: LR-range test suggests %.3g", lr)
    cbs = list(callbacks or [])
    if val_ds is not None and recipe.keep_best:
        # two standard errors of an accuracy on this many images: smaller differences are noise
        cbs.append(KeepBest("val_top1", min_delta=2 * math.sqrt(0.25 / max(len(val_ds), 1))))
    if val_ds is not None and recipe.early_stopping:
        cbs.append(EarlyStopping("val_top1", patience=recipe.early_stopping))
    config = TrainConfig(optimizer=recipe.optimizer, optimizer_params={"learning_rate": lr, **opt},
                         batch_size=recipe.batch_size, schedule=recipe.make_schedule(), loss=recipe.loss_spec(),
                         seed=recipe.seed, workers=workers, out_dir=os.path.join(out_dir, "fine_tune") if out_dir
                         else None, progress=progress, ema=recipe.ema, tta=recipe.tta, kvstore=kvstore,
                         checkpoint_every=checkpoint_every, mixup=recipe.mixup, cutmix=recipe.cutmix)
    trainer = Trainer(model, config, policy=policy, ctx=ctx)
    trainer.run_settings = recipe_settings(recipe)  # recorded in its checkpoints, compared on resume
    trainer.fit(train_ds, val_ds, epochs=recipe.epochs, callbacks=cbs, resume=last if resume else None)
    trainer.head_history_ = head_history
    trainer.recipe_plan_ = plan
    return trainer


def _path(data, what) -> str:
    if isinstance(data, RecordDataset):
        return data.path
    if isinstance(data, (str, os.PathLike)):
        return os.fspath(data)
    raise ConfigError(f"Recipe.fit needs {what} records: a RecordDataset or a .rec path. "
                      f"Got {type(data).__name__} instead.")

"""The hand-set recipe: one :class:`~finetune.train.Trainer` with exactly the settings given.

:class:`ManualRecipe` (``Recipe.preset("manual", ...)`` or
``Recipe.manual(...)``) is what ``finetune train --recipe manual`` runs: a
named :class:`~finetune.train.LayerLRPolicy` preset, a named schedule, the
optimizer's own defaults, no warm-up stage, no weight average. It has the
same surface as :class:`~finetune.train.Recipe` (``build_model``, ``plan``,
``fit``), so the command line builds, plans and fits either the same way; the
defaults of the hand-set mode live here, not in the command line.
"""

from __future__ import annotations

import dataclasses
import os
from numbers import Integral, Real

from .._file_writes import atomic_write
from .._fields import changed_fields, replace_fields, validate_fields
from .._validation import SEED, InstanceOf, Interval, Options, Sequence
from ..data import RecordDataset
from ..errors import ConfigError
from ._batches import warn_if_validation_is_training
from ._config import TrainConfig
from ._launch import worker_rank
from ._optim import make_optimizer_params
from ._policy import LayerLRPolicy
from ._resume import recipe_settings, require_checkpoint

__all__ = ["MANUAL_CONSTRAINTS", "ManualRecipe"]

_BOOL = Options([True, False])

#: The allowed values of every :class:`ManualRecipe` field.
MANUAL_CONSTRAINTS = {
    "epochs": Interval(Integral, 0, None),
    "batch_size": Interval(Integral, 1, None),
    "optimizer": InstanceOf(str, name="an optimizer name (str)"),
    "lr": [Interval(Real, 0, None, closed="neither"), None],
    "momentum": [Interval(Real, 0, 1, closed="left"), None],
    "wd": [Interval(Real, 0, None), None],
    "policy": Options(["all", "pretrained", "boosted-head", "head-only"]),
    "backbone_lr_mult": Interval(Real, 0, None),
    "freeze_until": [InstanceOf(str, name="a layer name"), None],
    "freeze_bn": _BOOL,
    "head_epochs": Interval(Integral, 0, None),
    "schedule": Options(["constant", "step", "cosine", "plateau"]),
    "factor": Interval(Real, 0, 1, closed="right"),
    "step_epochs": Sequence(Interval(Integral, 1, None)),
    "warmup_epochs": Interval(Real, 0, None),
    "patience": Interval(Integral, 0, None),
    "stop_after": [Interval(Integral, 1, None), None],
    "dropout": Interval(Real, 0, 1, closed="left"),
    "input_size": [Interval(Integral, 16, 2048), Options(["auto"])],
    "augment": _BOOL,
    "seed": SEED,
}


@dataclasses.dataclass(frozen=True)
class ManualRecipe:
    """One Trainer with exactly these settings (``finetune train --recipe manual``).

    Parameters
    ----------
    epochs, batch_size : int
    optimizer : str
    lr, momentum, wd : float or None
        ``None``: the optimizer's default.
    policy : {"all", "pretrained", "boosted-head", "head-only"}
        A :meth:`LayerLRPolicy.from_preset` name.
    backbone_lr_mult : float
        ``policy="pretrained"``: the backbone's LR multiplier.
    freeze_until : str or None
        Freeze every parameter up to this layer.
    freeze_bn : bool
        Freeze BatchNorm statistics.
    head_epochs : int
        Head-only epochs first (in the same run, on the same data).
    schedule : {"constant", "step", "cosine", "plateau"}
    factor : float
        Step and plateau schedules: the LR factor.
    step_epochs : tuple of int
        Step schedule: one N (every N epochs) or the epochs of the drops.
    warmup_epochs : float
        Cosine schedule: linear warm-up.
    patience, stop_after : int
        Plateau schedule (it monitors ``val_top1`` with validation data, else ``train_loss``).
    dropout : float
        Dropout before the new layer (:meth:`build_model`).
    input_size : int or "auto"
        Square input size; ``"auto"``: the model's.
    augment : bool
        Random crop and mirror of the training images.
    seed : int

    Examples
    --------
    >>> ManualRecipe(schedule="step", step_epochs=(2, 4))
    ManualRecipe(schedule='step', step_epochs=(2, 4))
    >>> ManualRecipe().train_config(has_val=False).optimizer
    'sgd'
    """

    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float | None = None
    momentum: float | None = None
    wd: float | None = None
    policy: str = "all"
    backbone_lr_mult: float = 0.01
    freeze_until: str | None = None
    freeze_bn: bool = False
    head_epochs: int = 0
    schedule: str = "constant"
    factor: float = 0.1
    step_epochs: tuple = (10,)
    warmup_epochs: float = 0.0
    patience: int = 0
    stop_after: int | None = None
    dropout: float = 0.0
    input_size: int | str = "auto"
    augment: bool = True
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.step_epochs, list):
            object.__setattr__(self, "step_epochs", tuple(self.step_epochs))
        validate_fields(self, MANUAL_CONSTRAINTS)
        if not self.step_epochs:
            raise ConfigError("The 'step_epochs' parameter of ManualRecipe needs at least one epoch. Got ().")
        make_optimizer_params(self.optimizer, self._optimizer_params(), owner="ManualRecipe")
        self.make_policy()  # bad combinations fail now
        self.train_config(has_val=False)

    def __repr__(self) -> str:
        return f"ManualRecipe({changed_fields(self)})"

    def replace(self, **changes) -> "ManualRecipe":
        """A copy with some fields changed (unknown names raise :class:`~finetune.errors.ConfigError`)."""
        return replace_fields(self, **changes)

    # ------------------------------------------------------------ decisions
    def _optimizer_params(self) -> dict:
        return {k: v for k, v in (("learning_rate", self.lr), ("momentum", self.momentum), ("wd", self.wd))
                if v is not None}

    def make_policy(self) -> LayerLRPolicy:
        """The :class:`LayerLRPolicy` preset with this recipe's freezing and head epochs."""
        kw = {"freeze_until": self.freeze_until, "freeze_bn": self.freeze_bn, "head_epochs": self.head_epochs}
        if self.policy == "pretrained":
            kw["backbone_lr_mult"] = self.backbone_lr_mult
        if self.policy == "head-only" and not self.freeze_bn:
            kw.pop("freeze_bn")
        return LayerLRPolicy.from_preset(self.policy, **kw)

    def schedule_spec(self, has_val: bool):
        """The schedule as a :class:`TrainConfig` spec; a plateau monitors ``val_top1`` only ``has_val``."""
        if self.schedule == "step":
            epochs = self.step_epochs[0] if len(self.step_epochs) == 1 else list(self.step_epochs)
            return {"name": "step", "factor": self.factor, "epochs": epochs}
        if self.schedule == "cosine":
            return {"name": "cosine", "warmup_epochs": self.warmup_epochs}
        if self.schedule == "plateau":
            return {"name": "plateau", "factor": self.factor, "patience": self.patience,
                    "monitor": "val_top1" if has_val else "train_loss", "stop_after": self.stop_after}
        return "constant"

    def train_config(self, *, has_val: bool, **run) -> TrainConfig:
        """The :class:`TrainConfig` of the run; ``run``: the settings of where and how it runs (``out_dir``, ...)."""
        return TrainConfig(optimizer=self.optimizer, optimizer_params=self._optimizer_params(),
                           batch_size=self.batch_size, schedule=self.schedule_spec(has_val), seed=self.seed, **run)

    # ------------------------------------------------------------ running it
    def build_model(self, backbone, class_names, **head):
        """A :class:`~finetune.Model`: ``backbone`` with a new head for ``class_names`` (``dropout`` before it)."""
        from ..models import HeadReplacer

        return HeadReplacer(len(class_names), dropout=self.dropout, **head).apply(backbone, class_names=class_names)

    def _sized(self, model):
        if self.input_size != "auto":
            s = int(self.input_size)
            model.preprocess = model.preprocess.replace(size=(s, s), resize=s)
        return model

    def _trainer(self, model, val, *, ctx=None, callbacks=None, **run):
        from ._trainer import Trainer

        config = self.train_config(has_val=val is not None, **run)
        return Trainer(self._sized(model), config, policy=self.make_policy(), ctx=ctx, callbacks=callbacks)

    def plan(self, model, train=None, val=None):
        """The :class:`~finetune.train.Plan` of every parameter of ``model`` as this recipe trains it."""
        return self._trainer(model, val, progress=False).plan()

    def fit(self, model, train, val=None, *, ctx=None, out_dir=None, workers=None, progress=True, callbacks=None,
            kvstore="device", resume: bool = False, checkpoint_every: int = 0):
        """Train ``model`` on the records ``train`` (validated on ``val``); returns the :class:`Trainer`.

        The arguments are those of :meth:`Recipe.fit`. With ``out_dir``, the
        history, checkpoints and ``plan.txt`` (the per-parameter plan) go
        there (rank 0 of ``dist_*`` workers writes); ``resume``: continue
        from ``out_dir/checkpoints/last.ckpt`` (which must exist).
        """
        last = require_checkpoint(out_dir, "manual") if resume else None  # resuming never starts afresh
        writer = out_dir if worker_rank(kvstore) == 0 else None
        trainer = self._trainer(model, val, ctx=ctx, callbacks=callbacks, out_dir=out_dir, workers=workers,
                                progress=progress, kvstore=kvstore, checkpoint_every=checkpoint_every).setup()
        pre = model.preprocess
        train_ds = RecordDataset(_records(train), pre, train=self.augment)
        val_ds = RecordDataset(_records(val), pre) if val is not None else None
        if val_ds is not None:
            warn_if_validation_is_training(train_ds, val_ds)
        if writer:
            os.makedirs(writer, exist_ok=True)
            atomic_write(os.path.join(writer, "plan.txt"), str(trainer.plan()) + "\n")
        trainer.run_settings = recipe_settings(self)  # recorded in its checkpoints, compared on resume
        trainer.fit(train_ds, val_ds, epochs=self.epochs, resume=last)
        return trainer


def _records(data) -> str:
    return data.path if isinstance(data, RecordDataset) else os.fspath(data)

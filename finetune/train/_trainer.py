"""The Trainer: data-parallel fine-tuning over devices and machines, with exact resume.

This module holds the class and its fit loop; its settings are a
:class:`~finetune.train.TrainConfig` (``_config.py``), the device set-up and
the checks before fit are in ``_trainer_setup.py``, one optimizer step in
``_step.py``, batch mixing in
``_mixing.py``, validation (and test-time mirroring) in ``_evaluate.py``, the
state saved for resume in ``_resume.py``, cached backbone features in ``_cache.py``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from numbers import Integral

import mxnet as mx
import numpy as np

from .._context import resolve_ctx
from .._outputs import hold_folder
from .._parallel import default_workers, resolve_workers
from .._progress import progress_bar
from .._validation import Interval, validate
from ..data import RecordDataset
from ..errors import ConfigError, NonFiniteLossError
from . import _cache, _trainer_setup
from ._batches import EpochSampler, _mix, as_dataset, train_loader
from ._callbacks import Checkpoint, HistoryLogger, StopTraining
from ._config import TRAIN_CONFIG_CONSTRAINTS, TrainConfig, make_loss, make_schedule
from ._devices import split_batch
from ._evaluate import evaluate
from ._mixing import mix_batch
from ._optim import make_optimizer_params
from ._resume import find_checkpoint, load_state, run_fingerprint, save_state
from ._step import check_weights_finite, optimizer_step
from ._weights import restore, snapshot

__all__ = ["Trainer"]

log = logging.getLogger(__name__)


def _setting(name: str) -> property:
    return property(lambda self: getattr(self.config, name), doc=f"``config.{name}`` (read-only).")


class Trainer:
    """Fine-tune a Gluon model on one device, several devices, or several machines.

    Parameters
    ----------
    model : mxnet.gluon.HybridBlock
        Maps normalised images ``(N, C, H, W)`` to logits ``(N, K)``.
    config : TrainConfig, optional
        How to train: optimizer and its parameters, batch size (**per
        worker**), kvstore, schedule, loss, seed, workers, ``out_dir``,
        checkpointing, weight average, test-time and batch-mixing
        augmentation (see :class:`~finetune.train.TrainConfig`). Default:
        ``TrainConfig()``.
    policy : LayerLRPolicy, optional
        Per-parameter LR/WD multipliers, freezing and BN modes (default: everything at 1x).
    ctx : None, mx.Context, str or list
        Devices (see :func:`finetune.resolve_ctx`); a list means data-parallel.
    callbacks : list of Callback, optional
        Used by every :meth:`fit` (before the ones :meth:`fit` is given).
    **settings
        Fields of :class:`TrainConfig` (``batch_size=8``, ``optimizer="adam"``,
        ...): they make the config, or change the one given.

    Attributes
    ----------
    history_ : list of dict
        One row per epoch: ``epoch, lr, train_loss, train_top1, train_top5,
        val_loss, val_top1, val_top5, images_per_s, seconds``.

    Examples
    --------
    >>> import numpy as np, mxnet as mx
    >>> from mxnet.gluon import nn
    >>> net = nn.HybridSequential(prefix="")
    >>> net.add(nn.Dense(8, activation="relu", prefix="body_"), nn.Dense(3, prefix="head_"))
    >>> net.initialize(mx.init.Xavier())
    >>> x = np.random.rand(30, 5).astype("float32"); y = np.arange(30) % 3
    >>> t = Trainer(net, TrainConfig(batch_size=10, progress=False)).fit((x, y), val=(x, y), epochs=2)
    >>> [round(r["epoch"]) for r in t.history_]
    [0, 1]
    """

    #: The allowed values of every setting (the fields of :class:`TrainConfig`).
    _parameter_constraints = TRAIN_CONFIG_CONSTRAINTS

    def __init__(self, model, config: TrainConfig | None = None, *, policy=None, ctx=None, callbacks=None,
                 **settings):
        if config is not None and not isinstance(config, TrainConfig):
            raise ConfigError(f"The 'config' parameter of Trainer must be a TrainConfig or None. Got {config!r} "
                              "instead; pass settings as TrainConfig(...) or as keyword arguments.")
        if settings or config is None:
            base = {} if config is None else {k: getattr(config, k) for k in config.__dataclass_fields__}
            config = TrainConfig._of("Trainer", {**base, **settings})
        self.model, self.config = model, config
        self.policy = _trainer_setup.check_policy(policy)
        self.optimizer_params = make_optimizer_params(config.optimizer, dict(config.optimizer_params or {}),
                                                      owner="Trainer")
        self._loader_workers = None if config.workers is None else resolve_workers(config.workers, "workers",
                                                                                   "Trainer")
        if ctx is not None:
            resolve_ctx(ctx)  # bad ids fail now; the devices themselves are resolved by setup()
        self.ctx, self.callbacks = ctx, list(callbacks or [])
        self.schedule, self.loss = make_schedule(config.schedule), make_loss(config.loss)
        if config.mixed_precision:
            _trainer_setup.check_gpu(ctx)
        self.history_, self.epoch_, self.batch_, self.batches_per_epoch_ = [], 0, 0, 0
        self._acc, self._ema, self._trainer, self._val_loader = np.zeros(4), None, None, None
        self._callbacks, self._hooked = [], []
        self._inputs_first = True  # check inputs before the forward pass (see optimizer_step)
        self.last_checkpoint_ = None
        self.log = log

    optimizer, batch_size, kvstore = _setting("optimizer"), _setting("batch_size"), _setting("kvstore")
    seed, workers, out_dir = _setting("seed"), _setting("workers"), _setting("out_dir")
    checkpoint_every, cache_features = _setting("checkpoint_every"), _setting("cache_features")
    mixed_precision, hybridize, progress = _setting("mixed_precision"), _setting("hybridize"), _setting("progress")
    ema, tta, mixup, cutmix = _setting("ema"), _setting("tta"), _setting("mixup"), _setting("cutmix")

    def __repr__(self) -> str:
        return f"Trainer({type(self.model).__name__}, {self.config!r})"

    def setup(self):
        """Apply the policy, place parameters on the devices, create kvstore and Gluon trainer.

        :meth:`fit` calls this; call it yourself to inspect :meth:`plan` first.
        """
        if self._trainer is None:
            _trainer_setup.setup(self)
        return self

    def plan(self):
        """The :class:`~finetune.train.Plan` of every parameter as training will use it."""
        self.setup()
        return self.policy.plan(self.model, optimizer=self._trainer.optimizer)

    @property
    def base_lr(self) -> float:
        return float(self.optimizer_params["learning_rate"])

    # ------------------------------------------------------------ fit

    def fit(self, train, val=None, epochs: int = 1, resume=None, callbacks=None):
        """Train for ``epochs`` epochs (in total, counting resumed ones); returns ``self``.

        Parameters
        ----------
        train, val : Dataset or (images, labels)
            Items ``(image (C, H, W) float32 normalised, label)``.
        epochs : int
        resume : str, optional
            A checkpoint file or a directory holding ``last.ckpt`` (or
            ``checkpoints/last.ckpt``); training continues exactly where it stopped.
        callbacks : list of Callback

        Raises
        ------
        CheckpointError
            ``resume`` names a checkpoint written by a run on other data or
            settings (classes, records, optimizer, batch size, schedule, ...);
            the message says what differs.
        DataError
            With a class-index loss (the default): a label of ``train`` or
            ``val`` is NaN, negative, not a whole number, or not below the
            model's ``num_classes``; checked before training starts (for
            ``(images, labels)`` arrays and datasets with a ``labels()`` method,
            such as :class:`~finetune.RecordDataset`).
        NonFiniteLossError
            The loss became NaN or infinite; checkpoints written before are intact.
        """
        validate("Trainer.fit", {"epochs": epochs}, {"epochs": Interval(Integral, 1, None)})
        self.setup()
        train_ds, val_ds = as_dataset(train, "train"), as_dataset(val, "val")
        self._fingerprint = run_fingerprint(self, train_ds, val_ds)  # saved in checkpoints, checked on resume
        _trainer_setup.check_labels(self, train_ds, val_ds)
        net, train_ds, val_ds = self._maybe_cache(train_ds, val_ds)
        self._net = net
        sampler = EpochSampler(len(train_ds), self.batch_size, seed=self.seed,
                               num_parts=self.num_workers_, part_index=self.rank_)
        loader = self._train_loader(net, train_ds, sampler)
        self._val_loader = self._open_val_loader(net, val_ds)
        self._callbacks = self._default_callbacks() + self.callbacks + list(callbacks or [])
        # checkpoints are written after the other callbacks have seen the batch or epoch, so they hold
        # that state (the order of _callbacks itself is the order of their states in a checkpoint)
        self._hooked = sorted(self._callbacks, key=lambda cb: isinstance(cb, Checkpoint))
        held = contextlib.ExitStack()
        if self.out_dir and self.rank_ == 0:  # one process writes a run's checkpoints and histories
            held.enter_context(hold_folder(self.out_dir, what="training output folder"))
        with held:
            if resume is not None:
                self.load_checkpoint(resume)
                if self.epoch_ >= epochs:
                    log.warning("The checkpoint has trained %d epoch(s) already, as many as epochs=%d asks for: "
                                "nothing is left to train. Ask for more epochs to continue the run.",
                                self.epoch_, epochs)
            self.schedule.setup(epochs)
            self._call("on_train_begin")
            first = self.epoch_
            try:
                for epoch in range(first, epochs):
                    if self.policy.head_epochs and epoch in (self.policy.head_epochs, first):
                        self._restage(epoch)
                    if self._run_epoch(epoch, net, loader, sampler, val_ds):
                        break
            except StopTraining as exc:
                log.info("Training stopped: %s", exc)
            finally:
                for each in (loader, self._val_loader):
                    if hasattr(each, "close"):
                        each.close()
                self._val_loader = None
            if self._ema is not None:
                self._ema.copy_to_model()
            self._call("on_train_end")
            return self

    def _workers_for(self, dataset) -> int:
        if self._loader_workers is not None:  # ``workers`` as checked and capped by the constructor
            return self._loader_workers
        return default_workers() if isinstance(dataset, RecordDataset) else 0

    def _train_loader(self, net, train_ds, sampler):
        """Batches of the sampler's items; RecordDatasets go through their fast shared-memory loader."""
        return train_loader(train_ds, sampler, self.seed, self._workers_for(train_ds) if net is self.model else 0)

    def _open_val_loader(self, net, val_ds):
        """One loader for every epoch's validation (its worker processes start once per fit), or None."""
        workers = self._workers_for(val_ds) if net is self.model and val_ds is not None else 0
        if not isinstance(val_ds, RecordDataset) or workers <= 0:
            return None
        return val_ds.loader(self.batch_size, shuffle=False, workers=workers)

    def _default_callbacks(self):
        if not self.out_dir or self.rank_ != 0:  # one writer per cluster
            return []
        return [HistoryLogger(self.out_dir),
                Checkpoint(os.path.join(self.out_dir, "checkpoints"), every_n_batches=self.checkpoint_every)]

    def _call(self, hook, *args):
        for cb in self._hooked:
            getattr(cb, hook)(self, *args)

    def _restage(self, epoch):
        self.policy.apply(self.model, epoch=epoch)
        if self.hybridize:
            self.model.hybridize(static_alloc=True)

    def _maybe_cache(self, train_ds, val_ds):
        if self.cache_features is False or self.num_workers_ > 1:
            return self.model, train_ds, val_ds
        return _cache.cached_head(self.model, self._trainable, train_ds, val_ds, ctxs=self.ctx_,
                                  batch_size=self.batch_size, workers_for=self._workers_for,
                                  required=self.cache_features is True, hybridize=self.hybridize,
                                  progress=self.progress, log=self.log)

    # ------------------------------------------------------------ one epoch
    def _run_epoch(self, epoch, net, loader, sampler, val_ds) -> bool:
        sizes = sampler.global_sizes(epoch)
        self.batches_per_epoch_ = nb = len(sizes)
        self._inputs_first = _trainer_setup.updates_statistics(net)
        start = self.batch_
        sampler.set_epoch(epoch, start)
        self._call("on_epoch_begin", epoch)
        bar = progress_bar(total=nb, initial=start, desc=f"epoch {epoch}", unit="batch", show=self.progress)
        t0, seen, lr = time.time(), 0, None
        stop = False
        try:
            for b, (x, y) in enumerate(loader, start=start):
                self._call("on_batch_begin", epoch, b)
                new_lr = self.base_lr * self.schedule.factor(epoch + b / nb)
                if new_lr != lr:
                    self._trainer.set_learning_rate(new_lr)
                    lr = new_lr
                seen += self._train_batch(net, x, y, epoch, b, sizes[b])
                logs = self._train_logs()
                rate = seen / max(time.time() - t0, 1e-9)
                bar.update(1)
                bar.set_postfix_str(f"loss {logs['train_loss']:.3f} top1 {logs['train_top1']:.3f} "
                                    f"{rate:.1f} img/s", refresh=False)
                self._call("on_batch_end", epoch, b, logs)
        except StopTraining as exc:
            log.info("Training stopped: %s", exc)
            stop = True
        finally:
            bar.close()
        return self._end_epoch(epoch, net, val_ds, lr, seen, time.time() - t0) or stop

    def _train_batch(self, net, x, y, epoch, b, global_n) -> int:
        """One optimizer step on batch ``b`` of ``epoch``; returns the number of images this worker trained."""
        mx.random.seed(_mix(self.seed, epoch, b, 0xD0), ctx="all")
        mix = None
        if (self.mixup or self.cutmix) and net is self.model:
            x, *mix = self._mix_batch(x, y, epoch, b)
        stats, inputs_finite = optimizer_step(self, net, x, y, global_n, mix)
        if not inputs_finite:
            raise NonFiniteLossError(
                f"The training inputs of epoch {epoch}, batch {b} hold NaN or infinite values; training "
                "them would poison the weights (a ReLU hides them from the loss). Check the data and "
                f"its normalisation. The last good checkpoint is {self.last_checkpoint_ or 'none'}.")
        if not math.isfinite(stats[0]):
            last = self.last_checkpoint_ or ("none yet" if self.out_dir else "none (set out_dir)")
            raise NonFiniteLossError(f"The training loss became {stats[0] / max(stats[3], 1)} at epoch {epoch}, batch "
                                     f"{b}. The last good checkpoint is {last}. Lower the learning rate, or check "
                                     "the data and labels.")
        self._acc += stats
        self.batch_ = b + 1
        return stats[3]

    def _end_epoch(self, epoch, net, val_ds, lr, seen, seconds) -> bool:
        """Validate, record the history row, reset the running sums; whether training should stop."""
        row = {"epoch": epoch, "lr": lr if lr is not None else self.base_lr * self.schedule.factor(epoch),
               **self._train_logs()}
        if val_ds is not None:
            row.update({f"val_{k}": v for k, v in self._evaluate(net, val_ds, loader=self._val_loader).items()})
        row["images_per_s"], row["seconds"] = seen / max(seconds, 1e-9), seconds
        check_weights_finite(self, epoch, row)
        stop = bool(self.schedule.epoch_end(epoch, row))
        self.history_.append(row)
        self.epoch_, self.batch_, self._acc = epoch + 1, 0, np.zeros(4)
        shown = [f"{k} {row[k]:.4g}" for k in ("lr", "train_loss", "train_top1", "val_loss", "val_top1") if k in row]
        log.info("epoch %d: %s (%.0f img/s, %.0f s)", epoch, ", ".join(shown), row["images_per_s"], seconds)
        for cb in self._hooked:
            try:
                cb.on_epoch_end(self, epoch, row)
            except StopTraining as exc:
                log.info("Training stopped: %s", exc)
                stop = True
        return stop

    def _train_logs(self) -> dict:
        loss, c1, c5, n = self._acc
        n = max(n, 1)
        return {"train_loss": loss / n, "train_top1": c1 / n, "train_top5": c5 / n}

    def _split(self, x, y):
        return split_batch(x, y, self.ctx_, float16=self.mixed_precision)

    def _mix_batch(self, x, y, epoch, b):
        """Mixup or CutMix of one batch: ``(mixed images, partner labels, weight of the own labels)``."""
        return mix_batch(x, y, _mix(self.seed, epoch, b, 0x3C), mixup=self.mixup, cutmix=self.cutmix)

    # ------------------------------------------------------------ evaluation
    def evaluate(self, data, batch_size: int | None = None) -> dict:
        """Loss, top-1 and top-5 accuracy of the model on ``data`` (inference mode)."""
        self.setup()
        return self._evaluate(self.model, as_dataset(data, "data"), batch_size)

    def evaluation_weights(self) -> dict:
        """``{name: numpy array}``: the weights validation uses (the average with ``ema``, else the model's)."""
        with self._averaged():
            return snapshot(self.model.collect_params())

    def set_weights(self, values: dict) -> None:
        """Set the model's parameters from ``{name: array}`` (e.g. :meth:`evaluation_weights`)."""
        restore(self.model.collect_params(), values)

    def _averaged(self):
        """A context in which the model holds the weight average (with ``ema``; else its own weights)."""
        return self._ema.swapped() if self._ema is not None else contextlib.nullcontext()

    def _evaluate(self, net, dataset, batch_size=None, loader=None) -> dict:
        workers = self._workers_for(dataset) if net is self.model else 0
        with self._averaged():
            return evaluate(net, dataset, self.loss, self._split, batch_size or self.batch_size, workers,
                            tta=self.tta and net is self.model, loader=loader)

    # ------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path) -> None:
        """Write the full training state to ``path`` atomically (see :class:`Checkpoint`).

        The file is a zip of JSON and MXNet array files; it holds no pickle, so
        :meth:`load_checkpoint` never runs code from it.
        """
        save_state(self, path)

    def load_checkpoint(self, path) -> None:
        """Restore what :meth:`save_checkpoint` wrote (``path``: a file, or a folder holding ``last.ckpt``).

        Raises
        ------
        CheckpointError
            The file is truncated, malformed, or was written for another model or optimizer.
        UnsafeFileError
            The file holds a pickle (older format or planted); nothing is loaded.
        """
        path = find_checkpoint(path)
        self.setup()
        load_state(self, path)
        log.info("Resumed from %s at epoch %d, batch %d.", path, self.epoch_, self.batch_)

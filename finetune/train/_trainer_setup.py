"""The set-up half of :class:`~finetune.train.Trainer`: its arguments, checked at once, and the devices.

:class:`TrainerSetup` validates every constructor argument (training can run
for hours, so a bad value fails before it starts), applies the policy, places
the parameters on the devices and creates the kvstore and the Gluon trainer.
The fit loop is :class:`~finetune.train.Trainer`'s, in ``_trainer.py``.
"""

from __future__ import annotations

import logging
from numbers import Integral, Real

import mxnet as mx
import numpy as np
from mxnet import gluon

from .._context import resolve_ctx
from .._validation import InstanceOf, Interval, Options, validate
from ..data._parallel import resolve_workers
from ..errors import ConfigError, DeviceError
from ._devices import place_parameters, start_kvstore
from ._launch import claim_kvstore
from ._optim import make_optimizer_params
from ._policy import LayerLRPolicy
from ._schedule import make_schedule

__all__ = ["KVSTORES", "TrainerSetup"]

log = logging.getLogger("finetune.train._trainer")

KVSTORES = ("device", "local", "local_allreduce_device", "local_allreduce_cpu", "nccl",
            "dist_sync", "dist_device_sync", "dist_async", None)


_BOOL = Options([True, False])


class TrainerSetup:
    """Constructor, validation and :meth:`setup` of :class:`~finetune.train.Trainer` (documented there)."""

    #: The allowed values of every constructor argument that is not an object (``model``, ``policy``,
    #: ``loss``, ``ctx``, ``schedule`` and ``out_dir`` are checked by their own readers).
    _parameter_constraints = {
        "optimizer": [InstanceOf(str, name="an optimizer name")],
        "optimizer_params": [InstanceOf(dict, name="a dict"), None],
        "batch_size": [Interval(Integral, 1, None)],
        "kvstore": [Options(KVSTORES)],
        "seed": [Interval(Integral, None, None)],
        "workers": [Interval(Integral, 0, None), None],
        "checkpoint_every": [Interval(Integral, 0, None)],
        "cache_features": [Options(["auto", True, False])],
        "mixed_precision": [_BOOL],
        "hybridize": [_BOOL],
        "progress": [_BOOL],
        "ema": [Interval(Real, 0, 1, closed="neither"), None],
        "tta": [_BOOL],
        "mixup": [Interval(Real, 0, None)],
        "cutmix": [Interval(Real, 0, None)],
    }

    def __init__(self, model, *, policy: LayerLRPolicy | None = None, optimizer: str = "sgd",
                 optimizer_params: dict | None = None, batch_size: int = 32, ctx=None, kvstore: str | None = "device",
                 schedule=None, loss=None, seed: int = 0, workers: int | None = None, out_dir=None,
                 checkpoint_every: int = 0, cache_features="auto", mixed_precision: bool = False,
                 hybridize: bool = True, progress: bool = True, ema: float | None = None, tta: bool = False,
                 mixup: float = 0.0, cutmix: float = 0.0):
        validate("Trainer", dict(locals()), self._parameter_constraints)
        if policy is not None and not isinstance(policy, LayerLRPolicy):
            raise ConfigError(f"The 'policy' parameter of Trainer must be a LayerLRPolicy or None. "
                              f"Got {policy!r} instead.")
        self.model = model
        self.policy = policy if policy is not None else LayerLRPolicy()
        self.optimizer = optimizer.lower()
        self.optimizer_params = make_optimizer_params(self.optimizer, optimizer_params, owner="Trainer")
        self._loader_workers = None if workers is None else resolve_workers(workers, "workers", "Trainer")
        if ctx is not None:
            resolve_ctx(ctx)  # bad ids fail now; the devices themselves are resolved by setup()
        self.batch_size, self.ctx, self.kvstore = int(batch_size), ctx, kvstore
        self.schedule = make_schedule(schedule)
        self.loss = loss if loss is not None else gluon.loss.SoftmaxCrossEntropyLoss()
        self.seed, self.workers, self.out_dir = int(seed), workers, out_dir
        self.checkpoint_every, self.cache_features = int(checkpoint_every), cache_features
        self.mixed_precision, self.hybridize, self.progress = mixed_precision, hybridize, progress
        self.ema, self.tta = (float(ema) if ema is not None else None), bool(tta)
        self._ema = None
        self.mixup, self.cutmix = float(mixup), float(cutmix)
        if mixed_precision:
            self._check_gpu()
        self.history_ = []
        self.epoch_, self.batch_ = 0, 0
        self.batches_per_epoch_ = 0
        self._acc = np.zeros(4)
        self._trainer = None
        self._callbacks = []
        self._hooked = []
        self._inputs_first = True  # check inputs before the forward pass (see Trainer._step)
        self.last_checkpoint_ = None
        self.log = log

    def __repr__(self) -> str:
        return (f"Trainer({type(self.model).__name__}, optimizer={self.optimizer!r}, batch_size={self.batch_size}, "
                f"kvstore={self.kvstore!r}, schedule={self.schedule!r})")

    def _check_gpu(self):
        ctxs = resolve_ctx(self.ctx)
        if mx.context.num_gpus() == 0 or any(c.device_type != "gpu" for c in ctxs):
            raise DeviceError(
                "mixed_precision=True needs GPU contexts (float16 kernels); MXNet sees "
                f"{mx.context.num_gpus()} GPU(s) and ctx is {ctxs}. Pass mixed_precision=False or ctx='gpu:0'."
            )

    # ------------------------------------------------------------ set-up
    def setup(self):
        """Apply the policy, place parameters on the devices, create kvstore and Gluon trainer.

        :meth:`fit` calls this; call it yourself to inspect :meth:`plan` first.
        """
        if self._trainer is not None:
            return self
        self.ctx_ = resolve_ctx(self.ctx)
        model = self.model
        self.policy.apply(model, epoch=self.epoch_)
        params = model.collect_params()
        place_parameters(params, self.ctx_)
        if self.mixed_precision:
            model.cast("float16")
            self.optimizer_params["multi_precision"] = True
        if self.hybridize:
            model.hybridize(static_alloc=True)
        kv = self.kvstore
        self.rank_, self.num_workers_ = 0, 1
        self._distributed = bool(kv) and kv.startswith("dist")  # MXNet's parameter server
        if self._distributed:
            kv = claim_kvstore(kv, params)  # one per process; every parameter becomes rank 0's
            self.rank_, self.num_workers_ = kv.rank, kv.num_workers
            log.info("kvstore %s: worker %d of %d", kv.type, self.rank_, self.num_workers_)
        self._trainable = set(self.policy.trainable_names(model))
        tparams = [p for n, p in params.items() if n in self._trainable]
        if not tparams:
            raise ConfigError("The LayerLRPolicy leaves no parameter to train.")
        self._trainer = gluon.Trainer(tparams, self.optimizer, dict(self.optimizer_params), kvstore=kv,
                                      update_on_kvstore=False)
        self._tparams = tparams
        if self.num_workers_ > 1 or self._distributed:
            start_kvstore(self._trainer)
        return self

    def plan(self):
        """The :class:`~finetune.train.Plan` of every parameter as training will use it."""
        self.setup()
        return self.policy.plan(self.model, optimizer=self._trainer.optimizer)

    @property
    def base_lr(self) -> float:
        return float(self.optimizer_params["learning_rate"])

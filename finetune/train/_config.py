"""The Trainer's settings as one value: :class:`TrainConfig`, with a JSON form.

Everything that says *how* to train (optimizer, batch size, schedule, loss,
weight average, batch mixing, seed, workers, checkpointing, ...) is a field of
a frozen :class:`TrainConfig`; what is trained and where — the model, the
:class:`~finetune.train.LayerLRPolicy`, the devices and the callbacks — stay
arguments of :class:`~finetune.train.Trainer`. Every field is checked against
:data:`TRAIN_CONFIG_CONSTRAINTS` when the config is made, so a bad value fails
before training starts, and :meth:`TrainConfig.to_dict` /
:meth:`TrainConfig.from_dict` give a JSON form that is checked the same way.

Schedules and losses are given by name or as a small spec dict
(``{"name": "step", "factor": 0.1, "epochs": 10}``,
``{"name": "label_smoothing", "smoothing": 0.1}``); an object (a
:class:`~finetune.train.Schedule` or a Gluon loss) is accepted too and used
as it is, and written to JSON when it is one of the library's own.
"""

from __future__ import annotations

import dataclasses
import os
import types
from numbers import Integral, Real

from mxnet import gluon

from .._fields import changed_fields, replace_fields
from .._validation import SEED, InstanceOf, Interval, Options, validate
from ..errors import ConfigError, UnknownNameError
from ._losses import LabelSmoothingLoss
from ._optim import make_optimizer_params
from ._schedule import _SCHEDULES, CosineSchedule, PlateauSchedule, Schedule, StepSchedule

__all__ = ["KVSTORES", "TRAIN_CONFIG_CONSTRAINTS", "TrainConfig", "make_loss", "make_schedule"]

KVSTORES = ("device", "local", "local_allreduce_device", "local_allreduce_cpu", "nccl",
            "dist_sync", "dist_device_sync", "dist_async", None)
LOSSES = ("softmax_cross_entropy", "label_smoothing")

_BOOL = Options([True, False])
_SPEC = [None, InstanceOf(str, name="a name"), InstanceOf(dict, name="a spec dict")]

#: The allowed values of every :class:`TrainConfig` field (a test checks that every field has one).
TRAIN_CONFIG_CONSTRAINTS = {
    "optimizer": [InstanceOf(str, name="an optimizer name")],
    "optimizer_params": [InstanceOf(dict, name="a dict"), InstanceOf(types.MappingProxyType, name="a dict"), None],
    "batch_size": [Interval(Integral, 1, None)],
    "kvstore": [Options(KVSTORES)],
    "schedule": _SPEC + [InstanceOf(Schedule, name="a Schedule")],
    "loss": _SPEC + [InstanceOf(gluon.loss.Loss, name="a Gluon loss")],
    "seed": [SEED],
    "workers": [Interval(Integral, 0, None), None],
    "out_dir": [InstanceOf(str, name="a folder path"), None],
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


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How :class:`~finetune.train.Trainer` trains: every setting that is a value, not a live object.

    Parameters
    ----------
    optimizer : str
        ``"sgd"``, ``"nag"``, ``"adam"``, ``"adamw"``, ``"rmsprop"`` or any
        MXNet optimizer name (stored lower-case).
    optimizer_params : dict, optional
        E.g. ``{"learning_rate": 0.01, "momentum": 0.9, "wd": 1e-4}``; the
        optimizer's defaults fill in what is not given; ``lr`` is accepted for
        ``learning_rate``.
    batch_size : int
        Images per step **per worker**, split over the worker's devices.
    kvstore : str or None
        ``"device"``, ``"local"``, ``"dist_sync"``, ... (MXNet kvstore types).
    schedule : None, str, dict or Schedule
        ``"constant"`` (None), ``"step"``, ``"cosine"``, ``"plateau"``, a spec
        dict ``{"name": "step", "factor": 0.1, "epochs": 10}`` (the other keys
        are the schedule's arguments) or a schedule object.
    loss : None, str, dict or gluon.loss.Loss
        ``None`` or ``"softmax_cross_entropy"``: softmax cross-entropy on
        class indices; ``{"name": "label_smoothing", "smoothing": 0.1}``; or a
        loss object.
    seed : int
    workers : int or None
        Data loader worker processes (``None``: every core for records).
    out_dir : str or path, optional
        Histories and checkpoints go there (a path is stored as a str).
    checkpoint_every : int
        With ``out_dir``: also checkpoint every N batches inside an epoch.
    cache_features : {"auto", True, False}
    mixed_precision, hybridize, progress : bool
    ema : float or None
        Decay of the exponential moving average of the weights.
    tta : bool
        Mirror test-time augmentation in validation.
    mixup, cutmix : float
        ``Beta(alpha, alpha)`` parameter of batch mixing (0: off).

    Examples
    --------
    >>> TrainConfig()
    TrainConfig()
    >>> c = TrainConfig(optimizer="Adam", batch_size=16, schedule={"name": "cosine", "warmup_epochs": 1})
    >>> c
    TrainConfig(optimizer='adam', batch_size=16, schedule={'name': 'cosine', 'warmup_epochs': 1})
    >>> TrainConfig.from_dict(c.to_dict()) == c
    True
    """

    optimizer: str = "sgd"
    optimizer_params: dict | None = None
    batch_size: int = 32
    kvstore: str | None = "device"
    schedule: object = None
    loss: object = None
    seed: int = 0
    workers: int | None = None
    out_dir: str | None = None
    checkpoint_every: int = 0
    cache_features: bool | str = "auto"
    mixed_precision: bool = False
    hybridize: bool = True
    progress: bool = True
    ema: float | None = None
    tta: bool = False
    mixup: float = 0.0
    cutmix: float = 0.0

    def __post_init__(self):
        self._check("TrainConfig")

    def _check(self, owner: str) -> None:
        """Validate every field (messages name ``owner``) and normalise the plain ones."""
        values = _fspath({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        validate(owner, values, TRAIN_CONFIG_CONSTRAINTS)
        make_optimizer_params(values["optimizer"], dict(values["optimizer_params"] or {}), owner=owner)
        make_schedule(values["schedule"])  # unknown names and bad arguments fail now
        make_loss(values["loss"])
        params = values["optimizer_params"]
        normal = {
            "optimizer": values["optimizer"].lower(), "out_dir": values["out_dir"],
            "optimizer_params": None if params is None else types.MappingProxyType(dict(params)),
            "batch_size": int(values["batch_size"]), "seed": int(values["seed"]),
            "checkpoint_every": int(values["checkpoint_every"]), "tta": bool(values["tta"]),
            "ema": None if values["ema"] is None else float(values["ema"]),
            "mixup": float(values["mixup"]), "cutmix": float(values["cutmix"]),
            "workers": None if values["workers"] is None else int(values["workers"]),
        }
        for name, value in normal.items():
            object.__setattr__(self, name, value)

    @classmethod
    def _of(cls, owner: str, settings: dict) -> "TrainConfig":
        """A config from keyword ``settings`` whose errors name ``owner`` (e.g. ``"Trainer"``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        for name in settings:
            if name not in names:
                raise UnknownNameError(f"{owner} argument", name, sorted(names))
        settings = {k: _plain(v) for k, v in _fspath(settings).items()}
        validate(owner, settings, TRAIN_CONFIG_CONSTRAINTS)
        if "optimizer_params" in settings or "optimizer" in settings:
            make_optimizer_params(settings.get("optimizer", "sgd"), settings.get("optimizer_params"), owner=owner)
        return cls(**settings)

    def __eq__(self, other) -> bool:
        if not isinstance(other, TrainConfig):
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(self))

    __hash__ = None  # holds a dict and possibly objects

    def __repr__(self) -> str:
        return f"TrainConfig({changed_fields(self, show=lambda v: repr(_plain(v)), same=_same)})"

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some fields changed (unknown names raise :class:`~finetune.errors.ConfigError`)."""
        return replace_fields(self, **changes)

    # ------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        """Every field as JSON values; schedules and losses as spec dicts.

        Raises
        ------
        ConfigError
            The schedule or loss is an object of a class the library does not
            know, which has no JSON form; give it as a spec instead.
        """
        out = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out["schedule"] = schedule_spec(self.schedule)
        out["loss"] = loss_spec(self.loss)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """The config :meth:`to_dict` wrote; unknown keys and bad values raise :class:`~finetune.errors.ConfigError`."""
        if not isinstance(d, dict):
            raise ConfigError(f"TrainConfig.from_dict needs a dict. Got {type(d).__name__} instead.")
        names = {f.name for f in dataclasses.fields(cls)}
        for key in d:
            if key not in names:
                raise UnknownNameError("TrainConfig field", key, sorted(names))
        return cls(**d)


def _fspath(values: dict) -> dict:
    """``values`` with a path-like ``out_dir`` as a str."""
    if isinstance(values.get("out_dir"), os.PathLike):
        return {**values, "out_dir": os.fspath(values["out_dir"])}
    return values


def _plain(value):
    """A field's value as written: mappings as dicts."""
    return dict(value) if isinstance(value, types.MappingProxyType) else value


def _same(a, b) -> bool:
    """Whether two field values are equal (``True`` is not ``1``; objects by identity)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return _plain(a) == _plain(b)


# ------------------------------------------------------------------ schedules and losses from specs
def _name_and_args(spec, what: str) -> tuple:
    if isinstance(spec, str):
        return spec, {}
    args = dict(spec)
    name = args.pop("name", None)
    if not isinstance(name, str):
        raise ConfigError(f"A {what} spec needs a 'name' (a str), e.g. {{'name': 'step', 'factor': 0.1}}. "
                          f"Got {spec!r} instead.")
    return name, args


def make_schedule(spec) -> Schedule:
    """A new :class:`Schedule` from ``None``, a name, a spec dict, or the object itself (returned as it is)."""
    if spec is None:
        return _SCHEDULES["constant"]()
    if isinstance(spec, Schedule):
        return spec
    if not isinstance(spec, (str, dict, types.MappingProxyType)):
        raise ConfigError(f"The 'schedule' parameter must be None, a name, a spec dict or a Schedule. "
                          f"Got {spec!r} instead.")
    name, args = _name_and_args(spec, "schedule")
    if name not in _SCHEDULES:
        raise UnknownNameError("schedule", name, sorted(_SCHEDULES))
    try:
        return _SCHEDULES[name](**args)
    except TypeError as exc:
        raise ConfigError(f"The schedule spec {dict(spec)!r} has an argument {name!r} schedules do not take "
                          f"({exc}).") from None


def schedule_spec(schedule):
    """The JSON form of a schedule field: ``None``, a name, or a spec dict (for the library's schedules)."""
    if schedule is None or isinstance(schedule, str):
        return schedule
    if isinstance(schedule, (dict, types.MappingProxyType)):
        return dict(schedule)
    if type(schedule) is StepSchedule:
        epochs = list(schedule.epochs_at) if isinstance(schedule.epochs_at, (list, tuple)) else schedule.epochs_at
        return {"name": "step", "factor": schedule.factor_, "epochs": epochs}
    if type(schedule) is CosineSchedule:
        return {"name": "cosine", "warmup_epochs": schedule.warmup_epochs, "final": schedule.final,
                "warmup_start": schedule.warmup_start}
    if type(schedule) is PlateauSchedule:
        return {"name": "plateau", "factor": schedule.factor_, "patience": schedule.patience,
                "monitor": schedule.monitor, "mode": schedule.mode, "stop_after": schedule.stop_after,
                "min_delta": schedule.min_delta}
    if type(schedule) is _SCHEDULES["constant"]:
        return "constant"
    raise ConfigError(f"The schedule {schedule!r} has no JSON form (it is not one of the library's: "
                      f"{', '.join(sorted(_SCHEDULES))}); give the schedule as a spec dict to write the config.")


def make_loss(spec):
    """A Gluon loss from ``None``, a name, a spec dict, or the loss object itself (returned as it is)."""
    if spec is None:
        return gluon.loss.SoftmaxCrossEntropyLoss()
    if isinstance(spec, gluon.loss.Loss):
        return spec
    if not isinstance(spec, (str, dict, types.MappingProxyType)):
        raise ConfigError(f"The 'loss' parameter must be None, a name, a spec dict or a Gluon loss. "
                          f"Got {spec!r} instead.")
    name, args = _name_and_args(spec, "loss")
    if name not in LOSSES:
        raise UnknownNameError("loss", name, list(LOSSES))
    if name == "label_smoothing":
        if set(args) - {"smoothing"}:
            raise ConfigError(f"The loss spec {dict(spec)!r} takes only 'smoothing'.")
        return LabelSmoothingLoss(**args)
    if args:
        raise ConfigError(f"The loss spec {dict(spec)!r} takes no arguments.")
    return gluon.loss.SoftmaxCrossEntropyLoss()


def loss_spec(loss):
    """The JSON form of a loss field: ``None``, a name, or a spec dict (for the library's losses)."""
    if loss is None or isinstance(loss, str):
        return loss
    if isinstance(loss, (dict, types.MappingProxyType)):
        return dict(loss)
    if type(loss) is LabelSmoothingLoss:
        return {"name": "label_smoothing", "smoothing": loss.smoothing}
    if type(loss) is gluon.loss.SoftmaxCrossEntropyLoss and getattr(loss, "_sparse_label", True) \
            and getattr(loss, "_from_logits", False) is False and getattr(loss, "_weight", None) is None:
        return "softmax_cross_entropy"
    raise ConfigError(f"The loss {loss!r} has no JSON form (the library knows {', '.join(LOSSES)}); give the "
                      "loss as a spec to write the config.")

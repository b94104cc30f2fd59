"""The Trainer's state to and from a checkpoint file: what exact resume saves and restores.

:func:`save_state` gathers everything a run needs to continue exactly —
weights, optimizer state (:mod:`finetune.train._checkpoint` writes it
without pickle), position (epoch, batch, running sums), history, schedule
and callback state (with the callbacks' arrays, such as the best epoch's
weights), the random generators and the weight average — into
one zip written atomically; :func:`load_state` puts it back into a set-up
:class:`~finetune.Trainer`. The file names no Python class or module, so it
does not depend on where the Trainer's code lives.

A checkpoint also records what its run was trained on (:func:`run_fingerprint`):
the training and validation data (items, class names, the records' size and
a hash of their index, or a hash of in-memory labels) and the settings that
shape the run (optimizer and its parameters, batch size, schedule, loss,
workers, weight average, batch mixing, seed). :func:`load_state` refuses a
checkpoint whose run differs from the one resuming it, naming what differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import random
import tempfile
import zipfile

import mxnet as mx
import numpy as np

from .._file_writes import atomic_write
from ..errors import CheckpointError, ConfigError, MissingFileError
from ..models import ModelProtocol
from . import _checkpoint as _ckpt
from ._weights import WeightAverage

__all__ = ["check_layout", "find_checkpoint", "load_state", "model_fingerprint", "parameter_shapes",
           "recipe_settings", "require_checkpoint", "run_fingerprint", "save_arrays", "save_state"]


def save_state(trainer, path) -> None:
    """Write ``trainer``'s full training state to ``path`` atomically (see :meth:`Trainer.save_checkpoint`)."""
    path = os.fspath(path)
    with tempfile.TemporaryDirectory() as tmp:
        trainer.model.save_parameters(os.path.join(tmp, "p"))
        with open(os.path.join(tmp, "p"), "rb") as f:
            params = f.read()
    opt_meta, opt_arrays = _ckpt.optimizer_state(trainer._trainer)
    np_state = np.random.get_state()
    state = {
        "format": _ckpt.FORMAT, "epoch": trainer.epoch_, "batch": trainer.batch_, "acc": trainer._acc.tolist(),
        "history": trainer.history_, "schedule": trainer.schedule.state_dict(),
        "callbacks": [cb.state_dict() for cb in trainer._callbacks], "seed": trainer.seed,
        "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python_rng": _jsonable(random.getstate()),
    }
    if getattr(trainer, "_fingerprint", None) is not None:
        state["fingerprint"] = trainer._fingerprint
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("state.json", json.dumps(state))
        z.writestr("model.params", params)
        z.writestr("optimizer.json", json.dumps(opt_meta))
        z.writestr("optimizer.arrays", save_arrays(opt_arrays))
        if trainer._ema is not None:
            z.writestr("ema.arrays", save_arrays(trainer._ema.state_arrays()))
        cb_arrays = {f"{i}:{name}": value for i, cb in enumerate(trainer._callbacks)
                     for name, value in cb.state_arrays().items()}
        if cb_arrays:
            z.writestr("callbacks.arrays", save_arrays(cb_arrays))
    atomic_write(path, buf.getvalue())
    trainer.last_checkpoint_ = path


def save_arrays(arrays: dict) -> bytes:
    """``mx.nd.save`` of ``arrays`` as bytes, for a checkpoint member (an empty dict gives an empty file)."""
    with tempfile.TemporaryDirectory() as tmp:
        fname = os.path.join(tmp, "a")
        mx.nd.save(fname, {k: v.as_in_context(mx.cpu()) for k, v in arrays.items()})
        with open(fname, "rb") as f:
            return f.read()


def load_state(trainer, path: str) -> None:
    """Restore into a set-up ``trainer`` what :func:`save_state` wrote to the file ``path``."""
    ck = _ckpt.read_checkpoint(path)
    state = ck["state"]
    check_fingerprint(path, state.get("fingerprint"), getattr(trainer, "_fingerprint", None))
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "p"), "wb") as f:
            f.write(ck["params"])
        check_layout(path, _saved_shapes(path, os.path.join(tmp, "p")), parameter_shapes(trainer.model))
        try:
            trainer.model.load_parameters(os.path.join(tmp, "p"), ctx=trainer.ctx_)
        except (AssertionError, mx.base.MXNetError, KeyError, ValueError) as e:
            raise CheckpointError(f"Checkpoint {path!r} does not fit this model "
                                  f"({type(e).__name__} while loading its weights). Resume with the model "
                                  "(backbone and head) the checkpoint was written for.") from None
    _ckpt.restore_optimizer_state(trainer._trainer, ck["optimizer"], ck["arrays"], path)
    try:
        trainer.schedule.load_state_dict(state["schedule"])
        for cb, st, arrays in zip(trainer._callbacks, state["callbacks"], ck["callback_arrays"]):
            cb.load_state_dict(st)
            cb.load_state_arrays(arrays)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"Checkpoint {path!r}: the schedule or callback state does not fit "
                              f"({type(e).__name__}: {e}). Resume with the same schedule and callbacks.") from None
    if trainer.ema is not None and ck.get("ema") is not None:
        trainer._ema = WeightAverage(trainer.model.collect_params(), trainer.ema)
        trainer._ema.load_state_arrays(ck["ema"])
    trainer.epoch_, trainer.batch_ = state["epoch"], state["batch"]
    trainer._acc = np.asarray(state["acc"], dtype=float)
    trainer.history_ = state["history"]
    s = state["numpy_rng"]
    np.random.set_state((s[0], np.asarray(s[1], dtype=np.uint32), *s[2:]))
    r = state["python_rng"]
    random.setstate((r[0], tuple(r[1]), r[2]))
    trainer.last_checkpoint_ = path


def _saved_shapes(path, fname) -> dict:
    """``{name: shape}`` of the weights file ``fname`` taken from the checkpoint ``path``."""
    try:
        arrays = mx.nd.load(fname)
    except mx.base.MXNetError:
        raise CheckpointError(f"Checkpoint {path!r}: its weights (model.params) cannot be read. The file is "
                              "damaged or was not written by finetune; resume from another checkpoint.") from None
    if not isinstance(arrays, dict):
        raise CheckpointError(f"Checkpoint {path!r}: its weights (model.params) are not named. The file was not "
                              "written by finetune; resume from another checkpoint.")
    return {k.split(":", 1)[-1]: list(v.shape) for k, v in arrays.items()}


def check_layout(path, saved: dict, model: dict) -> None:
    """Raise :class:`CheckpointError` when the checkpoint's parameters (``saved``) are not the model's (``model``).

    Both are ``{structural name: shape}``; the message names what is missing,
    extra or of another shape, in the model's terms.
    """
    missing = [n for n in model if n not in saved]
    extra = [n for n in saved if n not in model]
    shaped = [f"{n} {tuple(saved[n])} in the checkpoint, {tuple(model[n])} now" for n in model
              if n in saved and model[n] is not None and list(model[n]) != list(saved[n]) and 0 not in model[n]]
    parts = [f"{what} ({len(names)}): {', '.join(names[:4])}{', ...' if len(names) > 4 else ''}"
             for what, names in (("parameters this model has and the checkpoint lacks", missing),
                                 ("parameters of the checkpoint this model lacks", extra),
                                 ("other shapes", shaped)) if names]
    if parts:
        raise CheckpointError(f"Checkpoint {path!r} does not fit this model: it was written for "
                              f"another model (another backbone or head): "
                              f"{'; '.join(parts)}. Resume with the backbone and head options the checkpoint "
                              "was trained with, or start afresh (a new --out / out_dir, or without resume).")


def find_checkpoint(path) -> str:
    """The checkpoint file ``path`` names: the file itself, ``path/last.ckpt`` or ``path/checkpoints/last.ckpt``."""
    path = os.fspath(path)
    for cand in (path, os.path.join(path, "last.ckpt"), os.path.join(path, "checkpoints", "last.ckpt")):
        if os.path.isfile(cand):
            return cand
    raise MissingFileError(f"No checkpoint at {path!r} (looked for the file, last.ckpt and checkpoints/last.ckpt).")


#: Where each kind of run keeps the checkpoint it resumes from, inside its output folder.
_RUN_CHECKPOINTS = {"manual": os.path.join("checkpoints", "last.ckpt"),
                    "recipe": os.path.join("fine_tune", "checkpoints", "last.ckpt")}


def require_checkpoint(out_dir, kind: str) -> str:
    """The checkpoint a ``kind`` (``"manual"`` or ``"recipe"``) run in ``out_dir`` resumes from; it must exist.

    Resuming never starts afresh: without the checkpoint this raises
    :class:`MissingFileError` (naming the other kind's checkpoint when the
    folder holds that one), and without ``out_dir`` :class:`ConfigError`.
    """
    if not out_dir:
        raise ConfigError("resume=True continues the run in out_dir; give out_dir (the folder of the run).")
    path = os.path.join(os.fspath(out_dir), _RUN_CHECKPOINTS[kind])
    if os.path.isfile(path):
        return path
    other = next(k for k in _RUN_CHECKPOINTS if k != kind)
    there = os.path.join(os.fspath(out_dir), _RUN_CHECKPOINTS[other])
    hint = ""
    if os.path.isfile(there):
        how = "--recipe manual and its options" if other == "manual" else "a recipe (no --recipe manual options)"
        hint = f" The folder holds a checkpoint of the other training mode ({there!r}): resume it with {how}."
    raise MissingFileError(f"No checkpoint to resume at {path!r}.{hint} Resuming never starts afresh: to train "
                           "from the start, leave out --resume (resume=False) and choose a new --out (out_dir).")


def _jsonable(x):
    return [_jsonable(v) for v in x] if isinstance(x, (tuple, list)) else x


# ------------------------------------------------------------------ what a run was trained on
#: The :class:`~finetune.train.TrainConfig` fields that shape a run; they are recorded in a checkpoint and
#: compared on resume.
RUN_SETTINGS = ("optimizer", "optimizer_params", "batch_size", "schedule", "loss", "seed", "ema", "tta", "mixup",
                "cutmix", "mixed_precision")
#: The :class:`~finetune.train.TrainConfig` fields that may change between a run and its resume: where the
#: output goes, how often it is checkpointed, progress bars, data loader processes, graph compilation, the
#: kvstore type (the number of distributed workers is recorded) and feature caching (an optimisation).
RESUMABLE_SETTINGS = ("out_dir", "checkpoint_every", "progress", "workers", "hybridize", "kvstore",
                      "cache_features")


def run_fingerprint(trainer, train, val=None) -> dict:
    """What ``trainer`` is about to train on: data and settings, as JSON values (see :func:`check_fingerprint`).

    Recorded: the data (:func:`data_fingerprint`) and its augmentation, the
    :data:`RUN_SETTINGS` of the config, the model's identity
    (:func:`model_fingerprint`), the policy (its name, freezing, BatchNorm
    freezing, head epochs) and what it makes of every parameter (trained or
    frozen, LR and WD multipliers), and the items of ``trainer.run_settings``
    when set (what built the run: a recipe's fields, :func:`recipe_settings`).

    Parameters
    ----------
    trainer : Trainer
        Set up (its number of workers is known, the policy applied).
    train, val : Dataset or None
        The data as :meth:`Trainer.fit` received it (before any feature caching).
    """
    params = {k: v if isinstance(v, (bool, int, float, str, type(None))) else repr(v)
              for k, v in sorted(trainer.optimizer_params.items())}  # the config's, with the optimizer's defaults
    settings = {name: getattr(trainer.config, name) for name in RUN_SETTINGS}
    settings.update(optimizer_params=params, schedule=repr(trainer.schedule), loss=type(trainer.loss).__name__)
    model = trainer.model
    if isinstance(model, ModelProtocol) and model.preprocess is not None:  # what the weights learned to see
        settings["input_size"] = list(model.preprocess.size)
    policy = trainer.policy
    return json.loads(json.dumps({
        "train": data_fingerprint(train), "val": data_fingerprint(val), "augment": _augmentation(train),
        **settings, "num_workers": getattr(trainer, "num_workers_", 1), "model": model_fingerprint(model),
        "policy": getattr(policy, "label", None) or "custom rules", "freeze_until": policy.freeze_until,
        "freeze_bn": policy.freeze_bn, "head_epochs": policy.head_epochs,
        "parameters": _parameter_settings(policy, model), **dict(getattr(trainer, "run_settings", None) or {}),
    }, default=repr))


#: The fields of a recipe (:class:`~finetune.train.Recipe`, :class:`~finetune.train.ManualRecipe`) that may
#: change between a run and its resume: a run can be given more epochs. Every other field is recorded.
RESUMABLE_RECIPE_FIELDS = ("epochs",)


def recipe_settings(recipe) -> dict:
    """``{"recipe": {field: value}}``: the fields of ``recipe`` that shape its run, for ``Trainer.run_settings``."""
    fields = {f.name: getattr(recipe, f.name) for f in dataclasses.fields(recipe)
              if f.name not in RESUMABLE_RECIPE_FIELDS}
    return {"recipe": json.loads(json.dumps({"name": type(recipe).__name__, **fields}, default=repr))}


def model_fingerprint(model) -> dict:
    """The identity of ``model``: its architecture and head (for :class:`~finetune.Model`), class count and layout.

    ``layout`` is a SHA-256 of every parameter's structural name and shape,
    so two models with the same layout load each other's weights.
    """
    out = {"class": type(model).__name__}
    for key, attr in (("architecture", "arch"), ("head", "head_spec"), ("classes", "num_classes")):
        try:
            value = getattr(model, attr)
        except (AttributeError, NotImplementedError, ValueError, TypeError):
            continue
        if value is not None:
            out[key] = value
    shapes = parameter_shapes(model)
    out["parameters"] = len(shapes)
    out["layout"] = hashlib.sha256(json.dumps(sorted(shapes.items())).encode()).hexdigest()[:16]
    return out


def parameter_shapes(model) -> dict:
    """``{structural name: shape}`` of ``model``'s parameters, as :meth:`save_parameters` names them."""
    return {name: list(p.shape) if p.shape else None for name, p in model._collect_params_with_prefix().items()}


def _parameter_settings(policy, model) -> dict:
    """``{parameter: "frozen" or "lr xA wd xB"}``: what ``policy`` makes of every parameter that can train."""
    out = {}
    for name, (_, lr_mult, wd_mult, trainable) in policy.resolve(model, None).items():
        out[name] = f"lr x{lr_mult:.6g} wd x{wd_mult:.6g}" if trainable else "frozen"
    return out


def _augmentation(dataset):
    """How ``dataset`` varies its training items: the repr of its ``augment``, ``"off"``, or None (unknown)."""
    if dataset is None or not hasattr(dataset, "train"):
        return None
    return repr(getattr(dataset, "augment", None)) if dataset.train else "off"


def data_fingerprint(dataset) -> dict | None:
    """A cheap summary of ``dataset`` that changes when its items do (``None`` for no data).

    Always the number of items and the class names (when the data set has
    them); for records (a data set with a ``path`` to a ``.rec``) the file's
    size and a SHA-256 of its ``.idx``; for ``(images, labels)`` arrays a
    SHA-256 of the labels. Images are not read.
    """
    if dataset is None:
        return None
    fp = {"items": len(dataset)}
    names = getattr(dataset, "class_names", None)
    if names:
        fp["classes"] = [str(n) for n in names]
    path = getattr(dataset, "path", None)
    if isinstance(path, str) and os.path.isfile(path):
        fp["records_bytes"] = os.path.getsize(path)
        idx = os.path.splitext(path)[0] + ".idx"
        if os.path.isfile(idx):
            fp["index_sha256"] = _sha256_file(idx)
    elif isinstance(getattr(dataset, "_data", None), (list, tuple)) and len(dataset._data) == 2:
        labels = dataset._data[1]
        labels = labels.asnumpy() if hasattr(labels, "asnumpy") else np.asarray(labels)
        fp["labels_sha256"] = hashlib.sha256(np.ascontiguousarray(labels, np.float64).tobytes()).hexdigest()
    return fp


def check_fingerprint(path, saved, now) -> None:
    """Raise :class:`CheckpointError` naming every difference between the run ``saved`` in ``path`` and ``now``.

    Either being ``None`` (a checkpoint written before runs were recorded, or
    a state loaded outside :meth:`Trainer.fit`) checks nothing.
    """
    if saved is None or now is None:
        return
    if not isinstance(saved, dict):
        raise CheckpointError(f"Checkpoint {path!r}: 'fingerprint' in state.json must be an object. "
                              f"Got {type(saved).__name__} instead.")
    diffs = _summarise([(key, a, b) for key, a, b in _differences(saved, now)])
    if diffs:
        raise CheckpointError(
            f"Checkpoint {path!r} was written by a run on other data or settings, so resuming it would "
            f"mix two runs. What differs: {'; '.join(diffs)}. Start afresh (a new --out / out_dir, or "
            "without resume), or resume with the data and settings the checkpoint was trained on.")


def _summarise(differences) -> list:
    """One line per difference; the per-parameter ones in one line with a count and the first few."""
    lines, per_param = [], []
    said = {(key, repr(a), repr(b)) for key, a, b in differences}
    for key, a, b in differences:
        if key.startswith("recipe.") and (key[len("recipe."):], repr(a), repr(b)) in said:
            continue  # the same setting, already named as the Trainer's
        if key.startswith("parameters."):
            a, b = ("absent" if v is None else v for v in (a, b))
            per_param.append(f"{key[len('parameters.'):]} checkpoint {a}, now {b}")
        else:
            lines.append(f"{key}: checkpoint {_short(a)}, now {_short(b)}")
    if per_param:
        more = f" and {len(per_param) - 3} more" if len(per_param) > 3 else ""
        lines.append(f"how parameters train ({len(per_param)} differ): {', '.join(per_param[:3])}{more}")
    return lines


def _differences(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) if not prefix else set(a) | set(b)):  # a key newer than the checkpoint: unknown
            yield from _differences(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
    elif a != b:
        yield prefix, a, b


def _short(value, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

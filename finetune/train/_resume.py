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
from ..errors import CheckpointError, MissingFileError
from ..models import ModelProtocol
from . import _checkpoint as _ckpt
from ._weights import WeightAverage

__all__ = ["find_checkpoint", "load_state", "run_fingerprint", "save_arrays", "save_state"]


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
        try:
            trainer.model.load_parameters(os.path.join(tmp, "p"), ctx=trainer.ctx_)
        except (AssertionError, mx.base.MXNetError, KeyError, ValueError) as e:
            raise CheckpointError(f"Checkpoint {path!r} does not fit this model: "
                                  f"{str(e).strip().splitlines()[0][:300] if str(e).strip() else e!r}. "
                                  "Resume with the model the checkpoint was written for.") from None
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


def find_checkpoint(path) -> str:
    """The checkpoint file ``path`` names: the file itself, ``path/last.ckpt`` or ``path/checkpoints/last.ckpt``."""
    path = os.fspath(path)
    for cand in (path, os.path.join(path, "last.ckpt"), os.path.join(path, "checkpoints", "last.ckpt")):
        if os.path.isfile(cand):
            return cand
    raise MissingFileError(f"No checkpoint at {path!r} (looked for the file, last.ckpt and checkpoints/last.ckpt).")


def _jsonable(x):
    return [_jsonable(v) for v in x] if isinstance(x, (tuple, list)) else x


# ------------------------------------------------------------------ what a run was trained on
#: The :class:`~finetune.train.TrainConfig` fields that shape a run (the others — workers, output folder,
#: progress bars, checkpoint frequency, hybridization, kvstore type — may change between a run and its resume).
RUN_SETTINGS = ("optimizer", "batch_size", "ema", "mixup", "cutmix", "seed")


def run_fingerprint(trainer, train, val=None) -> dict:
    """What ``trainer`` is about to train on: data and settings, as JSON values (see :func:`check_fingerprint`).

    Parameters
    ----------
    trainer : Trainer
        Set up (its number of workers is known).
    train, val : Dataset or None
        The data as :meth:`Trainer.fit` received it (before any feature caching).
    """
    params = {k: v if isinstance(v, (bool, int, float, str, type(None))) else repr(v)
              for k, v in sorted(trainer.optimizer_params.items())}  # the config's, with the optimizer's defaults
    settings = {name: getattr(trainer.config, name) for name in RUN_SETTINGS}
    model = trainer.model
    if isinstance(model, ModelProtocol) and model.preprocess is not None:  # what the weights learned to see
        settings["input_size"] = list(model.preprocess.size)
    return json.loads(json.dumps({
        "train": data_fingerprint(train), "val": data_fingerprint(val), **settings, "optimizer_params": params,
        "schedule": repr(trainer.schedule), "loss": type(trainer.loss).__name__,
        "num_workers": getattr(trainer, "num_workers_", 1),
    }))


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
    diffs = [f"{key}: checkpoint {_short(a)}, now {_short(b)}" for key, a, b in _differences(saved, now)]
    if diffs:
        raise CheckpointError(
            f"Checkpoint {path!r} was written by a run on other data or settings, so resuming it would "
            f"mix two runs. What differs: {'; '.join(diffs)}. Start afresh (a new --out / out_dir, or "
            "without resume), or resume with the data and settings the checkpoint was trained on.")


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

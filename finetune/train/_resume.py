"""The Trainer's state to and from a checkpoint file: what exact resume saves and restores.

:func:`save_state` gathers everything a run needs to continue exactly —
weights, optimizer state (:mod:`finetune.train._checkpoint` writes it
without pickle), position (epoch, batch, running sums), history, schedule
and callback state (with the callbacks' arrays, such as the best epoch's
weights), the random generators and the weight average — into
one zip written atomically; :func:`load_state` puts it back into a set-up
:class:`~finetune.Trainer`. The file names no Python class or module, so it
does not depend on where the Trainer's code lives.
"""

from __future__ import annotations

import io
import json
import os
import random
import tempfile
import zipfile

import mxnet as mx
import numpy as np

from .._atomic import atomic_write
from ..errors import CheckpointError, MissingFileError
from . import _checkpoint as _ckpt
from ._weights import WeightAverage

__all__ = ["find_checkpoint", "load_state", "save_state"]


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
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("state.json", json.dumps(state))
        z.writestr("model.params", params)
        z.writestr("optimizer.json", json.dumps(opt_meta))
        z.writestr("optimizer.arrays", _ckpt.save_arrays(opt_arrays))
        if trainer._ema is not None:
            z.writestr("ema.arrays", _ckpt.save_arrays(trainer._ema.state_arrays()))
        cb_arrays = {f"{i}:{name}": value for i, cb in enumerate(trainer._callbacks)
                     for name, value in cb.state_arrays().items()}
        if cb_arrays:
            z.writestr("callbacks.arrays", _ckpt.save_arrays(cb_arrays))
    atomic_write(path, buf.getvalue())
    trainer.last_checkpoint_ = path


def load_state(trainer, path: str) -> None:
    """Restore into a set-up ``trainer`` what :func:`save_state` wrote to the file ``path``."""
    ck = _ckpt.read_checkpoint(path)
    state = ck["state"]
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

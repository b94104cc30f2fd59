"""Training callbacks: hooks called by :meth:`Trainer.fit`, and the built-ins.

Hooks, in the order they are called::

    on_train_begin(trainer)
        on_epoch_begin(trainer, epoch)
            on_batch_begin(trainer, epoch, batch)
            on_batch_end(trainer, epoch, batch, logs)     # logs: running train metrics
        on_epoch_end(trainer, epoch, logs)                # logs: the history row of the epoch
    on_train_end(trainer)

Raise :class:`StopTraining` from any hook to end training cleanly (the
current epoch's ``on_epoch_end`` still runs when raised from a batch hook).
A callback with state that must survive a resume implements ``state_dict`` /
``load_state_dict`` (JSON-ready values) and, for arrays such as weights,
``state_arrays`` / ``load_state_arrays``. The :class:`Checkpoint` callback's
``on_epoch_end`` runs after every other callback's, so the checkpoint of an
epoch holds their state of that epoch.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os

from .._file_writes import atomic_write
from ..errors import check_choice, check_range

__all__ = ["Callback", "Checkpoint", "EarlyStopping", "HistoryLogger", "StopTraining", "atomic_write"]

log = logging.getLogger(__name__)


class StopTraining(Exception):
    """Raise from a callback hook to stop :meth:`Trainer.fit` cleanly.

    Examples
    --------
    >>> class StopAtOne(Callback):
    ...     def on_epoch_end(self, trainer, epoch, logs):
    ...         if epoch == 1:
    ...             raise StopTraining("enough")
    """


class Callback:
    """Base class of training callbacks; every hook does nothing by default.

    Examples
    --------
    >>> class PrintLoss(Callback):
    ...     def on_epoch_end(self, trainer, epoch, logs):
    ...         trainer.log.info("epoch %d loss %.3f", epoch, logs["train_loss"])
    """

    def on_train_begin(self, trainer):
        """Before the first epoch (after a resume has been loaded)."""

    def on_epoch_begin(self, trainer, epoch: int):
        """Before the first batch of ``epoch`` (0-based)."""

    def on_batch_begin(self, trainer, epoch: int, batch: int):
        """Before batch ``batch`` (0-based within the epoch)."""

    def on_batch_end(self, trainer, epoch: int, batch: int, logs: dict):
        """After the parameter update of batch ``batch``."""

    def on_epoch_end(self, trainer, epoch: int, logs: dict):
        """After validation of ``epoch``; ``logs`` is the epoch's history row."""

    def on_train_end(self, trainer):
        """After the last epoch, or after :class:`StopTraining`."""

    def state_dict(self) -> dict:
        """State to keep in checkpoints (JSON-ready)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""

    def state_arrays(self) -> dict:
        """Arrays to keep in checkpoints, ``{name: NDArray}`` (e.g. weights); none by default."""
        return {}

    def load_state_arrays(self, arrays: dict) -> None:
        """Restore :meth:`state_arrays` (called after :meth:`load_state_dict`; ``{}`` if the checkpoint has none)."""


def _better(mode, value, best, min_delta=0.0):
    if best is None:
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


def _auto_mode(mode, monitor):
    if mode != "auto":
        return mode
    return "min" if "loss" in monitor else "max"


class Checkpoint(Callback):
    """Save the full training state: ``last.ckpt`` (each epoch, and every N batches) and ``best.ckpt``.

    A checkpoint holds the model parameters, the optimizer state, the
    schedule and callback states (with their arrays, such as the best
    epoch's weights of :class:`~finetune.train.KeepBest`), the epoch and
    batch position, the running metrics and the RNG states;
    ``Trainer.fit(..., resume=directory)`` continues from ``last.ckpt``
    exactly. Files are written atomically, so a crash (or ``kill -9``) never
    leaves a half-written checkpoint. At an epoch's end it saves after the
    other callbacks have seen the epoch.

    Parameters
    ----------
    directory : str or path
    every_n_batches : int
        Also save ``last.ckpt`` every N batches inside an epoch (0: only at epoch ends).
    monitor : str or None
        Metric deciding ``best.ckpt`` (``None``: no best checkpoint).
    mode : {"auto", "max", "min"}

    Examples
    --------
    >>> cb = Checkpoint("run/checkpoints", every_n_batches=50)
    """

    def __init__(self, directory, every_n_batches: int = 0, monitor: str | None = "val_top1", mode: str = "auto"):
        check_range("Checkpoint", "every_n_batches", every_n_batches, 0)
        check_choice("Checkpoint", "mode", mode, ("auto", "max", "min"))
        self.directory = os.fspath(directory)
        self.every_n_batches = int(every_n_batches)
        self.monitor = monitor
        self.mode = mode
        self.best = None

    def on_train_begin(self, trainer):
        os.makedirs(self.directory, exist_ok=True)

    def on_batch_end(self, trainer, epoch, batch, logs):
        n = self.every_n_batches
        if n and (batch + 1) % n == 0 and batch + 1 < trainer.batches_per_epoch_:
            trainer.save_checkpoint(os.path.join(self.directory, "last.ckpt"))

    def on_epoch_end(self, trainer, epoch, logs):
        if self.monitor and logs.get(self.monitor) is not None:
            value = logs[self.monitor]
            if _better(_auto_mode(self.mode, self.monitor), value, self.best):
                self.best = value
                trainer.save_checkpoint(os.path.join(self.directory, "best.ckpt"))
        trainer.save_checkpoint(os.path.join(self.directory, "last.ckpt"))

    def state_dict(self):
        return {"best": self.best}

    def load_state_dict(self, state):
        self.best = state.get("best")


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs.

    Parameters
    ----------
    monitor : str
        E.g. ``"val_loss"`` or ``"val_top1"``.
    patience : int
    min_delta : float
    mode : {"auto", "max", "min"}

    Examples
    --------
    >>> stop = EarlyStopping("val_loss", patience=3)
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 3, min_delta: float = 0.0, mode: str = "auto"):
        check_range("EarlyStopping", "patience", patience, 0)
        check_choice("EarlyStopping", "mode", mode, ("auto", "max", "min"))
        self.monitor, self.patience, self.min_delta, self.mode = monitor, int(patience), float(min_delta), mode
        self.best, self.wait = None, 0

    def on_epoch_end(self, trainer, epoch, logs):
        value = logs.get(self.monitor)
        if value is None:
            return
        if _better(_auto_mode(self.mode, self.monitor), value, self.best, self.min_delta):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait > self.patience:
            raise StopTraining(f"{self.monitor} did not improve for {self.wait} epochs (best {self.best:.4g}).")

    def state_dict(self):
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state):
        self.best, self.wait = state.get("best"), state.get("wait", 0)


class HistoryLogger(Callback):
    """Write ``history.csv`` and ``history.json`` into ``directory`` after every epoch (atomically).

    Examples
    --------
    >>> logger = HistoryLogger("run/")
    """

    def __init__(self, directory):
        self.directory = os.fspath(directory)

    def on_train_begin(self, trainer):
        os.makedirs(self.directory, exist_ok=True)

    def on_epoch_end(self, trainer, epoch, logs):
        rows = trainer.history_
        atomic_write(os.path.join(self.directory, "history.json"), json.dumps(rows, indent=1).encode())
        keys = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(os.path.join(self.directory, "history.csv"), buf.getvalue().encode())

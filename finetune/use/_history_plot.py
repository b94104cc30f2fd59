"""The training history: read from ``history.csv`` / ``history.json`` (or rows), and plotted per epoch.

:func:`plot_history` draws loss and accuracy per epoch, train vs validation,
with learning-rate steps marked; :func:`load_history` reads what the
:class:`~finetune.HistoryLogger` writes (and similar files from other tools).
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np

from .._figures import new_figure, save_figure
from ..errors import DataError, MissingFileError

__all__ = ["load_history", "plot_history"]

_LOSS = {"train": ("train_loss", "loss", "training_loss"),
         "val": ("val_loss", "valid_loss", "validation_loss")}
_ACC = {"train": ("train_top1", "train_acc", "train_accuracy", "acc", "accuracy", "top1"),
        "val": ("val_top1", "val_acc", "val_accuracy", "valid_acc", "validation_accuracy")}
_TOP5 = {"train": ("train_top5",), "val": ("val_top5",)}
_LR = ("lr", "learning_rate")


def _number(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def load_history(history) -> list:
    """Read a training history into a list of per-epoch dicts.

    Parameters
    ----------
    history : Trainer, list of dict, dict of lists, str or path-like
        A :class:`~finetune.Trainer` (its ``history_``), per-epoch records (``[{"epoch": 1, "train_loss": ...}, ...]``), columns
        (``{"train_loss": [...], ...}``), or a CSV file (one row per epoch,
        header line) or JSON file holding either form (or ``{"epochs": [...]}``).
        A JSON-lines file (one object per line) is accepted too.

    Returns
    -------
    list of dict
        With numeric values (missing ones NaN) and an ``epoch`` key.
    """
    if hasattr(history, "history_"):  # a Trainer
        history = history.history_
    if isinstance(history, (str, os.PathLike)):
        path = Path(history)
        if not path.is_file():
            raise MissingFileError(f"History file {str(path)!r} does not exist.")
        history = _read_history_file(path)
    if isinstance(history, dict):
        if "epochs" in history and isinstance(history["epochs"], list):
            history = history["epochs"]
        elif "history" in history and isinstance(history["history"], list):
            history = history["history"]
        else:
            n = max((len(v) for v in history.values() if isinstance(v, (list, tuple))), default=0)
            history = [{k: (v[i] if isinstance(v, (list, tuple)) and i < len(v) else None)
                        for k, v in history.items()} for i in range(n)]
    rows = []
    for i, r in enumerate(history):
        if hasattr(r, "to_dict"):
            r = r.to_dict()
        if not isinstance(r, dict):
            raise DataError(f"History entry {i} is a {type(r).__name__}; expected a dict of numbers per epoch.")
        row = {str(k): _number(v) for k, v in r.items()}
        if math.isnan(row.get("epoch", float("nan"))):
            row["epoch"] = float(i + 1)
        rows.append(row)
    if not rows:
        raise DataError("The training history is empty.")
    return rows


def _read_history_file(path: Path):
    """The records or columns of a CSV, JSON or JSON-lines history file; a damaged file is a :class:`DataError`."""
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".csv" or not text.lstrip().startswith(("{", "[")):
            return list(csv.DictReader(text.splitlines()))
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
    except (UnicodeDecodeError, ValueError, csv.Error) as exc:  # JSONDecodeError is a ValueError
        raise DataError(f"History file {str(path)!r} is not readable CSV, JSON or JSON lines "
                        f"({type(exc).__name__}: {exc}); write it again or give another file.") from None


def _column(rows, names):
    for name in names:
        if any(name in r and not math.isnan(r[name]) for r in rows):
            return name, np.array([r.get(name, float("nan")) for r in rows])
    return None, None


def _lr_drops(rows, epochs):
    """Epochs where the learning rate stepped down: lower than the epoch before, and steady around the step.

    A step (plateau, step schedules) holds the rate before and after it; a
    schedule that changes the rate every epoch (cosine, warm-up, exponential)
    has no steps, only its curve, so it gets no marks.
    """
    _, lr = _column(rows, _LR)
    if lr is None:
        return []

    def same(a, b):
        return abs(a - b) <= 1e-9 * max(abs(a), abs(b))

    n = len(lr)
    return [epochs[i] for i in range(1, n) if lr[i] < lr[i - 1] * (1 - 1e-9)
            and (i < 2 or same(lr[i - 1], lr[i - 2])) and (i + 1 >= n or same(lr[i + 1], lr[i]))]


def plot_history(history, path=None, *, title: str | None = None):
    """Training curves: loss and accuracy per epoch, train vs validation.

    Learning-rate steps (epochs where ``lr`` dropped and held steady on
    both sides, as a plateau or step schedule does) are drawn as dashed
    vertical lines; a rate that changes every epoch (cosine) is not marked.
    The best validation accuracy is marked.

    Parameters
    ----------
    history : list of dict, dict of lists, str or path-like
        See :func:`load_history`. Recognised columns: ``train_loss``,
        ``val_loss``, ``train_top1`` / ``train_acc``, ``val_top1`` /
        ``val_acc``, ``val_top5``, ``lr``; accuracies in ``[0, 1]`` or
        percent.
    path : str or path-like or None
        Where to write the PNG.
    title : str or None
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = plot_history([{"epoch": 1, "train_loss": 1.2, "val_loss": 1.1, "val_top1": 0.6, "lr": 0.1},
    ...                     {"epoch": 2, "train_loss": 0.8, "val_loss": 0.9, "val_top1": 0.7, "lr": 0.01}])
    >>> len(fig.axes)
    2
    """
    rows = load_history(history)
    epochs = np.array([r["epoch"] for r in rows])
    fig = new_figure(11, 4.2)
    ax_loss, ax_acc = fig.subplots(1, 2)
    drops = _lr_drops(rows, epochs)
    styles = {"train": dict(color="tab:blue", marker="o", ms=3), "val": dict(color="tab:orange", marker="s", ms=3)}
    plotted_loss = plotted_acc = False
    for split in ("train", "val"):
        name, loss = _column(rows, _LOSS[split])
        if loss is not None:
            ax_loss.plot(epochs, loss, label=f"{split} loss", **styles[split])
            plotted_loss = True
        name, acc = _column(rows, _ACC[split])
        if acc is not None:
            acc = acc * 100 if np.nanmax(acc) <= 1.0 else acc
            ax_acc.plot(epochs, acc, label=f"{split} top-1", **styles[split])
            plotted_acc = True
            if split == "val" and np.isfinite(acc).any():
                best = int(np.nanargmax(acc))
                ax_acc.annotate(f"best {acc[best]:.1f} %", (epochs[best], acc[best]),
                                textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
        name, top5 = _column(rows, _TOP5[split])
        if top5 is not None:
            top5 = top5 * 100 if np.nanmax(top5) <= 1.0 else top5
            ax_acc.plot(epochs, top5, label=f"{split} top-5", ls=":", **styles[split])
    if not (plotted_loss or plotted_acc):
        raise DataError(f"The history has no loss or accuracy column; columns: {sorted(rows[0])}.")
    for ax, ylabel in ((ax_loss, "loss"), (ax_acc, "accuracy (%)")):
        for k, e in enumerate(drops):
            ax.axvline(e, color="grey", ls="--", lw=1, label="LR reduced" if k == 0 else None)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    ax_loss.set_title("loss")
    ax_acc.set_title("accuracy")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)

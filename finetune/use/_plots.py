"""Figures for training and using a model (matplotlib, written as PNG).

Every function returns a ``matplotlib.figure.Figure`` drawn on the Agg
canvas (no display, no global ``pyplot`` state, safe in scripts, servers and
tests) and writes it when ``path`` is given:

* :func:`plot_history` — loss and accuracy per epoch, train vs validation,
  with learning-rate reductions marked;
* :func:`plot_confusion_matrix` — row-normalised, readable with 100+ classes;
* :func:`plot_predictions` — a grid of images with their top-k classes;
* :func:`plot_gradcam` — Grad-CAM overlays.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import warnings
from pathlib import Path

import numpy as np

from .._atomic import atomic_open
from ..errors import ConfigError, DataError, MissingFileError

__all__ = ["load_history", "plot_confusion_matrix", "plot_errors", "plot_gradcam", "plot_history", "plot_predictions"]

log = logging.getLogger(__name__)

_LOSS = {"train": ("train_loss", "loss", "training_loss"),
         "val": ("val_loss", "valid_loss", "validation_loss")}
_ACC = {"train": ("train_top1", "train_acc", "train_accuracy", "acc", "accuracy", "top1"),
        "val": ("val_top1", "val_acc", "val_accuracy", "valid_acc", "validation_accuracy")}
_TOP5 = {"train": ("train_top5",), "val": ("val_top5",)}
_LR = ("lr", "learning_rate")
_CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans SC", "WenQuanYi Zen Hei",
              "WenQuanYi Micro Hei", "Source Han Sans SC", "SimHei", "Microsoft YaHei", "PingFang SC",
              "Heiti SC", "AR PL UMing CN")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path) as f:  # matplotlib takes the format from the name; the temporary has none
            fig.savefig(f, format=path.suffix[1:].lower() or None, dpi=fig.dpi, bbox_inches="tight")
        log.info("Wrote %s", path)
    return fig


# ----------------------------------------------------------------------- history
def _number(v):
    if v is None or v == "":
        return float("nan")
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
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".csv" or not text.lstrip().startswith(("{", "[")):
            history = list(csv.DictReader(text.splitlines()))
        else:
            try:
                history = json.loads(text)
            except json.JSONDecodeError:
                history = [json.loads(line) for line in text.splitlines() if line.strip()]
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


def _column(rows, names):
    for name in names:
        if any(name in r and not math.isnan(r[name]) for r in rows):
            return name, np.array([r.get(name, float("nan")) for r in rows])
    return None, None


def _lr_drops(rows, epochs):
    _, lr = _column(rows, _LR)
    if lr is None:
        return []
    return [epochs[i] for i in range(1, len(lr)) if lr[i] < lr[i - 1] * (1 - 1e-9)]


def plot_history(history, path=None, *, title: str | None = None):
    """Training curves: loss and accuracy per epoch, train vs validation.

    Learning-rate reductions (epochs where ``lr`` dropped) are drawn as
    dashed vertical lines and the best validation accuracy is marked.

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
    fig = _figure(11, 4.2)
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
    return _save(fig, path)


# --------------------------------------------------------------------- confusion
def plot_confusion_matrix(confusion, class_names=None, path=None, *, normalize: bool = True,
                          title: str | None = None):
    """A confusion matrix as an image, rows = true class, columns = prediction.

    Parameters
    ----------
    confusion : numpy.ndarray or EvaluationReport
        ``(K, K)`` counts, or a report (its matrix and class names are used).
    class_names : list of str or None
        Tick labels.
    path : str or path-like or None
        Where to write the PNG.
    normalize : bool
        Divide each row by its number of images (shows per-class recall).
    title : str or None
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure

    Notes
    -----
    Up to 25 classes the cells carry their values; beyond that the figure
    grows with ``K`` (up to 30 inches), tick labels shrink to fit their row
    and, past 250 classes, only every n-th class is labelled, so 100+ classes
    stay readable.

    Examples
    --------
    >>> fig = plot_confusion_matrix(np.array([[5, 1], [0, 4]]), ["cat", "dog"])
    >>> fig.axes[0].get_xlabel()
    'predicted class'
    """
    if hasattr(confusion, "confusion"):
        class_names = class_names or confusion.class_names
        confusion = confusion.confusion
    cm = np.asarray(confusion, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise DataError(f"A confusion matrix must be square (K, K). Got shape {cm.shape} instead.")
    k = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ConfigError(f"{len(names)} class names for a {k}x{k} confusion matrix.")
    if normalize:
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    side = float(np.clip(4 + 0.12 * k, 6, 30))
    fig = _figure(side + 1.2, side)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1 if normalize else None, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="fraction of the true class" if normalize else "images")
    cell_points = side * 0.8 / max(k, 1) * 72
    fontsize = float(np.clip(0.7 * cell_points, 4, 10))
    step = max(1, math.ceil(k / 250))
    ticks = np.arange(0, k, step)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xticklabels([names[i] for i in ticks], rotation=90, fontsize=fontsize)
    ax.set_yticklabels([names[i] for i in ticks], fontsize=fontsize)
    if k <= 25:
        for i in range(k):
            for j in range(k):
                if cm[i, j] > 0:
                    text = f"{cm[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
                    ax.text(j, i, text, ha="center", va="center", fontsize=max(fontsize - 1, 5),
                            color="white" if cm[i, j] > 0.6 * (cm.max() or 1) else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or ("confusion matrix (rows normalised)" if normalize else "confusion matrix"))
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------- image grids
def _font_for(texts):
    """A font family able to show ``texts`` (CJK names need one), or None to fall back."""
    if all(t.isascii() for t in texts):
        return "DejaVu Sans"
    from matplotlib import font_manager

    available = {f.name for f in font_manager.fontManager.ttflist}
    for name in _CJK_FONTS:
        if name in available:
            return name
    return None


def _thumbnail(img, side: int = 320):
    """Downscale an image for display (keeps PNG files small)."""
    import cv2

    h, w = img.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return img
    return cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _grid(n, ncols, cell=(3.0, 3.4)):
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = _figure(cell[0] * ncols, cell[1] * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for ax in axes:
        ax.axis("off")
    return fig, axes


def plot_predictions(predictions, path=None, *, images=None, ncols: int = 4, top_k: int = 3,
                     color: str | None = None):
    """A grid of images, each with its top-k classes and probabilities.

    Parameters
    ----------
    predictions : Predictions or list of Prediction
        From :meth:`Predictor.predict`.
    path : str or path-like or None
        Where to write the PNG.
    images : list of numpy.ndarray or None
        The images, when the predictions came from arrays; else each image is
        read from its ``source`` file.
    ncols : int
        Images per row.
    top_k : int
        Classes listed under each image.
    color : {"RGB", "BGR"} or None
        Colour order of ``images``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from ..data import read_image, to_color

    predictions = list(predictions)
    if not predictions:
        raise DataError("No predictions to plot.")
    labels = [d for p in predictions for d in p.display[:top_k]]
    font = _font_for(labels)
    use_display = font is not None
    if not use_display:
        warnings.warn("No installed font can show the translated class names (e.g. a CJK font such as "
                      "'Noto Sans CJK SC'); the plot shows the model's class names instead.", stacklevel=2)
        font = "DejaVu Sans"
    fig, axes = _grid(len(predictions), ncols, cell=(3.0, 3.0 + 0.2 * (top_k + 1)))
    for i, (ax, p) in enumerate(zip(axes, predictions)):
        img = None
        try:
            if images is not None:
                if color is None:
                    raise ConfigError("Pass color='RGB' or 'BGR' with images.")
                img = to_color(images[i], color, "RGB")
            elif p.error is None and os.path.isfile(p.source):
                img = read_image(p.source, "RGB")
        except (OSError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
        if img is not None:
            ax.imshow(_thumbnail(img))
        name = os.path.basename(p.source)
        if p.error is not None:
            text = "unreadable"
        else:
            shown = p.display if use_display else p.names
            text = "\n".join(f"{n[:22]} {pr:.1%}" for n, pr in zip(shown[:top_k], p.probabilities[:top_k]))
            if p.label is not None:
                name += f" (label {p.label})"
        ax.set_title(f"{name[:32]}\n{text}", fontsize=8, family=font, color="darkred" if p.error else "black")
    fig.tight_layout(h_pad=2.5)
    return _save(fig, path)


def plot_errors(report, path=None, *, n: int = 16, ncols: int = 4):
    """A grid of the ``n`` most confident errors of an evaluation: each image with its file name,
    true class, predicted class and probability.

    Parameters
    ----------
    report : EvaluationReport
        From :func:`~finetune.evaluate` on files (an :class:`~finetune.ImageList`,
        a folder or paths), so each error names its image file.
    path : str or path-like or None
        Where to write the PNG.
    n, ncols : int
        How many errors, and images per row.

    Returns
    -------
    matplotlib.figure.Figure or None
        ``None`` when the report has no error.
    """
    from ..data import read_image

    rows = report.most_confident_errors(n)
    if not rows:
        return None
    fig, axes = _grid(len(rows), ncols, cell=(2.6, 3.0))
    for ax, r in zip(axes, rows):
        if os.path.isfile(str(r["source"])):
            try:
                ax.imshow(_thumbnail(read_image(r["source"], "RGB")))
            except (OSError, ValueError):
                pass
        name = os.path.basename(str(r["source"]))
        ax.set_title(f"{name[:28]}\ntrue {r['label_name'][:16]}\npred {r['predicted_name'][:16]} "
                     f"{r['probability']:.0%}", fontsize=8, color="darkred")
    fig.tight_layout(h_pad=2.0)
    return _save(fig, path)


def plot_gradcam(results, path=None, *, ncols: int = 2, alpha: float = 0.5):
    """Grad-CAM overlays: for each result the image and the heat map over it.

    Parameters
    ----------
    results : GradCAMResult or list of GradCAMResult
        From :class:`~finetune.GradCAM`.
    path : str or path-like or None
        Where to write the PNG.
    ncols : int
        Results per row (each takes two panels).
    alpha : float
        Weight of the heat map in the overlay.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if hasattr(results, "heatmap"):
        results = [results]
    results = list(results)
    if not results:
        raise DataError("No Grad-CAM results to plot.")
    fig, axes = _grid(2 * len(results), 2 * ncols)
    for k, r in enumerate(results):
        ax_img, ax_cam = axes[2 * k], axes[2 * k + 1]
        ax_img.imshow(_thumbnail(r.image, 480))
        ax_img.set_title("image", fontsize=9)
        ax_cam.imshow(_thumbnail(r.overlay(alpha), 480))
        ax_cam.set_title(f"{r.class_name[:24]} {r.probability:.1%}\nlayer {r.layer[-24:]}", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)

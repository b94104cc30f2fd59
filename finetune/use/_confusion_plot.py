"""The confusion matrix as a figure: row-normalised, readable with 100+ classes."""

from __future__ import annotations

import math

import numpy as np

from .._figures import new_figure, save_figure
from ..errors import ConfigError, DataError

__all__ = ["plot_confusion_matrix"]


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
    fig = new_figure(side + 1.2, side)
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
    return save_figure(fig, path)

"""Image grids (matplotlib, written as PNG): predictions, errors and Grad-CAM overlays.

Every function returns a ``matplotlib.figure.Figure`` drawn on the Agg
canvas (no display, no global ``pyplot`` state, safe in scripts, servers and
tests) and writes it when ``path`` is given:

* :func:`plot_predictions` — a grid of images with their top-k classes;
* :func:`plot_errors` — the misclassified images of an evaluation report;
* :func:`plot_gradcam` — Grad-CAM overlays.

Pixels come from the image each result keeps (its
:class:`~finetune.data.ImageItem`, read through the one image source), so a
prediction or an evaluation on arrays, bytes or a record file is drawn like
one on files. Only a result without one (a report loaded from JSON, a
prediction built by hand) falls back to the file its ``source`` names. An
image that cannot be read is drawn as a placeholder under its name.

The training history is plotted in ``_history_plot.py``, the confusion
matrix in ``_confusion_plot.py``; all share ``_figures.py``.
"""

from __future__ import annotations

import logging
import math
import os
import warnings

import numpy as np

from .._figures import new_figure, save_figure
from ..data import ImageItem
from ..errors import ConfigError, DataError, FinetuneError

__all__ = ["plot_errors", "plot_gradcam", "plot_predictions"]

log = logging.getLogger(__name__)

_CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans SC", "WenQuanYi Zen Hei",
              "WenQuanYi Micro Hei", "Source Han Sans SC", "SimHei", "Microsoft YaHei", "PingFang SC",
              "Heiti SC", "AR PL UMing CN")


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


def _pixels(item, source):
    """The RGB pixels of a result, read through its ``item``, or ``None`` (with why not).

    Without an item (a report loaded from JSON), ``source`` is read when it
    names an existing file. A failed read is logged, never raised: one image
    must not stop a figure of many.
    """
    if item is None:
        source = os.fspath(source) if isinstance(source, (str, os.PathLike)) else ""
        if not source or not os.path.isfile(source):
            return None, "no image"
        item = ImageItem(source, "path", source)
    try:
        return item.read("RGB"), ""
    except (FinetuneError, OSError, ValueError) as exc:
        log.info("Plotting %s without its image: %s", item.source, exc)
        return None, "unreadable"


def _show(ax, img, why: str) -> None:
    """Draw ``img`` in ``ax``, or a grey placeholder saying ``why`` there is none."""
    if img is not None:
        if img.dtype != np.uint8:  # decoded float arrays keep their 0-255 values
            img = np.clip(img, 0, 255).astype(np.uint8)
        ax.imshow(_thumbnail(img))
        return
    from matplotlib.patches import Rectangle

    ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, facecolor="0.92", edgecolor="0.7"))
    ax.text(0.5, 0.5, why, transform=ax.transAxes, ha="center", va="center", fontsize=8, color="0.35")


def _grid(n, ncols, cell=(3.0, 3.4)):
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = new_figure(cell[0] * ncols, cell[1] * nrows)
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
        The images to draw instead of those the predictions keep
        (:attr:`Prediction.item`; a prediction without one shows the file its
        ``source`` names).
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
    from ..data import to_color

    predictions = list(predictions)
    if not predictions:
        raise DataError("No predictions to plot.")
    if images is not None and color is None:
        raise ConfigError("plot_predictions needs the colour order of 'images': pass color='RGB' or 'BGR'.")
    labels = [d for p in predictions for d in p.display[:top_k]]
    font = _font_for(labels)
    use_display = font is not None
    if not use_display:
        warnings.warn("No installed font can show the translated class names (e.g. a CJK font such as "
                      "'Noto Sans CJK SC'); the plot shows the model's class names instead.", stacklevel=2)
        font = "DejaVu Sans"
    fig, axes = _grid(len(predictions), ncols, cell=(3.0, 3.0 + 0.2 * (top_k + 1)))
    for i, (ax, p) in enumerate(zip(axes, predictions)):
        if images is not None:
            img, why = to_color(images[i], color, "RGB"), ""
        elif p.error is not None:
            img, why = None, "unreadable"
        else:
            img, why = _pixels(p.item, p.source)
        _show(ax, img, why)
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
    return save_figure(fig, path)


def plot_errors(report, path=None, *, n: int = 16, ncols: int = 4):
    """A grid of the ``n`` most confident errors of an evaluation: each image with its file name,
    true class, predicted class and probability.

    Parameters
    ----------
    report : EvaluationReport
        From :func:`~finetune.evaluate` (on files, arrays, bytes, a record
        file or a dataset): each image is read through the item the report
        keeps for it. A report loaded from JSON keeps none; its images are
        read from the files its sources name, and the others are drawn as
        placeholders.
    path : str or path-like or None
        Where to write the PNG.
    n, ncols : int
        How many errors, and images per row.

    Returns
    -------
    matplotlib.figure.Figure or None
        ``None`` when the report has no error.
    """
    rows = report.most_confident_errors(n)
    if not rows:
        return None
    fig, axes = _grid(len(rows), ncols, cell=(2.6, 3.0))
    for ax, r in zip(axes, rows):
        _show(ax, *_pixels(report.items[r["index"]], r["source"]))
        name = os.path.basename(str(r["source"]))
        ax.set_title(f"{name[:28]}\ntrue {r['label_name'][:16]}\npred {r['predicted_name'][:16]} "
                     f"{r['probability']:.0%}", fontsize=8, color="darkred")
    fig.tight_layout(h_pad=2.0)
    return save_figure(fig, path)


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
    results = [results] if hasattr(results, "heatmap") else list(results)
    if not results:
        raise DataError("No Grad-CAM results to plot.")
    fig, axes = _grid(2 * len(results), 2 * ncols)
    for k, r in enumerate(results):
        ax_img, ax_cam = axes[2 * k], axes[2 * k + 1]
        ax_img.imshow(_thumbnail(r.image, 480))  # the pixels GradCAM read through the image's item
        name = os.path.basename(r.item.source) if r.item is not None else "image"
        ax_img.set_title(name[:32], fontsize=9)
        ax_cam.imshow(_thumbnail(r.overlay(alpha), 480))
        ax_cam.set_title(f"{r.class_name[:24]} {r.probability:.1%}\nlayer {r.layer[-24:]}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)

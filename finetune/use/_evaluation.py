"""Measuring a classifier on labelled images: :func:`evaluate` and its report.

The report holds the full softmax output of every image, so every number in
it (top-1, top-k, per-class accuracy, confusion matrix, the most confidently
wrong images) is derived from one pass, and it can be saved to JSON and loaded
back. The confusion matrix comes from scikit-learn.

The module is called ``evaluation`` so that it never shadows the function
``finetune.evaluate``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from .._file_writes import atomic_open
from .._text import cell
from ..data import ImageSource, open_labelled
from ..errors import ConfigError, DataError, MissingFileError, check_range

__all__ = ["EvaluationReport", "evaluate"]


class EvaluationReport:
    """Accuracy of a classifier on a labelled set, from its softmax outputs.

    Built by :func:`evaluate`; can also be built from arrays.

    Parameters
    ----------
    labels : array-like of int
        ``(N,)`` true class indices.
    probabilities : array-like of float
        ``(N, K)`` softmax outputs.
    class_names : list of str or None
        ``K`` names (``None``: the indices as strings).
    sources : list of str or None
        Where each image came from (file path, ``record[i]``).
    errors : list of (str, str)
        ``(source, message)`` of images that could not be read (not scored).
    items : list of ImageItem or None
        The image each row was computed from (one per label), decoded on
        demand by ``item.read("RGB")``; plots read pixels through them.
        ``None``: no image kept (a report built from arrays or loaded from
        JSON; plots then read the files that ``sources`` name, if any).
    error_items : list of ImageItem or None
        The same for ``errors`` (one per unreadable image).
    top_k : int
        The ``k`` of the top-k accuracy (clipped to ``K``).
    tta : bool or None
        Whether the probabilities came with mirror test-time augmentation
        (``None``: not known, e.g. a report built from arrays).

    Attributes
    ----------
    top1, topk : float
        Accuracy (fraction of images whose true class is first / in the top k).
    confusion : numpy.ndarray
        ``(K, K)`` counts, rows = true class, columns = predicted class.
    per_class : list of dict
        ``name``, ``support``, ``accuracy`` (recall; NaN without support),
        ``precision`` for each class.
    items, error_items : list of (ImageItem or None)
        As given, ``None`` for each row without one. In memory only:
        :meth:`save` writes the ``sources`` (display names), so a loaded
        report has no items.

    Examples
    --------
    >>> import numpy as np
    >>> report = EvaluationReport([0, 1, 1], np.array([[.9, .1], [.2, .8], [.6, .4]]),
    ...                           ["cat", "dog"], top_k=1)
    >>> round(report.top1, 3)
    0.667
    >>> report.confusion.tolist()
    [[1, 0], [1, 1]]
    >>> report.most_confident_errors(1)[0]["predicted_name"]
    'cat'
    """

    def __init__(self, labels, probabilities, class_names=None, *, sources=None, errors=(), top_k: int = 5,
                 tta: bool | None = None, items=None, error_items=None):
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.probabilities = np.asarray(probabilities, dtype=np.float32)
        if self.probabilities.ndim != 2 or len(self.probabilities) != len(self.labels):
            raise DataError(
                f"EvaluationReport needs probabilities (N, K) for N labels; got {self.probabilities.shape} "
                f"for {len(self.labels)} labels."
            )
        k = self.probabilities.shape[1]
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= k):
            raise DataError(f"Labels must be class indices in [0, {k - 1}]; got range "
                            f"[{self.labels.min()}, {self.labels.max()}].")
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
        if len(self.class_names) != k:
            raise DataError(f"{len(self.class_names)} class names for {k} network outputs.")
        self.sources = list(sources) if sources is not None else [f"image[{i}]" for i in range(len(self.labels))]
        self.errors = [tuple(e) for e in errors]
        self.items = _aligned("items", items, len(self.labels), "labels")
        self.error_items = _aligned("error_items", error_items, len(self.errors), "errors")
        self.top_k = int(min(top_k, k))
        self.tta = None if tta is None else bool(tta)
        self.predicted = self.probabilities.argmax(axis=1) if len(self.labels) else self.labels.copy()
        self._compute()

    def _compute(self):
        from sklearn.metrics import confusion_matrix

        n, k = self.probabilities.shape
        self.num_images = n
        if n == 0:
            self.top1 = self.topk = float("nan")
            self.confusion = np.zeros((k, k), np.int64)
        else:
            self.top1 = float(np.mean(self.predicted == self.labels))
            order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :self.top_k]
            self.topk = float(np.mean((order == self.labels[:, None]).any(axis=1)))
            self.confusion = confusion_matrix(self.labels, self.predicted, labels=np.arange(k))
        support = self.confusion.sum(axis=1)
        predicted = self.confusion.sum(axis=0)
        diag = np.diag(self.confusion)
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = np.where(support > 0, diag / np.maximum(support, 1), np.nan)
            precision = np.where(predicted > 0, diag / np.maximum(predicted, 1), np.nan)
        self.per_class = [
            {"index": i, "name": self.class_names[i], "support": int(support[i]),
             "accuracy": float(recall[i]), "precision": float(precision[i])}
            for i in range(k)
        ]

    @property
    def mean_class_accuracy(self) -> float:
        """Accuracy averaged over the classes that have images (balanced accuracy)."""
        values = [c["accuracy"] for c in self.per_class if c["support"] > 0]
        return float(np.mean(values)) if values else float("nan")

    def normalized_confusion(self) -> np.ndarray:
        """The confusion matrix with each row divided by its support (rows without images are 0)."""
        support = self.confusion.sum(axis=1, keepdims=True)
        return self.confusion / np.maximum(support, 1)

    def most_confident_errors(self, n: int = 10) -> list:
        """The ``n`` wrongly classified images with the highest predicted probability.

        Returns
        -------
        list of dict
            ``source``, ``label``, ``label_name``, ``predicted``,
            ``predicted_name``, ``probability`` (of the predicted class),
            ``label_probability`` and ``index``: the image's row in
            :attr:`sources`, :attr:`probabilities` and :attr:`items`
            (``report.items[row["index"]]`` is its image).
        """
        wrong = np.flatnonzero(self.predicted != self.labels)
        conf = self.probabilities[wrong, self.predicted[wrong]]
        rows = []
        for i in wrong[np.argsort(-conf, kind="stable")][:n]:
            lab, pred = int(self.labels[i]), int(self.predicted[i])
            rows.append({"source": self.sources[i], "label": lab, "label_name": self.class_names[lab],
                         "predicted": pred, "predicted_name": self.class_names[pred],
                         "probability": float(self.probabilities[i, pred]),
                         "label_probability": float(self.probabilities[i, lab]), "index": int(i)})
        return rows

    # ------------------------------------------------------------ rendering
    def summary(self) -> dict:
        """The headline numbers as a dict."""
        return {"images": self.num_images, "unreadable": len(self.errors), "classes": len(self.class_names),
                "top1": self.top1, f"top{self.top_k}": self.topk,
                "mean_class_accuracy": self.mean_class_accuracy}

    def __str__(self) -> str:
        lines = [f"{self.num_images} images, {len(self.class_names)} classes"
                 + (f", {len(self.errors)} unreadable (not scored)" if self.errors else "")
                 + ("" if self.tta is None else f", test-time augmentation: {'mirror' if self.tta else 'off'}"),
                 f"top-1 accuracy   {_pct(self.top1)}",
                 f"top-{self.top_k} accuracy   {_pct(self.topk)}",
                 f"mean class acc.  {_pct(self.mean_class_accuracy)}", ""]
        predicted = self.confusion.sum(axis=0)
        shown = [c for c in self.per_class if c["support"] > 0 or predicted[c["index"]] > 0 or len(self.per_class) <= 50]
        width = max([5] + [len(cell(c["name"])) for c in shown])
        lines.append(f"{'class':<{width}}  support  accuracy  precision")
        for c in shown:
            lines.append(f"{cell(c['name']):<{width}}  {c['support']:>7}  {_pct(c['accuracy']):>8}  {_pct(c['precision']):>9}")
        if len(shown) < len(self.per_class):
            lines.append(f"({len(self.per_class) - len(shown)} classes with no image and no prediction not shown)")
        wrong = self.most_confident_errors(10)
        if wrong:
            lines += ["", "most confidently wrong:"]
            for w in wrong:
                lines.append(f"  {cell(w['source'])}: {cell(w['label_name'])} predicted as {cell(w['predicted_name'])} "
                             f"({w['probability']:.3f})")
        for source, message in self.errors[:10]:
            lines.append(f"unreadable: {cell(source)}: {cell(message)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"EvaluationReport(images={self.num_images}, top1={self.top1:.4f}, "
                f"top{self.top_k}={self.topk:.4f})")

    def to_dict(self) -> dict:
        """Everything as JSON-ready values (NaN becomes ``None``)."""
        return _nan_to_none({
            "summary": self.summary(),
            "top_k": self.top_k,
            "tta": self.tta,
            "class_names": self.class_names,
            "per_class": self.per_class,
            "confusion": self.confusion.tolist(),
            "most_confident_errors": [{k: v for k, v in row.items() if k != "index"}
                                      for row in self.most_confident_errors(20)],
            "errors": [list(e) for e in self.errors],
            "sources": self.sources,
            "labels": self.labels.tolist(),
            "probabilities": np.round(self.probabilities.astype(np.float64), 7).tolist(),
        })

    def save(self, path) -> None:
        """Write :meth:`to_dict` as JSON (UTF-8), atomically."""
        with atomic_open(os.fspath(path), "w", encoding="utf-8", errors="surrogateescape") as f:
            json.dump(self.to_dict(), f, indent=1, ensure_ascii=False)

    @classmethod
    def load(cls, path) -> "EvaluationReport":
        """Load a report written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"Report file {str(path)!r} does not exist.")
        d = json.loads(path.read_text(encoding="utf-8"))
        k = len(d["class_names"])
        probs = np.asarray(d["probabilities"], np.float32).reshape(-1, k)
        return cls(d["labels"], probs, d["class_names"], sources=d["sources"],
                   errors=[tuple(e) for e in d["errors"]], top_k=d["top_k"], tta=d.get("tta"))


def _aligned(name: str, values, n: int, of: str) -> list:
    """``values`` as a list of ``n`` (one per entry of ``of``), or ``n`` times ``None``."""
    if values is None:
        return [None] * n
    values = list(values)
    if len(values) != n:
        raise DataError(f"EvaluationReport needs one of '{name}' per entry of '{of}': got {len(values)} "
                        f"{name} for {n} {of}. Pass {name}=None when the images are not known.")
    return values


def _pct(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f} %"


def _nan_to_none(obj):
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj


# ------------------------------------------------------------------------- evaluate
def _label_index(label, class_names, source) -> int:
    if isinstance(label, str):
        if label in (".", "") and (class_names is None or label not in class_names):  # a file beside the classes
            raise DataError(f"{source}: is not in a class sub-folder; evaluation reads the class of an image from "
                            "its folder (one sub-folder per class). Move it into its class's folder, or out.")
        if class_names is None or label not in class_names:
            known = ", ".join(class_names[:20]) + (", ..." if len(class_names) > 20 else "") if class_names else ""
            raise DataError(f"{source}: label {label!r} is not one of the model's class names"
                            f"{f' ({known})' if known else ''}. Evaluate on images of the model's classes.")
        if class_names.count(label) > 1:  # ImageNet names two classes 'crane'
            where = [i for i, name in enumerate(class_names) if name == label]
            raise DataError(f"{source}: label {label!r} names {len(where)} of the model's classes (positions "
                            f"{', '.join(map(str, where))}), so it cannot be matched by name. Give the labels as "
                            "class positions, or give the model distinct class names.")
        return class_names.index(label)
    if label is None:
        raise DataError(f"{source}: has no label.")
    return int(np.atleast_1d(np.asarray(label, np.float64))[0])


def evaluate(model_or_predictor, dataset, *, labels=None, top_k: int = 5, batch_size: int = 32,
             ctx=None, color: str | None = None, tta: bool | None = None) -> EvaluationReport:
    """Classify a labelled image set and report top-1/top-k, per-class accuracy and confusions.

    Parameters
    ----------
    model_or_predictor : Predictor or mxnet.gluon.HybridBlock
        A :class:`~finetune.Predictor`, or a model following the protocol
        (wrapped in one; its own preprocessing is used).
    dataset : RecordDataset, ImageList, str, list of (image, label) or images
        Labelled images (a path: records, a list or a class-per-folder tree,
        see :func:`~finetune.data.open_labelled`). Records are decoded from their stored bytes and go
        through the model's evaluation preprocessing, exactly as files do.
        Labels may be class indices or class names.
    labels : list or None
        Labels, when ``dataset`` is a list of images (paths, arrays, ...).
    top_k : int
        ``k`` of the top-k accuracy.
    batch_size : int
        Images per forward pass (when a model is given).
    ctx : None, mx.Context, str or list
        Devices (when a model is given).
    color : {"RGB", "BGR"} or None
        Colour order of decoded arrays, if any.
    tta : bool or None
        Mirror test-time augmentation (when a model is given; a
        :class:`~finetune.Predictor` keeps its own). ``None``: what the
        model's ``inference`` record says (see :class:`~finetune.Predictor`).
        The report's :attr:`~EvaluationReport.tta` says which was used.

    Returns
    -------
    EvaluationReport
        Each row keeps the image it was computed from
        (:attr:`EvaluationReport.items`, :attr:`EvaluationReport.error_items`),
        so its errors can be plotted whatever the input was (files, arrays,
        records).

    Examples
    --------
    >>> import mxnet as mx, numpy as np
    >>> from finetune import Preprocess
    >>> net = mx.gluon.nn.HybridSequential()
    >>> net.add(mx.gluon.nn.GlobalAvgPool2D(), mx.gluon.nn.Dense(2))
    >>> net.initialize()
    >>> net.preprocess, net.class_names = Preprocess(size=(8, 8), resize=8), ["a", "b"]
    >>> images = [np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)]
    >>> report = evaluate(net, list(zip(images, ["a", "b"])), color="RGB")
    >>> report.num_images, report.top_k
    (2, 2)
    """
    from ._predictor import Predictor

    check_range("evaluate", "top_k", top_k, 1)
    if isinstance(model_or_predictor, Predictor):
        predictor = model_or_predictor
    else:
        predictor = Predictor(model_or_predictor, ctx=ctx, batch_size=batch_size, tta=tta)
    if labels is None and isinstance(dataset, (str, os.PathLike)):
        dataset = open_labelled(dataset)
    class_names, theirs = predictor.class_names, getattr(dataset, "class_names", None)
    if class_names is None:  # e.g. a deployment without names: the dataset's (<prefix>_classes.txt)
        class_names = theirs
    items = ImageSource.labelled(dataset, labels, color=color, what="images to evaluate").items
    by_name = labels is None and theirs and class_names and list(theirs) != list(class_names)  # else positions agree
    for item in items:
        if by_name and not isinstance(item.label, str):
            position = _label_index(item.label, None, item.source)
            if 0 <= position < len(theirs):  # matched to the model's classes by name, never by position
                item.label = theirs[position]
        item.label = _label_index(item.label, class_names, item.source)
    if not items:
        raise DataError("There are no images to evaluate: give a folder with one sub-folder of images per class, "
                        "a .lst / .csv list or a .rec file.")
    probs, errors = predictor._run(items)
    good = [i for i in range(len(items)) if i not in errors]
    if not good:
        raise DataError(f"None of the {len(items)} images could be read; first error: "
                        f"{next(iter(errors.values()), 'no images')}.")
    k = probs.shape[1]
    names = class_names if class_names is not None and len(class_names) == k else None
    return EvaluationReport([items[i].label for i in good], probs[good], names,
                            sources=[items[i].source for i in good],
                            errors=[(items[i].source, msg) for i, msg in errors.items()], top_k=top_k,
                            tta=predictor.tta, items=[items[i] for i in good],
                            error_items=[items[i] for i in errors])

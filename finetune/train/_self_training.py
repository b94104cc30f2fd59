"""Learning from unlabelled images: a teacher labels them, a student learns from both.

:meth:`Recipe.fit(..., unlabeled=...) <finetune.train.Recipe.fit>` runs
self-training in the manner of Noisy Student:

1. **teacher** — the recipe on the labelled images alone;
2. **pseudo-labels** — the teacher predicts every unlabelled image (with the
   mirror test-time augmentation when the recipe uses it); an image keeps its
   predicted class when the probability is at least
   ``Recipe.pseudo_threshold``, and each class keeps at most its share of
   the kept images by the labelled images' class proportions (the most
   confident first), so that an easy class does not crowd out the others;
3. **student** — the recipe again, from the pretrained weights, on the
   labelled plus the pseudo-labelled images, with the recipe's noise
   (augmentation, dropout, label smoothing); with
   ``self_training_rounds=2`` the student becomes the next teacher.

The unlabelled images are never read for a label: an unlabelled record file
may hold any labels, and a folder's images are packed without one. They
pass through the same checks as every other image (:func:`finetune.pack`
reports and skips bad files).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile

import mxnet as mx
import numpy as np

from .._context import resolve_ctx
from .._file_writes import atomic_write
from ..data import ImageEntry, ImageList, RecordDataset, list_images, pack, write_records
from ..errors import ConfigError, DataError
from ._batches import non_empty
from ._launch import is_distributed
from ._weights import restore, snapshot

__all__ = ["PseudoLabels", "fit_self_training", "pseudo_label", "select_pseudo_labels"]

log = logging.getLogger("finetune.train._recipe")


@dataclasses.dataclass
class PseudoLabels:
    """What a teacher said about the unlabelled images, and which of its answers are kept.

    Attributes
    ----------
    positions : numpy.ndarray
        Positions (in the unlabelled records) of the images kept.
    labels : numpy.ndarray
        Their pseudo-labels.
    confidence : numpy.ndarray
        The teacher's probability of the pseudo-label, for every unlabelled image.
    predicted : numpy.ndarray
        The teacher's class for every unlabelled image.
    threshold : float
    """

    positions: np.ndarray
    labels: np.ndarray
    confidence: np.ndarray
    predicted: np.ndarray
    threshold: float

    def counts(self, num_classes: int) -> list:
        """Images kept per class."""
        return np.bincount(self.labels.astype(np.int64), minlength=num_classes).tolist()

    def summary(self, class_names=None) -> dict:
        """A JSON-ready record: how many images, how many kept, per class."""
        k = len(class_names) if class_names is not None else int(self.predicted.max(initial=-1)) + 1
        return {"unlabeled_images": int(self.predicted.size), "kept": int(self.positions.size),
                "threshold": float(self.threshold), "kept_per_class": self.counts(k),
                "mean_confidence_kept": float(self.confidence[self.positions].mean()) if self.positions.size else None}


def select_pseudo_labels(probs, threshold: float, prior=None) -> PseudoLabels:
    """Keep the confident predictions of ``probs`` ``(N, K)``, balanced to the class proportions ``prior``.

    An image is kept when its highest probability is at least ``threshold``;
    then class ``c`` keeps at most ``ceil(prior[c] * kept)`` of them, the
    most confident first (``prior``: the labelled images' class proportions;
    ``None``: no balancing). Rows with NaN (unreadable images) are never kept.

    Examples
    --------
    >>> p = np.array([[0.9, 0.1], [0.8, 0.2], [0.95, 0.05], [0.3, 0.7], [0.5, 0.5]])
    >>> sel = select_pseudo_labels(p, 0.6, prior=[0.5, 0.5])
    >>> sel.positions.tolist(), sel.labels.tolist()
    ([0, 2, 3], [0, 0, 1])
    """
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2:
        raise ConfigError(f"select_pseudo_labels needs probabilities of shape (N, K). Got {probs.shape}.")
    finite = np.isfinite(probs).all(axis=1)
    safe = np.where(finite[:, None], probs, 0.0)
    predicted = safe.argmax(axis=1) if len(safe) else np.zeros(0, np.int64)
    confidence = np.where(finite, safe.max(axis=1) if len(safe) else 0.0, 0.0)
    keep = np.flatnonzero(finite & (confidence >= threshold))
    if prior is not None and keep.size:
        prior = np.asarray(prior, np.float64)
        cap = np.ceil(prior / prior.sum() * keep.size).astype(np.int64)
        chosen = []
        for c in range(probs.shape[1]):
            mine = keep[predicted[keep] == c]
            chosen.append(mine[np.argsort(-confidence[mine], kind="stable")][:cap[c] if c < cap.size else 0])
        keep = np.sort(np.concatenate(chosen))
    return PseudoLabels(keep, predicted[keep], confidence, predicted, float(threshold))


def predict_records(model, dataset, *, tta: bool, ctx=None, batch_size: int = 64, workers: int | None = None):
    """Softmax probabilities ``(N, K)`` of ``model`` on every record of ``dataset`` (its labels are not read)."""
    device = resolve_ctx(ctx)[0]
    loader = dataset.loader(batch_size, shuffle=False, workers=workers)
    rows = []
    try:
        for x, _ in loader:  # the stored label is never looked at
            x = x.as_in_context(device)
            out = model(x)
            if tta:
                out = (out + model(mx.nd.flip(x, axis=3))) / 2
            rows.append(mx.nd.softmax(out, axis=1).asnumpy())
    finally:
        loader.close()
    return np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)


def pseudo_label(model, unlabeled, *, threshold: float, prior=None, tta: bool = True, ctx=None,
                 workers: int | None = None) -> PseudoLabels:
    """Pseudo-labels of ``model`` for the records ``unlabeled`` (a path or RecordDataset).

    The images are read with the model's preprocessing; see
    :func:`select_pseudo_labels` for what is kept.
    """
    path = unlabeled.path if isinstance(unlabeled, RecordDataset) else os.fspath(unlabeled)
    ds = non_empty(RecordDataset(path, model.preprocess), "unlabeled")
    probs = predict_records(model, ds, tta=tta, ctx=ctx, workers=workers)
    return select_pseudo_labels(probs, threshold, prior)


def unlabeled_records(unlabeled, work: str) -> str:
    """The ``.rec`` path of ``unlabeled``: records as they are; a folder, list or ImageList packed into ``work``.

    Images are packed as they are stored (checked, never re-encoded); bad
    files are reported and skipped by :func:`~finetune.pack`.
    """
    if isinstance(unlabeled, RecordDataset):
        return unlabeled.path
    if isinstance(unlabeled, ImageList):
        images = ImageList([ImageEntry(k, unlabeled.full_path(e), 0) for k, e in enumerate(unlabeled)])
    elif isinstance(unlabeled, (str, os.PathLike)):
        path = os.fspath(unlabeled)
        if path.endswith(".rec") or os.path.isfile(path + ".rec"):
            return path if path.endswith(".rec") else path + ".rec"
        if os.path.isdir(path):
            images = ImageList([ImageEntry(k, p, 0) for k, p in enumerate(list_images(path))])
        elif os.path.isfile(path) and path.endswith((".lst", ".csv")):
            listed = ImageList.from_lst(path) if path.endswith(".lst") else ImageList.from_csv(path)
            images = ImageList([ImageEntry(k, listed.full_path(e), 0) for k, e in enumerate(listed)])
        else:
            raise DataError(f"The unlabeled images {path!r} are neither a folder of images, a .rec file nor "
                            "a .lst/.csv list. Give one of those.")
    else:
        raise ConfigError("The 'unlabeled' parameter must be a folder, a .rec or .lst path, an ImageList or a "
                          f"RecordDataset. Got {type(unlabeled).__name__} instead.")
    report = pack(images, os.path.join(work, "unlabeled"), pass_through=True)
    if not report.written:
        raise DataError(f"None of the {len(images)} unlabeled images could be read (see the warnings above).")
    return report.rec


def fit_self_training(recipe, model, train, val, unlabeled, *, fit, ctx=None, out_dir=None, workers=None, **kw):
    """Teacher, pseudo-labels, student (``recipe.self_training_rounds`` times); returns the last student's Trainer.

    ``fit(recipe, model, train, val, out_dir=..., plan_unlabeled=...)`` runs
    one supervised recipe; ``kw`` are passed on to it. With ``out_dir``: ``teacher/``,
    ``student/`` (``student_2/``, ...) and ``self_training.json`` (what was
    kept per round).
    """
    if is_distributed(kw.get("kvstore", "device")):
        raise ConfigError("Training with unlabeled images runs on one machine; a dist_* kvstore is not supported "
                          "with 'unlabeled'. Train on one machine (several devices are fine).")
    pretrained = snapshot(model.collect_params())  # every student starts here, like the teacher
    work = os.path.join(out_dir, "self_training") if out_dir else tempfile.mkdtemp(prefix="finetune-unlabeled-")
    os.makedirs(work, exist_ok=True)
    try:
        unlabeled_rec = unlabeled_records(unlabeled, work)
        labelled = RecordDataset(train.path if isinstance(train, RecordDataset) else os.fspath(train))
        train_path = labelled.path  # a prefix given: its .rec
        num_classes = len(model.class_names) if model.class_names else int(labelled.labels.max()) + 1
        prior = np.bincount(labelled.labels.astype(np.int64), minlength=num_classes)
        sub = lambda name: os.path.join(out_dir, name) if out_dir else None  # noqa: E731
        kw["plan_unlabeled"] = unlabeled
        log.info("self-training: first the teacher, the recipe on the %d labelled images", len(labelled))
        trainer = fit(recipe, model, train, val, ctx=ctx, out_dir=sub("teacher"), workers=workers, **kw)
        size = model.preprocess.size[0]
        rounds = []
        for r in range(recipe.self_training_rounds):
            labels = pseudo_label(model, unlabeled_rec, threshold=recipe.pseudo_threshold,
                                  prior=prior if recipe.pseudo_balance else None,
                                  tta=recipe.tta, ctx=ctx, workers=workers)
            summary = labels.summary(model.class_names)
            rounds.append(summary)
            log.info("self-training round %d: of %d unlabeled images, %d are above probability %g; %d kept "
                     "(per class %s); now the student", r + 1, summary["unlabeled_images"],
                     int((labels.confidence >= labels.threshold).sum()), labels.threshold, summary["kept"],
                     summary["kept_per_class"])
            if not summary["kept"]:
                log.warning("self-training round %d: no unlabeled image reached probability %g; the student "
                            "learns from the labelled images alone (a lower Recipe.pseudo_threshold keeps more)",
                            r + 1, labels.threshold)
            student_rec = os.path.join(work, f"student_{r + 1}")
            write_records(student_rec, [(train_path, None, None), (unlabeled_rec, labels.positions, labels.labels)],
                          class_names=model.class_names)
            restore(model.collect_params(), pretrained)
            student = recipe.replace(input_size=size)  # the teacher's size: the plan reads the model's own
            name = "student" if r == 0 else f"student_{r + 1}"
            # a resumed run resumes the students that have a checkpoint; a later one starts (it never began)
            begun = bool(out_dir) and os.path.isfile(os.path.join(sub(name), "fine_tune", "checkpoints", "last.ckpt"))
            trainer = fit(student, model, student_rec + ".rec", val, ctx=ctx, out_dir=sub(name), workers=workers,
                          **{**kw, "resume": bool(kw.get("resume")) and begun})
        if out_dir:
            atomic_write(os.path.join(out_dir, "self_training.json"),
                         json.dumps({"rounds": rounds, "unlabeled": os.fspath(unlabeled_rec)}, indent=2) + "\n")
        trainer.pseudo_labels_ = rounds
        return trainer
    finally:
        if not out_dir:
            shutil.rmtree(work, ignore_errors=True)


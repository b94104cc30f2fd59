"""What a :class:`~finetune.train.Recipe` decides for one model and data set, as a printable plan."""

from __future__ import annotations

import numpy as np

from ..data import RecordDataset
from ..errors import DataError
from ._recipe_fit import _path

__all__ = ["RecipePlan", "make_plan", "warmup_for"]


def warmup_for(recipe, epochs: int) -> float:
    """The cosine warm-up ``recipe`` uses for ``epochs`` fine-tuning epochs: ``warmup_epochs``, shortened to
    ``epochs - 1`` when it is not shorter than the run (so the learning rate reaches its base value)."""
    return min(float(recipe.warmup_epochs), float(max(epochs - 1, 0)))


def make_plan(recipe, model, train, val=None, unlabeled=None) -> "RecipePlan":
    """:meth:`Recipe.plan <finetune.train.Recipe.plan>`: the decisions of ``recipe`` as a :class:`RecipePlan`."""
    native = int(max(model.preprocess.size))  # the size the weights were trained at, before a recipe changed it
    ds = _open(train)  # opened once for both hints
    side = _image_side(ds) if ds is not None else None
    size, why = recipe.choose_input_size(native, side)
    epochs, epochs_why = recipe.choose_epochs(len(ds) if ds is not None else None)
    rows = [("input size", f"{size} px", why)]
    rows.append(("head warm-up", f"{recipe.head_epochs} epochs, Adam {recipe.head_lr:g}, cached features"
                 if recipe.head_epochs else "off", ""))
    lr = "LR-range test" if recipe.lr == "find" else f"{recipe.lr:g}"
    rows.append(("fine-tuning", f"{epochs} epochs, {recipe.optimizer} lr {lr}, batch {recipe.batch_size}"
                 + (f", wd {recipe.wd:g}" if recipe.wd else ""),
                 ("every layer but the frozen ones" if recipe._frozen_groups else "every layer")
                 + (f"; {epochs_why}" if epochs_why != "set" else "")))
    ld = recipe.layer_decay if recipe.layer_decay not in (None, 1, 1.0) else None
    rows.append(("layer-wise LR", f"x{ld:g} per group, {recipe.layer_groups} groups" if ld else "off",
                 f"backbone x{recipe.backbone_lr_mult:g}" if recipe.backbone_lr_mult != 1 else ""))
    if recipe._frozen_groups:
        rows.append(("frozen layers", f"{recipe._frozen_groups} of {recipe.layer_groups} groups, nearest the input",
                     "not trained; the backward pass stops before them"))
    rows.append(("BatchNorm", recipe.batchnorm, "pretrained statistics, used in training too"
                 if recipe.batchnorm == "frozen" else "statistics from each batch"))
    warmup = warmup_for(recipe, epochs)
    sched = {"cosine": f"cosine, {warmup:g} warm-up epoch(s)", "step": "step x0.1",
             "plateau": f"x{recipe.plateau_factor:g} on plateau, stop after {recipe.plateau_stop_after}",
             "constant": "constant"}[recipe.schedule]
    short = recipe.schedule == "cosine" and warmup < recipe.warmup_epochs
    rows.append(("schedule", sched, f"warmup_epochs={recipe.warmup_epochs:g} is not shorter than the {epochs} "
                 "fine-tuning epoch(s): shortened, so the learning rate reaches its base value" if short else ""))
    rows.append(("label smoothing", f"{recipe.label_smoothing:g}" if recipe.label_smoothing else "off", ""))
    rows.append(("augmentation", repr(recipe.augmentation()), ""))
    rows.append(("dropout before head", f"{recipe.dropout:g}" if recipe.dropout else "off", ""))
    mixing = [f"{n} {a:g}" for n, a in (("mixup", recipe.mixup), ("cutmix", recipe.cutmix)) if a]
    rows.append(("batch mixing", ", ".join(mixing) if mixing else "off", ""))
    rows.append(("weight averaging", f"EMA decay {recipe.ema:g}" if recipe.ema else "off", ""))
    rows.append(("test-time augmentation", "mirror" if recipe.tta else "off", ""))
    sel = ("best validation epoch if clearly better than the last" if recipe.keep_best and val is not None
           else "last epoch")
    if recipe.early_stopping and val is not None:
        sel += f", early stopping after {recipe.early_stopping}"
    rows.append(("weights kept", sel, ""))
    if unlabeled is not None:
        rows.append(("unlabeled images", f"{recipe.self_training_rounds} round(s) of self-training",
                     "the recipe trains a teacher on the labelled images; it labels the unlabeled ones "
                     f"(kept at probability >= {recipe.pseudo_threshold:g}"
                     + (", balanced to the labelled class proportions" if recipe.pseudo_balance else "")
                     + "); a student trains from the pretrained weights on both"))
    return RecipePlan(rows, size=size, epochs=epochs)


class RecipePlan:
    """What a :class:`Recipe` decided for one model and data set: rows of ``(ingredient, choice, why)``.

    Attributes
    ----------
    rows : list of tuple of str
    size : int
        The chosen input size.
    epochs : int
        The chosen fine-tuning epochs.
    """

    def __init__(self, rows, size: int, epochs: int):
        self.rows, self.size, self.epochs = list(rows), int(size), int(epochs)

    def __repr__(self) -> str:
        return f"RecipePlan({len(self.rows)} ingredients, size={self.size}, epochs={self.epochs})"

    def __str__(self) -> str:
        w = max(len(r[0]) for r in self.rows)
        return "\n".join(f"{a:<{w}}  {b}" + (f"  ({c})" if c else "") for a, b, c in self.rows)


def _open(data):
    """``data`` as a RecordDataset, or None when it cannot be opened (the plan's hints are then unknown)."""
    try:
        return data if isinstance(data, RecordDataset) else RecordDataset(_path(data, "train"))
    except Exception:  # noqa: BLE001 - the hints only; the dataset is opened again for real later
        return None


def _image_side(data, n: int = 16) -> int | None:
    """The median shorter side of the first ``n`` stored images of ``data`` (None if unknown)."""
    ds = _open(data)
    if ds is None:
        return None
    sides = []
    for i in range(min(n, len(ds))):
        try:
            sides.append(min(ds.image(i).shape[:2]))
        except DataError:  # checked decoding: a bomb or a damaged record is left out of the hint
            continue
    return int(np.median(sides)) if sides else None

"""The default fine-tuning recipe: every decision a small-data transfer run needs, in one object.

A :class:`Recipe` turns a pretrained model and a labelled data set into a
fine-tuned model. It decides, and logs as a :class:`RecipePlan`:

1. the input size, from the backbone's native size and the images' own size;
2. a head warm-up: the new head alone on backbone features computed once;
3. full fine-tuning with discriminative (layer-wise decayed) learning rates,
   BatchNorm statistics frozen at their ImageNet values (with ~30 steps an
   epoch, moving statistics never settle), Adam, a cosine schedule with a
   warm-up, label smoothing, augmentation (random-resized crop, mirror,
   random erasing), an exponential moving average of the weights;
4. validation with test-time augmentation (mirror) and the best epoch's
   weights kept.

Every ingredient is a field and can be switched off; the plan says what was
chosen and why. :meth:`Recipe.preset` gives the explicit recipes of the
classic tutorials (SGD with LR multiplier 0.01 on the pretrained layers; Adam
with the LR divided by 5 on plateaus).
"""

from __future__ import annotations

import dataclasses
import math
from numbers import Integral, Real

from .._fields import changed_fields, replace_fields, validate_fields
from .._validation import SEED, InstanceOf, Interval, Options, Sequence
from ..data import Augment
from ..errors import ConfigError, UnknownNameError
from ._losses import LabelSmoothingLoss
from ._optim import make_optimizer_params
from ._policy import LayerLRPolicy
from ._presets import PRESETS
from ._recipe_fit import fit_recipe
from ._recipe_plan import RecipePlan, make_plan, warmup_for
from ._schedule import CosineSchedule, PlateauSchedule, StepSchedule

__all__ = ["Recipe", "RecipePlan"]

_AUTO = "auto"
_AUTO_EPOCHS, _AUTO_EPOCHS_IMAGES, _AUTO_EPOCHS_MIN = 30, 900, 6
_BOOL = Options([True, False])
_FRACTION = Interval(Real, 0, 1)

#: The allowed values of every :class:`Recipe` field (a test checks that every field has one).
RECIPE_CONSTRAINTS = {
    "input_size": [Interval(Integral, 16, 2048), Options([_AUTO])],
    "batch_size": Interval(Integral, 1, None),
    "head_epochs": Interval(Integral, 0, None),
    "head_lr": Interval(Real, 0, None, closed="neither"),
    "epochs": [Interval(Integral, 0, None), Options([_AUTO])],
    "optimizer": InstanceOf(str, name="an optimizer name (str)"),
    "lr": [Interval(Real, 0, None, closed="neither"), Options(["find"])],
    "momentum": Interval(Real, 0, 1, closed="left"),
    "wd": Interval(Real, 0, None),
    "layer_decay": [Interval(Real, 0, 1, closed="right"), None],
    "layer_groups": Interval(Integral, 1, None),
    "frozen_groups": Interval(Integral, 0, None),
    "backbone_lr_mult": Interval(Real, 0, None),
    "batchnorm": Options(["frozen", "live"]),
    "schedule": Options(["cosine", "step", "plateau", "constant"]),
    "warmup_epochs": Interval(Real, 0, None),
    "plateau_factor": Interval(Real, 0, 1, closed="neither"),
    "plateau_stop_after": [Interval(Integral, 1, None), None],
    "label_smoothing": Interval(Real, 0, 1, closed="left"),
    "augment": [Options([_AUTO]), None, InstanceOf(Augment)],
    "crop_scale": Sequence(Interval(Real, 0, 1, closed="right"), lengths=(2,)),
    "erasing": _FRACTION,
    "dropout": Interval(Real, 0, 1, closed="left"),
    "mixup": Interval(Real, 0, None),
    "cutmix": Interval(Real, 0, None),
    "ema": [Interval(Real, 0, 1, closed="neither"), None],
    "tta": _BOOL,
    "keep_best": _BOOL,
    "early_stopping": [Interval(Integral, 1, None), None],
    "seed": SEED,
    "pseudo_threshold": Interval(Real, 0, 1),
    "self_training_rounds": Interval(Integral, 1, 5),
    "pseudo_balance": _BOOL,
}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to fine-tune a pretrained classifier on a small data set; the library's default.

    Parameters
    ----------
    input_size : int or "auto"
        Square input size. ``"auto"``: the backbone's native size when the
        images are about that large, else three times the images' side
        (rounded up to a multiple of 32, at least 96), never above native.
    batch_size : int
        Images per fine-tuning step. With frozen BatchNorm statistics the
        batch size does not affect normalisation, and smaller batches give
        more updates per epoch on small data sets.
    head_epochs : int
        Epochs of the head warm-up on cached backbone features (0: none).
    head_lr : float
        Adam learning rate of the warm-up.
    epochs : int or "auto"
        Epochs of fine-tuning. ``"auto"``: 30 for up to 900 training images,
        ``30 * sqrt(900 / n)`` for ``n`` images above that (rounded, at least
        6): a larger data set needs fewer passes (:meth:`choose_epochs`).
    optimizer : str
        ``"adam"`` (default), ``"sgd"``, ``"nag"``, ``"adamw"``, ``"rmsprop"``.
    lr : float or "find"
        Learning rate of the new head during fine-tuning; ``"find"`` runs an
        LR-range test (:func:`~finetune.train.lr_find`) on the training data
        and takes its suggestion.
    momentum, wd : float
        Momentum (SGD-like optimizers only) and weight decay.
    layer_decay : float or None
        Discriminative learning rates: the backbone's parameters, in order,
        fall into ``layer_groups`` groups; the group nearest the head gets
        ``lr * layer_decay``, the next ``lr * layer_decay**2``, and so on.
        ``None`` or 1: one rate everywhere.
    layer_groups : int
    frozen_groups : int
        How many of the ``layer_groups`` groups nearest the input stay frozen
        during fine-tuning (0: none); the group nearest the head always
        trains. The backward pass stops at the first group that trains,
        which saves the gradients of the early, high-resolution layers.
    backbone_lr_mult : float
        A further multiplier of every backbone group (1: none).
    batchnorm : {"frozen", "live"}
        ``"frozen"`` keeps the pretrained statistics (and uses them in
        training); ``"live"`` updates them from each batch.
    schedule : {"cosine", "step", "plateau", "constant"}
    warmup_epochs : float
        Linear warm-up of the cosine schedule.
    plateau_factor, plateau_stop_after : float, int
        ``schedule="plateau"``: divide the LR by ``1 / plateau_factor`` when
        the validation accuracy drops, stop after that many reductions.
    label_smoothing : float
    augment : Augment or "auto"
        ``"auto"``: random-resized crop over ``crop_scale`` of the area,
        mirror, random erasing with probability ``erasing``.
    crop_scale : tuple of float
    erasing : float
    dropout : float
        Dropout before the new layer (:meth:`build_model`).
    mixup, cutmix : float
        ``Beta(alpha, alpha)`` parameter of batch mixing (0: off; see
        :class:`Trainer`); mixup 0.2, chosen on held-out images.
    ema : float or None
        Decay of the exponential moving average of the weights (``None``: off).
    tta : bool
        Mirror test-time augmentation in validation, recorded in the trained
        model's ``inference`` so that :class:`~finetune.Predictor` and
        :func:`~finetune.evaluate` use it by default.
    keep_best : bool
        With validation data: end with the weights of the best validation
        epoch when it beats the last epoch by more than two standard errors
        of the validation accuracy (``1 / sqrt(n)`` for ``n`` images);
        smaller differences are noise.
    early_stopping : int or None
        Stop after this many epochs without a better validation accuracy.
    seed : int
    pseudo_threshold : float
        With unlabelled images (``fit(..., unlabeled=...)``): the teacher's
        probability an image's predicted class needs to become its
        pseudo-label (see :func:`~finetune.train.select_pseudo_labels`).
    self_training_rounds : int
        With unlabelled images: teacher -> student rounds (each student is
        the next round's teacher).
    pseudo_balance : bool
        With unlabelled images: each class keeps at most its share of the
        pseudo-labels by the labelled images' class proportions.

    Examples
    --------
    >>> Recipe()
    Recipe()
    >>> Recipe(ema=None, epochs=40)
    Recipe(epochs=40, ema=None)
    >>> Recipe.preset("sgd-pretrained").optimizer
    'sgd'
    """

    input_size: int | str = _AUTO
    batch_size: int = 16
    head_epochs: int = 30
    head_lr: float = 3e-3
    epochs: int | str = _AUTO
    optimizer: str = "adam"
    lr: float | str = 5e-4
    momentum: float = 0.9
    wd: float = 0.0
    layer_decay: float | None = 0.8
    layer_groups: int = 5
    frozen_groups: int = 1
    backbone_lr_mult: float = 1.0
    batchnorm: str = "frozen"
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    plateau_factor: float = 0.2
    plateau_stop_after: int = 3
    label_smoothing: float = 0.1
    augment: Augment | str = _AUTO
    crop_scale: tuple = (0.6, 1.0)
    erasing: float = 0.25
    dropout: float = 0.2
    mixup: float = 0.2
    cutmix: float = 0.0
    ema: float | None = 0.995
    tta: bool = True
    keep_best: bool = True
    early_stopping: int | None = None
    seed: int = 0
    pseudo_threshold: float = 0.7
    self_training_rounds: int = 1
    pseudo_balance: bool = True

    def __post_init__(self):
        for name, kind, word in (("epochs", "a whole number", _AUTO), ("lr", "a number", "find")):
            if isinstance(getattr(self, name), str) and getattr(self, name) != word:
                raise ConfigError(f"The {name!r} parameter of Recipe must be {kind} or {word!r}. "
                                  f"Got {getattr(self, name)!r}.")
        validate_fields(self, RECIPE_CONSTRAINTS)
        if self.frozen_groups > self.layer_groups:
            raise ConfigError(f"The 'frozen_groups' parameter of Recipe must be at most layer_groups "
                              f"({self.layer_groups}). Got {self.frozen_groups!r} instead.")
        make_optimizer_params(self.optimizer, {"learning_rate": self.head_lr, "wd": self.wd, "momentum": self.momentum},
                              owner="Recipe")  # unknown names fail now, with suggestions
        Augment(scale=tuple(self.crop_scale))  # low <= high

    def __repr__(self) -> str:
        return f"Recipe({changed_fields(self)})"

    @property
    def _frozen_groups(self) -> int:
        """The groups frozen in effect: the group nearest the head always trains."""
        return min(self.frozen_groups, self.layer_groups - 1)

    def replace(self, **changes) -> "Recipe":
        """A copy with some fields changed (unknown names raise :class:`~finetune.errors.ConfigError`)."""
        return replace_fields(self, **changes)

    @classmethod
    def preset(cls, name: str, **changes) -> "Recipe":
        """A named recipe (``finetune.train.PRESETS``; ``"manual"``: :meth:`manual`) with ``changes`` applied."""
        if name == "manual":
            return cls.manual(**changes)
        if name not in PRESETS:
            raise UnknownNameError("recipe preset", name, [*PRESETS, "manual"])
        return cls(**{**PRESETS[name], **changes})

    @staticmethod
    def manual(**settings):
        """The hand-set recipe: one Trainer with exactly ``settings`` (see :class:`~finetune.train.ManualRecipe`).

        Examples
        --------
        >>> Recipe.manual(policy="pretrained", schedule="step").make_policy().rules[-1].lr_mult
        0.01
        """
        from ._manual import ManualRecipe

        return ManualRecipe(**settings)

    # ------------------------------------------------------------ decisions
    def choose_input_size(self, native: int, image_side: int | None) -> tuple:
        """``(size, reason)``: the square input size for a backbone of ``native`` px and images of ``image_side``."""
        if self.input_size != _AUTO:
            return int(self.input_size), "set"
        if not image_side or image_side >= 0.75 * native:
            return int(native), f"the backbone's native size (images are {image_side or '?'} px)"
        size = max(96, 32 * math.ceil(3 * image_side / 32))
        size = min(size, int(native))
        return size, f"3x the images' {image_side} px, rounded up to a multiple of 32 (at least 96)"

    def choose_epochs(self, n_images: int | None) -> tuple:
        """``(epochs, reason)``: the fine-tuning epochs for ``n_images`` training images.

        Examples
        --------
        >>> Recipe().choose_epochs(900)[0], Recipe().choose_epochs(5400)[0], Recipe().choose_epochs(54000)[0]
        (30, 12, 6)
        >>> Recipe(epochs=8).choose_epochs(54000)
        (8, 'set')
        """
        if self.epochs != _AUTO:
            return int(self.epochs), "set"
        if not n_images or n_images <= _AUTO_EPOCHS_IMAGES:
            return _AUTO_EPOCHS, f"{n_images or '?'} training images: {_AUTO_EPOCHS} up to {_AUTO_EPOCHS_IMAGES}"
        epochs = max(_AUTO_EPOCHS_MIN, round(_AUTO_EPOCHS * math.sqrt(_AUTO_EPOCHS_IMAGES / n_images)))
        return epochs, (f"{n_images} training images: {_AUTO_EPOCHS} x sqrt({_AUTO_EPOCHS_IMAGES} / {n_images}), "
                        f"at least {_AUTO_EPOCHS_MIN}")

    def augmentation(self) -> Augment | None:
        """The training :class:`~finetune.Augment` (``None``: no augmentation)."""
        if self.augment is None or isinstance(self.augment, Augment):
            return self.augment
        return Augment(random_resized_crop=True, scale=tuple(self.crop_scale), mirror=True, erasing=self.erasing)

    def build_model(self, backbone, class_names, **head):
        """A :class:`~finetune.Model`: ``backbone`` with a new head for ``class_names`` (``dropout`` before it).

        The new layer's initial weights are drawn from :attr:`seed` (MXNet's
        random generator is seeded with it), so the same recipe builds the
        same model every time.

        Examples
        --------
        >>> import finetune as ft
        >>> r = Recipe()
        >>> a = r.build_model(ft.create_model("mobilenet0.25", weights=None), ["a", "b"])
        >>> b = r.build_model(ft.create_model("mobilenet0.25", weights=None), ["a", "b"])
        >>> [float(abs(p.data() - q.data()).max().asscalar()) for (n, p), (m, q)
        ...  in zip(a.head.collect_params().items(), b.head.collect_params().items())]
        [0.0, 0.0]
        """
        import mxnet as mx

        from ..models import HeadReplacer

        mx.random.seed(self.seed)
        return HeadReplacer(len(class_names), dropout=self.dropout, **head).apply(backbone, class_names=class_names)

    def policy(self, model, *, head: str = "head_*") -> LayerLRPolicy:
        """The :class:`LayerLRPolicy` of the fine-tuning stage for ``model`` (:meth:`LayerLRPolicy.layer_decay`)."""
        decay = self.layer_decay if self.layer_decay not in (None, 1, 1.0) else None
        return LayerLRPolicy.layer_decay(model, self.layer_groups, decay, frozen=self._frozen_groups,
                                         lr_mult=self.backbone_lr_mult, freeze_bn=self.batchnorm == "frozen",
                                         head=head)

    def loss(self):
        """The training loss: softmax cross-entropy with ``label_smoothing``."""
        return LabelSmoothingLoss(self.label_smoothing)

    def loss_spec(self) -> dict:
        """:meth:`loss` as a :class:`~finetune.train.TrainConfig` spec."""
        return {"name": "label_smoothing", "smoothing": self.label_smoothing}

    def make_schedule(self, epochs: int | None = None):
        """The LR schedule of the fine-tuning stage, for ``epochs`` (default: the recipe's, 30 when ``"auto"``)."""
        if epochs is None:
            epochs = self.choose_epochs(None)[0]
        if self.schedule == "cosine":
            return CosineSchedule(warmup_epochs=warmup_for(self, epochs))
        if self.schedule == "plateau":
            return PlateauSchedule(self.plateau_factor, monitor="val_top1", stop_after=self.plateau_stop_after)
        if self.schedule == "step":
            return StepSchedule(0.1, epochs=max(1, math.ceil(epochs * 0.75)))
        return None

    def plan(self, model, train, val=None, unlabeled=None) -> "RecipePlan":
        """The decisions for ``model`` and data ``train`` (and ``unlabeled`` images) as a printable :class:`RecipePlan`."""
        return make_plan(self, model, train, val, unlabeled)

    # ------------------------------------------------------------ running it
    def fit(self, model, train, val=None, *, ctx=None, out_dir=None, workers=None, progress=True, callbacks=None,
            kvstore="device", resume: bool = False, checkpoint_every: int = 0, unlabeled=None):
        """Fine-tune ``model`` on ``train`` (validated on ``val``); returns the fine-tuning :class:`Trainer`.

        Parameters
        ----------
        model : finetune.Model
            A pretrained backbone with a new head (``head_*`` parameters),
            e.g. from :meth:`build_model`. Its ``preprocess`` is updated to the
            chosen input size and its ``inference`` record to the recipe's
            test-time augmentation (``{"tta": "mirror"}`` when :attr:`tta`),
            so the saved model predicts and evaluates as it was validated.
        train, val : RecordDataset or str
            Records (or their path); they are reopened with the model's
            preprocessing and the recipe's augmentation.
        ctx, out_dir, workers, progress, kvstore, checkpoint_every
            As for :class:`Trainer`. With ``out_dir``: ``plan.txt``, and the
            two stages' histories and checkpoints in ``head/`` and ``fine_tune/``.
        callbacks : list of Callback, optional
            Added to the fine-tuning stage.
        resume : bool
            Continue from ``out_dir/fine_tune/checkpoints/last.ckpt``, which must
            exist (the warm-up is then skipped: the checkpoint holds the head).
        unlabeled : str, ImageList or RecordDataset, optional
            Images without labels (a folder, a ``.lst``/``.csv`` list, an
            :class:`~finetune.ImageList` or records; their labels are never
            read): self-training, a teacher's confident pseudo-labels teach a
            student (``pseudo_threshold``, ``self_training_rounds``). With
            ``out_dir``: ``teacher/``, ``student/`` and ``self_training.json``.

        Returns
        -------
        Trainer
            Its ``history_`` holds the fine-tuning epochs; ``head_history_`` on
            the recipe's return value holds the warm-up's; with ``unlabeled``,
            the student's, and ``pseudo_labels_`` says what was kept per round.
        """
        kw = dict(progress=progress, callbacks=callbacks, kvstore=kvstore, resume=resume,
                  checkpoint_every=checkpoint_every)
        if unlabeled is not None:
            from ._self_training import fit_self_training

            return fit_self_training(self, model, train, val, unlabeled, fit=fit_recipe, ctx=ctx, out_dir=out_dir,
                                     workers=workers, **kw)
        return fit_recipe(self, model, train, val, ctx=ctx, out_dir=out_dir, workers=workers, **kw)


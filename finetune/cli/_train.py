"""``finetune train`` and ``finetune launch``.

``finetune train BACKBONE --train REC --out DIR`` fine-tunes BACKBONE (a zoo
name, a model directory, or a Caffe ``deploy.prototxt`` with
``--caffemodel``) on a ``.rec`` file with the library's default recipe
(:class:`finetune.train.Recipe`; ``--recipe`` picks a preset, ``--set
FIELD=VALUE`` changes any ingredient). Options of the hand-set mode
(``--policy``, ``--schedule``, ...) switch to ``--recipe manual``
(:class:`finetune.train.ManualRecipe`): one Trainer with exactly the options
given. Either way the command is "preset + flags -> fit". ``DIR`` is a training output folder:
the model directory in ``DIR/model`` beside the training histories and
checkpoints; ``finetune.load_model`` / ``Predictor`` read ``DIR`` as its model.
A folder finetune did not write is refused.

``finetune lr-find BACKBONE --train REC`` runs the learning-rate range test
and plots it.

``finetune launch -n 2 -s 1 -- finetune train ... --kvstore dist_sync`` runs
the command as two ``dist_sync`` workers with a scheduler and a server on
127.0.0.1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from numbers import Integral

from .._outputs import RUN, adopt_folder, hold_folder
from ._options import add_alias, add_shared, count, ctx_of, number

log = logging.getLogger("finetune")


# options only the hand-set mode (ManualRecipe) has: flag dest -> ManualRecipe field; giving one selects that mode
_MANUAL = {"policy": "policy", "schedule": "schedule", "freeze_until": "freeze_until", "factor": "factor",
           "step_epochs": "step_epochs", "warmup": "warmup_epochs", "patience": "patience",
           "stop_after": "stop_after", "backbone_lr_mult": "backbone_lr_mult"}
# options both modes share: flag dest -> the field they set (no value given: the recipe's or preset's own)
_SHARED = {"epochs": "epochs", "batch_size": "batch_size", "optimizer": "optimizer", "lr": "lr",
           "momentum": "momentum", "wd": "wd", "head_epochs": "head_epochs", "dropout": "dropout", "seed": "seed"}


_POSITIVE = number(low=0, closed="neither")
_NONNEGATIVE = number(low=0)
_FRACTION_OPEN = number(low=0, high=1, closed="left")


def _add_source(p) -> None:
    """BACKBONE and the training records: the arguments ``train`` and ``lr-find`` share."""
    p.add_argument("backbone", help="zoo name (e.g. efficientnet_lite0), model directory, or deploy.prototxt")
    p.add_argument("--caffemodel", help="weights for a Caffe deploy.prototxt BACKBONE")
    add_shared(p, "weights")
    p.add_argument("--train", required=True, help="training .rec (or its prefix)")


def _add_num_classes(p) -> None:
    add_alias(p, "--classes", add_shared(p, "num_classes"))


def register(sub) -> None:
    """Add ``train``, ``lr-find`` and ``launch`` to the ``finetune`` command line."""
    p = sub.add_parser("train", help="fine-tune a backbone on .rec files",
                       description="Fine-tune BACKBONE on --train records; the model directory is written to "
                       "--out/model, beside the history and checkpoints (--out loads as the model).")
    _add_source(p)
    p.add_argument("--val", help="validation .rec (or its prefix)")
    p.add_argument("--unlabeled", metavar="IMAGES",
                   help="images without labels to learn from too (a folder, a .lst list or a .rec; labels in it "
                   "are never read): a teacher trained on --train labels them, a student learns from both")
    add_shared(p, "out", required=True, metavar="DIR", help="output folder (the model goes to DIR/model)")
    g = p.add_argument_group("head")
    _add_num_classes(g)
    g.add_argument("--hidden", type=count(1), nargs="*", default=[], help="hidden layer sizes of the new head")
    g.add_argument("--dropout", type=_FRACTION_OPEN, help="dropout before the new layer (recipe: 0.2)")
    g.add_argument("--cut-at", help="layer to cut the backbone at (default: before its classifier)")
    add_shared(g, "input_size")
    g = p.add_argument_group("recipe")
    g.add_argument("--recipe", help="default, sgd-pretrained, adam-plateau, head-only, or manual "
                   "(default: default; manual when a manual-mode option is given)")
    g.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="change one Recipe field, e.g. --set ema=none --set layer_decay=0.7 (repeatable)")
    g = p.add_argument_group("learning-rate policy")
    g.add_argument("--policy", help="manual mode: all, pretrained, boosted-head or head-only (default: all)")
    g.add_argument("--backbone-lr-mult", type=_NONNEGATIVE, help="manual mode, --policy pretrained (default: 0.01)")
    g.add_argument("--freeze-until", help="freeze every parameter up to this layer")
    g.add_argument("--freeze-bn", action="store_true", help="freeze BatchNorm statistics")
    g.add_argument("--head-epochs", type=count(0), help="head-only epochs first (recipe: 30, on cached features; manual: 0)")
    g.add_argument("--plan", action="store_true", help="print the plan (recipe decisions, or per-parameter) and exit")
    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", help="sgd, nag, adam, adamw, rmsprop (recipe: adam; manual: sgd)")
    g.add_argument("--lr", type=_POSITIVE, help="base learning rate (default: the optimizer's)")
    g.add_argument("--momentum", type=number(low=0, high=1, closed="left"), help="SGD/NAG momentum (recipe: 0.9; manual: the optimizer's)")
    g.add_argument("--wd", type=_NONNEGATIVE, help="weight decay (recipe: 0; manual: the optimizer's)")
    g.add_argument("--schedule", help="manual mode: constant, step, cosine or plateau (default: constant)")
    g.add_argument("--factor", type=number(low=0, high=1, closed="right"), help="manual mode: step/plateau LR factor (default: 0.1)")
    g.add_argument("--step-epochs", type=count(1), nargs="+", help="manual mode, step: one N (every N) or a list")
    add_alias(g, "--warmup", g.add_argument("--warmup-epochs", type=_NONNEGATIVE, dest="warmup", metavar="EPOCHS",
                                                help="manual mode, cosine: warm-up epochs (default: 0)"))
    g.add_argument("--patience", type=count(0), help="manual mode, plateau: epochs without improvement")
    g.add_argument("--stop-after", type=count(1), help="manual mode, plateau: stop after this many reductions")
    g.add_argument("--epochs", type=count(0), help="fine-tuning epochs (recipe: 30 up to 900 images, fewer above; manual: 10)")
    # not the shared --batch-size: the recipe's batch differs from the API-wide 32, so no value means "the recipe's"
    g.add_argument("--batch-size", type=count(1), default=None, metavar="N",
                   help="images per step, split over the --ctx devices (recipe: 16; manual: 32)")
    g.add_argument("--no-augment", action="store_true", help="no random crop/flip (enables feature caching)")
    g = p.add_argument_group("devices and run")
    add_shared(g, "ctx")
    g.add_argument("--kvstore", default="device", help="device, local, dist_sync, ... (default: device)")
    add_shared(g, "workers")
    add_shared(g, "seed")
    add_shared(g, "progress")
    g.add_argument("--checkpoint-every", type=count(0), default=0, help="also checkpoint every N batches")
    g.add_argument("--resume", action="store_true", help="continue from --out/checkpoints/last.ckpt")
    p.set_defaults(handler=_train)

    p = sub.add_parser("lr-find", help="learning-rate range test: plot loss against LR, suggest an LR",
                       description="Train BACKBONE (with a new head, as `finetune train` would) for a few "
                       "steps with an exponentially growing learning rate; write the plot and the suggestion.")
    _add_source(p)
    add_shared(p, "out", default="lr_find.png", metavar="PNG",
               help="plot to write; the numbers go beside it as .json (default: %(default)s)")
    _add_num_classes(p)
    add_shared(p, "input_size")
    p.add_argument("--start-lr", type=_POSITIVE, default=1e-7)
    p.add_argument("--end-lr", type=_POSITIVE, default=1.0)
    p.add_argument("--num-steps", type=count(1), default=100)
    p.add_argument("--recipe", help="recipe preset whose policy, optimizer and augmentation to use (default: default)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="change one Recipe field")
    add_shared(p, "ctx")
    add_shared(p, "progress")
    p.set_defaults(handler=_lr_find, hidden=(), cut_at=None, no_augment=False, freeze_bn=False,
                   **{k: None for k in _SHARED})

    p = sub.add_parser("launch", help="run a command as dist_sync workers on this machine",
                       description="Start a scheduler, SERVERS servers and WORKERS copies of COMMAND on 127.0.0.1 "
                       "with the DMLC_* variables of MXNet's parameter server.")
    p.add_argument("-n", "--num-workers", type=count(1), default=2)
    p.add_argument("-s", "--num-servers", type=count(1), default=1)
    p.add_argument("--port", type=number(Integral, 1, 65535), help="scheduler port (default: a free one)")
    p.add_argument("worker_command", nargs="+", metavar="COMMAND", help="the worker command, after '--'")
    p.set_defaults(handler=_launch)


def _launch(args) -> int:
    from ..train import launch

    cmd = list(args.worker_command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if cmd and cmd[0] == "finetune" and shutil.which("finetune") is None:
        cmd = [sys.executable, "-m", "finetune", *cmd[1:]]
    return launch(cmd, args.num_workers, args.num_servers, port=args.port)


def _refuse_head_options(args) -> None:
    """A bad ``--ctx`` fails before any data is read; and a model directory as BACKBONE already has its head:
    the options that would build one are refused."""
    ctx_of(args)
    if not os.path.isdir(args.backbone):
        return
    given = [flag for flag, value in (("--num-classes", args.num_classes), ("--hidden", args.hidden or None),
                                      ("--dropout", args.dropout), ("--cut-at", args.cut_at)) if value is not None]
    if given:
        from ..errors import ConfigError

        raise ConfigError(f"{', '.join(given)} build a new head on a zoo or Caffe backbone; {args.backbone!r} is a "
                          "model directory, which already has its head (it is trained as it is). Leave these options "
                          "out, or start from the zoo name.")


def _backbone(args):
    """The network BACKBONE names, through the one constructor :func:`finetune.create_model`."""
    from ..errors import MissingFileError
    from ..models import create_model

    src = args.backbone
    if src.endswith(".prototxt"):
        if not args.caffemodel:
            raise MissingFileError("A Caffe prototxt needs its weights: pass --caffemodel FILE.caffemodel.")
        return create_model(src, weights=args.caffemodel)
    if os.path.isdir(src):
        return create_model(src)
    return create_model(src, weights=args.weights)


def _mode(args) -> str:
    """``"manual"`` or the recipe preset name that ``args`` select (a manual-mode option selects ``"manual"``)."""
    given = [k for k in _MANUAL if getattr(args, k, None) not in (None, False)]  # lr-find has none of them
    mode = args.recipe or ("manual" if given else "default")
    if mode != "manual" and given:
        from ..errors import ConfigError

        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ConfigError(f"{flags} belong to the hand-set mode; with --recipe {mode} change the recipe with "
                          "--set FIELD=VALUE instead, or pass --recipe manual.")
    return mode


def _value(text: str):
    low = text.strip().lower()
    if low in ("none", "null", "off"):
        return None
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no"):
        return False
    if "," in text:
        return tuple(_value(t) for t in text.split(","))
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def recipe_from_args(args):
    """The recipe that ``finetune train``'s options describe: a :class:`~finetune.train.Recipe` preset, or the
    :class:`~finetune.train.ManualRecipe` of ``--recipe manual``, changed by the options given."""
    from ..errors import ConfigError
    from ..train import Recipe

    mode = _mode(args)
    changes = {field: getattr(args, k) for k, field in _SHARED.items() if getattr(args, k) is not None}
    if args.input_size != "auto":
        changes["input_size"] = args.input_size
    if mode == "manual":
        if args.set:
            raise ConfigError("--set changes Recipe fields; it has no effect with --recipe manual.")
        changes.update({field: getattr(args, k) for k, field in _MANUAL.items() if getattr(args, k) is not None})
        return Recipe.preset("manual", **changes, freeze_bn=bool(args.freeze_bn), augment=not args.no_augment)
    if args.no_augment:
        changes["augment"] = None
    if args.freeze_bn:
        changes["batchnorm"] = "frozen"
    base, origin = Recipe.preset(mode), {}
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set needs FIELD=VALUE, e.g. --set ema=0.999. Got {item!r}.")
        k, v = item.split("=", 1)
        field, value = k.strip().replace("-", "_"), _value(v)
        if field in changes:  # --epochs 1 --set epochs=3: which one was meant?
            flag = origin.get(field) or next(f"--{a.replace('_', '-')}" for a, f in
                                             [*_SHARED.items(), ("input_size", "input_size"), ("no_augment", "augment"),
                                              ("freeze_bn", "batchnorm")] if f == field)
            raise ConfigError(f"{flag} and --set {item} both set {field!r}; give it once.")
        origin[field] = f"--set {item}"
        try:  # each value alone against the recipe's constraints, so the error names this --set
            base.replace(**{field: value})
        except ConfigError as exc:
            raise ConfigError(f"--set {item}: {exc}") from None
        changes[field] = value
    return base.replace(**changes)


def _recipe_model(args, recipe):
    from .. import data, models
    from ..errors import ConfigError

    net = _backbone(args)
    if isinstance(net, models.Model):
        return net
    names = data.RecordDataset(args.train).class_names
    if names and args.num_classes and args.num_classes != len(names):
        raise ConfigError(f"--num-classes {args.num_classes} disagrees with the {len(names)} classes the training "
                          f"records name ({', '.join(names[:10])}{', ...' if len(names) > 10 else ''}). Drop "
                          "--num-classes: it is for records without a class-name file.")
    k = args.num_classes or (len(names) if names else None)
    if not k:
        raise ConfigError("Cannot tell the number of classes: the records have no class-name file; "
                          "pass --num-classes.")
    names = names if names and len(names) == k else [str(i) for i in range(k)]
    return recipe.build_model(net, names, hidden=tuple(args.hidden), cut_at=args.cut_at)


MODEL_DIR = "model"  # the model directory inside --out, beside the histories and checkpoints
_EARLIER_RUN_FILES = ("history.csv", "history.json", "checkpoints", "plan.txt", "head", "fine_tune", "lr_find.json")


def _start_run(out) -> None:
    """Make ``out`` a training run folder, refusing a folder finetune did not write.

    The model directory lives in ``out/model`` and is written once, when
    training has finished: saving it replaces that folder only, never the
    histories and checkpoints beside it, and a run that fails or is
    interrupted leaves the previous model (or none: the folder then does not
    load as a model). A run folder written before run folders had a marker
    (the model at its top) is adopted.
    """
    adopt_folder(out, RUN, what="training output folder", legacy=_EARLIER_RUN_FILES)


def _lr_find(args) -> int:
    from .._figures import figure_format, save_figure

    figure_format(args.out)  # a name matplotlib cannot write is refused before the range test
    from .. import data
    from ..train import lr_find

    _refuse_head_options(args)
    if args.recipe == "manual":
        from ..errors import ConfigError
        from ..train import PRESETS

        raise ConfigError(f"lr-find --recipe takes a recipe preset ({', '.join(PRESETS)}); the hand-set mode "
                          "has no recipe to test. Got --recipe manual.")
    recipe = recipe_from_args(args)
    model = _recipe_model(args, recipe)
    size = recipe.plan(model, args.train).size
    model.preprocess = model.preprocess.replace(size=(size, size), resize=size)
    aug = recipe.augmentation()
    train = data.RecordDataset(args.train, model.preprocess, train=aug is not None, augment=aug)
    opt = {"wd": recipe.wd, **({"momentum": recipe.momentum} if recipe.optimizer in ("sgd", "nag") else {})}
    result = lr_find(model, train, start_lr=args.start_lr, end_lr=args.end_lr, num_steps=args.num_steps,
                     policy=recipe.policy(model), optimizer=recipe.optimizer, optimizer_params=opt,
                     batch_size=recipe.batch_size, ctx=ctx_of(args),
                     loss=recipe.loss(), seed=recipe.seed, progress=args.progress)
    import matplotlib

    matplotlib.use("Agg")
    ax = result.plot()
    ax.set_title(f"{args.backbone}, {size} px, {recipe.optimizer}")
    save_figure(ax.figure, args.out)
    result.save(os.path.splitext(args.out)[0] + ".json")
    print(f"Suggested learning rate: {result.suggestion:.3g} (plot: {args.out}); "
          f"use it with: finetune train {args.backbone} --lr {result.suggestion:.3g} ...")
    return 0


def _train(args) -> int:
    """Preset + flags -> fit: one recipe, one model, one run folder, one result line."""
    from ..train import worker_rank

    _refuse_head_options(args)
    recipe = recipe_from_args(args)
    unlabeled = {"unlabeled": args.unlabeled} if args.unlabeled else {}
    if unlabeled and _mode(args) == "manual":
        from ..errors import ConfigError

        raise ConfigError("--unlabeled needs a recipe (it trains the recipe twice: teacher, then student); "
                          "the hand-set mode has none. Drop --recipe manual and its options.")
    model = _recipe_model(args, recipe)
    if args.plan:
        print(recipe.plan(model, args.train, args.val, **unlabeled))
        return 0
    rank0 = worker_rank(args.kvstore) == 0  # of dist_* workers, rank 0 alone writes --out
    with hold_folder(args.out, what="training output folder") if rank0 else contextlib.nullcontext():
        return _fit_and_save(args, recipe, model, rank0)


def _earlier_run(out) -> list:
    """The files of an earlier training run in ``out`` (histories, checkpoints) that a new run would replace."""
    found = []
    for stage in ("", "head", "fine_tune", "teacher", "student"):
        for name in ("history.csv", "history.json", os.path.join("checkpoints", "last.ckpt")):
            if os.path.isfile(os.path.join(out, stage, name)):
                found.append(os.path.join(stage, name))
    return found


def _fit_and_save(args, recipe, model, rank0: bool) -> int:
    if rank0:
        earlier = [] if args.resume else _earlier_run(args.out)
        if earlier:  # a second run into a run folder is allowed (it keeps the model until it finishes); say so
            log.warning("%s holds an earlier run (%s): this run starts afresh and replaces its history and "
                        "checkpoints. Pass --resume to continue that run instead, or choose another --out to "
                        "keep it.", args.out, ", ".join(earlier[:3]))
        _start_run(args.out)
    trainer = recipe.fit(model, args.train, args.val, ctx=ctx_of(args), out_dir=args.out,
                         workers=args.workers, kvstore=args.kvstore, resume=args.resume,
                         checkpoint_every=args.checkpoint_every, progress=args.progress,
                         **({"unlabeled": args.unlabeled} if args.unlabeled else {}))
    if rank0:
        model.save(os.path.join(args.out, MODEL_DIR))
        history = trainer.history_ if trainer is not None else []
        last = history[-1] if history else {}
        shown = ", ".join(f"{k} {last[k]:.4f}" for k in ("train_loss", "train_top1", "val_top1", "val_top5")
                          if k in last)
        rounds = getattr(trainer, "pseudo_labels_", None)
        taught = (f" as the student of a teacher that labelled {rounds[-1]['kept']} of "
                  f"{rounds[-1]['unlabeled_images']} unlabeled images" if rounds else "")
        print(f"Trained {len(history)} epochs{taught} with {recipe!r} ({shown}); model directory: "
              f"{os.path.join(args.out, MODEL_DIR)}")
    return 0

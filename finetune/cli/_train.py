"""``finetune train`` and ``finetune launch``.

``finetune train BACKBONE --train REC --out DIR`` fine-tunes BACKBONE (a zoo
name, a model directory, or a Caffe ``deploy.prototxt`` with
``--caffemodel``) on a ``.rec`` file. ``DIR`` ends up a model directory
(``finetune.load_model`` / ``Predictor`` read it) that also holds
``history.csv``, ``history.json`` and ``checkpoints/``.

``finetune launch -n 2 -s 1 -- finetune train ... --kvstore dist_sync`` runs
the command as two ``dist_sync`` workers with a scheduler and a server on
127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import uuid

log = logging.getLogger("finetune")

_ARTIFACTS = ("history.csv", "history.json", "checkpoints", "plan.txt")


def register(sub) -> None:
    """Add ``train`` and ``launch`` to the ``finetune`` command line."""
    p = sub.add_parser("train", help="fine-tune a backbone on .rec files",
                       description="Fine-tune BACKBONE on --train records; --out becomes a model directory "
                       "(plus history and checkpoints).")
    p.add_argument("backbone", help="zoo name (e.g. efficientnet_lite0), model directory, or deploy.prototxt")
    p.add_argument("--caffemodel", help="weights for a Caffe deploy.prototxt BACKBONE")
    p.add_argument("--weights", default="imagenet", help="zoo weights: 'imagenet', 'none' or a .params file")
    p.add_argument("--train", required=True, help="training .rec (or its prefix)")
    p.add_argument("--val", help="validation .rec (or its prefix)")
    p.add_argument("--out", required=True, help="output model directory")
    g = p.add_argument_group("head")
    g.add_argument("--classes", type=int, help="number of classes (default: from the records' class names)")
    g.add_argument("--hidden", type=int, nargs="*", default=[], help="hidden layer sizes of the new head")
    g.add_argument("--dropout", type=float, default=0.0)
    g.add_argument("--cut-at", help="layer to cut the backbone at (default: before its classifier)")
    g.add_argument("--input-size", type=int, help="train/predict at this square size (default: the backbone's)")
    g = p.add_argument_group("learning-rate policy")
    g.add_argument("--policy", default="all", help="all, pretrained, boosted-head or head-only (default: all)")
    g.add_argument("--backbone-lr-mult", type=float, default=0.01, help="for --policy pretrained")
    g.add_argument("--freeze-until", help="freeze every parameter up to this layer")
    g.add_argument("--freeze-bn", action="store_true", help="freeze BatchNorm statistics")
    g.add_argument("--head-epochs", type=int, default=0, help="train only the head for the first K epochs")
    g.add_argument("--plan", action="store_true", help="print the per-parameter plan and exit")
    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", default="sgd", help="sgd, nag, adam, adamw, rmsprop")
    g.add_argument("--lr", type=float, help="base learning rate (default: the optimizer's)")
    g.add_argument("--momentum", type=float)
    g.add_argument("--wd", type=float)
    g.add_argument("--schedule", default="constant", help="constant, step, cosine or plateau")
    g.add_argument("--factor", type=float, default=0.1, help="step/plateau LR factor")
    g.add_argument("--step-epochs", type=int, nargs="+", default=[10], help="step: one N (every N) or a list")
    g.add_argument("--warmup", type=float, default=0.0, help="cosine: warm-up epochs")
    g.add_argument("--patience", type=int, default=0, help="plateau: epochs without improvement")
    g.add_argument("--stop-after", type=int, help="plateau: stop after this many reductions")
    g.add_argument("--epochs", type=int, default=10)
    g.add_argument("--batch-size", type=int, default=32, help="per worker, split over --ctx devices")
    g.add_argument("--no-augment", action="store_true", help="no random crop/flip (enables feature caching)")
    g = p.add_argument_group("devices and run")
    g.add_argument("--ctx", default="cpu", help="devices, e.g. cpu, 'cpu*2', 'gpu:0,1' (default: cpu)")
    g.add_argument("--kvstore", default="device", help="device, local, dist_sync, ... (default: device)")
    g.add_argument("--workers", type=int, default=2, help="data loader processes")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--checkpoint-every", type=int, default=0, help="also checkpoint every N batches")
    g.add_argument("--resume", action="store_true", help="continue from --out/checkpoints/last.ckpt")
    p.set_defaults(handler=_train)

    p = sub.add_parser("launch", help="run a command as dist_sync workers on this machine",
                       description="Start a scheduler, SERVERS servers and WORKERS copies of COMMAND on 127.0.0.1 "
                       "with the DMLC_* variables of MXNet's parameter server.")
    p.add_argument("-n", "--num-workers", type=int, default=2)
    p.add_argument("-s", "--num-servers", type=int, default=1)
    p.add_argument("--port", type=int, help="scheduler port (default: a free one)")
    p.add_argument("command", nargs="+", help="the worker command, after '--'")
    p.set_defaults(handler=_launch)


def _launch(args) -> int:
    from ..train import launch

    cmd = list(args.command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if cmd and cmd[0] == "finetune" and shutil.which("finetune") is None:
        cmd = [sys.executable, "-m", "finetune", *cmd[1:]]
    return launch(cmd, args.num_workers, args.num_servers, port=args.port)


def _backbone(args):
    from .. import models
    from ..errors import MissingFileError

    src = args.backbone
    if src.endswith(".prototxt"):
        if not args.caffemodel:
            raise MissingFileError("A Caffe prototxt needs its weights: pass --caffemodel FILE.caffemodel.")
        return models.Backbone.from_caffe(src, args.caffemodel)
    if os.path.isdir(src):
        return models.load_model(src)
    weights = None if args.weights.lower() == "none" else args.weights
    return models.Backbone.from_zoo(src, weights=weights)


def _schedule(args):
    from ..train import ConstantSchedule, CosineSchedule, PlateauSchedule, StepSchedule
    from ..errors import UnknownNameError

    name = args.schedule
    if name == "constant":
        return ConstantSchedule()
    if name == "step":
        epochs = args.step_epochs[0] if len(args.step_epochs) == 1 else args.step_epochs
        return StepSchedule(args.factor, epochs=epochs)
    if name == "cosine":
        return CosineSchedule(warmup_epochs=args.warmup)
    if name == "plateau":
        monitor = "val_top1" if args.val else "train_loss"
        return PlateauSchedule(args.factor, patience=args.patience, monitor=monitor, stop_after=args.stop_after)
    raise UnknownNameError("schedule", name, ["constant", "step", "cosine", "plateau"])


def build(args):
    """Model, datasets, policy and Trainer from parsed ``finetune train`` arguments."""
    from .. import data, models
    from .._context import parse_ctx
    from ..errors import ConfigError
    from ..train import LayerLRPolicy, Trainer

    net = _backbone(args)
    if args.input_size:
        s = int(args.input_size)
        net.preprocess = net.preprocess.replace(size=(s, s), resize=s)
    train = data.RecordDataset(args.train, net.preprocess, train=not args.no_augment)
    val = data.RecordDataset(args.val, net.preprocess) if args.val else None
    if isinstance(net, models.Model):
        model = net
    else:
        names = train.class_names
        k = args.classes or (len(names) if names else None)
        if not k:
            raise ConfigError("Cannot tell the number of classes: the records have no class-name file; pass --classes.")
        model = models.HeadReplacer(k, hidden=tuple(args.hidden), dropout=args.dropout, cut_at=args.cut_at).apply(
            net, names if names and len(names) == k else None)
        if args.input_size:
            model.preprocess = net.preprocess
    kw = {"freeze_until": args.freeze_until, "freeze_bn": args.freeze_bn, "head_epochs": args.head_epochs}
    if args.policy == "pretrained":
        kw["backbone_lr_mult"] = args.backbone_lr_mult
    if args.policy == "head-only" and not args.freeze_bn:
        kw.pop("freeze_bn")
    policy = LayerLRPolicy.from_preset(args.policy, **kw)
    opt = {k: v for k, v in (("learning_rate", args.lr), ("momentum", args.momentum), ("wd", args.wd))
           if v is not None}
    trainer = Trainer(model, policy=policy, optimizer=args.optimizer, optimizer_params=opt,
                      batch_size=args.batch_size, ctx=parse_ctx(args.ctx), kvstore=args.kvstore,
                      schedule=_schedule(args), seed=args.seed, workers=args.workers, out_dir=args.out,
                      checkpoint_every=args.checkpoint_every)
    return model, train, val, trainer


def _save_model_dir(model, out) -> None:
    """``model.save(out)`` keeping the history and checkpoints already in ``out``."""
    out = os.path.abspath(out)
    keep = os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.keep-{uuid.uuid4().hex}")
    os.makedirs(keep)
    moved = []
    for name in _ARTIFACTS:
        src = os.path.join(out, name)
        if os.path.exists(src):
            os.replace(src, os.path.join(keep, name))
            moved.append(name)
    try:
        model.save(out)
    finally:
        for name in moved:
            os.replace(os.path.join(keep, name), os.path.join(out, name))
        shutil.rmtree(keep, ignore_errors=True)


def _train(args) -> int:
    model, train, val, trainer = build(args)
    if args.plan:
        print(trainer.plan())
        return 0
    trainer.setup()
    rank0 = trainer.rank_ == 0
    if rank0 and not args.resume:
        _save_model_dir(model, args.out)  # marks --out as a model directory from the start
    if rank0:
        with open(os.path.join(args.out, "plan.txt"), "w", encoding="utf-8") as f:
            f.write(str(trainer.plan()) + "\n")
    trainer.fit(train, val, epochs=args.epochs, resume=args.out if args.resume else None)
    if rank0:
        _save_model_dir(model, args.out)
        last = trainer.history_[-1] if trainer.history_ else {}
        shown = ", ".join(f"{k} {last[k]:.4f}" for k in ("train_loss", "train_top1", "val_top1", "val_top5")
                          if k in last)
        print(f"Trained {len(trainer.history_)} epochs ({shown}); model directory: {args.out}")
    return 0

"""Training speed: Trainer.fit vs a minimal Gluon loop, and cached head-only training.

Prints, from one run:

1. ``Trainer.fit`` images/s vs a minimal hand-written Gluon loop (DataLoader,
   ``autograd.record``, ``backward``, ``gluon.Trainer.step``, one loss sync per
   batch) on the same hybridized model, batch and thread count. Epochs of the
   two alternate so that load from other processes hits both alike; the
   median of the per-epoch ratios is reported (target >= 0.95).
2. Head-only training with cached backbone features vs recomputing the
   frozen backbone every epoch (target >= 10x), per training epoch and for
   the whole run including the one-off feature pass.

``--tiny`` is a smoke test: MobileNet 0.25 at 32 px, 16 images, one round,
two head epochs.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/training.py [--arch resnet18_v1] [--size 64] [--rounds 4] [--tiny]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from mxnet import autograd, gluon  # noqa: E402

import finetune as ft  # noqa: E402
from finetune.train import LayerLRPolicy, Trainer  # noqa: E402


def make_model(arch, classes=10, seed=0):
    mx.random.seed(seed)
    return ft.HeadReplacer(classes).apply(ft.Backbone.from_zoo(arch, weights=None))


def hand_epoch(net, loader, trainer, loss_fn, batch_size):
    """The minimal loop: one epoch, returns images/s."""
    n, t0 = 0, time.time()
    for x, y in loader:
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(x.shape[0])
        loss.mean().asscalar()
        n += x.shape[0]
    return n / (time.time() - t0)


def bench_loop(args, x, y):
    data = gluon.data.ArrayDataset(x, y.astype(np.float32))
    hand = make_model(args.arch)
    hand.hybridize(static_alloc=True)
    opt = {"learning_rate": 0.01, "momentum": 0.9, "wd": 1e-4}
    gtrainer = gluon.Trainer(hand.collect_params(), "sgd", dict(opt))
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    loader = gluon.data.DataLoader(data, batch_size=args.batch, shuffle=True)
    ours = Trainer(make_model(args.arch), optimizer="sgd", optimizer_params=dict(opt), batch_size=args.batch,
                   progress=False, cache_features=False)
    hand_epoch(hand, loader, gtrainer, loss_fn, args.batch)  # warm-up (graph build)
    ours.fit((x, y), epochs=1)
    hands, mine = [], []
    for r in range(args.rounds):
        hands.append(hand_epoch(hand, loader, gtrainer, loss_fn, args.batch))
        ours.fit((x, y), epochs=r + 2)
        mine.append(ours.history_[-1]["images_per_s"])
    ratios = [m / h for m, h in zip(mine, hands)]
    print(f"[1] {args.arch} {args.size}px batch {args.batch}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, "
          f"{len(x)} images/epoch, {args.rounds} alternating epochs")
    print(f"    hand-written Gluon loop : {statistics.median(hands):7.1f} img/s  (epochs: "
          f"{', '.join(f'{v:.1f}' for v in hands)})")
    print(f"    Trainer.fit             : {statistics.median(mine):7.1f} img/s  (epochs: "
          f"{', '.join(f'{v:.1f}' for v in mine)})")
    print(f"    ratio (median of per-epoch ratios): {statistics.median(ratios):.3f}  (target >= 0.95)")
    return statistics.median(mine), statistics.median(ratios)


def bench_cache(args, x, y):
    times = {}
    for cached in (False, True):
        t = Trainer(make_model(args.arch), policy=LayerLRPolicy.head_only(), batch_size=args.batch,
                    progress=False, cache_features=cached)
        t0 = time.time()
        t.fit((x, y), epochs=args.head_epochs)
        total = time.time() - t0
        per_epoch = statistics.median(r["seconds"] for r in t.history_[1:] or t.history_)
        times[cached] = (total, per_epoch, t.history_[-1]["train_loss"])
    (tr, er, lr_), (tc, ec, lc) = times[False], times[True]
    print(f"[2] head-only training, {args.head_epochs} epochs of {len(x)} images (backbone frozen, BN frozen)")
    print(f"    recomputing the backbone: {er:8.3f} s/epoch, {tr:7.1f} s total")
    print(f"    cached features         : {ec:8.3f} s/epoch, {tc:7.1f} s total (incl. one feature pass)")
    print(f"    final training loss, relative difference between the two: {abs(lr_ - lc) / abs(lr_):.1e}")
    print(f"    speed-up per epoch: {er / ec:.0f}x   whole run: {tr / tc:.1f}x  (target >= 10x)")
    return ec, er / ec, tc, tr / tc


def run(argv=None) -> list:
    """``(measure, value, ratio, baseline, target)`` rows; the report is printed on the way."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="resnet18_v1")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--head-epochs", type=int, default=10)
    p.add_argument("--tiny", action="store_true", help="smoke test: mobilenet0.25, 32 px, 16 images, one round")
    args = p.parse_args(argv)
    if args.tiny:
        args.arch, args.size, args.batch, args.images, args.rounds, args.head_epochs = "mobilenet0.25", 32, 8, 16, 1, 2
    rng = np.random.RandomState(0)
    x = rng.normal(size=(args.images, 3, args.size, args.size)).astype(np.float32)
    y = np.arange(args.images) % 10
    fit_rate, fit_ratio = bench_loop(args, x, y)
    cached_epoch, epoch_speedup, cached_run, run_speedup = bench_cache(args, x, y)
    label = f"{args.arch} {args.size}px b{args.batch}"
    return [(f"{label} Trainer.fit img/s", fit_rate, fit_ratio, "hand-written Gluon loop", ">= 0.95x"),
            (f"{label} head-only s/epoch, cached features", cached_epoch, epoch_speedup,
             "recomputing the frozen backbone", ">= 10x"),
            (f"{label} head-only whole run s, cached", cached_run, run_speedup, "recomputing the frozen backbone",
             "")]


def ratio_rows(argv=None) -> list:
    """``(measure, value, ratio, baseline, target)`` rows for ``run_all.py`` (ratio: speed-up over the baseline)."""
    return run(argv)


def main(argv=None):
    run(argv)


if __name__ == "__main__":
    main()

"""Where one fine-tuning step of EfficientNet-Lite0 spends its time, and what would change it.

The step is the default recipe's: the layer group nearest the input frozen,
the others trainable with their layer-wise learning rates, frozen BatchNorm statistics, Adam, the network hybridized with
``static_alloc`` (data loading and the EMA update are left out). Each variant
below is its own hybridized copy of the network; their steps alternate, one
variant after the other, and the median step time of each is reported against
the recipe's step (ratio of images/s):

- ``batch 32``: the same step on batches of 32 instead of the recipe's 16;
- ``ReLU for ReLU6``: MXNet's oneDNN ``relu`` in place of ``clip(x, 0, 6)``
  (another function: a probe of where the time goes, not an option);
- ``pad-and-crop graph``: the network's graph for any input size, where
  each stride-2 convolution's SAME padding pads wide and centre-crops to a
  size computed in the graph. The recipe's step runs the graph folded for its
  batch's size instead (one constant ``pad`` per stride-2 convolution; see
  :func:`finetune.models.graph.fold_padding`), so this ratio is what the
  folding saves. The same two graphs also alternate by epoch inside one
  ``Trainer.fit``;
- ``every layer trained``: the recipe's step with its first layer group
  trained too (``Recipe(frozen_groups=0)``, the default before), where the
  backward pass goes on through the early, high-resolution layers;
- ``+ EMA``: the recipe's step followed by its weight-average update
  (:class:`~finetune.train.WeightAverage`, one multi-tensor call per 60
  parameters), and ``+ EMA, per parameter``: the same average updated with
  four operator calls per parameter (how it was written before) — their ratio
  is what the multi-tensor update saves. The same two updates also alternate
  by epoch inside one ``Trainer.fit`` with ``ema`` (random images), where
  the update's Python work competes with the rest of the training loop.

The recipe's step is also run under MXNet's profiler, and its most expensive
operators are printed in milliseconds per step.

``--tiny`` is a smoke test: 32 px, batch 2, one round.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/training_step.py [--size 96] [--rounds 8] [--tiny]
"""

from __future__ import annotations

import argparse
import contextlib
import json
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
from finetune.models.architectures import _efficientnet_lite as lite  # noqa: E402
from finetune.train import Recipe, WeightAverage  # noqa: E402


def _relu(self, F, x):
    return F.relu(x, name="fwd")


def _ema_per_parameter(ema):
    """The average's update with four operator calls per parameter (the baseline of the multi-tensor one)."""
    d = ema.current_decay()
    for n, p in ema.params.items():
        avg = ema.average[n]
        avg[:] = d * avg + (1.0 - d) * p.list_data()[0]
    ema.steps += 1


@contextlib.contextmanager
def _forward_of(cls, method):
    """``cls.hybrid_forward`` replaced by ``method`` while a network is built (the zoo traces it into a graph)."""
    if method is None:
        yield
        return
    saved = cls.hybrid_forward
    cls.hybrid_forward = method
    try:
        yield
    finally:
        cls.hybrid_forward = saved


class Step:
    """One variant: a hybridized Lite0 with the recipe's policy, its optimizer and a fixed batch."""

    def __init__(self, name, size, batch, *, relu=False, fold=True, ema=None, train_all=False, seed=0):
        self.name, self.batch = name, batch
        mx.random.seed(seed)
        recipe = Recipe(frozen_groups=0) if train_all else Recipe()
        with _forward_of(lite._ReLU6, _relu if relu else None):
            backbone = ft.Backbone.from_zoo("efficientnet_lite0", weights=None)
        model = recipe.build_model(backbone, [str(i) for i in range(10)])
        if not fold:
            _set_folding(model, False)
        recipe.policy(model).apply(model)
        self.net = model
        self.net.hybridize(static_alloc=True)
        params = {k: p for k, p in self.net.collect_params().items() if p.grad_req != "null"}
        self.trainer = gluon.Trainer(params, "adam", {"learning_rate": recipe.lr})
        self.loss = recipe.loss()
        rng = np.random.RandomState(seed)
        self.x = mx.nd.array(rng.uniform(-1, 1, size=(batch, 3, size, size)).astype(np.float32))
        self.y = mx.nd.array(np.arange(batch) % 10)
        self.ema = WeightAverage(self.net.collect_params(), recipe.ema) if ema else None
        self.ema_update = _ema_per_parameter if ema == "per parameter" else WeightAverage.update

    def __call__(self) -> float:
        """One step; its wall time in seconds."""
        mx.nd.waitall()
        t0 = time.perf_counter()
        with autograd.record():
            loss = self.loss(self.net(self.x), self.y)
        loss.backward()
        self.trainer.step(self.batch)
        if self.ema is not None:
            self.ema_update(self.ema)
        mx.nd.waitall()
        return time.perf_counter() - t0


def profile(step, steps: int, top: int) -> list:
    """``(operator, ms per step)`` of the ``top`` most expensive operators over ``steps`` steps."""
    mx.profiler.set_config(profile_all=True, aggregate_stats=True, filename=os.devnull)
    mx.profiler.set_state("run")
    for _ in range(steps):
        step()
    mx.profiler.set_state("stop")
    stats = json.loads(mx.profiler.dumps(reset=True, format="json"))
    ops = stats.get("Time", {}).get("operator", {})
    rows = sorted(((name, v["Total"] / steps) for name, v in ops.items()), key=lambda r: -r[1])
    return rows[:top]


def run(argv=None) -> list:
    """``(measure, value, ratio, baseline, target)`` rows; the report is printed on the way."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=96, help="input size (default: %(default)s)")
    p.add_argument("--batch", type=int, default=16, help="the recipe's batch (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=8, help="alternating rounds (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant (default: %(default)s)")
    p.add_argument("--top", type=int, default=12, help="operators shown from the profile (default: %(default)s)")
    p.add_argument("--tiny", action="store_true", help="smoke test: 32 px, batch 2, one round")
    args = p.parse_args(argv)
    if args.tiny:
        args.size, args.batch, args.rounds, args.warmup, args.top = 32, 2, 1, 1, 5
    steps = [Step("recipe", args.size, args.batch),
             Step(f"batch {2 * args.batch}", args.size, 2 * args.batch),
             Step("ReLU for ReLU6", args.size, args.batch, relu=True),
             Step("pad-and-crop graph", args.size, args.batch, fold=False),
             Step("every layer trained", args.size, args.batch, train_all=True),
             Step("+ EMA", args.size, args.batch, ema="multi-tensor"),
             Step("+ EMA, per parameter", args.size, args.batch, ema="per parameter")]
    for s in steps:
        for _ in range(args.warmup):
            s()
    times = {s.name: [] for s in steps}
    for _ in range(args.rounds):
        for s in steps:
            times[s.name].append(s())
    rate = {s.name: s.batch / statistics.median(times[s.name]) for s in steps}
    base = rate["recipe"]
    print(f"EfficientNet-Lite0 {args.size}px, one fine-tuning step, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, "
          f"{args.rounds} alternating rounds, medians")
    print(f"  {'variant':<22} {'batch':>5} {'ms/step':>9} {'img/s':>8} {'vs recipe':>10}")
    for s in steps:
        print(f"  {s.name:<22} {s.batch:>5} {1000 * statistics.median(times[s.name]):>9.1f} "
              f"{rate[s.name]:>8.1f} {rate[s.name] / base:>9.2f}x")
    print(f"  the recipe's step under the profiler, ms per step ({max(2, args.rounds // 2)} steps):")
    for name, ms in profile(steps[0], max(2, args.rounds // 2), args.top):
        print(f"    {name:<28} {ms:8.2f}")
    label = f"Lite0 {args.size}px step"
    rows = [(f"{label}, batch {s.batch}, {s.name} img/s", rate[s.name], rate[s.name] / base,
             f"the recipe's step (batch {args.batch})", "") for s in steps[1:]]
    ema, loop = rate["+ EMA"], rate["+ EMA, per parameter"]
    print(f"  the multi-tensor EMA update against the per-parameter one: {ema / loop:.2f}x")
    rows.append((f"{label}, batch {args.batch}, with the multi-tensor EMA update img/s", ema, ema / loop,
                 "the same step with the per-parameter EMA update", ""))
    n_steps, n_epochs = (2, 3) if args.tiny else (10, 13)
    fused, per_param = fit_epochs_alternating(args.size, args.batch, n_steps, n_epochs, _switch_ema)
    print(f"  Trainer.fit with EMA, {n_steps} steps an epoch, median epoch: per-parameter update "
          f"{per_param:.2f} s, multi-tensor {fused:.2f} s, {per_param / fused:.2f}x")
    rows.append((f"Lite0 {args.size}px Trainer.fit epoch with the multi-tensor EMA update s", fused,
                 per_param / fused, "the same epoch with the per-parameter EMA update", ""))
    folded, crop = fit_epochs_alternating(args.size, args.batch, n_steps, n_epochs, _switch_folding)
    print(f"  Trainer.fit with EMA, {n_steps} steps an epoch, median epoch: pad-and-crop graph "
          f"{crop:.2f} s, folded graph {folded:.2f} s, {crop / folded:.2f}x")
    rows.append((f"Lite0 {args.size}px Trainer.fit epoch with the folded graph s", folded,
                 crop / folded, "the same epoch with the pad-and-crop graph", ""))
    return rows


def _set_folding(model, on: bool) -> None:
    """Let the backbone run its folded graph (the default), or keep the graph for any size."""
    body = model.body
    if on:
        body.__dict__.pop("_folded", None)
    else:
        body._folded = lambda shape: None  # an instance attribute hides the method


def _switch_ema(trainer, odd: bool) -> None:
    if trainer._ema is not None:  # created at the first step
        trainer._ema.update = (lambda: _ema_per_parameter(trainer._ema)) if odd else \
            (lambda: WeightAverage.update(trainer._ema))


def _switch_folding(trainer, odd: bool) -> None:
    _set_folding(trainer.model, not odd)


def fit_epochs_alternating(size, batch, steps, epochs, switch):
    """Median epoch seconds of one ``Trainer.fit`` with EMA, ``switch`` alternating two versions by epoch.

    ``switch(trainer, odd)`` sets up the baseline on odd epochs. Returns
    ``(even epochs, odd epochs)``; epoch 0 (hybridizing, first
    allocations) is left out.
    """
    from finetune.train import Callback, Trainer

    class Alternate(Callback):
        def on_epoch_begin(self, trainer, epoch):
            switch(trainer, bool(epoch % 2))

    recipe = Recipe()
    model = recipe.build_model(ft.Backbone.from_zoo("efficientnet_lite0", weights=None), [str(i) for i in range(10)])
    rng = np.random.RandomState(0)
    x = rng.uniform(-1, 1, size=(steps * batch, 3, size, size)).astype(np.float32)
    y = np.arange(steps * batch) % 10
    t = Trainer(model, policy=recipe.policy(model), optimizer="adam", optimizer_params={"learning_rate": recipe.lr},
                batch_size=batch, ema=recipe.ema, progress=False, workers=0)
    t.fit((x, y), epochs=epochs, callbacks=[Alternate()])
    seconds = {e: [h["seconds"] for h in t.history_[1:] if h["epoch"] % 2 == e] for e in (0, 1)}
    return statistics.median(seconds[0]), statistics.median(seconds[1])


def ratio_rows(argv=None) -> list:
    """``(measure, value, ratio, baseline, target)`` rows for ``run_all.py`` (ratio: images/s over the recipe's step)."""
    return run(argv)


def main(argv=None):
    run(argv)


if __name__ == "__main__":
    main()

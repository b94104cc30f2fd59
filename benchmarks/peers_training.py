"""Fine-tuning speed: ``finetune.Trainer.fit`` vs a plain PyTorch + timm training loop.

Baseline: the PyTorch loop (timm architecture, random init, SGD with
momentum and weight decay, cross-entropy, one ``loss.item()`` sync per
batch), in contiguous (NCHW) and in ``channels_last`` memory format. Ours:
``Trainer.fit`` on the same architecture from the model zoo (random init,
a new 10-way head), same input size, batch size, images per epoch, optimizer
settings and number of threads. Pairs: EfficientNet-Lite0 (timm's
``tf_efficientnet_lite0``) and ResNet-50 (timm's ``resnet50`` is the v1.5
layout: our ``resnet50_v1b``), at 64 and 224 px.

The PyTorch side runs in its own process (gluoncv 0.10 refuses to import
beside torch >= 2, and the two OpenMP runtimes should not share one), kept
alive between epochs; epochs of the sides alternate and the medians of
images/s are reported with the ratio ours / PyTorch.

``--step recipe`` measures the default recipe's fine-tuning step instead:
ours is ``Trainer.fit`` with :class:`~finetune.train.Recipe`'s policy (frozen
BatchNorm statistics, the first layer group frozen, layer-wise learning rates,
Adam); the PyTorch side runs the same step as a PyTorch user would write it:
BatchNorm layers in ``eval()`` mode, the same number of leading parameter
tensors frozen, Adam at the recipe's learning rate. Neither side averages the
weights.

Run (needs the ``bench`` extra)::

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/peers_training.py [--tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

NEEDS = ("torch", "timm")  # the PyTorch side (the bench extra); run_all.py skips this benchmark without them

PAIRS = {"lite0": ("efficientnet_lite0", "tf_efficientnet_lite0"), "resnet50": ("resnet50_v1b", "resnet50")}
OPT = {"learning_rate": 0.01, "momentum": 0.9, "wd": 1e-4}
RECIPE_LR = 5e-4  # Recipe().lr


def _stub_torchvision() -> None:
    """Stand in for a torchvision that cannot load (its PyPI wheel is built for CUDA torch).

    timm imports torchvision for data transforms, datasets and FrozenBatchNorm2d,
    none of which this loop uses; every ``torchvision.*`` module and name then
    resolves to a placeholder.
    """
    import importlib.abc
    import importlib.machinery
    import types

    class Placeholder(type):
        def __getattr__(cls, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return Placeholder(name, (), {})

    class Stub(types.ModuleType):
        __path__ = []

        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return Placeholder(name, (), {})

    class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path=None, target=None):
            if name == "torchvision" or name.startswith("torchvision."):
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            return Stub(spec.name)

        def exec_module(self, module):
            pass

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    sys.meta_path.insert(0, Finder())


def torch_worker(arch: str, size: int, batch: int, images: int, channels_last: bool, frozen: int = -1) -> None:
    """Serve PyTorch training epochs: one line in ('epoch') -> one JSON line out (images/s).

    ``frozen >= 0``: the recipe's step (BatchNorm in eval mode, the first ``frozen`` parameter tensors frozen, Adam).
    """
    import torch

    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError, OSError):
        _stub_torchvision()
    import timm

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = timm.create_model(arch, pretrained=False, num_classes=10).to(memory_format=fmt).train()
    if frozen >= 0:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()
        params = list(model.parameters())
        for p in params[:frozen]:
            p.requires_grad_(False)
        opt = torch.optim.Adam(params[frozen:], lr=RECIPE_LR)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=OPT["learning_rate"], momentum=OPT["momentum"],
                              weight_decay=OPT["wd"])
    loss_fn = torch.nn.CrossEntropyLoss()
    x_all = torch.randn(images, 3, size, size)
    y_all = torch.arange(images) % 10
    for line in sys.stdin:
        if line.strip() != "epoch":
            break
        t = time.perf_counter()
        order = torch.randperm(images)
        for s in range(0, images, batch):
            idx = order[s:s + batch]
            x = x_all[idx].contiguous(memory_format=fmt)
            loss = loss_fn(model(x), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()
        print(json.dumps({"images_per_s": images / (time.perf_counter() - t)}), flush=True)


class TorchSide:
    def __init__(self, python, arch, size, batch, images, channels_last, frozen=-1):
        cmd = [python, os.path.abspath(__file__), "--torch-worker", arch, str(size), str(batch), str(images),
               str(int(channels_last)), str(frozen)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def epoch(self) -> float:
        self.proc.stdin.write("epoch\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the PyTorch worker stopped (is the bench extra installed?)")
        return json.loads(line)["images_per_s"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def bench(name, ours_arch, timm_arch, size, args) -> list:
    import mxnet as mx
    import numpy as np

    import finetune as ft

    mx.random.seed(0)
    rng = np.random.RandomState(0)
    x = rng.normal(size=(args.images, 3, size, size)).astype(np.float32)
    y = np.arange(args.images) % 10
    frozen = -1
    if args.step == "recipe":
        from finetune.train import Recipe

        recipe = Recipe()
        model = recipe.build_model(ft.create_model(ours_arch, weights=None), [str(i) for i in range(10)])
        policy = recipe.policy(model)
        policy.apply(model)
        frozen = sum(1 for n, p in model.collect_params().items()
                     if p.grad_req == "null" and not n.endswith(("running_mean", "running_var")))
        trainer = ft.Trainer(model, optimizer="adam", optimizer_params={"learning_rate": recipe.lr},
                             policy=policy, batch_size=args.batch, progress=False, cache_features=False)
    else:
        trainer = ft.Trainer(ft.HeadReplacer(10).apply(ft.Backbone.from_zoo(ours_arch, weights=None)),
                             optimizer="sgd", optimizer_params=dict(OPT), batch_size=args.batch, progress=False,
                             cache_features=False)
    sides = {fmt: TorchSide(args.torch_python, timm_arch, size, args.batch, args.images, fmt == "channels_last",
                            frozen) for fmt in ("nchw", "channels_last")}
    try:
        trainer.fit((x, y), epochs=1)  # warm-up: graph build, oneDNN primitives
        for side in sides.values():
            side.epoch()
        speeds = {"ours": [], **{k: [] for k in sides}}
        for r in range(args.rounds):
            trainer.fit((x, y), epochs=r + 2)
            speeds["ours"].append(trainer.history_[-1]["images_per_s"])
            for k, side in sides.items():
                speeds[k].append(side.epoch())
    finally:
        for side in sides.values():
            side.close()
    med = {k: statistics.median(v) for k, v in speeds.items()}
    best = max(sides, key=lambda k: med[k])
    label = f"{name} {size}px b{args.batch}" + (" recipe step" if args.step == "recipe" else "")
    rows = [(f"{label} torch {k}", med[k], med[k] / med[best], f"best torch ({best})") for k in sides]
    rows.append((f"{label} finetune", med["ours"], med["ours"] / med[best], f"best torch ({best})"))
    return rows


def run(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="smoke test: Lite0 at 32 px, 8 images")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--images", type=int, default=64, help="images per epoch")
    p.add_argument("--rounds", type=int, default=3, help="alternating epochs per side")
    p.add_argument("--sizes", default="64,224")
    p.add_argument("--models", default="lite0,resnet50")
    p.add_argument("--torch-python", default=sys.executable, help="interpreter with torch and timm")
    p.add_argument("--step", choices=("plain", "recipe"), default="plain",
                   help="plain: random init, SGD, live BatchNorm, every layer; recipe: the default recipe's step")
    args = p.parse_args(argv)
    if args.tiny:
        args.batch, args.images, args.rounds, args.sizes, args.models = 4, 8, 1, "32", "lite0"
    sys.modules.setdefault("torch", None)  # gluoncv 0.10 refuses to import beside torch >= 2
    rows = []
    for name in args.models.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            rows += bench(name, *PAIRS[name], size, args)
            print(f"done: {rows[-1][0]} {rows[-1][1]:.2f} img/s, {rows[-1][2]:.2f}x", file=sys.stderr, flush=True)
    return rows


def ratio_rows(argv=None) -> list:
    """``(measure, value, ratio, baseline, target)`` rows for ``run_all.py``."""
    return [(m, v, r, b, ">= 0.7x" if m.endswith("finetune") else "") for m, v, r, b in run(argv)]


def main(argv=None) -> None:
    rows = run(argv)
    print(f"{'measure (img/s)':<40} {'value':>8} {'ratio':>7}  baseline")
    for name, value, ratio, base in rows:
        print(f"{name:<40} {value:8.2f} {ratio:7.2f}  {base}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--torch-worker":
        a = sys.argv[2:]
        torch_worker(a[0], int(a[1]), int(a[2]), int(a[3]), bool(int(a[4])), int(a[5]) if len(a) > 5 else -1)
    else:
        main()

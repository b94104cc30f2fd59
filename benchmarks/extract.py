"""Throughput of ``FeatureExtractor.extract`` on a folder of JPEGs vs a hand-written loop.

The baseline is what the seeds' retrieval scripts do, done well: OpenCV
decode, BGR->RGB, resize the shorter side, centre crop, normalise, HWC->CHW,
stack a batch, one hybridized forward to a convolutional layer, GeM pooling
and L2 normalisation in numpy — sequentially, in one thread. The extractor
does the same work (``keep_aspect=False``: the model's resize and centre
crop, so both sides batch every image) with decoding in its reader pool.
Both use the same EfficientNet-Lite0 (real ImageNet weights), its last
convolutional layer (``top_relu_fwd``, 1280 channels) and the same batch size;
the script checks the descriptors agree. It also times decoding and
preprocessing alone, which bounds what overlapping them with the forward
pass can gain.

``--tiny`` is a smoke test: 8 synthetic JPEGs, batch 4, one run, random
weights (no photos or weights needed).

Run::

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/extract.py [--images 96] [--batch-size 32] [--tiny]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path

sys.modules.setdefault("torch", None)  # gluoncv 0.10 refuses to import beside torch >= 2

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402

import finetune as ft  # noqa: E402

LAYER = "top_relu_fwd"


def _predict_module():
    """``predict.py`` (its JPEG folder and its hand-written preprocessing are shared)."""
    spec = importlib.util.spec_from_file_location("benchmarks_predict", Path(__file__).with_name("predict.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def hand_written(net, paths, batch_size: int, p: float = 3.0, eps: float = 1e-6) -> np.ndarray:
    """The loop a user writes: ``predict.hand_batch``, forward to the layer, GeM, L2."""
    hand_batch = _predict_module().hand_batch
    out = []
    for s in range(0, len(paths), batch_size):
        maps = net.features(mx.nd.array(hand_batch(paths[s:s + batch_size])), LAYER)[0].asnumpy()
        gem = np.power(np.power(np.maximum(maps, eps), p).mean(axis=(2, 3)), 1.0 / p)
        out.append(gem / np.maximum(np.linalg.norm(gem, axis=1, keepdims=True), 1e-12))
    return np.concatenate(out)


def run(argv=None) -> list:
    """``(measure, value, ratio, baseline, target)`` rows; the report is printed on the way."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each, alternated (best is kept)")
    parser.add_argument("--tiny", action="store_true", help="smoke test: 8 noise JPEGs, batch 4, random weights")
    args = parser.parse_args(argv)
    if args.tiny:
        args.images, args.batch_size, args.repeat = 8, 4, 1
    folder = _predict_module().make_folder(args.images, tiny=args.tiny)
    try:
        paths = sorted(folder.glob("*.jpg"))
        net = ft.Backbone.from_zoo("efficientnet_lite0", weights=None if args.tiny else "imagenet")
        net.hybridize(static_alloc=True)
        fx = ft.FeatureExtractor(net, LAYER, pooling="gem", batch_size=args.batch_size, keep_aspect=False)
        hand_written(net, paths[: args.batch_size], args.batch_size)  # warm-up (graph, memory)
        fx.extract(paths[: args.batch_size])
        t_hand = t_fx = float("inf")
        for _ in range(args.repeat):
            t = time.perf_counter()
            ref = hand_written(net, paths, args.batch_size)
            t_hand = min(t_hand, time.perf_counter() - t)
            t = time.perf_counter()
            ours = fx.extract(folder)
            t_fx = min(t_fx, time.perf_counter() - t)
        t = time.perf_counter()
        for path in paths:  # the decode + preprocessing share of the work (one thread)
            net.preprocess.read(path)
        t_decode = time.perf_counter() - t
        bound = t_hand / max(t_hand - t_decode, t_decode)
        cosine = float(np.min(np.sum(ours * ref, axis=1)))
        n = len(paths)
        print(f"images: {n} JPEGs in {folder.name}, batch {args.batch_size}, layer {LAYER}, GeM, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", file=sys.stderr)
        print(f"hand-written loop        : {t_hand:7.2f} s  {n / t_hand:6.1f} img/s", file=sys.stderr)
        print(f"FeatureExtractor.extract : {t_fx:7.2f} s  {n / t_fx:6.1f} img/s  {t_hand / t_fx:.2f}x  "
              f"(lowest cosine between the two descriptors of an image: {cosine:.5f})", file=sys.stderr)
        print(f"decode+preprocess alone, one thread: {t_decode:.2f} s = {100 * t_decode / t_hand:.0f} % of the "
              f"hand-written loop; overlapping it with the forward pass bounds the speed-up at {bound:.2f}x",
              file=sys.stderr)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return [(f"lite0 b{args.batch_size} {LAYER} GeM FeatureExtractor.extract img/s (cosine >= {cosine:.4f})",
             n / t_fx, t_hand / t_fx, "hand-written OpenCV loop", f"the {bound:.2f}x decode bound")]


def ratio_rows(argv=None) -> list:
    """``(measure, value, ratio, baseline, target)`` rows for ``run_all.py``."""
    return run(argv)


def main(argv=None) -> None:
    run(argv)


if __name__ == "__main__":
    main()

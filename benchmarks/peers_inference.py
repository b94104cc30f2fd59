"""CPU inference: the float32 network as it is vs what ``Predictor`` runs (oneDNN-fused), INT8 and ONNX Runtime.

Baseline: the float32 network as it is, hybridized with ``static_alloc``
(``Predictor(fuse=False)``). Contenders on the same normalised batch, the
same batch size and the same number of threads (``OMP_NUM_THREADS``):

- ``fused``  what :class:`finetune.Predictor` runs by default on one CPU: the
  :func:`finetune.fuse` copy (padding folded for the input size and merged
  into the convolutions, the graph partitioned for oneDNN, float32);
- ``int8``   :func:`finetune.quantize` (naive calibration);
- ``ort``    ONNX Runtime on our own ONNX export (``export_for_deployment(onnx=True)``);
  a last row puts ``fused`` against it (the target: ours at least as fast).

Sides alternate round by round; the table gives the median images/s and the
ratio to the baseline. Accuracy: top-1 on foolbox's 20 ImageNet photos (the
file name holds the class index) through ``Predictor`` for float32 and INT8
with EfficientNet-Lite0's ImageNet weights; the INT8 model is calibrated on
flipped and shifted crops of the same 20 photos (no ImageNet training images
ship here), so the accuracy change is an optimistic estimate. ResNet-50 is
random-init: speed only.

Run::

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/peers_inference.py [--tiny]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import sys

# gluoncv 0.10 refuses to import when it finds torch >= 2 (the bench extra installs one):
# hide torch from this process, which never uses it.
sys.modules.setdefault("torch", None)

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402

import finetune as ft  # noqa: E402


def photos() -> list:
    folder = Path(list(importlib.util.find_spec("foolbox").submodule_search_locations)[0]) / "data"
    return sorted(folder.glob("imagenet_*.jpg"))


def labels_of(paths) -> np.ndarray:
    return np.array([int(p.stem.split("_")[-1]) for p in paths])


def calibration_set(model, paths, n: int) -> np.ndarray:
    """``n`` normalised images: the photos, mirrored and shifted by a few pixels."""
    base = np.stack([model.preprocess.transform(ft.read_image(p, "RGB"), "RGB") for p in paths])
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        x = base[i % len(base)]
        if (i // len(base)) % 2:
            x = x[:, :, ::-1]
        out.append(np.roll(x, tuple(rng.integers(-8, 9, 2)), axis=(1, 2)))
    return np.ascontiguousarray(np.stack(out), np.float32)


def ort_session(model, threads: int):
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    import onnx

    dep = ft.export_for_deployment(model, tempfile.mkdtemp(prefix="ft_peers_onnx_"), onnx=True, verify=False)
    # MXNet's exporter lists the weights among the graph inputs, which stops ONNX Runtime from
    # folding them as constants; drop them there, as ONNX Runtime's own advice says.
    proto = onnx.load(dep.onnx)
    weights = {t.name for t in proto.graph.initializer}
    kept = [i for i in proto.graph.input if i.name not in weights]
    del proto.graph.input[:]
    proto.graph.input.extend(kept)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def timed(fn, x, rounds: int) -> float:
    fn(x)  # warm-up
    t = time.perf_counter()
    for _ in range(rounds):
        fn(x)
    return rounds * len(x) / (time.perf_counter() - t)


def bench(name: str, model, paths, args, threads: int) -> list:
    calib = calibration_set(model, paths, args.calibration)
    q = ft.quantize(model, calib, batch_size=min(32, len(calib)))
    x = calib[: args.batch_size]
    model.hybridize(static_alloc=True)
    q.hybridize(static_alloc=True)
    fused = ft.Predictor(model, batch_size=args.batch_size)
    if not fused.fused:
        raise RuntimeError(f"Predictor did not fuse {name}")
    sides = {
        "fp32": lambda b: model(mx.nd.array(b)).asnumpy(),
        "fused": lambda b: fused.model(mx.nd.array(b)).asnumpy(),
        "int8": lambda b: q(mx.nd.array(b)).asnumpy(),
    }
    sess = ort_session(model, threads)
    if sess is not None:
        iname = sess.get_inputs()[0].name
        sides["ort"] = lambda b: sess.run(None, {iname: b})[0]
    speeds = {k: [] for k in sides}
    for _ in range(args.repeats):
        for k, fn in sides.items():
            speeds[k].append(timed(fn, x, args.rounds))
    med = {k: statistics.median(v) for k, v in speeds.items()}
    rows = [(f"{name} {k} img/s", med[k], med[k] / med["fp32"], "fp32 network as it is") for k in sides]
    if "ort" in med:
        rows.append((f"{name} fused vs ort img/s", med["fused"], med["fused"] / med["ort"],
                     "ONNX Runtime on our ONNX export"))
    if args.accuracy:
        y = labels_of(paths)
        acc = {}
        for k, m in (("fp32", model), ("int8", q)):
            acc[k] = float(np.mean(ft.Predictor(m, batch_size=args.batch_size).predict_proba(paths).argmax(1) == y))
        rows.append((f"{name} top-1 fp32 (%)", 100 * acc["fp32"], None, "20 foolbox photos"))
        rows.append((f"{name} top-1 int8 - fp32 (points)", 100 * (acc["int8"] - acc["fp32"]), None,
                     "20 foolbox photos"))
        agree = float(np.mean(sides["fp32"](calib).argmax(1) == sides["int8"](calib).argmax(1)))
        rows.append((f"{name} int8 top-1 agreement (%)", 100 * agree, None, f"{len(calib)} calibration crops"))
    return rows


def run(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="smoke test: a tiny random network, few rounds")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--calibration", type=int, default=200, help="calibration images")
    p.add_argument("--rounds", type=int, default=3, help="batches per timing")
    p.add_argument("--repeats", type=int, default=5, help="alternating timings per side")
    args = p.parse_args(argv)
    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
    paths = photos()
    if args.tiny:
        args.batch_size, args.calibration, args.rounds, args.repeats = 4, 8, 1, 1
        args.accuracy = False
        models = [("mobilenet0.25", ft.Backbone.from_zoo("mobilenet0.25", weights=None))]
    else:
        models = [("lite0", ft.Backbone.from_zoo("efficientnet_lite0")),
                  ("resnet50", ft.Backbone.from_zoo("resnet50_v1", weights=None))]
    rows = []
    for name, model in models:
        args.accuracy = not args.tiny and name == "lite0"
        rows += bench(name, model, paths, args, threads)
    return rows


TARGETS = {"int8": ">= 2x fp32, <= 0.5 point top-1 loss", "ort": "fp32 >= 1.0x ONNX Runtime"}


def ratio_rows(argv=None) -> list:
    """``(measure, value, ratio, baseline, target)`` rows for ``run_all.py``."""
    return [(m, v, r, b, next((t for k, t in TARGETS.items() if f" {k} " in m), ""))
            for m, v, r, b in run(argv)]


def main(argv=None) -> None:
    rows = run(argv)
    print(f"{'measure':<36} {'value':>9} {'ratio':>7}  baseline")
    for name, value, ratio, base in rows:
        print(f"{name:<36} {value:9.2f} {'' if ratio is None else f'{ratio:7.2f}':>7}  {base}")


if __name__ == "__main__":
    main()

"""Benchmark the data pipeline against MXNet's own tools, on the same images, in one run.

1. Packing: ``finetune im2rec`` vs the stock ``mxnet/tools/im2rec.py`` (both run
   as commands, wall time including start-up), resize 256, JPEG quality 95:
   at equal thread counts (1 and 2) and at each tool's default (stock: 1
   thread; finetune: all cores).
2. Augmented loading: ``RecordDataset(...).loader`` vs ``mx.io.ImageRecordIter``
   with the same augmentation (random resized crop to 224, area 0.08–1,
   aspect 3/4–4/3, mirror, mean/std normalisation), batch 32: at equal
   threads (2 workers vs ``preprocess_threads=2``) and at defaults (all
   cores vs ``preprocess_threads=4``).

The images are real photos (scikit-image, scikit-learn, foolbox's ImageNet
samples), resized to camera-like 640–1024 px and colour-jittered so that no
two files are identical. ``--tiny`` (a smoke test) packs and loads 32
synthetic 256–320 px images for one epoch and skips the start-up timings
(its list file is written by ``finetune im2rec --list``).
Run::

    OMP_NUM_THREADS=2 python benchmarks/data_pipeline.py [--images 480] [--tiny]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))


def synthetic_sources(rng, count: int = 4) -> list:
    """Smooth colour images with noise (``--tiny``: no photos needed)."""
    h, w = 360, 480
    ramp = np.linspace(0, 1, w, dtype=np.float32)[None, :, None] * np.linspace(1, 0, h, dtype=np.float32)[:, None, None]
    return [np.clip(255 * ramp * rng.uniform(0.3, 1, 3) + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
            for _ in range(count)]


def make_images(root: Path, n: int, seed: int = 0, tiny: bool = False) -> None:
    """``n`` JPEG photos in 4 class folders (synthetic images with ``tiny``)."""
    rng = np.random.default_rng(seed)
    if tiny:
        sources, sizes = synthetic_sources(rng), (256, 321)
    else:
        from tests.ingredients import foolbox_imagenet, real_photos

        sources = [cv2.imread(str(p)) for p in real_photos()] + [cv2.imread(str(p)) for p, _ in foolbox_imagenet()]
        sources, sizes = [s for s in sources if s is not None], (640, 1025)
    for i in range(n):
        img = sources[i % len(sources)]
        longer = int(rng.integers(*sizes))
        h, w = img.shape[:2]
        scale = longer / max(h, w)
        img = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC)
        img = np.clip(img.astype(np.int16) + rng.integers(-20, 21, size=3), 0, 255).astype(np.uint8)
        folder = root / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"img{i:04d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])


def cpu_seconds() -> float:
    """CPU time of this process and of every finished child (pool workers, subprocesses)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(cmd, env, check=True):
    """``(wall seconds, CPU seconds)`` of a command."""
    start, cpu = time.perf_counter(), cpu_seconds()
    subprocess.run(cmd, check=check, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start, cpu_seconds() - cpu


def bench_pack(work: Path, images: Path, n: int, env, startup: bool = True) -> dict:
    import mxnet as mx

    stock = os.path.join(os.path.dirname(mx.__file__), "tools", "im2rec.py")
    ours = [sys.executable, "-m", "finetune", "-q", "im2rec"]
    prefix = str(work / "bench")
    lister = [sys.executable, stock] if startup else ours  # the drop-in lists alike, without MXNet's start-up
    subprocess.run([*lister, "--list", "--recursive", prefix, str(images)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    opts = ["--resize", "256", "--quality", "95"]
    results = {}
    probes = [("stock im2rec start-up (no list)", [sys.executable, stock, prefix + "_none", str(images)]),
              ("finetune im2rec start-up (no list)", [*ours, prefix + "_none", str(images)])]
    for label, cmd in probes if startup else []:
        seconds, _ = timed(cmd, env, check=False)  # both stop at once: no list file
        print(f"  {label:46s} {seconds:6.2f} s")
    for label, cmd in [("stock im2rec, 1 thread (default)", [sys.executable, stock, *opts, prefix, str(images)]),
                       ("stock im2rec, 2 threads", [sys.executable, stock, *opts, "--num-thread", "2", prefix, str(images)]),
                       ("finetune im2rec, 1 thread", [*ours, *opts, "--num-thread", "1", prefix, str(images)]),
                       ("finetune im2rec, default (all cores)", [*ours, *opts, prefix, str(images)])]:
        seconds, cpu = timed(cmd, env)
        results[label] = n / seconds
        results[label + " cpu"] = n / cpu
        print(f"  pack  {label:40s} {n / seconds:7.1f} img/s  ({seconds:.2f} s wall, "
              f"{n / cpu:6.1f} img per CPU-second)")
    return results


def bench_load(prefix: str, epochs: int = 2) -> dict:
    import mxnet as mx

    import finetune as ft

    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    pre = ft.Preprocess(size=(224, 224), mean=mean, std=std)
    aug = ft.Augment(scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), mirror=True)
    results = {}

    def run(label, make, close):
        """Wall rate over ``epochs`` after a warm-up epoch; CPU rate over all epochs
        (CPU time of pool workers is only known once they are reaped by ``close``)."""
        cpu0 = cpu_seconds()
        source = make()
        seen = 0
        for data in source():  # warm-up epoch (start workers, fill caches)
            data.wait_to_read()
            seen += data.shape[0]
        count, start = 0, time.perf_counter()
        for _ in range(epochs):
            for data in source():
                data.wait_to_read()
                count += data.shape[0]
        results[label] = count / (time.perf_counter() - start)
        close(source)
        results[label + " cpu"] = (count + seen) / (cpu_seconds() - cpu0)
        print(f"  load  {label:40s} {results[label]:7.1f} img/s  "
              f"({results[label + ' cpu']:6.1f} img per CPU-second)")

    for threads, label in ((2, "ImageRecordIter, 2 threads"), (4, "ImageRecordIter, 4 threads (default)")):
        def make(threads=threads):
            it = mx.io.ImageRecordIter(
                path_imgrec=prefix + ".rec", path_imgidx=prefix + ".idx", data_shape=(3, 224, 224),
                batch_size=32, shuffle=True, rand_mirror=True, random_resized_crop=True,
                min_random_area=0.08, max_random_area=1.0, min_aspect_ratio=3 / 4, max_aspect_ratio=4 / 3,
                mean_r=mean[0], mean_g=mean[1], mean_b=mean[2], std_r=std[0], std_g=std[1], std_b=std[2],
                preprocess_threads=threads)

            def batches():
                it.reset()
                return (b.data[0] for b in it)

            batches.it = it
            return batches

        run(label, make, lambda source: None)
    ds = ft.RecordDataset(prefix, pre, train=True, augment=aug)
    for workers, label in ((2, "RecordDataset.loader, 2 workers"), (None, "RecordDataset.loader, default")):
        def make(workers=workers):
            loader = ds.loader(32, workers=workers, seed=0)

            def batches():
                return (d for d, _ in loader)

            batches.loader = loader
            return batches

        run(label, make, lambda source: source.loader.close())
    return results


# (measure, ours, baseline, baseline's name): the ratios the run reports, finetune / MXNet
RATIOS = [
    ("pack, equal threads (1)", "finetune im2rec, 1 thread", "stock im2rec, 1 thread (default)"),
    ("pack, equal threads (2)", "finetune im2rec, default (all cores)", "stock im2rec, 2 threads"),
    ("pack, defaults", "finetune im2rec, default (all cores)", "stock im2rec, 1 thread (default)"),
    ("load, equal threads (2)", "RecordDataset.loader, 2 workers", "ImageRecordIter, 2 threads"),
    ("load, defaults", "RecordDataset.loader, default", "ImageRecordIter, 4 threads (default)"),
]


def run(argv=None) -> dict:
    """Every rate measured (images/s, and images per CPU-second under ``"<label> cpu"``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=480)
    parser.add_argument("--keep", help="keep the work folder here")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke test: 32 synthetic small images, one epoch, no start-up timings")
    args = parser.parse_args(argv)
    if args.tiny:
        args.images = 32
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    env = dict(os.environ, PYTHONPATH=str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    work = Path(args.keep or tempfile.mkdtemp(prefix="ft_bench_"))
    images = work / "images"
    try:
        print(f"{args.images} {'synthetic images (256-320' if args.tiny else 'photos (640-1024'} px) in {work}; "
              f"{os.cpu_count()} cores, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
        make_images(images, args.images, tiny=args.tiny)
        rates = bench_pack(work, images, args.images, env, startup=not args.tiny)
        rates.update(bench_load(str(work / "bench"), epochs=1 if args.tiny else 2))
        print(f"load average after the run: {os.getloadavg()}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return rates


def ratio_rows(argv=None) -> list:
    """``(measure, value, ratio, baseline, target)`` rows for ``run_all.py`` (images/s, wall clock)."""
    rates = run(argv)
    return [(f"{measure} img/s", rates[ours], rates[ours] / rates[base], base, "")
            for measure, ours, base in RATIOS]


def main(argv=None) -> int:
    rates = run(argv)
    print("ratios (finetune / MXNet), wall-clock throughput [and per CPU-second]:")
    for measure, ours, base in RATIOS:
        print(f"  {measure + ':':<25} {rates[ours] / rates[base]:.2f}x  [{rates[ours + ' cpu'] / rates[base + ' cpu']:.2f}x]")
    return 0


if __name__ == "__main__":
    sys.exit(main())

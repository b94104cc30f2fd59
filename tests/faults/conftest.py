"""Tiny real inputs of every kind finetune reads, built once per session, and the one generic check.

A class-per-folder tree of 12 small PNG/JPEG images in 3 classes, its
``.lst`` and class list, the packed ``.rec``/``.idx``, a mobilenet0.25 model
directory with a new 3-way head on 32 x 32 inputs, descriptors of the images
with their ids, a saved ``RetrievalIndex``, a mean image, a tiny Caffe pair
and (on demand) a one-epoch training run. Tests copy what they mutate; the
session inputs are never written to.
"""

from __future__ import annotations

import os
import re
import types

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

CLASSES = ["cat", "dog", "fish"]
TEMPORARY = re.compile(r"(\.tmp|\.tmpdir|\.commit|\.swap)($|\.lock$)")  # and the lock of a temporary


def write_images(root, names=None, *, size=(24, 28), seed=0) -> list:
    """Write ``{class: [file names]}`` (default: 4 per class, JPEG and PNG) of coloured noise under ``root``."""
    names = names or {c: [f"{c}_{i}{'.jpg' if i % 2 == 0 else '.png'}" for i in range(4)] for c in CLASSES}
    rng = np.random.default_rng(seed)
    colours = [(40, 40, 200), (40, 200, 40), (200, 40, 40)]
    written = []
    for k, (folder, files) in enumerate(names.items()):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        for name in files:
            img = np.clip(rng.normal(colours[k % 3], 30, (*size, 3)), 0, 255).astype(np.uint8)
            ok, buf = cv2.imencode(os.path.splitext(name)[1] or ".png", img)
            assert ok, name
            path = os.path.join(root, folder, name)
            with open(path, "wb") as f:
                f.write(buf.tobytes())
            written.append(path)
    return written


def run_cli(argv) -> int:
    """``finetune.cli.main(argv)`` with every path turned into text; a usage error (``SystemExit``) gives its code."""
    from finetune.cli import main

    try:
        return main([os.fspath(a) for a in argv])
    except SystemExit as exc:  # argparse: exit 2 after a usage line and one error line
        return exc.code if isinstance(exc.code, int) else 1


@pytest.fixture(scope="session")
def inputs(tmp_path_factory):
    """Paths of the session inputs (see the module docstring), as a namespace of strings."""
    import finetune as ft

    root = str(tmp_path_factory.mktemp("inputs"))
    images = os.path.join(root, "images")
    write_images(images)
    assert run_cli(["split", images, "--out", os.path.join(root, "data"), "--ratios", "1.0", "--no-shuffle"]) == 0
    lst = os.path.join(root, "data_train.lst")
    assert run_cli(["pack", lst, "--root", images, "--out", os.path.join(root, "rec"), "--workers", "1"]) == 0
    backbone = ft.Backbone.from_zoo("mobilenet0.25", weights=None)
    model = ft.HeadReplacer(3).apply(backbone, class_names=CLASSES)
    model.preprocess = model.preprocess.replace(size=(32, 32), resize=32)
    model_dir = os.path.join(root, "model")
    model.save(model_dir)
    feats = os.path.join(root, "feats.npy")
    assert run_cli(["extract", model_dir, images, "--layer", model.feature_layer, "--out", feats,
                    "--no-progress"]) == 0
    index = os.path.join(root, "index.npz")
    assert run_cli(["index", feats, "--out", index]) == 0
    mean = os.path.join(root, "mean.bin")
    assert run_cli(["mean", os.path.join(root, "rec.rec"), "--out", mean, "--size", "16", "16",
                    "--workers", "1"]) == 0
    labels = os.path.join(root, "labels.txt")
    with open(labels, "w", encoding="utf-8") as f:
        f.writelines(line.rsplit(os.sep, 2)[-2] + "\n" for line in open(feats[:-4] + ".ids.txt", encoding="utf-8"))
    preprocess = os.path.join(root, "preprocess.json")
    model.preprocess.save(preprocess)
    pca = os.path.join(root, "pca.npz")
    ft.PCAWhitening(4).fit(np.random.default_rng(0).normal(size=(20, 8))).save(pca)
    from tests.model_sources import caffe_pair

    caffe = os.path.join(root, "caffe")
    os.makedirs(caffe)
    prototxt, caffemodel = caffe_pair(caffe)
    return types.SimpleNamespace(
        root=root, images=images, image=os.path.join(images, "cat", "cat_0.jpg"), lst=lst,
        classes=os.path.join(root, "data_classes.txt"), rec=os.path.join(root, "rec"), model=model_dir,
        layer=model.feature_layer, feats=feats, ids=feats[:-4] + ".ids.txt", index=index, mean=mean,
        labels=labels, preprocess=preprocess, pca=pca, prototxt=prototxt, caffemodel=caffemodel)


@pytest.fixture(scope="session")
def run_folder(inputs, tmp_path_factory):
    """A one-epoch training run of the session model: ``run/model``, ``history.json``, ``checkpoints/last.ckpt``."""
    out = os.path.join(str(tmp_path_factory.mktemp("run")), "run")
    assert run_cli(["train", inputs.model, "--train", inputs.rec, "--out", out, "--recipe", "manual", "--epochs", "1",
                    "--batch-size", "6", "--workers", "1", "--no-progress"]) == 0
    return out


# ------------------------------------------------------------------ the generic check
def snapshot(folder) -> dict:
    """``{relative path: bytes}`` of every file under ``folder`` (links not followed)."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    files[os.path.relpath(path, folder)] = f.read()
    return files


def leftovers(folder) -> list:
    """Names of temporaries (``*.tmp``, ``*.tmpdir``, ``*.commit``, ``*.swap``) under ``folder``."""
    found = []
    for root, dirs, names in os.walk(folder):
        found += [os.path.join(root, n) for n in dirs + names if TEMPORARY.search(n)]
    return found


def assert_clean_exit(code: int, err: str, *, allowed=(0, 1, 2)) -> None:
    """Success, or exit 1/2 with a one-line error and no traceback."""
    assert code in allowed, f"exit {code}; stderr:\n{err}"
    assert "Traceback" not in err, err
    if code:
        errors = [line for line in err.splitlines() if "error:" in line]
        assert errors, f"exit {code} without an error line; stderr:\n{err}"
        last = err.rstrip("\n").splitlines()[-1]
        assert "error:" in last, f"the error is not one line at the end:\n{err}"


def assert_nothing_lost(before: dict, folder) -> None:
    """Every file of ``before`` (a :func:`snapshot` of ``folder``) is still there with the same bytes."""
    after = snapshot(folder) if os.path.isdir(folder) else {}
    lost = [name for name, data in before.items() if after.get(name) != data]
    assert not lost, f"lost or changed: {lost}"

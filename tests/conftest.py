"""Shared fixtures: tiny synthetic data for fast tests."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def image_folder(tmp_path):
    """A class-per-folder tree: 3 classes x 8 images (JPEG and PNG, several sizes).

    Each class has a distinct dominant colour so tiny models can learn it.
    """
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    colours = {"cat": (40, 40, 200), "dog": (40, 200, 40), "fish": (200, 40, 40)}  # BGR
    for name, bgr in colours.items():
        (root / name).mkdir(parents=True)
        for i in range(8):
            h, w = int(rng.integers(40, 80)), int(rng.integers(40, 80))
            img = np.clip(rng.normal(bgr, 30, size=(h, w, 3)), 0, 255).astype(np.uint8)
            ext = ".jpg" if i % 2 == 0 else ".png"
            cv2.imwrite(str(root / name / f"{name}_{i}{ext}"), img)
    return root


@pytest.fixture(params=["block", "caffe", "deployment"])
def any_model_source(request, tmp_path):
    """A plain HybridBlock, a Caffe (prototxt, caffemodel) pair or a deployment folder (see tests/model_sources.py)."""
    from tests.model_sources import source

    return source(request.param, tmp_path)

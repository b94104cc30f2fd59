"""Shared fixtures: tiny synthetic data for fast tests."""

from __future__ import annotations

import gc
import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


_COLLECT_ABOVE_MB = 2048


def _rss_mb() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20
    except (OSError, ValueError, IndexError):  # not Linux: no guard
        return 0


@pytest.fixture(autouse=True)
def _bounded_memory():
    """Collect reference cycles after a test once the process holds more than 2 GB.

    A Gluon network and its cached graphs form reference cycles that Python's
    collector frees late: 55 zoo networks built one after another held 14 GB
    and the suite was killed for memory. Collecting when the process is large
    keeps it bounded whichever test builds the next big network, at no cost to
    the small ones.
    """
    yield
    if _rss_mb() > _COLLECT_ABOVE_MB:
        gc.collect()


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


@pytest.fixture(params=["block", "caffe", "deployment", "legacy_deployment"])
def any_model_source(request, tmp_path):
    """A plain HybridBlock, a Caffe (prototxt, caffemodel) pair, a deployment folder or one of the earlier
    ``deploy.json`` layout (see tests/model_sources.py)."""
    from tests.model_sources import source

    return source(request.param, tmp_path)


@pytest.fixture
def linked_folder(tmp_path):
    """Five images in the less common formats, plus a link loop, a second name for a folder and a
    second link to a file; returns ``(root, relative paths of the five real images, sorted)``.

    Every folder reader must list each real image once and end (``ImageList.from_folder``,
    ``list_images``, ``Predictor``, ``FeatureExtractor``, quantization calibration).
    """
    rng = np.random.default_rng(1)
    root = tmp_path / "linked"
    names = ["a/1.png", "a/2.webp", "b/3.pgm", "b/4.jpe", "b/5.PPM"]
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        img = rng.integers(0, 255, (24 + 4 * int(name[2]), 32, 3), dtype=np.uint8)
        ok, buf = cv2.imencode(os.path.splitext(name)[1].lower(), img[:, :, 0] if name.endswith("pgm") else img)
        assert ok, name
        (root / name).write_bytes(buf.tobytes())
    (root / "b" / "notes.txt").write_text("not an image", encoding="utf-8")
    os.symlink(root, root / "a" / "loop")                    # a loop back to the top
    os.symlink(root / "a", root / "alias")                   # the same folder under a second name
    os.symlink(root / "a" / "1.png", root / "b" / "dup.png")  # the same file twice
    return root, names

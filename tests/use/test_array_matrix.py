"""Every array a caller might pass, to every consumer that reads images: the right number of results, or a
``ConfigError`` that says what to pass — never another exception, never a silently different count.

The matrix is the class of fault, not a list of instances: a ``(3, H, W)`` image read as three grey images,
an ``NDArray`` read row by row and NaN pixels giving NaN descriptors were all instances of it.
"""

import mxnet as mx
import numpy as np
import pytest

import finetune as ft
from finetune.errors import ConfigError
from tests.use.conftest import make_tiny

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (20, 24, 3)).astype(np.uint8)

# (name, array, images it holds, or None: must be refused)
CASES = [
    ("HWC uint8", IMAGE, 1),
    ("HW grey", IMAGE[..., 0], 1),
    ("HW1", IMAGE[..., :1], 1),
    ("HWC4 alpha", np.dstack([IMAGE, IMAGE[..., :1]]), 1),
    ("HWC float 0-255", IMAGE.astype(np.float32), 1),
    ("HWC float64", IMAGE.astype(np.float64), 1),
    ("HWC uint16 in 0-255", IMAGE.astype(np.uint16), 1),
    ("NHWC batch", np.stack([IMAGE] * 4), 4),
    ("NHW grey batch", np.stack([IMAGE[..., 0]] * 5), 5),
    ("NDArray HWC", mx.nd.array(IMAGE, dtype="uint8"), 1),
    ("list of two", [IMAGE, IMAGE], 2),
    ("CHW", IMAGE.transpose(2, 0, 1).copy(), None),
    ("1HW", IMAGE[None, ..., 0].copy(), None),
    ("NCHW", np.stack([IMAGE.transpose(2, 0, 1)] * 2), None),
    ("two channels", IMAGE[..., :2].copy(), None),
    ("NaN pixel", np.where(np.arange(IMAGE.size).reshape(IMAGE.shape) == 0, np.nan, IMAGE.astype(np.float32)), None),
    ("inf pixel", np.full(IMAGE.shape, np.inf, np.float32), None),
    ("uint16 16-bit", IMAGE.astype(np.uint16) * 257, None),
    ("negative ints", IMAGE.astype(np.int16) - 300, None),
    ("bool", IMAGE > 100, None),
    ("5-D", np.zeros((1, 1, 4, 4, 3), np.uint8), None),
    ("empty", np.zeros((0, 4, 4, 3), np.uint8), None),
    ("dict", {"a": IMAGE}, None),
]


@pytest.fixture(scope="module")
def model():
    return make_tiny(size=16)


def _consumers(model):
    predictor = ft.Predictor(model, tta=False, workers=1, fuse=False)
    extractor = ft.FeatureExtractor(model, "tiny_relu1", "avg")
    return {"predict": lambda x: predictor.predict(x, top_k=1, color="RGB"),
            "extract": lambda x: extractor.extract(x, color="RGB")}


@pytest.mark.parametrize("consumer", ["predict", "extract"])
@pytest.mark.parametrize("name, array, count", CASES, ids=[c[0] for c in CASES])
def test_every_array_form_gives_one_result_per_image_or_a_config_error(model, consumer, name, array, count):
    run = _consumers(model)[consumer]
    if count is None:
        try:
            out = run(array)
        except ConfigError:
            return
        # predict reports an unreadable item as an error row instead of raising: it must not be scored
        assert consumer == "predict" and all(p.error for p in out), f"{name}: accepted {len(out)} results"
        return
    out = run(array)
    assert len(out) == count, name
    if consumer == "extract":
        assert np.isfinite(out).all(), name
    else:
        assert not any(p.error for p in out), [p.error for p in out]

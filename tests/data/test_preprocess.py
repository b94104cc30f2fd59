import mxnet as mx
import numpy as np
import pytest

from finetune import Preprocess
from finetune.errors import ConfigError, ShapeError


def test_normalisation_formula_numpy_and_mxnet_agree():
    pre = Preprocess(size=(2, 3), mean=(10, 20, 30), std=(2, 4, 5), scale=0.5)
    x = np.arange(18, dtype=np.float32).reshape(3, 2, 3) * 10
    expected = (x - np.array([10, 20, 30]).reshape(3, 1, 1)) / np.array([2, 4, 5]).reshape(3, 1, 1) * 0.5
    np.testing.assert_allclose(pre.normalize(x), expected, rtol=1e-6)
    np.testing.assert_allclose(pre.normalize(mx.nd.array(x[None])).asnumpy()[0], expected, rtol=1e-6)


def test_transform_converts_colour_order_and_crops():
    pre = Preprocess(size=(4, 4), resize=4, color="BGR", mean=(0, 0, 0), std=(1, 1, 1))
    rgb = np.zeros((8, 12, 3), np.uint8)
    rgb[..., 0] = 255  # red
    out = pre.transform(rgb, color="RGB")
    assert out.shape == (3, 4, 4)
    assert out[2].min() == 255 and out[0].max() == 0  # red is the last channel in BGR


def test_mean_image_is_centre_cropped_and_checked():
    mi = np.zeros((3, 6, 6), np.float32)
    mi[:, 1:5, 1:5] = 7
    pre = Preprocess(size=(4, 4), mean_image=mi, std=(1, 1, 1))
    assert (pre.normalize(np.full((3, 4, 4), 7, np.float32)) == 0).all()
    with pytest.raises(ShapeError, match="smaller than the input size"):
        Preprocess(size=(8, 8), mean_image=mi)


def test_save_load_round_trip(tmp_path):
    pre = Preprocess(size=(5, 7), color="BGR", mean=(104, 117, 123), std=(1, 1, 1),
                     mean_image=np.ones((3, 9, 9), np.float32), resize_mode="stretch")
    pre.save(tmp_path / "pre.json")
    assert Preprocess.load(tmp_path / "pre.json") == pre
    assert Preprocess() != pre


def test_repr_shows_only_non_defaults_and_validation():
    assert repr(Preprocess(color="BGR")) == "Preprocess(color='BGR')"
    with pytest.raises(ConfigError, match="'color' parameter of Preprocess"):
        Preprocess(color="HSV")
    with pytest.raises(ConfigError, match="'std' parameter"):
        Preprocess(std=(0, 1, 1))

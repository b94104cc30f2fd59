"""FeatureExtractor on a real finetune Backbone (graph + params): pre/post-activation FC layers."""

import mxnet as mx
import numpy as np
import pytest

from finetune.data import Preprocess
from finetune.features import FeatureExtractor, l2_normalize


@pytest.fixture(scope="module")
def caffe_like():
    """conv1 -> relu1 -> pool1 -> fc6 -> relu6 -> fc7, named like a Caffe VGG (BGR, mean subtraction)."""
    from finetune.models import Backbone

    data = mx.sym.var("data")
    x = mx.sym.Convolution(data, num_filter=6, kernel=(3, 3), pad=(1, 1), name="conv1")
    x = mx.sym.Activation(x, act_type="relu", name="relu1")
    x = mx.sym.Pooling(x, kernel=(2, 2), stride=(2, 2), pool_type="max", name="pool1")
    x = mx.sym.FullyConnected(x, num_hidden=5, name="fc6")
    x = mx.sym.Activation(x, act_type="relu", name="relu6")
    x = mx.sym.FullyConnected(x, num_hidden=3, name="fc7")
    rng = np.random.default_rng(0)
    shapes, _, _ = x.infer_shape(data=(1, 3, 8, 8))
    args = {n: mx.nd.array(rng.normal(0, 0.3, s)) for n, s in zip(x.list_arguments(), shapes) if n != "data"}
    pre = Preprocess(size=(8, 8), resize=8, color="BGR", mean=(104, 117, 123), std=(1, 1, 1), scale=1 / 64)
    return Backbone.from_symbol(x, args, {}, pre, classifier="fc7", feature_layer="relu6")


def test_fc_pre_and_post_activation_are_different_layers(caffe_like):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (4, 12, 10, 3), dtype=np.uint8)
    fx = FeatureExtractor(caffe_like, ["fc6", "relu6"], normalize=False)
    assert fx.layer_kinds() == {"fc6": "fc", "relu6": "fc"}
    desc = fx.extract(images)
    fc6, relu6 = desc[:, :5], desc[:, 5:]
    assert (fc6 < 0).any()
    assert np.allclose(relu6, np.maximum(fc6, 0), atol=1e-6)
    # the fixed-size path: BGR + mean subtraction from the model's Preprocess, centre crop 8x8
    x = np.stack([caffe_like.preprocess.transform(img) for img in images])
    ref = caffe_like.features(mx.nd.array(x), ["fc6"])[0].asnumpy()
    assert np.allclose(fc6, ref, atol=1e-5)


def test_conv_layer_of_a_backbone_keeps_aspect(caffe_like):
    img = np.random.default_rng(2).integers(0, 255, (16, 32, 3), dtype=np.uint8)
    fx = FeatureExtractor(caffe_like, "relu1", "max")
    _, outs = next(fx.iter_layer_outputs(img))
    assert outs[0].shape == (1, 6, 8, 16)
    assert np.allclose(fx.extract(img), l2_normalize(outs[0].asnumpy().max(axis=(2, 3))), atol=1e-6)

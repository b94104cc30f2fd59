"""EfficientNet-Lite: architecture, exact TensorFlow SAME padding, offline ImageNet weights."""

from __future__ import annotations

import json
import math

import mxnet as mx
import numpy as np
import pytest

from finetune.data import Preprocess
from finetune.errors import ConfigError, ShapeError
from finetune.models.architectures import (EfficientNetLite, efficientnet_lite, efficientnet_lite_preprocess,
                                          efficientnet_lite_weights_path, load_efficientnet_lite_imagenet)
from finetune.models.architectures._efficientnet_lite import _SamePad2x


def _tf_same_conv(x, w, stride):
    """NumPy reference of tf.nn.conv2d(padding="SAME"): x (C, H, W), w (O, C, k, k)."""
    _, h, wd = x.shape
    k = w.shape[-1]
    pads = []
    for n in (h, wd):
        out = math.ceil(n / stride)
        total = max((out - 1) * stride + k - n, 0)
        pads.append((total // 2, total - total // 2))
    xp = np.pad(x, ((0, 0), *pads))
    oh, ow = math.ceil(h / stride), math.ceil(wd / stride)
    y = np.zeros((w.shape[0], oh, ow), np.float64)
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, i * stride:i * stride + k, j * stride:j * stride + k]
            y[:, i, j] = np.tensordot(w, patch, axes=([1, 2, 3], [0, 1, 2]))
    return y


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("hybrid", [False, True])
def test_stride2_same_padding_matches_tensorflow_at_odd_and_even_sizes(kernel, hybrid):
    rng = np.random.default_rng(kernel)
    pad = _SamePad2x(kernel, prefix="p_")
    if hybrid:
        pad.hybridize()
    w = rng.normal(size=(2, 3, kernel, kernel)).astype(np.float32)
    for h, wd in [(8, 8), (7, 7), (7, 10), (15, 9), (2, 3)]:
        x = rng.normal(size=(3, h, wd)).astype(np.float32)
        padded = pad(mx.nd.array(x[None]))
        got = mx.nd.Convolution(padded, mx.nd.array(w), kernel=(kernel, kernel), stride=(2, 2),
                                num_filter=2, no_bias=True).asnumpy()[0]
        want = _tf_same_conv(x, w, 2)
        assert got.shape == want.shape, (h, wd)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=f"{h}x{wd}")


@pytest.mark.parametrize("variant, blocks, head_in, params", [
    (0, 16, 320, 4_652_008),
    (1, 21, 320, 5_416_680),
    (2, 21, 352, 6_092_072),
])
def test_architecture_matches_the_packaged_weights(variant, blocks, head_in, params):
    # counts are those of the packaged .pth files (BN running statistics excluded)
    net = efficientnet_lite(variant)
    assert net.num_blocks == blocks
    assert net.top.conv.weight.shape == (1280, head_in, 1, 1)
    assert net.stem.conv.weight.shape == (32, 3, 3, 3)  # stem not scaled
    trainable = sum(int(np.prod(p.shape)) for n, p in net.collect_params().items() if "running" not in n)
    assert trainable == params


def test_forward_at_odd_size_hybridized_equals_imperative():
    net = efficientnet_lite(0, num_classes=5)
    net.initialize(mx.init.Xavier(), force_reinit=True)
    x = mx.nd.random.normal(shape=(1, 3, 65, 67))
    imperative = net(x).asnumpy()
    net.hybridize()
    hybrid = net(x).asnumpy()
    assert imperative.shape == (1, 5)
    np.testing.assert_allclose(imperative, hybrid, rtol=1e-4, atol=1e-5)


def test_gradients_flow_through_the_same_padding():
    net = efficientnet_lite(0, num_classes=3)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    x = mx.nd.random.normal(shape=(2, 3, 33, 34))
    with mx.autograd.record():
        loss = net(x).sum()
    loss.backward()
    grad = net.stem.conv.weight.grad().asnumpy()
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0


def test_layer_and_parameter_names_are_meaningful_and_stable():
    a, b = efficientnet_lite(0), efficientnet_lite(0)
    assert list(a.collect_params()) == list(b.collect_params())
    assert "blocks3_project_conv_weight" in a.collect_params()
    assert "fc_weight" in a.collect_params()
    nodes = [n["name"] for n in json.loads(a(mx.sym.var("data")).tojson())["nodes"] if n["op"] != "null"]
    for name in ("stem_conv_fwd", "stem_relu_fwd", "blocks1_expand_conv_fwd", "blocks3_project_bn_fwd",
                 "blocks2_add", "top_conv_fwd", "top_relu_fwd", "pool_fwd", "flatten_fwd",
                 "dropout_fwd", "fc_fwd"):
        assert name in nodes, name
    assert nodes[-1] == "fc_fwd"
    # the pretrained last conv must never look like a new head (HeadReplacer names those head_*)
    assert not [n for n in nodes if n.startswith("head_")]
    assert EfficientNetLite.classifier_layer == "fc" and EfficientNetLite.feature_layer == "flatten"
    assert repr(a) == "EfficientNetLite(variant=0, num_classes=1000)"


def test_drop_connect_drops_residual_branches_per_sample_only_in_training():
    net = efficientnet_lite(0, num_classes=3, drop_connect=0.5)
    assert repr(net) == "EfficientNetLite(variant=0, num_classes=3, drop_connect=0.5)"
    rates = [b.drop._rate if b.drop is not None else None for b in net.blocks]
    assert rates[0] is None and rates[1] is None  # no residual: nothing to drop
    assert rates[2] == pytest.approx(0.5 * 2 / 16) and rates[-2] == pytest.approx(0.5 * 14 / 16)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    x = mx.nd.random.normal(shape=(1, 3, 32, 32))
    x = mx.nd.concat(*[x] * 8, dim=0)
    first = net(x).asnumpy()
    assert np.allclose(first, first[0], atol=1e-5)  # inference: deterministic, no dropping
    with mx.autograd.record(train_mode=True):
        trained = net(x).asnumpy()
    assert not np.allclose(trained, trained[0], atol=1e-3)  # samples dropped differently
    assert "blocks2_drop_fwd_output" in net(mx.sym.var("data")).get_internals().list_outputs()
    assert all(b.drop is None for b in efficientnet_lite(0).blocks)


def test_variant_can_be_named():
    assert efficientnet_lite("lite1").variant == 1
    assert efficientnet_lite("efficientnet_lite2").variant == 2
    assert efficientnet_lite_preprocess("efficientnet_lite2").size == (260, 260)


def test_bad_arguments_are_refused():
    with pytest.raises(ConfigError, match="variant"):
        efficientnet_lite(7)
    with pytest.raises(ConfigError, match="variant"):
        efficientnet_lite("b0")
    with pytest.raises(ConfigError, match="num_classes"):
        efficientnet_lite(0, num_classes=0)
    with pytest.raises(ConfigError, match="dropout"):
        efficientnet_lite(0, dropout=1.5)
    with pytest.raises(ConfigError, match="drop_connect"):
        efficientnet_lite(0, drop_connect=-0.1)
    with pytest.raises(ConfigError, match="No packaged ImageNet weights"):
        efficientnet_lite_weights_path(3)


def test_preprocess_per_variant():
    for variant, size, resize in [(0, 224, 256), (1, 240, 272), (2, 260, 292)]:
        pre = efficientnet_lite_preprocess(variant)
        assert pre == Preprocess(size=(size, size), resize=resize, color="RGB",
                                 mean=(127,) * 3, std=(128,) * 3)
    white = efficientnet_lite_preprocess(0).transform(np.full((300, 400, 3), 255, np.uint8))
    assert white.shape == (3, 224, 224) and np.allclose(white, 1.0)


@pytest.mark.realdata
def test_wrong_variant_weights_are_refused_by_shape():
    with pytest.raises(ShapeError, match="does not fit EfficientNet-Lite2"):
        load_efficientnet_lite_imagenet(efficientnet_lite(2), efficientnet_lite_weights_path(1))
    net = efficientnet_lite(0, num_classes=10)
    with pytest.raises(ShapeError, match="fc"):
        load_efficientnet_lite_imagenet(net)
    assert net.stem.conv.weight._data is None  # nothing was loaded


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("variant", [0, 1, 2])
def test_imagenet_weights_classify_foolbox_photos(variant):
    """Lite0 must get >= 17/20 (we measured 18/20 for each of Lite0, Lite1, Lite2)."""
    from tests.ingredients import foolbox_imagenet

    net = load_efficientnet_lite_imagenet(efficientnet_lite(variant))
    net.hybridize()
    pre = efficientnet_lite_preprocess(variant)
    photos = foolbox_imagenet()
    x = mx.nd.array(np.stack([pre.read(path) for path, _ in photos]))
    pred = net(x).asnumpy().argmax(axis=1)
    correct = int((pred == np.array([label for _, label in photos])).sum())
    assert correct >= 17, f"EfficientNet-Lite{variant}: {correct}/20 top-1"

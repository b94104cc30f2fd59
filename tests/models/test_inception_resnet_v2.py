"""Inception-ResNet-v2: parameter count and stage shapes of the reference, any input from 75 px."""

from __future__ import annotations

import json

import mxnet as mx
import numpy as np
import pytest

from finetune.data import Preprocess
from finetune.errors import ConfigError
from finetune.models._inception_resnet_v2 import (
    STAGE_OUTPUTS,
    InceptionResNetV2,
    inception_resnet_v2_preprocess,
)


def _reference_parameter_count(num_classes: int) -> int:
    """Sum over the layer shapes of the reference (TF-slim / Cadene / timm ``inception_resnet_v2``).

    Each conv+BN unit has ``in*out*kh*kw`` weights plus BN gamma and beta; the
    residual 1x1 convs have a bias; BN running statistics are not parameters.
    """
    def unit(i, o, kh, kw=None):
        return i * o * kh * (kh if kw is None else kw) + 2 * o

    stem = unit(3, 32, 3) + unit(32, 32, 3) + unit(32, 64, 3) + unit(64, 80, 1) + unit(80, 192, 3)
    mixed_5b = (unit(192, 96, 1) + unit(192, 48, 1) + unit(48, 64, 5) + unit(192, 64, 1)
                + unit(64, 96, 3) + unit(96, 96, 3) + unit(192, 64, 1))
    block35 = (unit(320, 32, 1) + unit(320, 32, 1) + unit(32, 32, 3) + unit(320, 32, 1)
               + unit(32, 48, 3) + unit(48, 64, 3) + 128 * 320 + 320)
    mixed_6a = unit(320, 384, 3) + unit(320, 256, 1) + unit(256, 256, 3) + unit(256, 384, 3)
    block17 = unit(1088, 192, 1) + unit(1088, 128, 1) + unit(128, 160, 1, 7) + unit(160, 192, 7, 1) + 384 * 1088 + 1088
    mixed_7a = (unit(1088, 256, 1) + unit(256, 384, 3) + unit(1088, 256, 1) + unit(256, 288, 3)
                + unit(1088, 256, 1) + unit(256, 288, 3) + unit(288, 320, 3))
    block8 = unit(2080, 192, 1) + unit(2080, 192, 1) + unit(192, 224, 1, 3) + unit(224, 256, 3, 1) + 448 * 2080 + 2080
    body = stem + mixed_5b + 10 * block35 + mixed_6a + 20 * block17 + mixed_7a + 10 * block8 + unit(2080, 1536, 1)
    return body + 1536 * num_classes + num_classes


def _count(net) -> int:
    return sum(int(np.prod(p.shape)) for name, p in net.collect_params().items() if "running" not in name)


@pytest.mark.parametrize("num_classes, reference", [(1000, 55_843_464), (1001, 55_845_001)])
def test_parameter_count_matches_the_reference(num_classes, reference):
    # 55,843,464 is the published count of timm's / Cadene's inception_resnet_v2 (1000 classes);
    # 55,845,001 is TF-slim's 1001-class head.
    assert _reference_parameter_count(num_classes) == reference
    assert _count(InceptionResNetV2(num_classes)) == reference


def _stage_shapes(size: int) -> dict:
    internals = InceptionResNetV2()(mx.sym.var("data")).get_internals()
    return {stage: internals[node + "_output"].infer_shape(data=(1, 3, size, size))[1][0][1:]
            for stage, node in STAGE_OUTPUTS.items()}


def test_stage_output_shapes_at_299_match_the_reference():
    assert _stage_shapes(299) == {
        "stem": (192, 35, 35),
        "mixed_5b": (320, 35, 35),
        "block35": (320, 35, 35),
        "mixed_6a": (1088, 17, 17),
        "block17": (1088, 17, 17),
        "mixed_7a": (2080, 8, 8),
        "block8": (2080, 8, 8),
        "conv2d_7b": (1536, 8, 8),
        "pool": (1536, 1, 1),
    }


def test_every_block_is_there_with_its_scale_and_activation():
    net = InceptionResNetV2()
    assert [len(net.block35), len(net.block17), len(net.block8)] == [10, 20, 10]
    assert {b.scale for b in net.block35} == {0.17} and all(b.use_relu for b in net.block35)
    assert {b.scale for b in net.block17} == {0.10} and all(b.use_relu for b in net.block17)
    assert {b.scale for b in net.block8[:9]} == {0.20} and all(b.use_relu for b in net.block8[:9])
    assert net.block8[9].scale == 1.0 and not net.block8[9].use_relu  # the final block8, no ReLU
    assert net.mixed_5b.branches[3][0]._kwargs["count_include_pad"] is False


def test_names_are_readable_and_stable():
    a, b = InceptionResNetV2(), InceptionResNetV2()
    assert list(a.collect_params().keys()) == list(b.collect_params().keys())
    assert "stem_conv2d_1a_conv_weight" in a.collect_params().keys()
    assert "block17_20_conv_bias" in a.collect_params().keys()
    nodes = [n["name"] for n in json.loads(a(mx.sym.var("data")).tojson())["nodes"] if n["op"] != "null"]
    for name in ("stem_conv2d_1a_relu_fwd", "stem_maxpool_3a_fwd", "mixed_5b_branch3_0_fwd",
                 "block35_1_scale", "block35_10_relu", "block17_1_add", "block8_9_relu",
                 "block8_10_add", "conv2d_7b_relu_fwd", "pool_fwd", "flatten_fwd", "dropout_fwd"):
        assert name in nodes, name
    assert "block8_10_relu" not in nodes
    assert nodes[-1] == "fc_fwd"
    assert all(n.split("_")[0] in {"stem", "mixed", "block35", "block17", "block8", "conv2d",
                                   "pool", "flatten", "dropout", "fc"} for n in nodes)


def test_bad_arguments_and_repr():
    with pytest.raises(ConfigError, match="num_classes"):
        InceptionResNetV2(0)
    with pytest.raises(ConfigError, match="dropout"):
        InceptionResNetV2(dropout=1.0)
    assert repr(InceptionResNetV2(17)) == "InceptionResNetV2(num_classes=17)"
    assert repr(InceptionResNetV2(17, dropout=0.5)) == "InceptionResNetV2(num_classes=17, dropout=0.5)"


def test_preprocess_is_the_reference_one():
    pre = inception_resnet_v2_preprocess()
    assert pre == Preprocess(size=(299, 299), resize=342, color="RGB", mean=(127.5,) * 3, std=(127.5,) * 3)
    x = pre.transform(np.zeros((400, 300, 3), np.uint8))
    assert x.shape == (3, 299, 299) and np.allclose(x, -1.0)


def test_works_from_75_pixels():
    net = InceptionResNetV2(num_classes=4)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    out = net(mx.nd.random.uniform(-1, 1, shape=(1, 3, 75, 75))).asnumpy()
    assert out.shape == (1, 4) and np.isfinite(out).all()
    with pytest.raises(mx.MXNetError, match="kernel size exceed"):  # 74 px: mixed_7a runs out of pixels
        net(mx.nd.zeros((1, 3, 74, 74))).wait_to_read()


@pytest.mark.slow
def test_imperative_equals_hybridized():
    net = InceptionResNetV2(num_classes=4)
    net.initialize(mx.init.Xavier())
    x = mx.nd.random.uniform(-1, 1, shape=(1, 3, 75, 75))
    imperative = net(x).asnumpy()
    net.hybridize()
    np.testing.assert_allclose(net(x).asnumpy(), imperative, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def initialised():
    net = InceptionResNetV2()
    net.initialize(mx.init.Xavier(magnitude=1.0))
    net.hybridize()
    return net


@pytest.mark.slow
@pytest.mark.parametrize("size", [299, 224, 331])
def test_forward_at_reference_sizes(initialised, size):
    out = initialised(mx.nd.random.uniform(-1, 1, shape=(1, 3, size, size))).asnumpy()
    assert out.shape == (1, 1000) and np.isfinite(out).all()

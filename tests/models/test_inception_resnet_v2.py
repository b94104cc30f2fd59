"""Inception-ResNet-v2: parameter count and stage shapes of the reference, any input from 75 px."""

from __future__ import annotations

import json

import mxnet as mx
import numpy as np
import pytest

from finetune.data import Preprocess
from finetune.errors import ConfigError, ShapeError
from finetune.models.architectures import STAGE_OUTPUTS, InceptionResNetV2, inception_resnet_v2_preprocess


def reference_state_dict_shapes(num_classes: int = 1000, head: str = "classif") -> dict:
    """Tensor shapes of the reference (timm / Cadene ``inception_resnet_v2``) state dict, by name.

    Written out from the reference's layer list: every conv+BN unit has a
    bias-free ``(out, in, kh, kw)`` conv and a BatchNorm (weight, bias,
    running mean and var); the residual 1x1 ``conv2d`` has a bias.
    """
    shapes = {}

    def unit(path, i, o, kh, kw=None):
        shapes[f"{path}.conv.weight"] = (o, i, kh, kh if kw is None else kw)
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{path}.bn.{name}"] = (o,)

    def conv2d(path, i, o):
        shapes[f"{path}.conv2d.weight"], shapes[f"{path}.conv2d.bias"] = (o, i, 1, 1), (o,)

    for path, i, o, k in [("conv2d_1a", 3, 32, 3), ("conv2d_2a", 32, 32, 3), ("conv2d_2b", 32, 64, 3),
                          ("conv2d_3b", 64, 80, 1), ("conv2d_4a", 80, 192, 3)]:
        unit(path, i, o, k)
    unit("mixed_5b.branch0", 192, 96, 1)
    unit("mixed_5b.branch1.0", 192, 48, 1), unit("mixed_5b.branch1.1", 48, 64, 5)
    unit("mixed_5b.branch2.0", 192, 64, 1), unit("mixed_5b.branch2.1", 64, 96, 3)
    unit("mixed_5b.branch2.2", 96, 96, 3), unit("mixed_5b.branch3.1", 192, 64, 1)
    for r in range(10):
        p = f"repeat.{r}"
        unit(f"{p}.branch0", 320, 32, 1)
        unit(f"{p}.branch1.0", 320, 32, 1), unit(f"{p}.branch1.1", 32, 32, 3)
        unit(f"{p}.branch2.0", 320, 32, 1), unit(f"{p}.branch2.1", 32, 48, 3), unit(f"{p}.branch2.2", 48, 64, 3)
        conv2d(p, 128, 320)
    unit("mixed_6a.branch0", 320, 384, 3)
    unit("mixed_6a.branch1.0", 320, 256, 1), unit("mixed_6a.branch1.1", 256, 256, 3)
    unit("mixed_6a.branch1.2", 256, 384, 3)
    for r in range(20):
        p = f"repeat_1.{r}"
        unit(f"{p}.branch0", 1088, 192, 1)
        unit(f"{p}.branch1.0", 1088, 128, 1), unit(f"{p}.branch1.1", 128, 160, 1, 7)
        unit(f"{p}.branch1.2", 160, 192, 7, 1)
        conv2d(p, 384, 1088)
    unit("mixed_7a.branch0.0", 1088, 256, 1), unit("mixed_7a.branch0.1", 256, 384, 3)
    unit("mixed_7a.branch1.0", 1088, 256, 1), unit("mixed_7a.branch1.1", 256, 288, 3)
    unit("mixed_7a.branch2.0", 1088, 256, 1), unit("mixed_7a.branch2.1", 256, 288, 3)
    unit("mixed_7a.branch2.2", 288, 320, 3)
    for p in [f"repeat_2.{r}" for r in range(9)] + ["block8"]:
        unit(f"{p}.branch0", 2080, 192, 1)
        unit(f"{p}.branch1.0", 2080, 192, 1), unit(f"{p}.branch1.1", 192, 224, 1, 3)
        unit(f"{p}.branch1.2", 224, 256, 3, 1)
        conv2d(p, 448, 2080)
    unit("conv2d_7b", 2080, 1536, 1)
    shapes[f"{head}.weight"], shapes[f"{head}.bias"] = (num_classes, 1536), (num_classes,)
    return shapes


def _reference_parameter_count(num_classes: int) -> int:
    """BN running statistics are buffers, not parameters."""
    shapes = reference_state_dict_shapes(num_classes)
    return sum(int(np.prod(s)) for name, s in shapes.items() if "running" not in name)


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


# ------------------------------------------------------- timm / Cadene weights
def test_torch_names_cover_the_reference_state_dict_exactly():
    from finetune.models.architectures._torch_weights import _torch_names

    net = InceptionResNetV2()
    names = _torch_names(net)
    reference = reference_state_dict_shapes()
    assert set(names.values()) | {"classif.weight", "classif.bias"} == set(reference)
    assert len(set(names.values())) == len(names)  # one-to-one
    params = net.collect_params()
    for gluon, torch_name in names.items():
        assert tuple(params[gluon].shape) == reference[torch_name], (gluon, torch_name)


def _fake_checkpoint(monkeypatch, shapes, prefix=""):
    """Make the loader 'read' a checkpoint whose tensor number i is filled with i (no memory used)."""
    import finetune.models.architectures._torch_weights as irv2

    state = {prefix + name: np.broadcast_to(np.float32(i), shape) for i, (name, shape) in enumerate(shapes.items())}
    monkeypatch.setattr(irv2, "read_torch_state_dict", lambda path: state)
    return {name: i for i, name in enumerate(shapes)}


@pytest.mark.slow
@pytest.mark.parametrize("head, classes, prefix", [("classif", 1000, ""), ("last_linear", 1001, "module.")])
def test_loads_a_timm_or_cadene_checkpoint(monkeypatch, head, classes, prefix):
    from finetune.models.architectures._torch_weights import _torch_names, load_inception_resnet_v2_torch

    index = _fake_checkpoint(monkeypatch, reference_state_dict_shapes(classes, head), prefix)
    net = load_inception_resnet_v2_torch(InceptionResNetV2(), "ckpt.pth")
    params = net.collect_params()
    for gluon, torch_name in _torch_names(net).items():
        assert params[gluon].data().reshape(-1)[0].asscalar() == index[torch_name], gluon
    fc = params["fc_weight"].data().asnumpy()
    assert fc.shape == (1000, 1536) and np.all(fc == index[f"{head}.weight"])
    out = net(mx.nd.zeros((1, 3, 75, 75)))
    assert out.shape == (1, 1000)


def test_checkpoint_that_does_not_fit_is_refused(monkeypatch):
    from finetune.models.architectures import load_inception_resnet_v2_torch

    shapes = reference_state_dict_shapes()
    del shapes["repeat_1.7.conv2d.bias"]
    _fake_checkpoint(monkeypatch, shapes)
    with pytest.raises(ShapeError, match="repeat_1.7.conv2d.bias"):
        load_inception_resnet_v2_torch(InceptionResNetV2(), "ckpt.pth")
    _fake_checkpoint(monkeypatch, reference_state_dict_shapes())
    net = InceptionResNetV2(num_classes=17)
    with pytest.raises(ShapeError, match="fc_weight"):
        load_inception_resnet_v2_torch(net, "ckpt.pth")
    assert net.stem[0].conv.weight._data is None  # nothing was loaded


def test_a_malicious_checkpoint_is_refused_without_running(tmp_path):
    from finetune.errors import UnsafeFileError
    from finetune.models.architectures import load_inception_resnet_v2_torch

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(b"cos\nsystem\n(X" + len(f"touch {marker}").to_bytes(4, "little")
                     + f"touch {marker}".encode() + b"tR.")
    with pytest.raises(UnsafeFileError, match="os.system"):
        load_inception_resnet_v2_torch(InceptionResNetV2(), path)
    assert not marker.exists()

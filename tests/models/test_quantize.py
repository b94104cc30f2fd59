"""INT8 post-training quantization: agreement with float32, save/load, Predictor, errors."""

from __future__ import annotations

import json

import mxnet as mx
import numpy as np
import pytest

import finetune as ft
from finetune.errors import ConfigError, DataError, ModelError


@pytest.fixture(scope="module")
def model():
    bb = ft.Backbone.from_zoo("mobilenet0.25", weights=None)
    return ft.HeadReplacer(3).apply(bb, class_names=["cat", "dog", "fish"])


@pytest.fixture(scope="module")
def calib():
    return np.random.default_rng(0).normal(size=(12, 3, 64, 64)).astype(np.float32)


@pytest.fixture(scope="module")
def quantized(model, calib):
    return ft.quantize(model, calib, batch_size=4)


def test_int8_graph_close_to_float32(model, quantized, calib):
    ops = {n["op"] for n in json.loads(quantized._cached_graph[1].tojson())["nodes"]}
    assert any("quantized" in op or op.startswith("_sg_mkldnn") for op in ops)
    ref = model(mx.nd.array(calib)).asnumpy()
    out = quantized(mx.nd.array(calib)).asnumpy()
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() < 0.25 * np.abs(ref).max() + 1e-3
    assert quantized.preprocess == model.preprocess
    assert quantized.class_names == model.class_names


def test_save_load_round_trip_and_predictor(quantized, calib, tmp_path):
    folder = quantized.save(tmp_path / "q")
    again = ft.load_model(folder)
    assert isinstance(again, ft.QuantizedModel)
    assert again.calibration == quantized.calibration
    x = mx.nd.array(calib[:4])
    np.testing.assert_array_equal(quantized(x).asnumpy(), again(x).asnumpy())
    probs = ft.Predictor.load(folder).predict_proba(np.zeros((2, 40, 40, 3), np.uint8), color="RGB")
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)


def test_calibration_from_image_files(model, image_folder):
    q = ft.quantize(model, image_folder, num_examples=6, calib_mode="entropy")
    assert q.calibration["num_examples"] == 6
    assert q.calibration["calib_mode"] == "entropy"


def test_exclude_layers_kept_float(model, calib):
    q = ft.quantize(model, calib, exclude_layers=["head_classifier_fwd"])
    assert q.calibration["exclude_layers"] == ["head_classifier_fwd"]
    assert q(mx.nd.array(calib[:2])).shape == (2, 3)


@pytest.mark.parametrize("kwargs, error", [
    ({"calib_mode": "minmax"}, ConfigError),
    ({"num_examples": 0}, ConfigError),
])
def test_bad_options(model, calib, kwargs, error):
    with pytest.raises(error):
        ft.quantize(model, calib, **kwargs)


def test_bad_calibration_data(model, tmp_path):
    with pytest.raises(DataError, match="float32"):
        ft.quantize(model, np.zeros((2, 64, 64, 3), np.uint8))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="No calibration images"):
        ft.quantize(model, tmp_path / "empty")


def test_load_refuses_gpu_and_corrupt_weights(quantized, tmp_path):
    folder = quantized.save(tmp_path / "q")
    with pytest.raises(ft.errors.FinetuneError):  # DeviceError without a GPU, ConfigError with one
        ft.load_model(folder, ctx=mx.gpu(0))
    mx.nd.save(str(tmp_path / "q" / "weights.params"), {"nothing": mx.nd.zeros(1)})
    with pytest.raises(ModelError):
        ft.load_model(folder)


def test_cli_export_int8(model, image_folder, tmp_path, capsys):
    from finetune.cli import main

    folder = model.save(tmp_path / "fp32")
    out = tmp_path / "int8"
    assert main(["-q", "export", folder, "--out", str(out), "--int8", "--calibration", str(image_folder)]) == 0
    assert "top-1 agrees with float32" in capsys.readouterr().out
    assert isinstance(ft.load_model(out), ft.QuantizedModel)
    assert main(["-q", "predict", str(out), str(image_folder / "cat")]) == 0
    assert main(["-q", "export", folder, "--out", str(tmp_path / "x"), "--int8"]) == 1
    assert "--calibration" in capsys.readouterr().err


def test_quantize_a_deployment_symbol_block(model, calib, tmp_path):
    dep = ft.export_for_deployment(model, tmp_path / "dep")
    q = ft.quantize(ft.load_deployment(dep.directory), calib)
    assert q(mx.nd.array(calib[:2])).shape == (2, 3)


def test_fuse_keeps_outputs_and_backend_through_predictor(model, calib):
    fused = ft.fuse(model)
    x = mx.nd.array(calib[:4])
    np.testing.assert_allclose(fused(x).asnumpy(), model(x).asnumpy(), atol=1e-4)
    pred = ft.Predictor(fused)
    assert pred.fused and pred.model.block is fused  # used as given, not fused again
    assert fused._backend == "MKLDNN"
    assert pred.predict_proba(np.zeros((2, 40, 40, 3), np.uint8), color="RGB").shape == (2, 3)
    assert repr(fused) == "FusedModel(float32, oneDNN, classes=3)"


def test_calibration_folder_with_rare_formats_and_link_loops_is_listed_once(model, linked_folder):
    import time

    from finetune.models import calibration_batch

    root, names = linked_folder
    t0 = time.time()
    batch = calibration_batch(model, root)
    assert time.time() - t0 < 30
    assert batch.shape == (len(names), 3, *model.preprocess.size) and batch.dtype == np.float32
    assert calibration_batch(model, root, limit=2).shape[0] == 2
    first = model.preprocess.transform(ft.read_image(root / names[0], model.preprocess.color),
                                       model.preprocess.color)
    np.testing.assert_allclose(batch[0], first, atol=1e-6)


@pytest.fixture(scope="module")
def lite_model():
    model = ft.HeadReplacer(3).apply(ft.Backbone.from_zoo("efficientnet_lite0", weights=None), class_names=list("abc"))
    model.preprocess = model.preprocess.replace(size=(64, 64), resize=64)
    return model


def _ops(block) -> list:
    return [node["op"] for node in json.loads(block._cached_graph[1].tojson())["nodes"]]


def test_fuse_folds_same_padding_for_the_preprocessing_size(lite_model):
    fused = ft.fuse(lite_model)
    assert fused.input_size == (64, 64)
    assert not {"Crop", "UpSampling", "Pad"} & set(_ops(fused))  # each padding is its convolution's own
    x = mx.nd.array(np.random.default_rng(2).normal(size=(2, 3, 64, 64)))
    np.testing.assert_allclose(fused(x).asnumpy(), lite_model(x).asnumpy(), rtol=1e-4, atol=1e-4)
    with pytest.raises(ft.errors.ShapeError, match="made for 64x64 inputs"):
        fused(mx.nd.zeros((1, 3, 96, 96)))
    assert ft.fuse(ft.HeadReplacer(2).apply(ft.Backbone.from_zoo("mobilenet0.25", weights=None))).input_size is None


def test_quantize_folds_same_padding_and_keeps_the_size_through_save(lite_model, tmp_path):
    calib = np.random.default_rng(3).normal(size=(4, 3, 64, 64)).astype(np.float32)
    q = ft.quantize(lite_model, calib, batch_size=4)
    assert q.input_size == (64, 64) and not {"Crop", "Pad"} & set(_ops(q))
    again = ft.load_model(q.save(tmp_path / "q"))
    assert again.input_size == (64, 64)
    np.testing.assert_array_equal(again(mx.nd.array(calib[:2])).asnumpy(), q(mx.nd.array(calib[:2])).asnumpy())
    with pytest.raises(ft.errors.ShapeError, match="resize the images to 64x64"):
        again(mx.nd.zeros((1, 3, 32, 32)))
    pred = ft.Predictor(again)
    assert not pred.fused and pred.model is again  # INT8 runs as it is (no longer wrapped: int8 cannot be traced)
    assert pred.predict_proba(np.zeros((2, 40, 40, 3), np.uint8), color="RGB").shape == (2, 3)


def test_calibration_images_beyond_the_limit_are_spread_over_every_class_folder(model, image_folder):
    from finetune.models import calibration_batch

    every = calibration_batch(model, image_folder)  # 3 classes x 8 images, sorted by class
    some = calibration_batch(model, image_folder, limit=3)
    # the first, middle and last images: one of each class, not three of the first
    np.testing.assert_allclose(some, every[[0, 12, 23]], atol=1e-6)

"""The five example pipelines run end to end in their smallest mode, on real ingredients.

Each test calls an example's ``main(argv)`` into ``tmp_path`` and checks what it
produced: files, a model directory that :func:`finetune.load_model` reads back
with identical outputs, metrics in range, plots.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import finetune as ft

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def run_example(name, argv):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([str(a) for a in argv])


def assert_model_dir(folder, num_classes, size):
    """The saved model loads, has the right classes and input size, and gives finite probabilities."""
    model = ft.load_model(folder)
    assert len(model.class_names) == num_classes
    assert model.preprocess.size == (size, size)
    image = np.random.default_rng(0).integers(0, 255, (size + 7, size + 3, 3), dtype=np.uint8)
    probs = ft.Predictor(model).predict_proba(image, color="RGB")
    assert probs.shape == (1, num_classes)
    assert np.isfinite(probs).all() and abs(probs.sum() - 1) < 1e-4
    return model


def test_caffe_vgg16_finetune(tmp_path):
    history = run_example("caffe_vgg16_finetune", ["--out", tmp_path, "--classes", 3, "--per-class", 10,
                                                   "--epochs", 1, "--size", 48])
    assert len(history) == 1 and 0 <= history[0]["val_top1"] <= 1
    assert history[0]["images_per_s"] > 0
    assert (tmp_path / "bot_train.lst").read_text().count("\n") == 24
    assert (tmp_path / "bot_val.lst").read_text().count("\n") == 6
    assert (tmp_path / "bot_train.rec").stat().st_size > 0
    mean = ft.MeanImage.load(tmp_path / "mean.bin")
    assert mean.shape == (3, 48, 48) and 0 < mean.channel_mean[0] < 255
    assert (tmp_path / "train" / "checkpoints" / "last.ckpt").is_file()
    model = assert_model_dir(tmp_path / "model", 3, 48)
    assert model.preprocess.color == "BGR" and model.preprocess.mean_image is not None


def test_caltech101_transfer(tmp_path):
    results = run_example("caltech101_transfer", ["--out", tmp_path, "--per-class", 16, "--epochs", 2])
    for which in ("final", "best"):
        assert 0 <= results[which]["top1"] <= results[which]["top5"] <= 1
        report = ft.EvaluationReport.load(tmp_path / f"test_{which}.json")
        assert report.num_images == 40 and report.top1 == pytest.approx(results[which]["top1"])
        assert_model_dir(tmp_path / f"model_{which}", 10, 64)
    assert results["final"]["top5"] > 0.5  # chance is 0.5 with 10 classes
    for png in ("curves.png", "predictions.png", "gradcam.png", "gradcam_grid.png"):
        assert (tmp_path / png).stat().st_size > 1000, png
    history = json.loads((tmp_path / "train" / "history.json").read_text())
    assert 1 <= len(history) <= 2 and (tmp_path / "train.log").stat().st_size > 0
    predictor = ft.Predictor.load(tmp_path / "model_final", names=tmp_path / "zh.txt")
    top = predictor.predict(str(next((tmp_path / "images" / "Bag").iterdir())), top_k=5)[0]
    assert len(top.display) == 5 and all(not name.isascii() for name in top.display)


def test_inception_resnet_v2_flowers(tmp_path):
    result = run_example("inception_resnet_v2_flowers", ["--out", tmp_path, "--per-class", 10,
                                                          "--size", 75, "--batch-size", 9])
    assert result["total"] == 3 and 0 <= result["correct"] <= 3
    lines = (tmp_path / "train.lst").read_text().splitlines()
    labels = [float(line.split("\t")[1]) for line in lines]
    assert len(lines) == 27 and labels != sorted(labels)  # shuffled, the seed's first pitfall
    model = assert_model_dir(tmp_path / "model", 3, 75)
    # the training mean image travels with the saved model
    mean = ft.MeanImage.load(tmp_path / "mean.bin")
    np.testing.assert_allclose(model.preprocess.mean_image, mean.image, rtol=1e-5)


def test_caltech256_finetune(tmp_path):
    history = run_example("caltech256_finetune", ["--out", tmp_path, "--per-class", 3, "--epochs", 1,
                                                  "--size", 48, "--pack-size", 56])
    assert len(history) == 1 and 0 <= history[0]["val_top1"] <= 1
    assert (tmp_path / "checkpoint" / "lite0-symbol.json").is_file()
    assert (tmp_path / "train.lst").read_text().count("\n") == 30  # 3 per class
    assert (tmp_path / "val.lst").read_text().count("\n") == 30
    model = assert_model_dir(tmp_path / "model", 10, 48)
    assert model.num_classes == 10
    exported = ft.Backbone.from_checkpoint(tmp_path / "export" / "finetuned", 0,
                                           preprocess=model.preprocess)
    import mxnet as mx

    x = mx.nd.array(np.random.default_rng(1).normal(size=(2, 3, 48, 48)).astype("float32"))
    np.testing.assert_allclose(exported(x).asnumpy(), model(x).asnumpy(), rtol=1e-4, atol=1e-4)


def test_retrieval(tmp_path):
    table = run_example("retrieval", ["--out", tmp_path, "--configs", "flatten_fwd:,top_relu_fwd:gem+rmac",
                                      "--pca", 16, "--epochs", 2, "--size", 64])
    assert set(table) == {"flatten_fwd:-", "top_relu_fwd:gem+rmac"}
    for row in table.values():
        # 10 classes among ~60 images: random ranking gives an mAP near 0.1
        assert 0.15 < row["before"] <= 1 and 0 < row["after"] <= 1
    assert json.loads((tmp_path / "map.json").read_text()) == table
    counts = np.bincount(ft.RecordDataset(tmp_path / "train").labels.astype(int))
    assert len(counts) == 10 and (counts == counts[0]).all()  # balanced; the corrupt file left out
    assert_model_dir(tmp_path / "model", 10, 64)

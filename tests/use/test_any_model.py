"""Every consumer takes its model through create_model: a plain HybridBlock, a Caffe pair and a deployment
folder work in Predictor, evaluate, GradCAM, FeatureExtractor and the command line's model resolvers."""

import mxnet as mx
import numpy as np
import pytest

import finetune as ft

IMAGES = np.random.default_rng(0).integers(0, 255, (4, 20, 24, 3), dtype=np.uint8)


def _spatial_layer(model):
    pre = model.preprocess
    x = mx.nd.zeros((1, pre.channels, *pre.size))
    return next(n for n in model.layer_names if len(model.features(x, n)[0].shape) == 4)


def test_predictor(any_model_source):
    model = ft.create_model(any_model_source)
    probs = ft.Predictor(any_model_source, batch_size=3).predict_proba(IMAGES, color="RGB")
    assert probs.shape == (4, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    again = ft.Predictor(model).predict_proba(IMAGES, color="RGB")
    np.testing.assert_allclose(probs, again, rtol=1e-5, atol=1e-6)


def test_predictor_load_of_a_deployment(tmp_path):
    from tests.model_sources import CLASSES, deployment_folder, tiny_block

    folder = deployment_folder(tmp_path / "deploy")
    preds = ft.Predictor.load(folder).predict(IMAGES, top_k=1, color="RGB")
    expected = ft.Predictor(tiny_block()).predict(IMAGES, top_k=1, color="RGB")
    assert [p.name for p in preds] == [p.name for p in expected] and preds[0].name in CLASSES


def test_evaluate(any_model_source):
    labels = [0, 1, 2, 0]
    report = ft.evaluate(any_model_source, list(IMAGES), labels=labels, color="RGB", top_k=2)
    assert report.num_images == 4 and 0 <= report.top1 <= report.topk <= 1


def test_gradcam(any_model_source):
    cam = ft.GradCAM(any_model_source)
    result = cam(IMAGES[0], color="RGB")
    assert result.heatmap.shape == IMAGES[0].shape[:2]
    names = ft.create_model(any_model_source).class_names or ["0", "1", "2"]  # the Caffe net has no names
    assert result.class_name == names[result.class_index] and 0 <= result.heatmap.min() <= result.heatmap.max() <= 1


def test_feature_extractor(any_model_source):
    layer = _spatial_layer(ft.create_model(any_model_source))
    desc = ft.FeatureExtractor(any_model_source, layer, "max").extract(IMAGES)
    assert desc.shape[0] == 4 and np.allclose(np.linalg.norm(desc, axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("kind", ["deployment", "checkpoint"])
def test_cli_resolvers(kind, tmp_path):
    from tests.model_sources import source

    spec = source(kind, tmp_path)
    model = ft.create_model(spec, weights="imagenet")  # what the commands call with their --weights default
    assert isinstance(model, ft.ModelProtocol) and model.class_names == ["cat", "dog", "fish"]

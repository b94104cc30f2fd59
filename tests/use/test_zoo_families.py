"""Predictor, Grad-CAM and export across zoo architectures (random weights: no download)."""

import numpy as np
import pytest

import finetune as ft

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["resnet18_v1b", "mobilenetv3_small", "squeezenet1.1", "densenet121"])
def test_predict_gradcam_export_across_zoo_families(name, tmp_path):
    bb = ft.Backbone.from_zoo(name, weights=None)  # architectures only (no download here)
    image = np.random.default_rng(0).integers(0, 255, (180, 240, 3)).astype(np.uint8)
    pred = ft.Predictor(bb, batch_size=2).predict([image, image[::-1]], top_k=2, color="RGB")
    assert all(p.ok and len(p.indices) == 2 for p in pred)
    result = ft.GradCAM(bb)(image, color="RGB")
    assert result.heatmap.shape == (180, 240) and np.isfinite(result.heatmap).all()
    dep = ft.export_for_deployment(bb, tmp_path / name)
    assert dep.max_diff["mxnet"] < 1e-4

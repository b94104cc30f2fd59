import json

import numpy as np
import pytest

from finetune import Predictor, export_for_deployment, load_deployment
from finetune.deploy import verify_deployment
from finetune.errors import ModelError


def test_export_writes_files_and_verifies_them(tiny_model, tmp_path):
    dep = export_for_deployment(tiny_model, tmp_path / "dep", onnx=True)
    names = sorted(p.name for p in (tmp_path / "dep").iterdir())
    assert names == ["deploy.json", "model-0000.params", "model-preprocess.json", "model-symbol.json", "model.onnx"]
    assert set(dep.max_diff) == {"mxnet", "onnx"} and max(dep.max_diff.values()) < 1e-5
    manifest = json.loads((tmp_path / "dep" / "deploy.json").read_text())
    assert manifest["class_names"] == ["cat", "dog", "fish"] and manifest["input_shape"] == [1, 3, 16, 16]


def test_loaded_deployment_predicts_like_the_model(tiny_model, image_folder, tmp_path):
    export_for_deployment(tiny_model, tmp_path / "dep")
    paths = sorted(image_folder.rglob("*"))[:6]
    paths = [p for p in paths if p.is_file()]
    expected = Predictor(tiny_model).predict_proba(paths)
    np.testing.assert_allclose(Predictor.load(tmp_path / "dep").predict_proba(paths), expected, atol=1e-6)
    net = load_deployment(tmp_path / "dep")
    assert net.preprocess == tiny_model.preprocess and net.class_names == tiny_model.class_names


def test_verification_catches_a_disagreement(tiny_model, tmp_path):
    dep = export_for_deployment(tiny_model, tmp_path / "dep", onnx=True, verify=False)
    x = np.zeros((1, 3, 16, 16), np.float32)
    with pytest.raises(ModelError, match="differs from the original"):
        verify_deployment(dep, x, np.full((1, 3), 99.0))

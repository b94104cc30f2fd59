import json

import mxnet as mx
import numpy as np
import pytest

from finetune import Predictor, export_for_deployment, load_deployment
from finetune.use import verify_deployment
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


class _FlipPadNet(mx.gluon.HybridBlock):
    """Pads top/left through reverse-pad-reverse (a shape trick ONNX export cannot translate)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.conv = mx.gluon.nn.Conv2D(2, 3, strides=2, in_channels=3)
            self.fc = mx.gluon.nn.Dense(3, in_units=2)

    def hybrid_forward(self, F, x):
        flipped = F.reverse(x, axis=(2, 3))
        padded = F.Pad(flipped, mode="constant", pad_width=(0, 0, 0, 0, 0, 1, 0, 1))
        x = F.reverse(padded, axis=(2, 3))
        return self.fc(F.flatten(F.Pooling(self.conv(x), kernel=(1, 1), global_pool=True, pool_type="avg")))


def test_shape_tricks_are_folded_into_a_constant_pad_for_onnx(tmp_path):
    from finetune import Preprocess
    from finetune.use._deploy import _fold_padding

    net = _FlipPadNet(prefix="fp_")
    net.initialize()
    net.preprocess, net.class_names = Preprocess(size=(9, 9), resize=9), ["a", "b", "c"]
    sym = net(mx.sym.var("data"))
    folded, n = _fold_padding(sym, (1, 3, 9, 9))
    assert n == 1
    ops = [node["op"] for node in json.loads(folded.tojson())["nodes"]]
    assert "reverse" not in ops and ops.count("Pad") == 1
    pad = next(node for node in json.loads(folded.tojson())["nodes"] if node["op"] == "Pad")
    assert pad["attrs"]["pad_width"] == "(0, 0, 0, 0, 1, 0, 1, 0)"
    dep = export_for_deployment(net, tmp_path / "dep", onnx=True)
    assert dep.max_diff["onnx"] < 1e-5

import json
import os

import mxnet as mx
import numpy as np
import pytest

import finetune as ft
from finetune import Predictor, export_for_deployment, load_deployment
from finetune.errors import ConfigError, MissingFileError, ModelError
from finetune.testing import check_model
from finetune.use import verify_deployment
from tests.listing import listing


def test_export_writes_a_model_directory_with_runtime_files(tiny_model, tmp_path):
    dep = export_for_deployment(tiny_model, tmp_path / "dep", onnx=True)
    names = listing(tmp_path / "dep")
    assert names == ["config.json", "model-0000.params", "model-symbol.json", "model.onnx", "symbol.json"]
    assert set(dep.max_diff) == {"mxnet", "onnx"} and max(dep.max_diff.values()) < 1e-5
    config = json.loads((tmp_path / "dep" / "config.json").read_text())
    assert config["format"] == "finetune-model" and config["class"] == "Backbone"
    assert config["class_names"] == ["cat", "dog", "fish"]
    assert config["weights"] == "model-0000.params"  # the weights are stored once
    section = config["deployment"]
    assert section["symbol"] == "model-symbol.json" and section["onnx"] == "model.onnx"
    assert section["input_name"] == "data" and section["input_shape"] == [1, 3, 16, 16]
    assert section["max_diff"] == pytest.approx(dep.max_diff)
    assert dep.symbol == str(tmp_path / "dep" / "model-symbol.json")
    assert dep.preprocess == str(tmp_path / "dep" / "config.json")


def test_a_deployment_folder_loads_as_the_model_it_was(tiny_model, tmp_path):
    bb = ft.create_model("mobilenet0.25", weights=None)
    model = ft.HeadReplacer(3).apply(bb, class_names=["a", "b", "c"])
    dep = export_for_deployment(model, tmp_path / "dep")
    x = mx.nd.array(np.random.default_rng(0).normal(size=(2, 3, 64, 64)))
    again = ft.load_model(dep.directory)
    assert isinstance(again, ft.Model) and again.class_names == ["a", "b", "c"]
    assert again.head_spec == model.head_spec and again.preprocess == model.preprocess
    np.testing.assert_array_equal(again(x).asnumpy(), model(x).asnumpy())
    np.testing.assert_allclose(load_deployment(dep.directory)(x).asnumpy(), model(x).asnumpy(), rtol=1e-5, atol=1e-5)
    assert type(ft.create_model(dep.directory)) is ft.Model
    check_model(again)


def test_export_keeps_the_class_names_in_the_symbol_file(tiny_model, tmp_path):
    from finetune.models._io._modeldir import symbol_class_names

    dep = export_for_deployment(ft.create_model(tiny_model), tmp_path / "dep")
    assert symbol_class_names(dep.symbol) == ["cat", "dog", "fish"]
    sym, args, aux = mx.model.load_checkpoint(str(tmp_path / "dep" / "model"), 0)  # plain MXNet still reads it
    assert "data" in sym.list_arguments() and args


def test_a_mean_image_is_stored_once(tmp_path):
    from tests.model_sources import tiny_block

    net = tiny_block()
    net.preprocess = ft.Preprocess(size=(16, 16), resize=16,
                                   mean_image=np.full((3, 16, 16), 100, np.float32), std=(64, 64, 64))
    dep = export_for_deployment(net, tmp_path / "dep")
    names = listing(tmp_path / "dep")
    assert names == ["config.json", "mean_image.npy", "model-0000.params", "model-symbol.json", "symbol.json"]
    assert load_deployment(dep.directory).preprocess == net.preprocess
    assert ft.load_model(dep.directory).preprocess == net.preprocess


def test_export_replaces_a_deployment_but_not_other_folders(tiny_model, tmp_path):
    from tests.model_sources import legacy_deployment_folder

    legacy = legacy_deployment_folder(tmp_path / "old")
    export_for_deployment(tiny_model, legacy)  # the earlier layout is replaced as a whole
    assert "deploy.json" not in os.listdir(legacy) and "model-preprocess.json" not in os.listdir(legacy)
    assert ft.load_model(legacy).class_names == ["cat", "dog", "fish"]
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "keep.jpg").write_bytes(b"x")
    with pytest.raises(ConfigError, match="'keep.jpg', which finetune did not write"):
        export_for_deployment(tiny_model, tmp_path / "photos")
    assert os.listdir(tmp_path / "photos") == ["keep.jpg"]
    with pytest.raises(ConfigError, match="plain file name"):
        export_for_deployment(tiny_model, tmp_path / "dep", name="../model")


def test_deployment_folders_of_the_earlier_layout_still_load(tiny_model, image_folder, tmp_path):
    from tests.model_sources import legacy_deployment_folder

    folder = legacy_deployment_folder(tmp_path / "legacy", tiny_model, onnx=True)
    x = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)
    expected = tiny_model(mx.nd.array(x)).asnumpy()
    for load in (ft.load_model, ft.create_model, load_deployment):
        net = load(folder)
        np.testing.assert_allclose(net(mx.nd.array(x)).asnumpy(), expected, rtol=1e-5, atol=1e-6)
        assert net.class_names == ["cat", "dog", "fish"] and net.preprocess == tiny_model.preprocess
    diffs = verify_deployment(folder, x, expected)
    assert set(diffs) == {"mxnet", "onnx"} and max(diffs.values()) < 1e-5
    from finetune.models._io._deployment import read_deployment

    with pytest.warns(FutureWarning, match=r"earlier layout, read until finetune 0\.3\.0; .*finetune export"):
        dep = read_deployment(folder)
    assert dep.onnx == os.path.join(folder, "model.onnx") and dep.preprocess.endswith("model-preprocess.json")
    paths = [p for p in sorted(image_folder.rglob("*")) if p.is_file()][:4]
    np.testing.assert_allclose(Predictor.load(folder).predict_proba(paths),
                               Predictor(tiny_model).predict_proba(paths), atol=1e-6)
    check_model(ft.load_model(folder))


def test_loaded_deployment_predicts_like_the_model(tiny_model, image_folder, tmp_path):
    export_for_deployment(tiny_model, tmp_path / "dep")
    paths = sorted(image_folder.rglob("*"))[:6]
    paths = [p for p in paths if p.is_file()]
    expected = Predictor(tiny_model).predict_proba(paths)
    np.testing.assert_allclose(Predictor.load(tmp_path / "dep").predict_proba(paths), expected, atol=1e-6)
    net = load_deployment(tmp_path / "dep")
    assert net.preprocess == tiny_model.preprocess and net.class_names == tiny_model.class_names
    check_model(ft.load_model(tmp_path / "dep"))


def test_a_plain_model_directory_is_not_a_deployment(tiny_model, tmp_path):
    folder = ft.create_model(tiny_model).save(tmp_path / "m")
    with pytest.raises(MissingFileError, match="not a deployment folder"):
        load_deployment(folder)


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
    from finetune.models.graph import fold_padding

    net = _FlipPadNet(prefix="fp_")
    net.initialize()
    net.preprocess, net.class_names, net.inference = Preprocess(size=(9, 9), resize=9), ["a", "b", "c"], ft.Inference()
    sym = net(mx.sym.var("data"))
    folded, n = fold_padding(sym, (1, 3, 9, 9))
    assert n == 1
    ops = [node["op"] for node in json.loads(folded.tojson())["nodes"]]
    assert "reverse" not in ops and ops.count("Pad") == 1
    pad = next(node for node in json.loads(folded.tojson())["nodes"] if node["op"] == "Pad")
    assert pad["attrs"]["pad_width"] == "(0, 0, 0, 0, 1, 0, 1, 0)"
    dep = export_for_deployment(net, tmp_path / "dep", onnx=True)
    assert dep.max_diff["onnx"] < 1e-5

"""``finetune convert-caffe`` on a tiny hand-written V1 model."""

from __future__ import annotations

import json

import mxnet as mx
import numpy as np

from finetune.cli import main
from finetune.data import Preprocess
from finetune.models.caffe import convert_caffe

from .test_caffe_convert import V1_BLOBS, V1_PROTOTXT, V1_TYPES, _write
from .test_caffe_encoder import binaryproto_bytes


def test_convert_caffe_writes_checkpoint_and_model_dir(tmp_path, capsys):
    proto, model = _write(tmp_path, V1_PROTOTXT, V1_BLOBS, V1_TYPES, v1=True)
    out = tmp_path / "out"
    code = main(["convert-caffe", str(proto), str(model), "--out", str(out), "--mean", "104,117,123"])
    assert code == 0
    printed = capsys.readouterr().out.split()
    assert str(out / "model-symbol.json") in printed and str(out / "model") in printed
    sym, args, aux = mx.model.load_checkpoint(str(out / "model"), 0)
    pre = Preprocess.load(out / "model-preprocess.json")
    assert pre.color == "BGR" and pre.mean == (104.0, 117.0, 123.0)
    meta = json.loads((out / "model-caffe.json").read_text())
    assert meta["logits_layer"] == "fc2" and meta["output_is_softmax"] is True
    # the checkpoint computes what the converter does
    net = convert_caffe(proto, model)
    x = np.random.default_rng(0).uniform(-9, 9, (2, 3, 20, 20)).astype(np.float32)
    exe = sym.bind(mx.cpu(), args=dict(args, data=mx.nd.array(x)), aux_states=aux, grad_req="null")
    np.testing.assert_allclose(exe.forward()[0].asnumpy(), net.forward(x)[0], rtol=1e-5, atol=1e-7)
    # and the model directory loads as a finetune model giving the logits
    from finetune.models import load_model

    loaded = load_model(out / "model")
    assert loaded.preprocess == pre
    logits = loaded(mx.nd.array(x)).asnumpy()
    np.testing.assert_allclose(logits, net.forward(x, layers=["fc2"])[0], rtol=1e-4, atol=1e-5)


def test_convert_caffe_mean_file_prefix_and_only_checkpoint(tmp_path):
    proto, model = _write(tmp_path, V1_PROTOTXT, V1_BLOBS, V1_TYPES, v1=True)
    mean = np.full((3, 22, 22), 7.0, np.float32)
    (tmp_path / "mean.binaryproto").write_bytes(binaryproto_bytes(mean))
    code = main(["convert-caffe", str(proto), str(model), "--out", str(tmp_path / "o"), "--prefix", "tiny",
                 "--mean-file", str(tmp_path / "mean.binaryproto"), "--to-rgb", "--no-model-dir"])
    assert code == 0
    pre = Preprocess.load(tmp_path / "o" / "tiny-preprocess.json")
    assert pre.color == "RGB" and pre.mean_image.shape == (3, 22, 22)
    assert not (tmp_path / "o" / "model").exists()


def test_convert_caffe_user_errors_exit_1(tmp_path, capsys):
    proto, model = _write(tmp_path, V1_PROTOTXT, V1_BLOBS, V1_TYPES, v1=True)
    assert main(["convert-caffe", str(proto), str(model), "--out", str(tmp_path / "o"), "--mean", "a,b"]) == 1
    assert "--mean" in capsys.readouterr().err
    assert main(["convert-caffe", str(proto), str(tmp_path / "x.caffemodel"), "--out", str(tmp_path)]) == 1
    assert "x.caffemodel" in capsys.readouterr().err
    assert main(["convert-caffe", str(proto), str(model), "--out", str(tmp_path), "--input-shape", "3,20"]) == 1
    assert "--input-shape" in capsys.readouterr().err

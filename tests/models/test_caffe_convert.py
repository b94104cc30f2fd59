"""Caffe conversion of hand-written networks, checked layer by layer against OpenCV's Caffe runtime.

The caffemodels are written by the tiny encoder in ``test_caffe_encoder.py``;
OpenCV (``cv2.dnn.readNetFromCaffe``) is an independent implementation of
Caffe's semantics, so agreement at every layer output means the conversion
(pooling sizes, AVE-pool padding, BatchNorm scale factor, Eltwise ops, LRN,
transposed InnerProduct, ...) is right.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from finetune.errors import (CaffeFormatError, ConfigError, MissingFileError, ModelError,
                             UnknownNameError, UnsupportedLayerError)
from finetune.models.caffe import CaffeNet, convert_caffe
from finetune.models.caffe._proto import parse_prototxt

from .test_caffe_encoder import binaryproto_bytes, caffemodel_bytes

V1_PROTOTXT = """\
name: "tiny_v1"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 20 input_dim: 20
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }   # 20 -> 10: Caffe rounds up
layers { name: "norm1" type: LRN bottom: "pool1" top: "norm1"
  lrn_param { local_size: 5 alpha: 0.01 beta: 0.75 } }
layers { name: "conv2a" type: CONVOLUTION bottom: "norm1" top: "conv2a"
  convolution_param { num_output: 6 kernel_size: 1 } }
layers { name: "conv2b" type: CONVOLUTION bottom: "norm1" top: "conv2b"
  convolution_param { num_output: 6 kernel_size: 3 pad: 1 group: 2 } }
layers { name: "prod" type: ELTWISE bottom: "conv2a" bottom: "conv2b" top: "prod"
  eltwise_param { operation: PROD } }
layers { name: "max" type: ELTWISE bottom: "conv2a" bottom: "conv2b" top: "max"
  eltwise_param { operation: MAX } }
layers { name: "sum" type: ELTWISE bottom: "conv2a" bottom: "conv2b" top: "sum"
  eltwise_param { operation: SUM coeff: 0.5 coeff: -1 } }
layers { name: "cat" type: CONCAT bottom: "prod" bottom: "max" bottom: "sum" top: "cat" }
layers { name: "pool2" type: POOLING bottom: "cat" top: "pool2"
  pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layers { name: "fc1" type: INNER_PRODUCT bottom: "pool2" top: "fc1"
  inner_product_param { num_output: 10 } }
layers { name: "relu2" type: RELU bottom: "fc1" top: "fc1" }
layers { name: "drop1" type: DROPOUT bottom: "fc1" top: "fc1" dropout_param { dropout_ratio: 0.5 } }
layers { name: "fc2" type: INNER_PRODUCT bottom: "fc1" top: "fc2"
  inner_product_param { num_output: 4 } }
layers { name: "prob" type: SOFTMAX bottom: "fc2" top: "prob" }
"""
V1_BLOBS = {"conv1": [(8, 3, 3, 3), (8,)], "conv2a": [(6, 8, 1, 1), (6,)],
            "conv2b": [(6, 4, 3, 3), (6,)], "fc1": [(10, 18 * 6 * 6), (10,)], "fc2": [(4, 10), (4,)]}
V1_TYPES = {"conv1": "Convolution", "conv2a": "Convolution", "conv2b": "Convolution",
            "fc1": "InnerProduct", "fc2": "InnerProduct"}

NEW_PROTOTXT = """\
name: "every_type"
layer { name: "input" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 17 dim: 19 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 8 kernel_h: 3 kernel_w: 5 pad_h: 1 pad_w: 2
                            stride_h: 1 stride_w: 2 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1"
        batch_norm_param { use_global_stats: true eps: 0.001 } }
layer { name: "affine" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "lrelu" type: "ReLU" bottom: "conv1" top: "conv1" relu_param { negative_slope: 0.1 } }
layer { name: "split" type: "Split" bottom: "conv1" top: "a" top: "b" }
layer { name: "conv2" type: "Convolution" bottom: "a" top: "conv2"
        convolution_param { num_output: 8 kernel_size: 3 pad: 2 dilation: 2 group: 2 bias_term: false } }
layer { name: "sig" type: "Sigmoid" bottom: "conv2" top: "sig" }
layer { name: "tanh" type: "TanH" bottom: "b" top: "tanh" }
layer { name: "esum" type: "Eltwise" bottom: "sig" bottom: "tanh" top: "esum"
        eltwise_param { operation: SUM coeff: 0.5 coeff: -1.0 } }
layer { name: "eprod" type: "Eltwise" bottom: "sig" bottom: "tanh" top: "eprod"
        eltwise_param { operation: PROD } }
layer { name: "emax" type: "Eltwise" bottom: "sig" bottom: "tanh" bottom: "esum" top: "emax"
        eltwise_param { operation: MAX } }
layer { name: "gain" type: "Scale" bottom: "emax" top: "emax" }
layer { name: "cat" type: "Concat" bottom: "esum" bottom: "eprod" bottom: "emax" top: "cat"
        concat_param { axis: 1 } }
layer { name: "norm" type: "LRN" bottom: "cat" top: "norm"
        lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 1 norm_region: ACROSS_CHANNELS } }
layer { name: "pool1" type: "Pooling" bottom: "norm" top: "pool1"
        pooling_param { pool: AVE kernel_size: 3 stride: 3 pad: 1 } }  # 17x10 -> 6x4 (a clipped row)
layer { name: "pool2" type: "Pooling" bottom: "pool1" top: "pool2"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "absval" type: "AbsVal" bottom: "pool2" top: "pool2" }
layer { name: "gpool" type: "Pooling" bottom: "pool1" top: "gpool"
        pooling_param { pool: AVE global_pooling: true } }
layer { name: "power" type: "Power" bottom: "gpool" top: "power"
        power_param { power: 2 scale: 0.5 shift: 1 } }
layer { name: "flat" type: "Flatten" bottom: "pool2" top: "flat" }
layer { name: "gflat" type: "Flatten" bottom: "power" top: "gflat" }
layer { name: "fcat" type: "Concat" bottom: "flat" bottom: "gflat" top: "fcat" }
layer { name: "fc1" type: "InnerProduct" bottom: "fcat" top: "fc1"
        inner_product_param { num_output: 12 transpose: false } }
layer { name: "drop" type: "Dropout" bottom: "fc1" top: "fc1" }
layer { name: "relu2" type: "ReLU" bottom: "fc1" top: "fc1" }
layer { name: "fc2" type: "InnerProduct" bottom: "fc1" top: "fc2" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc2" top: "prob" }
"""
NEW_BLOBS = {"conv1": [(8, 3, 3, 5), (8,)], "bn1": [(8,), (8,), (1,)], "affine": [(8,), (8,)],
             "conv2": [(8, 4, 3, 3)], "gain": [(8,)], "fc1": [(12, 24 * 3 * 2 + 24), (12,)],
             "fc2": [(5, 12), (5,)]}
NEW_TYPES = {"conv1": "Convolution", "bn1": "BatchNorm", "affine": "Scale", "conv2": "Convolution",
             "gain": "Scale", "fc1": "InnerProduct", "fc2": "InnerProduct"}


def _blobs(spec, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for name, shapes in spec.items():
        if name.startswith("bn"):
            s = 4.0  # Caffe stores mean*s, var*s, s
            out[name] = [rng.normal(0, 0.5, shapes[0]) * s, rng.uniform(0.5, 2, shapes[1]) * s,
                         np.array([s])]
        else:
            out[name] = [rng.normal(0, 0.4, shape) for shape in shapes]
    return out


def _write(tmp_path, prototxt, spec, types, *, v1=False, extra=()):
    proto = tmp_path / "deploy.prototxt"
    proto.write_text(prototxt)
    blobs = _blobs(spec)
    # training-only layers the deploy file lacks, and layer order unlike the prototxt's
    layers = [("data", "Data", []), *extra] + [(n, types[n], blobs[n]) for n in reversed(list(spec))]
    model = tmp_path / "model.caffemodel"
    model.write_bytes(caffemodel_bytes(layers, v1=v1, legacy_blobs=v1))
    return proto, model


def _opencv(proto, model, x, names):
    net = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.enableFusion(False)
    net.setInput(x)
    return net.forward(names)


def _assert_close(ours, ref, name, rtol=1e-4):
    assert ours.shape == ref.shape, f"{name}: {ours.shape} vs OpenCV {ref.shape}"
    diff = float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-12))
    assert diff < rtol, f"{name}: max relative difference {diff:.2e} vs OpenCV"


def _check_every_layer(net, proto, model, seed=0):
    x = np.random.default_rng(seed).uniform(-50, 50, net.input_shape).astype(np.float32)
    x = np.concatenate([x, -x * 0.5])
    names = [n for n in net.layer_names if n not in ("split",)]
    ours = net.forward(x, layers=names)
    ref = _opencv(proto, model, x, names)
    for name, a, b in zip(names, ours, ref):
        _assert_close(a, b.reshape(a.shape) if a.size == b.size else b, name)
    return dict(zip(names, ours))


def test_v1_network_matches_opencv_at_every_layer(tmp_path):
    proto, model = _write(tmp_path, V1_PROTOTXT, V1_BLOBS, V1_TYPES, v1=True)
    assert parse_prototxt(proto).format == "V1"
    net = convert_caffe(proto, model)
    outs = _check_every_layer(net, proto, model)
    assert outs["pool1"].shape == (2, 8, 10, 10)  # rounded up, like Caffe
    assert outs["pool2"].shape == (2, 18, 6, 6)
    assert net.classifier == "fc2" and net.logits_layer == "fc2" and net.output_is_softmax
    assert net.num_features == 10
    assert net.layer_types["prod"] == "Eltwise" and net.layer_types["relu2"] == "ReLU"


def test_v1_eltwise_prod_and_max_are_not_sums(tmp_path):
    # MXNet's stock converter turns every Eltwise into broadcast_add
    proto, model = _write(tmp_path, V1_PROTOTXT, V1_BLOBS, V1_TYPES, v1=True)
    net = convert_caffe(proto, model)
    x = np.random.default_rng(3).uniform(-50, 50, net.input_shape).astype(np.float32)
    a, b, prod, mx_, sum_ = net.forward(x, layers=["conv2a", "conv2b", "prod", "max", "sum"])
    np.testing.assert_allclose(prod, a * b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mx_, np.maximum(a, b), rtol=1e-6)
    np.testing.assert_allclose(sum_, 0.5 * a - b, rtol=1e-5, atol=1e-5)


def test_new_format_with_every_type_matches_opencv(tmp_path):
    extra = [("loss", "SoftmaxWithLoss", []), ("accuracy", "Accuracy", [])]
    proto, model = _write(tmp_path, NEW_PROTOTXT, NEW_BLOBS, NEW_TYPES, extra=extra)
    net = convert_caffe(proto, model)
    outs = _check_every_layer(net, proto, model)
    assert outs["pool1"].shape == (2, 24, 6, 4)  # Caffe's clipped last row
    # in-place chains stay reachable: conv1 (raw) -> bn1 -> affine -> lrelu
    assert not np.allclose(outs["conv1"], outs["lrelu"])
    assert (outs["lrelu"] < 0).any() and (outs["fc1"] < 0).any() and (outs["relu2"] >= 0).all()
    assert net.layer_names[:5] == ["conv1", "bn1", "affine", "lrelu", "split"]
    assert net.classifier == "fc2" and net.logits_layer == "fc2" and net.num_features == 12
    assert net.preprocess.color == "BGR" and net.preprocess.size == (17, 19)
    assert net.preprocess.mean == (0.0, 0.0, 0.0) and net.preprocess.std == (1.0, 1.0, 1.0)


def test_lrn_k_follows_caffe_formula(tmp_path):
    # OpenCV 4.11 ignores Caffe's LRN 'k' (uses 1), so k != 1 is checked against the formula
    proto, model = _write(tmp_path, NEW_PROTOTXT.replace("beta: 0.75 k: 1", "beta: 0.75 k: 2"),
                          NEW_BLOBS, NEW_TYPES)
    net = convert_caffe(proto, model)
    x = np.random.default_rng(0).uniform(-50, 50, net.input_shape).astype(np.float32)
    cat, norm = net.forward(x, layers=["cat", "norm"])
    squares = np.pad(cat ** 2, ((0, 0), (1, 1), (0, 0), (0, 0)))
    window = squares[:, :-2] + squares[:, 1:-1] + squares[:, 2:]
    np.testing.assert_allclose(norm, cat / (2 + 0.5 / 3 * window) ** 0.75, rtol=1e-5, atol=1e-6)


def test_inner_product_transpose_follows_caffe(tmp_path):
    # Caffe stores a transposed InnerProduct weight as (inputs, outputs) and computes x @ W;
    # OpenCV 4.11 ignores 'transpose', so this is checked against the formula
    spec = dict(NEW_BLOBS, fc1=[(24 * 3 * 2 + 24, 12), (12,)])
    proto, model = _write(tmp_path, NEW_PROTOTXT.replace("transpose: false", "transpose: true"),
                          spec, NEW_TYPES)
    net = convert_caffe(proto, model)
    x = np.random.default_rng(0).uniform(-50, 50, net.input_shape).astype(np.float32)
    fcat, fc1 = net.forward(x, layers=["fcat", "fc1"])
    weight, bias = _blobs(spec)["fc1"]
    np.testing.assert_allclose(fc1, fcat @ weight + bias, rtol=1e-4, atol=1e-4)


def test_batchnorm_divides_by_scale_factor_and_scale_needs_no_name_match(tmp_path):
    proto, model = _write(tmp_path, NEW_PROTOTXT, NEW_BLOBS, NEW_TYPES)
    net = convert_caffe(proto, model)
    blobs = _blobs(NEW_BLOBS)
    np.testing.assert_allclose(net.aux_params["bn1_moving_mean"].asnumpy(), blobs["bn1"][0] / 4, rtol=1e-6)
    np.testing.assert_allclose(net.aux_params["bn1_moving_var"].asnumpy(), blobs["bn1"][1] / 4, rtol=1e-6)
    assert net.arg_params["affine_gamma"].shape == (1, 8, 1, 1)
    assert net.arg_params["gain_gamma"].shape == (1, 8, 1, 1) and "gain_beta" not in net.arg_params


def test_to_rgb_is_equivalent(tmp_path):
    proto, model = _write(tmp_path, NEW_PROTOTXT, NEW_BLOBS, NEW_TYPES)
    bgr = convert_caffe(proto, model, mean=(104, 117, 123))
    rgb = convert_caffe(proto, model, mean=(104, 117, 123), to_rgb=True)
    assert (bgr.preprocess.color, rgb.preprocess.color) == ("BGR", "RGB")
    assert rgb.preprocess.mean == (123.0, 117.0, 104.0)
    image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)  # RGB
    x_bgr = bgr.preprocess.transform(image, color="RGB")[None]
    x_rgb = rgb.preprocess.transform(image, color="RGB")[None]
    np.testing.assert_array_equal(x_rgb, x_bgr[:, ::-1])
    np.testing.assert_allclose(rgb.forward(x_rgb)[0], bgr.forward(x_bgr)[0], rtol=1e-5, atol=1e-7)
    assert "data_rgb_to_bgr" not in rgb.symbol.tojson()  # plain weight flip of conv1


def test_to_rgb_with_a_non_convolution_reading_the_input(tmp_path):
    proto = tmp_path / "deploy.prototxt"
    proto.write_text("""
input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "data" bottom: "conv" top: "sum" }
""")
    model = tmp_path / "m.caffemodel"
    model.write_bytes(caffemodel_bytes([("conv", "Convolution", [np.eye(3).reshape(3, 3, 1, 1) * 2,
                                                                 np.arange(3.0)])]))
    bgr, rgb = convert_caffe(proto, model), convert_caffe(proto, model, to_rgb=True)
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(rgb.forward(x[:, ::-1])[0], bgr.forward(x)[0], rtol=1e-6)
    assert "data_rgb_to_bgr" in rgb.symbol.tojson()


def test_mean_from_transform_param_and_mean_file(tmp_path):
    proto, model = _write(tmp_path, V1_PROTOTXT, V1_BLOBS, V1_TYPES, v1=True)
    text = V1_PROTOTXT.replace('input: "data"\ninput_dim: 1 input_dim: 3 input_dim: 20 input_dim: 20\n', """
layers { name: "data" type: DATA top: "data" top: "label"
  transform_param { crop_size: 20 mean_value: 104 mean_value: 117 mean_value: 123 scale: 0.5 } }
""")
    proto.write_text(text)
    net = convert_caffe(proto, model)
    assert net.preprocess.mean == (104.0, 117.0, 123.0) and net.preprocess.scale == 0.5
    assert net.input_shape == (1, 3, 20, 20)
    mean_image = np.random.default_rng(0).uniform(0, 255, (3, 24, 24)).astype(np.float32)
    (tmp_path / "mean.binaryproto").write_bytes(binaryproto_bytes(mean_image))
    net = convert_caffe(proto, model, mean_file=tmp_path / "mean.binaryproto")
    np.testing.assert_array_equal(net.preprocess.mean_image, mean_image)
    net = convert_caffe(proto, model, mean=(1, 2, 3))
    assert net.preprocess.mean == (1.0, 2.0, 3.0)


def test_caffenet_repr_and_save(tmp_path):
    import mxnet as mx

    proto, model = _write(tmp_path, V1_PROTOTXT, V1_BLOBS, V1_TYPES, v1=True)
    net = convert_caffe(proto, model)
    assert repr(net) == ("CaffeNet(name='tiny_v1', layers=16, input_shape=(1, 3, 20, 20), "
                         "classifier='fc2', logits_layer='fc2', output_is_softmax=True)")
    assert isinstance(net, CaffeNet)
    with pytest.raises(UnknownNameError, match="'relu'. Did you mean 'relu2' or 'relu1'"):
        net.forward(np.zeros(net.input_shape, np.float32), layers=["relu"])
    paths = net.save(tmp_path / "out" / "tiny")
    sym, args, aux = mx.model.load_checkpoint(str(tmp_path / "out" / "tiny"), 0)
    assert set(args) == set(net.arg_params) and sym.list_outputs() == net.symbol.list_outputs()
    assert all(p.endswith(s) for p, s in zip(paths, ["-symbol.json", "-0000.params",
                                                     "-preprocess.json", "-caffe.json"]))


# ------------------------------------------------------------------ errors
def test_unsupported_layer_names_layer_and_type(tmp_path):
    proto, model = _write(tmp_path, NEW_PROTOTXT.replace('name: "tanh" type: "TanH"',
                                                         'name: "tanh" type: "ROIPooling"'),
                          NEW_BLOBS, NEW_TYPES)
    with pytest.raises(UnsupportedLayerError, match=r"'tanh'.*'ROIPooling'"):
        convert_caffe(proto, model)
    proto.write_text(NEW_PROTOTXT.replace("pool: AVE kernel_size: 3 stride: 3", "pool: STOCHASTIC kernel_size: 3 stride: 3"))
    with pytest.raises(UnsupportedLayerError, match="pool1.*STOCHASTIC"):
        convert_caffe(proto, model)


@pytest.mark.parametrize("text, where", [
    ('layer { name: "a" type: "ReLU" bottom: "data" top: "a"\n', "line 1.*never closed"),
    ('input: "data"\nlayer { name: "a" type: "ReLU" bottom: "data" top "a" }', "line 2.*expected ':'"),
    ('input: "data"\n\nlayer { name: "a" type: "ReLU" } }', "line 3.*field name"),
    ('input: "data"\nlayer { name: "a" type: "ReLU" bottom: @ }', "line 2.*unexpected character"),
    ('layer { type: "ReLU" }', "line 1.*no 'name'"),
    ('layer { name: "x" }', "line 1.*no 'type'"),
    ('layers { name: "x" type: FROBNICATE }', "unknown V1 type"),
])
def test_malformed_prototxt_raises_with_line(tmp_path, text, where):
    proto = tmp_path / "bad.prototxt"
    proto.write_text(text)
    with pytest.raises(CaffeFormatError, match=where):
        parse_prototxt(proto)


def test_wrong_field_values_raise(tmp_path):
    _, model = _write(tmp_path, NEW_PROTOTXT, NEW_BLOBS, NEW_TYPES)
    proto = tmp_path / "bad.prototxt"
    proto.write_text(NEW_PROTOTXT.replace("num_output: 12 transpose: false", 'num_output: "twelve"'))
    with pytest.raises(CaffeFormatError, match="'fc1'.*num_output.*twelve"):
        convert_caffe(proto, model)
    proto.write_text(NEW_PROTOTXT.replace("operation: PROD", "operation: MEDIAN"))
    with pytest.raises(CaffeFormatError, match="eprod.*operation"):
        convert_caffe(proto, model)
    proto.write_text(NEW_PROTOTXT.replace('bottom: "sig" bottom: "tanh" top: "eprod"',
                                          'bottom: "sig" bottom: "nothere" top: "eprod"'))
    with pytest.raises(CaffeFormatError, match="nothere"):
        convert_caffe(proto, model)


def test_weights_missing_or_wrong_size_raise(tmp_path):
    proto, model = _write(tmp_path, V1_PROTOTXT, {k: v for k, v in V1_BLOBS.items() if k != "fc2"},
                          V1_TYPES, v1=True)
    with pytest.raises(CaffeFormatError, match="no weights for layer 'fc2'"):
        convert_caffe(proto, model)
    proto, model = _write(tmp_path, V1_PROTOTXT, dict(V1_BLOBS, fc2=[(4, 9), (4,)]), V1_TYPES, v1=True)
    with pytest.raises(CaffeFormatError, match="'fc2'.*36 values.*needs shape"):
        convert_caffe(proto, model)


def test_missing_files_and_bad_input_shape(tmp_path):
    proto, model = _write(tmp_path, V1_PROTOTXT, V1_BLOBS, V1_TYPES, v1=True)
    with pytest.raises(MissingFileError, match="nope.prototxt"):
        convert_caffe(tmp_path / "nope.prototxt", model)
    with pytest.raises(MissingFileError, match="nope.caffemodel"):
        convert_caffe(proto, tmp_path / "nope.caffemodel")
    with pytest.raises(ConfigError, match="input_shape"):
        convert_caffe(proto, model, input_shape=(3, 20))
    assert convert_caffe(proto, model, input_shape=(2, 3, 20, 20)).input_shape == (1, 3, 20, 20)
    assert issubclass(CaffeFormatError, ModelError) and issubclass(CaffeFormatError, ValueError)


GOOGLENET_NAMES = """\
input: "data" input_dim: 1 input_dim: 3 input_dim: 9 input_dim: 9
layer { name: "conv1/7x7_s2" type: "Convolution" bottom: "data" top: "conv1/7x7_s2"
        convolution_param { num_output: 4 kernel_size: 3 stride: 2 } }
layer { name: "conv1/relu_7x7" type: "ReLU" bottom: "conv1/7x7_s2" top: "conv1/7x7_s2" }
layer { name: "bn-1" type: "BatchNorm" bottom: "conv1/7x7_s2" top: "conv1/7x7_s2"
        batch_norm_param { eps: 1e-7 } }
layer { name: "loss3/classifier" type: "InnerProduct" bottom: "conv1/7x7_s2" top: "loss3/classifier"
        inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "loss3/classifier" top: "prob" }
"""


def test_layer_names_with_slashes_and_tiny_eps(tmp_path):
    import mxnet as mx

    proto = tmp_path / "deploy.prototxt"
    proto.write_text(GOOGLENET_NAMES)
    rng = np.random.default_rng(0)
    model = tmp_path / "m.caffemodel"
    model.write_bytes(caffemodel_bytes([
        ("conv1/7x7_s2", "Convolution", [rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)]),
        ("bn-1", "BatchNorm", [rng.normal(size=4), rng.uniform(1e-6, 2e-6, size=4), np.array([1.0])]),
        ("loss3/classifier", "InnerProduct", [rng.normal(size=(3, 64)), rng.normal(size=3)])]))
    net = convert_caffe(proto, model)
    assert net.layer_names == ["conv1/7x7_s2", "conv1/relu_7x7", "bn-1", "loss3/classifier", "prob"]
    assert net.logits_layer == "loss3/classifier" and net.num_features == 64
    x = rng.normal(size=(2, 3, 9, 9)).astype(np.float32)
    names = ["conv1/relu_7x7", "bn-1", "loss3/classifier"]
    for name, a, b in zip(names, net.forward(x, layers=names), _opencv(proto, model, x, names)):
        _assert_close(a, b, name)  # eps 1e-7 < cuDNN's 1e-5 minimum: folded into the variance
    net.save(tmp_path / "g")
    sym, args, aux = mx.model.load_checkpoint(str(tmp_path / "g"), 0)
    assert "loss3/classifier_weight" in args and "bn-1_moving_var" in aux


def test_prelu_per_channel_and_shared_match_opencv(tmp_path):
    proto = tmp_path / "deploy.prototxt"
    proto.write_text("""
input: "data" input_dim: 1 input_dim: 3 input_dim: 6 input_dim: 6
layer { name: "p1" type: "PReLU" bottom: "data" top: "p1" }
layer { name: "p2" type: "PReLU" bottom: "p1" top: "p2" prelu_param { channel_shared: true } }
""")
    rng = np.random.default_rng(0)
    model = tmp_path / "m.caffemodel"
    model.write_bytes(caffemodel_bytes([("p1", "PReLU", [rng.normal(size=3)]),
                                        ("p2", "PReLU", [np.array([0.3])])]))
    net = convert_caffe(proto, model)
    x = rng.normal(size=(2, 3, 6, 6)).astype(np.float32)
    for name, a, b in zip(["p1", "p2"], net.forward(x, layers=["p1", "p2"]),
                          _opencv(proto, model, x, ["p1", "p2"])):
        _assert_close(a, b, name)
    assert net.arg_params["p2_gamma"].shape == (1,)


def test_train_val_prototxt_and_duplicate_names(tmp_path):
    proto, model = _write(tmp_path, NEW_PROTOTXT, NEW_BLOBS, NEW_TYPES)
    train_val = NEW_PROTOTXT.replace(
        'layer { name: "input" type: "Input" top: "data"\n        input_param { shape { dim: 1 dim: 3 dim: 17 dim: 19 } } }',
        """layer { name: "train" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        transform_param { crop_size: 99 mirror: true } data_param { source: "train_lmdb" batch_size: 64 } }
layer { name: "val" type: "Data" top: "data" top: "label" include { phase: TEST }
        transform_param { mean_value: 104 mean_value: 117 mean_value: 123 } }""").replace(
        'layer { name: "prob" type: "Softmax" bottom: "fc2" top: "prob" }',
        """layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc2" bottom: "label" top: "loss" }
layer { name: "accuracy" type: "Accuracy" bottom: "fc2" bottom: "label" top: "accuracy" }""")
    proto.write_text(train_val)
    net = convert_caffe(proto, model, input_shape=(3, 17, 19))
    assert net.layer_names[-1] == "loss" and net.logits_layer == "fc2" and net.output_is_softmax
    assert "accuracy" not in net.layer_names and net.preprocess.mean == (104.0, 117.0, 123.0)
    deploy_proto = tmp_path / "deploy_only.prototxt"
    deploy_proto.write_text(NEW_PROTOTXT)
    deploy = convert_caffe(deploy_proto, model)
    x = np.random.default_rng(0).uniform(-9, 9, (1, 3, 17, 19)).astype(np.float32)
    np.testing.assert_allclose(net.forward(x)[0], deploy.forward(x)[0], rtol=1e-6)
    proto.write_text(NEW_PROTOTXT.replace('name: "tanh" type: "TanH"', 'name: "sig" type: "TanH"'))
    with pytest.raises(CaffeFormatError, match="second layer is named 'sig'"):
        convert_caffe(proto, model)


FCN_PROTOTXT = """\
input: "data" input_dim: 1 input_dim: 3 input_dim: 11 input_dim: 13
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 stride: 2 } }
layer { name: "up" type: "Deconvolution" bottom: "conv" top: "up"
        convolution_param { num_output: 6 kernel_size: 4 stride: 2 group: 2 } }
layer { name: "ref" type: "Convolution" bottom: "data" top: "ref"
        convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "crop" type: "Crop" bottom: "up" bottom: "ref" top: "crop"
        crop_param { axis: 2 offset: 1 offset: 0 } }
layer { name: "flat" type: "Reshape" bottom: "crop" top: "flat" reshape_param { shape { dim: 0 dim: 3 dim: -1 } } }
"""


def test_deconvolution_crop_reshape_match_opencv(tmp_path):
    proto = tmp_path / "deploy.prototxt"
    proto.write_text(FCN_PROTOTXT)
    rng = np.random.default_rng(0)
    model = tmp_path / "m.caffemodel"
    model.write_bytes(caffemodel_bytes([
        ("conv", "Convolution", [rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)]),
        ("up", "Deconvolution", [rng.normal(size=(4, 3, 4, 4)), rng.normal(size=6)]),
        ("ref", "Convolution", [rng.normal(size=(2, 3, 1, 1)), rng.normal(size=2)])]))
    net = convert_caffe(proto, model)
    assert net.layer_names == ["conv", "up", "crop", "flat"]  # 'ref' only lends its shape
    x = rng.normal(size=(2, 3, 11, 13)).astype(np.float32)
    names = ["conv", "up", "crop", "flat"]
    ours = net.forward(x, layers=names)
    assert [a.shape for a in ours] == [(2, 4, 5, 6), (2, 6, 12, 14), (2, 6, 11, 13), (2, 3, 286)]
    for name, a, b in zip(names, ours, _opencv(proto, model, x, names)):
        _assert_close(a, b, name)


def test_a_blob_matching_only_in_element_count_is_refused(tmp_path):
    # fc2 needs (4, 10): (10, 4) and (40,) hold 40 values too, but loading them would scramble the weights
    for stored in ((10, 4), (40,), (2, 20)):
        proto, model = _write(tmp_path, V1_PROTOTXT, dict(V1_BLOBS, fc2=[stored, (4,)]), V1_TYPES, v1=True)
        with pytest.raises(CaffeFormatError, match=r"'fc2'.*stored with shape .*the layout does not"):
            convert_caffe(proto, model)

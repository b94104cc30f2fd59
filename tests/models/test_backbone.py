"""Backbone: symbolic checkpoints, BatchNorm freezing, Caffe import, devices, hybridization."""

import mxnet as mx
import numpy as np
import pytest

import finetune as ft
from finetune.errors import MissingFileError, ModelError, UnknownNameError


def _mxnet_resnet_like():
    """A tiny graph shaped like MXNet's model-zoo ResNet checkpoints (bn_data, ..., flatten0, fc1, softmax)."""
    data = mx.sym.var("data")
    x = mx.sym.BatchNorm(data, fix_gamma=True, eps=2e-5, name="bn_data")
    x = mx.sym.Convolution(x, num_filter=8, kernel=(3, 3), pad=(1, 1), no_bias=True, name="conv0")
    x = mx.sym.BatchNorm(x, name="bn0")
    x = mx.sym.Activation(x, act_type="relu", name="relu0")
    x = mx.sym.Pooling(x, global_pool=True, kernel=(7, 7), pool_type="avg", name="pool1")
    x = mx.sym.Flatten(x, name="flatten0")
    x = mx.sym.FullyConnected(x, num_hidden=5, name="fc1")
    return mx.sym.SoftmaxOutput(x, name="softmax")


def _checkpoint(tmp_path):
    sym = _mxnet_resnet_like()
    mod = mx.mod.Module(sym, context=mx.cpu())
    mod.bind(data_shapes=[("data", (2, 3, 16, 16))], label_shapes=[("softmax_label", (2,))])
    mx.random.seed(0)
    mod.init_params(mx.init.Xavier())
    arg, aux = mod.get_params()
    aux = {k: v + 0.5 for k, v in aux.items()}  # non-trivial moving statistics
    prefix = str(tmp_path / "resnet-tiny")
    mx.model.save_checkpoint(prefix, 3, sym, arg, aux)
    return prefix, sym, arg, aux


def _logits(sym, arg, aux, x):
    fc = sym.get_internals()["fc1_output"]
    exe = fc.bind(mx.cpu(), {**{k: arg[k] for k in fc.list_arguments() if k != "data"}, "data": x},
                  aux_states={k: aux[k] for k in fc.list_auxiliary_states()})
    return exe.forward(is_train=False)[0].asnumpy()


def test_from_checkpoint_cuts_softmax_and_finds_flatten0(tmp_path):
    prefix, sym, arg, aux = _checkpoint(tmp_path)
    bb = ft.Backbone.from_checkpoint(prefix, 3)
    assert (bb.classifier, bb.feature_layer) == ("fc1", "flatten0")
    assert bb.layer_names[-1] == "fc1" and "softmax" not in bb.layer_names
    assert bb.preprocess.mean == (0.0, 0.0, 0.0) and bb.preprocess.std == (1.0, 1.0, 1.0)
    x = mx.nd.array(np.random.default_rng(0).uniform(0, 255, (2, 3, 16, 16)).astype(np.float32))
    np.testing.assert_allclose(bb(x).asnumpy(), _logits(sym, arg, aux, x), rtol=1e-5, atol=1e-5)
    model = ft.HeadReplacer(4).apply(bb)  # as MXNet's fine-tuning tutorial: cut at flatten0, new FC
    assert model.feature_layer == "flatten0" and model.num_features == 8
    with pytest.raises(MissingFileError):
        ft.Backbone.from_checkpoint(prefix, 4)


def test_from_symbol_renames_the_input_and_checks_params(tmp_path):
    _, sym, arg, aux = _checkpoint(tmp_path)
    renamed = mx.sym.load_json(sym.tojson().replace('"name": "data"', '"name": "input_1"'))
    pre = ft.Preprocess(size=(16, 16), resize=16)
    bb = ft.Backbone.from_symbol(renamed, arg, aux, pre, input_name="input_1", classifier="fc1")
    assert bb.to_symbol().list_arguments()[0] == "data"
    assert bb.num_features == 8
    with pytest.raises(ModelError, match="missing"):
        ft.Backbone.from_symbol(sym, {}, aux, pre)


def _bn_stats(block):
    return {k: v.data().asnumpy().copy() for k, v in block.collect_params().items()
            if k.endswith(("running_mean", "running_var", "moving_mean", "moving_var"))}


def _train_step(net, x):
    """Forward + backward in training mode (MXNet updates moving statistics during this step)."""
    with mx.autograd.record(train_mode=True):
        y = net(x)
    y.backward()
    return y


@pytest.mark.parametrize("hybridize", [False, True])
def test_freeze_batchnorm_keeps_moving_statistics(hybridize):
    bb = ft.Backbone.from_zoo("resnet18_v1", weights=None)
    model = ft.HeadReplacer(3).apply(bb)
    if hybridize:
        model.hybridize()
    x = mx.nd.array(np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32))
    before = _bn_stats(model)
    _train_step(model, x)
    changed = _bn_stats(model)
    assert any(not np.array_equal(before[k], changed[k]) for k in before)  # not frozen: stats move
    params_before = {k: id(v) for k, v in model.collect_params().items()}
    model.freeze_batchnorm()
    assert {k: id(v) for k, v in model.collect_params().items()} == params_before  # same Parameters
    y = _train_step(model, x)
    after = _bn_stats(model)
    assert all(np.array_equal(changed[k], after[k]) for k in changed)
    # frozen BN in training mode computes what inference computes (no dropout in this head); oneDNN's
    # training and inference kernels round differently on some CPUs (1.7e-5 seen with AVX-512)
    np.testing.assert_allclose(y.asnumpy(), model(x).asnumpy(), rtol=1e-4, atol=1e-4)


def test_freeze_some_batchnorm_layers_by_name():
    bb = ft.Backbone.from_zoo("resnet18_v1", weights=None)
    bb.freeze_batchnorm(["batchnorm0_fwd"])
    x = mx.nd.array(np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32))
    before = _bn_stats(bb)
    _train_step(bb, x)
    after = _bn_stats(bb)
    assert np.array_equal(before["batchnorm0_running_mean"], after["batchnorm0_running_mean"])
    assert not np.array_equal(before["stage1_batchnorm0_running_mean"], after["stage1_batchnorm0_running_mean"])
    with pytest.raises(UnknownNameError, match="Did you mean"):
        bb.freeze_batchnorm(["batchnorm0_fw"])


def test_features_errors_and_hybridize_and_devices():
    bb = ft.Backbone.from_zoo("mobilenet0.25", weights=None, ctx=[mx.cpu(0), mx.cpu(1)])
    assert bb.collect_params()["conv0_weight"].list_ctx() == [mx.cpu(0), mx.cpu(1)]
    x = mx.nd.array(np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype(np.float32))
    with pytest.raises(UnknownNameError, match="Did you mean 'relu26_fwd'"):
        bb.features(x, ["relu26"])
    expected = bb(x).asnumpy()
    bb.hybridize()
    np.testing.assert_allclose(bb(x).asnumpy(), expected, rtol=1e-5, atol=1e-6)
    on1 = bb(x.as_in_context(mx.cpu(1)))
    assert on1.context == mx.cpu(1)


@pytest.mark.realdata
def test_from_caffe_on_the_real_nsfw_model():
    from finetune.models.caffe import convert_caffe
    from tests.ingredients import nsfw_caffe, real_photos

    proto, weights = nsfw_caffe()
    bb = ft.Backbone.from_caffe(proto, weights, mean=(104, 117, 123))
    net = convert_caffe(proto, weights, mean=(104, 117, 123))
    assert bb.preprocess.color == "BGR" and bb.preprocess.mean == (104.0, 117.0, 123.0)
    assert (bb.classifier, bb.feature_layer, bb.num_features) == ("fc_nsfw", "pool", 1024)
    assert bb.layer_names == [n for n in net.layer_names if n != "prob"]
    x = np.stack([bb.preprocess.read(p) for p in real_photos()[:2]])
    expected = net.forward(x, [net.logits_layer])[0]
    np.testing.assert_allclose(bb(mx.nd.array(x)).asnumpy(), expected, rtol=1e-5, atol=1e-5)
    conv = bb.features(mx.nd.array(x), ["conv_1"])[0].asnumpy()
    np.testing.assert_allclose(conv, net.forward(x, ["conv_1"])[0], rtol=1e-5, atol=1e-4)
    model = ft.HeadReplacer(7).apply(bb)
    assert model(mx.nd.array(x)).shape == (2, 7)

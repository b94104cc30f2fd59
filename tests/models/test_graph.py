"""Graph surgery on MXNet symbols (finetune.models.graph)."""

import mxnet as mx
import numpy as np
import pytest

from finetune.errors import ConfigError, ModelError, UnknownNameError
from finetune.models import graph as _graph


def _net():
    """data -> conv1 -> bn1 -> relu1 -> (+ conv1 residual) -> pool -> flatten0 -> fc -> softmax."""
    x = mx.sym.var("data")
    c = mx.sym.Convolution(x, num_filter=4, kernel=(3, 3), pad=(1, 1), name="conv1")
    b = mx.sym.BatchNorm(c, name="bn1")
    r = mx.sym.Activation(b, act_type="relu", name="relu1")
    s = mx.sym.elemwise_add(r, c, name="add1")
    p = mx.sym.Pooling(s, kernel=(1, 1), global_pool=True, pool_type="avg", name="pool")
    f = mx.sym.Flatten(p, name="flatten0")
    fc = mx.sym.FullyConnected(f, num_hidden=3, name="fc")
    return mx.sym.SoftmaxOutput(fc, name="softmax")


def _params(symbol, seed=0):
    rng = np.random.default_rng(seed)
    arg_shapes, _, aux_shapes = symbol.infer_shape(data=(2, 3, 8, 8))
    params = {}
    for name, shape in zip(symbol.list_arguments(), arg_shapes):
        if name not in ("data", "softmax_label"):
            params[name] = mx.nd.array(rng.normal(size=shape))
    for name, shape in zip(symbol.list_auxiliary_states(), aux_shapes):
        params[name] = mx.nd.array(rng.uniform(0.5, 1.5, size=shape))
    return params


def _run(symbol, params, x, **extra):
    exe = symbol.bind(mx.cpu(), {**{k: v for k, v in params.items() if k in symbol.list_arguments()},
                                 "data": x, **extra},
                      aux_states={k: params[k] for k in symbol.list_auxiliary_states()})
    return [o.asnumpy() for o in exe.forward(is_train=False)]


def test_list_layers_is_graph_order_without_variables():
    assert _graph.list_layers(_net()) == ["conv1", "bn1", "relu1", "add1", "pool", "flatten0", "fc", "softmax"]


def test_multi_output_nodes_keep_their_index():
    sym = mx.sym.split(mx.sym.var("data"), num_outputs=2, axis=1, name="sp")
    assert _graph.list_layers(sym) == ["sp_output0", "sp_output1"]


def test_layer_output_order_and_errors():
    group = _graph.layer_output(_net(), ["fc", "conv1"])
    assert group.list_outputs() == ["fc_output", "conv1_output"]
    with pytest.raises(UnknownNameError, match="Did you mean 'relu1'"):
        _graph.layer_output(_net(), "relu")
    with pytest.raises(ConfigError):
        _graph.layer_output(_net(), [])


def test_cut_keeps_only_what_the_layer_needs():
    cut = _graph.cut(_net(), "flatten0")
    assert _graph.list_layers(cut)[-1] == "flatten0"
    assert "fc_weight" not in cut.list_arguments()
    assert "softmax_label" not in cut.list_arguments()


def test_strip_softmax_gives_logits_and_drops_label():
    sym = _graph.strip_softmax(_net())
    assert _graph.list_layers(sym)[-1] == "fc"
    assert "softmax_label" not in sym.list_arguments()
    fc_only = _graph.cut(_net(), "fc")
    assert _graph.strip_softmax(fc_only).tojson() == fc_only.tojson()


def test_find_classifier_returns_last_parametric_layer_and_its_input():
    assert _graph.find_classifier(_net()) == ("fc", "flatten0")
    assert _graph.find_classifier(mx.sym.relu(mx.sym.var("data"))) == (None, None)


def test_set_batchnorm_global_stats_rewrites_attrs():
    sym = _graph.set_batchnorm_global_stats(_net())
    assert sym.get_internals()["bn1_output"].attr("use_global_stats") == "True"
    back = _graph.set_batchnorm_global_stats(sym, ["bn1"], False)
    assert back.get_internals()["bn1_output"].attr("use_global_stats") == "False"
    assert _graph.batchnorm_layers(sym) == ["bn1"]
    with pytest.raises(ConfigError, match="not BatchNorm"):
        _graph.set_batchnorm_global_stats(_net(), ["conv1"])
    with pytest.raises(UnknownNameError):
        _graph.set_batchnorm_global_stats(_net(), ["bn2"])


def test_strip_prefix_renames_nodes_and_params_and_keeps_outputs():
    x = mx.sym.var("data")
    sym = mx.sym.FullyConnected(x, num_hidden=2, name="net0_fc")
    params = {"net0_fc_weight": mx.nd.ones((2, 3)), "net0_fc_bias": mx.nd.zeros((2,))}
    new, new_params = _graph.strip_prefix(sym, params, "net0_")
    assert _graph.list_layers(new) == ["fc"]
    assert sorted(new_params) == ["fc_bias", "fc_weight"]
    assert new.list_arguments() == ["data", "fc_weight", "fc_bias"]
    clash = mx.sym.elemwise_add(mx.sym.relu(x, name="p_a"), mx.sym.relu(x, name="a"), name="p_sum")
    with pytest.raises(ModelError, match="collide"):
        _graph.strip_prefix(clash, {}, "p_")


def test_rename_inputs():
    sym = mx.sym.relu(mx.sym.var("input_1"), name="r")
    assert _graph.rename_inputs(sym, {"input_1": "data"}).list_arguments() == ["data"]


def test_insert_probe_is_identity_at_zero_and_gives_the_layer_gradient():
    sym = _graph.strip_softmax(_net())
    params = _params(sym)
    x = mx.nd.array(np.random.default_rng(1).normal(size=(2, 3, 8, 8)))
    probed, probe, added = _graph.insert_probe(sym, "relu1")
    assert probe == "relu1_probe" and added == "relu1_probed"
    zero = mx.nd.zeros((2, 4, 8, 8))
    np.testing.assert_array_equal(_run(probed, params, x, relu1_probe=zero)[0], _run(sym, params, x)[0])

    block = _graph.probe_block(sym, "relu1", _param_dict(sym, params))
    act = block.activation(x)
    delta = mx.nd.zeros_like(act)
    delta.attach_grad()
    with mx.autograd.record(train_mode=False):
        logits, act2 = block(x, delta)
        score = logits[:, 1].sum()
    score.backward()
    np.testing.assert_array_equal(act.asnumpy(), act2.asnumpy())
    # finite differences on one activation element
    eps = 1e-2
    bump = np.zeros((2, 4, 8, 8), np.float32)
    bump[0, 2, 3, 4] = eps
    up = _run(probed, params, x, relu1_probe=mx.nd.array(bump))[0][:, 1].sum()
    down = _run(probed, params, x, relu1_probe=mx.nd.array(-bump))[0][:, 1].sum()
    assert delta.grad[0, 2, 3, 4].asscalar() == pytest.approx((up - down) / (2 * eps), rel=1e-2, abs=1e-4)


def test_insert_probe_on_the_output_layer():
    sym = _graph.strip_softmax(_net())
    probed, _, added = _graph.insert_probe(sym, "fc")
    assert probed.list_outputs() == [f"{added}_output"]


def _param_dict(symbol, arrays):
    block = mx.gluon.SymbolBlock(symbol, _graph.data_var())
    for name, p in block.collect_params().items():
        p._load_init(arrays[name], [mx.cpu()])
    return block.collect_params()


def test_infer_shape_errors_are_typed():
    from finetune.errors import ShapeError

    sym = _graph.strip_softmax(_net())
    assert _graph.infer_shape(sym, (1, 3, 8, 8)) == (1, 3)
    with pytest.raises(ShapeError):
        _graph.infer_shape(mx.sym.FullyConnected(mx.sym.var("data"), mx.sym.var("w", shape=(3, 5)),
                                                 no_bias=True, num_hidden=3), (1, 7))


def test_gluon_to_graph_names_are_stable_across_builds():
    from mxnet.gluon import nn

    def build():
        with mx.name.NameManager():
            net = nn.HybridSequential(prefix="mynet0_")
            with net.name_scope():
                net.add(nn.Dense(4, activation="relu"), nn.Dense(2))
        return net

    a = _graph.gluon_to_graph(build(), (1, 3))
    b = _graph.gluon_to_graph(build(), (1, 3))
    assert _graph.list_layers(a[0]) == _graph.list_layers(b[0]) == ["dense0_fwd", "dense0_relu_fwd", "dense1_fwd"]
    assert sorted(a[1]) == sorted(b[1]) == ["dense0_bias", "dense0_weight", "dense1_bias", "dense1_weight"]

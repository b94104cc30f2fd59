"""A batch runs the graph folded for its input size: same numbers, no crop, nothing saved changes."""

from __future__ import annotations

import json

import mxnet as mx
import numpy as np
import pytest

from finetune import Backbone, HeadReplacer, load_model
from finetune.models.graph import fold_padding, has_shape_tricks, merge_padding


def _ops(symbol) -> list:
    return [node["op"] for node in json.loads(symbol.tojson())["nodes"]]


@pytest.fixture(scope="module")
def lite_backbone():
    return Backbone.from_zoo("efficientnet_lite0", weights=None)


def _any_size_block(net):
    return mx.gluon.SymbolBlock(net.to_symbol(), mx.sym.var("data", dtype="float32"), params=net.collect_params())


def test_fold_padding_replaces_each_same_padding_by_one_constant_pad(lite_backbone):
    symbol = lite_backbone.to_symbol()
    assert has_shape_tricks(symbol)
    for size in (96, 67):
        folded, n = fold_padding(symbol, (1, 3, size, size))
        assert n == 5  # one per stride-2 convolution
        assert "Crop" not in _ops(folded) and "UpSampling" not in _ops(folded)
        assert folded.list_arguments() == symbol.list_arguments()


def test_a_hybridized_model_runs_the_folded_graph_with_the_same_outputs(lite_backbone):
    model = HeadReplacer(4).apply(lite_backbone)
    reference = _any_size_block(model)
    model.hybridize(static_alloc=True)
    rng = np.random.default_rng(0)
    for size, folded in ((96, False), (96, True), (67, False), (67, True), (96, True)):
        x = mx.nd.array(rng.normal(size=(2, 3, size, size)))
        np.testing.assert_allclose(model(x).asnumpy(), reference(x).asnumpy(), rtol=1e-6, atol=1e-6)
        # a size is folded from its second call on, and then the crop is really gone
        assert ("Crop" in _ops(model._cached_graph[1])) is not folded, (size, folded)
    assert "Crop" in _ops(model.to_symbol())  # the graph for any size is what to_symbol gives
    assert model.body._armed is None  # the specialisation ends with the call


def test_gradients_through_the_folded_graph_equal_those_of_the_graph_for_any_size(lite_backbone):
    model = HeadReplacer(3).apply(lite_backbone)
    reference = _any_size_block(model)
    model.hybridize()
    x = mx.nd.array(np.random.default_rng(1).normal(size=(2, 3, 64, 64)))
    model(x)  # the second call of a size runs the folded graph
    grads = []
    for net in (model, reference):
        with mx.autograd.record(train_mode=False):  # no dropout: the same function on both sides
            loss = net(x).sum()
        loss.backward()
        grads.append({n: p.grad().asnumpy().copy() for n, p in model.collect_params().items()
                      if p.grad_req != "null"})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        np.testing.assert_allclose(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_backbone_called_alone_imperatively_is_folded_too(lite_backbone):
    x = mx.nd.array(np.random.default_rng(2).normal(size=(1, 3, 64, 64)))
    want = _any_size_block(lite_backbone)(x).asnumpy()
    for _ in range(2):
        np.testing.assert_allclose(lite_backbone(x).asnumpy(), want, rtol=1e-6, atol=1e-6)
    assert lite_backbone._caches["sizes"][(3, 64, 64)] is not None


def test_sizes_that_never_come_back_are_not_folded_and_few_are_kept():
    bb = Backbone.from_zoo("efficientnet_lite0", weights=None)
    for size in range(40, 60):
        bb(mx.nd.zeros((1, 3, size, size)))
    assert len(bb._caches["sizes"]) == 8 and bb._graph_key == (None,)


def test_a_backbone_inside_a_foreign_block_keeps_the_graph_for_any_size(lite_backbone):
    for _ in range(2):
        lite_backbone(mx.nd.zeros((1, 3, 64, 64)))  # folded for 64 px during that call only

    class Shrink(mx.gluon.HybridBlock):
        def __init__(self, inner, **kwargs):
            super().__init__(**kwargs)
            self.inner = inner

        def hybrid_forward(self, F, x):
            return self.inner(F.slice(x, begin=(None, None, 1, 1), end=(None, None, None, None)))

    outer = Shrink(lite_backbone)
    outer.hybridize()
    x = mx.nd.array(np.random.default_rng(3).normal(size=(1, 3, 65, 65)))
    want = _any_size_block(lite_backbone)(x[:, :, 1:, 1:]).asnumpy()
    np.testing.assert_allclose(outer(x).asnumpy(), want, rtol=1e-6, atol=1e-6)


def test_saving_after_a_batch_keeps_the_graph_for_any_size(lite_backbone, tmp_path):
    model = HeadReplacer(2).apply(lite_backbone)
    model.hybridize()
    for _ in range(2):
        model(mx.nd.zeros((1, 3, 96, 96)))
    again = load_model(model.save(tmp_path / "m"))
    assert "Crop" in _ops(again.body.to_symbol())
    x = mx.nd.array(np.random.default_rng(4).normal(size=(1, 3, 67, 71)))
    np.testing.assert_allclose(again(x).asnumpy(), _any_size_block(model)(x).asnumpy(), rtol=1e-5, atol=1e-6)


def test_networks_without_shape_tricks_are_left_alone():
    bb = Backbone.from_zoo("mobilenet0.25", weights=None)
    bb.hybridize()
    for _ in range(2):
        bb(mx.nd.zeros((1, 3, 32, 32)))
    assert not has_shape_tricks(bb.to_symbol())
    assert bb._graph_key == (None,) and not bb._caches["sizes"]


def _run(symbol, args):
    return symbol.eval(ctx=mx.cpu(), **{k: mx.nd.array(v) for k, v in args.items()})[0].asnumpy()


@pytest.mark.parametrize("widths, kernel, stride, taps", [
    ((0, 1, 0, 1), 3, 2, (1, 0, 1, 0)),   # SAME, 3x3, stride 2, even input
    ((1, 2, 1, 2), 5, 2, (1, 0, 1, 0)),   # SAME, 5x5, stride 2
    ((1, 1, 2, 2), 3, 1, None),           # symmetric: the padding moves, the kernel stays
    ((2, 0, 0, 3), 3, 1, (0, 2, 3, 0)),
])
def test_merge_padding_gives_the_same_outputs_with_zero_taps(widths, kernel, stride, taps):
    x = mx.sym.var("data")
    padded = mx.sym.pad(x, mode="constant", pad_width=(0, 0, 0, 0) + widths)
    net = mx.sym.relu(mx.sym.Convolution(padded, kernel=(kernel, kernel), stride=(stride, stride), num_filter=4,
                                         num_group=2, name="conv"))
    merged, found = merge_padding(net)
    assert "Pad" not in _ops(merged)
    assert found == ({} if taps is None else {"conv_weight": taps})
    rng = np.random.default_rng(0)
    args = {"data": rng.normal(size=(2, 4, 10, 9)), "conv_weight": rng.normal(size=(4, 2, kernel, kernel)),
            "conv_bias": rng.normal(size=4)}
    top, bottom, left, right = taps or (0, 0, 0, 0)
    wide = dict(args, conv_weight=np.pad(args["conv_weight"], ((0, 0), (0, 0), (top, bottom), (left, right))))
    np.testing.assert_allclose(_run(merged, wide), _run(net, args), rtol=1e-5, atol=1e-5)


def test_merge_padding_leaves_what_it_cannot_merge():
    x = mx.sym.var("data")
    shared = mx.sym.pad(x, mode="constant", pad_width=(0, 0, 0, 0, 0, 1, 0, 1))
    two_readers = mx.sym.Convolution(shared, kernel=(3, 3), num_filter=2, name="a") + \
        mx.sym.Convolution(shared, kernel=(3, 3), num_filter=2, name="b")
    edge = mx.sym.Convolution(mx.sym.pad(x, mode="edge", pad_width=(0, 0, 0, 0, 1, 1, 1, 1)), kernel=(3, 3),
                              num_filter=2, name="c")
    into_pool = mx.sym.Pooling(mx.sym.pad(x, mode="constant", pad_width=(0, 0, 0, 0, 1, 1, 1, 1)), kernel=(3, 3))
    dilated = mx.sym.Convolution(mx.sym.pad(x, mode="constant", pad_width=(0, 0, 0, 0, 2, 2, 2, 2)), kernel=(3, 3),
                                 dilate=(2, 2), num_filter=2, name="d")
    for net in (two_readers, edge, into_pool, dilated):
        merged, taps = merge_padding(net)
        assert merged is net and taps == {}


def test_merge_padding_after_folding_leaves_no_pad_in_efficientnet_lite(lite_backbone):
    folded, _ = fold_padding(lite_backbone.to_symbol(), (1, 3, 64, 64))
    merged, taps = merge_padding(folded)
    assert _ops(folded).count("Pad") == 5 and "Pad" not in _ops(merged)
    assert len(taps) == 5  # every stride-2 SAME padding is uneven at an even size

"""The policy and the Trainer on a finetune ``Model`` (symbol-graph body + ``head_`` block)."""

import mxnet as mx
import numpy as np
import pytest

import finetune as ft
from finetune.train import LayerLRPolicy, Trainer


@pytest.fixture(scope="module")
def model():
    mx.random.seed(0)
    return ft.HeadReplacer(3).apply(ft.Backbone.from_zoo("mobilenetv2_0.25", weights=None), ["a", "b", "c"])


def test_plan_on_a_model_covers_every_param_and_reads_bn_modes_from_the_graph(model):
    policy = LayerLRPolicy.pretrained(0.01, freeze_bn=True)
    t = Trainer(model, policy=policy, batch_size=4, progress=False, optimizer_params={"lr": 0.1})
    plan = t.plan()
    assert sorted(r["parameter"] for r in plan) == sorted(model.collect_params().keys())
    bn = [r for r in plan if r["batchnorm"] != "-"]
    assert bn and all(r["batchnorm"] == "frozen" for r in bn)
    head = [r for r in plan if r["parameter"].startswith("head_")]
    assert head and all(r["lr"] == pytest.approx(0.1) for r in head)
    body = [r for r in plan if r["trainable"] == "yes" and not r["parameter"].startswith("head_")]
    assert body and all(r["lr"] == pytest.approx(0.001) for r in body)


def test_head_only_on_a_model_caches_features_and_leaves_the_body_bit_identical(model):
    before = {k: v.data().asnumpy().copy() for k, v in model.collect_params().items()}
    rng = np.random.RandomState(0)
    x = rng.normal(size=(12, 3, 32, 32)).astype("float32")
    t = Trainer(model, policy=LayerLRPolicy.head_only(), batch_size=4, progress=False).fit((x, np.arange(12) % 3),
                                                                                          epochs=2)
    assert t._net is model.head  # trained on cached body features
    after = {k: v.data().asnumpy() for k, v in model.collect_params().items()}
    for k in before:
        if k.startswith("head_"):
            continue
        assert np.array_equal(before[k], after[k]), k
    assert any(not np.array_equal(before[k], after[k]) for k in before if k.startswith("head_"))

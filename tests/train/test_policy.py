import warnings

import mxnet as mx
import numpy as np
import pytest

from finetune.errors import ConfigError, UnknownNameError
from finetune.models.graph import fully_connected_params
from finetune.train import LayerLRPolicy, Rule, Trainer

from ._nets import data, mlp, params


def test_every_trainable_param_must_match_exactly_one_rule():
    net = mlp()
    with pytest.raises(ConfigError) as e:
        LayerLRPolicy(["body_*"]).apply(net)
    assert "head_fc_weight (no rule)" in str(e.value)
    with pytest.raises(ConfigError) as e:
        LayerLRPolicy(["*", "head_*"]).apply(net)
    assert "head_fc_bias (rules '*', 'head_*')" in str(e.value)


def test_regex_and_glob_rules():
    assert Rule("re:^head_.*_bias$").matches("head_fc_bias")
    assert not Rule("re:^head_.*_bias$").matches("head_fc_weight")
    assert Rule("*_bias").matches("body_fc1_bias")
    with pytest.raises(ConfigError):
        Rule("re:(")
    with pytest.raises(ConfigError):
        Rule("x", lr_mult=-1)


def test_pretrained_preset_lr_mults():
    net = mlp()
    plan = LayerLRPolicy.pretrained(0.01).apply(net).plan(net, lr=0.1, wd=1e-4)
    assert plan["body_fc1_weight"]["lr"] == pytest.approx(0.001)
    assert plan["head_fc_weight"]["lr"] == pytest.approx(0.1)
    assert plan["head_fc_bias"]["wd"] == pytest.approx(1e-4)


def test_boosted_head_preset_weights_10_biases_20():
    net = mlp()
    plan = LayerLRPolicy.boosted_head().apply(net).plan(net, lr=0.01)
    assert plan["head_fc_weight"]["lr"] == pytest.approx(0.1)
    assert plan["head_fc_bias"]["lr"] == pytest.approx(0.2)
    assert plan["body_fc1_weight"]["lr"] == pytest.approx(0.01)


def test_discriminative_geometric_decay():
    net = mlp()
    plan = LayerLRPolicy.discriminative(["body_fc1_*"], decay=0.5).apply(net).plan(net, lr=1.0)
    assert plan["body_fc1_weight"]["lr"] == pytest.approx(0.5)
    assert plan["head_fc_weight"]["lr"] == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="'decay' parameter of LayerLRPolicy must be in"):
        LayerLRPolicy.discriminative(["a"], decay=1.5)


def test_freeze_until_and_unknown_layer():
    net = mlp()
    LayerLRPolicy(freeze_until="body_fc1_fwd").apply(net)
    assert net.collect_params()["body_fc1_weight"].grad_req == "null"
    assert net.collect_params()["head_fc_weight"].grad_req == "write"
    with pytest.raises(UnknownNameError, match="Did you mean"):
        LayerLRPolicy(freeze_until="body_fc2").apply(mlp())


def test_presets_by_name():
    assert LayerLRPolicy.from_preset("boosted-head").rules[1].lr_mult == 20
    with pytest.raises(UnknownNameError):
        LayerLRPolicy.from_preset("pretrain")


def test_plan_covers_every_param_once_and_is_true_after_hybridize_and_kvstore():
    net = mlp(bn=True)
    policy = LayerLRPolicy.pretrained(0.1, freeze_bn=True)
    t = Trainer(net, policy=policy, batch_size=8, ctx=[mx.cpu(0), mx.cpu(1)], kvstore="device",
                optimizer_params={"learning_rate": 0.5, "wd": 0.01}, progress=False)
    t.fit(data(16), epochs=1)
    plan = t.plan()
    names = [r["parameter"] for r in plan]
    assert sorted(names) == sorted(net.collect_params().keys())
    assert len(names) == len(set(names))
    # what the live optimizer will use, per parameter index of the gluon trainer
    opt = t._trainer._optimizer
    for i, p in enumerate(t._trainer._params):
        assert plan[p.name]["lr"] == pytest.approx(opt._get_lrs([i])[0])
        assert plan[p.name]["wd"] == pytest.approx(opt._get_wds([i])[0])
    assert plan["body_bn1_running_mean"]["batchnorm"] == "frozen"
    assert plan["body_bn1_running_mean"]["trainable"] == "aux"
    assert t._trainer._kvstore is not None  # kvstore really set up
    assert "body_fc1_weight" in str(plan)


def test_frozen_params_and_bn_stats_bit_identical_after_training():
    net = mlp(bn=True)
    before = params(net)
    policy = LayerLRPolicy([Rule("body_fc1_*", trainable=False), Rule("body_bn1_*"), Rule("head_*")],
                           freeze_bn=True)
    Trainer(net, policy=policy, batch_size=8, progress=False).fit(data(24), epochs=2)
    after = params(net)
    for name in ("body_fc1_weight", "body_fc1_bias", "body_bn1_running_mean", "body_bn1_running_var"):
        assert np.array_equal(before[name], after[name]), name
    assert not np.array_equal(before["head_fc_weight"], after["head_fc_weight"])
    assert not np.array_equal(before["body_bn1_gamma"], after["body_bn1_gamma"])


def test_unfrozen_bn_stats_do_change():  # the test above can fail
    net = mlp(bn=True)
    before = params(net)
    Trainer(net, batch_size=8, progress=False).fit(data(24), epochs=1)
    assert not np.array_equal(before["body_bn1_running_mean"], params(net)["body_bn1_running_mean"])


def test_two_stage_head_only_then_all():
    net = mlp()
    before = params(net)
    seen = []

    from finetune.train import Callback

    class Spy(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            seen.append(params(trainer.model)["body_fc1_weight"])

    Trainer(net, policy=LayerLRPolicy(head_epochs=1), batch_size=8, progress=False, cache_features=False).fit(
        data(24), epochs=2, callbacks=[Spy()])
    assert np.array_equal(seen[0], before["body_fc1_weight"])
    assert not np.array_equal(seen[1], before["body_fc1_weight"])


def test_repr():
    assert repr(LayerLRPolicy(freeze_bn=True)) == "LayerLRPolicy([Rule('*')], freeze_bn=True)"
    assert repr(Rule("head_*", lr_mult=10)) == "Rule('head_*', lr_mult=10)"


def test_a_bias_set_to_train_under_a_frozen_dense_weight_is_reported():
    # MXNet's oneDNN backward gives such a bias no gradient: it would silently never train
    net = mlp()
    with pytest.warns(UserWarning, match="body_fc1_bias.*Freeze the bias too"):
        LayerLRPolicy([Rule("body_fc1_weight", trainable=False), "body_fc1_bias", "head_*"]).apply(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LayerLRPolicy([Rule("body_fc1_*", trainable=False), "head_*"]).apply(mlp())
    x = mx.sym.FullyConnected(mx.sym.var("data"), num_hidden=2, name="fc")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Cannot decide type")
        block = mx.gluon.SymbolBlock(x, mx.sym.var("data"))
    assert fully_connected_params(block) == [("fc_weight", "fc_bias")]


def test_layer_decay_groups_the_backbone_input_first_and_checks_its_decay():
    import finetune as ft
    from finetune.errors import ConfigError

    net = ft.HeadReplacer(2).apply(ft.create_model("mobilenet0.25", weights=None))
    policy = LayerLRPolicy.layer_decay(net, 4, 0.5, lr_mult=2.0)
    groups = policy.rules[1:]
    assert [r.lr_mult for r in groups] == [2.0 * 0.5 ** 4, 2.0 * 0.5 ** 3, 2.0 * 0.5 ** 2, 2.0 * 0.5]
    assert policy.rules[0].lr_mult == 1.0 and policy.rules[0].pattern == "head_*"
    plain = LayerLRPolicy.layer_decay(net, 4, None, lr_mult=0.1)
    assert [r.label for r in plain.rules[1:]] == ["backbone"]
    frozen = LayerLRPolicy.layer_decay(net, 4, None, frozen=9).rules[1:]  # one group always trains
    assert [r.trainable for r in frozen] == [False, False, False, True]
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="decay"):
            LayerLRPolicy.layer_decay(net, 4, bad)

"""HeadReplacer: cutting a backbone and adding a new head."""

import logging

import mxnet as mx
import numpy as np
import pytest

import finetune as ft
from finetune.errors import ConfigError, UnknownNameError
from finetune.models._head import build_head


@pytest.fixture(scope="module")
def resnet():
    mx.random.seed(0)
    return ft.Backbone.from_zoo("resnet18_v1", weights=None)


def test_default_cut_is_the_layer_before_the_classifier(resnet):
    model = ft.HeadReplacer(7).apply(resnet)
    assert model.feature_layer == resnet.feature_layer == "pool1_fwd"
    assert model.body.layer_names[-1] == "pool1_fwd"
    assert model(mx.nd.zeros((2, 3, 64, 64))).shape == (2, 7)
    assert model.num_features == 512 and model.num_classes == 7


def test_pretrained_weights_are_kept_and_old_classifier_dropped(resnet, caplog):
    with caplog.at_level(logging.DEBUG, logger="finetune.models._head"):
        model = ft.HeadReplacer(7).apply(resnet)
    assert "dense0_weight" in caplog.text and "dense0_bias" in caplog.text
    old = resnet.collect_params()
    new = model.collect_params()
    assert "dense0_weight" not in new.keys()
    for name in ("conv0_weight", "stage4_batchnorm4_running_var"):
        np.testing.assert_array_equal(new[name].data().asnumpy(), old[name].data().asnumpy())
    # copies, not shared: training the model does not change the backbone
    new["conv0_weight"].set_data(new["conv0_weight"].data() + 1)
    assert not np.array_equal(new["conv0_weight"].data().asnumpy(), old["conv0_weight"].data().asnumpy())


def test_hidden_and_dropout_layout_like_pipeline_2(resnet):
    model = ft.HeadReplacer(101, hidden=(256,), dropout=0.4).apply(resnet)
    kinds = [type(b).__name__ for b in model.head]
    assert kinds == ["Flatten", "Dense", "Activation", "Dropout", "Dense"]
    assert model.head[3]._rate == 0.4
    names = sorted(model.head.collect_params().keys())
    assert names == ["head_classifier_bias", "head_classifier_weight", "head_fc0_bias", "head_fc0_weight"]
    assert model.head[1].weight.shape == (256, 512)
    assert all(n.startswith("head_") for n in model.layer_names[len(model.body.layer_names):])


def test_xavier_init_and_zero_bias(resnet):
    model = ft.HeadReplacer(50).apply(resnet)
    w = model.head[-1].weight.data().asnumpy()
    bound = np.sqrt(3.0 / ((512 + 50) / 2))  # Xavier uniform, avg factor, magnitude 3
    assert np.abs(w).max() <= bound and w.std() > bound / 4
    assert np.all(model.head[-1].bias.data().asnumpy() == 0)


def test_cut_at_any_layer_4d_is_flattened_or_pooled(resnet):
    model = ft.HeadReplacer(3, cut_at="stage3_activation1").apply(resnet)
    assert model.body.output_shape() == (1, 256, 14, 14)
    assert model.num_features == 256 * 14 * 14
    pooled = ft.HeadReplacer(3, cut_at="stage3_activation1", pool="avg").apply(resnet)
    assert pooled.num_features == 256
    assert pooled(mx.nd.zeros((1, 3, 64, 64))).shape == (1, 3)


def test_bad_cut_at_says_did_you_mean(resnet):
    with pytest.raises(UnknownNameError, match="Did you mean 'pool1_fwd'"):
        ft.HeadReplacer(3, cut_at="pool1_fw").apply(resnet)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_classes": 0}, "num_classes"),
    ({"num_classes": 2.5}, "num_classes"),
    ({"num_classes": 3, "hidden": (0,)}, "hidden"),
    ({"num_classes": 3, "dropout": 1.0}, "dropout"),
    ({"num_classes": 3, "pool": "mean"}, "pool"),
    ({"num_classes": 3, "init": "glorot"}, "init"),
    ({"num_classes": 3, "cut_at": 5}, "cut_at"),
])
def test_arguments_are_validated_at_once(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ft.HeadReplacer(**kwargs)


def test_class_names_must_match(resnet):
    with pytest.raises(ConfigError, match="one name per class"):
        ft.HeadReplacer(3).apply(resnet, class_names=["a", "b"])
    model = ft.HeadReplacer(2).apply(resnet, class_names=["cat", "dog"])
    assert model.class_names == ["cat", "dog"]
    with pytest.raises(ConfigError, match="Backbone"):
        ft.HeadReplacer(2).apply(model)


def test_repr_shows_non_defaults():
    assert repr(ft.HeadReplacer(7)) == "HeadReplacer(7)"
    assert repr(ft.HeadReplacer(7, hidden=(256,), dropout=0.4)) == "HeadReplacer(7, hidden=(256,), dropout=0.4)"


def test_initializer_object_is_accepted(resnet):
    model = ft.HeadReplacer(2, init=mx.init.Constant(0.5)).apply(resnet)
    assert np.all(model.head[-1].weight.data().asnumpy() == 0.5)


def test_build_head_without_hidden_puts_dropout_before_classifier():
    head = build_head({"num_classes": 3, "in_features": 8, "dropout": 0.2, "pool": "avg"})
    assert [type(b).__name__ for b in head] == ["GlobalAvgPool2D", "Flatten", "Dropout", "Dense"]

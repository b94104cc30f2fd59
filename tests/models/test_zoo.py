"""The backbone registry and Backbone.from_zoo weights handling."""

import mxnet as mx
import numpy as np
import pytest

import finetune as ft
from finetune.errors import ConfigError, MissingFileError, ModelError, UnknownNameError
from finetune.models import _zoo


def test_families_required_by_the_design_are_registered():
    names = ft.list_backbones()
    for required in ("resnet50_v1", "resnet50_v1b", "resnet50_v2", "vgg16", "vgg16_bn", "mobilenet1.0",
                     "mobilenetv2_1.0", "mobilenetv3_large", "densenet121", "inceptionv3", "squeezenet1.1",
                     "inception_resnet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        assert required in names
    assert names == sorted(names)
    assert ft.list_backbones("squeezenet") == ["squeezenet1.0", "squeezenet1.1"]


def test_unknown_name_says_did_you_mean_and_is_a_key_error():
    with pytest.raises(UnknownNameError, match="Did you mean 'resnet50_v1b'") as info:
        ft.Backbone.from_zoo("resnet50_v1bb", weights=None)
    assert isinstance(info.value, KeyError) and "densenet121" in str(info.value)
    with pytest.raises(UnknownNameError, match="family"):
        ft.list_backbones("resnets")


def test_duplicate_registration_raises():
    entry = _zoo.get_entry("vgg16")
    with pytest.raises(ConfigError, match="already registered"):
        _zoo.register_backbone(entry)


@pytest.mark.parametrize("name, size, resize, mean", [
    ("resnet50_v1b", (224, 224), 256, (123.675, 116.28, 103.53)),
    ("inceptionv3", (299, 299), 342, (123.675, 116.28, 103.53)),
    ("efficientnet_lite1", (240, 240), 272, (127.0, 127.0, 127.0)),
    ("inception_resnet_v2", (299, 299), 342, (127.5, 127.5, 127.5)),
])
def test_preprocessing_per_family(name, size, resize, mean):
    pre = _zoo.get_entry(name).preprocess
    assert (pre.size, pre.resize, pre.mean, pre.color) == (size, resize, mean, "RGB")


def test_imagenet_weights_offline_failure_explains_the_local_path(monkeypatch):
    from gluoncv.model_zoo import model_store

    def fail(name, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(model_store, "get_model_file", fail)
    file = f"resnet18_v1-{model_store.short_hash('resnet18_v1')}.params"
    with pytest.raises(ModelError, match=rf"weights='/path/to/{file}'"):
        ft.Backbone.from_zoo("resnet18_v1")
    with pytest.raises(ModelError, match="No ImageNet weights for 'inception_resnet_v2'"):
        ft.Backbone.from_zoo("inception_resnet_v2")


def test_local_params_file_gives_the_gluon_network(tmp_path):
    from gluoncv.model_zoo import get_model

    net = get_model("mobilenet0.25")
    net.initialize(mx.init.Xavier())
    x = mx.nd.array(np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32))
    expected = net(x).asnumpy()
    path = str(tmp_path / "mobilenet0.25.params")
    net.save_parameters(path)
    bb = ft.Backbone.from_zoo("mobilenet0.25", weights=path)
    np.testing.assert_allclose(bb(x).asnumpy(), expected, rtol=1e-5, atol=1e-6)
    assert bb.class_names is not None and len(bb.class_names) == 1000 and bb.class_names[0] == "tench"
    with pytest.raises(ModelError, match="does not fit"):
        ft.Backbone.from_zoo("mobilenet0.5", weights=path)
    with pytest.raises(MissingFileError):
        ft.Backbone.from_zoo("mobilenet0.25", weights=str(tmp_path / "nope.params"))


def test_num_classes_and_weights_are_validated():
    bb = ft.Backbone.from_zoo("squeezenet1.1", weights=None, num_classes=5)
    assert bb.num_classes == 5 and bb.class_names is None
    with pytest.raises(ConfigError, match="HeadReplacer"):
        ft.Backbone.from_zoo("squeezenet1.1", num_classes=5)
    with pytest.raises(ConfigError, match="weights"):
        ft.Backbone.from_zoo("squeezenet1.1", weights=True)
    with pytest.raises(ConfigError, match="num_classes"):
        ft.Backbone.from_zoo("squeezenet1.1", weights=None, num_classes=0)


def test_squeezenet_head_pools_its_conv_features():
    bb = ft.Backbone.from_zoo("squeezenet1.1", weights=None)
    assert bb.head_pool == "avg" and bb.num_features == 512
    model = ft.HeadReplacer(4).apply(bb)
    assert model.head_spec["pool"] == "avg" and model.num_features == 512


def test_efficientnet_lite0_has_offline_imagenet_weights():
    from finetune.models.architectures import efficientnet_lite_weights_path

    bb = ft.Backbone.from_zoo("efficientnet_lite0")
    same = ft.Backbone.from_zoo("efficientnet_lite0", weights=efficientnet_lite_weights_path(0))  # a .pth path
    x = mx.nd.array(np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32))
    np.testing.assert_array_equal(same(x).asnumpy(), bb(x).asnumpy())
    assert same.class_names == bb.class_names
    assert bb.class_names[:2] == ["tench", "goldfish"]
    assert (bb.classifier, bb.feature_layer, bb.num_features) == ("fc_fwd", "dropout_fwd", 1280)


@pytest.mark.slow
@pytest.mark.realdata
def test_efficientnet_lite0_classifies_foolbox_imagenet_photos():
    from tests.ingredients import foolbox_imagenet

    bb = ft.Backbone.from_zoo("efficientnet_lite0")
    photos = foolbox_imagenet()
    batch = mx.nd.array(np.stack([bb.preprocess.read(path) for path, _ in photos]))
    top1 = bb(batch).argmax(axis=1).asnumpy().astype(int)
    correct = sum(int(p == label) for p, (_, label) in zip(top1, photos))
    assert correct >= 17, f"{correct}/20"


def test_a_malicious_pth_is_refused_through_from_zoo(tmp_path):
    import os
    import pickle

    from finetune.errors import UnsafeFileError

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"_fc.weight": Evil()}, f, protocol=2)
    with pytest.raises(UnsafeFileError, match="Nothing was executed"):
        ft.Backbone.from_zoo("efficientnet_lite0", weights=str(path))
    assert not marker.exists()


def test_parameter_and_layer_names_are_stable_across_builds():
    a = ft.Backbone.from_zoo("mobilenetv3_small", weights=None)
    b = ft.Backbone.from_zoo("mobilenetv3_small", weights=None)
    c = ft.Backbone.from_zoo("resnet18_v2", weights=None)
    d = ft.Backbone.from_zoo("resnet18_v2", weights=None)
    assert list(a.collect_params().keys()) == list(b.collect_params().keys())
    assert a.layer_names == b.layer_names
    assert list(c.collect_params().keys()) == list(d.collect_params().keys())
    assert not any(k.startswith("resnetv2") for k in c.collect_params().keys())
    assert c.layer_names[0] == "batchnorm0_fwd"

"""Real model, real data: EfficientNet-Lite0 descriptors on Fashion-MNIST and real photos."""

import numpy as np
import pytest

from tests.ingredients import fashion_mnist_dir, real_photos

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


@pytest.fixture(scope="module")
def lite0():
    import finetune as ft

    return ft.Backbone.from_zoo("efficientnet_lite0")


@pytest.fixture(scope="module")
def last_conv(lite0):
    """The last convolutional map (ReLU6 output before global pooling), whatever its name."""
    names = lite0.layer_names
    return names[names.index("pool_fwd") - 1]


def test_fashion_mnist_class_retrieval_beats_chance_by_far(lite0, last_conv):
    from finetune.data import load_fashion_mnist
    from finetune.features import FeatureExtractor, class_retrieval_map

    images, labels = load_fashion_mnist("test", folder=str(fashion_mnist_dir()))
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(images))[:300]
    fx = FeatureExtractor(lite0, last_conv, ["gem", "rmac"], resize=64, batch_size=50)
    desc = fx.extract(images[idx])
    assert desc.shape == (300, 2560)
    m, aps = class_retrieval_map(desc, labels[idx])  # leave-one-out
    assert m > 0.4  # chance is about 0.1
    flat = FeatureExtractor(lite0, "flatten_fwd", resize=64, keep_aspect=True).extract(images[idx])
    assert class_retrieval_map(flat, labels[idx])[0] > 0.4


def test_real_photos_keep_their_aspect_ratio_and_match_themselves(lite0, last_conv):
    from finetune.features import FeatureExtractor, RetrievalIndex

    photos = real_photos()
    fx = FeatureExtractor(lite0, last_conv, "gem", resize=160, scales=(1.0, 0.5 ** 0.5))
    assert fx.layer_kinds() == {last_conv: "conv"}
    from finetune.data import read_image

    h, w = read_image(photos[0]).shape[:2]
    assert h != w  # chelsea.png is 300 x 451
    _, outs = next(fx.iter_layer_outputs(photos[:1]))
    mh, mw = outs[0].shape[2:]
    assert abs(mw / mh - w / h) < 0.3 and min(mh, mw) == 5  # 160 px shorter side / 32
    db = fx.extract(photos)
    import cv2

    flipped = [cv2.flip(read_image(p), 1) for p in photos]
    index = RetrievalIndex()
    index.add(db)
    _, top = index.search(fx.extract(flipped), k=1)
    assert (top[:, 0] == np.arange(len(photos))).mean() >= 0.9


def test_extractor_save_load_with_the_model_and_cli_zoo_name(lite0, last_conv, tmp_path):
    from finetune.cli import main
    from finetune.features import FeatureExtractor
    from tests.ingredients import foolbox_imagenet

    photos = [p for p, _ in foolbox_imagenet()][:4]
    fx = FeatureExtractor(lite0, last_conv, ["gem", "crow"], resize=96)
    desc = fx.extract(photos)
    fx.save(tmp_path / "fx")                       # settings + the Backbone's model directory
    again = FeatureExtractor.load(tmp_path / "fx")  # no model passed: read from the folder
    assert np.allclose(again.extract(photos), desc, atol=1e-5)
    model_dir_fx = FeatureExtractor(str(tmp_path / "fx" / "model"), last_conv, ["gem", "crow"], resize=96)
    assert np.allclose(model_dir_fx.extract(photos), desc, atol=1e-5)
    out = tmp_path / "f.npy"
    assert main(["extract", "efficientnet_lite0", *map(str, photos), "--layer", last_conv, "--pooling", "gem",
                 "--pooling", "crow", "--resize", "96", "--out", str(out)]) == 0
    assert np.allclose(np.load(out), desc, atol=1e-5)

"""FeatureExtractor on a tiny protocol network (fast) — geometry, batching, scales, fit, save/load."""

import cv2
import mxnet as mx
import numpy as np
import pytest

from finetune.errors import ConfigError, UnknownNameError
from finetune.features import MOP, FeatureExtractor, GeM, l2_normalize
from finetune.testing import TinyNet


@pytest.fixture
def net():
    return TinyNet()


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in [(20, 30), (30, 20), (20, 30), (25, 25), (20, 30)]]


def manual(net, img, layer, pool, shorter=16, scale=1.0):
    """Reference: resize shorter side, normalise, forward one image, pool, L2."""
    h, w = img.shape[:2]
    f = shorter * scale / min(h, w)
    img = cv2.resize(img, (int(round(w * f)), int(round(h * f))), interpolation=cv2.INTER_LINEAR)
    x = (img.transpose(2, 0, 1).astype(np.float32) - 127) / 128
    out = net.features(mx.nd.array(x[None]), [layer])[0].asnumpy()
    return l2_normalize(pool(out))


def test_keep_aspect_descriptors_match_manual_one_by_one(net, images):
    fx = FeatureExtractor(net, "relu2", "max", batch_size=2)
    desc = fx.extract(images)
    assert desc.shape == (5, 8) and fx.layer_kinds() == {"relu2": "conv"}
    for img, d in zip(images, desc):
        assert np.allclose(d, manual(net, img, "relu2", lambda o: o.max(axis=(2, 3)))[0], atol=1e-5)
    # maps keep the aspect ratio: a 20x30 image gives a 16x24 input, an 8x12 map
    idx, outs = next(fx.iter_layer_outputs(images[:1]))
    assert outs[0].shape == (1, 8, 8, 12)


def test_longer_side_resize(net, images):
    fx = FeatureExtractor(net, "relu2", "max", resize=24, resize_side="longer")
    assert fx.prepare(images[0]).shape == (3, 16, 24)
    assert fx.prepare(images[1]).shape == (3, 24, 16)
    with pytest.raises(ConfigError, match="resize_side"):
        FeatureExtractor(net, "relu2", resize_side="width")


def test_batching_does_not_change_results(net, images):
    a = FeatureExtractor(net, "relu2", "gem", batch_size=1).extract(images)
    b = FeatureExtractor(net, "relu2", "gem", batch_size=16).extract(images)
    assert np.allclose(a, b, atol=1e-5)


def test_fc_layer_uses_the_centre_crop_and_the_fixed_size(net, images):
    fx = FeatureExtractor(net, ["relu2", "fc"], {"relu2": "avg"})
    assert fx.layer_kinds() == {"relu2": "conv", "fc": "fc"}
    desc = fx.extract(images)
    assert desc.shape == (5, 8 + 4)
    x = net.preprocess.transform(images[1])
    relu2, fc = net.features(mx.nd.array(x[None]), ["relu2", "fc"])
    ref = l2_normalize(np.concatenate([l2_normalize(relu2.asnumpy().mean(axis=(2, 3))), l2_normalize(fc.asnumpy())], 1))
    assert np.allclose(desc[1], ref[0], atol=1e-5)
    with pytest.raises(ConfigError, match="fully connected"):
        FeatureExtractor(net, "fc", scales=(1, 0.5)).extract(images)


def test_multiscale_averages_normalised_descriptors(net, images):
    scales = (1.0, 2 ** -0.5, 0.5)
    desc = FeatureExtractor(net, "relu2", "max", scales=scales).extract(images[:2])
    for img, d in zip(images[:2], desc):
        parts = [manual(net, img, "relu2", lambda o: o.max(axis=(2, 3)), scale=s)[0] for s in scales]
        assert np.allclose(d, l2_normalize(np.mean(parts, axis=0)), atol=1e-5)


def test_several_poolings_concatenate(net, images):
    fx = FeatureExtractor(net, ["relu1", "relu2"], ["max", "sum", "crow", "rmac"])
    assert fx.extract(images[:2]).shape == (2, 2 * 4 * 8)
    fx = FeatureExtractor(net, "relu2", {"relu2": [GeM(4.0), "rmac"]})
    assert fx.extract(images[:2]).shape == (2, 16)


def test_inputs_folder_paths_bgr_arrays_and_datasets(net, image_folder):
    fx = FeatureExtractor(net, "relu2", "avg")
    from finetune.data import list_images

    paths = list_images(image_folder)
    from_folder = fx.extract(image_folder)
    assert from_folder.shape == (24, 8)
    assert np.allclose(fx.extract(paths[:3]), from_folder[:3], atol=1e-6)
    bgr = cv2.imread(paths[0])
    assert np.allclose(fx.extract(bgr, color="BGR"), from_folder[:1], atol=1e-6)
    rgb = bgr[:, :, ::-1]

    class DS:
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return mx.nd.array(rgb, dtype="uint8"), 0

    assert np.allclose(fx.extract(DS()), np.repeat(from_folder[:1], 2, 0), atol=1e-6)
    grey = np.zeros((5, 20, 20), np.uint8)  # (N, H, W) grey batch ((3, H, W) reads as a (C, H, W) tensor: refused)
    assert fx.extract(grey).shape == (5, 8)


def test_record_dataset_and_image_list_inputs(net, image_folder, tmp_path):
    import finetune as ft

    images = ft.ImageList.from_folder(image_folder)
    ft.pack(images, tmp_path / "data", workers=1, quality=3, encoding=".png")
    records = ft.RecordDataset(tmp_path / "data", net.preprocess)
    fx = FeatureExtractor(net, "relu2", "avg")
    from_list = fx.extract(images)
    assert from_list.shape == (24, 8)
    assert np.allclose(fx.extract(records), from_list, atol=1e-5)

    class Normalised:
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return np.zeros((3, 16, 16), np.float32), 0

    with pytest.raises(ConfigError, match="already preprocessed"):
        fx.extract(Normalised())


def test_fit_pca_and_mop_then_save_load(net, images, tmp_path):
    rng = np.random.default_rng(1)
    train = [rng.integers(0, 255, (24, 24, 3), dtype=np.uint8) for _ in range(12)]
    with pytest.raises(ConfigError, match="fit"):
        FeatureExtractor(net, "relu2", "mop").extract(images)
    fx = FeatureExtractor(net, "relu2", {"relu2": [MOP(n_clusters=3, patch_dim=4), "max"]}, pca=5)
    with pytest.raises(ConfigError, match="fit"):
        fx.extract(images)
    assert fx.fit(train) is fx
    desc = fx.extract(images)
    assert desc.shape == (5, 5)
    assert np.allclose(np.linalg.norm(desc, axis=1), 1, atol=1e-5)
    fx.save(tmp_path / "fx", save_model=False)
    with pytest.raises(ConfigError, match="holds no model"):
        FeatureExtractor.load(tmp_path / "fx")
    again = FeatureExtractor.load(tmp_path / "fx", model=net)
    assert np.allclose(again.extract(images), desc, atol=1e-5)
    assert repr(again) == "FeatureExtractor(TinyNet, 'relu2', pooling={'relu2': [{'name': 'mop', " \
        "'n_clusters': 3, 'patch_dim': 4, 'levels': [[0.5, 0.125], [0.25, 0.0625]], 'max_patches': 20000, " \
        "'random_state': 0}, {'name': 'max'}]}, pca=5)"


def test_gem_p_is_saved(net, images, tmp_path):
    fx = FeatureExtractor(net, "relu2", GeM(2.5))
    fx.save(tmp_path / "g", save_model=False)
    again = FeatureExtractor.load(tmp_path / "g", model=net)
    assert again.poolings["relu2"][0].power == 2.5
    assert np.allclose(again.extract(images), fx.extract(images), atol=1e-6)


def test_errors(net):
    with pytest.raises(UnknownNameError, match="Did you mean 'relu2'"):
        FeatureExtractor(net, "relu_2")
    with pytest.raises(ConfigError, match="model protocol"):
        FeatureExtractor(object(), "x")
    with pytest.raises(ConfigError, match="scales"):
        FeatureExtractor(net, "relu2", scales=(1, 0))
    with pytest.raises(ConfigError, match="choose a pooling"):
        FeatureExtractor(net, "relu2", None).extract(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ConfigError, match="not in 'layers'"):
        FeatureExtractor(net, "relu2", {"relu1": "max"})
    with pytest.raises(FileNotFoundError):
        FeatureExtractor(net, "relu2").extract("/no/such/file.jpg")


def test_two_cpu_contexts_give_the_same_descriptors(images):
    one = FeatureExtractor(TinyNet(), "relu2", "max", batch_size=4).extract(images)
    two = FeatureExtractor(TinyNet(), "relu2", "max", batch_size=4, ctx=[mx.cpu(0), mx.cpu(1)]).extract(images)
    assert np.allclose(one, two, atol=1e-6)


def test_folder_with_rare_formats_and_link_loops_is_listed_once(net, linked_folder):
    import os
    import time

    from finetune.data import ImageList, read_image

    root, names = linked_folder
    fx = FeatureExtractor(net, "relu2", "avg")
    t0 = time.time()
    desc = fx.extract(root)
    assert time.time() - t0 < 30
    assert desc.shape == (len(names), 8)
    assert len(ImageList.from_folder(root)) == len(names)
    by_hand = fx.extract([read_image(os.path.join(root, n)) for n in names])
    assert np.allclose(desc, by_hand, atol=1e-6)

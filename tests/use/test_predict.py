import json
import os
import time

import cv2
import mxnet as mx
import numpy as np
import pytest

from finetune import Prediction, Predictions, Predictor, Preprocess, read_image
from finetune.errors import ConfigError, DataError, MissingFileError, ModelError
from finetune.use import load_name_map

from .conftest import make_tiny


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _by_hand(model, paths):
    x = np.stack([model.preprocess.read(p) for p in paths])
    return _softmax(model(mx.nd.array(x)).asnumpy())


def test_folder_prediction_matches_hand_written_preprocessing(tiny_model, image_folder):
    preds = Predictor(tiny_model, batch_size=5).predict(image_folder, top_k=2)
    paths = sorted(p for p in image_folder.rglob("*") if p.is_file())
    assert [p.source for p in preds] == [str(p) for p in paths]
    expected = _by_hand(tiny_model, paths)
    for p, row in zip(preds, expected):
        assert p.ok and len(p.indices) == 2
        assert p.index == int(row.argmax())
        np.testing.assert_allclose(p.probabilities, np.sort(row)[::-1][:2], atol=1e-6)
        assert p.name == tiny_model.class_names[p.index]


def test_results_do_not_depend_on_batching_threads_or_hybridization(image_folder):
    paths = sorted(image_folder.rglob("*.png"))
    a = Predictor(make_tiny(), batch_size=1, workers=1, hybridize=False).predict_proba(paths)
    b = Predictor(make_tiny(), batch_size=3, workers=2).predict_proba(paths)
    c = Predictor(make_tiny(), batch_size=7, ctx=[mx.cpu(0), mx.cpu(1)]).predict_proba(paths)
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, c, atol=1e-6)
    np.testing.assert_allclose(a.sum(axis=1), 1, atol=1e-5)


def test_one_cpu_runs_a_fused_copy_with_the_same_results(image_folder):
    import finetune as ft

    paths = sorted(image_folder.rglob("*.png"))
    model = ft.HeadReplacer(3).apply(ft.Backbone.from_zoo("efficientnet_lite0", weights=None), class_names=list("abc"))
    model.preprocess = model.preprocess.replace(size=(32, 32), resize=32)
    fused, plain = Predictor(model, workers=1), Predictor(model, workers=1, fuse=False)
    assert fused.fused and isinstance(fused.model, ft.FusedModel) and fused.model.input_size == (32, 32)
    assert not plain.fused and plain.model is model
    np.testing.assert_allclose(fused.logits(paths), plain.logits(paths), rtol=1e-4, atol=1e-4)
    assert fused.class_names == list("abc") and fused.preprocess == model.preprocess
    # several devices or no hybridization: the network as it is; fuse=True insists on one CPU
    assert not Predictor(model, ctx=[mx.cpu(0), mx.cpu(1)]).fused
    assert not Predictor(model, hybridize=False).fused
    with pytest.raises(ConfigError, match="fuse=False"):
        Predictor(model, ctx=[mx.cpu(0), mx.cpu(1)], fuse=True)


def test_arrays_need_their_colour_order_and_it_is_honoured(tiny_model, image_folder):
    path = sorted(image_folder.rglob("*.jpg"))[0]
    rgb = read_image(path, "RGB")
    pred = Predictor(tiny_model)
    with pytest.raises(ConfigError, match="color='BGR'"):
        pred.predict(rgb)
    from_rgb = pred.predict_proba(rgb, color="RGB")
    from_bgr = pred.predict_proba(cv2.imread(str(path)), color="BGR")
    from_file = pred.predict_proba(path)
    np.testing.assert_allclose(from_rgb, from_bgr, atol=1e-6)
    np.testing.assert_allclose(from_rgb, from_file, atol=1e-6)
    # a colour mix-up changes the answer, which is why it must be stated
    assert not np.allclose(pred.predict_proba(rgb, color="BGR"), from_rgb, atol=1e-4)


def test_bgr_network_gets_bgr_pixels(image_folder):
    rgb_net, bgr_net = make_tiny(color="RGB"), make_tiny(color="BGR")
    path = sorted(image_folder.rglob("*.jpg"))[0]
    img = read_image(path, "RGB")
    p_bgr = Predictor(bgr_net).predict_proba(path)
    # the BGR network must see the channels swapped compared with the RGB one
    flipped = Predictor(rgb_net).predict_proba(img[:, :, ::-1].copy(), color="RGB")
    np.testing.assert_allclose(p_bgr, flipped, atol=1e-6)


def test_unreadable_inputs_are_reported_per_item(tiny_model, image_folder, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    good = sorted(image_folder.rglob("*.jpg"))[:2]
    inputs = [good[0], bad, tmp_path / "missing.png", good[1], b"\x00\x01"]
    preds = Predictor(tiny_model, batch_size=2).predict(inputs)
    assert [p.ok for p in preds] == [True, False, False, True, False]
    assert "not a decodable image" in preds[1].error
    assert "does not exist" in preds[2].error
    assert len(preds.errors) == 3
    assert "ERROR" in preds.to_table()
    with pytest.warns(UserWarning, match="3 of 5 images could not be read"):
        proba = Predictor(tiny_model).predict_proba(inputs)
    assert np.isnan(proba[[1, 2, 4]]).all() and np.isfinite(proba[[0, 3]]).all()


def test_all_unreadable_still_returns_one_prediction_each(tiny_model, tmp_path):
    preds = Predictor(tiny_model).predict([tmp_path / "a.jpg", tmp_path / "b.jpg"])
    assert len(preds) == 2 and not any(p.ok for p in preds)


def test_name_map_translates_display_names(tiny_model, image_folder, tmp_path):
    tsv = tmp_path / "zh.txt"
    tsv.write_text("# English -> Chinese\ncat\t猫\ndog\t狗\n", encoding="utf-8")
    preds = Predictor(tiny_model, names=tsv).predict(image_folder, top_k=3)
    for p in preds:
        assert set(p.display) == {"猫", "狗", "fish"}  # fish is not in the map: keeps its name
        assert p.display[p.names.index("cat")] == "猫"
    data = json.loads(preds.to_json())
    assert data[0]["top"][0]["display"] in ("猫", "狗", "fish")
    js = tmp_path / "zh.json"
    js.write_text(json.dumps({"cat": "猫"}, ensure_ascii=False), encoding="utf-8")
    assert load_name_map(js) == {"cat": "猫"}
    bad = tmp_path / "bad.txt"
    bad.write_text("cat 猫\n", encoding="utf-8")
    with pytest.raises(DataError, match="bad.txt:1"):
        load_name_map(bad)
    with pytest.raises(MissingFileError):
        load_name_map(tmp_path / "nope.txt")


def test_prediction_values_render_and_serialise(tmp_path):
    p = Prediction("a.jpg", (2, 0, 1, 3), ("c", "a", "b", "d"), (0.5, 0.3, 0.15, 0.05))
    assert repr(p) == "Prediction('a.jpg', c 0.500, a 0.300, b 0.150, ...)"
    assert p.to_dict()["top"][1] == {"index": 0, "name": "a", "display": "a", "probability": 0.3}
    ps = Predictions([p, Prediction("b.jpg", error="boom")])
    assert ps.to_table(top_k=1).splitlines() == [
        "source  rank  class  probability",
        "a.jpg      1  c           0.5000",
        "b.jpg      -  ERROR: boom",
    ]
    rows = ps.to_records(top_k=2)
    assert [r["rank"] for r in rows] == [1, 2, None]
    out = tmp_path / "p.json"
    ps.to_json(out)
    assert json.loads(out.read_text())[1] == {"source": "b.jpg", "error": "boom", "top": []}


def test_top_k_is_clipped_and_validated(tiny_model):
    img = np.zeros((20, 20, 3), np.uint8)
    assert len(Predictor(tiny_model).predict(img, top_k=10, color="RGB")[0].indices) == 3
    with pytest.raises(ConfigError, match="top_k"):
        Predictor(tiny_model).predict(img, top_k=0, color="RGB")


def test_model_without_preprocessing_is_refused():
    net = mx.gluon.nn.Dense(2)
    with pytest.raises(ModelError, match="preprocess"):
        Predictor(net)
    with pytest.raises(ConfigError, match="batch_size"):
        Predictor(make_tiny(), batch_size=0)


def test_mean_image_model_uses_it(image_folder):
    net = make_tiny()
    mean = np.random.default_rng(1).uniform(0, 255, (3, 20, 20)).astype(np.float32)
    net.preprocess = Preprocess(size=(16, 16), resize=16, mean_image=mean, std=(64, 64, 64))
    path = sorted(image_folder.rglob("*.jpg"))[0]
    x = (np.ascontiguousarray(net.preprocess.resize_crop(read_image(path)).transpose(2, 0, 1), dtype=np.float32)
         - mean[:, 2:18, 2:18]) / 64
    expected = _softmax(net(mx.nd.array(x[None])).asnumpy())
    np.testing.assert_allclose(Predictor(net).predict_proba(path), expected, atol=1e-6)


def test_folder_without_images_is_an_error(tiny_model, tmp_path):
    with pytest.raises(DataError, match="no image files"):
        Predictor(tiny_model).predict(tmp_path)


def test_folder_with_rare_formats_and_link_loops_is_listed_once(tiny_model, linked_folder):
    from finetune.data import ImageList

    root, names = linked_folder
    t0 = time.time()
    preds = Predictor(tiny_model).predict(root)
    assert time.time() - t0 < 30
    assert [os.path.relpath(p.source, root) for p in preds] == names  # .webp .pgm .jpe .PPM, once each
    assert all(p.ok for p in preds), preds.errors
    assert sorted(p.source for p in preds) == sorted(ImageList.from_folder(root).paths)
    np.testing.assert_allclose(Predictor(tiny_model).predict_proba([root / n for n in names]),
                               Predictor(tiny_model).predict_proba(root), atol=1e-6)

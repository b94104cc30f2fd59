"""Prediction, evaluation, Grad-CAM and export on real networks and real photos."""

import cv2
import mxnet as mx
import numpy as np
import pytest

import finetune as ft
from finetune.models._io._onnx import _run_onnx

from ..ingredients import foolbox_imagenet, nsfw_caffe, real_photos

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


@pytest.fixture(scope="module")
def lite0():
    return ft.Backbone.from_zoo("efficientnet_lite0")


@pytest.fixture(scope="module")
def nsfw():
    proto, model = nsfw_caffe()
    # the model's documented preprocessing (yahoo/open_nsfw classify_nsfw.py): the whole image
    # resized to 256x256, centre crop 224, BGR, minus (104, 117, 123)
    bb = ft.Backbone.from_caffe(proto, model, mean=(104, 117, 123))
    bb.preprocess = bb.preprocess.replace(resize=256, resize_mode="stretch")
    bb.class_names = ["sfw", "nsfw"]
    return bb


def test_efficientnet_lite0_classifies_foolbox_photos_from_jpeg_files(lite0, plot_dir):
    photos = foolbox_imagenet()
    preds = ft.Predictor(lite0, batch_size=8).predict([p for p, _ in photos], top_k=5)
    top1 = sum(p.index == label for p, (_, label) in zip(preds, photos))
    top5 = sum(label in p.indices for p, (_, label) in zip(preds, photos))
    assert top1 >= 17, preds.to_table(top_k=1)
    assert top5 >= 19
    ft.plot_predictions(preds[:4], plot_dir / "using_predictions.png", ncols=4, top_k=3)


def test_caffe_nsfw_matches_opencv_dnn(nsfw):
    proto, model = nsfw_caffe()
    files = [p for p, _ in foolbox_imagenet()[:4]] + [p for p in real_photos() if p.suffix == ".jpg"][:3]
    ours = ft.Predictor(nsfw, batch_size=4).predict_proba(files)
    net = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    reference = []
    for f in files:
        img = cv2.resize(cv2.imread(str(f)), (256, 256), interpolation=cv2.INTER_LINEAR)[16:240, 16:240]
        net.setInput(cv2.dnn.blobFromImage(img.astype(np.float32), 1.0, (224, 224), (104, 117, 123),
                                           swapRB=False, crop=False))
        reference.append(net.forward().reshape(-1))
    np.testing.assert_allclose(ours, np.array(reference), atol=1e-4, rtol=0)


def test_gradcam_on_the_caffe_model(nsfw):
    cam = ft.GradCAM(nsfw)
    assert cam.layer == "relu_stage3_block2"
    photo = foolbox_imagenet()[0][0]
    result = cam(photo)  # the predicted class: "sfw" for an ImageNet photo
    assert result.class_name == "sfw" and result.heatmap.shape == cv2.imread(str(photo)).shape[:2]
    assert np.isfinite(result.heatmap).all() and result.heatmap.max() == pytest.approx(1, abs=0.05)
    other = cam(photo, target="nsfw")
    assert other.class_name == "nsfw" and other.probability < 0.01


def _pasted_cat(corner):
    import skimage.data

    cat = cv2.resize(skimage.data.chelsea(), None, fx=0.45, fy=0.45, interpolation=cv2.INTER_AREA)  # RGB
    canvas = np.full((448, 448, 3), 128, np.uint8)
    h, w = cat.shape[:2]
    top, left = (24, 24) if corner == "top-left" else (448 - 24 - h, 448 - 24 - w)
    canvas[top:top + h, left:left + w] = cat
    return canvas, (top, left, top + h, left + w)


@pytest.mark.parametrize("corner", ["top-left", "bottom-right"])
def test_gradcam_mass_lies_on_the_pasted_object(lite0, corner, plot_dir):
    canvas, box = _pasted_cat(corner)
    result = ft.GradCAM(lite0)(canvas, color="RGB")
    assert "cat" in result.class_name  # Egyptian cat / tabby / tiger cat
    area = (box[2] - box[0]) * (box[3] - box[1]) / canvas.shape[0] / canvas.shape[1]
    mass = result.mass_inside(box)
    assert mass > 0.5 and mass > 3 * area, (mass, area)
    if corner == "bottom-right":
        ft.plot_gradcam(result, plot_dir / "using_gradcam.png", ncols=1)


def test_gradcam_same_hybridized_or_not_and_through_the_private_split(lite0):
    canvas, _ = _pasted_cat("top-left")
    layer = ft.GradCAM(lite0).layer  # the last convolutional block
    cam = ft.GradCAM(lite0, layer=layer)
    a = cam(canvas, color="RGB")
    split = ft.GradCAM(lite0, layer=layer)
    split._native = False  # the fallback used for plain HybridBlocks
    b = split(canvas, color="RGB")
    lite0.hybridize()
    c = cam(canvas, color="RGB")
    for other in (b, c):
        assert other.class_index == a.class_index
        np.testing.assert_allclose(other.cam, a.cam, rtol=1e-3, atol=1e-4 * a.cam.max())


def test_saved_model_file_record_and_export_agree(lite0, tmp_path):
    image = foolbox_imagenet()[3][0]
    folder = tmp_path / "images" / "thing"
    folder.mkdir(parents=True)
    (folder / "a.jpg").write_bytes(image.read_bytes())
    model = ft.HeadReplacer(3).apply(lite0, class_names=["thing", "other", "third"])
    saved = model.save(tmp_path / "model")
    predictor = ft.Predictor.load(saved)
    from_file = predictor.predict_proba(folder / "a.jpg")
    # a record file made from the same image (bytes stored as they are)
    ft.pack(ft.ImageList.from_folder(tmp_path / "images"), tmp_path / "val", pass_through=True, workers=1)
    report = ft.evaluate(predictor, ft.RecordDataset(tmp_path / "val"))
    dep = ft.export_for_deployment(ft.load_model(saved), tmp_path / "deploy", onnx=True)
    from_export = ft.Predictor.load(tmp_path / "deploy").predict_proba(folder / "a.jpg")
    x = predictor.preprocess.read(folder / "a.jpg")[None]
    logits = _run_onnx(dep.onnx, dep.input_name, x)
    from_onnx = mx.nd.softmax(mx.nd.array(logits)).asnumpy()
    assert from_file.shape == (1, 3) and abs(from_file.sum() - 1) < 1e-5
    np.testing.assert_allclose(report.probabilities, from_file, atol=1e-6)
    np.testing.assert_allclose(from_export, from_file, atol=1e-6)
    np.testing.assert_allclose(from_onnx, from_file, atol=1e-4)


def test_cli_predict_with_a_zoo_name(capsys):
    from finetune.cli import main

    photo, label = foolbox_imagenet()[1]
    assert main(["-q", "predict", "efficientnet_lite0", str(photo), "--top-k", "3", "--json"]) == 0
    out = __import__("json").loads(capsys.readouterr().out)
    assert out[0]["top"][0]["index"] == label and len(out[0]["top"]) == 3


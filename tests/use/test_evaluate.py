import json
import os

import numpy as np
import pytest

import finetune as ft
from finetune import EvaluationReport, ImageList, Predictor, RecordDataset, pack
from finetune.errors import ConfigError, DataError


def _report():
    probs = np.array([[0.7, 0.2, 0.1],   # 0 -> 0
                      [0.1, 0.3, 0.6],   # 0 -> 2 (top-2 miss: 0 has 0.1 < 0.3)
                      [0.2, 0.5, 0.3],   # 1 -> 1
                      [0.9, 0.05, 0.05],  # 1 -> 0 confidently wrong
                      [0.1, 0.2, 0.7]])  # 2 -> 2
    return EvaluationReport([0, 0, 1, 1, 2], probs, ["cat", "dog", "fish"],
                            sources=[f"{i}.jpg" for i in range(5)], top_k=2)


def test_report_numbers_by_hand():
    r = _report()
    assert r.top1 == pytest.approx(3 / 5)
    assert r.topk == pytest.approx(4 / 5)  # only image 1 misses the top 2
    assert r.confusion.tolist() == [[1, 0, 1], [1, 1, 0], [0, 0, 1]]
    assert [c["support"] for c in r.per_class] == [2, 2, 1]
    assert [c["accuracy"] for c in r.per_class] == [0.5, 0.5, 1.0]
    assert r.per_class[2]["precision"] == pytest.approx(0.5)
    assert r.mean_class_accuracy == pytest.approx(2 / 3)
    wrong = r.most_confident_errors()
    assert [w["source"] for w in wrong] == ["3.jpg", "1.jpg"]
    assert wrong[0]["predicted_name"] == "cat" and wrong[0]["label_name"] == "dog"
    np.testing.assert_allclose(r.normalized_confusion().sum(axis=1), 1)


def test_report_text_and_json_round_trip(tmp_path):
    r = _report()
    text = str(r)
    assert "top-1 accuracy   60.00 %" in text and "top-2 accuracy   80.00 %" in text
    assert "3.jpg: dog predicted as cat (0.900)" in text
    assert repr(r) == "EvaluationReport(images=5, top1=0.6000, top2=0.8000)"
    path = tmp_path / "report.json"
    r.save(path)
    data = json.loads(path.read_text())
    assert data["summary"]["top1"] == pytest.approx(0.6)
    back = EvaluationReport.load(path)
    assert back.top1 == r.top1 and back.topk == r.topk and back.class_names == r.class_names
    np.testing.assert_allclose(back.probabilities, r.probabilities, atol=1e-6)
    assert (back.confusion == r.confusion).all()


def test_class_without_images_is_nan_in_text_and_null_in_json(tmp_path):
    r = EvaluationReport([0, 0], np.array([[0.9, 0.1], [0.8, 0.2]]), ["a", "b"])
    assert np.isnan(r.per_class[1]["accuracy"])
    assert r.to_dict()["per_class"][1]["accuracy"] is None
    assert str(r).splitlines()[-1].split() == ["b", "0", "-", "-"]


def test_report_checks_its_inputs():
    with pytest.raises(DataError, match="class indices"):
        EvaluationReport([0, 3], np.full((2, 2), 0.5))
    with pytest.raises(DataError, match="2 class names for 3"):
        EvaluationReport([0], np.full((1, 3), 1 / 3), ["a", "b"])


def test_evaluate_is_callable_from_the_package(tiny_model, image_folder):
    images = ImageList.from_folder(image_folder)
    report = ft.evaluate(tiny_model, images, top_k=2)
    assert report.num_images == 24 and report.top_k == 2
    assert report.class_names == ["cat", "dog", "fish"]
    proba = Predictor(tiny_model).predict_proba(images.paths)
    np.testing.assert_allclose(report.probabilities, proba, atol=1e-6)


def test_evaluate_on_records_equals_predicting_the_files(tiny_model, image_folder, tmp_path):
    images = ImageList.from_folder(image_folder)
    pack(images, tmp_path / "val", encoding=".png", quality=3, workers=1)  # lossless records
    records = RecordDataset(tmp_path / "val")
    report = ft.evaluate(Predictor(tiny_model), records)
    assert [int(x) for x in report.labels] == images.single_labels()
    np.testing.assert_allclose(report.probabilities, Predictor(tiny_model).predict_proba(images.paths), atol=1e-6)
    assert report.sources[0] == images.entries[0].path  # named by the list pack wrote beside the records
    os.remove(tmp_path / "val.lst")
    records = RecordDataset(tmp_path / "val")
    assert ft.evaluate(Predictor(tiny_model), records).sources[0] == "record[0]"
    preds = Predictor(tiny_model).predict(records, top_k=1)
    assert [p.label for p in preds] == images.single_labels() and preds[0].source == "record[0]"


def test_evaluate_with_labels_by_name_and_unreadable_images(tiny_model, image_folder, tmp_path):
    paths = sorted(image_folder.rglob("*.jpg"))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"xx")
    labels = [p.parent.name for p in paths] + ["cat"]
    report = ft.evaluate(tiny_model, paths + [bad], labels=labels)
    assert report.num_images == len(paths) and len(report.errors) == 1
    assert "unreadable: " in str(report)
    with pytest.raises(DataError, match="not one of the model's class names"):
        ft.evaluate(tiny_model, paths[:1], labels=["zebra"])
    with pytest.raises(ConfigError, match="labelled images"):
        ft.evaluate(tiny_model, paths)


def test_class_names_come_from_the_dataset_when_the_model_has_none(tiny_model, image_folder):
    tiny_model.class_names = None
    report = ft.evaluate(tiny_model, ImageList.from_folder(image_folder))
    assert report.class_names == ["cat", "dog", "fish"]


def test_evaluating_records_names_images_by_their_files_from_the_list(image_folder, tmp_path):
    import finetune as ft
    from mxnet.gluon import nn

    images = ft.ImageList.from_folder(image_folder)
    images.write_lst(tmp_path / "r.lst", shuffle=False)
    ft.pack(images, tmp_path / "r", workers=1)
    net = nn.HybridSequential()
    net.add(nn.GlobalAvgPool2D(), nn.Dense(3))
    net.initialize()
    net.preprocess, net.class_names = ft.Preprocess(size=(16, 16), resize=16), images.class_names
    report = ft.evaluate(net, ft.RecordDataset(tmp_path / "r.rec"))
    assert sorted(report.sources) == sorted(e.path for e in images.entries)
    assert any(s.startswith("cat/") for s in report.sources)
    (tmp_path / "r.lst").unlink()  # without the list: positions
    report = ft.evaluate(net, ft.RecordDataset(tmp_path / "r.rec"))
    assert report.sources[0] == "record[0]"


def test_a_folder_without_class_folders_or_images_says_so(tiny_model, tmp_path):
    """An image beside the class folders was "label '.'"; an empty folder "None of the 0 images could be read"."""
    import cv2

    loose = tmp_path / "loose"
    loose.mkdir()
    cv2.imwrite(str(loose / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="not in a class sub-folder"):
        ft.evaluate(tiny_model, str(loose))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no images to evaluate"):
        ft.evaluate(tiny_model, str(empty))

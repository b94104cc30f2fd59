"""Results keep the image they were computed from, and figures read pixels through it.

Every input form the image source accepts (files, a list file, arrays, a batch, encoded bytes, a
record file with and without its list, a dataset) gives a report whose errors are drawn from their
own images; a report loaded from JSON falls back to the files its sources name; an image that
cannot be read is a placeholder under its name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import mxnet as mx
import numpy as np
import pytest

import finetune as ft
from finetune import EvaluationReport, ImageList, Predictor, evaluate, pack, plot_errors, plot_predictions
from finetune.data import ImageItem
from finetune.errors import DataError, FinetuneError, ImageDecodeError

from .conftest import make_tiny

CLASSES = ("cat", "dog", "fish")


def always_cat():
    """A tiny model that predicts 'cat' for every image: every dog and fish is an error."""
    net = make_tiny(CLASSES)
    net.fc.weight.set_data(mx.nd.zeros(net.fc.weight.shape))
    net.fc.bias.set_data(mx.nd.array([3.0, 0.0, 0.0]))
    return net


@pytest.fixture
def folder(tmp_path):
    """3 classes x 3 lossless 24x24 PNGs, each a distinct random picture."""
    rng = np.random.default_rng(1)
    root = tmp_path / "images"
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(root / name / f"{name}_{i}.png"), rng.integers(0, 256, (24, 24, 3), np.uint8))
    return root


def _rgb(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


class _Pairs:
    """A dataset giving (RGB image, label) by index."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


def _inputs(form, folder, tmp_path):
    """``(evaluate kwargs, expected RGB image of each report row)`` for one input form."""
    images = ImageList.from_folder(folder)
    paths, labels = images.paths, [int(e.label) for e in images.entries]
    pixels = [_rgb(p) for p in paths]
    if form == "files":
        return dict(dataset=paths, labels=labels), pixels
    if form == "image_list":
        return dict(dataset=images), pixels
    if form == "arrays":
        return dict(dataset=list(pixels), labels=labels, color="RGB"), pixels
    if form == "float_arrays":  # float pixels in 0-255 are drawn as the same image
        return dict(dataset=[p.astype(np.float32) for p in pixels], labels=labels, color="RGB"), pixels
    if form == "batch":
        return dict(dataset=np.stack(pixels)[..., ::-1], labels=labels, color="BGR"), pixels
    if form == "bytes":
        return dict(dataset=[open(p, "rb").read() for p in paths], labels=labels), pixels
    if form == "dataset":
        return dict(dataset=_Pairs(pixels, labels), color="RGB"), pixels
    if form.startswith("records"):
        if form == "records_named_by_list":  # sources are then paths relative to the image root
            images.write_lst(tmp_path / "val.lst", shuffle=False)
        pack(images, tmp_path / "val", encoding=".png", quality=3, workers=1)
        return dict(dataset=ft.RecordDataset(tmp_path / "val")), pixels
    raise AssertionError(form)


FORMS = ["files", "image_list", "arrays", "float_arrays", "batch", "bytes", "dataset", "records", "records_named_by_list"]


@pytest.mark.parametrize("form", FORMS)
def test_plot_errors_draws_each_error_from_its_own_image(form, folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative source must not be looked up in the working folder
    kwargs, pixels = _inputs(form, folder, tmp_path)
    report = evaluate(always_cat(), **kwargs)
    assert len(report.items) == report.num_images == 9 and report.error_items == []
    rows = report.most_confident_errors(16)
    assert len(rows) == 6  # the dogs and the fish
    fig = plot_errors(report, tmp_path / "errors.png", ncols=3)
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == len(rows)
    for ax, row in zip(fig.axes, rows):
        np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), pixels[row["index"]])
        assert os.path.basename(report.sources[row["index"]])[:28] in ax.get_title()
    assert cv2.imread(str(tmp_path / "errors.png")) is not None


@pytest.mark.parametrize("form", ["files", "arrays", "records"])
def test_predictions_keep_their_items_and_plot_from_them(form, folder, tmp_path):
    kwargs, pixels = _inputs(form, folder, tmp_path)
    preds = Predictor(always_cat()).predict(kwargs["dataset"], top_k=2, color=kwargs.get("color"))
    assert all(isinstance(p.item, ImageItem) and p.item.source == p.source for p in preds)
    fig = plot_predictions(preds, ncols=3)
    for ax, expected in zip(fig.axes, pixels):
        np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), expected)


def test_the_item_is_not_part_of_the_value_of_a_prediction(folder):
    path = str(sorted(folder.rglob("*.png"))[0])
    pred = Predictor(always_cat()).predict(path, top_k=1)[0]
    by_hand = ft.Prediction(pred.source, pred.indices, pred.names, pred.probabilities)
    assert pred == by_hand and hash(pred) == hash(by_hand) and repr(pred) == repr(by_hand)
    assert "item" not in pred.to_dict() and by_hand.item is None


def test_a_report_loaded_from_json_plots_the_files_its_sources_name(folder, tmp_path):
    report = evaluate(always_cat(), ImageList.from_folder(folder))
    report.save(tmp_path / "r.json")
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["sources"] == report.sources  # display strings, as before
    assert all(set(row) == {"source", "label", "label_name", "predicted", "predicted_name", "probability",
                            "label_probability"} for row in saved["most_confident_errors"])
    back = EvaluationReport.load(tmp_path / "r.json")
    assert back.items == [None] * 9 and back.error_items == []
    fig = plot_errors(back)
    rows = back.most_confident_errors(16)
    assert len([ax for ax in fig.axes if ax.images]) == len(rows) == 6
    for ax, row in zip(fig.axes, rows):
        np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), _rgb(row["source"]))


def test_a_loaded_report_without_files_draws_placeholders(folder, tmp_path):
    pack(ImageList.from_folder(folder), tmp_path / "val", encoding=".png", quality=3, workers=1)
    evaluate(always_cat(), ft.RecordDataset(tmp_path / "val")).save(tmp_path / "r.json")
    back = EvaluationReport.load(tmp_path / "r.json")  # sources relative to the image root: no file to read
    fig = plot_errors(back)
    rows = back.most_confident_errors(16)
    for ax, row in zip(fig.axes, rows):
        assert not ax.images and [t.get_text() for t in ax.texts] == ["no image"]
        assert os.path.basename(row["source"]) in ax.get_title()


def _garbage(path):
    path.write_bytes(b"not an image")


def _empty(path):
    path.write_bytes(b"")


def _truncated(path):
    path.write_bytes(path.read_bytes()[:60])


def _deleted(path):
    path.unlink()


@pytest.mark.parametrize("damage", [_garbage, _empty, _truncated, _deleted])
def test_an_image_that_fails_to_read_is_a_placeholder_under_its_name(damage, folder):
    report = evaluate(always_cat(), ImageList.from_folder(folder))
    rows = report.most_confident_errors(16)
    broken = rows[2]
    damage(Path(broken["source"]))
    with pytest.raises(FinetuneError):
        report.items[broken["index"]].read("RGB")
    fig = plot_errors(report)
    assert len([ax for ax in fig.axes if ax.images]) == len(rows) - 1
    ax = fig.axes[2]
    assert not ax.images and [t.get_text() for t in ax.texts] == ["unreadable"]
    assert Path(broken["source"]).name in ax.get_title()


def test_an_unreadable_input_keeps_its_item_and_plots_as_a_placeholder(folder, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    paths = sorted(str(p) for p in folder.rglob("*.png"))[:3] + [str(bad)]
    report = evaluate(always_cat(), paths, labels=[1, 1, 1, 1])
    assert report.errors[0][0] == str(bad) and report.error_items[0].source == str(bad)
    with pytest.raises(ImageDecodeError):  # typed: a DataError, a ValueError
        report.error_items[0].read("RGB")
    preds = Predictor(always_cat()).predict(paths, top_k=1)
    assert preds[-1].error and preds[-1].item.source == str(bad)
    with pytest.raises(DataError):
        preds[-1].item.read()
    fig = plot_predictions(preds)
    assert [bool(ax.images) for ax in fig.axes[:4]] == [True, True, True, False]
    assert [t.get_text() for t in fig.axes[3].texts] == ["unreadable"] and "bad.png" in fig.axes[3].get_title()


def test_report_items_are_one_per_row():
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    with pytest.raises(DataError, match="one of 'items' per entry of 'labels'"):
        EvaluationReport([0, 1], probs, items=[None])
    with pytest.raises(DataError, match="one of 'error_items' per entry of 'errors'"):
        EvaluationReport([0, 1], probs, errors=[("x.png", "corrupt")], error_items=[])
    report = EvaluationReport([1, 1], probs)
    assert report.items == [None, None] and report.most_confident_errors()[0]["index"] == 0
    assert "index" not in report.to_dict()["most_confident_errors"][0]


def test_gradcam_results_keep_their_item_and_the_figure_names_it(folder):
    from finetune import GradCAM, plot_gradcam

    path = sorted(folder.rglob("*.png"))[0]
    result = GradCAM(always_cat())(path)
    assert result.item.source == str(path)
    np.testing.assert_array_equal(result.image, result.item.read("RGB"))
    fig = plot_gradcam(result)
    assert fig.axes[0].get_title() == path.name


def test_evaluate_command_plots_errors_of_records_named_by_their_list(folder, tmp_path, monkeypatch):
    """The records' sources are list paths relative to the image root: the figure reads the records."""
    from finetune.cli import main
    import finetune.use

    ft.export_for_deployment(always_cat(), tmp_path / "model")
    images = ImageList.from_folder(folder)
    images.write_lst(tmp_path / "val.lst", shuffle=False)
    pack(images, tmp_path / "val", encoding=".png", quality=3, workers=1)
    figures = []

    def keep(*args, **kwargs):
        figures.append(plot_predictions(*args, **kwargs))
        return figures[-1]

    monkeypatch.setattr(finetune.use, "plot_predictions", keep)
    monkeypatch.chdir(tmp_path)
    assert main(["-q", "evaluate", str(tmp_path / "model"), str(tmp_path / "val.rec"),
                 "--plots", str(tmp_path / "plots")]) == 0
    assert len([ax for ax in figures[0].axes if ax.images]) == 6
    assert cv2.imread(str(tmp_path / "plots" / "most_confident_errors.png")) is not None


@pytest.mark.parametrize("as_records", [True, False])
def test_evaluate_matches_labels_to_the_model_by_class_name_never_by_position(folder, tmp_path, as_records):
    """Images of two of the model's three classes (cat, fish): fish is label 1 among them, 2 for the model.
    Matched by position, every fish would be scored as a dog."""
    import shutil

    sub = tmp_path / "sub"
    for name in ("cat", "fish"):
        shutil.copytree(folder / name, sub / name)
    source = str(sub)
    if as_records:
        pack(ImageList.from_folder(sub), tmp_path / "val", workers=1)
        source = str(tmp_path / "val")
    report = evaluate(always_cat(), source, tta=False)
    assert sorted(set(report.labels)) == [0, 2] and report.top1 == pytest.approx(0.5)
    other = tmp_path / "other"
    shutil.copytree(folder / "cat", other / "apple")
    with pytest.raises(DataError, match="'apple' is not one of the model's class names"):
        evaluate(always_cat(), str(other))

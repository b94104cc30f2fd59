import csv
import json

import cv2
import numpy as np
import pytest

from finetune import (GradCAM, Prediction, Predictions, Predictor, plot_confusion_matrix, plot_gradcam,
                      plot_history, plot_predictions)
from finetune.errors import DataError
from finetune.use import EvaluationReport
from finetune.use import load_history

from .conftest import make_tiny


def _history():
    rows = []
    lr = 0.1
    for e in range(1, 13):
        if e in (6, 10):
            lr /= 5
        rows.append({"epoch": e, "lr": lr, "train_loss": 2.5 * 0.8 ** e, "val_loss": 2.4 * 0.85 ** e + 0.1,
                     "train_top1": 1 - 0.7 * 0.8 ** e, "val_top1": 0.9 - 0.6 * 0.85 ** e,
                     "val_top5": 0.98 - 0.3 * 0.85 ** e})
    return rows


def _png_ok(path, min_size=(300, 300)):
    img = cv2.imread(str(path))
    assert img is not None, path
    assert img.shape[0] >= min_size[0] and img.shape[1] >= min_size[1]
    assert img.std() > 5  # not blank
    return img


def test_history_from_records_csv_json_and_columns_agree(tmp_path, plot_dir):
    rows = _history()
    csv_path = tmp_path / "history.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    json_path = tmp_path / "history.json"
    json_path.write_text(json.dumps(rows))
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    for source in (rows, csv_path, json_path, columns, {"epochs": rows}):
        loaded = load_history(source)
        assert [r["epoch"] for r in loaded] == list(range(1, 13))
        assert loaded[5]["lr"] == pytest.approx(0.02)
    fig = plot_history(csv_path, plot_dir / "using_history.png", title="fine-tuning")
    ax_loss, ax_acc = fig.axes
    drops = [line.get_xdata()[0] for line in ax_loss.lines if line.get_linestyle() == "--"]
    assert drops == [6, 10]  # the two LR reductions
    assert {t.get_text() for t in ax_acc.get_legend().get_texts()} >= {"train top-1", "val top-1", "val top-5",
                                                                       "LR reduced"}
    assert max(ax_acc.lines[1].get_ydata()) > 1  # plotted in percent
    _png_ok(plot_dir / "using_history.png")


def test_history_without_metrics_is_an_error():
    with pytest.raises(DataError, match="no loss or accuracy"):
        plot_history([{"epoch": 1, "lr": 0.1}])
    with pytest.raises(DataError, match="empty"):
        plot_history([])


@pytest.mark.parametrize("k", [5, 130])
def test_confusion_matrix_small_and_large(k, plot_dir):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(k), 6)
    probs = rng.dirichlet(np.ones(k) * 0.3, size=len(labels))
    probs[np.arange(len(labels)), labels] += 0.2
    report = EvaluationReport(labels, probs / probs.sum(1, keepdims=True),
                              [f"class_{i:03d}" for i in range(k)])
    path = plot_dir / f"using_confusion_{k}.png"
    fig = plot_confusion_matrix(report, path=path)
    ax = fig.axes[0]
    image = ax.images[0].get_array()
    np.testing.assert_allclose(np.asarray(image).sum(axis=1), 1)  # rows normalised
    n_ticks = len(ax.get_xticklabels())
    assert n_ticks == k  # every class labelled, even with 130
    assert (len(ax.texts) > 0) == (k <= 25)
    _png_ok(path)


def test_prediction_grid_and_gradcam_grid(image_folder, plot_dir):
    net = make_tiny()
    paths = sorted(image_folder.rglob("*.jpg"))[:5]
    preds = Predictor(net).predict(paths + [image_folder / "missing.jpg"], top_k=3)
    fig = plot_predictions(preds, plot_dir / "using_tiny_predictions.png", ncols=3)
    assert len([ax for ax in fig.axes if ax.images]) == 5  # the missing image has no picture
    _png_ok(plot_dir / "using_tiny_predictions.png")
    results = [GradCAM(net)(p) for p in paths[:2]]
    plot_gradcam(results, plot_dir / "using_tiny_gradcam.png")
    _png_ok(plot_dir / "using_tiny_gradcam.png", (200, 300))


def test_untranslatable_display_names_fall_back_with_a_warning(tmp_path):
    ps = Predictions([Prediction("x.jpg", (0,), ("cat",), (1.0,), ("猫",))])
    images = [np.zeros((10, 10, 3), np.uint8)]
    from finetune.use._plots import _font_for

    if _font_for(["猫"]) is None:
        with pytest.warns(UserWarning, match="CJK"):
            fig = plot_predictions(ps, tmp_path / "p.png", images=images, color="RGB")
        assert "cat" in fig.axes[0].get_title()
    else:
        fig = plot_predictions(ps, tmp_path / "p.png", images=images, color="RGB")
        assert "猫" in fig.axes[0].get_title()


def test_history_files_written_by_the_trainers_logger(tmp_path):
    from types import SimpleNamespace

    from finetune.train import HistoryLogger

    keys = ("train_loss", "train_top1", "train_top5", "val_loss", "val_top1", "val_top5")
    rows = [{"epoch": e, "lr": 0.01 if e < 3 else 0.002, **{k: 1.0 / (e + 2) for k in keys},
             "images_per_s": 90.0, "seconds": 3.0} for e in range(5)]
    logger = HistoryLogger(tmp_path)
    logger.on_train_begin(None)
    logger.on_epoch_end(SimpleNamespace(history_=rows), 4, rows[-1])
    for name in ("history.csv", "history.json"):
        fig = plot_history(tmp_path / name)
        drops = [line.get_xdata()[0] for line in fig.axes[0].lines if line.get_linestyle() == "--"]
        assert drops == [3]
        assert len(fig.axes[1].lines) == 4 + 1  # train/val top-1, train/val top-5, LR mark
    assert plot_history(SimpleNamespace(history_=rows)).axes[0].get_title() == "loss"

"""Names with control characters stay one row of every printed table and report."""

import cv2
import numpy as np
import pytest

import finetune as ft
from finetune.testing import tiny_block

NAMES = ["two\nlines", "tab\there", "cr\rback", "bell\x07"]


@pytest.fixture
def odd_folder(tmp_path):
    for k, name in enumerate(NAMES[:2]):
        for i in range(2):
            folder = tmp_path / name
            folder.mkdir(exist_ok=True)
            cv2.imwrite(str(folder / f"{NAMES[(k + i) % len(NAMES)]}.png"), np.full((16, 16, 3), 40 * i, np.uint8))
    return tmp_path


def _assert_rows(text, rows):
    assert len(text.splitlines()) == rows, text
    for name in NAMES:
        assert name not in text


def test_predictions_evaluation_and_check_keep_one_name_on_one_row(odd_folder):
    net = tiny_block()
    net.class_names = ["a\nb", "c\td"]
    predictor = ft.Predictor(net, tta=False, workers=1, fuse=False)
    preds = predictor.predict(odd_folder, top_k=1)
    _assert_rows(preds.to_table(), 1 + len(preds))
    images = ft.ImageList.from_folder(odd_folder)
    report = ft.check(images, workers=0)
    _assert_rows(report.summary(), 1)
    evaluation = ft.evaluate(predictor, ft.ImageList(images.entries, root=images.root, class_names=net.class_names))
    text = str(evaluation)
    assert "two\\nlines" in text or "a\\nb" in text
    assert not any(c in line for line in text.splitlines() for c in "\r\x07")


def test_a_label_naming_two_of_the_model_classes_is_refused():
    """A model whose config named 'cat' twice scored every image of the second 'cat' as wrong."""
    from finetune.errors import DataError

    net = tiny_block()
    net.class_names = ["cat", "cat"]
    image = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(DataError, match=r"'cat' names 2 of the model's classes \(positions 0, 1\)"):
        ft.evaluate(net, [(image, "cat")], color="RGB")
    assert ft.evaluate(net, [(image, 1)], color="RGB").num_images == 1  # positions still work


def test_a_gif_is_named_as_such_by_every_reader(tmp_path):
    """``predict x.gif`` said "truncated, corrupt, or not an image" while check and pack said GIF is not supported."""
    from PIL import Image

    from finetune.errors import ImageDecodeError

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.gif")
    with pytest.raises(ImageDecodeError, match="a GIF, which OpenCV cannot decode"):
        ft.read_image(tmp_path / "x.gif")
    assert [b.reason for b in ft.check([tmp_path / "x.gif"], workers=0).bad] == ["unsupported format"]


def test_names_a_list_cannot_hold_are_said_when_pack_leaves_out_its_list(tmp_path, caplog):
    """A tab in a file name: pack wrote no ``PREFIX.lst`` without a word, and reports named records record[i]."""
    import cv2

    for name in ("a/x\ty.png", "b/z.png"):
        (tmp_path / "p" / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "p" / name), np.zeros((8, 8, 3), np.uint8))
    ft.pack(ft.ImageList.from_folder(tmp_path / "p"), tmp_path / "r", workers=0)
    assert not (tmp_path / "r.lst").exists() and "r.lst is not written: a file name holds a tab" in caplog.text


def test_a_classifier_of_one_class_is_refused():
    """One class trained with a negative loss (label smoothing) and reported success."""
    from finetune.errors import DataError
    from finetune.train import Trainer

    import mxnet as mx

    net = mx.gluon.nn.HybridSequential()
    net.add(mx.gluon.nn.Flatten(), mx.gluon.nn.Dense(1))
    net.initialize()
    x, y = np.zeros((4, 3, 16, 16), np.float32), np.zeros(4)
    with pytest.raises(DataError, match="at least 2 classes"):
        Trainer(net, batch_size=2, progress=False).fit((x, y), epochs=1)

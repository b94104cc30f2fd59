"""ImageList: scanning, lists, CSV and stratified splits."""

import os

import cv2
import numpy as np
import pytest

from finetune import ImageList
from finetune.errors import ConfigError, ListFormatError, MissingFileError


def _img(path, shape=(20, 20, 3)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), np.full(shape, 100, np.uint8))


def test_from_folder_labels_in_sorted_folder_order_and_counts_skipped(image_folder):
    (image_folder / "cat" / "anim.gif").write_bytes(b"GIF89a")
    (image_folder / "notes.txt").write_text("x")
    images = ImageList.from_folder(image_folder)
    assert images.class_names == ["cat", "dog", "fish"]
    assert images.class_counts() == {0: 8, 1: 8, 2: 8}
    assert images.skipped == {".gif": 1, ".txt": 1}
    assert images[0] == (0, os.path.join("cat", "cat_0.jpg"), 0)
    assert all(os.path.isfile(p) for p in images.paths)


def test_from_folder_non_recursive_and_missing(tmp_path):
    _img(tmp_path / "a.png")
    _img(tmp_path / "sub" / "b.png")
    images = ImageList.from_folder(tmp_path, recursive=False)
    assert [e.path for e in images] == ["a.png"] and images.labels == [0]
    with pytest.raises(MissingFileError):
        ImageList.from_folder(tmp_path / "nope")


def test_split_by_ratios_is_stratified_seeded_and_disjoint():
    entries = [(i, f"{i}.jpg", i % 3) for i in range(60)] + [(60, "lone.jpg", 3)]
    images = ImageList(entries, class_names=list("abcd"))
    train, val, test = images.split((0.5, 0.25, 0.25), seed=1)
    assert train.class_counts() == {0: 10, 1: 10, 2: 10, 3: 1}
    assert val.class_counts() == {0: 5, 1: 5, 2: 5}
    assert test.class_counts() == {0: 5, 1: 5, 2: 5}
    idx = [e.index for part in (train, val, test) for e in part]
    assert sorted(idx) == list(range(61))
    again = images.split((0.5, 0.25, 0.25), seed=1)
    assert [e.index for e in again[0]] == [e.index for e in train]
    other = images.split((0.5, 0.25, 0.25), seed=2)
    assert [e.index for e in other[0]] != [e.index for e in train]


def test_split_per_class_and_bad_arguments():
    images = ImageList([(i, f"{i}.jpg", i % 2) for i in range(10)])
    first, rest = images.split(per_class=4, seed=0)
    assert first.class_counts() == {0: 4, 1: 4} and rest.class_counts() == {0: 1, 1: 1}
    with pytest.raises(ConfigError, match="sum to 1"):
        images.split((0.5, 0.2))
    with pytest.raises(ConfigError, match="exactly one"):
        images.split((0.5, 0.5), per_class=2)


def test_write_lst_im2rec_format_and_round_trip(image_folder, tmp_path):
    images = ImageList.from_folder(image_folder)
    lst = tmp_path / "train.lst"
    classes = images.write_lst(lst, shuffle=True)
    assert classes == str(tmp_path / "train_classes.txt")
    assert open(classes).read().split() == ["cat", "dog", "fish"]
    first = lst.read_text().splitlines()[0].split("\t")
    assert len(first) == 3 and first[1].endswith(".000000")
    back = ImageList.from_lst(lst, root=image_folder)
    assert back.class_names == images.class_names
    assert sorted(back.entries) == sorted(images.entries)
    unshuffled = tmp_path / "plain.lst"
    images.write_lst(unshuffled, shuffle=False)
    assert [e.index for e in ImageList.from_lst(unshuffled)] == list(range(len(images)))


def test_from_lst_reports_bad_line(tmp_path):
    lst = tmp_path / "bad.lst"
    lst.write_text("0\t1.0\ta.jpg\nnot-a-line\n")
    with pytest.raises(ListFormatError, match="line 2"):
        ImageList.from_lst(lst)


def test_from_csv_with_names_and_header(tmp_path):
    csv = tmp_path / "list.csv"
    csv.write_text("path,label\nx/1.jpg,dog\nx/2.jpg,cat\nx/3.jpg,dog\n")
    images = ImageList.from_csv(csv)
    assert images.class_names == ["cat", "dog"] and images.labels == [1, 0, 1]
    assert images.paths[0] == os.path.join(str(tmp_path), "x/1.jpg")


def test_hidden_names_are_never_images_or_classes_and_an_empty_class_folder_is_named(tmp_path, caplog):
    """``.ipynb_checkpoints`` used to become class 0 and macOS ``._x.png`` companions images; an empty class
    folder vanished from the classes without a word."""
    import cv2

    for folder in ("cat", "dog", ".ipynb_checkpoints"):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "a.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "cat" / "._a.png").write_bytes(b"\x00\x05\x16\x07 not an image")
    (tmp_path / "bird").mkdir()
    images = ImageList.from_folder(tmp_path)
    assert images.class_names == ["cat", "dog"] and [e.path for e in images] == ["cat/a.png", "dog/a.png"]
    assert ".ipynb_checkpoints" in caplog.text and "cat/._a.png" in caplog.text
    assert "without images" in caplog.text and "bird" in caplog.text


def test_class_folders_spelt_alike_in_other_unicode_forms_are_named(tmp_path, caplog):
    """NFC and NFD 'café' are two classes that print the same; the scan says so."""
    import unicodedata

    import cv2

    for form in ("NFC", "NFD"):
        folder = tmp_path / unicodedata.normalize(form, "café")
        folder.mkdir()
        cv2.imwrite(str(folder / "a.png"), np.zeros((8, 8, 3), np.uint8))
    assert len(ImageList.from_folder(tmp_path).class_names) == 2
    assert "look the same" in caplog.text and "caf\\xe9" in caplog.text

"""What pack writes beside the records, and what it refuses to write."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from finetune.cli import main
from finetune.data import ImageList, ImageSource, RecordDataset, pack
from finetune.errors import DataError


def _photos(root, names=("a/1.png", "a/2.png", "b/3.png")):
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((12, 10, 3), 40 * len(name), np.uint8))
    return root


def test_a_pack_of_nothing_is_refused_and_keeps_the_previous_output(tmp_path):
    images = ImageList.from_folder(_photos(tmp_path / "photos"))
    pack(images, tmp_path / "out", workers=0)
    before = (tmp_path / "out.rec").read_bytes()
    (tmp_path / "photos" / "a" / "1.png").write_bytes(b"broken")
    os.remove(tmp_path / "photos" / "a" / "2.png")
    os.remove(tmp_path / "photos" / "b" / "3.png")
    with pytest.raises(DataError, match="nothing was written"):
        pack(images, tmp_path / "out", workers=0)
    assert (tmp_path / "out.rec").read_bytes() == before
    with pytest.raises(DataError, match="holds no images"):
        pack(ImageList([], class_names=["a"]), tmp_path / "empty", workers=0)
    assert not (tmp_path / "empty.rec").exists()


def test_a_list_packed_without_its_root_says_to_give_the_root(tmp_path):
    _photos(tmp_path / "photos")
    assert main(["split", str(tmp_path / "photos"), "--out", str(tmp_path / "data" / "x"), "--ratios", "1"]) == 0
    lst = str(tmp_path / "data" / "x_train.lst")
    with pytest.raises(DataError, match=r"None of the files exist.*--root"):
        pack(ImageList.from_lst(lst), tmp_path / "data" / "train", workers=0)
    assert main(["pack", lst, "--out", str(tmp_path / "data" / "train"), "--workers", "0"]) == 1
    assert main(["pack", lst, "--root", str(tmp_path / "photos"), "--out", str(tmp_path / "data" / "train"),
                 "--workers", "0"]) == 0


def test_records_are_named_by_the_list_pack_writes_beside_them(tmp_path):
    (tmp_path / "photos" / "b").mkdir(parents=True)
    (tmp_path / "photos" / "b" / "0 bad.png").write_bytes(b"not an image")
    images = ImageList.from_folder(_photos(tmp_path / "photos", ("a/x 1.png", "a/2.png", "b/3.png")))
    report = pack(images, tmp_path / "train", workers=0)
    assert report.written == 3 and len(report.bad) == 1
    listed = ImageList.from_lst(tmp_path / "train.lst", root=tmp_path / "photos")
    assert sorted(e.path for e in listed) == ["a/2.png", "a/x 1.png", "b/3.png"]  # the packed ones
    source = ImageSource(RecordDataset(str(tmp_path / "train.rec")))
    assert sorted(item.source for item in source) == ["a/2.png", "a/x 1.png", "b/3.png"]


def test_a_list_of_the_users_own_is_never_overwritten(tmp_path):
    _photos(tmp_path / "photos")
    mine = tmp_path / "train.lst"
    ImageList.from_folder(tmp_path / "photos").write_lst(mine)
    mine.write_text(mine.read_text() + "")  # the user's file, not pack's
    text = mine.read_text()
    os.remove(tmp_path / "photos" / "b" / "3.png")  # one image fewer than the list names
    pack(ImageList.from_lst(mine, root=tmp_path / "photos"), tmp_path / "train", workers=0)
    assert mine.read_text() == text
    # a list pack wrote itself is rewritten with the next pack of that prefix, and removed when it cannot name them
    pack(ImageList.from_folder(tmp_path / "photos"), tmp_path / "other", workers=0)
    assert len((tmp_path / "other.lst").read_text().splitlines()) == 2
    odd = tmp_path / "photos" / "a" / "new\nline.png"
    cv2.imwrite(str(odd), np.zeros((8, 8, 3), np.uint8))
    pack(ImageList.from_folder(tmp_path / "photos"), tmp_path / "other", workers=0)
    assert not (tmp_path / "other.lst").exists()


def test_the_cli_says_which_files_it_skipped_once(tmp_path, capsys):
    _photos(tmp_path / "photos")
    (tmp_path / "photos" / "notes.txt").write_text("hi")
    assert main(["split", str(tmp_path / "photos"), "--out", str(tmp_path / "x")]) == 0
    captured = capsys.readouterr()
    assert (captured.out + captured.err).count("with other extensions") + (captured.out + captured.err).count(
        "that are not in") == 1


def test_im2rec_skips_a_list_that_names_no_image(tmp_path, capsys):
    _photos(tmp_path / "photos")
    prefix = str(tmp_path / "x")
    assert main(["im2rec", "--list", "--recursive", "--train-ratio", "0.99", prefix, str(tmp_path / "photos")]) == 0
    assert (tmp_path / "x_val.lst").read_text() == ""
    assert main(["im2rec", prefix, str(tmp_path / "photos"), "--num-thread", "1"]) == 0
    assert "Skipping" in capsys.readouterr().out
    assert (tmp_path / "x_train.rec").exists() and not (tmp_path / "x_val.rec").exists()

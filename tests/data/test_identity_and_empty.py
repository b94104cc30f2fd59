"""Folder-walk errors, duplicate identities, empty results and contradictory requests in the data commands."""

import logging
import os

import cv2
import numpy as np
import pytest

import finetune as ft
from finetune.cli import main
from finetune.data import ImageList, MeanImage, balance, check, pack
from finetune.errors import ConfigError, DataError, ListFormatError


def _tree(root, classes=("Bag", "Coat"), n=2):
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cv2.imwrite(str(root / name / f"{i}.png"), np.full((8, 8, 3), 40 * i, np.uint8))
    return root


@pytest.mark.parametrize("where", ["root", "class"])
def test_an_unreadable_folder_is_an_error_naming_it_not_an_empty_class(tmp_path, monkeypatch, where):
    root = _tree(tmp_path / "imgs")
    blocked = str(root if where == "root" else root / "Bag")
    real = os.scandir

    def scandir(path="."):
        if os.path.normpath(os.fspath(path)) == os.path.normpath(blocked):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DataError, match=r"Cannot read folder .*Permission denied"):
        ImageList.from_folder(root)
    assert main(["split", str(root), "--out", str(tmp_path / "o" / "s")]) != 0
    assert main(["check", str(root), "--strict"]) != 0
    assert not (tmp_path / "o").exists()


def test_a_linked_class_folder_never_takes_the_real_folders_name(tmp_path, caplog):
    root = _tree(tmp_path / "imgs")
    os.symlink("Coat", root / "All_coats_backup")
    images = ImageList.from_folder(root)
    assert images.class_names == ["Bag", "Coat"] and len(images) == 4
    assert "All_coats_backup is a link to Coat" in caplog.text and "without images" not in caplog.text


def test_class_folders_differing_only_in_case_are_named(tmp_path, caplog):
    ImageList.from_folder(_tree(tmp_path, ("Dog", "dog")))
    assert "look the same" in caplog.text and "'Dog' / 'dog'" in caplog.text


def test_duplicate_lst_indices_are_refused_with_file_and_lines(tmp_path):
    (tmp_path / "x.lst").write_text("1\t0\ta.png\n2\t0\tb.png\n1\t0\tc.png\n", encoding="utf-8")
    with pytest.raises(ListFormatError, match=r"x.lst, line 3: index 1 is already the index of line 1"):
        ImageList.from_lst(tmp_path / "x.lst")
    with pytest.raises(ListFormatError, match="both have index 1"):
        pack(ImageList([(1, "a.png", 0), (1, "b.png", 0)]), tmp_path / "p")
    assert not (tmp_path / "p.rec").exists()


def test_one_file_listed_twice_is_kept_with_one_warning(tmp_path, caplog):
    root = _tree(tmp_path / "imgs")
    os.link(root / "Bag" / "0.png", root / "Coat" / "z.png")  # a hard link: a second name, not a symlink
    assert len(ImageList.from_folder(root)) == 5
    assert caplog.text.count("listed more than once") == 1 and "Coat/z.png" in caplog.text
    caplog.clear()
    (tmp_path / "d.csv").write_text("imgs/Bag/0.png,dog\nimgs/Bag/0.png,cat\n", encoding="utf-8")
    assert len(pack(ImageList.from_csv(tmp_path / "d.csv"), tmp_path / "pd", workers=0).bad) == 0
    assert caplog.text.count("listed more than once") == 1


def test_empty_results_are_not_success(tmp_path, caplog):
    (tmp_path / "e").mkdir()
    assert main(["split", str(tmp_path / "e"), "--out", str(tmp_path / "o" / "e")]) != 0
    assert not (tmp_path / "o").exists()
    assert main(["check", str(tmp_path / "e"), "--strict"]) == 1
    assert main(["check", str(tmp_path / "e")]) == 0
    with pytest.raises(DataError, match="nothing to split"):
        ImageList([]).split((0.5, 0.5))
    _tree(tmp_path / "fm")
    assert main(["im2rec", "--list", str(tmp_path / "k"), str(tmp_path / "fm")]) == 0
    assert "--recursive" in caplog.text and (tmp_path / "k_classes.txt").read_text() == ""


def test_check_of_a_list_without_its_root_says_which_root_to_give(tmp_path):
    _tree(tmp_path / "fm")
    ImageList.from_folder(tmp_path / "fm").write_lst(tmp_path / "lists" / "x.lst")
    report = check(str(tmp_path / "lists" / "x.lst"), workers=0)
    assert not report.good and report.hint and "--root" in report.hint and "--root" in report.summary()
    assert check(str(tmp_path / "lists" / "x.lst"), workers=0).hint is not None
    assert check(ImageList.from_lst(tmp_path / "lists" / "x.lst", root=tmp_path / "fm"), workers=0).hint is None


def test_pack_names_a_class_left_without_records(tmp_path, caplog):
    root = _tree(tmp_path / "fm")
    for f in (root / "Bag").iterdir():
        f.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="finetune"):
        assert pack(root, tmp_path / "p", workers=0).written == 2
    assert "have no record" in caplog.text and "'Bag' (2 listed)" in caplog.text


def test_pack_refuses_a_prefix_without_a_name(tmp_path):
    for prefix in (str(tmp_path) + os.sep, os.path.join(str(tmp_path), "."), ""):
        with pytest.raises(ConfigError, match="needs a name after the folder"):
            pack(ImageList([(0, "a.png", 0)]), prefix)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("label", [-1, 2.5, (0.0, 1.0)])
def test_balance_refuses_labels_that_are_not_class_indices_before_writing(tmp_path, label):
    root = _tree(tmp_path / "fm")
    images = ImageList([(0, str(root / "Bag" / "0.png"), 0), (1, str(root / "Bag" / "1.png"), label)])
    with pytest.raises(ListFormatError, match="not a class index"):
        balance(images, 3, tmp_path / "extra")
    assert not (tmp_path / "extra").exists()


def test_mean_says_it_reads_records_and_what_a_mean_file_is(tmp_path):
    (tmp_path / "x.lst").write_text("0\t0\ta.png\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"mean reads records \(.rec\): pack the list first with `finetune pack"):
        MeanImage.compute(str(tmp_path / "x.lst"), size=(8, 8))
    with pytest.raises(DataError, match="not a mean file: neither an MXNet mean.bin .* nor a Caffe"):
        MeanImage.load(tmp_path / "x.lst")
    with pytest.raises(ConfigError, match=r"resize=4 .* smaller than size=\(8, 8\)"):
        MeanImage.compute(ImageList([(0, "a.png", 0)]), size=(8, 8), resize=4)
    assert main(["mean", str(tmp_path / "x.lst"), "--out", str(tmp_path / "m.bin"), "--size", "8", "8",
                 "--resize", "4"]) != 0


def test_fashion_mnist_says_when_the_split_holds_fewer_per_class(tmp_path, caplog):
    try:
        ft.data.load_fashion_mnist("test")
    except Exception:  # pragma: no cover - the data package is not installed
        pytest.skip("Fashion-MNIST is not installed")
    images = ft.data.write_fashion_mnist_folder(tmp_path / "f", 1001, split="test", classes=["Bag"])
    assert len(images) == 1000 and "holds 1000 images per class: writing 1000 per class" in caplog.text

"""The data subcommands, and `finetune im2rec` against MXNet's own tools/im2rec.py."""

import os
import shutil
import subprocess
import sys

import cv2
import mxnet as mx
import numpy as np
import pytest

from finetune import ImageList, RecordDataset
from finetune.cli import main

IM2REC = os.path.join(os.path.dirname(mx.__file__), "tools", "im2rec.py")


@pytest.fixture
def nested_tree(image_folder):
    """The 3-class folder plus a nested class, a class of GIFs only and a stray file."""
    deep = image_folder / "zoo" / "bird"
    deep.mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(deep / f"b{i}.png"), np.full((30, 30, 3), 9 * i, np.uint8))
    (image_folder / "gifs").mkdir()
    (image_folder / "gifs" / "a.gif").write_bytes(b"GIF89a")
    (image_folder / "README").write_text("x")
    return image_folder


def _mapping(lst, root):
    return {e.path: e.label for e in ImageList.from_lst(lst, root=root)}


@pytest.mark.slow
def test_im2rec_list_recursive_gives_mxnet_class_mapping(nested_tree, tmp_path):
    subprocess.run([sys.executable, IM2REC, "--list", "--recursive", str(tmp_path / "mx"), str(nested_tree)],
                   check=True, capture_output=True)
    assert main(["im2rec", "--list", "--recursive", str(tmp_path / "ft"), str(nested_tree)]) == 0
    ours, theirs = _mapping(tmp_path / "ft.lst", nested_tree), _mapping(tmp_path / "mx.lst", nested_tree)
    assert ours == theirs and len(ours) == 27
    assert (tmp_path / "ft_classes.txt").read_text().split() == ["cat", "dog", "fish", "zoo/bird"]


def test_im2rec_split_and_pack_like_the_stock_tool(image_folder, tmp_path, capsys):
    prefix = str(tmp_path / "data")
    assert main(["im2rec", "--list", "--recursive", "--train-ratio", "0.5", "--test-ratio", "0.25",
                 prefix, str(image_folder)]) == 0
    parts = {n: ImageList.from_lst(f"{prefix}_{n}.lst", root=image_folder) for n in ("train", "val", "test")}
    assert parts["train"].class_counts() == {0: 4, 1: 4, 2: 4}  # stratified
    assert parts["val"].class_counts() == parts["test"].class_counts() == {0: 2, 1: 2, 2: 2}
    (image_folder / "cat" / "cat_0.jpg").write_bytes(b"")  # broken after listing: must not crash
    assert main(["im2rec", "--resize", "32", "--num-thread", "1", prefix, str(image_folder)]) == 0
    out = capsys.readouterr().out
    assert "zero bytes" in out
    sizes = {n: len(RecordDataset(f"{prefix}_{n}")) for n in ("train", "val", "test")}
    assert RecordDataset(f"{prefix}_val").class_names == ["cat", "dog", "fish"]
    assert sum(sizes.values()) == 23
    it = mx.io.ImageRecordIter(path_imgrec=f"{prefix}_train.rec", data_shape=(3, 32, 32), batch_size=4)
    assert next(iter(it)).data[0].shape == (4, 3, 32, 32)


@pytest.mark.slow
def test_stock_im2rec_records_are_read_by_record_dataset(image_folder, tmp_path):
    prefix = str(tmp_path / "stock")
    subprocess.run([sys.executable, IM2REC, "--list", "--recursive", prefix, str(image_folder)],
                   check=True, capture_output=True)
    subprocess.run([sys.executable, IM2REC, "--resize", "40", prefix, str(image_folder)],
                   check=True, capture_output=True)
    ds = RecordDataset(prefix)
    expected = ImageList.from_lst(prefix + ".lst", root=image_folder)
    by_id = {e.index: e.label for e in expected}
    assert len(ds) == 24
    for i in range(len(ds)):
        label, rid, _ = ds.record(i)
        assert by_id[rid] == label
        assert min(ds.image(i).shape[:2]) == 40


def test_split_check_pack_mean_balance_commands(image_folder, tmp_path, capsys):
    prefix = str(tmp_path / "s")
    assert main(["split", str(image_folder), "--out", prefix, "--per-class", "6", "--seed", "1"]) == 0
    assert ImageList.from_lst(prefix + "_train.lst").class_counts() == {0: 6, 1: 6, 2: 6}
    (image_folder / "dog" / "bad.jpg").write_text("nope")
    (image_folder / "dog" / "anim.gif").write_bytes(b"GIF89a")
    assert main(["check", str(image_folder), "--workers", "1"]) == 0
    assert "{'.gif': 1}" in capsys.readouterr().out
    assert main(["check", str(image_folder), "--strict", "--workers", "1"]) == 1
    assert "bad.jpg: not an image" in capsys.readouterr().out
    assert main(["pack", prefix + "_train.lst", "--out", prefix + "_train", "--root", str(image_folder),
                 "--resize", "36", "--workers", "2"]) == 0
    assert len(RecordDataset(prefix + "_train")) == 18
    assert main(["mean", prefix + "_train", "--out", str(tmp_path / "mean.bin"), "--size", "32", "32"]) == 0
    assert mx.nd.load(str(tmp_path / "mean.bin"))["mean_img"].shape == (3, 32, 32)
    assert main(["balance", prefix + "_val.lst", "--out", str(tmp_path / "bal.lst"), "--target", "4",
                 "--out-dir", str(tmp_path / "extra"), "--root", str(image_folder)]) == 0
    assert ImageList.from_lst(tmp_path / "bal.lst").class_counts() == {0: 4, 1: 4, 2: 4}


def test_user_errors_exit_with_status_1(tmp_path, capsys):
    assert main(["im2rec", str(tmp_path / "none"), str(tmp_path)]) == 1
    assert "No list file" in capsys.readouterr().err


def test_seed_document_commands_work_verbatim(image_folder, tmp_path, monkeypatch):
    """Older scripts were written for an im2rec whose flags took values."""
    monkeypatch.chdir(tmp_path)
    root = str(image_folder) + "/"
    assert main(["-q", "im2rec", "--list=true", "--train-ratio=0.8", "--exts=['.jpg','.jpeg','.png']",
                 "--recursive=true", "bot", root]) == 0
    train = (tmp_path / "bot_train.lst").read_text().splitlines()
    val = (tmp_path / "bot_val.lst").read_text().splitlines()
    assert len(train) + len(val) == 24 and len(val) == 6  # stratified: 2 of 8 per class
    assert (tmp_path / "bot_classes.txt").read_text().split() == ["cat", "dog", "fish"]
    assert main(["-q", "im2rec", "--resize=224", "--quality=100", "bot_val.lst", root]) == 0
    assert len(RecordDataset(str(tmp_path / "bot_val.rec"))) == 6
    # the same flags without values, and --exts as separate words, mean the same
    assert main(["-q", "im2rec", "--exts", ".png", "--list", "--recursive", "png_only", root]) == 0
    assert len((tmp_path / "png_only.lst").read_text().splitlines()) == 12
    assert main(["-q", "im2rec", "--list=false", "--recursive=0", "bot_val.lst", root]) == 0


def test_a_split_that_fails_writes_no_part_so_train_and_val_never_overlap(image_folder, tmp_path, capsys):
    """The parts of a split are one output: a name no list can hold, found while the second part is
    written, used to leave a new training list beside the previous validation list."""
    out = str(tmp_path / "s")
    assert main(["split", str(image_folder), "--out", out, "--ratios", "0.5", "0.5", "--seed", "0"]) == 0
    before = {p: open(p, "rb").read() for p in (out + "_train.lst", out + "_val.lst", out + "_classes.txt")}
    shutil.copy(next(image_folder.glob("cat/*.png")), image_folder / "cat" / "tab\there.png")
    assert main(["split", str(image_folder), "--out", out, "--ratios", "0.5", "0.5", "--seed", "2"]) == 1
    assert "holds a tab" in capsys.readouterr().err
    assert {p: open(p, "rb").read() for p in before} == before


@pytest.mark.parametrize("names, error", [(["a", "a"], "2 different names"), (["../../x", "y"], "plain name"),
                                          (["", "y"], "plain name"), (["a/b", "y"], "plain name"),
                                          (["a\nb", "y"], "plain name")])
def test_split_part_names_are_distinct_plain_names(tmp_path, capsys, names, error):
    """``--part-names a a`` wrote both parts to one list (9 of 12 images in none); ``../../x`` wrote outside
    the output folder and then said nothing had changed."""
    import cv2

    from finetune.cli import main

    for name in ("cat", "dog"):
        (tmp_path / "p" / name).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(tmp_path / "p" / name / f"{i}.png"), np.zeros((8, 8, 3), np.uint8))
    try:
        code = main(["-q", "split", str(tmp_path / "p"), "--out", str(tmp_path / "o" / "s"), "--part-names", *names])
    except SystemExit as exc:  # argparse's usage error
        code = exc.code
    assert code in (1, 2) and error in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and sorted(os.listdir(tmp_path)) == ["p"]

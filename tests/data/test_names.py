"""File and class names are kept byte-exact through every list format, or refused by name.

Names are generated: text with spaces at both ends, any Unicode (line
separators such as U+0085 and U+2028 included) and raw bytes that are not
UTF-8, as ``os.listdir`` returns them (decoded with ``surrogateescape``).
"""

from __future__ import annotations

import csv
import logging
import os
import tempfile

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finetune.data import ImageList, RecordDataset, check, pack
from finetune.data._listfiles import find_class_names, read_class_names, read_csv, read_lst
from finetune._text import SEPARATORS, shown
from finetune.errors import FinetuneError, ListFormatError

PNG = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes()
NAMES = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


def _usable(name: str) -> bool:
    """A name one folder or file can have on this system (and not one of ours)."""
    try:
        raw = os.fsencode(name)
    except UnicodeEncodeError:  # a surrogate os.listdir never returns
        return False
    return (0 < len(raw) <= 200 and b"/" not in raw and b"\0" not in raw and name not in (".", "..")
            and not name.endswith("_classes.txt"))


_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
_spaced = st.tuples(st.sampled_from(["", " ", "  "]), _text, st.sampled_from(["", " ", "\u3000", "\x85"])).map(
    "".join)
_bytes = st.binary(min_size=1, max_size=12).map(lambda b: b.decode("utf-8", "surrogateescape"))
_any = st.one_of(_spaced, _bytes, st.sampled_from([" lead", "lead", "lead ", "\u2028x", "été", "caf\udce9"]))
ALLOWED = _any.filter(lambda n: _usable(n) and not any(s in n for s in SEPARATORS))
WITH_SEPARATOR = st.tuples(_any, st.sampled_from(sorted(SEPARATORS)), _any).map("".join).filter(_usable)


def _tree(root: str, names) -> None:
    """One class folder per name, holding one PNG whose file name is the class name too."""
    for name in names:
        os.makedirs(os.path.join(root, name))
        with open(os.path.join(root, name, name + ".png"), "wb") as f:
            f.write(PNG)


@NAMES
@given(st.lists(ALLOWED, min_size=1, max_size=3, unique_by=os.fsencode))
def test_allowed_names_round_trip_byte_exact(names):
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "images")
        _tree(root, names)
        images = ImageList.from_folder(root)
        assert sorted(map(os.fsencode, images.class_names)) == sorted(map(os.fsencode, names))
        lst = os.path.join(tmp, "data.lst")
        classes = images.write_lst(lst)
        expected = b"".join(os.fsencode(n) + b"\n" for n in images.class_names)
        with open(classes, "rb") as f:
            assert f.read() == expected
        back = ImageList.from_lst(lst, root=root)
        assert back.class_names == images.class_names
        assert sorted(back.entries) == sorted(images.entries)
        report = pack(back, os.path.join(tmp, "data"), workers=0)
        assert report.written == len(names) and not report.bad
        with open(os.path.join(tmp, "data_classes.txt"), "rb") as f:
            assert f.read() == expected
        assert RecordDataset(os.path.join(tmp, "data")).class_names == images.class_names


@NAMES
@given(WITH_SEPARATOR)
def test_a_class_name_holding_a_separator_is_refused_by_name(name):
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "images")
        _tree(root, [name])
        images = ImageList.from_folder(root)
        for write in (lambda: images.write_lst(os.path.join(tmp, "data.lst")),
                      lambda: pack(images, os.path.join(tmp, "data"), workers=0)):
            with pytest.raises(ListFormatError) as info:
                write()
            assert repr(name) in str(info.value) and "Rename" in str(info.value)
        assert sorted(os.listdir(tmp)) == ["images"]  # nothing written, nothing shifted


@NAMES
@given(WITH_SEPARATOR)
def test_a_file_name_holding_a_separator_is_refused_by_name_in_lists(name):
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "images")
        os.makedirs(os.path.join(root, "cat"))
        with open(os.path.join(root, "cat", name + ".png"), "wb") as f:
            f.write(PNG)
        images = ImageList.from_folder(root)
        with pytest.raises(ListFormatError) as info:
            images.write_lst(os.path.join(tmp, "data.lst"))
        assert repr(os.path.join("cat", name + ".png")) in str(info.value)
        assert pack(images, os.path.join(tmp, "data"), workers=0).written == 1  # a record holds no path


def test_a_leading_space_is_another_class(tmp_path):
    _tree(tmp_path / "images", ["lead", " lead"])
    images = ImageList.from_folder(tmp_path / "images")
    images.write_lst(tmp_path / "d.lst", shuffle=False)
    back = ImageList.from_lst(tmp_path / "d.lst", root=tmp_path / "images")
    assert back.class_names == [" lead", "lead"]
    assert [(e.path, e.label) for e in back] == [(" lead/ lead.png", 0), ("lead/lead.png", 1)]


# --------------------------------------------------- every reader of names, Latin-1 bytes
LATIN1 = "\xe9t\xe9".encode("latin-1")  # b"\xe9t\xe9": not UTF-8


def _read_lst(tmp):
    _write(tmp, "l.lst", b"0\t0\t" + LATIN1 + b".png\n")
    return [e[1] for e in read_lst(os.path.join(tmp, "l.lst"))], [LATIN1 + b".png"]


def _read_csv(tmp):
    _write(tmp, "l.csv", b"path,label\n" + LATIN1 + b".png," + LATIN1 + b"\n")
    entries, names = read_csv(os.path.join(tmp, "l.csv"))
    return [entries[0][1], names[0]], [LATIN1 + b".png", LATIN1]


def _read_classes(tmp):
    _write(tmp, "d_classes.txt", b" " + LATIN1 + b"\n" + LATIN1 + b" \n")
    names = read_class_names(os.path.join(tmp, "d_classes.txt"))
    assert find_class_names(os.path.join(tmp, "d_train.lst")) == names
    return names, [b" " + LATIN1, LATIN1 + b" "]


def _read_ids(tmp):
    from finetune.cli._features import _load_descriptors

    np.save(os.path.join(tmp, "d.npy"), np.ones((2, 3), np.float32))
    _write(tmp, "d.ids.txt", LATIN1 + b"/1.jpg\n " + LATIN1 + b"\n")
    return _load_descriptors(os.path.join(tmp, "d.npy"))[1], [LATIN1 + b"/1.jpg", b" " + LATIN1]


def _read_name_map(tmp):
    from finetune.use import load_name_map

    _write(tmp, "map.txt", b"# comment\n" + LATIN1 + b"\t" + LATIN1 + b" x\n")
    (key, value), = load_name_map(os.path.join(tmp, "map.txt")).items()
    return [key, value], [LATIN1, LATIN1 + b" x"]


def _read_oxford(tmp):
    from finetune.features import OxfordGroundTruth

    for suffix, text in [("query", b"oxc1_" + LATIN1 + b" 0 0 9 9"), ("good", LATIN1 + b"_2"), ("ok", b"b"),
                         ("junk", b"c")]:
        _write(tmp, f"q_{suffix}.txt", text + b"\n")
    gt = OxfordGroundTruth.from_folder(tmp)
    return [gt.query_images[0], *gt.queries[0].positives - {"b"}], [LATIN1, LATIN1 + b"_2"]


def _write(tmp, name, data):
    with open(os.path.join(tmp, name), "wb") as f:
        f.write(data)


@pytest.mark.parametrize("reader", [_read_lst, _read_csv, _read_classes, _read_ids, _read_name_map, _read_oxford])
def test_every_name_reader_reads_latin1_bytes_exactly(tmp_path, reader):
    try:
        got, expected = reader(str(tmp_path))
    except FinetuneError as exc:  # the other allowed outcome: a typed error naming the file
        assert str(tmp_path) in str(exc)
        return
    assert [os.fsencode(n) for n in got] == expected


def test_shown_escapes_bytes_that_are_not_utf8():
    assert shown(LATIN1.decode("utf-8", "surrogateescape") + " ok") == "\\xe9t\\xe9 ok"


# ------------------------------------------------------------------- labels and classes
@pytest.mark.parametrize("label", ["7", "3", "-1", "0.5", "1e9"])
def test_a_list_label_that_is_not_a_class_is_refused_with_file_and_line(tmp_path, label):
    (tmp_path / "d_classes.txt").write_text("a\nb\nc\n", encoding="utf-8")
    (tmp_path / "d.lst").write_text(f"0\t0\ta.png\n1\t{label}\tb.png\n", encoding="utf-8")
    with pytest.raises(ListFormatError, match=r"d\.lst, line 2: label .* \[0, 3\)"):
        ImageList.from_lst(tmp_path / "d.lst")
    (tmp_path / "d.csv").write_text(f"a.png,0\nb.png,{label}\n", encoding="utf-8")
    with pytest.raises(ListFormatError, match=r"d\.csv, row 2: label"):
        ImageList.from_csv(tmp_path / "d.csv", class_names=["a", "b", "c"])


@pytest.mark.parametrize("label", [7, -1, 0.5, 3])
def test_labels_outside_the_classes_are_refused_by_the_list_and_by_pack(tmp_path, label):
    with pytest.raises(ListFormatError, match=r"entry 1 \('b.png'\)"):
        ImageList([(0, "a.png", 0), (1, "b.png", label)], class_names=["a", "b", "c"])
    images = ImageList([(0, "a.png", 0), (1, "b.png", 1)], class_names=["a", "b", "c"])
    images.entries[1] = images.entries[1]._replace(label=label)  # changed after the list was made
    with pytest.raises(ListFormatError, match="pack: entry 1"):
        pack(images, tmp_path / "out", workers=0)
    assert not os.listdir(tmp_path)


def test_lists_without_class_names_keep_free_form_labels(tmp_path):
    (tmp_path / "multi.lst").write_text("0\t0.5\t7\t-1\ta.png\n1\t2.5\tb.png\n", encoding="utf-8")
    images = ImageList.from_lst(tmp_path / "multi.lst")
    assert images.class_names is None and images.labels == [(0.5, 7.0, -1.0), 2.5]
    (tmp_path / "multi_classes.txt").write_text("a\nb\n", encoding="utf-8")  # now labels are classes...
    with pytest.raises(ListFormatError, match="line 2: label 2.5"):
        ImageList.from_lst(tmp_path / "multi.lst")
    (tmp_path / "multi.lst").write_text("0\t0.5\t7\t-1\ta.png\n", encoding="utf-8")  # ...but not tuples
    assert ImageList.from_lst(tmp_path / "multi.lst")[0].label == (0.5, 7.0, -1.0)


# ------------------------------------------------------------------ repeated warnings
def test_check_of_10000_missing_files_logs_a_few_lines(tmp_path, caplog):
    paths = [str(tmp_path / f"missing_{i}.jpg") for i in range(10_000)]
    with caplog.at_level(logging.WARNING, logger="finetune"):
        report = check(paths, workers=0)
    assert len(report.bad) == 10_000
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) <= 25
    assert "... and 9,980 more bad images (9,980 unreadable)" in lines[-1]
    summary = report.summary().splitlines()
    assert len(summary) <= 25 and "9,980 more bad" in summary[-1]


def test_pack_of_missing_files_logs_a_few_lines(tmp_path, caplog):
    cv2.imwrite(str(tmp_path / "ok.png"), np.zeros((8, 8, 3), np.uint8))  # one image, so the pack writes
    images = ImageList([(i, f"missing_{i}.jpg", 0) for i in range(500)] + [(500, "ok.png", 0)], class_names=["a"],
                       root=tmp_path)
    with caplog.at_level(logging.WARNING, logger="finetune"):
        report = pack(images, tmp_path / "out", workers=0)
    assert len(report.bad) == 500 and report.written == 1 and len(caplog.records) <= 25
    assert "480 more skipped images" in caplog.records[-1].getMessage()


def test_cli_check_writes_every_bad_file_to_out_byte_exact(tmp_path, capsys):
    from finetune.cli import main

    folder = tmp_path / "images"
    folder.mkdir()
    names = [f"{i}.jpg".encode() for i in range(30)] + [LATIN1 + b".jpg"]
    for name in names:
        with open(os.path.join(os.fsencode(folder), name), "wb") as f:
            f.write(b"not an image")
    out = tmp_path / "bad.csv"
    assert main(["check", str(folder), "--workers", "0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "0 good, 31 bad" in printed and "11 more bad (11 not an image)" in printed
    assert len(printed.splitlines()) < 30
    with open(out, encoding="utf-8", errors="surrogateescape", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "reason", "detail"] and len(rows) == 32
    assert sorted(os.fsencode(os.path.basename(r[0])) for r in rows[1:]) == sorted(names)

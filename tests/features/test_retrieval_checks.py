"""Retrieval inputs checked against what they describe: ids per item, index settings, ground truths, file kinds."""

import json
import logging
import os
import pickle

import numpy as np
import pytest

import finetune.features._extractor as extractor_module
from finetune import RetrievalIndex
from finetune.cli import main
from finetune.errors import ConfigError, DataError, FinetuneError, MissingFileError, ShapeError
from finetune.features import descriptor_ids, image_inputs, load_descriptors, save_descriptors
from finetune.testing import TinyNet


@pytest.fixture
def tiny_model(monkeypatch):
    monkeypatch.setattr(extractor_module, "create_model", lambda spec: TinyNet())


@pytest.fixture
def inputs(image_folder, tmp_path):
    """Every input form extract takes: a file, a folder, records with and without their .lst, a .lst, a .csv."""
    assert main(["split", str(image_folder), "--out", str(tmp_path / "d" / "s"), "--ratios", "0.5", "0.5"]) == 0
    assert main(["pack", str(tmp_path / "d" / "s_val.lst"), "--root", str(image_folder),
                 "--out", str(tmp_path / "d" / "val")]) == 0
    bare = tmp_path / "bare"
    bare.mkdir()
    for ext in (".rec", ".idx"):
        (bare / f"val{ext}").write_bytes((tmp_path / "d" / f"val{ext}").read_bytes())
    files = sorted((image_folder / "cat").iterdir())
    csv = tmp_path / "two.csv"
    csv.write_text("".join(f"{f},0\n" for f in files[:2]))
    lst = tmp_path / "abs.lst"
    lst.write_text("".join(f"{i}\t0\t{f}\n" for i, f in enumerate(files[:3])))
    return {"file": str(files[0]), "folder": str(image_folder / "dog"), "rec": str(tmp_path / "d" / "val.rec"),
            "bare rec": str(bare / "val.rec"), "lst": str(lst), "csv": str(csv)}


def test_every_input_form_gets_one_id_per_image(inputs):
    sources = {name: image_inputs([path]) for name, path in inputs.items()}
    for name, source in sources.items():
        ids = descriptor_ids(source)
        assert len(ids) == len(source) > 0 and len(set(ids)) == len(ids), name
    assert descriptor_ids(sources["bare rec"])[0] == inputs["bare rec"] + "[0]"
    assert not any(i.startswith("record[") for i in descriptor_ids(sources["rec"]))  # named by the .lst beside
    mixed = image_inputs(list(inputs.values()))
    assert len(descriptor_ids(mixed)) == len(mixed) == sum(len(s) for s in sources.values())


def test_extract_of_mixed_inputs_writes_one_id_per_descriptor(tiny_model, inputs, tmp_path):
    out = tmp_path / "m.npy"
    assert main(["extract", "tiny", *inputs.values(), "--layer", "relu2", "--out", str(out)]) == 0
    x, ids = load_descriptors(out)
    assert len(ids) == len(x) == len(image_inputs(list(inputs.values())))


def test_a_list_whose_relative_paths_do_not_resolve_says_where_they_were_looked_for(tiny_model, image_folder,
                                                                                    tmp_path, capsys):
    lst = tmp_path / "elsewhere" / "x.lst"
    lst.parent.mkdir()
    lst.write_text("0\t0\tcat/cat_0.jpg\n1\t0\tcat/cat_1.png\n")
    assert main(["extract", "tiny", str(lst), "--layer", "relu2", "--out", str(tmp_path / "f.npy")]) == 1
    err = capsys.readouterr().err
    assert "list's folder" in err and "absolute paths" in err and "pack" in err
    with pytest.raises(MissingFileError):
        image_inputs([str(lst)])


def test_the_descriptor_writer_refuses_ids_that_are_not_one_per_row_and_folder_names(tmp_path):
    with pytest.raises(ShapeError, match="1 ids for 2 descriptors"):
        save_descriptors(tmp_path / "a.npy", np.eye(2), ["x"])
    for name in ("ex/", ".", ".."):
        with pytest.raises(ConfigError, match="needs a file name"):
            save_descriptors(os.path.join(str(tmp_path), name), np.eye(2), "ab")
    assert not list(tmp_path.iterdir())
    assert save_descriptors(tmp_path / "a", np.eye(2), ["x", "y"])[0].endswith("a.npy")


@pytest.mark.parametrize("shape", [(16,), (2, 2, 16), (0, 16)])
def test_descriptor_files_of_the_wrong_shape_are_refused_with_their_real_shape(tmp_path, shape):
    np.save(tmp_path / "q.npy", np.zeros(shape, np.float32))
    with pytest.raises(DataError, match=r"shape \(" + ", ".join(map(str, shape)) + r",?\)"):
        load_descriptors(tmp_path / "q.npy")


def _db(tmp_path, ids=True, n=12, dim=8):
    x = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    np.save(tmp_path / "db.npy", x)
    if ids:
        (tmp_path / "db.ids.txt").write_text("".join(f"img/im{i}.jpg\n" for i in range(n)))
    return x


def test_retrieve_json_keeps_every_query_when_ids_repeat(tmp_path, capsys):
    x = _db(tmp_path)
    np.save(tmp_path / "q.npy", x[[0, 5, 7]])
    (tmp_path / "q.ids.txt").write_text("same\nsame\nother\n")
    assert main(["retrieve", "--index", str(tmp_path / "db.npy"), "--queries", str(tmp_path / "q.npy"),
                 "--top-k", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res == {"same#0": [["img/im0.jpg", 1.0]], "same#1": [["img/im5.jpg", 1.0]],
                   "other": [["img/im7.jpg", 1.0]]}


def _gt(tmp_path):
    gt = tmp_path / "gt"
    gt.mkdir()
    for q, image, good in [("qa", "im0", "im1 im2"), ("qb", "im3", "im4")]:
        (gt / f"{q}_query.txt").write_text(f"oxc1_{image} 0 0 5 5\n")
        (gt / f"{q}_good.txt").write_text(good.replace(" ", "\n") + "\n")
        (gt / f"{q}_ok.txt").write_text("")
        (gt / f"{q}_junk.txt").write_text("")
    return gt


def _eval(tmp_path, queries, *extra):
    return main(["eval-retrieval", "--gt", str(tmp_path / "gt"), "--index", str(tmp_path / "db.npy"),
                 "--queries", str(tmp_path / queries), "--json", *extra])


def test_eval_retrieval_refuses_queries_that_are_not_the_ground_truths(tmp_path, capsys, caplog):
    x = _db(tmp_path)
    _gt(tmp_path)
    for name, ids in [("q", "qa\nqb\n"), ("r", "qb\nqa\n"), ("w", "foo\nqa\n"), ("d", "qa\nqa\n")]:
        np.save(tmp_path / f"{name}.npy", x[[0, 3]] if name != "r" else x[[3, 0]])
        (tmp_path / f"{name}.ids.txt").write_text(ids)
    np.save(tmp_path / "n.npy", x[[0, 3]])
    np.save(tmp_path / "n3.npy", x[[0, 3, 4]])
    capsys.readouterr()
    assert _eval(tmp_path, "q.npy") == 0
    good = json.loads(capsys.readouterr().out)["mAP"]
    assert _eval(tmp_path, "r.npy") == 0 and json.loads(capsys.readouterr().out)["mAP"] == good  # matched by id
    assert _eval(tmp_path, "w.npy") == 1
    err = capsys.readouterr().err
    assert "'qb'" in err and "'foo'" in err
    assert _eval(tmp_path, "d.npy") == 1 and "repeat" in capsys.readouterr().err
    with caplog.at_level(logging.WARNING):
        assert _eval(tmp_path, "n.npy") == 0
    assert "no ids file" in caplog.text and json.loads(capsys.readouterr().out)["mAP"] == good
    assert _eval(tmp_path, "n3.npy") == 1 and "3 query descriptors" in capsys.readouterr().err


def test_eval_retrieval_refuses_a_database_without_the_ground_truths_images(tmp_path, capsys, caplog):
    x = _db(tmp_path, ids=False)
    _gt(tmp_path)
    np.save(tmp_path / "q.npy", x[[0, 3]])
    (tmp_path / "q.ids.txt").write_text("qa\nqb\n")
    assert _eval(tmp_path, "q.npy") == 1
    assert "None of the 3 images" in capsys.readouterr().err
    (tmp_path / "db.ids.txt").write_text("".join(f"im{i}\n" for i in [0, 1, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13]))
    with caplog.at_level(logging.WARNING):
        assert _eval(tmp_path, "q.npy") == 0
    assert "2 of the 3 images" in caplog.text and "'im2', 'im4'" in caplog.text


def test_class_level_eval_refuses_what_it_would_ignore_or_misread(tmp_path, capsys):
    _db(tmp_path)
    (tmp_path / "labels.txt").write_text("a\nb\n" * 6)
    (tmp_path / "short.txt").write_text("a\n" * 11)
    db, labels = str(tmp_path / "db.npy"), str(tmp_path / "labels.txt")
    assert main(["eval-retrieval", "--index", db, "--labels", labels]) == 0
    for extra in (["--aqe", "2"], ["--dba", "1"]):
        assert main(["eval-retrieval", "--index", db, "--labels", labels, *extra]) == 1
        assert "--aqe and --dba" in capsys.readouterr().err
    assert main(["index", db, "--out", str(tmp_path / "i.npz")]) == 0
    assert main(["eval-retrieval", "--index", str(tmp_path / "i.npz"), "--labels", labels]) == 1
    assert "only with --gt" in capsys.readouterr().err
    assert main(["eval-retrieval", "--index", db, "--labels", str(tmp_path / "short.txt")]) == 1
    err = capsys.readouterr().err
    assert "11 labels for the 12 descriptors" in err and "short.txt" in err


@pytest.mark.parametrize("method", ["exact", "ivf", "ivfpq", "hnsw"])
def test_index_settings_are_checked_against_the_data_before_faiss(method):
    if method != "exact":
        pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    for n in (1, 2, 15, 16, 40):
        for dim in (1, 3, 8):
            for nlist in ((None, 1, 3, 50) if method in ("ivf", "ivfpq") else (None,)):
                for pq_m in ((None, 2, 3) if method == "ivfpq" else (None,)):
                    x = rng.normal(size=(n, dim)).astype(np.float32)
                    index = RetrievalIndex(method=method, nlist=nlist, pq_m=pq_m)
                    try:
                        index.add(x)
                        index.search(x[:2], 3)
                    except FinetuneError as exc:  # refused by the library, never by faiss or numpy
                        assert "Error in" not in str(exc), exc
                    if nlist == 50 and n < 50:
                        with pytest.raises(ConfigError, match=f"needs at least 50 descriptors, one per IVF cell, "
                                                              f"got {n}"):
                            index.build()
    with pytest.raises(ConfigError, match="empty"):
        RetrievalIndex(method=method).save("never.npz")


def test_an_empty_index_or_query_set_is_refused_and_zero_vectors_are_warned_about(tmp_path, caplog):
    index = RetrievalIndex()
    with pytest.raises(ConfigError, match="empty"):
        index.save(tmp_path / "e.npz")
    index.add(np.eye(3, dtype=np.float32))
    with pytest.raises(DataError, match="no queries"):
        index.search(np.zeros((0, 3), np.float32))
    with caplog.at_level(logging.WARNING):
        index.search(np.zeros((2, 3), np.float32), 1)
        RetrievalIndex().add(np.zeros((1, 3), np.float32))
    assert "2 of the 2 queries are all zero" in caplog.text and "1 of the 1 vectors are all zero" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        RetrievalIndex("ip").add(np.zeros((1, 3), np.float32))  # an inner product needs no direction
    assert "all zero" not in caplog.text


def test_index_writers_refuse_a_folder_for_a_file(tmp_path):
    index = RetrievalIndex()
    index.add(np.eye(2, dtype=np.float32))
    for name in ("ix/", ".", ".."):
        name = os.path.join(str(tmp_path), name)
        with pytest.raises(ConfigError, match="needs a file name"):
            index.save(name)
    assert not list(tmp_path.iterdir())


def test_loading_what_is_not_a_saved_index_says_so(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 3), np.float32))
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with open(tmp_path / "p.pkl", "wb") as f:
        pickle.dump({"a": 1}, f)
    (tmp_path / "mean.bin").write_bytes(b"\x12\x01\x00\x00" + bytes(64))
    for name in ("x.npy", "other.npz", "p.pkl", "mean.bin"):
        with pytest.raises(DataError) as info:
            RetrievalIndex.load(tmp_path / name)
        text = str(info.value)
        assert "not a saved finetune index" in text and "finetune index" in text, text
        assert not any(word in text for word in ("TypeError", "KeyError", "ValueError", "pickled")), text

"""finetune extract / index / retrieve / eval-retrieval end to end on tiny data."""

import json

import cv2
import numpy as np
import pytest

import finetune.features._extractor as extractor_module
from finetune.cli import main
from finetune.testing import TinyNet


@pytest.fixture
def tiny_model(monkeypatch):
    net = TinyNet()
    monkeypatch.setattr(extractor_module, "create_model", lambda spec: net)
    return net


def test_extract_retrieve_and_class_map(tiny_model, image_folder, tmp_path, capsys):
    out = tmp_path / "feats.npy"
    assert main(["extract", "tiny", str(image_folder), "--layer", "relu2", "--pooling", "max", "--pooling", "gem",
                 "--scales", "1,0.5", "--out", str(out)]) == 0
    feats = np.load(out)
    ids = (tmp_path / "feats.ids.txt").read_text().split()
    assert feats.shape == (24, 16) and len(ids) == 24 and ids[0].endswith("cat_0.jpg")
    capsys.readouterr()
    assert main(["retrieve", "--index", str(out), "--queries", str(out), "--top-k", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res[ids[5]][0][0] == ids[5] and len(res[ids[5]]) == 3
    assert main(["retrieve", "--index", str(out), "--queries", str(out), "--top-k", "2", "--aqe", "2",
                 "--dba", "1"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 48
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(i.split("/")[-2] + "\n" for i in ids))
    assert main(["eval-retrieval", "--index", str(out), "--labels", str(labels), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)["mAP"]
    assert 0 < m <= 1


def test_extract_with_pca_needs_fit_on_and_saves_extractor(tiny_model, image_folder, tmp_path):
    out = tmp_path / "f.npy"
    assert main(["extract", "tiny", str(image_folder), "--layer", "relu2", "--pca", "4", "--out", str(out)]) == 1
    assert main(["extract", "tiny", str(image_folder), "--layer", "relu2", "--pca", "4", "--fit-on",
                 str(image_folder), "--save-extractor", str(tmp_path / "fx"), "--out", str(out)]) == 0
    assert np.load(out).shape == (24, 4)
    assert (tmp_path / "fx" / "pca.npz").exists()


def test_eval_retrieval_oxford_layout_with_query_crops(tiny_model, tmp_path, capsys):
    rng = np.random.default_rng(0)
    imgs = tmp_path / "jpg"
    imgs.mkdir()
    for name in ["a_1", "a_2", "b_1", "b_2", "q_a", "q_b"]:
        base = np.full((40, 60, 3), 30 if name.startswith(("a", "q_a")) else 220, np.uint8)
        cv2.imwrite(str(imgs / f"{name}.jpg"), np.clip(base + rng.integers(0, 20, base.shape), 0, 255).astype(np.uint8))
    gt = tmp_path / "gt"
    gt.mkdir()
    for q, good, junk in [("qa_1", "a_1", "b_2"), ("qb_1", "b_1", "")]:
        (gt / f"{q}_query.txt").write_text(f"oxc1_q_{q[1]} 5 5 40 30\n")
        (gt / f"{q}_good.txt").write_text(good + "\n")
        (gt / f"{q}_ok.txt").write_text(("a_2" if q == "qa_1" else "b_2") + "\n")
        (gt / f"{q}_junk.txt").write_text(junk + "\n" if junk else "")
    db = tmp_path / "db.npy"
    q = tmp_path / "q.npy"
    assert main(["extract", "tiny", *[str(imgs / f"{n}.jpg") for n in ["a_1", "a_2", "b_1", "b_2"]],
                 "--layer", "relu2", "--pooling", "avg", "--out", str(db)]) == 0
    assert main(["extract", "tiny", str(imgs), "--queries-of", str(gt), "--layer", "relu2", "--pooling", "avg",
                 "--out", str(q)]) == 0
    assert (tmp_path / "q.ids.txt").read_text().split() == ["qa_1", "qb_1"]
    capsys.readouterr()
    assert main(["eval-retrieval", "--gt", str(gt), "--index", str(db), "--queries", str(q), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["mAP"] == 1.0  # dark and bright images separate perfectly
    assert main(["eval-retrieval", "--gt", str(gt), "--index", str(db)]) == 1


def _descriptors(tmp_path, n=640, dim=16):
    """``n`` clustered descriptors in ``db.npy`` with string ids beside them."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(12, dim))[rng.integers(0, 12, n)] + 0.05 * rng.normal(size=(n, dim))).astype(np.float32)
    np.save(tmp_path / "db.npy", x)
    (tmp_path / "db.ids.txt").write_text("".join(f"img{i}\n" for i in range(n)))
    return tmp_path / "db.npy"


def test_index_saves_an_exact_index_that_retrieve_reads(tmp_path, capsys):
    from finetune import RetrievalIndex

    db = _descriptors(tmp_path, n=40)
    assert main(["index", str(db), "--metric", "ip", "--out", str(tmp_path / "db.npz")]) == 0
    index = RetrievalIndex.load(tmp_path / "db.npz")
    assert (index.method, index.metric, len(index), index.ids[3]) == ("exact", "ip", 40, "img3")
    capsys.readouterr()
    assert main(["retrieve", "--index", str(tmp_path / "db.npz"), "--queries", str(db), "--top-k", "1",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["img7"][0][0] == "img7"


def test_index_builds_a_reranking_ivfpq_index(tmp_path, capsys):
    pytest.importorskip("faiss")
    from finetune import RetrievalIndex

    db = _descriptors(tmp_path)
    out = tmp_path / "pq.npz"
    assert main(["index", str(db), "--method", "ivfpq", "--nlist", "12", "--nprobe", "4", "--pq-m", "4",
                 "--refine", "100", "--out", str(out)]) == 0
    index = RetrievalIndex.load(out)
    assert (index.method, index.nlist, index.nprobe, index.pq_m, index.refine) == ("ivfpq", 12, 4, 4, 100)
    assert (tmp_path / "pq.npz.vectors.npy").is_file()
    capsys.readouterr()
    assert main(["retrieve", "--index", str(out), "--queries", str(db), "--top-k", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert np.mean([hits[0][0] == qid for qid, hits in res.items()]) >= 0.95  # exact scores: each finds itself


def test_index_refuses_bad_settings_before_reading(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:  # a usage error of the flag, before anything is read
        main(["index", str(tmp_path / "missing.npy"), "--method", "ivfpq", "--refine", "0",
              "--out", str(tmp_path / "x.npz")])
    assert info.value.code == 2 and "--refine" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["index", "db.npy", "--method", "annoy", "--out", "x.npz"])


def test_extract_defaults_to_the_last_convolutional_block_and_leaves_out_broken_images(tiny_model, image_folder,
                                                                                       tmp_path, capsys):
    from finetune.features import FeatureExtractor
    from finetune.use import feature_map_layers

    assert [name for name, _ in feature_map_layers(tiny_model)][-1] == FeatureExtractor(tiny_model).layers[0]
    (image_folder / "cat" / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "feats.npy"
    assert main(["extract", "tiny", str(image_folder), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"layer {FeatureExtractor(tiny_model).layers[0]} (the last convolutional block" in captured.err
    assert "1 of 25 images cannot be read" in captured.err and "broken.jpg" in captured.out
    ids = (tmp_path / "feats.ids.txt").read_text().split()
    assert len(ids) == np.load(out).shape[0] == 24 and not any("broken" in i for i in ids)
    for name in ("cat", "dog", "fish"):
        for f in (image_folder / name).iterdir():
            f.write_bytes(b"broken")
    assert main(["extract", "tiny", str(image_folder), "--out", str(tmp_path / "none.npy")]) == 1
    assert "None of the images can be read" in capsys.readouterr().err


def test_extract_decodes_every_file_first_only_after_one_failed(tiny_model, image_folder, tmp_path, monkeypatch):
    import finetune.data

    def no_check(*a, **k):
        raise AssertionError("check() ran although every image was readable")

    monkeypatch.setattr(finetune.data, "check", no_check)
    assert main(["extract", "tiny", str(image_folder), "--layer", "relu2", "--out", str(tmp_path / "f.npy")]) == 0

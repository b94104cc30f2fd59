"""AP / mAP: hand-computed cases and the compute_ap.cpp loop, to 1e-12."""

import pickle

import numpy as np
import pytest

from finetune.errors import ConfigError, DataError, UnsafeFileError
from finetune.features import (OxfordGroundTruth, RevisitedGroundTruth, average_precision,
                               class_retrieval_map, crop_query, mean_average_precision,
                               precision_at_k, ranked_ap)


def compute_ap_cpp(pos, amb, ranked):
    """Line-by-line port of Oxford's compute_ap.cpp (in float64)."""
    old_recall, old_precision, ap = 0.0, 1.0, 0.0
    intersect, j = 0, 0
    for item in ranked:
        if item in amb:
            continue
        if item in pos:
            intersect += 1
        recall = intersect / len(pos)
        precision = intersect / (j + 1.0)
        ap += (recall - old_recall) * ((old_precision + precision) / 2.0)
        old_recall, old_precision = recall, precision
        j += 1
    return ap


CASES = [
    # ranked list, positives, junk, hand-computed AP
    (["a", "b", "c"], {"a", "b", "c"}, set(), 1.0),                               # all positives
    (["a", "x", "b"], {"a", "b"}, set(), (1 + (1 / 2 + 2 / 3) / 2) / 2),          # + - +
    (["j", "a", "x", "b"], {"a", "b"}, {"j"}, (1 + (1 / 2 + 2 / 3) / 2) / 2),     # junk before positives
    (["a", "x", "b", "j"], {"a", "b"}, {"j"}, (1 + (1 / 2 + 2 / 3) / 2) / 2),     # junk after positives
    (["x", "j", "a"], {"a"}, {"j"}, (0 + 1 / 2) / 2),                             # junk between
    (["x", "y", "a"], {"a"}, set(), (0 + 1 / 3) / 2),
    (["x", "a", "y", "b"], {"a", "b", "c"}, set(), ((0 + 1 / 2) / 2 + (1 / 3 + 2 / 4) / 2) / 3),  # c never retrieved
    (["x", "y"], {"a"}, set(), 0.0),
]


@pytest.mark.parametrize("ranked,pos,junk,expected", CASES)
def test_ap_hand_computed(ranked, pos, junk, expected):
    assert abs(average_precision(ranked, pos, junk) - expected) < 1e-12
    assert abs(compute_ap_cpp(pos, junk, ranked) - expected) < 1e-12


def test_no_positives_is_nan_and_skipped_in_the_mean():
    assert np.isnan(average_precision(["a", "b"], set()))
    with pytest.warns(UserWarning, match="no positives"):
        assert mean_average_precision([0.5, np.nan, 1.0]) == 0.75
    with pytest.raises(ConfigError):
        mean_average_precision([np.nan])


def test_random_lists_agree_with_compute_ap_cpp():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        ranked = [f"i{k}" for k in rng.permutation(n)]
        labels = rng.integers(0, 3, n)  # 0 negative, 1 positive, 2 junk
        pos = {f"i{k}" for k in range(n) if labels[k] == 1} | ({"missing"} if rng.random() < 0.3 else set())
        junk = {f"i{k}" for k in range(n) if labels[k] == 2}
        if not pos:
            continue
        assert abs(average_precision(ranked, pos, junk) - compute_ap_cpp(pos, junk, ranked)) < 1e-12


def test_integer_ids_and_ranked_ap():
    assert abs(average_precision([5, 3, 9], {9, 5}, {3}) - 1.0) < 1e-12
    assert ranked_ap([], 3) == 0.0
    assert np.isnan(ranked_ap([0], 0))


def test_precision_at_k_follows_revisited_code():
    # positives at 1-based ranks 1, 3, 8: P@1=1, P@5=2/5, P@10 capped at k=8: 3/8
    assert np.allclose(precision_at_k([0, 2, 7], (1, 5, 10)), [1, 2 / 5, 3 / 8], atol=1e-12)


def _brute_class_ap(q, ql, db, dl, exclude):
    out = []
    for i in range(len(q)):
        order = np.argsort(-(db @ q[i]), kind="stable")
        order = [j for j in order if j != exclude[i]]
        pos = {j for j in range(len(db)) if dl[j] == ql[i] and j != exclude[i]}
        out.append(average_precision(order, pos))
    return np.array(out)


def test_class_retrieval_map_leave_one_out_matches_brute_force():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    y = rng.integers(0, 4, 40)
    m, aps = class_retrieval_map(x, y, chunk_size=7)
    ref = _brute_class_ap(x, y, x, y, list(range(40)))
    assert np.allclose(aps, ref, atol=1e-12, equal_nan=True)
    assert abs(m - np.nanmean(ref)) < 1e-12


def test_class_retrieval_map_separate_database_with_ids():
    rng = np.random.default_rng(2)
    db = rng.normal(size=(30, 5)).astype(np.float32)
    dl = rng.integers(0, 3, 30)
    q, ql = db[:10], dl[:10]
    _, aps = class_retrieval_map(q, ql, db, dl, query_ids=np.arange(10), database_ids=np.arange(30))
    assert np.allclose(aps, _brute_class_ap(q, ql, db, dl, list(range(10))), atol=1e-12, equal_nan=True)
    # without ids the query finds itself first (AP differs)
    _, aps_self = class_retrieval_map(q, ql, db, dl)
    assert not np.allclose(aps_self, aps)


def test_class_retrieval_map_perfect_separation():
    x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    assert class_retrieval_map(x, [0, 0, 1, 1])[0] == 1.0


# ----------------------------------------------------------------------- Oxford files
def _write_gt(folder, name, image, box, good, ok, junk, prefix="oxc1_"):
    folder.mkdir(exist_ok=True)
    (folder / f"{name}_query.txt").write_text(f"{prefix}{image} {' '.join(map(str, box))}\n")
    for suffix, items in (("good", good), ("ok", ok), ("junk", junk)):
        (folder / f"{name}_{suffix}.txt").write_text("".join(i + "\n" for i in items))


def test_oxford_folder_and_evaluation(tmp_path):
    gt_dir = tmp_path / "gt"
    _write_gt(gt_dir, "all_souls_1", "all_souls_000013", (136.5, 34.1, 648.5, 955.7), ["a"], ["b"], ["j"])
    _write_gt(gt_dir, "defense_1", "paris_defense_000605", (1, 2, 3, 4), ["c"], [], [], prefix="")
    gt = OxfordGroundTruth.from_folder(gt_dir)
    assert gt.query_names == ["all_souls_1", "defense_1"]
    assert gt.query_images == ["all_souls_000013", "paris_defense_000605"]
    assert gt.query_boxes[0] == (136.5, 34.1, 648.5, 955.7)
    res = gt.evaluate({"all_souls_1": ["j", "a", "x", "b"], "defense_1": ["x", "c"]})
    assert abs(res["aps"]["all_souls_1"] - (1 + (1 / 2 + 2 / 3) / 2) / 2) < 1e-12
    assert abs(res["aps"]["defense_1"] - 0.25) < 1e-12
    assert abs(res["mAP"] - (res["aps"]["all_souls_1"] + 0.25) / 2) < 1e-12
    with pytest.raises(ConfigError, match="defense_1"):
        gt.evaluate({"all_souls_1": []})


def test_oxford_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        OxfordGroundTruth.from_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError):
        OxfordGroundTruth.from_folder(tmp_path / "empty")
    _write_gt(tmp_path / "bad", "q_1", "a", (1, 2, 3), [], [], [])
    with pytest.raises(DataError, match="x1 y1 x2 y2"):
        OxfordGroundTruth.from_folder(tmp_path / "bad")


def test_crop_query():
    img = np.arange(10 * 20).reshape(10, 20)
    crop = crop_query(img, (2.5, 1.0, 7.2, 4.0))
    assert crop.shape == (3, 6) and crop[0, 0] == img[1, 2]
    assert crop_query(img, (-5, -5, 100, 100)).shape == (10, 20)


# ------------------------------------------------------------------------- revisited
def _revisited():
    return {
        "imlist": ["d0", "d1", "d2", "d3", "d4"],
        "qimlist": ["q0", "q1"],
        "gnd": [
            {"easy": np.array([0, 1]), "hard": np.array([2]), "junk": np.array([3]), "bbx": [1.0, 2.0, 3.0, 4.0]},
            {"easy": np.array([], dtype=np.int64), "hard": np.array([4]), "junk": np.array([], dtype=np.int64),
             "bbx": np.array([0.0, 0.0, 9.0, 9.0])},
        ],
    }


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_revisited_pickle_protocols_load(tmp_path, protocol):
    path = tmp_path / "gnd.pkl"
    with open(path, "wb") as f:
        pickle.dump(_revisited(), f, protocol=protocol)
    gt = RevisitedGroundTruth.load(path)
    assert gt.qimlist == ["q0", "q1"] and gt.gnd[0]["easy"].tolist() == [0, 1]


def test_revisited_setups_by_hand(tmp_path):
    path = tmp_path / "gnd_roxford5k.pkl"
    with open(path, "wb") as f:
        pickle.dump(_revisited(), f, protocol=2)
    gt = RevisitedGroundTruth.load(path)
    assert gt.imlist[2] == "d2" and gt.gnd[0]["bbx"] == (1.0, 2.0, 3.0, 4.0)
    ranks = np.array([[3, 2, 4, 0, 1], [0, 4, 1, 2, 3]])
    res = gt.evaluate(ranks, ks=(1, 5, 10))
    # q0 easy: positives {0,1}, junk {3,2} -> kept [4,0,1] -> ranks 1,2
    e0 = ((0 + 1 / 2) / 2 + (1 / 2 + 2 / 3) / 2) / 2
    # q0 medium: positives {0,1,2}, junk {3} -> kept [2,4,0,1] -> ranks 0,2,3
    m0 = (1 + (1 / 2 + 2 / 3) / 2 + (2 / 3 + 3 / 4) / 2) / 3
    # q0 hard: positives {2}, junk {3,0,1} -> kept [2,4] -> rank 0
    h0 = 1.0
    # q1: no easy positive (skipped in easy); hard/medium: positive 4 at rank 1
    h1 = (0 + 1 / 2) / 2
    assert abs(res["easy"]["mAP"] - e0) < 1e-12 and np.isnan(res["easy"]["aps"][1])
    assert abs(res["medium"]["mAP"] - (m0 + h1) / 2) < 1e-12
    assert abs(res["hard"]["mAP"] - (h0 + h1) / 2) < 1e-12
    # mP@1 medium: q0 1.0, q1 kq=min(2,1)=1 -> 0
    assert abs(res["medium"]["mP@k"][1] - 0.5) < 1e-12
    # mP@5 medium: q0 positions 1,3,4 -> kq=4 -> 3/4; q1 kq=2 -> 1/2
    assert abs(res["medium"]["mP@k"][5] - (3 / 4 + 1 / 2) / 2) < 1e-12


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_revisited_pickle_is_restricted(tmp_path):
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"gnd": [Evil()], "imlist": [], "qimlist": []}, f)
    with pytest.raises(UnsafeFileError, match="builtins.print"):
        RevisitedGroundTruth.load(path)
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(DataError):
        RevisitedGroundTruth.load(tmp_path / "junk.pkl")
    with open(tmp_path / "list.pkl", "wb") as f:
        pickle.dump([1, 2], f)
    with pytest.raises(DataError, match="'gnd'"):
        RevisitedGroundTruth.load(tmp_path / "list.pkl")

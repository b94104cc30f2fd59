import json

import cv2
import numpy as np
import pytest

from finetune import EvaluationReport, ImageList, Predictor, export_for_deployment, pack
from finetune.cli import main


@pytest.fixture
def model_dir(tiny_model, tmp_path):
    export_for_deployment(tiny_model, tmp_path / "tiny")
    return str(tmp_path / "tiny")


def test_predict_prints_a_table_or_json(model_dir, image_folder, tmp_path, capsys):
    names = tmp_path / "names.txt"
    names.write_text("cat\tchat\ndog\tchien\nfish\tpoisson\n", encoding="utf-8")
    assert main(["-q", "predict", model_dir, str(image_folder / "cat"), "--top-k", "2", "--names", str(names)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["source", "rank", "class", "probability"]
    assert len(out) == 1 + 8 * 2 and {line.split()[2] for line in out[1:]} <= {"chat", "chien", "poisson"}
    assert main(["-q", "predict", model_dir, str(sorted((image_folder / "dog").iterdir())[0]), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data) == 1 and len(data[0]["top"]) == 3


def test_predict_no_fuse_gives_the_same_probabilities(model_dir, image_folder, capsys):
    probs = []
    for extra in ([], ["--no-fuse"]):
        assert main(["-q", "predict", model_dir, str(image_folder / "cat"), "--json"] + extra) == 0
        probs.append([row["top"] for row in json.loads(capsys.readouterr().out)])
    names = [[t["name"] for t in top] for top in probs[0]]
    assert names == [[t["name"] for t in top] for top in probs[1]]
    np.testing.assert_allclose([[t["probability"] for t in top] for top in probs[0]],
                               [[t["probability"] for t in top] for top in probs[1]], atol=1e-5)


def test_predict_of_only_unreadable_files_fails(model_dir, tmp_path, capsys):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"no")
    assert main(["-q", "predict", model_dir, str(bad)]) == 1
    assert "1 of 1 images could not be read" in capsys.readouterr().err


def test_evaluate_records_writes_report_and_plots(model_dir, tiny_model, image_folder, tmp_path, capsys):
    pack(ImageList.from_folder(image_folder), tmp_path / "val", encoding=".png", quality=3, workers=1)
    args = ["-q", "evaluate", model_dir, str(tmp_path / "val.rec"), "--top-k", "2",
            "--report", str(tmp_path / "r.json"), "--plots", str(tmp_path / "plots")]
    assert main(args) == 0
    assert "top-1 accuracy" in capsys.readouterr().out
    report = EvaluationReport.load(tmp_path / "r.json")
    expected = Predictor(tiny_model).predict_proba(ImageList.from_folder(image_folder).paths)
    np.testing.assert_allclose(report.probabilities, expected, atol=1e-5)
    assert (tmp_path / "plots" / "confusion_matrix.png").is_file()
    if report.most_confident_errors():
        assert cv2.imread(str(tmp_path / "plots" / "most_confident_errors.png")) is not None


def test_gradcam_and_export_commands(model_dir, image_folder, tmp_path, capsys):
    image = str(sorted((image_folder / "fish").iterdir())[0])
    assert main(["-q", "gradcam", model_dir, image, "--target", "dog", "--out", str(tmp_path / "h.png")]) == 0
    assert "dog" in capsys.readouterr().out
    assert cv2.imread(str(tmp_path / "h.png")).shape[:2] == cv2.imread(image).shape[:2]
    assert main(["-q", "export", model_dir, "--out", str(tmp_path / "exp"), "--onnx"]) == 0
    out = capsys.readouterr().out
    assert "verified   onnx" in out and (tmp_path / "exp" / "model.onnx").is_file()


def test_unknown_model_name_suggests(capsys):
    assert main(["-q", "predict", "efficientnet_lite", "x.jpg"]) == 1
    assert "Did you mean" in capsys.readouterr().err


@pytest.mark.parametrize("target, explained", [("1", "1"), ("10", "10"), ("-1", "-1"), ("3", "0"), ("fish", None)])
def test_gradcam_target_a_class_name_wins_over_an_index(image_folder, tmp_path, capsys, target, explained):
    """Classes named like numbers: ``--target 1`` explained the class at index 1 ('-1'), ``--target 10`` was
    refused as an index out of range."""
    from tests.use.conftest import make_tiny

    export_for_deployment(make_tiny(classes=("1", "-1", "10", "0")), tmp_path / "num")
    image = str(sorted((image_folder / "fish").iterdir())[0])
    code = main(["-q", "gradcam", str(tmp_path / "num"), image, "--target", target, "--out", str(tmp_path / "h.png")])
    out, err = capsys.readouterr()
    if explained is None:
        assert code == 1 and "Unknown class 'fish'" in err and "Known classes:" in err
    else:
        assert code == 0 and f"{image}: {explained} (" in out

import json
import sys

import numpy as np
import pytest

import finetune as ft
from finetune.cli import main


@pytest.fixture
def records(image_folder, tmp_path):
    images = ft.ImageList.from_folder(image_folder)
    ft.pack(images, tmp_path / "all", resize=40, workers=1)
    return tmp_path / "all"


@pytest.mark.slow
def test_train_cli_writes_a_loadable_model_dir_with_history_and_checkpoints(records, tmp_path, capsys):
    out = tmp_path / "model"
    code = main(["train", "mobilenetv2_0.25", "--weights", "none", "--train", str(records), "--val", str(records),
                 "--out", str(out), "--input-size", "32", "--epochs", "2", "--batch-size", "8", "--workers", "0",
                 "--policy", "pretrained", "--lr", "0.05", "--schedule", "step", "--step-epochs", "1",
                 "--checkpoint-every", "1"])
    assert code == 0, capsys.readouterr().err
    model = ft.load_model(out)
    assert model.class_names == ["cat", "dog", "fish"]
    assert model.preprocess.size == (32, 32)
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == [0, 1]
    assert history[1]["lr"] == pytest.approx(0.005)
    assert (out / "checkpoints" / "last.ckpt").exists()
    assert "head_" in (out / "plan.txt").read_text()
    proba = ft.Predictor(model, workers=1).predict_proba(np.zeros((32, 32, 3), np.uint8), color="RGB")
    assert proba.shape == (1, 3)
    # resume: one more epoch from the checkpoint
    code = main(["train", "mobilenetv2_0.25", "--weights", "none", "--train", str(records), "--out", str(out),
                 "--input-size", "32", "--epochs", "3", "--batch-size", "8", "--workers", "0",
                 "--policy", "pretrained", "--resume"])
    assert code == 0
    assert len(json.loads((out / "history.json").read_text())) == 3


def test_train_cli_plan_and_errors(records, tmp_path, capsys):
    code = main(["train", "mobilenetv2_0.25", "--weights", "none", "--train", str(records), "--out",
                 str(tmp_path / "m"), "--policy", "boosted-head", "--plan", "--workers", "0"])
    out = capsys.readouterr().out
    assert code == 0 and "head weights" in out and "head biases" in out
    code = main(["train", "mobilenetv2_0.25", "--weights", "none", "--train", str(records), "--out",
                 str(tmp_path / "m"), "--optimizer", "adamww"])
    assert code == 1 and "Did you mean 'adamw'" in capsys.readouterr().err


def test_launch_cli_runs_workers(tmp_path):
    flag = tmp_path / "w"
    code = main(["launch", "-n", "2", "-s", "1", "--", sys.executable, "-c",
                 f"import os; open(r'{flag}' + os.environ['DMLC_ROLE'] + str(os.getpid()), 'w')"])
    assert code == 0
    assert len(list(tmp_path.glob("wworker*"))) == 2

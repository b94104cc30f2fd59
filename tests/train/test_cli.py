import json
import os
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
    # resume with other settings: refused, naming what differs
    capsys.readouterr()
    code = main(["train", "mobilenetv2_0.25", "--weights", "none", "--train", str(records), "--out", str(out),
                 "--input-size", "32", "--epochs", "3", "--batch-size", "8", "--workers", "0",
                 "--policy", "pretrained", "--resume"])
    err = capsys.readouterr().err
    assert code == 1 and "What differs" in err and "Traceback" not in err
    # resume with the same settings: one more epoch from the checkpoint
    code = main(["train", "mobilenetv2_0.25", "--weights", "none", "--train", str(records), "--val", str(records),
                 "--out", str(out), "--input-size", "32", "--epochs", "3", "--batch-size", "8", "--workers", "0",
                 "--policy", "pretrained", "--lr", "0.05", "--schedule", "step", "--step-epochs", "1",
                 "--checkpoint-every", "1", "--resume"])
    assert code == 0, capsys.readouterr().err
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


def test_train_cli_uses_the_recipe_by_default_and_set_changes_it(records, tmp_path, capsys):
    out = tmp_path / "model"
    code = main(["train", "mobilenetv2_0.25", "--weights", "none", "--train", str(records), "--val", str(records),
                 "--out", str(out), "--input-size", "32", "--epochs", "1", "--head-epochs", "1",
                 "--batch-size", "8", "--workers", "0", "--set", "ema=none", "--set", "layer_decay=0.5"])
    assert code == 0, capsys.readouterr().err
    plan = (out / "plan.txt").read_text()
    assert "x0.5 per group" in plan and "weight averaging        off" in plan
    assert (out / "fine_tune" / "history.json").exists() and (out / "head" / "history.json").exists()
    model = ft.load_model(out)
    assert model.preprocess.size == (32, 32)
    # --plan shows the recipe's decisions
    assert main(["train", "mobilenetv2_0.25", "--weights", "none", "--train", str(records), "--out",
                 str(tmp_path / "p"), "--plan", "--workers", "0"]) == 0
    assert "head warm-up" in capsys.readouterr().out


def test_train_cli_refuses_manual_options_with_a_recipe_and_bad_fields(records, tmp_path, capsys):
    base = ["train", "mobilenetv2_0.25", "--weights", "none", "--train", str(records), "--out", str(tmp_path / "m")]
    assert main(base + ["--recipe", "default", "--policy", "pretrained"]) == 1
    assert "--recipe manual" in capsys.readouterr().err
    assert main(base + ["--set", "emaa=0.9"]) == 1
    assert "Did you mean 'ema'" in capsys.readouterr().err
    assert main(base + ["--set", "ema"]) == 1
    assert "FIELD=VALUE" in capsys.readouterr().err


def test_lr_find_cli_writes_plot_and_suggestion(records, tmp_path, capsys):
    out = tmp_path / "lr.png"
    code = main(["lr-find", "mobilenetv2_0.25", "--weights", "none", "--train", str(records), "--out", str(out),
                 "--num-steps", "6", "--set", "input_size=32", "--set", "batch_size=4"])
    assert code == 0, capsys.readouterr().err
    assert out.is_file() and (tmp_path / "lr.json").is_file()
    assert "Suggested learning rate" in capsys.readouterr().out


def test_train_cli_defaults_are_the_library_recipe_the_main_job_uses():
    from finetune.cli import build_parser
    from finetune.cli._quickstart import _recipe
    from finetune.cli._train import _mode, recipe_from_args
    from finetune.train import Recipe

    args = build_parser().parse_args(["train", "efficientnet_lite0", "--train", "t.rec", "--out", "o"])
    assert _mode(args) == "default"
    assert recipe_from_args(args) == Recipe()
    qs = build_parser().parse_args(["quickstart"])
    assert _recipe(qs) == Recipe()


def test_the_output_folder_keeps_its_histories_when_the_model_is_saved_and_refuses_a_foreign_folder(tmp_path):
    import finetune as ft
    from finetune.cli._train import MODEL_DIR, _start_run
    from finetune.errors import OutputExistsError

    bb = ft.Backbone.from_zoo("mobilenet0.25", weights=None)
    model = ft.HeadReplacer(2).apply(bb, class_names=["a", "b"])
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.json").write_text("{}")
    (project / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="config.json"):
        _start_run(project)
    assert sorted(os.listdir(project)) == ["config.json", "notes.txt"]

    run = tmp_path / "run"
    _start_run(run)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"ck")
    (run / "history.json").write_text("[]")
    model.save(run / MODEL_DIR)  # what training does at its end
    _start_run(run)  # a second run on the same folder
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == b"ck" and (run / "history.json").exists()
    assert ft.load_model(run).class_names == ["a", "b"]  # the run folder loads as its model


def test_a_run_that_fails_keeps_the_previous_model_and_an_unfinished_run_does_not_load(records, tmp_path, capsys):
    """The model is written once, when training ends: a diverging (or interrupted) run never leaves an
    untrained model in --out, over a trained one or in a new folder."""
    from finetune.errors import ModelError

    common = ["train", "mobilenet0.25", "--weights", "none", "--train", str(records), "--input-size", "32",
              "--head-epochs", "0", "--epochs", "1", "--workers", "0", "--no-progress"]
    out = tmp_path / "run"
    assert main(common + ["--out", str(out)]) == 0, capsys.readouterr().err
    before = (out / "model" / "weights.params").read_bytes()
    assert main(common + ["--out", str(out), "--lr", "1e10"]) == 1
    assert "checkpoint is none yet" in capsys.readouterr().err
    assert (out / "model" / "weights.params").read_bytes() == before
    fresh = tmp_path / "fresh"
    assert main(common + ["--out", str(fresh), "--lr", "1e10"]) == 1
    with pytest.raises(ModelError, match="has not finished"):
        ft.load_model(fresh)


def test_train_refuses_validation_images_whose_class_list_differs_from_the_model(image_folder, records, tmp_path,
                                                                                  capsys):
    """Validation records of cat and fish: fish is their label 1, the model's dog. Refused, not mis-scored."""
    import shutil

    sub = tmp_path / "sub"
    for name in ("cat", "fish"):
        shutil.copytree(image_folder / name, sub / name)
    ft.pack(ft.ImageList.from_folder(sub), tmp_path / "val", resize=40, workers=1)
    code = main(["train", "mobilenet0.25", "--weights", "none", "--train", str(records), "--val",
                 str(tmp_path / "val"), "--input-size", "32", "--head-epochs", "0", "--epochs", "1", "--workers",
                 "0", "--no-progress", "--out", str(tmp_path / "run")])
    assert code == 1
    assert "'val' images name the classes ['cat', 'fish'], the model ['cat', 'dog', 'fish']" in capsys.readouterr().err


def test_train_refuses_num_classes_that_disagrees_with_the_records(records, tmp_path, capsys):
    code = main(["train", "mobilenet0.25", "--weights", "none", "--train", str(records), "--num-classes", "2",
                 "--out", str(tmp_path / "run")])
    assert code == 1 and "--num-classes 2 disagrees with the 3 classes" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_resume_refuses_another_input_size_and_says_when_there_is_nothing_to_resume(records, tmp_path, capsys,
                                                                                   caplog):
    common = ["train", "mobilenet0.25", "--weights", "none", "--train", str(records), "--head-epochs", "0",
              "--workers", "0", "--no-progress", "--out", str(tmp_path / "run")]
    assert main(common + ["--input-size", "32", "--epochs", "1", "--checkpoint-every", "1"]) == 0
    capsys.readouterr()
    assert main(common + ["--input-size", "48", "--epochs", "2", "--resume"]) == 1
    assert "input_size: checkpoint [32, 32], now [48, 48]" in capsys.readouterr().err
    fresh = ["train", "mobilenet0.25", "--weights", "none", "--train", str(records), "--head-epochs", "0",
             "--workers", "0", "--no-progress", "--input-size", "32", "--epochs", "1", "--resume", "--out",
             str(tmp_path / "typo")]
    assert main(fresh) == 1  # resuming never starts afresh (it did, with a warning, before)
    assert "No checkpoint to resume" in capsys.readouterr().err

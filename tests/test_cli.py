"""The command line: dispatch, thread set-up, errors, and the main job (quickstart)."""

import json

import pytest

from finetune.cli import build_parser, configure_threads, main


def test_threads_default_to_core_count_unless_set():
    env = {}
    msg = configure_threads(env)
    assert int(env["OMP_NUM_THREADS"]) >= 1 and "unset" in msg
    env = {"OMP_NUM_THREADS": "3"}
    assert "set by you" in configure_threads(env) and env["OMP_NUM_THREADS"] == "3"


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for expected in ("quickstart", "im2rec", "pack", "check", "split", "train", "predict", "evaluate",
                     "gradcam", "export", "convert-caffe", "extract", "index", "retrieve",
                     "eval-retrieval"):
        assert expected in commands, expected
    for name, sub in commands.items():
        assert sub.format_help().strip(), name


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_library_error_becomes_message_and_exit_1(capsys, tmp_path):
    assert main(["predict", str(tmp_path / "missing_model"), str(tmp_path / "x.jpg")]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.realdata
def test_quickstart_runs_end_to_end_and_writes_a_loadable_model(tmp_path):
    import finetune as ft

    out = tmp_path / "qs"
    assert main(["-q", "quickstart", "--out", str(out), "--per-class", "6", "--test-per-class", "2",
                 "--epochs", "1", "--head-epochs", "1", "--input-size", "32"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["test_top1"] <= 1.0
    model = ft.load_model(summary["model_dir"])
    assert len(model.class_names) == 10 and model.preprocess.size == (32, 32)
    assert summary["test_images"] == 20 and summary["linear_probe_top1"] is not None
    report = out / "report"
    for name in ("training_curves.png", "confusion_matrix.png", "per_class.csv", "test_report.json"):
        assert (report / name).is_file(), name
    errors = (report / "most_confident_errors.csv").read_text()
    assert "record[" not in errors and ".png" in errors  # errors are named by their files


def test_no_command_writes_its_result_over_one_of_its_input_images(image_folder, capsys):
    """``--out`` naming an input image (in a folder given, or the file given) is refused before anything runs."""
    import argparse

    from finetune.cli import _refuse_output_over_input
    from finetune.errors import OutputExistsError

    photo = next(image_folder.glob("cat/*.png"))
    before = photo.read_bytes()
    assert main(["check", str(image_folder), "--workers", "0", "--out", str(photo)]) == 1
    assert "is one of the images this command reads" in capsys.readouterr().err
    with pytest.raises(OutputExistsError, match="one of the images"):
        _refuse_output_over_input(argparse.Namespace(model="m", images=[str(photo)], out=str(photo)))
    _refuse_output_over_input(argparse.Namespace(images=[str(photo)], out=str(image_folder.parent / "heat.png")))
    assert photo.read_bytes() == before


def test_a_closed_pipe_on_stdout_ends_the_command_quietly(monkeypatch, capsys):
    """``finetune predict ... | head -1``: once the reader has gone, the command ends like ``cat`` would
    (status 141, nothing on stderr) instead of printing 'error: cannot use: Broken pipe'."""
    import finetune.cli as cli
    import finetune.cli._data as data_commands

    def closed(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(data_commands, "_check", closed)
    monkeypatch.setattr(cli.os, "dup2", lambda *a: None)  # leave pytest's stdout alone
    assert main(["check", "."]) == 141
    assert "error" not in capsys.readouterr().err


def test_a_deleted_working_folder_is_named(tmp_path):
    """With the working folder deleted, every command said "cannot use: No such file or directory"."""
    import os
    import subprocess
    import sys

    gone = tmp_path / "gone"
    gone.mkdir()
    script = ("import os, sys; os.chdir(%r); os.rmdir(%r); sys.argv = ['finetune', 'check', 'x'];"
              "from finetune.cli import main; sys.exit(main())" % (str(gone), str(gone)))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert r.returncode == 1 and "The current folder no longer exists" in r.stderr, r.stderr

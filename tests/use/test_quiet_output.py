"""What a command shows: bars only where they redraw, each result once, no MXNet chatter, LR steps only."""

from __future__ import annotations

import ast
import io
import logging
from pathlib import Path

import numpy as np
import pytest

import finetune
from finetune._progress import RESULT, progress_bar, redraws_in_place, results_printed
from finetune.train import ConstantSchedule, CosineSchedule, StepSchedule
from finetune.use import plot_history

from .conftest import make_tiny

PACKAGE = Path(finetune.__file__).parent


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "_progress.py")


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_but_progress_makes_a_tqdm_bar(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert not (node.module or "").startswith("tqdm"), f"{path}: use finetune._progress.progress_bar"
        if isinstance(node, ast.Import):
            assert not any(a.name.startswith("tqdm") for a in node.names), path


class _Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("stream,show,drawn", [(_Tty(), True, True), (_Tty(), False, False),
                                               (io.StringIO(), True, False), (None, True, False)])
def test_a_bar_is_drawn_only_on_a_terminal_and_when_asked(monkeypatch, stream, show, drawn):
    monkeypatch.setattr("sys.stderr", stream)
    assert redraws_in_place() is (stream is not None and stream.isatty())
    bar = progress_bar(range(3), desc="x", show=show)
    assert bar.disable is (not drawn)
    assert list(bar) == [0, 1, 2]


def test_prediction_redirected_to_a_file_writes_no_bar(capsys):
    net = make_tiny()
    images = np.zeros((40, 16, 16, 3), np.uint8)  # more than 4 batches: a bar on a terminal
    finetune.Predictor(net, batch_size=4, workers=1, fuse=False).predict(images, color="RGB")
    assert "predict" not in capsys.readouterr().err


def test_a_result_record_is_dropped_only_inside_results_printed():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    log = logging.getLogger("finetune.test")
    try:
        with results_printed():
            log.warning("result inside", extra=RESULT)
            log.warning("progress inside")
        log.warning("result outside", extra=RESULT)
    finally:
        root.removeHandler(handler)
    assert stream.getvalue().splitlines() == ["progress inside", "result outside"]


def _folder(tmp_path):
    import cv2

    for c in "ab":
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(tmp_path / "imgs" / c / f"{i}.png"), np.full((20, 20, 3), 40 * i, np.uint8))
    (tmp_path / "imgs" / "a" / "bad.png").write_bytes(b"not an image")
    return tmp_path / "imgs"


@pytest.mark.parametrize("command", [["check"], ["pack", "--out", "{tmp}/recs/all"]])
def test_a_bad_file_is_shown_once(command, tmp_path, capsys, caplog):
    from finetune.cli import main

    images = _folder(tmp_path)
    argv = [command[0], str(images)] + [a.format(tmp=tmp_path) for a in command[1:]]
    with caplog.at_level(logging.INFO):
        handler = logging.StreamHandler(io.StringIO())
        logging.getLogger().addHandler(handler)
        try:
            main(argv)
        finally:
            logging.getLogger().removeHandler(handler)
    out = capsys.readouterr()
    shown = out.out + out.err + handler.stream.getvalue()
    assert shown.count("bad.png") == 1, shown


def test_export_shows_no_mxnet_log_line_with_a_temporary_path(tmp_path):
    from finetune.models._io import _export as _deploy

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with _deploy._mxnet_info_silenced():
            logging.info("Exported ONNX file /tmp/.x.tmpdir/model.onnx saved to disk")  # as MXNet logs it
            logging.warning("a warning stays")
    finally:
        root.removeHandler(handler)
    assert stream.getvalue().splitlines() == ["a warning stays"]


SCHEDULES = [(ConstantSchedule(), []), (CosineSchedule(), []), (CosineSchedule(warmup_epochs=2), []),
             (CosineSchedule(final=0.1, warmup_epochs=1, warmup_start=0.1), []),
             (StepSchedule(0.1, epochs=[5, 9]), [5, 9]), (StepSchedule(0.5, epochs=4), [4, 8])]


@pytest.mark.parametrize("schedule,steps", SCHEDULES, ids=lambda s: type(s).__name__ if not isinstance(s, list) else "")
def test_only_steps_of_the_learning_rate_are_marked(schedule, steps):
    schedule.setup(12)
    rows = [{"epoch": e, "lr": 0.1 * schedule.factor(e), "train_loss": 1.0 / (e + 1)} for e in range(12)]
    fig = plot_history(rows)
    marks = [line.get_xdata()[0] for line in fig.axes[0].lines if line.get_linestyle() == "--"]
    assert marks == steps

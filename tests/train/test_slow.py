"""Subprocess tests: kill -9 and exact resume; dist_sync workers on 127.0.0.1."""

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

from finetune.train import Trainer, launch

from ._nets import data, mlp, params

ROOT = str(Path(__file__).resolve().parents[2])


def _env(**kw):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    env.update(kw)
    return env


def _run(out, **kw):
    return subprocess.run([sys.executable, "-m", "tests.train._worker", "run", str(out)], env=_env(**kw),
                          cwd=ROOT, timeout=120, capture_output=True, text=True)


def _load(path):
    return {k: v.asnumpy() for k, v in mx.nd.load(str(path)).items()}


def _position(ckpt):
    try:
        with zipfile.ZipFile(ckpt) as z:
            s = json.loads(z.read("state.json"))
        return s["epoch"], s["batch"]
    except (OSError, KeyError, zipfile.BadZipFile):
        return None


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_equals_uninterrupted(tmp_path):
    full = tmp_path / "full"
    r = _run(full)
    assert r.returncode == 0, r.stderr
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "tests.train._worker", "run", str(cut)],
                            env=_env(SLOW="0.05"), cwd=ROOT)
    ckpt = cut / "checkpoints" / "last.ckpt"
    deadline = time.time() + 60
    while time.time() < deadline:
        pos = _position(ckpt) if ckpt.exists() else None
        if pos and pos[0] == 1 and pos[1] >= 4:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    epoch, batch = _position(ckpt)
    assert epoch == 1 and 0 < batch < 10, (epoch, batch)  # killed in the middle of an epoch
    assert not (cut / "final.params").exists()
    r = _run(cut, RESUME="1")
    assert r.returncode == 0, r.stderr
    a, b = _load(full / "final.params"), _load(cut / "final.params")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert json.loads((full / "history.json").read_text())[-1]["val_loss"] == pytest.approx(
        json.loads((cut / "history.json").read_text())[-1]["val_loss"], rel=1e-6)


@pytest.mark.slow
def test_two_dist_sync_workers_equal_one_worker_with_the_combined_batch(tmp_path):
    code = launch([sys.executable, "-m", "tests.train._worker", "dist", str(tmp_path)], num_workers=2,
                  num_servers=1, env={"PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}, timeout=300, cwd=ROOT)
    assert code == 0
    net = mlp(seed=5)
    net.load_parameters(str(tmp_path / "dist.params"))
    mine = params(net)
    one = Trainer(mlp(), batch_size=12, progress=False, kvstore="local", optimizer_params={"lr": 0.1})
    one.fit(data(40), epochs=2)
    ref = params(one.model)
    for k in ref:
        np.testing.assert_allclose(mine[k], ref[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert not np.allclose(ref["head_fc_weight"], params(mlp())["head_fc_weight"])


@pytest.mark.slow
def test_default_recipe_on_two_dist_sync_workers_finishes_with_the_same_weights(image_folder, tmp_path, capfd):
    """Head warm-up, fine-tuning, EMA, TTA validation and keep-best on two workers: same weights, one writer."""
    import finetune as ft

    ft.pack(ft.ImageList.from_folder(image_folder), tmp_path / "all", resize=40, workers=1)
    code = launch([sys.executable, "-m", "tests.train._worker", "recipe", str(tmp_path)], num_workers=2,
                  num_servers=1, env={"PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}, timeout=300, cwd=ROOT)
    assert code == 0
    w0, w1 = _load(tmp_path / "worker0.params"), _load(tmp_path / "worker1.params")
    assert sorted(w0) == sorted(w1)
    for k in w0:
        np.testing.assert_array_equal(w0[k], w1[k], err_msg=k)
    reports = [line for line in capfd.readouterr().out.splitlines() if line.startswith("Trained ")]
    assert len(reports) == 1  # rank 0 alone saves and reports
    ft.load_model(reports[0].rsplit("model directory: ", 1)[1]).save_parameters(str(tmp_path / "saved.params"))
    saved = _load(tmp_path / "saved.params")
    for k in w0:
        np.testing.assert_array_equal(saved[k], w0[k], err_msg=k)
    assert not [p.name for p in tmp_path.iterdir() if ".keep" in p.name]
    histories = [json.loads(p.read_text()) for p in (tmp_path / "run").rglob("history.json")]
    assert sorted(len(h) for h in histories) == [1, 30]  # fine-tuning, head warm-up: one writer each
    assert all("val_top1" in row for h in histories for row in h)

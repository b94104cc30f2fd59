"""Smoke test: every peer benchmark runs in its ``--tiny`` mode (no timing is checked)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_rows(rows) -> None:
    assert rows
    for measure, value, ratio, baseline, target in rows:
        assert isinstance(measure, str) and baseline and value == value  # not NaN
        assert ratio is None or ratio > 0


def test_peers_inference_tiny():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    rows = load("peers_inference").ratio_rows(["--tiny"])
    check_rows(rows)
    assert {m.split()[1] for m, *_ in rows} == {"fp32", "fused", "int8", "ort"}


def test_peers_training_tiny():
    # torch and timm are only imported by the PyTorch side's own process
    if importlib.util.find_spec("timm") is None:
        pytest.skip("timm (the bench extra) is not installed")
    rows = load("peers_training").ratio_rows(["--tiny"])
    check_rows(rows)
    assert [m.split()[-1] for m, *_ in rows] == ["nchw", "channels_last", "finetune"]


def test_search_scale_tiny():
    pytest.importorskip("faiss")
    rows = load("search_scale").ratio_rows(["--tiny"])
    check_rows(rows)
    assert [m.split()[2] for m, *_ in rows] == ["exact", "ivf", "ivfpq", "ivfpq+rerank", "hnsw"]
    assert rows[0][2] == 1.0 and "on disk" in rows[3][0]


def test_run_all_tiny_prints_one_table():
    out = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--tiny", "--only", "search_scale"],
                         capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    if "failed: MissingExtraError" in out.stdout:  # without faiss: reported, exit status 1
        assert out.returncode == 1 and 'pip install "finetune[faiss]"' in out.stdout
        return
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["benchmark", "measure", "value"]
    assert sum(line.startswith("search_scale") for line in lines) == 5

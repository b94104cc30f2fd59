"""Smoke test: every benchmark runs in its ``--tiny`` mode (no timing is checked)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"

# every benchmark, and the test that runs its --tiny mode
COVERED = {
    "data_pipeline": "test_data_pipeline_tiny",
    "extract": "test_extract_tiny",
    "peers_inference": "test_peers_inference_tiny",
    "peers_training": "test_peers_training_tiny",
    "predict": "test_predict_tiny",
    "retrieval": "test_retrieval_tiny",
    "retrieval_fashion_mnist": "test_retrieval_fashion_mnist_tiny",
    "retrieval_recipe": "test_retrieval_recipe_tiny",
    "search_scale": "test_search_scale_tiny",
    "training": "test_training_tiny",
    "training_step": "test_training_step_tiny",
    "transfer_fashion_mnist": "test_benchmark_transfer::test_transfer_benchmark_tiny_prints_every_row",
}


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
        assert isinstance(target, str)


def test_every_benchmark_has_a_tiny_mode_and_a_smoke_test():
    assert set(COVERED) == {p.stem for p in load("run_all").benchmarks()}
    for stem, test in COVERED.items():
        assert '"--tiny"' in (BENCH / f"{stem}.py").read_text(encoding="utf-8"), stem
        module, _, name = test.rpartition("::")
        where = importlib.import_module(f"tests.{module}") if module else sys.modules[__name__]
        assert callable(getattr(where, name, None)), test


@pytest.mark.slow  # runs MXNet's im2rec.py as a command three times
def test_data_pipeline_tiny():
    rows = load("data_pipeline").ratio_rows(["--tiny"])
    check_rows(rows)
    assert [m.split(",")[0] for m, *_ in rows] == ["pack"] * 3 + ["load"] * 2


def test_training_tiny():
    rows = load("training").ratio_rows(["--tiny"])
    check_rows(rows)
    assert [r[3] for r in rows] == ["hand-written Gluon loop"] + ["recomputing the frozen backbone"] * 2


def test_training_step_tiny():
    rows = load("training_step").ratio_rows(["--tiny"])
    check_rows(rows)
    assert [m.split(", ")[-1] for m, *_ in rows] == ["batch 4 img/s", "ReLU for ReLU6 img/s", "pad-and-crop graph img/s",
                                                     "every layer trained img/s", "+ EMA img/s", "per parameter img/s",
                                                     "with the multi-tensor EMA update img/s",
                                                     "Lite0 32px Trainer.fit epoch with the multi-tensor EMA update s",
                                                     "Lite0 32px Trainer.fit epoch with the folded graph s"]
    assert rows[-3][3] == "the same step with the per-parameter EMA update"
    assert rows[-2][3] == "the same epoch with the per-parameter EMA update"
    assert rows[-1][3] == "the same epoch with the pad-and-crop graph"


def test_training_step_variants_change_the_graph():
    bench = load("training_step")
    ops = {}
    for name, kw in (("recipe", {}), ("relu", {"relu": True}), ("crop", {"fold": False})):
        step = bench.Step(name, 32, 2, **kw)
        step(), step()  # a size's graph is folded from its second batch on
        ops[name] = [n["op"] for n in json.loads(step.net._cached_graph[1].tojson())["nodes"]]
    assert "clip" in ops["recipe"] and "Crop" not in ops["recipe"]  # the recipe's step runs the folded graph
    assert "clip" not in ops["relu"] and "relu" in ops["relu"]
    assert "Crop" in ops["crop"] and "clip" in ops["crop"]


def test_predict_tiny():
    rows = load("predict").ratio_rows(["--tiny"])
    check_rows(rows)
    assert len(rows) == 2 and all("Predictor.predict" in r[0] for r in rows)


def test_extract_tiny():
    rows = load("extract").ratio_rows(["--tiny"])
    check_rows(rows)
    assert len(rows) == 1 and "FeatureExtractor.extract" in rows[0][0]
    cosine = float(rows[0][0].split("cosine >= ")[1].rstrip(")"))
    assert cosine > 0.999  # the same descriptors as the hand-written loop


def test_retrieval_tiny():
    rows = load("retrieval").ratio_rows(["--tiny"])
    check_rows(rows)
    names = ["finetune RetrievalIndex"] + (["faiss IndexFlatIP"] if importlib.util.find_spec("faiss") else [])
    assert [" ".join(m.split()[2:-1]) for m, *_ in rows] == names


def test_peers_inference_tiny():
    # without onnxruntime the ONNX Runtime side is left out, the others run
    rows = load("peers_inference").ratio_rows(["--tiny"])
    check_rows(rows)
    sides = {"fp32", "fused", "int8"} | ({"ort"} if importlib.util.find_spec("onnxruntime") else set())
    assert {m.split()[1] for m, *_ in rows} == sides


def test_peers_training_tiny():
    # torch and timm are only imported by the PyTorch side's own process
    missing = load("run_all").missing(BENCH / "peers_training.py")
    if missing:
        pytest.skip(f"{', '.join(missing)} (the bench extra) not installed")
    rows = load("peers_training").ratio_rows(["--tiny"])
    check_rows(rows)
    assert [m.split()[-1] for m, *_ in rows] == ["nchw", "channels_last", "finetune"]


def test_search_scale_tiny():
    pytest.importorskip("faiss")
    rows = load("search_scale").ratio_rows(["--tiny"])
    check_rows(rows)
    assert [m.split()[2] for m, *_ in rows] == ["exact", "ivf", "ivfpq", "ivfpq+rerank", "hnsw"]
    assert rows[0][2] == 1.0 and "on disk" in rows[3][0]


def test_search_scale_runs_the_chosen_methods_beside_exact_search():
    pytest.importorskip("faiss")
    rows = load("search_scale").ratio_rows(["--tiny", "--methods", "ivfpq"])
    assert [m.split()[2] for m, *_ in rows] == ["exact", "ivfpq", "ivfpq+rerank"]
    with pytest.raises(SystemExit):
        load("search_scale").ratio_rows(["--tiny", "--methods", "ivf,annoy"])


@pytest.mark.realdata
def test_retrieval_recipe_tiny(capsys, tmp_path):
    # without a model directory: Lite0 with an untrained head stands in for the fine-tuned model
    result = load("retrieval_recipe").main(["--tiny", "--json", str(tmp_path / "r.json")])
    assert len(result) == 2 and all(0 <= m <= 1 for m, _ in result.values())
    assert "| descriptor | pretrained mAP | fine-tuned mAP |" in capsys.readouterr().out
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["queries"] + written["database"] == 100 and written["input_size"] == 32
    assert {k.split()[0] for k in written["map"]} == {"pretrained", "fine-tuned"} and len(written["map"]) == 3
    assert all(0 <= m <= 1 for m in written["map"].values())


@pytest.mark.slow
@pytest.mark.realdata
def test_retrieval_fashion_mnist_tiny(capsys):
    load("retrieval_fashion_mnist").main(["--tiny"])
    out = capsys.readouterr().out
    assert "class-level retrieval mAP" in out and "logits" in out and "done" in out


def test_run_all_reads_what_a_benchmark_needs_without_importing_it(tmp_path):
    run_all = load("run_all")
    assert run_all.needs(BENCH / "search_scale.py") == ("faiss",)
    assert run_all.needs(BENCH / "peers_training.py") == ("torch", "timm")
    assert run_all.needs(BENCH / "retrieval.py") == ()
    script = tmp_path / "bench.py"
    script.write_text('raise SystemExit("imported")\nNEEDS = ("os", "no_such_module_here")\n')
    assert run_all.missing(script) == ["no_such_module_here"]


def test_run_all_tiny_prints_one_table():
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p), "PATH": "",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    out = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--tiny", "--only", "retrieval,search_scale"],
                         capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["benchmark", "measure", "value"]
    assert sum(line.startswith("retrieval ") for line in lines) >= 1
    if importlib.util.find_spec("faiss"):
        assert sum(line.startswith("search_scale") for line in lines) == 5
    else:  # reported, not a failure
        assert "[search_scale] skipped: needs faiss (not installed)" in lines

"""The recipe benchmark and the retrieval benchmark run (tiny sizes; the figures are in the docs)."""

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
@pytest.mark.realdata
def test_transfer_benchmark_tiny_prints_every_row(tmp_path, capsys):
    results = _load("transfer_fashion_mnist").main(
        ["--tiny", "--rows", "pixels,probe,recipe,-tta,-ema", "--work", str(tmp_path), "--json",
         str(tmp_path / "r.json")])
    assert set(results["rows"]) == {"pixels", "probe", "recipe", "-tta", "-ema"}
    assert all(0 <= r["top1"] <= 1 for r in results["rows"].values())
    assert "| recipe |" in capsys.readouterr().out
    # an interrupted run continues from its checkpoints on the same records: here nothing is left to train
    resumed = _load("transfer_fashion_mnist").main(
        ["--tiny", "--rows", "recipe", "--work", str(tmp_path), "--resume"])
    assert resumed["resumed"] and resumed["rows"]["recipe"]["top1"] == results["rows"]["recipe"]["top1"]
    assert resumed["rows"]["recipe"]["epoch_seconds"] == results["rows"]["recipe"]["epoch_seconds"]
    retrieval = _load("retrieval_recipe").main([str(tmp_path / "runs" / "recipe_model"), "--limit", "200",
                                                "--queries", "4"])
    assert all(0 <= m <= 1 for m, _ in retrieval.values())

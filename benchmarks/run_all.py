"""Run every benchmark in this folder and print one table of ratios.

A benchmark module that defines ``ratio_rows(argv)`` returns rows
``(measure, value, ratio, baseline, target)`` measured in this run; those go
into the table. Every other ``*.py`` here is run as a script and its own
report is printed after the table, with its exit status (those scripts have no
``--tiny`` mode, so ``--tiny`` skips them).

Run::

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/run_all.py [--tiny] [--only peers_inference,...]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def benchmarks() -> list:
    return sorted(p for p in HERE.glob("*.py") if p.name != "run_all.py" and not p.name.startswith("_"))


def load(path: Path):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def has_ratio_rows(path: Path) -> bool:
    return "def ratio_rows(" in path.read_text(encoding="utf-8")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="smoke test: tiny sizes; scripts without --tiny are skipped")
    p.add_argument("--only", help="comma-separated benchmark names (file stems)")
    args = p.parse_args(argv)
    chosen = benchmarks()
    if args.only:
        wanted = set(args.only.split(","))
        chosen = [b for b in chosen if b.stem in wanted]
    rows, reports, failed = [], [], 0
    for path in chosen:
        t = time.perf_counter()
        if has_ratio_rows(path):
            try:
                rows += [(path.stem, *r) for r in load(path).ratio_rows(["--tiny"] if args.tiny else [])]
            except Exception as exc:  # noqa: BLE001 - one failing benchmark must not hide the others
                failed += 1
                reports.append((path.stem, f"failed: {type(exc).__name__}: {exc}"))
        elif args.tiny:
            reports.append((path.stem, "skipped (no --tiny mode)"))
            continue
        else:
            proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(HERE.parent)})
            failed += proc.returncode != 0
            reports.append((path.stem, f"exit {proc.returncode}\n{proc.stdout.strip()}"))
        reports.append((path.stem, f"took {time.perf_counter() - t:.0f} s"))
    print(f"{'benchmark':<16} {'measure':<58} {'value':>9} {'ratio':>6}  {'baseline':<26} target")
    for bench, measure, value, ratio, baseline, target in rows:
        r = "" if ratio is None else f"{ratio:6.2f}"
        print(f"{bench:<16} {measure:<58} {value:9.2f} {r:>6}  {baseline:<26} {target}")
    for bench, text in reports:
        print(f"[{bench}] {text}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

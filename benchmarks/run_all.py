"""Run every benchmark in this folder and print one table of ratios.

A benchmark module that defines ``ratio_rows(argv)`` returns rows
``(measure, value, ratio, baseline, target)`` measured in this run, ratio
being ours against the named baseline; those go into the table (the module
runs in this process, its own report goes to stderr). Every other ``*.py``
here measures quality rather than a ratio (mAP, top-1) and is run as a
script; its report is printed after the table, with its exit status.

Every benchmark has a ``--tiny`` mode, a smoke test of seconds; ``--tiny``
passes it on. A benchmark that lists the modules it cannot run without in a
module-level ``NEEDS = ("faiss", ...)`` is skipped, and reported so, when one
of them is not installed.

Run::

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/run_all.py [--tiny] [--only peers_inference,...]
"""

from __future__ import annotations

import argparse
import ast
import contextlib
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


def needs(path: Path) -> tuple:
    """The modules a benchmark declares in ``NEEDS`` (read from its source, without importing it)."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "NEEDS" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    return ()


def missing(path: Path) -> list:
    """The modules of :func:`needs` that are not installed."""
    return [name for name in needs(path) if importlib.util.find_spec(name) is None]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="smoke test: every benchmark in its --tiny mode")
    p.add_argument("--only", help="comma-separated benchmark names (file stems)")
    args = p.parse_args(argv)
    chosen = benchmarks()
    if args.only:
        wanted = set(args.only.split(","))
        chosen = [b for b in chosen if b.stem in wanted]
    # checked before any benchmark runs: some hide modules from this process (torch, for gluoncv)
    absent = {path: missing(path) for path in chosen}
    rows, reports, failed = [], [], 0
    extra = ["--tiny"] if args.tiny else []
    for path in chosen:
        if absent[path]:
            reports.append((path.stem, f"skipped: needs {', '.join(absent[path])} (not installed)"))
            continue
        t = time.perf_counter()
        if has_ratio_rows(path):
            try:
                with contextlib.redirect_stdout(sys.stderr):  # the table alone on stdout
                    rows += [(path.stem, *r) for r in load(path).ratio_rows(extra)]
            except Exception as exc:  # noqa: BLE001 - one failing benchmark must not hide the others
                failed += 1
                reports.append((path.stem, f"failed: {type(exc).__name__}: {exc}"))
        else:
            proc = subprocess.run([sys.executable, str(path), *extra], capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(HERE.parent)})
            failed += proc.returncode != 0
            tail = proc.stderr.strip().splitlines()[-5:] if proc.returncode else []
            reports.append((path.stem, "\n".join([f"exit {proc.returncode}", proc.stdout.strip(), *tail])))
        reports.append((path.stem, f"took {time.perf_counter() - t:.1f} s"))
    wide = [max([len(head)] + [len(r[i]) for r in rows]) for i, head in ((0, "benchmark"), (1, "measure"),
                                                                         (4, "baseline"))]
    print(f"{'benchmark':<{wide[0]}} {'measure':<{wide[1]}} {'value':>10} {'ratio':>6}  {'baseline':<{wide[2]}} target")
    for bench, measure, value, ratio, baseline, target in rows:
        r = "" if ratio is None else f"{ratio:6.2f}"
        print(f"{bench:<{wide[0]}} {measure:<{wide[1]}} {value:10.2f} {r:>6}  {baseline:<{wide[2]}} {target}")
    for bench, text in reports:
        print(f"[{bench}] {text}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

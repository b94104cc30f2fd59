"""Ctrl-C and SIGTERM end worker pools within seconds, free shared memory and leave no partial output."""

import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from finetune._parallel import ordered_map

SHM = "/dev/shm"


def _shm_entries() -> set:
    return set(os.listdir(SHM)) if os.path.isdir(SHM) else set()


def _left_behind(before: set) -> set:
    """/dev/shm entries created since ``before`` that are still there a moment later (others' are transient)."""
    new = _shm_entries() - before
    if new:
        time.sleep(2)
        new &= _shm_entries()
    return new


def _slow(context, item):
    time.sleep(context)
    return item


def test_workers_ignore_sigint_so_only_the_main_process_decides():
    results, pids = [], set()
    for value in ordered_map(_slow, 0.02, range(60), workers=2, chunksize=1):
        results.append(value)
        if len(results) == 2:
            pids = {p.pid for p in multiprocessing.active_children()}
            for pid in pids:
                os.kill(pid, signal.SIGINT)
    assert results == list(range(60))
    assert pids


def test_what_the_pool_clean_up_raises_on_a_cut_queue_message_is_not_printed(monkeypatch):
    """A worker killed halfway through reading a task leaves a cut message; draining it raises EOFError."""
    from finetune import _parallel

    def cut_message(*parts):
        raise EOFError("Ran out of input")

    monkeypatch.setattr(multiprocessing.pool.Pool, "_terminate_pool", staticmethod(cut_message))
    printed = []
    monkeypatch.setattr(threading, "excepthook", lambda args: printed.append(args.exc_value))
    pool = _parallel.fork_pool(2, None, ())
    _parallel.stop_pool(pool)
    assert printed == []


def test_an_interrupted_ordered_map_stops_its_workers_within_seconds():
    gen = ordered_map(_slow, 0.05, range(1000), workers=2, chunksize=1)
    next(gen)
    workers = [p for p in multiprocessing.active_children() if p.is_alive()]
    assert workers
    t0 = time.time()
    with pytest.raises(KeyboardInterrupt):
        gen.throw(KeyboardInterrupt)
    assert time.time() - t0 < 10
    assert not any(p.is_alive() for p in workers)


def test_the_pool_is_down_when_the_last_item_is_taken_so_no_interrupt_lands_in_a_finaliser():
    """``pack`` zips its items with the results and never asks past the last one: the generator was left to the
    garbage collector, whose clean-up swallowed a Ctrl-C landing there ("Exception ignored in: <generator ...>",
    then "... written", exit 0) or hung in Python's pool shutdown."""
    gen = ordered_map(_slow, 0.0, range(20), workers=2, chunksize=1)
    got = [value for _, value in zip(range(20), gen)]
    assert got == list(range(20))
    assert not [p for p in multiprocessing.active_children() if p.is_alive()]  # stopped before the generator ends


_COLLECTED = """
import gc, os, signal, sys, time
sys.path.insert(0, {root!r})
from finetune._parallel import fork_pool
pool = fork_pool(2, None, ())
pool.map(abs, range(10))
time.sleep(0.3)  # idle workers wait for work holding the task queue's read lock
for p in list(pool._pool):
    os.kill(p.pid, signal.SIGKILL)  # a worker killed with the lock held (SIGTERM to the process group)
time.sleep(0.3)
t = time.time()
del pool
gc.collect()
print("collected in", round(time.time() - t, 1))
"""


def test_a_pool_left_to_the_garbage_collector_is_stopped_within_seconds():
    """Python's own pool clean-up (when a pool is collected, or at exit) waited for ever for a lock a killed worker
    held: "finetune train: terminated", then a hang until SIGKILL."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", _COLLECTED.format(root=root)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "collected in" in r.stdout, r.stderr[-2000:]


def test_an_interrupted_record_loader_frees_its_shared_memory(image_folder, tmp_path):
    from finetune import ImageList, Preprocess, RecordDataset, pack

    pack(ImageList.from_folder(image_folder), tmp_path / "d", workers=0)
    ds = RecordDataset(tmp_path / "d.rec", Preprocess(size=(16, 16), resize=16))
    loader = ds.loader(2, workers=2)
    batches = iter(loader)
    next(batches)
    names = [s.name.lstrip("/") for s in loader._shms]
    workers = list(loader._pool._pool)
    assert all(name in _shm_entries() for name in names)
    with pytest.raises(KeyboardInterrupt):
        batches.throw(KeyboardInterrupt)
    assert not any(p.is_alive() for p in workers)
    assert not set(names) & _shm_entries()


# ------------------------------------------------------------------ the command line, for real
@pytest.fixture(scope="module")
def many_images(tmp_path_factory):
    """8,000 copies of one 256 x 256 JPEG in two classes: about two seconds of checking on two workers (1,500 took
    0.4 s on a quiet machine, so a signal sent up to 0.3 s after the workers start could arrive after the end)."""
    root = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(0)
    buf = cv2.imencode(".jpg", rng.integers(0, 255, (256, 256, 3), dtype=np.uint8))[1].tobytes()
    for c in "ab":
        (root / c).mkdir()
        for i in range(4000):
            (root / c / f"{i}.jpg").write_bytes(buf)
    return root


def _run_and_signal(args, sig, target, cwd):
    """Start ``finetune ARGS``, send ``sig`` a random moment after its workers start; (code, stderr, seconds).

    ``target`` "group" signals every process of the command, as a terminal's Ctrl-C does;
    "process" only the main one, as ``kill PID`` does.
    """
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "finetune", *args], cwd=cwd, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = []

    def read():
        for raw in iter(lambda: proc.stderr.read(64), b""):
            err.append(raw)

    def workers() -> int:  # the command's worker processes (its pool), read from /proc
        try:
            with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
                return len(f.read().split())
        except OSError:
            return 0

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.time() + 120
    while workers() < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert workers() >= 2, b"".join(err).decode(errors="replace")
    time.sleep(random.uniform(0.05, 0.3))
    t0 = time.time()
    if target == "group":
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    try:
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    return code, b"".join(err).decode(errors="replace"), time.time() - t0


CASES = [(command, sig, code, target) for command in ("check", "pack")
         for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)) for target in ("group", "process")]
FAST = {("check", signal.SIGINT, 130, "group"), ("pack", signal.SIGTERM, 143, "process")}


@pytest.mark.parametrize("command, sig, code, target",
                         [c if c in FAST else pytest.param(*c, marks=pytest.mark.slow) for c in CASES])
def test_the_cli_ends_quietly_within_seconds(command, sig, code, target, many_images, tmp_path):
    random.seed(f"{command}{sig}{target}")
    before = _shm_entries()
    out = tmp_path / "out"
    args = [command, str(many_images), "--workers", "2"]
    if command == "pack":
        args += ["--out", str(out / "data"), "--resize", "128"]
        out.mkdir()
    got, stderr, seconds = _run_and_signal(args, sig, target, tmp_path)
    assert got == code, stderr
    assert seconds < 10, stderr
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1].split("\r")[-1].strip()
    assert last == f"finetune {command}: {'interrupted' if code == 130 else 'terminated'}", stderr
    assert not _left_behind(before)
    if command == "pack":
        left = [n for n in os.listdir(out) if not n.endswith(".lock")]  # the writers' lock files stay, empty
        assert left == [], "an interrupted pack must leave no partial output"

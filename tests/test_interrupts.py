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

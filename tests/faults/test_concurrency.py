"""Two processes writing one output at once, and a reader during repeated saves.

Afterwards the output is entirely one writer's: the records, index and
class list agree (every record reads), a model directory loads with as many
class names as its classifier has outputs, descriptors have one id per
row, all of one extraction. A reader that loads a model while another
process saves models of other class counts never sees a mix.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import mxnet as mx
import pytest

from .conftest import CLASSES, leftovers, write_images

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _start(argv=None, script=None):
    """A ``finetune`` command (``argv``) or a Python ``script`` in a new process."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    cmd = [sys.executable, "-m", "finetune", *map(str, argv)] if argv else [sys.executable, "-c", script]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            errors="replace")


def _finish(procs, timeout=300) -> list:
    """Wait for every process; each succeeded or failed with one error line."""
    codes = []
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        assert "Traceback" not in err, err
        assert p.returncode in (0, 1), err
        codes.append(p.returncode)
    assert 0 in codes
    return codes


def _classifier_rows(model) -> int:
    size = model.preprocess.size
    return int(model(mx.nd.zeros((1, 3, *size))).shape[1])


def test_two_packs_to_one_prefix(inputs, tmp_path):
    from finetune import RecordDataset

    other = str(tmp_path / "other")
    write_images(other, {f"k{c}": [f"{c}_{i}.png" for i in range(3 + c)] for c in range(5)}, seed=1)
    prefix = str(tmp_path / "out" / "data")
    for _ in range(3):
        _finish([_start(["pack", inputs.images, "--out", prefix, "--workers", "1"]),
                 _start(["pack", other, "--out", prefix, "--workers", "1"])])
        ds = RecordDataset(prefix)
        records = [ds[i] for i in range(len(ds))]
        writers = {(12, tuple(CLASSES)), (25, tuple(f"k{c}" for c in range(5)))}
        assert (len(records), tuple(ds.class_names)) in writers
        assert max(int(label) for _, label in records) == len(ds.class_names) - 1
    assert not leftovers(tmp_path / "out")


_SAVE = textwrap.dedent("""
    import sys
    import finetune as ft
    k, folder, times = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    model = ft.HeadReplacer(k).apply(ft.Backbone.from_zoo("mobilenet0.25", weights=None),
                                     class_names=[f"c{i}" for i in range(k)])
    model.preprocess = model.preprocess.replace(size=(32, 32), resize=32)
    for _ in range(times):
        model.save(folder)
""")


def _saver(k, folder, times):
    return _start(script=_SAVE.replace("sys.argv[1]", repr(str(k))).replace("sys.argv[2]", repr(folder))
                  .replace("sys.argv[3]", repr(str(times))))


def test_two_model_saves_to_one_folder(tmp_path):
    from finetune import load_model

    folder = str(tmp_path / "model")
    _finish([_saver(3, folder, 3), _saver(5, folder, 3)])
    model = load_model(folder)
    assert len(model.class_names) in (3, 5)
    assert _classifier_rows(model) == len(model.class_names)
    assert not leftovers(tmp_path)


def test_two_extracts_to_one_file(inputs, tmp_path):
    from finetune.cli._features import _load_descriptors

    other = str(tmp_path / "other")
    others = write_images(other, {"x": [f"{i}.png" for i in range(7)]}, seed=2)
    out = str(tmp_path / "out" / "feats.npy")
    _finish([_start(["extract", inputs.model, inputs.images, "--layer", inputs.layer, "--out", out, "--no-progress"]),
             _start(["extract", inputs.model, other, "--layer", inputs.layer, "--out", out, "--no-progress"])])
    x, ids = _load_descriptors(out)
    assert len(ids) == len(x)
    with open(inputs.ids, encoding="utf-8") as f:
        first = f.read().splitlines()
    assert sorted(ids) in (sorted(first), sorted(others))
    assert not leftovers(tmp_path / "out")


def test_load_during_repeated_saves_never_mixes(tmp_path):
    from finetune import load_model
    from finetune.errors import FinetuneError

    folder = str(tmp_path / "model")
    _finish([_saver(2, folder, 1)])
    writers = [_saver(2, folder, 6), _saver(4, folder, 6)]
    loads, seen = 0, set()
    deadline = time.monotonic() + 300
    while any(w.poll() is None for w in writers) and time.monotonic() < deadline:
        try:
            model = load_model(folder)
        except FinetuneError:  # a reader may be told to retry; it must never get a mix
            continue
        assert _classifier_rows(model) == len(model.class_names)
        seen.add(len(model.class_names))
        loads += 1
    _finish(writers)
    assert loads > 0 and seen <= {2, 4}

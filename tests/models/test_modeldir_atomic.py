"""Model directories under kill -9 and a full disk: the previous directory or the complete new one, never a part."""

import os
import signal
import subprocess
import sys
import textwrap

import mxnet as mx
import pytest

import finetune as ft
from finetune.errors import WriteError
from tests.listing import listing

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The child saves a second model over ``target`` and dies with SIGKILL at one step of the swap:
# "write" while the weights are written, "journal" before the journal lands, "aside" after the old
# folder was renamed aside, "swap" before the new folder is renamed in, "cleanup" while the old one is
# removed. It first writes the same model to ``ref`` undisturbed, to compare with.
_CHILD = """
import os, signal, sys
sys.path.insert(0, {root!r})
import mxnet as mx
import finetune as ft
from finetune import _commit
from finetune.models._io import _modeldir
mx.random.seed(2)
bb = ft.Backbone.from_zoo("mobilenet0.25", weights=None)
model = ft.HeadReplacer(3).apply(bb, class_names=["x", "y", "z"])
model.save({ref!r})
die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
point, calls = {point!r}, []
real_replace, real_rmtree, real_save = os.replace, _commit.shutil.rmtree, mx.nd.save
def replace(src, dst):
    if os.path.basename(dst) == ".finetune":  # the folder's marker, written whole inside the new folder
        return real_replace(src, dst)
    calls.append(dst)
    if (point, len(calls)) in (("journal", 1), ("aside", 2), ("swap", 3)):
        die()
    real_replace(src, dst)
def rmtree(p, *a, **k):
    if point == "cleanup" and p.endswith(".old"):
        die()
    real_rmtree(p, *a, **k)
def save(fname, data):
    real_save(fname, data)
    if point == "write":
        with open(fname, "r+b") as f:
            f.truncate(os.path.getsize(fname) // 2)
        die()
_commit.os.replace, _commit.shutil.rmtree, mx.nd.save = replace, rmtree, save
model.save({target!r})
"""

_FULL = """
import resource, sys
sys.path.insert(0, {root!r})
import mxnet as mx
import finetune as ft
from finetune.errors import WriteError
mx.random.seed(2)
model = ft.HeadReplacer(3).apply(ft.Backbone.from_zoo("mobilenet0.25", weights=None), class_names=["x", "y", "z"])
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
try:
    model.save({target!r})
except WriteError as e:
    print("WriteError", e.errno, e)
    sys.exit(3)
"""


def _files(folder):
    return {n: open(os.path.join(folder, n), "rb").read() for n in listing(folder)}


@pytest.fixture(scope="module")
def old_model():
    mx.random.seed(1)
    return ft.HeadReplacer(3).apply(ft.Backbone.from_zoo("mobilenet0.25", weights=None), class_names=["a", "b", "c"])


def _run(script, **kw):
    return subprocess.run([sys.executable, "-c", script.format(root=ROOT, **kw)], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


@pytest.mark.slow
@pytest.mark.parametrize("point, expect", [("write", "old"), ("journal", "old"), ("aside", "new"),
                                           ("swap", "new"), ("cleanup", "new")])
def test_kill_9_during_save_leaves_the_old_or_the_new_directory_and_the_next_save_cleans_up(
        old_model, tmp_path, point, expect):
    target, ref = tmp_path / "out" / "m", tmp_path / "ref"
    old_model.save(target)
    old = _files(target)
    r = _run(_CHILD, target=str(target), ref=str(ref), point=point)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    new = _files(ref)
    loaded = ft.load_model(target)  # a reader finishes a swap the kill interrupted
    assert _files(target) == (old if expect == "old" else new)
    assert loaded.class_names == (["a", "b", "c"] if expect == "old" else ["x", "y", "z"])
    if point == "write":
        assert len(listing(target.parent)) == 2  # the killed writer's temporary folder is still there
    old_model.save(target)  # the next save sweeps whatever the killed one left
    assert _files(target) == old
    assert listing(target.parent) == ["m"]


@pytest.mark.slow
def test_disk_full_during_save_is_a_write_error_naming_the_file_and_keeps_the_old_directory(old_model, tmp_path):
    target = tmp_path / "m"
    old_model.save(target)
    old = _files(target)
    limit = len(old["weights.params"]) // 2
    r = _run(_FULL, target=str(target), limit=limit)
    assert r.returncode == 3, r.stderr[-2000:]
    assert "WriteError 27" in r.stdout and "weights.params" in r.stdout and "model directory" in r.stdout
    assert _files(target) == old and listing(tmp_path) == ["m"]
    assert ft.load_model(target).class_names == ["a", "b", "c"]


def test_an_error_while_saving_keeps_the_old_directory_and_leaves_no_temporary(old_model, tmp_path, monkeypatch):
    from finetune.models._io import _modeldir

    target = tmp_path / "m"
    old_model.save(target)
    old = _files(target)

    def fail(fname, data):  # a write that runs out of space half-way
        with open(fname, "wb") as f:
            f.write(b"half")
        raise OSError(28, os.strerror(28))

    monkeypatch.setattr(mx.nd, "save", fail)
    with pytest.raises(WriteError, match="weights.params") as info:
        old_model.save(target)
    assert info.value.errno == 28
    monkeypatch.undo()
    assert _files(target) == old and listing(tmp_path) == ["m"]


def test_weights_that_are_not_finite_are_neither_saved_nor_loaded(tmp_path):
    """A diverged run saved a model of NaN weights over a good one, and predict printed 'nan' with exit code 0."""
    import numpy as np

    from finetune.errors import ModelError

    mx.random.seed(2)
    model = ft.HeadReplacer(3).apply(ft.Backbone.from_zoo("mobilenet0.25", weights=None), class_names=["x", "y", "z"])
    model.save(tmp_path / "good")
    before = listing(tmp_path / "good")
    param = list(model.collect_params().values())[2]
    param.set_data(param.data() * np.inf)
    with pytest.raises(ModelError, match="NaN or infinity.*diverged"):
        model.save(tmp_path / "good")
    assert listing(tmp_path / "good") == before
    arrays = mx.nd.load(str(tmp_path / "good" / "weights.params"))
    name = sorted(arrays)[0]
    arrays[name] = arrays[name] * np.nan
    mx.nd.save(str(tmp_path / "good" / "weights.params"), arrays)
    with pytest.raises(ModelError, match=f"NaN or infinity in 1 arrays .*{name}"):
        ft.create_model(tmp_path / "good")

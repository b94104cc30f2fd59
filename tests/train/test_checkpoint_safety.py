"""Checkpoints hold no pickle, resume exactly, and refuse damaged or planted files with typed errors."""

import io
import json
import pickle
import struct
import zipfile

import mxnet as mx
import numpy as np
import pytest

from finetune.errors import CheckpointError, FinetuneError, UnsafeFileError
from finetune.train import Callback, Trainer
from finetune.train._resume import save_arrays

from ._nets import data, mlp, params

KW = dict(batch_size=12, progress=False)


def _trained(tmp_path, optimizer="sgd", **kw):
    t = Trainer(mlp(bn=True), optimizer=optimizer, out_dir=tmp_path, **KW, **kw)
    t.fit(data(24), epochs=1)
    return tmp_path / "checkpoints" / "last.ckpt"


def _members(path):
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def _rewrite(path, members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, value in members.items():
            z.writestr(name, value)
    path.write_bytes(buf.getvalue())


def _fresh(optimizer="sgd", **kw):
    return Trainer(mlp(seed=5, bn=True), optimizer=optimizer, **KW, **kw)


# BN running statistics are averaged over devices when parameters are saved, so the
# two-device case is checked without BN (its optimizer state is what matters here).
@pytest.mark.parametrize("optimizer,opt_params,ctx", [
    ("sgd", {"lr": 0.05, "momentum": 0.9}, "cpu"), ("nag", {"lr": 0.05}, "cpu"), ("adam", {"lr": 0.01}, "cpu"),
    ("adamw", {"lr": 0.01, "wd": 0.01}, "cpu"), ("rmsprop", {"lr": 0.01}, "cpu"),
    ("adam", {"lr": 0.01}, "cpu*2"),
])
def test_resume_is_bit_identical_for_every_optimizer(tmp_path, optimizer, opt_params, ctx):
    kw = dict(optimizer=optimizer, optimizer_params=opt_params, ctx=ctx, **KW)
    bn = ctx == "cpu"
    full = params(Trainer(mlp(bn=bn), **kw).fit(data(36), epochs=2).model)

    class Crash(Callback):
        def on_batch_end(self, tr, e, b, logs):
            if e == 1 and b == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(mlp(bn=bn), out_dir=tmp_path, checkpoint_every=1, **kw).fit(data(36), epochs=2,
                                                                            callbacks=[Crash()])
    t = Trainer(mlp(seed=9, bn=bn), out_dir=tmp_path, checkpoint_every=1, **kw)
    t.fit(data(36), epochs=2, resume=tmp_path)
    for k, v in params(t.model).items():
        np.testing.assert_array_equal(full[k], v, err_msg=k)


def test_checkpoint_holds_no_pickle_and_loads_without_unpickling(tmp_path, monkeypatch):
    ckpt = _trained(tmp_path, "adam")
    members = _members(ckpt)
    assert sorted(members) == ["model.params", "optimizer.arrays", "optimizer.json", "state.json"]
    assert json.loads(members["optimizer.json"])["states"]  # Adam's moments are in the file

    def refuse(*a, **k):
        raise AssertionError("pickle used while loading a checkpoint")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    t = _fresh("adam")
    t.load_checkpoint(ckpt)
    assert t.epoch_ == 1


class _Plant:
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("member", ["optimizer.states", "optimizer.arrays", "model.params", "callbacks.arrays"])
def test_planted_pickle_payload_is_refused_and_never_runs(tmp_path, member):
    ckpt = _trained(tmp_path)
    marker = tmp_path / "pwned"
    members = _members(ckpt)
    members[member] = pickle.dumps(_Plant(marker))
    _rewrite(ckpt, members)
    with pytest.raises(UnsafeFileError, match="last.ckpt"):
        _fresh().load_checkpoint(ckpt)
    assert not marker.exists()


def _declare_huge(path):
    raw = bytearray(path.read_bytes())
    at = raw.find(b"PK\x01\x02")  # first central directory entry: uncompressed size at +24
    raw[at + 24:at + 28] = struct.pack("<I", 0xFFFFFFF0)
    path.write_bytes(bytes(raw))


DAMAGE = {
    "truncated": lambda p, m: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "not a zip": lambda p, m: p.write_bytes(b"hello, not a checkpoint"),
    "empty": lambda p, m: p.write_bytes(b""),
    "missing member": lambda p, m: _rewrite(p, {k: v for k, v in m.items() if k != "optimizer.json"}),
    "extra member": lambda p, m: _rewrite(p, {**m, "other": b"x"}),
    "state not json": lambda p, m: _rewrite(p, {**m, "state.json": b"\xff\xfe{"}),
    "state a list": lambda p, m: _rewrite(p, {**m, "state.json": b"[1, 2]"}),
    "epoch a string": lambda p, m: _rewrite(p, {**m, "state.json": json.dumps(
        {**json.loads(m["state.json"]), "epoch": "one"}).encode()}),
    "bad rng": lambda p, m: _rewrite(p, {**m, "state.json": json.dumps(
        {**json.loads(m["state.json"]), "numpy_rng": [1, 2]}).encode()}),
    "old format": lambda p, m: _rewrite(p, {**m, "state.json": json.dumps(
        {**json.loads(m["state.json"]), "format": 1}).encode()}),
    "garbage arrays": lambda p, m: _rewrite(p, {**m, "optimizer.arrays": b"\x12\x01" + b"\x00" * 40}),
    "garbage params": lambda p, m: _rewrite(p, {**m, "model.params": b"abc"}),
    "state refers to no array": lambda p, m: _rewrite(p, {**m, "optimizer.json": json.dumps(
        {**json.loads(m["optimizer.json"]), "states": [[0, {"array": "nope"}]]}).encode()}),
    "state index out of range": lambda p, m: _rewrite(p, {**m, "optimizer.json": json.dumps(
        {**json.loads(m["optimizer.json"]), "states": [[99, None]]}).encode()}),
    "deep nesting": lambda p, m: _rewrite(p, {**m, "optimizer.json": json.dumps(
        {**json.loads(m["optimizer.json"]), "states": [[0, json.loads('{"tuple": [' * 50 + "]}" * 50)]]}).encode()}),
    "huge declared size": lambda p, m: _declare_huge(p),
    "garbage callback arrays": lambda p, m: _rewrite(p, {**m, "callbacks.arrays": b"\x12\x01" + b"\x00" * 40}),
    "callback arrays of no callback": lambda p, m: _rewrite(p, {**m, "callbacks.arrays": save_arrays(
        {"7:weight": mx.nd.zeros(2)})}),
    "callback arrays without an index": lambda p, m: _rewrite(p, {**m, "callbacks.arrays": save_arrays(
        {"weight": mx.nd.zeros(2)})}),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_checkpoint_gives_a_typed_error_naming_the_file(tmp_path, kind):
    ckpt = _trained(tmp_path, "adam")
    DAMAGE[kind](ckpt, _members(ckpt))
    t = _fresh("adam")
    with pytest.raises(CheckpointError, match="last.ckpt"):
        t.load_checkpoint(ckpt)


def test_checkpoint_of_another_optimizer_or_model_is_refused(tmp_path):
    ckpt = _trained(tmp_path, "adam")
    with pytest.raises(CheckpointError, match="optimizer 'adam'.*optimizer='adam'"):
        _fresh("sgd").load_checkpoint(ckpt)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        Trainer(mlp(bn=False), optimizer="adam", **KW).load_checkpoint(ckpt)


def test_every_damaged_checkpoint_error_is_a_finetune_error():
    assert issubclass(CheckpointError, FinetuneError) and issubclass(CheckpointError, ValueError)
    assert issubclass(UnsafeFileError, FinetuneError)


_FULL_DISK = """
import os, resource, sys
sys.path.insert(0, {root!r})
from tests.train._nets import data, mlp
from finetune.errors import WriteError
from finetune.train import Trainer
t = Trainer(mlp(bn=True), optimizer="adam", batch_size=12, progress=False)
t.fit(data(24), epochs=1)
size = os.path.getsize({path!r})
resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))
try:
    t.save_checkpoint({path!r})
except WriteError as e:
    print("WriteError", e.errno, e)
    sys.exit(3)
"""


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path):
    import os
    import subprocess
    import sys

    ckpt = _trained(tmp_path, "adam")
    old = ckpt.read_bytes()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run([sys.executable, "-c", _FULL_DISK.format(root=root, path=str(ckpt))],
                       capture_output=True, text=True, cwd=root)
    assert r.returncode == 3, r.stderr[-2000:]
    assert "WriteError 27" in r.stdout and "last.ckpt" in r.stdout
    assert ckpt.read_bytes() == old
    assert sorted(os.listdir(ckpt.parent)) == ["last.ckpt"]

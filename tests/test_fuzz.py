"""Property-based fuzzing of the parsers: every input ends in a result or a FinetuneError.

Inputs are valid seed files mutated (truncated, bytes overwritten or inserted)
plus arbitrary bytes. ``FINETUNE_FUZZ_EXAMPLES`` sets the number of inputs per
parser (default 150, a few seconds each).
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from finetune.errors import FinetuneError  # noqa: E402

EXAMPLES = int(os.environ.get("FINETUNE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 150,
                suppress_health_check=list(HealthCheck))
WORK = tempfile.mkdtemp(prefix="finetune-fuzz-")


def mutations(seed: bytes):
    """Strategy: ``seed`` truncated, with bytes overwritten and/or inserted; or random bytes."""
    edit = st.tuples(st.integers(0, len(seed)), st.binary(min_size=1, max_size=8), st.booleans())

    def apply(args):
        cut, edits = args
        data = bytearray(seed[:cut])
        for pos, chunk, insert in edits:
            pos = min(pos, len(data))
            data[pos:pos if insert else pos + len(chunk)] = chunk
        return bytes(data)

    return st.one_of(st.binary(max_size=64),
                     st.tuples(st.integers(0, len(seed)), st.lists(edit, max_size=4)).map(apply))


def _file(name: str, data: bytes) -> str:
    path = os.path.join(WORK, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _only_typed_errors(fn, *args):
    try:
        fn(*args)
    except FinetuneError:
        pass


# ------------------------------------------------------------------ lists
LST = b"0\t1\ta.png\n1\t2.5\t3\tsub/b.png\n2\t0\tc d.jpg\n"
CSV = "\ufeffpath,label\na.png,cat\n\"b,1.png\",dog\nc.png,cat\n".encode()


@FUZZ
@given(mutations(LST))
def test_fuzz_lst_reader(data):
    from finetune.data import ImageList

    _only_typed_errors(ImageList.from_lst, _file("f.lst", data))


@FUZZ
@given(mutations(CSV))
def test_fuzz_csv_reader(data):
    from finetune.data import ImageList

    _only_typed_errors(ImageList.from_csv, _file("f.csv", data))


# ------------------------------------------------------------------ records
def _records() -> tuple[bytes, bytes]:
    from finetune.data._recordio import RecordWriter

    rec, idx = io.BytesIO(), io.StringIO()
    w = RecordWriter(rec, idx)
    for k, payload in enumerate([b"\x00" * 30, b"\xed\xab\xed\xce" * 5 + b"xy", b"z" * 7]):
        header = np.array([0], np.uint32).tobytes() + np.array([k], np.float32).tobytes() + \
            np.array([k, 0], np.uint64).tobytes()
        w.write(k, header + payload)
    w.close()
    return rec.getvalue(), idx.getvalue().encode()


REC, IDX = _records()


def _read_all(rec_path, idx_path):
    from finetune.data._recordio import RecordFile, unpack_header

    f = RecordFile(rec_path, idx_path)
    try:
        for i in range(len(f)):
            unpack_header(f.read(i))
            f.label(i)
    finally:
        f.close()


@FUZZ
@given(mutations(REC), st.booleans())
def test_fuzz_record_reader(data, with_index):
    rec = _file("f.rec", data)
    idx = _file("f.idx", IDX) if with_index else None
    _only_typed_errors(_read_all, rec, idx)


@FUZZ
@given(mutations(IDX))
def test_fuzz_record_index(data):
    _only_typed_errors(_read_all, _file("g.rec", REC), _file("g.idx", data))


# ------------------------------------------------------------------ Caffe
PROTOTXT = b'''name: "n" input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "c" type: "Convolution" bottom: "data" top: "c"
  convolution_param { num_output: 2 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } }
  param { lr_mult: 1.5e-1 } }
layer { name: "p" type: "Pooling" bottom: "c" top: "p" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "s" type: "Softmax" bottom: "p" top: "s" include { phase: TEST } } # comment
'''


@FUZZ
@given(mutations(PROTOTXT))
def test_fuzz_prototxt_parser(data):
    from finetune.models.caffe._proto import parse_prototxt

    _only_typed_errors(parse_prototxt, _file("f.prototxt", data))


def _caffemodel() -> bytes:
    from tests.models.test_caffe_encoder import caffemodel_bytes

    rng = np.random.default_rng(0)
    blobs = [rng.normal(size=(2, 3, 3, 3)).astype(np.float32), rng.normal(size=(2,)).astype(np.float32)]
    return caffemodel_bytes([("data", "Data", []), ("c", "Convolution", blobs)])


@FUZZ
@given(st.data())
def test_fuzz_caffemodel_decoder(draw):
    from finetune.models.caffe._proto import read_binaryproto, read_caffemodel

    data = draw.draw(mutations(_CAFFEMODEL))
    path = _file("f.caffemodel", data)
    _only_typed_errors(read_caffemodel, path)
    _only_typed_errors(read_binaryproto, path)


_CAFFEMODEL = _caffemodel()


# ------------------------------------------------------------------ checkpoints
def _checkpoint() -> bytes:
    from finetune.train import Trainer
    from tests.train._nets import data, mlp

    out = os.path.join(WORK, "run")
    Trainer(mlp(bn=True), optimizer="adam", batch_size=12, progress=False, out_dir=out).fit(data(12), epochs=1)
    with open(os.path.join(out, "checkpoints", "last.ckpt"), "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def checkpoint_members():
    with zipfile.ZipFile(io.BytesIO(_checkpoint())) as z:
        return {n: z.read(n) for n in z.namelist()}


def test_fuzz_checkpoint_loader(checkpoint_members):
    from finetune.train._checkpoint import read_checkpoint

    names = sorted(checkpoint_members)

    @FUZZ
    @given(st.sampled_from(names + ["<whole file>"]), st.data())
    def run(member, draw):
        if member == "<whole file>":
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                for n in names:
                    z.writestr(n, checkpoint_members[n])
            data = draw.draw(mutations(buf.getvalue()))
        else:
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                for n in names:
                    value = checkpoint_members[n]
                    z.writestr(n, draw.draw(mutations(value[:4096])) if n == member else value)
            data = buf.getvalue()
        _only_typed_errors(read_checkpoint, _file("f.ckpt", data))

    run()


# ------------------------------------------------------------------ found by longer runs
@pytest.mark.parametrize("data", [
    # a field of message type sent with wire type 5 (a float) reached the layer reader as a float
    b"\r\x00\x00\x00\x00\xb8\x00\x00\x11\x00\x00\x00\x00\x00\x00\x00\x00",
    b"\x15\x00\x00\x00\x00",  # 'layers' (field 2) as a float
])
def test_found_caffemodel_inputs(data):
    from finetune.models.caffe._proto import read_caffemodel

    _only_typed_errors(read_caffemodel, _file("found.caffemodel", data))


# ------------------------------------------------------------------ PyTorch .pth
@pytest.fixture(scope="module")
def pth_seeds():
    """A small valid ``.pth`` in each layout (zip, legacy), and the zip's members."""
    from tests.models.test_torch_pickle import WRITERS, _sample

    seeds = {}
    with pytest.MonkeyPatch.context() as mp:
        state, storages, _ = _sample(mp)
        for fmt, write in WRITERS.items():
            path = os.path.join(WORK, f"seed-{fmt}.pth")
            write(path, state, storages)
            with open(path, "rb") as f:
                seeds[fmt] = f.read()
    with zipfile.ZipFile(io.BytesIO(seeds["zip"])) as z:
        seeds["members"] = {n: z.read(n) for n in z.namelist()}
    return seeds


def _read_pth(data):
    from finetune.models._io._torch_pickle import read_torch_state_dict

    _only_typed_errors(read_torch_state_dict, _file("f.pth", data))


def test_fuzz_pth_whole_file(pth_seeds):
    @FUZZ
    @given(st.sampled_from(["zip", "legacy"]), st.data())
    def run(fmt, draw):
        _read_pth(draw.draw(mutations(pth_seeds[fmt])))

    run()


def test_fuzz_pth_zip_members(pth_seeds):
    """One member of a well-formed zip mutated, so the fuzzer reaches the unpickler and the storages."""
    members = pth_seeds["members"]

    @FUZZ
    @given(st.sampled_from(sorted(members)), st.data())
    def run(member, draw):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for n, value in members.items():
                z.writestr(n, draw.draw(mutations(value)) if n == member else value)
        _read_pth(buf.getvalue())

    run()

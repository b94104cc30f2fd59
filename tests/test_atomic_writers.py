"""Every writer on the atomic-write helper: kill -9 and a full disk keep the previous output, typed errors."""

import errno
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from finetune import _commit
from finetune._file_writes import atomic_paths
from finetune._folder_swap import atomic_dir, recover_dir
from finetune.errors import WriteError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _listing(folder):
    """What a writer left in ``folder``, its lock, manifest and marker (which stay by design) left out."""
    return sorted(n for n in os.listdir(folder) if not n.endswith((".lock", ".finetune")))


def _run(script, **kw):
    return subprocess.run([sys.executable, "-c", script.format(root=ROOT, **kw)], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=ROOT)


# ------------------------------------------------------------------ atomic_dir itself
def test_atomic_dir_replaces_the_folder_and_leaves_nothing_beside_it(tmp_path):
    target = tmp_path / "d"
    for text in ("old", "new"):
        with atomic_dir(target) as tmp:
            with open(os.path.join(tmp, "a.txt"), "w") as f:
                f.write(text)
    assert (target / "a.txt").read_text() == "new" and _listing(tmp_path) == ["d"]


def test_an_error_in_atomic_dir_keeps_the_old_folder_and_removes_the_temporary(tmp_path):
    target = tmp_path / "d"
    with atomic_dir(target) as tmp:
        open(os.path.join(tmp, "a.txt"), "w").write("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target) as tmp:
            open(os.path.join(tmp, "b.txt"), "w").write("half")
            raise KeyboardInterrupt
    assert _listing(target) == ["a.txt"] and _listing(tmp_path) == ["d"]


# A child process that dies (SIGKILL) at the n-th os.replace of the atomic commit.
_KILL_AT_REPLACE = """
import os, signal, sys
sys.path.insert(0, {root!r})
import numpy as np
from finetune._folder_swap import atomic_dir
real, calls = os.replace, []
def replace(src, dst):
    if os.path.basename(dst) == ".finetune":  # the folder's marker, written whole inside the new folder
        return real(src, dst)
    calls.append(dst)
    if len(calls) == {n}:
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
os.replace = replace
"""

_KILL_DIR = _KILL_AT_REPLACE + """
with atomic_dir({target!r}) as tmp:
    open(os.path.join(tmp, "a.txt"), "w").write("new")
"""


@pytest.mark.parametrize("n, expect", [(1, "old"), (2, "new"), (3, "new")])
def test_kill_9_during_the_swap_leaves_old_or_new_once_recovered(tmp_path, n, expect):
    target = tmp_path / "d"
    with atomic_dir(target) as tmp:
        open(os.path.join(tmp, "a.txt"), "w").write("old")
    r = _run(_KILL_DIR, target=str(target), n=n)
    assert r.returncode == -signal.SIGKILL, r.stderr
    recover_dir(target)  # what the next atomic_dir and every reader do first
    assert (target / "a.txt").read_text() == expect
    with atomic_dir(target) as tmp:  # sweeps the killed writer's temporaries
        open(os.path.join(tmp, "a.txt"), "w").write("again")
    assert _listing(tmp_path) == ["d"] and (target / "a.txt").read_text() == "again"


def test_atomic_paths_commits_files_written_by_name_together(tmp_path):
    a, b = tmp_path / "x.npz", tmp_path / "x.npz.faiss"
    with atomic_paths([a, b]) as (ta, tb):
        open(ta, "wb").write(b"a")
        open(tb, "wb").write(b"b")
    with pytest.raises(RuntimeError):
        with atomic_paths([a, b]) as (ta, tb):
            open(ta, "wb").write(b"A")
            raise RuntimeError("the second writer failed")
    assert (a.read_bytes(), b.read_bytes()) == (b"a", b"b") and _listing(tmp_path) == ["x.npz", "x.npz.faiss"]


def test_a_writer_failing_without_oserror_on_a_full_file_size_limit_is_a_write_error(tmp_path):
    script = """
import resource, sys
sys.path.insert(0, {root!r})
from finetune._file_writes import atomic_paths
from finetune.errors import WriteError
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
try:
    with atomic_paths([{target!r}]) as (tmp,):
        import os
        fd = os.open(tmp, os.O_WRONLY)
        try:
            os.write(fd, b"x" * 4000)
        except OSError:
            pass
        raise RuntimeError("FileStream.Write incomplete")  # how MXNet reports it
except WriteError as e:
    print("WriteError", e.errno, e)
    sys.exit(3)
"""
    target = tmp_path / "mean.bin"
    target.write_bytes(b"old")
    r = _run(script, target=str(target))
    assert r.returncode == 3, r.stderr
    assert "WriteError 27" in r.stdout and "mean.bin" in r.stdout
    assert target.read_bytes() == b"old" and _listing(tmp_path) == ["mean.bin"]


# ------------------------------------------------------------------ disk full, writer by writer
def _index(path):
    from finetune.features import RetrievalIndex

    index = RetrievalIndex()
    index.add(np.eye(4, dtype=np.float32), ids=list("abcd"))
    index.save(path)


def _lr_find_result(path):
    from finetune.train import LRFinderResult

    LRFinderResult(np.logspace(-5, 0, 10), np.linspace(2, 1, 10)).save(path)


def _plot(path):
    from finetune.use import plot_history

    plot_history([{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.5}], path)


def _predictions(path):
    from finetune.use import Predictions

    Predictions([]).to_json(path)


def _pca(path):
    from finetune.features import PCAWhitening

    PCAWhitening(2).fit(np.random.default_rng(0).normal(size=(10, 4))).save(path)


def _mean(path):
    from finetune.data import MeanImage

    MeanImage(np.full((3, 4, 4), 100.0)).save(path)


WRITERS = {"index.npz": _index, "lr_find.json": _lr_find_result, "curves.png": _plot, "preds.json": _predictions,
           "pca.npz": _pca, "mean.bin": _mean}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_disk_full_keeps_the_previous_output_and_is_a_write_error_naming_the_file(tmp_path, monkeypatch, name):
    path = tmp_path / name
    WRITERS[name](path)
    old = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(_commit.os, "fsync", full)
    with pytest.raises(WriteError, match=name) as info:
        WRITERS[name](path)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert path.read_bytes() == old and _listing(tmp_path) == [name]


# ------------------------------------------------------------------ kill -9, writer by writer
_KILL_BEFORE_RENAME = _KILL_AT_REPLACE + """
from tests.test_atomic_writers import WRITERS
WRITERS[{name!r}]({path!r})
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", ["index.npz", "mean.bin"])
def test_kill_9_before_the_rename_keeps_the_previous_file_and_the_next_write_cleans_up(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"previous")
    r = _run(_KILL_BEFORE_RENAME, name=name, path=str(path), n=1)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert path.read_bytes() == b"previous" and len(_listing(tmp_path)) == 2  # plus the killed writer's temporary
    WRITERS[name](path)
    assert _listing(tmp_path) == [name] and path.read_bytes() != b"previous"


_KILL_EXTRACT = """
import os, signal, sys
sys.path.insert(0, {root!r})
import finetune.features._extractor as extractor_module
from finetune.cli import main
from finetune.testing import TinyNet
extractor_module.create_model = lambda spec: TinyNet()
real, calls = os.replace, []
def replace(src, dst):
    calls.append(dst)
    if {kill} and len(calls) == 3:  # journal in place, descriptors renamed, ids not yet
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
os.replace = replace
sys.exit(main(["extract", "tiny", *{images!r}, "--layer", "relu2", "--pooling", "{pool}", "--out", {out!r}]))
"""


@pytest.mark.slow
def test_kill_9_between_the_renames_of_extract_never_pairs_new_descriptors_with_old_ids(image_folder, tmp_path):
    from finetune.cli._features import _load_descriptors

    out = tmp_path / "out" / "feats.npy"
    images = sorted(str(p) for p in image_folder.rglob("*.*"))
    assert _run(_KILL_EXTRACT, kill=False, images=images[:6], pool="avg", out=str(out)).returncode == 0
    r = _run(_KILL_EXTRACT, kill=True, images=images, pool="max", out=str(out))
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    x, ids = _load_descriptors(str(out))  # the reader finishes the commit
    assert len(x) == len(ids) == len(images) and ids[-1] == images[-1]
    assert _listing(out.parent) == ["feats.ids.txt", "feats.npy"]
    assert _run(_KILL_EXTRACT, kill=False, images=images[:6], pool="avg", out=str(out)).returncode == 0
    assert len(_load_descriptors(str(out))[1]) == 6


def test_deployment_that_fails_its_check_keeps_the_previous_deployment(tmp_path, monkeypatch):
    import mxnet as mx

    from finetune import Preprocess
    from finetune.errors import ModelError
    from finetune.models._io import _export as _deploy
    from finetune.use import export_for_deployment, load_deployment

    net = mx.gluon.nn.HybridSequential()
    net.add(mx.gluon.nn.Conv2D(2, 3), mx.gluon.nn.GlobalAvgPool2D(), mx.gluon.nn.Flatten())
    net.initialize()
    net.preprocess, net.class_names = Preprocess(size=(8, 8), resize=8), ["a", "b"]
    export_for_deployment(net, tmp_path / "dep")
    before = {n: (tmp_path / "dep" / n).read_bytes() for n in _listing(tmp_path / "dep")}

    def disagree(*args, **kwargs):
        raise ModelError("the exported network disagrees")

    monkeypatch.setattr(_deploy, "verify_deployment", disagree)
    net.initialize(mx.init.One(), force_reinit=True)
    with pytest.raises(ModelError):
        export_for_deployment(net, tmp_path / "dep")
    assert {n: (tmp_path / "dep" / n).read_bytes() for n in _listing(tmp_path / "dep")} == before
    assert load_deployment(tmp_path / "dep").class_names == ["a", "b"]


# ------------------------------------------------------------------ outputs that are not regular files
def _drain(fifo, got):
    with open(fifo, "rb") as f:
        got.append(f.read())


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_a_pipe_or_device_as_the_output_is_written_through_never_replaced(tmp_path, name):
    """``--out /dev/stdout`` or a named pipe: the writer writes into it (or fails with a typed error); a rename
    over it would replace a device for every program on the machine."""
    import stat
    import threading

    from finetune.errors import FinetuneError

    fifo = str(tmp_path / name)
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=_drain, args=(fifo, got), daemon=True)
    reader.start()
    try:
        WRITERS[name](fifo)
    except FinetuneError:
        with open(fifo, "wb"):  # let the reader finish
            pass
    reader.join(30)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and _listing(tmp_path) == [name]


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_a_symbolic_link_as_the_output_stays_a_link_to_the_new_content(tmp_path, name):
    target, link = tmp_path / ("real-" + name), tmp_path / name
    WRITERS[name](target)
    before = target.read_bytes()
    target.write_bytes(b"previous")
    link.symlink_to(target.name)
    WRITERS[name](link)
    assert link.is_symlink() and target.read_bytes() == before


def test_a_unit_of_several_files_refuses_a_device_in_the_way(tmp_path):
    fifo = tmp_path / "x.rec"
    os.mkfifo(fifo)
    with pytest.raises(WriteError, match="device, pipe or socket"):
        with atomic_paths([fifo, tmp_path / "x.idx"]):
            pass
    assert _listing(tmp_path) == ["x.rec"]


# ------------------------------------------------------------------ names near the file system's limit
@pytest.mark.parametrize("length", [200, 240, 255])
def test_an_output_name_near_the_limit_is_written_with_its_lock_and_temporaries(tmp_path, length):
    """Locks, temporaries, journals and manifests are named from the output; a long output name made theirs
    too long, and a name the file system takes was refused."""
    from finetune._file_writes import atomic_files, atomic_write

    name = "n" * length
    atomic_write(tmp_path / name, "one")
    atomic_write(tmp_path / name, "two")
    assert (tmp_path / name).read_text() == "two"
    unit = [tmp_path / ("u" * (length - 4) + ext) for ext in (".rec", ".idx")]
    with atomic_files(unit) as files:
        for f in files:
            f.write(b"x")
    assert all(p.read_bytes() == b"x" for p in unit)
    assert not [n for n in os.listdir(tmp_path) if n.endswith((".tmp", ".tmpdir", ".commit", ".swap"))]


def test_a_unit_with_one_name_too_long_writes_nothing_and_names_that_file(tmp_path):
    """A 250-byte prefix made ``_classes.txt`` too long: ``.rec`` and ``.idx`` were renamed in place, the class
    names not, and the error named the ``.rec``."""
    from finetune._file_writes import atomic_files

    stem = str(tmp_path / ("b" * 246))
    with pytest.raises(WriteError, match=r"_classes\.txt.*longer than the file system's 255 bytes"):
        with atomic_files([stem + ".rec", stem + ".idx", stem + "_classes.txt"]) as files:
            for f in files:
                f.write(b"x")
    assert os.listdir(tmp_path) == []


def test_a_part_of_another_output_is_not_replaced_with_other_content(tmp_path):
    """``split --out data/x`` rewrote the ``data/x_classes.txt`` of ``pack --out data/x``, whose records then
    failed to load; the same content (the same classes) is still written."""
    import cv2

    from finetune import ImageList, RecordDataset, pack
    from finetune.data import write_lists
    from finetune.errors import OutputExistsError

    for name in ("cat", "dog"):
        (tmp_path / "p" / name).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "p" / name / "a.png"), np.zeros((8, 8, 3), np.uint8))
    images = ImageList.from_folder(tmp_path / "p")
    pack(images, tmp_path / "x", workers=0)
    same = ImageList(images.entries, root=images.root, class_names=["cat", "dog"])
    write_lists({tmp_path / "x_train.lst": same}, tmp_path / "x_classes.txt")
    other = ImageList(images.entries, root=images.root, class_names=["cat", "zebra"])
    with pytest.raises(OutputExistsError, match="x_classes.txt' belongs to one output with 'x.idx'"):
        write_lists({tmp_path / "x_train.lst": other}, tmp_path / "x_classes.txt")
    assert RecordDataset(tmp_path / "x").class_names == ["cat", "dog"]
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_a_size_limit_in_the_middle_of_every_writer_is_one_clean_write_error(tmp_path):
    """A real short write (a file-size limit), not a failing fsync: ``np.savez`` left its zip open and its
    finaliser printed "Exception ignored in: ZipFile.__del__ ... seek of closed file" after the error."""
    script = """
import os, resource, signal, sys
sys.path.insert(0, {root!r})
from tests.test_atomic_writers import WRITERS
from finetune.errors import WriteError
folder = {folder!r}
for name in sorted(WRITERS):
    WRITERS[name](os.path.join(folder, name))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))
for name in sorted(WRITERS):
    try:
        WRITERS[name](os.path.join(folder, name))
        print(name, "written")
    except WriteError as e:
        print(name, "WriteError", e.errno)
import gc
gc.collect()
"""
    r = _run(script, folder=str(tmp_path))
    assert r.returncode == 0 and "Exception ignored" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    for line in r.stdout.splitlines():
        name, outcome = line.split(" ", 1)
        assert outcome == "WriteError 27" or os.path.getsize(tmp_path / name) <= 100, line
    assert sorted(_listing(tmp_path)) == sorted(WRITERS)


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_no_writer_replaces_a_photo(tmp_path, name):
    """``mean --out photos/p1.jpg``, ``evaluate --report p2.jpg``, ``index --out p3.jpg``, ``check --out p4.jpg``
    replaced a photo that was not an input of the command, and so did ``lr-find --out`` / ``gradcam --out``
    with a figure; a figure may still replace a figure finetune wrote."""
    import cv2

    from finetune.errors import OutputExistsError

    photo = tmp_path / name
    cv2.imwrite(str(tmp_path / "p.png"), np.full((8, 8, 3), 200, np.uint8))
    os.replace(tmp_path / "p.png", photo)
    before = photo.read_bytes()
    if name.endswith(".png"):  # an image writer
        with pytest.raises(OutputExistsError, match="an image finetune did not write"):
            WRITERS[name](photo)
        assert photo.read_bytes() == before
        photo.unlink()
        WRITERS[name](photo)
        first = photo.read_bytes()
        WRITERS[name](photo)  # its own earlier result: replaced
        assert photo.exists() and first != before
        return
    with pytest.raises(OutputExistsError, match="is an image, and this output is not"):
        WRITERS[name](photo)
    assert photo.read_bytes() == before
    assert not [n for n in os.listdir(tmp_path) if n.endswith((".tmp", ".tmpdir"))]


def test_a_text_file_that_starts_like_a_bitmap_is_still_replaced(tmp_path):
    """'BM' alone is not a bitmap: a user's notes starting "BMW ..." are not a photo to protect."""
    from finetune._file_writes import atomic_write

    target = tmp_path / "notes.txt"
    target.write_text("BMW cars\n")
    atomic_write(target, "replaced\n")
    assert target.read_text() == "replaced\n"

"""The atomic-write helper: all-or-nothing files and file sets, temporaries cleaned, typed disk-full errors."""

import errno
import os
import subprocess
import sys
import textwrap

import pytest

from finetune import _commit
from finetune._file_writes import atomic_files, atomic_open, atomic_paths, atomic_write, recover
from finetune._folder_swap import atomic_dir, recover_dir
from finetune.errors import WriteError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _listing(folder):
    """What a writer left in ``folder``, its lock, manifest and marker (which stay by design) left out."""
    return sorted(n for n in os.listdir(folder) if not n.endswith((".lock", ".finetune")))


def test_atomic_write_replaces_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write(target, "old")
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new" and _listing(tmp_path) == ["a.txt"]


def test_error_in_the_block_keeps_the_previous_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as f:
            f.write("half")
            raise RuntimeError("stop")
    assert target.read_text() == "old" and _listing(tmp_path) == ["a.txt"]


def test_a_set_of_files_is_all_old_after_an_error(tmp_path):
    a, b = tmp_path / "x.rec", tmp_path / "x.idx"
    with atomic_files([a, b], ["wb", "w"]) as (fa, fb):
        fa.write(b"old-a")
        fb.write("old-b")
    with pytest.raises(KeyboardInterrupt):
        with atomic_files([a, b], ["wb", "w"]) as (fa, fb):
            fa.write(b"new-a")
            raise KeyboardInterrupt
    assert (a.read_bytes(), b.read_text()) == (b"old-a", "old-b")
    assert _listing(tmp_path) == ["x.idx", "x.rec"]


def test_atomic_paths_of_one_file_for_writers_that_take_a_name(tmp_path):
    target = tmp_path / "m.bin"
    with atomic_paths([target]) as (tmp,):
        assert os.path.dirname(tmp) == str(tmp_path)
        with open(tmp, "wb") as f:
            f.write(b"data")
    assert target.read_bytes() == b"data" and _listing(tmp_path) == ["m.bin"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG])
def test_disk_full_is_a_write_error_naming_the_file(tmp_path, monkeypatch, code):
    target = tmp_path / "a.txt"
    target.write_text("old")

    def full(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(_commit.os, "fsync", full)
    with pytest.raises(WriteError, match="a.txt") as info:
        atomic_write(target, "new")
    assert info.value.errno == code and isinstance(info.value, OSError)
    monkeypatch.undo()
    assert target.read_text() == "old" and _listing(tmp_path) == ["a.txt"]


def test_input_errors_inside_the_block_are_not_reported_as_write_errors(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        with atomic_open(tmp_path / "a.txt", "w"):
            open(tmp_path / "missing")
    assert not isinstance(info.value, WriteError)


_KILL_BETWEEN_RENAMES = """
import os, sys
sys.path.insert(0, {root!r})
from finetune._file_writes import atomic_files
calls = []
real = os.replace
def replace(src, dst):
    calls.append(dst)
    if len(calls) == 3:  # journal, first file renamed, then killed
        os._exit(9)
    real(src, dst)
os.replace = replace
with atomic_files([{a!r}, {b!r}], ["w", "w"]) as (fa, fb):
    fa.write("new-a"); fb.write("new-b")
"""


def test_kill_between_the_renames_is_completed_by_the_next_reader(tmp_path):
    a, b = str(tmp_path / "x.rec"), str(tmp_path / "x.idx")
    for p, v in ((a, "old-a"), (b, "old-b")):
        atomic_write(p, v)
    r = subprocess.run([sys.executable, "-c", _KILL_BETWEEN_RENAMES.format(root=ROOT, a=a, b=b)])
    assert r.returncode == 9
    assert open(a).read() == "new-a" and open(b).read() == "old-b"  # the window the journal covers
    recover([a, b])
    assert open(a).read() == "new-a" and open(b).read() == "new-b"
    assert _listing(tmp_path) == ["x.idx", "x.rec"]


def test_temporaries_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {ROOT!r})
        from finetune._file_writes import atomic_open
        with atomic_open({str(tmp_path / 'a.txt')!r}, "w") as f:
            f.write("half"); f.flush(); os._exit(9)
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    assert len(_listing(tmp_path)) == 1 and _listing(tmp_path)[0].endswith(".tmp")
    atomic_write(tmp_path / "a.txt", "whole")
    assert _listing(tmp_path) == ["a.txt"]


class _Killed(BaseException):
    """Stands for a kill: nothing of the writer runs after it (its own recovery is switched off)."""


def _kill_after(monkeypatch, renames: int):
    """``os.replace`` dies after ``renames`` renames of a commit (the journal's and the folder marker's own renames
    not counted)."""
    real, seen = os.replace, []

    def replace(src, dst):
        if not str(dst).endswith((".commit", ".swap", "/.finetune")):
            if len(seen) == renames:
                raise _Killed
            seen.append(dst)
        real(src, dst)

    monkeypatch.setattr(_commit.os, "replace", replace)
    monkeypatch.setattr(_commit, "finish", lambda journal: None)


@pytest.mark.parametrize("kind, renames", [("files", 0), ("files", 1), ("files", 2), ("folder", 0), ("folder", 1)])
def test_a_commit_killed_after_any_rename_is_finished_whole(tmp_path, monkeypatch, kind, renames):
    """File units and folder swaps share one journal: whatever rename a kill stops at (two files and their
    manifest; the old folder set aside, the new one put in place), recovery gives all new."""
    if kind == "files":
        paths = [str(tmp_path / "x.rec"), str(tmp_path / "x.idx")]
        write = lambda text: atomic_files(paths, ["w", "w"])  # noqa: E731
        fill = lambda files, text: [f.write(text) for f in files]  # noqa: E731
        read = lambda: [open(p).read() for p in paths]  # noqa: E731
        recover_ = lambda: recover(paths)  # noqa: E731
    else:
        target = str(tmp_path / "model")
        write = lambda text: atomic_dir(target)  # noqa: E731
        fill = lambda folder, text: open(os.path.join(folder, "w.txt"), "w").write(text)  # noqa: E731
        read = lambda: [open(os.path.join(target, "w.txt")).read()]  # noqa: E731
        recover_ = lambda: recover_dir(target)  # noqa: E731
    with write("old") as out:
        fill(out, "old")
    with monkeypatch.context() as patch:
        _kill_after(patch, renames)
        with pytest.raises(_Killed):
            with write("new") as out:
                fill(out, "new")
    recover_()
    assert set(read()) == {"new"}
    assert not [n for n in os.listdir(tmp_path) if n.endswith((".commit", ".swap", ".tmp", ".tmpdir", ".old"))]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc, where no file can be made")
def test_a_lock_that_cannot_be_made_is_an_error_not_a_wait_for_ever():
    """filelock reports a lock file it cannot create as 'held by another process'; waiting for that holder
    would never end (``finetune pack photos --out /proc/all``)."""
    from finetune._locks import hold

    with pytest.raises(OSError):
        with hold("/proc/finetune-test-output"):
            pass


def test_a_short_write_without_an_errno_on_a_full_disk_is_a_write_error(tmp_path, monkeypatch):
    """numpy reports a write the disk cut short as ``OSError("57600 requested and 32736 written")``, with no
    errno: on a full disk it is a WriteError naming the file, like every other full-disk failure."""
    import finetune._write_errors as write_errors
    from finetune._file_writes import atomic_open

    class Full:
        f_bavail = f_bfree = 0
        f_frsize = 4096

    path = tmp_path / "x.npy"
    monkeypatch.setattr(write_errors.os, "statvfs", lambda p: Full)
    with pytest.raises(WriteError, match="x.npy.*disk is full"):
        with atomic_open(path, "wb") as f:
            f.write(b"part")
            raise OSError("57600 requested and 32736 written")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_a_lock_file_that_cannot_be_opened_is_a_write_error_saying_what_to_do(tmp_path, monkeypatch):
    """A stale lock file left read-only (or by another user) made every writer fail with a bare traceback."""
    import filelock

    from finetune._locks import hold, lock_path

    out = tmp_path / "out.txt"
    open(lock_path(out), "w").close()

    def refused(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", self.lock_file)

    monkeypatch.setattr(filelock.FileLock, "acquire", refused)
    with pytest.raises(WriteError, match="read-only or another user's.*delete it") as info:
        with hold(out):
            pass
    assert info.value.filename == lock_path(out)
    os.remove(lock_path(out))  # no lock file: the folder's own refusal, which the caller names
    with pytest.raises(PermissionError):
        with hold(out):
            pass

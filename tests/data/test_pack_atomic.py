"""pack under kill -9 and a full disk: the previous output or the complete new one, never a mix."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import cv2
import numpy as np
import pytest

from finetune.data import ImageList, pack
from tests.listing import listing

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUTPUTS = ("out.rec", "out.idx", "out_classes.txt", "out.lst")


def _tree(root, n_per_class, size=48):
    rng = np.random.default_rng(1)
    for c in ("a", "b"):
        os.makedirs(root / c, exist_ok=True)
        for i in range(n_per_class):
            cv2.imwrite(str(root / c / f"{i:03d}.png"), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    return root


def _script(images, prefix, limit=None):
    return textwrap.dedent(f"""
        import resource, sys
        sys.path.insert(0, {ROOT!r})
        from finetune.data import ImageList, pack
        from finetune.errors import WriteError
        if {limit!r} is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, ({limit!r}, {limit!r}))
        try:
            pack(ImageList.from_folder({str(images)!r}), {str(prefix)!r}, workers=0, encoding=".png")
        except WriteError as e:
            print("WriteError", e.errno, e)
            sys.exit(3)
    """)


def _outputs(folder):
    return tuple((folder / name).read_bytes() for name in OUTPUTS)


@pytest.fixture
def old_and_new(tmp_path):
    """An output folder holding the pack of a small tree; the bytes of the pack of a larger one."""
    small, big = _tree(tmp_path / "small", 2), _tree(tmp_path / "big", 30)
    out, ref = tmp_path / "out", tmp_path / "ref"
    pack(ImageList.from_folder(small), out / "out", workers=0, encoding=".png")
    pack(ImageList.from_folder(big), ref / "out", workers=0, encoding=".png")
    return big, out, _outputs(out), _outputs(ref)


def test_disk_full_during_pack_is_a_write_error_and_keeps_the_previous_output(old_and_new):
    big, out, old, new = old_and_new
    limit = len(new[0]) // 2
    r = subprocess.run([sys.executable, "-c", _script(big, out / "out", limit)], capture_output=True, text=True)
    assert r.returncode == 3, r.stderr
    assert "WriteError 27" in r.stdout and "out.rec" in r.stdout  # EFBIG, naming the file
    assert _outputs(out) == old
    assert listing(out) == sorted(OUTPUTS)  # no temporary left behind


def test_kill_9_at_random_points_leaves_old_or_new_and_a_rerun_completes_identically(old_and_new):
    big, out, old, new = old_and_new
    t0 = time.time()
    subprocess.run([sys.executable, "-c", _script(big, out / "timing")], check=True)
    full = time.time() - t0
    for name in OUTPUTS:
        os.remove(out / name.replace("out", "timing", 1))
    rng = random.Random(0)
    seen = set()
    for trial in range(6):
        p = subprocess.Popen([sys.executable, "-c", _script(big, out / "out")])
        time.sleep(rng.uniform(0.3, 1.1) * full)
        p.send_signal(signal.SIGKILL)
        p.wait()
        from finetune._file_writes import recover
        recover([out / "out.rec"])  # what every reader and writer does first
        state = _outputs(out)
        assert state in (old, new), f"trial {trial}: a mix of old and new files"
        seen.add("new" if state == new else "old")
        pack(ImageList.from_folder(big), out / "out", workers=0, encoding=".png")
        assert _outputs(out) == new
        assert listing(out) == sorted(OUTPUTS)
        pack(ImageList.from_folder(big.parent / "small"), out / "out", workers=0, encoding=".png")
        assert _outputs(out) == old
    assert seen  # the trials ran (which of the two states each saw depends on timing)

"""Ownership, locks, manifests and permissions of what finetune writes (finetune._outputs, finetune._units)."""

import multiprocessing
import os
import stat
import time

import numpy as np
import pytest

import finetune as ft
from finetune import _outputs, _units
from finetune._file_writes import atomic_paths, atomic_write, settled
from finetune._folder_swap import atomic_dir
from finetune.errors import MixedOutputError, OutputExistsError


@pytest.fixture()
def umask_027():
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_outputs_get_the_permissions_of_the_umask(tmp_path, umask_027):
    atomic_write(tmp_path / "a.txt", "x")
    with atomic_paths([tmp_path / "u.bin", tmp_path / "u.txt"]) as (a, b):
        open(a, "wb").write(b"1")
        open(b, "w").write("2")
    with atomic_dir(tmp_path / "folder") as tmp:
        open(os.path.join(tmp, "f"), "w").write("x")
    for name in ("a.txt", "u.bin", "u.txt", os.path.join("folder", "f")):
        assert _mode(tmp_path / name) == 0o640, name
    assert _mode(tmp_path / "folder") == 0o750


@pytest.mark.parametrize("kind", ["model", "deployment"])
def test_a_folder_finetune_did_not_write_is_never_replaced(tmp_path, kind):
    from tests.model_sources import tiny_block

    project = tmp_path / "project"
    project.mkdir()
    (project / "config.json").write_text('{"format": "finetune-model"}')  # looks like ours
    (project / "notes.txt").write_text("mine")
    before = {p: (project / p).read_bytes() for p in os.listdir(project)}
    net = tiny_block()
    with pytest.raises(OutputExistsError, match="notes.txt") as info:
        if kind == "model":
            ft.create_model(net).save(project)
        else:
            ft.export_for_deployment(net, project, verify=False)
    assert info.value.filename == str(project / "notes.txt")
    assert {p: (project / p).read_bytes() for p in os.listdir(project)} == before


def test_a_model_directory_is_replaced_but_a_file_added_to_it_is_kept(tmp_path):
    bb = ft.Backbone.from_zoo("mobilenet0.25", weights=None)
    model = ft.HeadReplacer(2).apply(bb, class_names=["a", "b"])
    folder = model.save(tmp_path / "m")
    assert _outputs.read_marker(folder)["kind"] == "model directory"
    model.save(folder)  # ours, as written: replaced
    (tmp_path / "m" / "README.txt").write_text("about this model")
    with pytest.raises(OutputExistsError, match="README.txt"):
        model.save(folder)
    assert (tmp_path / "m" / "README.txt").read_text() == "about this model"
    with pytest.raises(OutputExistsError, match="a file of that name"):
        model.save(tmp_path / "m" / "README.txt")


def _pack(root, names, prefix):
    import cv2

    for i, name in enumerate(names):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        cv2.imwrite(os.path.join(root, name, f"{i}.png"), np.full((8, 8, 3), 40 * i, np.uint8))
    return ft.pack(ft.ImageList.from_folder(root), prefix, workers=1)


def test_parts_of_two_packs_are_never_read_together(tmp_path):
    _pack(tmp_path / "a", ["cat", "dog"], tmp_path / "one")
    _pack(tmp_path / "b", ["x", "y", "z"], tmp_path / "two")
    assert ft.RecordDataset(tmp_path / "one").class_names == ["cat", "dog"]
    (tmp_path / "one.idx").write_bytes((tmp_path / "two.idx").read_bytes())  # a copy over one part
    with pytest.raises(MixedOutputError, match="one.idx"):
        ft.RecordDataset(tmp_path / "one")
    (tmp_path / "one.idx").write_bytes(b"")
    os.remove(tmp_path / "one_classes.txt")
    _pack(tmp_path / "a", ["cat", "dog"], tmp_path / "one")  # packed again: consistent
    assert len(ft.RecordDataset(tmp_path / "one")) == 2


def test_a_class_file_of_an_earlier_pack_is_removed_but_one_written_by_hand_is_kept(tmp_path):
    _pack(tmp_path / "a", ["cat", "dog"], tmp_path / "r")
    unnamed = ft.ImageList.from_folder(tmp_path / "a")
    unnamed = ft.ImageList(list(unnamed), root=unnamed.root)
    ft.pack(unnamed, tmp_path / "r", workers=1)
    assert not (tmp_path / "r_classes.txt").exists()  # it described the earlier records
    (tmp_path / "r_classes.txt").write_text("mine\nyours\n")
    ft.pack(unnamed, tmp_path / "r", workers=1)
    assert ft.RecordDataset(tmp_path / "r").class_names == ["mine", "yours"]


def test_files_of_other_tools_are_read_without_a_manifest(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"1")
    settled([tmp_path / "x.bin", tmp_path / "x.txt"])  # nothing to check


def test_a_damaged_manifest_is_a_typed_error(tmp_path):
    with atomic_paths([tmp_path / "x.bin", tmp_path / "x.txt"]) as (a, b):
        open(a, "wb").write(b"1")
        open(b, "w").write("2")
    open(_units.manifest_path(tmp_path / "x.bin"), "w").write("{broken")
    with pytest.raises(MixedOutputError, match="damaged"):
        settled([tmp_path / "x.bin", tmp_path / "x.txt"])


def _write_pair(args):
    folder, tag, rounds = args
    for _ in range(rounds):
        with atomic_paths([os.path.join(folder, "p.a"), os.path.join(folder, "p.b")]) as (a, b):
            open(a, "w").write(tag * 1000)
            time.sleep(0.002)
            open(b, "w").write(tag)
    return tag


def test_two_writers_of_one_output_take_turns(tmp_path):
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        pending = pool.map_async(_write_pair, [(str(tmp_path), "a", 40), (str(tmp_path), "b", 40)])
        seen = set()
        while not pending.ready():
            try:
                settled([tmp_path / "p.a", tmp_path / "p.b"])
                a, b = (tmp_path / "p.a").read_text(), (tmp_path / "p.b").read_text()
            except (FileNotFoundError, MixedOutputError):
                continue  # between two renames of one commit: the reader is told, never given a mix
            if a and b and a[-1] == b:
                seen.add(b)
        pending.get()
    a, b = (tmp_path / "p.a").read_text(), (tmp_path / "p.b").read_text()
    assert a == b * 1000
    settled([tmp_path / "p.a", tmp_path / "p.b"])


def test_a_training_output_folder_is_adopted_once_and_a_foreign_one_refused(tmp_path):
    run = _outputs.adopt_folder(tmp_path / "runs" / "a", _outputs.RUN)
    (tmp_path / "runs" / "a" / "history.csv").write_text("epoch\n")
    assert _outputs.adopt_folder(run, _outputs.RUN) == run  # again: fine, nothing removed
    assert (tmp_path / "runs" / "a" / "history.csv").exists()
    with pytest.raises(OutputExistsError, match="training run"):
        _outputs.claim_folder(run, _outputs.MODEL, replace=True, what="model directory")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "data.csv").write_text("1")
    with pytest.raises(OutputExistsError, match="data.csv"):
        _outputs.adopt_folder(tmp_path / "mine", _outputs.RUN)


def test_records_replaced_after_their_index_was_read_are_refused(tmp_path):
    _pack(tmp_path / "a", ["cat", "dog"], tmp_path / "r")
    ds = ft.RecordDataset(tmp_path / "r")  # the index is read, the records are opened on first use
    _pack(tmp_path / "b", ["x", "y", "z"], tmp_path / "r")
    with pytest.raises(MixedOutputError, match="packed again"):
        ds[0]


def _hold_and_report(args):
    folder, ready, release = args
    from finetune._outputs import hold_folder

    with hold_folder(folder):
        ready.set()
        release.wait(30)


@pytest.fixture()
def held_run(tmp_path):
    """``tmp_path / "run"``, held by another process for the length of the test, and free after it."""
    from finetune._outputs import hold_folder

    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_and_report, args=((str(tmp_path / "run"), ready, release),))
    proc.start()
    try:
        assert ready.wait(30)
        yield tmp_path / "run"
    finally:
        release.set()
        proc.join(30)
    with hold_folder(tmp_path / "run"):  # free again once the other process is gone
        pass


def test_a_second_process_cannot_write_a_folder_another_one_holds(held_run):
    from finetune._outputs import hold_folder
    from finetune.errors import OutputBusyError

    with pytest.raises(OutputBusyError, match="another finetune process"):
        with hold_folder(held_run):
            pass


def test_two_trainings_into_one_output_folder_do_not_mix(held_run):
    """The second Trainer with the same out_dir is refused while the first trains (its checkpoints stay its own)."""
    from finetune.errors import OutputBusyError
    from finetune.testing import TinyNet

    x, y = np.random.rand(8, 3, 16, 16).astype("float32"), np.arange(8) % 2
    trainer = ft.Trainer(TinyNet(classes=2), batch_size=4, progress=False, out_dir=str(held_run))
    with pytest.raises(OutputBusyError):
        trainer.fit((x, y), epochs=1)
    assert not (held_run / "checkpoints").exists()

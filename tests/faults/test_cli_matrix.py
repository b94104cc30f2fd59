"""Every CLI command x output faults, bad numbers and odd names: success, or one error line.

The table :data:`COMMANDS` holds a minimal valid invocation of every command
on the session inputs; a test checks the table covers the parser. Each
output-bearing option is then pointed at a file where a folder goes (or a
folder where a file goes), into a foreign folder, under an unwritable
place, under missing folders (which must be created) and under a 1 KB
file-size limit. Every numeric option found in the parser gets NaN, -1, 0,
1e400 and text. The check is always the same: exit 0, or exit 1/2 with a
one-line error and no traceback; nothing the user had is lost and no
temporary is left behind.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass, field

import pytest

from .conftest import assert_clean_exit, assert_nothing_lost, leftovers, run_cli, snapshot, write_images
from ._runner import run_limited


@dataclass
class Command:
    """A minimal valid invocation: ``argv(inputs, outs)``; ``outputs`` maps an option to what it names.

    An output is ``"dir"``, ``"file.EXT"`` or ``"prefix:SUFFIX"`` (files ``PREFIX + SUFFIX``, the first
    of them given).
    """

    argv: object
    outputs: dict = field(default_factory=dict)
    heavy: bool = False  # seconds per run: its cases are marked slow


def _o(outs, option, default):
    return outs.get(option, default)


COMMANDS = {
    "split": Command(lambda i, o: ["split", i.images, "--out", o["--out"], "--ratios", "0.5", "0.5"],
                     {"--out": "prefix:_train.lst"}),
    "im2rec": Command(lambda i, o: ["im2rec", "--list", "--recursive", o["PREFIX"], i.images],
                      {"PREFIX": "prefix:.lst"}),
    "check": Command(lambda i, o: ["check", i.images, "--workers", "1", "--out", o["--out"]], {"--out": "file.csv"}),
    "pack": Command(lambda i, o: ["pack", i.lst, "--root", i.images, "--out", o["--out"], "--workers", "1"],
                    {"--out": "prefix:.rec"}),
    "mean": Command(lambda i, o: ["mean", i.rec + ".rec", "--out", o["--out"], "--size", "8", "8", "--workers", "1"],
                    {"--out": "file.bin"}),
    "balance": Command(lambda i, o: ["balance", i.lst, "--root", i.images, "--target", "5", "--out", o["--out"],
                                     "--out-dir", o["--out-dir"]], {"--out": "file.lst", "--out-dir": "dir"}),
    "fashion-mnist": Command(lambda i, o: ["fashion-mnist", "--out", o["--out"], "--per-class", "1", "--split", "test"],
                             {"--out": "dir"}),
    "backbones": Command(lambda i, o: ["backbones", "--names-only"]),
    "inspect": Command(lambda i, o: ["inspect", i.model, "--no-layers"]),
    "convert-caffe": Command(lambda i, o: ["convert-caffe", i.prototxt, i.caffemodel, "--out", o["--out"]],
                             {"--out": "dir"}),
    "train": Command(lambda i, o: ["train", i.model, "--train", i.rec, "--out", o["--out"], "--recipe", "manual",
                                   "--epochs", "1", "--batch-size", "6", "--workers", "1", "--no-progress"],
                     {"--out": "dir"}, heavy=True),
    "lr-find": Command(lambda i, o: ["lr-find", i.model, "--train", i.rec, "--out", o["--out"], "--num-steps", "3",
                                     "--no-progress"], {"--out": "file.png"}, heavy=True),
    "launch": Command(lambda i, o: ["launch", "-n", "1", "-s", "1", "--", sys.executable, "-c", "pass"], heavy=True),
    "predict": Command(lambda i, o: ["predict", i.model, i.images, "--workers", "1", "--top-k", "2"]),
    "evaluate": Command(lambda i, o: ["evaluate", i.model, i.rec, "--workers", "1", "--report", o["--report"],
                                      "--plots", o["--plots"]], {"--report": "file.json", "--plots": "dir"}),
    "gradcam": Command(lambda i, o: ["gradcam", i.model, i.image, "--out", o["--out"]], {"--out": "file.png"}),
    "export": Command(lambda i, o: ["export", i.model, "--out", o["--out"]], {"--out": "dir"}),
    "extract": Command(lambda i, o: ["extract", i.model, i.images, "--layer", i.layer, "--out", o["--out"],
                                     "--save-extractor", o["--save-extractor"], "--no-progress"],
                       {"--out": "file.npy", "--save-extractor": "dir"}),
    "index": Command(lambda i, o: ["index", i.feats, "--out", o["--out"]], {"--out": "file.npz"}),
    "retrieve": Command(lambda i, o: ["retrieve", "--index", i.index, "--queries", i.feats, "--top-k", "2"]),
    "eval-retrieval": Command(lambda i, o: ["eval-retrieval", "--index", i.feats, "--labels", i.labels]),
    "quickstart": Command(lambda i, o: ["quickstart", "--out", o["--out"], "--per-class", "2", "--test-per-class", "1",
                                        "--epochs", "1", "--head-epochs", "0", "--input-size", "32", "--no-baseline",
                                        "--no-progress"], {"--out": "dir"}, heavy=True),
}

# options whose text holds numbers (parsed by the command, not by argparse), and how many
TEXT_NUMBERS = {"gradcam": {"--target": 1}, "extract": {"--scales": 1},
                "convert-caffe": {"--mean": 3, "--input-shape": 3}}
BAD_NUMBERS = ["nan", "-1", "0", "1e400", "abc"]
# finite for Python, not for what reads them: beyond float32 (MXNet's precision) and beyond 64-bit integers;
# run on the commands that are not heavy (on every command, the parser alone)
BEYOND = ["1e39", "99999999999999999999"]


# Cases that fail because of a known library bug; strict, so a fix shows up.
KNOWN_BUGS = {}


def _known(case_id: str) -> list:
    reason = KNOWN_BUGS.get(case_id)
    return [pytest.mark.xfail(strict=True, reason=reason)] if reason else []


def _subparsers():
    from finetune.cli import build_parser

    parser = build_parser()
    return parser._subparsers._group_actions[0].choices


def numeric_options() -> list:
    """``(command, option, nargs)`` of every option with a numeric or custom ``type`` (one per destination)."""
    from finetune.cli._options import file_name

    found = []
    for name, sub in _subparsers().items():
        seen = set()
        for action in sub._actions:
            if not action.option_strings or action.type in (None, str, file_name) or action.dest in seen | {"out"}:
                continue
            seen.add(action.dest)
            found.append((name, action.option_strings[-1] if action.option_strings[0].startswith("-") and
                          not action.option_strings[0].startswith("--") else action.option_strings[0], action.nargs))
        for option, count in TEXT_NUMBERS.get(name, {}).items():
            found.append((name, option, f"text{count}"))
    return found


def _marks(name: str) -> list:
    return [pytest.mark.slow] if COMMANDS[name].heavy else []


def _out_paths(name: str, folder: str) -> dict:
    paths = {}
    for option, kind in COMMANDS[name].outputs.items():
        stem = "out_" + option.strip("-").replace("-", "_").lower()
        paths[option] = os.path.join(folder, stem + (kind[4:] if kind.startswith("file") else ""))
    return paths


def _argv(name, inputs, folder, outs=None) -> list:
    paths = _out_paths(name, folder)
    paths.update(outs or {})
    return COMMANDS[name].argv(inputs, paths)


@pytest.fixture(autouse=True)
def _fresh_logging():
    """Let each ``main`` install its log handler on the stderr this test captures."""
    import logging

    root = logging.getLogger()
    kept = root.handlers[:]
    root.handlers[:] = []
    yield
    root.handlers[:] = kept


def test_the_table_covers_every_command():
    assert sorted(COMMANDS) == sorted(_subparsers())


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n) + _known(n)) for n in COMMANDS])
def test_minimal_invocation_succeeds(name, inputs, tmp_path, capsys):
    code = run_cli(_argv(name, inputs, str(tmp_path)))
    err = capsys.readouterr().err
    assert code == 0, err
    assert not leftovers(tmp_path)


# ------------------------------------------------------------------ output faults
FAULTS = ["wrong_kind", "foreign", "unwritable", "missing_parent", "fsize", "no_name", "photo"]


def _place(kind: str, fault: str, folder: str, default: str) -> tuple[str, bool]:
    """Prepare ``fault`` for an output of ``kind`` under ``folder``: ``(path to give, must succeed)``."""
    if fault == "wrong_kind":
        if kind == "dir":
            with open(default, "wb") as f:
                f.write(b"a file of the user\n")
            return default, False
        target = default + kind.split(":", 1)[1] if kind.startswith("prefix") else default
        os.makedirs(target)
        with open(os.path.join(target, "notes.txt"), "w", encoding="utf-8") as f:
            f.write("a folder of the user\n")
        return default, False
    if fault == "foreign":
        foreign = os.path.join(folder, "foreign")
        os.makedirs(foreign, exist_ok=True)
        with open(os.path.join(foreign, "config.json"), "w", encoding="utf-8") as f:
            f.write('{"mine": true}\n')
        with open(os.path.join(foreign, "notes.txt"), "w", encoding="utf-8") as f:
            f.write("do not delete\n")
        return (foreign if kind == "dir" else os.path.join(foreign, os.path.basename(default))), False
    if fault == "unwritable":
        if os.geteuid() == 0:  # root writes through permissions: a parent that is a file stops everyone
            blocker = os.path.join(folder, "blocker")
            with open(blocker, "wb") as f:
                f.write(b"a file, not a folder\n")
            return os.path.join(blocker, os.path.basename(default)), False
        ro = os.path.join(folder, "readonly")
        os.makedirs(ro, exist_ok=True)
        os.chmod(ro, 0o500)
        return os.path.join(ro, os.path.basename(default)), False
    if fault == "missing_parent":
        return os.path.join(folder, "new", "deeper", os.path.basename(default)), True
    if fault == "photo":  # the user's photo where the output goes (a folder output: in its place)
        import cv2
        import numpy as np

        target = default + kind.split(":", 1)[1] if kind.startswith("prefix") else default
        ok, data = cv2.imencode(".png", np.full((16, 16, 3), 120, np.uint8))
        with open(target, "wb") as f:
            f.write(data.tobytes())
        return default, False
    if fault == "no_name":  # "out/": a folder's name with its separator; only a folder output may take it
        return (default + os.sep, True) if kind == "dir" else (os.path.dirname(default) + os.sep, False)
    return default, False  # fsize: the usual place, a small limit


def _output_cases():
    for name, command in COMMANDS.items():
        for option in command.outputs:
            for fault in FAULTS:
                case = f"{name}-{option}-{fault}"
                marks = _marks(name) + ([pytest.mark.slow] if fault == "fsize" and name in SLOW_FSIZE else [])
                yield pytest.param(name, option, fault, id=case, marks=marks + _known(case))


SLOW_FSIZE = {"evaluate", "convert-caffe", "export"}


@pytest.mark.parametrize("name,option,fault", list(_output_cases()))
def test_output_fault(name, option, fault, inputs, tmp_path, capsys):
    if fault == "no_name" and name == "im2rec":
        pytest.skip("im2rec is MXNet's tool's drop-in: it takes abspath(PREFIX), so 'work/' writes work.lst")
    folder = str(tmp_path / "work")
    os.makedirs(folder)
    kind = COMMANDS[name].outputs[option]
    path, must_succeed = _place(kind, fault, folder, _out_paths(name, folder)[option])
    before = snapshot(folder)
    argv = _argv(name, inputs, folder, {option: path})
    try:
        if fault == "fsize":
            code, err = run_limited(argv, fsize=1024)
        else:
            code, err = run_cli(argv), capsys.readouterr().err
    finally:
        for root, dirs, _ in os.walk(folder):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o700)
    assert_clean_exit(code, err, allowed=(0,) if must_succeed else (0, 1, 2))
    if fault == "foreign" and kind == "dir":  # a folder of the user's own files is never written into
        assert code in (1, 2), f"{name} {option} wrote into a folder of the user's files"
    assert_nothing_lost(before, folder)
    assert not leftovers(folder)
    if must_succeed:
        produced = path + kind.split(":", 1)[1] if kind.startswith("prefix") else path
        assert os.path.exists(produced), f"{produced} was not written"
    if fault == "no_name" and kind != "dir":
        hidden = [n for n in snapshot(folder) if n not in before and os.path.basename(n).startswith(".")]
        assert code in (1, 2) and not hidden, f"{name} {option} {path!r}: exit {code}, wrote {hidden}"


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in COMMANDS])
def test_closed_standard_output(name, inputs, tmp_path, capsys, monkeypatch):
    """``finetune ... >&-``: the command works or says in one line that it cannot write its results.

    Python starts with ``sys.stdout`` ``None`` when the shell closed it; here the same, in this process.
    """
    monkeypatch.setattr(sys, "stdout", None)
    code = run_cli(_argv(name, inputs, str(tmp_path)))
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert_clean_exit(code, err, allowed=(0, 1))
    assert not leftovers(tmp_path)


# ------------------------------------------------------------------ bad numbers
def _with_value(argv: list, option: str, nargs, value: str) -> list:
    """``argv`` with ``option`` given ``value`` (once per value it takes), replacing any given one."""
    argv = list(argv)
    if option in argv:
        at = argv.index(option)
        end = at + 1
        while end < len(argv) and not argv[end].startswith("-"):
            end += 1
        if option == "--target" or nargs is None or str(nargs).startswith("text"):
            end = at + 2
        del argv[at:end]
    if isinstance(nargs, int):
        values = [value] * nargs
    elif str(nargs).startswith("text"):
        values = [",".join([value] * int(str(nargs)[4:]))]
    else:
        values = [value]
    if "--" in argv:  # launch: options go before the worker command
        at = argv.index("--")
        return argv[:at] + [option, *values] + argv[at:]
    return argv + [option, *values]


def _number_cases():
    for name, option, nargs in numeric_options():
        for value in BAD_NUMBERS + ([] if COMMANDS[name].heavy else BEYOND):
            case = f"{name}{option}={value}"
            yield pytest.param(name, option, nargs, value, id=case, marks=_marks(name) + _known(case))


@pytest.mark.parametrize("name,option,nargs,value", list(_number_cases()))
def test_bad_number(name, option, nargs, value, inputs, tmp_path, capsys):
    argv = _with_value(_argv(name, inputs, str(tmp_path)), option, nargs, value)
    code = run_cli(argv)
    assert_clean_exit(code, capsys.readouterr().err)
    assert not leftovers(tmp_path)


@pytest.mark.parametrize("name,option,nargs", numeric_options())
def test_bad_numbers_are_usage_errors_or_accepted_by_the_parser(name, option, nargs, capsys):
    """Cheap for every command, heavy ones included: the parser alone, on every bad value."""
    from finetune.cli import build_parser

    parser = build_parser()
    for value in BAD_NUMBERS + BEYOND:
        base = _argv(name, _placeholders(), "/nonexistent")
        try:
            parser.parse_args(_with_value(base, option, nargs, value))
        except SystemExit as exc:
            assert exc.code == 2
            err = capsys.readouterr().err
            assert_clean_exit(2, err)


def _placeholders():
    import types

    return types.SimpleNamespace(**{k: f"/nonexistent/{k}" for k in (
        "images", "image", "lst", "rec", "model", "layer", "feats", "index", "labels", "prototxt", "caffemodel")})


# ------------------------------------------------------------------ odd names
ODD = [" lead", "byte\udce9", "ünï-猫"]  # a leading space, a byte that is not UTF-8 (0xE9), unicode


@pytest.fixture(scope="module")
def odd(inputs, tmp_path_factory):
    """Images with odd names in class folders with odd names, under a folder with an odd name."""
    import types

    root = str(tmp_path_factory.mktemp("odd"))
    images = os.path.join(root, " images\udce9")
    write_images(images, {f"{odd}class": [f"{odd}{i}{ext}" for i, ext in enumerate([".png", ".jpg"])] for odd in ODD})
    image = os.path.join(images, f"{ODD[1]}class", f"{ODD[1]}0.png")
    return types.SimpleNamespace(root=root, images=images, image=image)


ODD_READERS = {
    "split": lambda o, i, out: ["split", o.images, "--out", os.path.join(out, "sp\udce9"), "--ratios", "0.5", "0.5"],
    "im2rec": lambda o, i, out: ["im2rec", "--list", "--recursive", os.path.join(out, " l"), o.images],
    "check": lambda o, i, out: ["check", o.images, "--workers", "1", "--out", os.path.join(out, "bad \udce9.csv")],
    "pack": lambda o, i, out: ["pack", o.images, "--out", os.path.join(out, "ünï \udce9"), "--workers", "1"],
    "predict": lambda o, i, out: ["predict", i.model, o.images, "--workers", "1", "--top-k", "1"],
    "evaluate": lambda o, i, out: ["evaluate", i.model, o.images, "--workers", "1"],
    "gradcam": lambda o, i, out: ["gradcam", i.model, o.image, "--out", os.path.join(out, "c\udce9 .png")],
    "extract": lambda o, i, out: ["extract", i.model, o.images, "--layer", i.layer, "--out",
                                  os.path.join(out, " f\udce9.npy"), "--no-progress"],
}


@pytest.mark.parametrize("name", ODD_READERS)
def test_odd_names(name, odd, inputs, tmp_path, capsys):
    out = str(tmp_path)
    code = run_cli(ODD_READERS[name](odd, inputs, out))
    assert_clean_exit(code, capsys.readouterr().err)
    assert not leftovers(odd.root) and not leftovers(out)


def test_odd_descriptors_index_and_retrieve(odd, inputs, tmp_path, capsys):
    """Ids with odd names travel through extract, index, retrieve and eval-retrieval."""
    npy = os.path.join(str(tmp_path), " d\udce9.npy")
    steps = [["extract", inputs.model, odd.images, "--layer", inputs.layer, "--out", npy, "--no-progress"],
             ["index", npy, "--out", npy[:-4] + ".npz"],
             ["retrieve", "--index", npy[:-4] + ".npz", "--queries", npy, "--top-k", "2", "--json"]]
    for argv in steps:
        code = run_cli(argv)
        assert_clean_exit(code, capsys.readouterr().err)


MODEL_READERS = {
    "inspect": lambda m, i, out: ["inspect", m, "--no-layers"],
    "predict": lambda m, i, out: ["predict", m, i.image, "--workers", "1", "--top-k", "1"],
    "export": lambda m, i, out: ["export", m, "--out", os.path.join(out, "dep")],
    "extract": lambda m, i, out: ["extract", m, i.image, "--layer", i.layer, "--out", os.path.join(out, "f.npy"),
                                  "--no-progress"],
}

def _model_name_cases():
    for name in MODEL_READERS:
        for k, odd_name in enumerate(ODD):
            case = f"{name}-{['space', 'byte', 'unicode'][k]}"
            marks = _known(case)
            yield pytest.param(name, odd_name, id=case, marks=marks)


@pytest.mark.parametrize("name,odd_name", list(_model_name_cases()))
def test_odd_model_folder_name(name, odd_name, inputs, tmp_path, capsys):
    model = os.path.join(str(tmp_path), f"{odd_name}model")
    shutil.copytree(inputs.model, model)
    code = run_cli(MODEL_READERS[name](model, inputs, str(tmp_path)))
    assert_clean_exit(code, capsys.readouterr().err)
    assert not leftovers(tmp_path)


def test_numeric_options_are_found():
    """The discovery of numeric options sees the ones every user meets."""
    found = {(n, o) for n, o, _ in numeric_options()}
    assert {("train", "--lr"), ("mean", "--size"), ("index", "--nlist"), ("split", "--ratios")} <= found
    assert all(isinstance(a, argparse.Action) for a in _subparsers()["train"]._actions)

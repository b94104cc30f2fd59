"""The getting-started page's commands exist as written and come in an order that works.

Nothing is run: each ``finetune`` line is parsed by the real command-line parser
(every flag spelled exactly as the parser knows it), the arguments given to
``scripts/run.sh`` are parsed as the ``finetune quickstart`` they are passed on
to, and every file or folder a command reads that another command on the page
makes must be made by an earlier one.
"""

import re
import shlex
from pathlib import Path

import pytest

from finetune.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "getting_started.rst"

# The stages of the page, in the order a reader runs them (the first line of each).
ORDER = ["bash scripts/setup.sh", "bash scripts/run.sh", "bash scripts/test.sh", "finetune fashion-mnist",
         "finetune split", "finetune pack", "finetune train", "finetune predict", "finetune evaluate"]
PYTHON_ORDER = ["ImageList.from_folder(", "ft.pack(", "create_model(", "recipe.fit(", "Predictor.load(",
                "ft.evaluate("]
# Namespace attributes that name something a command reads.
INPUTS = ("root", "source", "train", "val", "model", "records", "images", "image")


def _blocks(language):
    """The code blocks of ``language`` on the page, as text (indentation removed)."""
    text = PAGE.read_text(encoding="utf-8")
    found = re.findall(rf"^\.\. code-block:: {language}\n\n((?:(?:    .*)?\n)+)", text, re.M)
    return ["\n".join(line[4:] for line in block.splitlines()) for block in found]


def _lines():
    """Every command line of the page's shell blocks, in page order, as (text, argv)."""
    lines = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                lines.append((line.strip(), argv))
    return lines


def _finetune_lines():
    return [(text, argv) for text, argv in _lines() if argv[0] == "finetune"]


def _subparser(parser, name):
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sub.choices[name]


def _parse(argv):
    """``argv`` (without the program name) parsed by the real parser; a usage error fails the test."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"finetune {' '.join(argv)!r} does not parse (exit {exc.code})")
    known = {s for a in _subparser(parser, argv[0])._actions for s in a.option_strings}
    shown = {a.split("=", 1)[0] for a in argv[1:] if a.startswith("--")}
    assert shown <= known, f"finetune {argv[0]}: flags not spelled as the parser has them: {sorted(shown - known)}"
    return args


def test_page_has_every_stage_in_order():
    texts = [text for text, _ in _lines()]
    first = {}
    for stage in ORDER:
        hits = [i for i, text in enumerate(texts) if text == stage or text.startswith(stage + " ")]
        assert hits, f"the page shows no {stage!r}"
        first[stage] = hits[0]
    assert [first[s] for s in ORDER] == sorted(first[s] for s in ORDER), \
        f"stages out of order: {sorted(ORDER, key=first.get)}"


@pytest.mark.parametrize("text,argv", _finetune_lines(), ids=[t for t, _ in _finetune_lines()])
def test_finetune_command_parses_with_its_flags(text, argv):
    args = _parse(argv[1:])
    assert args.command == argv[1]


def test_script_lines_name_scripts_that_exist_and_pass_valid_arguments():
    scripts = [(text, argv) for text, argv in _lines() if argv[0] == "bash"]
    assert scripts
    for text, argv in scripts:
        script = ROOT / argv[1]
        assert script.is_file(), f"{text!r}: no {argv[1]}"
        if argv[1] == "scripts/run.sh" and len(argv) > 2:  # passed on to `finetune quickstart`
            _parse(["quickstart", *argv[2:]])
        if argv[1] == "scripts/test.sh":  # passed on to pytest: files named must exist
            for arg in argv[2:]:
                if arg.endswith(".py"):
                    assert (ROOT / arg).is_file(), f"{text!r}: no {arg}"


def _made(path, out):
    """Whether ``path`` is ``out`` or a file written under the output prefix or folder ``out``."""
    path, out = path.rstrip("/"), out.rstrip("/")
    return path == out or any(path.startswith(out + sep) for sep in "_./")


def test_each_input_made_on_the_page_is_made_before_it_is_read():
    parsed = [(text, _parse(argv[1:])) for text, argv in _finetune_lines()]
    outs = [(i, args.out) for i, (_, args) in enumerate(parsed)
            if getattr(args, "out", None) and not getattr(args, "plan", False)]  # --plan writes nothing
    checked = 0
    for i, (text, args) in enumerate(parsed):
        for name in INPUTS:
            values = getattr(args, name, None)
            for value in values if isinstance(values, list) else [values]:
                if not isinstance(value, str):
                    continue
                makers = [j for j, out in outs if _made(value, out)]
                if makers:
                    checked += 1
                    assert min(makers) < i, f"{text!r} reads {value!r}, made only later on the page"
    assert checked >= 6  # split, pack (twice), train, predict, evaluate read what the page made


def test_python_example_compiles_and_follows_the_pipeline():
    code = next(block for block in _blocks("python") if "create_model(" in block)
    compile(code, str(PAGE), "exec")
    positions = [code.find(step) for step in PYTHON_ORDER]
    assert -1 not in positions, [s for s, p in zip(PYTHON_ORDER, positions) if p == -1]
    assert positions == sorted(positions), "the Python example's steps are out of order"


def test_made_recognises_prefixes_and_folders():
    assert _made("data/train.rec", "data/train") and _made("data/photos_val.lst", "data/photos")
    assert _made("run", "run") and _made("plots/x.png", "plots/")
    assert not _made("data/trainer.rec", "data/train") and not _made("photo.jpg", "photos")

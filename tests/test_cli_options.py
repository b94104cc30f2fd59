"""The options commands share: one spelling and default, the API's; old spellings still work and warn."""

import argparse
import importlib
import inspect
import os
import re

import pytest

from finetune.cli import build_parser, main
from finetune.cli._options import SHARED
from finetune.errors import ConfigError

# commands whose shared-looking option deliberately differs, and why
# (the drop-in for MXNet's tools/im2rec.py keeps that tool's spelling and default)
EXCEPTIONS = {
    ("im2rec", "seed"): (["--seed"], 100),
    ("im2rec", "workers"): (["--num-thread", "--workers"], None),
    ("train", "batch_size"): (["--batch-size"], None),  # the recipe's own (16) unless given
}


def _commands():
    parser = build_parser()
    return parser._subparsers._group_actions[0].choices


def _options(sub):
    """(dest, action) of the visible options of a command (deprecated aliases are hidden)."""
    return [(a.dest, a) for a in sub._actions if a.option_strings and a.help is not argparse.SUPPRESS]


SHARED_USES = [(cmd, dest) for cmd, sub in _commands().items() for dest, _ in _options(sub) if dest in SHARED]


def test_the_shared_options_are_used_by_the_commands_that_have_them():
    used = {dest for _, dest in SHARED_USES}
    assert used == set(SHARED)
    for dest in ("ctx", "workers", "batch_size", "seed", "out"):
        assert sum(d == dest for _, d in SHARED_USES) >= 3, dest


@pytest.mark.parametrize("command,dest", SHARED_USES)
def test_a_shared_option_has_one_spelling_default_and_help(command, dest):
    action = dict(_options(_commands()[command]))[dest]
    if (command, dest) in EXCEPTIONS:
        assert (action.option_strings, action.default) == EXCEPTIONS[(command, dest)]
        return
    option = SHARED[dest]
    assert action.option_strings[0] == option.flag  # a switch may add its negation (--tta / --no-tta)
    assert action.option_strings in ([option.flag], [option.flag, "--no-" + option.flag[2:]])
    if dest != "out":  # what and where the output is differs per command; its spelling does not
        assert action.default == option.kwargs["default"]
        assert action.help == option.kwargs["help"]
        assert action.type == option.kwargs.get("type")


def test_the_index_settings_offer_every_method_of_retrieval_index():
    from finetune.features._ann import METHODS

    assert SHARED["method"].kwargs["choices"] == METHODS


def test_no_command_spells_an_output_differently():
    for name, sub in _commands().items():
        flags = {f for a in sub._actions if a.help is not argparse.SUPPRESS for f in a.option_strings}
        assert not flags & {"--output", "--out-file", "--output-dir", "--classes", "--pool", "--num-thread"} \
            or name == "im2rec", name


def _api_default(path, dest):
    module, _, qualname = path.partition(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return inspect.signature(obj).parameters[dest].default


@pytest.mark.parametrize("dest,path", [(d, p) for d, o in SHARED.items() for p in o.api])
def test_a_shared_option_defaults_to_the_api_parameter_it_sets(dest, path):
    assert _api_default(path, dest) == SHARED[dest].kwargs["default"], f"--{dest} vs {path}({dest}=)"


# old spelling, new spelling: command line prefix, old arguments, new arguments, dest, expected value
ALIASES = [
    (["train", "b", "--train", "t.rec", "--out", "o"], ["--classes", "7"], ["--num-classes", "7"], "num_classes", 7),
    (["train", "b", "--train", "t.rec", "--out", "o"], ["--warmup", "2"], ["--warmup-epochs", "2"], "warmup", 2.0),
    (["lr-find", "b", "--train", "t.rec"], ["--classes", "3"], ["--num-classes", "3"], "num_classes", 3),
    (["extract", "m", "x.jpg", "--out", "f.npy"], ["--pool", "max", "--pool", "gem"],
     ["--pooling", "max", "--pooling", "gem"], "pooling", ["max", "gem"]),
    (["split", "root", "--out", "p"], ["--names", "a", "b"], ["--part-names", "a", "b"], "part_names", ["a", "b"]),
    (["split", "root"], ["p"], ["--out", "p"], "out", "p"),
    (["pack", "src"], ["p"], ["--out", "p"], "out", "p"),
    (["pack", "src", "--out", "p"], ["--num-thread", "3"], ["--workers", "3"], "workers", 3),
    (["mean", "r.rec", "--size", "8", "8"], ["m.bin"], ["--out", "m.bin"], "out", "m.bin"),
    (["balance", "a.lst", "--target", "4", "--out-dir", "x"], ["b.lst"], ["--out", "b.lst"], "out", "b.lst"),
    (["fashion-mnist"], ["fm"], ["--out", "fm"], "out", "fm"),
    (["quickstart"], ["--size", "32"], ["--input-size", "32"], "input_size", 32),
    (["backbones"], ["--names"], ["--names-only"], "names_only", True),
    (["gradcam", "m", "x.jpg", "--out", "h.png"], ["--class", "dog"], ["--target", "dog"], "target", "dog"),
]


@pytest.mark.parametrize("base,old,new,dest,value", ALIASES, ids=[" ".join(a[1][:1]) + " " + a[0][0] for a in ALIASES])
def test_a_deprecated_spelling_still_works_and_warns_once(base, old, new, dest, value, capsys):
    args = build_parser().parse_args(base + new)
    assert getattr(args, dest) == value
    assert capsys.readouterr().err == ""
    args = build_parser().parse_args(base + old)
    assert getattr(args, dest) == value
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and f"finetune {base[0]}: warning:" in err[0] and "deprecated" in err[0]
    assert new[0] in err[0]


@pytest.mark.parametrize("base,old,new,dest,value", [a for a in ALIASES if a[1][0].startswith("--")],
                         ids=[a[1][0] + " " + a[0][0] for a in ALIASES if a[1][0].startswith("--")])
def test_help_shows_the_new_spelling_only(base, old, new, dest, value):
    text = _commands()[base[0]].format_help()
    assert re.search(rf"(?<![\w-]){re.escape(new[0])}(?![\w-])", text)
    assert not re.search(rf"(?<![\w-]){re.escape(old[0])}(?![\w-])", text)


def test_a_deprecated_switch_takes_a_legacy_value_like_the_new_one(capsys):
    assert main(["backbones", "--names=true", "--family", "squeezenet"]) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == ["squeezenet1.0", "squeezenet1.1"] and "deprecated" in captured.err


def test_a_positional_output_and_out_together_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["pack", "src", "p", "--out", "q"])
    assert exc.value.code == 2
    assert "given twice" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["pack", "src"])
    assert exc.value.code == 2 and "required: --out" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["train", "b", "--train", "t.rec", "--out", "o", "--num-classes", "many"],
    ["train", "b", "--train", "t.rec", "--out", "o", "--input-size", "0"],
    ["predict", "m", "x.jpg", "--batch-size", "x"],
    ["extract", "m", "x.jpg", "--out", "f.npy", "--workers", "2"],  # extract has no --workers
    ["mean", "r.rec", "m.bin"],  # --size missing
])
def test_bad_options_are_one_line_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if "error:" in line] == [err.splitlines()[-1]]


def test_a_bad_ctx_is_a_one_line_error(capsys):
    assert main(["-q", "predict", "m", "x.jpg", "--ctx", "tpu:0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and "tpu" in err


# ------------------------------------------------------------- values reach the API parameter of the same name
def test_pooling_ctx_and_batch_size_reach_the_feature_extractor(monkeypatch):
    import finetune.features as features
    from finetune.cli._features import _build_extractor

    seen = {}
    monkeypatch.setattr(features, "FeatureExtractor", lambda *a, **kw: seen.update(kw, args=a))
    args = build_parser().parse_args(["extract", "m", "x.jpg", "--out", "f.npy", "--layer", "l1",
                                      "--pooling", "avg", "--pooling", "max", "--ctx", "cpu*2",
                                      "--batch-size", "4"])
    _build_extractor(args)
    pooling = seen["args"][2]
    assert list(pooling) == ["l1"]
    assert [type(p).__name__ for p in pooling["l1"]] == [type(features.get_pooling(n)).__name__ for n in ("avg", "max")]
    assert [str(c) for c in seen["ctx"]] == ["cpu(0)", "cpu(1)"] and seen["batch_size"] == 4


def test_batch_size_workers_and_ctx_reach_the_predictor(monkeypatch):
    import finetune.models as models
    import finetune.use as use
    from finetune.cli import _use

    seen = {}
    monkeypatch.setattr(models, "create_model", lambda spec, weights, ctx: "model")
    monkeypatch.setattr(use, "Predictor", lambda model, **kw: seen.update(kw, model=model))
    args = build_parser().parse_args(["evaluate", "m", "r.rec", "--batch-size", "8", "--workers", "2", "--ctx", "cpu"])
    _use._predictor(args)
    assert seen["batch_size"] == 8 and seen["workers"] == 2 and [str(c) for c in seen["ctx"]] == ["cpu(0)"]
    assert seen["tta"] is None  # the model's own choice
    args = build_parser().parse_args(["predict", "m", "x.jpg"])
    _use._predictor(args)
    assert seen["batch_size"] == 32 and seen["workers"] is None and seen["ctx"] is None
    for command in (["evaluate", "m", "r.rec", "--tta"], ["predict", "m", "x.jpg", "--tta"]):
        _use._predictor(build_parser().parse_args(command))
        assert seen["tta"] is True, command
        _use._predictor(build_parser().parse_args(command[:-1] + ["--no-tta"]))
        assert seen["tta"] is False, command


def test_num_classes_input_size_and_seed_reach_the_recipe_and_head(monkeypatch):
    import finetune.data as data
    from finetune.cli import _train
    from finetune.train import Recipe

    class Records:
        class_names = ["a", "b", "c"]

        def __init__(self, *a, **kw):
            pass

    built = {}

    class Spy(Recipe):
        def build_model(self, backbone, class_names, **head):
            built.update(backbone=backbone, class_names=class_names, **head)

    monkeypatch.setattr(_train, "_backbone", lambda args: "net")
    monkeypatch.setattr(data, "RecordDataset", Records)
    args = build_parser().parse_args(["train", "b", "--train", "t.rec", "--out", "o", "--num-classes", "5",
                                      "--input-size", "96", "--seed", "3", "--batch-size", "16"])
    recipe = _train.recipe_from_args(args)
    assert (recipe.input_size, recipe.seed, recipe.batch_size) == (96, 3, 16)
    with pytest.raises(ConfigError, match="--num-classes 5 disagrees with the 3 classes"):
        _train._recipe_model(args, Spy())  # named records: their names decide
    monkeypatch.setattr(Records, "class_names", None)  # --num-classes is for records without names
    _train._recipe_model(args, Spy())
    assert built["class_names"] == ["0", "1", "2", "3", "4"]
    monkeypatch.setattr(Records, "class_names", ["a", "b", "c"])
    args = build_parser().parse_args(["train", "b", "--train", "t.rec", "--out", "o"])
    _train._recipe_model(args, Spy())
    assert built["class_names"] == ["a", "b", "c"]


def test_no_flag_takes_an_unchecked_number():
    """Every numeric flag is parsed by a checking type (``number`` / ``count``): a bare ``int`` or ``float`` lets
    negatives, NaN and infinities through to the code behind the flag."""
    from finetune.cli import build_parser

    parser = build_parser()
    bare = []
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            if action.type in (int, float):
                bare.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert bare == []


@pytest.mark.parametrize("command", ["pack", "split"])
@pytest.mark.parametrize("out", ["data/", ".", "", "data/.."])
def test_a_prefix_output_needs_a_name_after_its_folder(command, out, tmp_path, capsys, monkeypatch):
    """``--out data/`` would write ``data/.rec`` (a hidden file); refused as a usage error before any work."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos" / "cat").mkdir(parents=True)
    with pytest.raises(SystemExit) as info:
        main([command, "photos", "--out", out])
    assert info.value.code == 2 and "needs a name after the folder" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["photos"]


@pytest.mark.parametrize("given,first", [(["--epochs", "1", "--set", "epochs=3"], "--epochs"),
                                         (["--set", "lr=0.1", "--set", "lr=0.2"], "--set lr=0.1"),
                                         (["--input-size", "32", "--set", "input_size=64"], "--input-size")])
def test_a_recipe_field_set_twice_is_refused_naming_both(given, first):
    """``--epochs 1 --set epochs=3`` trained 3 epochs without a word: one of the two was a mistake."""
    from finetune.cli._train import recipe_from_args

    args = build_parser().parse_args(["train", "b", "--train", "t.rec", "--out", "o", *given])
    with pytest.raises(ConfigError, match=f"{re.escape(first)} and --set .* both set"):
        recipe_from_args(args)

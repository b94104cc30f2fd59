"""Validation at the boundary: typed constraints, every numeric constructor argument, flags, files, devices, labels."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import re
from numbers import Integral, Real

import mxnet as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from finetune._context import max_cpu_devices, parse_ctx, resolve_ctx
from finetune._parallel import default_workers, resolve_workers
from finetune._validation import Interval, Options, Sequence, satisfies, validate
from finetune.cli import main
from finetune.data import Augment, Preprocess
from finetune.data._preprocess import CONSTRAINTS as PREPROCESS_CONSTRAINTS
from finetune.errors import ConfigError, DataError, DeviceError, FinetuneError, ModelError, check_choice, check_range
from finetune.models import HeadReplacer
from finetune.models._headblock import HEAD_SPEC_CONSTRAINTS, check_head_spec
from finetune.train import (CosineSchedule, LayerLRPolicy, PlateauSchedule, Recipe, Rule, StepSchedule,
                            Trainer)
from finetune.train._batches import check_labels
from finetune.train._config import TRAIN_CONFIG_CONSTRAINTS, TrainConfig
from finetune.train._optim import PARAM_CONSTRAINTS, make_optimizer_params
from finetune.train._recipe import RECIPE_CONSTRAINTS
from finetune.train._rules import _RULE_CONSTRAINTS

NEVER_FINITE = [float("nan"), float("inf"), float("-inf"), 1e400, -1e400, np.float32("nan"), np.float64("inf")]
NOT_NUMBERS = [True, False, np.bool_(True), "1", "abc", None, b"1", [1], (1,), {"a": 1}, object()]


# ------------------------------------------------------------- the constraints themselves
INTERVALS = st.builds(
    lambda kind, lo, width, closed: Interval(kind, lo, None if width is None else lo + width, closed=closed)
    if lo is not None else Interval(kind, None, width, closed=closed),
    st.sampled_from([Integral, Real]), st.one_of(st.none(), st.integers(-5, 5)),
    st.one_of(st.none(), st.integers(0, 10)), st.sampled_from(["both", "left", "right", "neither"]))


@settings(max_examples=200, deadline=None)
@given(INTERVALS, st.sampled_from(NEVER_FINITE + NOT_NUMBERS))
def test_a_finite_interval_never_takes_nan_infinities_bools_text_or_none(interval, value):
    assert not interval.is_satisfied_by(value)
    with pytest.raises(ConfigError, match=r"^The 'x' parameter of Owner must be .*Got .* instead\.$"):
        validate("Owner", {"x": value}, {"x": interval})


@settings(max_examples=300, deadline=None)
@given(INTERVALS, st.one_of(st.integers(-20, 20), st.floats(-20, 20, allow_nan=False)))
def test_an_interval_takes_exactly_its_numbers(interval, value):
    expected = (interval.kind is Real or isinstance(value, int))
    if interval.left is not None:
        expected &= value > interval.left or (value == interval.left and interval.closed in ("both", "left"))
    if interval.right is not None:
        expected &= value < interval.right or (value == interval.right and interval.closed in ("both", "right"))
    assert interval.is_satisfied_by(value) == expected


@given(st.integers(min_value=2 ** 63))
def test_integers_that_overflow_64_bits_are_refused(value):
    assert not Interval(Integral, 0, None).is_satisfied_by(value)
    assert not Interval(Real, 0, None).is_satisfied_by(10 ** 400 + value)


def test_inf_only_when_asked_for():
    assert Interval(Real, 0, None, allow_inf=True).is_satisfied_by(float("inf"))
    assert not Interval(Real, 0, None, allow_inf=True).is_satisfied_by(float("nan"))


@given(st.sampled_from(NEVER_FINITE + NOT_NUMBERS[:-1]))
def test_check_range_and_check_choice_refuse_nan_and_type_lookalikes(value):
    with pytest.raises(ConfigError, match="Got"):
        check_range("Owner", "x", value, 0, 1)
    with pytest.raises(ConfigError, match="Got"):
        check_range("Owner", "x", value)  # unbounded: still a finite number
    if not isinstance(value, (bool, np.bool_)):
        with pytest.raises(ConfigError):
            check_choice("Owner", "x", value, (0, 1, "a", float("nan")))


def test_options_compare_types_too():
    assert not Options(["auto", True, False]).is_satisfied_by(1)
    assert not Options(["auto", True, False]).is_satisfied_by(0)
    assert not Options([1, 2]).is_satisfied_by(True)
    assert not Options(["1"]).is_satisfied_by(1)
    assert not Options([float("nan")]).is_satisfied_by(float("nan"))
    assert Options([None, "a"]).is_satisfied_by(None)


@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3), st.none()),
                max_size=4))
def test_sequences_of_n_numbers(items):
    c = Sequence(Interval(Real, 0, 1), lengths=(2,))
    expected = len(items) == 2 and all(isinstance(v, float) and 0 <= v <= 1 for v in items)
    assert c.is_satisfied_by(items) == expected
    assert c.is_satisfied_by(tuple(items)) == expected


# ------------------------------------------------------------- every numeric constructor argument
BAD_NUMBERS = [float("nan"), 1e400, "abc", -1]


def _is_numeric(default) -> bool:
    if isinstance(default, (bool, np.bool_)):
        return False
    if isinstance(default, (int, float)):
        return True
    return isinstance(default, tuple) and bool(default) and all(isinstance(v, (int, float)) for v in default)


def _bad_values(default, constraint):
    """NaN, 1e400 and "abc" (never valid), and -1 where the constraint refuses it; inside a tuple for tuples."""
    out = []
    for bad in BAD_NUMBERS:
        value = (bad,) + tuple(default[1:]) if isinstance(default, tuple) else bad
        if constraint is None or not satisfies(value, constraint):
            out.append(value)
    return out


def _tiny_net():
    from mxnet.gluon import nn

    net = nn.HybridSequential(prefix="")
    net.add(nn.Dense(3, in_units=4, prefix="head_"))
    net.initialize()
    return net


def _cases():
    """(owner, call(name, value), {name: default}, constraints or None) for every public numeric constructor."""
    def params(fn, skip=()):
        return {n: p.default for n, p in inspect.signature(fn).parameters.items()
                if n not in skip and p.default is not inspect.Parameter.empty}

    trainer = {f.name: f.default for f in dataclasses.fields(TrainConfig)}  # Trainer(**settings) makes one
    yield "Trainer", lambda n, v: Trainer(_tiny_net(), **{n: v}), trainer, Trainer._parameter_constraints
    yield "TrainConfig", lambda n, v: TrainConfig(**{n: v}), trainer, TRAIN_CONFIG_CONSTRAINTS
    yield ("Trainer optimizer_params", lambda n, v: Trainer(_tiny_net(), optimizer_params={n: v}),
           {n: 0.5 for n in PARAM_CONSTRAINTS}, PARAM_CONSTRAINTS)
    recipe = {f.name: f.default for f in dataclasses.fields(Recipe)}
    yield "Recipe", lambda n, v: Recipe(**{n: v}), recipe, RECIPE_CONSTRAINTS
    yield "LayerLRPolicy", lambda n, v: LayerLRPolicy(**{n: v}), params(LayerLRPolicy.__init__), \
        LayerLRPolicy._parameter_constraints
    for maker in ("pretrained", "boosted_head", "discriminative"):
        fn = getattr(LayerLRPolicy, maker)
        call = (lambda fn: lambda n, v: fn(["a*"], **{n: v}) if fn.__name__ == "discriminative" else fn(**{n: v}))(fn)
        yield f"LayerLRPolicy.{maker}", call, params(fn), LayerLRPolicy._parameter_constraints
    yield "Rule", lambda n, v: Rule("x", **{n: v}), params(Rule), _RULE_CONSTRAINTS
    for cls in (StepSchedule, CosineSchedule, PlateauSchedule):
        yield cls.__name__, (lambda cls: lambda n, v: cls(**{n: v}))(cls), params(cls.__init__), \
            cls._parameter_constraints
    yield "HeadReplacer", lambda n, v: HeadReplacer(**{"num_classes": 3, n: v}), \
        {"num_classes": 3, **params(HeadReplacer.__init__)}, HeadReplacer._parameter_constraints
    yield "Preprocess", lambda n, v: Preprocess(**{n: v}), \
        {f.name: f.default for f in dataclasses.fields(Preprocess)}, PREPROCESS_CONSTRAINTS
    yield "Augment", lambda n, v: Augment(**{n: v}), {f.name: f.default for f in dataclasses.fields(Augment)}, None


CASES = [(owner, call, name, value)
         for owner, call, defaults, constraints in _cases()
         for name, default in defaults.items() if _is_numeric(default)
         for value in _bad_values(default, None if constraints is None else constraints[name])]


@pytest.mark.parametrize("owner, call, name, value", CASES,
                         ids=[f"{o}-{n}-{v!r}" for o, _, n, v in CASES])
def test_every_numeric_argument_refuses_bad_values(owner, call, name, value):
    with pytest.raises(ConfigError, match=re.escape(repr(name))):
        call(name, value)


@pytest.mark.parametrize("owner, defaults, constraints",
                         [(o, d, c) for o, _, d, c in _cases() if c is not None], ids=lambda x: str(x)[:30])
def test_every_numeric_argument_has_a_constraint(owner, defaults, constraints):
    missing = [n for n, d in defaults.items() if _is_numeric(d) and n not in constraints]
    assert not missing, f"{owner}: no constraint for {missing}"


def test_the_defaults_meet_the_constraints():
    for owner, _, defaults, constraints in _cases():
        for name, default in defaults.items():
            if constraints is not None and name in constraints:
                assert satisfies(default, constraints[name]), (owner, name, default)


def test_messages_name_owner_parameter_value_and_range():
    with pytest.raises(ConfigError, match=r"^The 'learning_rate' parameter of Trainer must be .*Got nan instead\.$"):
        Trainer(_tiny_net(), optimizer_params={"lr": float("nan")})
    with pytest.raises(ConfigError, match=r"The 'ema' parameter of Trainer must be in \(0, 1\) or None\. Got 1\.5"):
        Trainer(_tiny_net(), ema=1.5)
    with pytest.raises(ConfigError, match="must be a finite float"):
        make_optimizer_params("sgd", {"momentum": float("inf")})
    with pytest.raises(ConfigError, match="'clip_gradient'"):
        make_optimizer_params("sgd", {"clip_gradient": float("nan")})
    assert make_optimizer_params("sgd", {"multi_precision": True})["multi_precision"] is True


# ------------------------------------------------------------- config.json of a model directory
PREPROCESS_BAD = {"size": ["abc", [224], [0, 224], [224, 30000], [224.5, 224], None],
                  "resize": ["abc", 30000, -1, 0, 2.5, float("nan")],
                  "color": ["rgb", 3, None], "mean": [3, "abc", [1, float("nan"), 3], []],
                  "std": [[0, 1, 1], [-1, 1, 1], 3, [float("inf")] * 3], "scale": [0, -1, "x", float("nan"), None],
                  "resize_mode": ["crop", 1], "interpolation": ["nearest", None], "has_mean_image": ["yes", 1]}


@pytest.mark.parametrize("key, value", [(k, v) for k, vs in PREPROCESS_BAD.items() for v in vs])
def test_a_preprocess_section_names_the_file_and_the_key(key, value):
    d = dict(Preprocess().to_dict(), **{key: value})
    with pytest.raises(ModelError, match=f"config.json of 'm' has 'preprocess.{key}' = .*; expected"):
        Preprocess.check_dict(d, "config.json of 'm'", ModelError)
    with pytest.raises(ConfigError, match=key):
        Preprocess.from_dict(d)


def test_every_preprocess_field_is_constrained_and_round_trips():
    assert {f.name for f in dataclasses.fields(Preprocess)} == set(PREPROCESS_CONSTRAINTS)
    pre = Preprocess(size=(32, 48), resize=40, color="BGR", mean=(1, 2, 3), std=(4, 5, 6), scale=2.0)
    assert Preprocess.from_dict(pre.to_dict()) == pre
    with pytest.raises(ModelError, match="unknown key 'preprocess.sise'"):
        Preprocess.check_dict({"sise": 3}, "config.json of 'm'", ModelError)


@pytest.mark.parametrize("key", sorted(HEAD_SPEC_CONSTRAINTS))
@pytest.mark.parametrize("value", [float("nan"), "abc", -1, None])
def test_a_head_spec_names_the_file_and_the_key(key, value):
    spec = {"num_classes": 3, "in_features": 8, "hidden": [4], "dropout": 0.5, "pool": "flatten", "activation": "relu"}
    check_head_spec(spec, "config.json of 'm'")
    spec[key] = value
    with pytest.raises(ModelError, match=f"config.json of 'm' has 'head.{key}'"):
        check_head_spec(spec, "config.json of 'm'")


def test_a_model_directory_with_a_bad_config_is_refused_naming_the_key(tmp_path):
    import json

    from finetune.models._io._modeldir import read_config

    path = tmp_path / "m"
    path.mkdir()
    good = {"format": "finetune-model", "format_version": 1, "class": "Backbone", "preprocess": Preprocess().to_dict(),
            "graph": {}}
    (path / "config.json").write_text(json.dumps(good))
    assert read_config(path)["class"] == "Backbone"
    for change, where in [({"preprocess": dict(good["preprocess"], resize=30000)}, "preprocess.resize"),
                          ({"preprocess": dict(good["preprocess"], size="abc")}, "preprocess.size"),
                          ({"preprocess": None}, "'preprocess'"), ({"class_names": [1, 2]}, "'class_names'"),
                          ({"class": "Model", "head": {"num_classes": 0, "in_features": 3}}, "head.num_classes"),
                          # hand edits that ended in KeyError / TypeError tracebacks, or silently other inputs
                          ({"graph": {"layer_names": 7}}, "graph.layer_names"),
                          ({"graph": {"classifier": ["fc"]}}, "graph.classifier"),
                          ({"class_names": ["cat", ""]}, "empty class name"),
                          ({"preprocess": {}}, "no 'preprocess.size'"),
                          ({"preprocess": {k: v for k, v in good["preprocess"].items() if k != "std"}},
                           "no 'preprocess.std'"),
                          ({"format_version": 99}, "format 99, newer than the format")]:
        (path / "config.json").write_text(json.dumps(dict(good, **change)))
        with pytest.raises(ModelError, match=re.escape(where)):
            read_config(path)
    (path / "config.json").write_text(json.dumps({k: v for k, v in good.items() if k != "preprocess"}))
    with pytest.raises(ModelError, match="no 'preprocess'"):
        read_config(path)


# ------------------------------------------------------------- devices and workers
@pytest.mark.parametrize("spec, error", [
    ("cpu:-1", ConfigError), ("cpu*100000", DeviceError), ("cpu:100000", DeviceError), ("cpu*0", ConfigError),
    ("cpu*-2", ConfigError), ("cpu:0,-3", ConfigError), ("gpu:100", DeviceError), ("cpu*abc", ConfigError),
])
def test_bad_device_specs_are_refused_at_once(spec, error):
    with pytest.raises(error):
        resolve_ctx(spec)


def test_device_limits():
    limit = max_cpu_devices()
    assert len(parse_ctx(f"cpu*{limit}")) == limit
    with pytest.raises(DeviceError):
        parse_ctx(f"cpu*{limit + 1}")
    with pytest.raises(ConfigError, match="negative"):
        resolve_ctx(mx.cpu(-1))


@given(st.integers(0, 10 ** 6))
def test_resolve_workers_caps_at_the_cores(n):
    assert resolve_workers(n) == min(n, default_workers())


@pytest.mark.parametrize("n", [-1, 2.5, "4", float("nan"), True])
def test_resolve_workers_refuses_what_is_not_a_count(n):
    with pytest.raises(ConfigError, match="'workers'"):
        resolve_workers(n)


def test_resolve_workers_warns_once_when_it_caps(caplog):
    with caplog.at_level(logging.WARNING, logger="finetune._parallel"):
        assert resolve_workers(100000, "--workers") == default_workers()
    assert [r.levelname for r in caplog.records] == ["WARNING"] and "--workers=100000" in caplog.text


# ------------------------------------------------------------- labels
@pytest.mark.parametrize("bad", [float("nan"), -1, 1.5, float("inf"), 3])
def test_bad_labels_are_refused_before_training_naming_the_item(bad):
    x = np.random.rand(12, 4).astype("float32")
    y = np.arange(12) % 3
    y = y.astype(np.float64)
    y[7] = bad
    net = _tiny_net()
    net.num_classes = 3
    before = net.collect_params()["head_weight"].data().asnumpy().copy()
    with pytest.raises(DataError, match=r"item 7"):
        Trainer(net, batch_size=4, progress=False, hybridize=False).fit((x, y), epochs=1)
    assert np.array_equal(net.collect_params()["head_weight"].data().asnumpy(), before)


def test_labels_are_checked_only_for_class_index_losses():
    from mxnet import gluon

    from finetune.train._losses import LabelSmoothingLoss
    from finetune.train._trainer_setup import _class_index_loss

    assert _class_index_loss(gluon.loss.SoftmaxCrossEntropyLoss()) and _class_index_loss(LabelSmoothingLoss(0.1))
    assert not _class_index_loss(gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=False))
    assert not _class_index_loss(gluon.loss.L2Loss())
    check_labels(np.zeros((4, 3)) + 0.5, 3)  # soft labels: not class indices
    with pytest.raises(DataError, match="item 2"):
        check_labels([0, 1, 5], 3)


def test_records_labels_are_checked_and_classes_without_training_images_are_named(tmp_path, caplog):
    """A ``_classes.txt`` with more names than the records' labels made a wider head without a word, and the
    labels of records were never checked against the model's class count."""
    import cv2

    from finetune import ImageList, RecordDataset, pack
    from finetune.train._batches import check_dataset_labels

    for k in range(2):
        (tmp_path / f"c{k}").mkdir()
        cv2.imwrite(str(tmp_path / f"c{k}" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    pack(ImageList.from_folder(tmp_path), tmp_path / "r", workers=0)
    records = RecordDataset(tmp_path / "r")
    check_dataset_labels(records, 2)
    assert "no image" not in caplog.text
    with pytest.raises(DataError, match="not class indices"):
        check_dataset_labels(records, 1)
    check_dataset_labels(records, 5)
    check_dataset_labels(records, 5)
    assert caplog.text.count("3 of the 5 classes have no image in the training data (class 2, 3, 4)") == 1


# ------------------------------------------------------------- Caffe layer parameters
CAFFE_BAD = [("kernel_size: 3 stride: 2", "kernel_size: 3 stride: 0", "pool1"),
             ("kernel_size: 3 stride: 2", "kernel_size: 0 stride: 2", "pool1"),
             ("kernel_size: 3 stride: 2", "kernel_size: 3 stride: -2", "pool1"),
             ("num_output: 8 kernel_size: 3 pad: 1", "num_output: 8 kernel_size: 3 pad: -1", "conv1"),
             ("num_output: 8 kernel_size: 3 pad: 1", "num_output: 8 kernel_size: 0 pad: 1", "conv1"),
             ("num_output: 8 kernel_size: 3 pad: 1", "num_output: 0 kernel_size: 3 pad: 1", "conv1"),
             ("num_output: 8 kernel_size: 3 pad: 1", "num_output: nan kernel_size: 3 pad: 1", "conv1"),
             ("num_output: 8 kernel_size: 3 pad: 1", "num_output: 8 kernel_size: inf pad: 1", "conv1"),
             ("kernel_size: 3 pad: 1 group: 2", "kernel_size: 3 pad: 1 group: 0", "conv2b"),
             ("inner_product_param { num_output: 10 }", "inner_product_param { num_output: -10 }", "fc1"),
             ("local_size: 5", "local_size: 0", "norm1"),
             ("dropout_ratio: 0.5", "dropout_ratio: 1.5", "drop1")]


@pytest.mark.parametrize("old, new, layer", CAFFE_BAD)
def test_caffe_layer_parameters_out_of_range_name_the_layer(tmp_path, old, new, layer):
    from finetune.errors import CaffeFormatError
    from finetune.models.caffe import convert_caffe

    from .models.test_caffe_convert import V1_BLOBS, V1_PROTOTXT, V1_TYPES, _write

    assert old in V1_PROTOTXT
    proto, model = _write(tmp_path, V1_PROTOTXT.replace(old, new, 1), V1_BLOBS, V1_TYPES, v1=True)
    with pytest.raises(CaffeFormatError, match=f"'{layer}'"):
        convert_caffe(proto, model)


# ------------------------------------------------------------- the command line
def _run(argv):
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's usage errors
        return exc.code


TRAIN = ["train", "resnet18_v1", "--weights", "none", "--train", "missing.rec", "--out", "out"]
CLI_BAD = [["--set", "lr=nan"], ["--set", "dropout=nan"], ["--set", "epochs=1e400"], ["--set", "crop_scale=0.5,abc"],
           ["--set", "ema=2"], ["--set", "batch_size=0"], ["--set", "momentum=-1"], ["--set", "nosuch=1"],
           ["--lr", "nan"], ["--lr", "-1"], ["--epochs", "1e400"], ["--workers", "-1"], ["--batch-size", "0"],
           ["--momentum", "2"], ["--dropout", "nan"], ["--hidden", "0"], ["--num-classes", "0"], ["--seed", "abc"],
           ["--head-epochs", "inf"], ["--checkpoint-every", "-1"], ["--ctx", "cpu:-1"], ["--ctx", "cpu*100000"],
           ["--ctx", "gpu:99"], ["--ctx", "tpu:0"],
           ["--recipe", "manual", "--factor", "0"], ["--recipe", "manual", "--warmup-epochs", "nan"],
           ["--recipe", "manual", "--stop-after", "0"], ["--recipe", "manual", "--step-epochs", "0"]]


@pytest.mark.parametrize("extra", CLI_BAD, ids=" ".join)
def test_a_bad_flag_is_one_line_naming_it(capsys, extra):
    assert _run(["-q", *TRAIN, *extra]) in (1, 2)
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err
    assert last.startswith("finetune train: error:")
    flag = extra[-2] if extra[-2].startswith("--") else extra[0]
    assert flag in last or extra[-1].split("=")[0] in last, last


def test_a_model_directory_refuses_head_options(tmp_path, capsys):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    for extra in (["--num-classes", "5"], ["--hidden", "8"], ["--dropout", "0.3"], ["--cut-at", "x"]):
        assert _run(["-q", "train", str(model_dir), "--train", "missing.rec", "--out", str(tmp_path / "o"),
                     *extra]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and extra[0] in err and "model directory" in err


def test_flag_types_report_nan_inf_and_text():
    from finetune.cli._options import count, number

    for text in ("nan", "inf", "-inf", "1e400", "abc", ""):
        with pytest.raises(Exception, match="must be"):
            number(Real, 0, None)(text)
    assert count(1)("3") == 3
    assert math.isclose(number(Real, 0, 1)("0.5"), 0.5)
    with pytest.raises(Exception, match="must be an int"):
        count(0)("2.5")


def test_finetune_errors_are_config_errors_for_callers():
    assert issubclass(ConfigError, (FinetuneError, ValueError))

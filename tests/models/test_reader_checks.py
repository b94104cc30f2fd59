"""Model readers check the manifests their writers leave, and the API checks its arguments."""

import pickle
import shutil

import pytest

import finetune as ft
from finetune.errors import ConfigError, MixedOutputError, ModelError
from finetune.testing import tiny_block


@pytest.fixture
def two_models(tmp_path):
    a = ft.create_model(tiny_block(0)).save(tmp_path / "a")
    b = ft.create_model(tiny_block(1)).save(tmp_path / "b")
    return tmp_path, a, b


def test_every_marked_part_of_a_model_directory_is_checked(two_models):
    tmp, a, b = two_models
    parts = [p.name for p in (tmp / "a").iterdir() if not p.name.startswith(".") and p.name != "config.json"]
    assert "weights.params" in parts
    for part in parts:
        if (tmp / "a" / part).read_bytes() == (tmp / "b" / part).read_bytes():
            continue  # the same graph: nothing is mixed
        mixed = shutil.copytree(a, tmp / f"mixed_{part}")
        shutil.copy(tmp / "b" / part, mixed / part)
        with pytest.raises(MixedOutputError, match=part):
            ft.load_model(mixed)


def test_a_model_directory_without_a_marker_still_loads(two_models):
    tmp, a, b = two_models
    plain = shutil.copytree(a, tmp / "plain")
    (plain / ".finetune").unlink()
    shutil.copy(tmp / "b" / "weights.params", plain / "weights.params")
    assert ft.load_model(plain).class_names == ft.load_model(a).class_names


def test_an_mxnet_export_with_a_swapped_params_file_is_refused(tmp_path):
    one = ft.export_for_deployment(ft.create_model(tiny_block(0)), tmp_path / "one")
    two = ft.export_for_deployment(ft.create_model(tiny_block(1)), tmp_path / "two")
    params = [p.name for p in (tmp_path / "one").glob("*-0000.params")]
    assert params, "the deployment folder has MXNet files"
    mixed = shutil.copytree(one.directory, tmp_path / "mixed")
    shutil.copy(tmp_path / "two" / params[0], mixed / params[0])
    with pytest.raises(MixedOutputError, match=params[0]):
        ft.create_model(str(mixed))  # the deployment folder
    with pytest.raises(MixedOutputError, match=params[0]):
        ft.create_model(str(mixed / params[0].replace("-0000.params", "")))  # the MXNet prefix
    assert two.directory


@pytest.mark.parametrize("path", [None, 3, 2.5, ["x"]])
def test_save_and_load_name_the_path_parameter(path, tmp_path):
    with pytest.raises(ConfigError, match="'path' parameter of save"):
        ft.create_model(tiny_block()).save(path)
    with pytest.raises(ConfigError, match="'path' parameter of load_model"):
        ft.load_model(path)


def test_bytes_paths_are_accepted(tmp_path):
    folder = ft.create_model(tiny_block()).save(bytes(tmp_path / "b"))
    assert ft.load_model(bytes(tmp_path / "b")).class_names == ft.load_model(folder).class_names


def test_a_file_is_not_a_model_directory(tmp_path):
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x")
    with pytest.raises(ModelError, match="training checkpoint, not a model directory; load the run folder"):
        ft.load_model(ckpt)
    with pytest.raises(ModelError, match="is a file, not a model directory"):
        ft.load_model(ckpt.with_suffix(".txt") if ckpt.with_suffix(".txt").write_text("x") else None)


def test_create_model_names_itself_for_unknown_options():
    with pytest.raises(ConfigError, match="create_model got unexpected keyword argument.*'foo'.*num_classes"):
        ft.create_model("mobilenet0.25", weights=None, foo=1)


@pytest.mark.parametrize("weights", ["none", "None"])
def test_weights_none_as_text_means_random_weights(weights):
    assert isinstance(ft.create_model("mobilenet0.25", weights=weights), ft.Backbone)


def test_class_names_must_be_a_list_of_distinct_names():
    bb = ft.create_model("mobilenet0.25", weights=None)
    with pytest.raises(ConfigError, match="must be a list of names"):
        ft.HeadReplacer(3).apply(bb, "abc")
    with pytest.raises(ConfigError, match="names the class 'a' twice"):
        ft.HeadReplacer(3).apply(bb, ["a", "a", "b"])


def test_a_predictor_says_what_to_pickle_instead():
    model = ft.create_model(tiny_block())
    with pytest.raises(ConfigError, match="Pickle its model"):
        pickle.dumps(ft.Predictor(model))

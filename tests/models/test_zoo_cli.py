"""``finetune backbones`` and ``finetune inspect``."""

import finetune as ft
from finetune.cli import main
from finetune.models._zoo import describe


def test_backbones_lists_sizes_and_feature_counts(capsys):
    assert main(["backbones", "--family", "squeezenet"]) == 0
    out = capsys.readouterr().out
    assert "squeezenet1.1" in out and "224x224" in out and " 512 " in out
    assert main(["backbones", "--names-only"]) == 0
    assert capsys.readouterr().out.split() == ft.list_backbones()


def test_describe_matches_the_built_backbone():
    facts = describe("mobilenetv2_0.25")
    bb = ft.Backbone.from_zoo("mobilenetv2_0.25", weights=None)
    assert facts["num_features"] == bb.num_features
    assert facts["num_parameters"] == bb.num_parameters
    assert (facts["classifier"], facts["feature_layer"]) == (bb.classifier, bb.feature_layer)
    assert facts["num_layers"] == len(bb.layer_names)


def test_inspect_a_model_directory_and_a_zoo_name(tmp_path, capsys):
    bb = ft.Backbone.from_zoo("mobilenet0.25", weights=None)
    path = ft.HeadReplacer(2).apply(bb, class_names=["cat", "dog"]).save(tmp_path / "m")
    assert main(["inspect", path]) == 0
    out = capsys.readouterr().out
    assert "Model" in out and "cat, dog" in out and "head_classifier_fwd" in out and "256x7x7" in out
    assert main(["inspect", "squeezenet1.1", "--no-layers", "--weights", "none"]) == 0
    assert "conv25_fwd" in capsys.readouterr().out
    assert main(["inspect", "resnt18_v1"]) == 1
    assert "Did you mean 'resnet18_v1'" in capsys.readouterr().err

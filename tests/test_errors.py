import pytest

from finetune import errors


def test_every_error_is_a_finetune_error_and_a_builtin():
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.UnknownNameError, KeyError)
    assert issubclass(errors.MissingFileError, FileNotFoundError)
    assert issubclass(errors.NonFiniteLossError, RuntimeError)
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.FinetuneError)


def test_unknown_name_suggests_close_matches():
    exc = errors.UnknownNameError("backbone", "resnet50_v", ["resnet50_v1", "resnet50_v2", "vgg16"])
    assert "Did you mean" in str(exc) and "'resnet50_v1'" in str(exc).split("Known")[0]
    assert "vgg16" in str(exc)


def test_check_range_message_names_owner_param_and_value():
    with pytest.raises(errors.ConfigError, match=r"'decay' parameter of LayerLRPolicy must be in \(0, 1\]. Got 1.5"):
        errors.check_range("LayerLRPolicy", "decay", 1.5, 0, 1, low_open=True)
    errors.check_range("LayerLRPolicy", "decay", 1.0, 0, 1, low_open=True)


def test_check_choice():
    with pytest.raises(errors.ConfigError, match="must be one of 'a', 'b'. Got 'c'"):
        errors.check_choice("f", "x", "c", ["a", "b"])


def test_unknown_name_says_how_many_names_it_left_out():
    exc = errors.UnknownNameError("layer", "zzz", [f"layer{i:02d}" for i in range(45)])
    assert "(5 more)" in str(exc) and "layer39" in str(exc) and "layer40" not in str(exc)

"""The Examples sections of finetune.features run and give what they show."""

import doctest
import importlib
import warnings

import pytest

MODULES = ["_ann", "_descriptors", "_evaluation", "_exact", "_extractor", "_geometry", "_gt_match", "_index",
           "_index_io", "_mop", "_oxford", "_pooling", "_postprocess"]


@pytest.mark.parametrize("name", MODULES)
def test_module_examples(name):
    module = importlib.import_module(f"finetune.features.{name}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} example(s) failed in {module.__name__}"


def test_public_all_is_sorted_and_complete():
    import finetune.features as features

    assert features.__all__ == sorted(set(features.__all__))
    for name in features.__all__:
        assert getattr(features, name).__doc__

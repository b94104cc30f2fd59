"""finetune.data's public surface: sorted __all__, every name documented, top-level exports."""

import finetune
import finetune.data as data


def test_data_all_is_sorted_and_documented():
    assert data.__all__ == sorted(set(data.__all__))
    for name in data.__all__:
        obj = getattr(data, name)
        if not isinstance(obj, (str, tuple)):
            assert (obj.__doc__ or "").strip(), name


def test_main_objects_are_exported_from_finetune():
    for name in ("Augment", "ImageList", "MeanImage", "RecordDataset", "balance", "check", "pack"):
        assert getattr(finetune, name) is getattr(data, name)


def test_reprs():
    assert repr(data.ImageList([(0, "a.jpg", 0)], class_names=["x"])) == \
        "ImageList(1 images, 1 classes, root=None)"
    assert repr(data.Augment()) == "Augment()"
    assert repr(data.CheckReport(data.ImageList(), [], [])) == "CheckReport(good=0, bad=0, converted=0)"


def test_docstring_examples_run():
    import doctest
    import importlib

    for name in ("_imagelist", "_check", "_pack", "_record", "_record_loader", "_augment", "_mean", "_balance",
                 "_image", "_image_checks", "_folder", "_source"):
        module = importlib.import_module(f"finetune.data.{name}")
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, name

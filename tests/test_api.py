"""The public surface: one sorted ``__all__``, every name importable and documented."""

import subprocess
import sys

import finetune


def test_all_is_sorted_and_unique():
    assert finetune.__all__ == sorted(set(finetune.__all__))


def test_every_public_name_resolves_and_has_a_docstring():
    for name in finetune.__all__:
        obj = getattr(finetune, name)
        if name != "__version__":
            assert (obj.__doc__ or "").strip(), f"finetune.{name} has no docstring"


def test_unknown_attribute_raises_attribute_error():
    try:
        finetune.no_such_thing
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_import_finetune_does_not_import_mxnet():
    code = "import sys, finetune; print('mxnet' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_public_names_are_not_modules_except_errors():
    import importlib
    import types

    modules = [n for n in finetune.__all__ if isinstance(getattr(finetune, n), types.ModuleType)]
    assert modules == ["errors"]
    importlib.import_module("finetune.use._evaluation")  # importing the module must not shadow the function
    assert callable(finetune.evaluate) and not isinstance(finetune.evaluate, types.ModuleType)


def test_old_module_paths_still_work_and_warn():
    import importlib

    import pytest

    from finetune import use

    for old, name in [("predict", "load_name_map"), ("predict", "Predictor"), ("evaluation", "evaluate"),
                      ("deploy", "verify_deployment"), ("interpret", "GradCAM"), ("plots", "load_history")]:
        module = importlib.import_module(f"finetune.{old}")
        with pytest.warns(DeprecationWarning, match=f"goes in finetune 0.3.0; use finetune.use.{name}"):
            assert getattr(module, name) is getattr(use, name)
    with pytest.raises(AttributeError):
        importlib.import_module("finetune.plots").no_such_name


def test_all_is_a_literal_list_equal_to_the_lazy_table():
    import ast
    from pathlib import Path

    tree = ast.parse(Path(finetune.__file__).read_text(encoding="utf-8"))
    literal = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                   and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["__all__"])
    names = ast.literal_eval(literal)  # readable without importing: a plain list of strings
    assert names == sorted(names) == finetune.__all__
    assert set(names) == {"__version__", *finetune._API}


def test_model_protocol_names_are_public():
    import finetune.testing

    assert callable(finetune.create_model) and isinstance(finetune.ModelProtocol, type)
    assert finetune.InferenceModel in finetune.ModelProtocol.__mro__
    assert finetune.testing.__all__ == ["TINY_CLASSES", "TinyBlock", "TinyNet", "check_model", "tiny_block"]


def test_the_api_reference_documents_public_paths_only():
    import re
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs"
    private = re.compile(r"^\.\. auto\w+:: (finetune(?:\.\w+)*\._\w+)", re.M)
    # finetune.train's helpers still await public names
    found = {m.group(1) for rst in docs.rglob("*.rst") for m in private.finditer(rst.read_text(encoding="utf-8"))}
    assert {f for f in found if not f.startswith("finetune.train._")} == set()


def test_stage_packages_have_sorted_documented_public_names():
    import importlib

    import pytest

    stages = ["finetune.data", "finetune.models", "finetune.models.graph", "finetune.models.zoo",
              "finetune.train", "finetune.use", "finetune.features", "finetune.testing"]
    for name in stages:
        module = importlib.import_module(name)
        assert module.__all__ == sorted(set(module.__all__)), name
        for public in module.__all__:
            obj = getattr(module, public)
            if callable(obj):
                assert (obj.__doc__ or "").strip(), f"{name}.{public} has no docstring"
    data, models = importlib.import_module("finetune.data"), importlib.import_module("finetune.models")
    # what more than one stage reads through: public, so no stage imports another's private module
    assert {"ImageItem", "ImageSource", "check_geometry", "read_class_names", "write_class_names"} <= set(data.__all__)
    assert {"Deployment", "calibration_batch", "convert_caffe", "export_for_deployment", "load_deployment",
            "missing_members", "require_model", "verify_deployment"} <= set(models.__all__)
    assert "Examples" in data.ImageSource.__doc__
    with pytest.raises(AttributeError):
        importlib.import_module("finetune.plots").save_figure  # plumbing, not a deprecated public name

"""Class names travel byte-exact through every file a model is written to (a name from ``os.listdir`` may hold
bytes that are not UTF-8, which Python keeps as lone surrogates)."""

import os

import pytest

import finetune as ft

NAMES = ["\udce9t\udce9", " lead", "lead ", "ünï"]


@pytest.fixture(scope="module")
def model():
    bb = ft.Backbone.from_zoo("mobilenet0.25", weights=None)
    return ft.HeadReplacer(len(NAMES)).apply(bb, class_names=list(NAMES))


def test_save_and_load(model, tmp_path):
    assert ft.load_model(model.save(tmp_path / "m")).class_names == NAMES


def test_mxnet_export(model, tmp_path):
    paths = model.export(os.fspath(tmp_path / "x" / "net"))
    assert ft.create_model(paths["symbol"][: -len("-symbol.json")]).class_names == NAMES


def test_deployment(model, tmp_path):
    dep = ft.export_for_deployment(model, tmp_path / "dep")
    assert ft.load_model(dep.directory).class_names == NAMES
    assert ft.load_deployment(dep.directory).class_names == NAMES

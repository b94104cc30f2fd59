"""The recipe beats the linear probe on real data (a small seeded Fashion-MNIST subset)."""

import pytest

import finetune as ft
from finetune.data import write_fashion_mnist_folder
from finetune.train import Recipe, linear_probe


@pytest.mark.slow
@pytest.mark.realdata
def test_recipe_beats_the_linear_probe_on_a_small_fashion_mnist_subset(tmp_path):
    train_list = write_fashion_mnist_folder(tmp_path / "train", 40, split="train", seed=0)
    test_list = write_fashion_mnist_folder(tmp_path / "test", 30, split="test", seed=0)
    train, val = train_list.split(ratios=(0.9, 0.1), seed=0)
    recs = {}
    for name, lst in (("train", train), ("val", val), ("test", test_list)):
        ft.pack(lst, tmp_path / name, encoding=".png", workers=1)
        recs[name] = str(tmp_path / f"{name}.rec")
    recipe = Recipe(input_size=64, head_epochs=20, epochs=10)
    model = recipe.build_model(ft.Backbone.from_zoo("efficientnet_lite0"), train_list.class_names)
    recipe.fit(model, recs["train"], recs["val"], progress=False)
    tuned = ft.evaluate(model, test_list, tta=True).top1
    fresh = recipe.build_model(ft.Backbone.from_zoo("efficientnet_lite0"), train_list.class_names)
    probe = linear_probe(fresh, recs["train"], recs["val"], recs["test"], size=64)["test_top1"]
    assert tuned > probe, (tuned, probe)

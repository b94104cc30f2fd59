"""GradCAM shared by several threads, and the argument checks of GradCAM, GradCAMResult.save and Predictor.predict."""

import threading

import numpy as np
import pytest

import finetune as ft
from finetune.errors import ConfigError

IMAGE = np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8)


def test_gradcam_from_several_threads_matches_one_thread():
    # a graph network (probe block, parameter gradients): without the lock, MXNet fails or the process dies
    model = ft.HeadReplacer(3).apply(ft.create_model("mobilenet0.25", weights=None), ["a", "b", "c"])
    model.preprocess = model.preprocess.replace(size=(32, 32), resize=32)
    cam = ft.GradCAM(model)
    expected = cam(IMAGE, color="RGB").heatmap
    results, errors = [], []

    def run():
        try:
            for _ in range(8):
                results.append(cam(IMAGE, color="RGB").heatmap)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 32
    for heat in results:
        np.testing.assert_allclose(heat, expected, atol=1e-4)


@pytest.mark.parametrize("target", [1.5, True, np.float32(1.0), "1", [1]])
def test_gradcam_target_must_be_a_whole_number_or_a_class_name(tiny_model, target):
    with pytest.raises(ConfigError, match="'target' parameter of GradCAM|class"):
        ft.GradCAM(tiny_model)(IMAGE, target, color="RGB")


def test_gradcam_target_accepts_numpy_ints_and_names(tiny_model):
    cam = ft.GradCAM(tiny_model)
    assert cam(IMAGE, np.int64(2), color="RGB").class_index == 2
    assert cam(IMAGE, "dog", color="RGB").class_name == "dog"


@pytest.mark.parametrize("alpha", [3, -0.1, float("nan"), True, "0.5"])
def test_gradcam_save_checks_alpha_like_the_command_line(tiny_model, alpha, tmp_path):
    result = ft.GradCAM(tiny_model)(IMAGE, color="RGB")
    with pytest.raises(ConfigError, match="'alpha' parameter"):
        result.save(tmp_path / "x.png", alpha=alpha)
    assert not (tmp_path / "x.png").exists()


def test_gradcam_save_to_a_folder_says_it_is_a_folder(tiny_model, tmp_path):
    result = ft.GradCAM(tiny_model)(IMAGE, color="RGB")
    with pytest.raises(ConfigError, match="is a folder; give a file name"):
        result.save(tmp_path)


@pytest.mark.parametrize("top_k", [1.5, True, 0, "2"])
def test_predict_top_k_must_be_a_positive_whole_number(tiny_model, top_k):
    with pytest.raises(ConfigError, match="'top_k' parameter of Predictor.predict"):
        ft.Predictor(tiny_model).predict(IMAGE[None], top_k=top_k, color="RGB")

"""Every consumer of a model, given an int8 (quantized) model, works or raises a typed error — never a traceback.

The quantized kind is the one model kind that meets only the inference level and whose weights cannot be traced
for gradients, layers or re-quantizing; each consumer here either runs it or says that it needs the float model.
"""

import numpy as np
import pytest

import finetune as ft
from finetune.cli import main
from finetune.errors import FinetuneError, ModelProtocolError
from finetune.testing import tiny_block
from finetune.use import feature_map_layers

IMAGES = np.random.default_rng(0).integers(0, 255, (4, 20, 24, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def int8_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("int8")
    model = ft.create_model(tiny_block())
    pre = model.preprocess
    calib = np.random.default_rng(1).normal(size=(8, pre.channels, *pre.size)).astype(np.float32)
    ft.quantize(model, calib, batch_size=4).save(folder / "q")
    images = folder / "images"
    for c, name in enumerate(ft.create_model(tiny_block()).class_names):
        (images / name).mkdir(parents=True)
        for i in range(2):
            import cv2

            cv2.imwrite(str(images / name / f"{i}.png"), IMAGES[(c + i) % 4])
    return folder


API = {
    "Predictor": lambda q, imgs: ft.Predictor(q).predict(IMAGES, top_k=1, color="RGB"),
    "evaluate": lambda q, imgs: ft.evaluate(q, list(IMAGES), labels=[0, 1, 2, 0], color="RGB"),
    "GradCAM": lambda q, imgs: ft.GradCAM(q)(IMAGES[0], color="RGB"),
    "feature_map_layers": lambda q, imgs: feature_map_layers(q),
    "FeatureExtractor": lambda q, imgs: ft.FeatureExtractor(q).extract(IMAGES),
    "quantize": lambda q, imgs: ft.quantize(ft.create_model(q), imgs),
    "fuse": lambda q, imgs: ft.fuse(ft.create_model(q)),
}

NEEDS_FLOAT = {"GradCAM", "feature_map_layers", "FeatureExtractor", "quantize", "fuse"}


@pytest.mark.parametrize("as_object", [False, True], ids=["directory", "object"])
@pytest.mark.parametrize("consumer", sorted(API))
def test_api_consumer_works_or_says_it_needs_the_float_model(consumer, as_object, int8_dir):
    q = ft.load_model(int8_dir / "q") if as_object else str(int8_dir / "q")
    try:
        API[consumer](q, str(int8_dir / "images"))
    except FinetuneError as exc:
        assert consumer in NEEDS_FLOAT, f"{consumer} refused an int8 model: {exc}"
        assert isinstance(exc, ModelProtocolError) and "int8 model" in str(exc) and "float model" in str(exc)
        if not as_object:
            assert repr(str(int8_dir / "q")) in str(exc)  # names the folder
    else:
        assert consumer not in NEEDS_FLOAT


COMMANDS = [
    ["predict", "{q}", "{img}", "--top-k", "1"],
    ["evaluate", "{q}", "{images}"],
    ["gradcam", "{q}", "{img}", "--out", "{tmp}/cam.png"],
    ["inspect", "{q}"],
    ["inspect", "{q}", "--no-layers"],
    ["export", "{q}", "--out", "{tmp}/float"],
    ["export", "{q}", "--out", "{tmp}/int8", "--int8", "--calibration", "{images}"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(a for a in c if not a.startswith("{")))
def test_command_works_or_gives_a_one_line_error(command, int8_dir, tmp_path, capsys):
    images = int8_dir / "images"
    fill = {"q": str(int8_dir / "q"), "images": str(images), "tmp": str(tmp_path),
            "img": str(sorted((images / "cat").iterdir())[0])}
    code = main(["-q"] + [a.format(**fill) for a in command])  # a traceback would raise here
    err = capsys.readouterr().err
    assert code in (0, 1) and "Traceback" not in err
    if code:
        assert "int8 model" in err and "float model" in err and len(err.strip().splitlines()) == 1

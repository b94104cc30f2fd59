"""finetune extract / retrieve keep image names byte-exact in ids files, or refuse them by name."""

import os

import cv2
import numpy as np
import pytest

import finetune.features._extractor as extractor_module
from finetune.cli import main
from finetune.testing import TinyNet

PNG = cv2.imencode(".png", np.full((24, 24, 3), 90, np.uint8))[1].tobytes()


@pytest.fixture
def tiny_model(monkeypatch):
    monkeypatch.setattr(extractor_module, "create_model", lambda spec: TinyNet())


def _images(folder, names):
    os.makedirs(folder, exist_ok=True)
    for name in names:
        with open(os.path.join(os.fsencode(folder), name), "wb") as f:
            f.write(PNG)


def test_ids_of_latin1_and_spaced_names_round_trip(tiny_model, tmp_path, capsys):
    names = [b"\xe9t\xe9.png", b" lead.png", b"lead .png"]
    _images(tmp_path / "db", names)
    out = tmp_path / "f.npy"
    assert main(["extract", "tiny", str(tmp_path / "db"), "--layer", "relu2", "--out", str(out)]) == 0
    lines = (tmp_path / "f.ids.txt").read_bytes().split(b"\n")
    assert sorted(os.path.basename(line) for line in lines if line) == sorted(names)
    capsys.readouterr()
    assert main(["retrieve", "--index", str(out), "--queries", str(out), "--top-k", "1"]) == 0
    printed = capsys.readouterr().out
    assert "\\xe9t\\xe9.png" in printed and len(printed.splitlines()) == 3


@pytest.mark.parametrize("sep", ["\t", "\n", "\r"])
def test_an_image_name_holding_a_separator_is_refused_by_name(tiny_model, tmp_path, capsys, sep):
    name = f"a{sep}b.png"
    _images(tmp_path / "db", [name.encode()])
    assert main(["extract", "tiny", str(tmp_path / "db"), "--layer", "relu2", "--out", str(tmp_path / "f.npy")]) == 1
    assert repr(str(tmp_path / "db" / name)) in capsys.readouterr().err
    assert not (tmp_path / "f.npy").exists() and not (tmp_path / "f.ids.txt").exists()

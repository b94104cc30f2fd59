"""The README's code runs as written (on a tiny image folder)."""

import os
import re
import shutil
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
@pytest.mark.realdata
def test_readme_python_example_runs(image_folder, tmp_path, monkeypatch):
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    code = code.replace("Recipe()", "Recipe(head_epochs=1, epochs=1)")  # the only change: a short run
    assert "Recipe(head_epochs=1, epochs=1)" in code
    monkeypatch.chdir(tmp_path)
    shutil.copytree(image_folder, "photos")
    shutil.copy(next(Path("photos/cat").glob("*.jpg")), "some_photo.jpg")
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert os.path.exists("run/model/config.json")
    assert os.path.exists("data/train.rec") and os.path.exists("data/val.idx")

"""Sphinx configuration for finetune's documentation."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

from finetune._version import __version__  # noqa: E402

project = "finetune"
author = "The finetune developers"
copyright = "2026, The finetune developers"
release = version = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.intersphinx",
]
autosummary_generate = False
autodoc_member_order = "bysource"
autodoc_typehints = "none"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
nitpicky = False
intersphinx_mapping = {}
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = []
suppress_warnings = ["ref.python"]

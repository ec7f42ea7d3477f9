"""Sphinx configuration: MyST Markdown pages, reference pages generated from the code.

Built by ``python3 -m tox -e docs`` with warnings as errors and nitpicky cross-references;
nothing is fetched from the network (no intersphinx, no remote images).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
# The repository (procpool_tasks, tests.settings, benchmarks) and the local extensions.
sys.path[:0] = [str(DOCS.parent), str(DOCS / "_ext")]
# The commands' parsers are Django's: the reference pages read them with the test settings.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

project = "procpool_tasks"
author = "The procpool_tasks authors"
copyright = "The procpool_tasks authors"

extensions = ["myst_parser", "procpool_docs"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "**/README.md"]

nitpicky = True
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

html_theme = "alabaster"
html_title = "procpool_tasks"
html_theme_options = {"nosidebar": False, "fixed_sidebar": True}

"""Sphinx extension: each ``<!-- generated: NAME -->`` line of a page becomes its section.

A thin wrapper: ``reference.py`` writes the Markdown from the code, and this puts it in
the page's source before MyST reads it, so the reference is made anew at every build.
"""

from __future__ import annotations

from typing import Any

import django
import reference


def _fill(app: Any, docname: str, source: list[str]) -> None:
    source[0] = reference.fill(source[0])


def setup(app: Any) -> dict[str, Any]:
    django.setup()
    app.connect("source-read", _fill)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

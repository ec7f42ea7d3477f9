"""The reference pages, generated from the code at build time, list all of it.

``docs/_ext/reference.py`` is plain Python (the Sphinx extension only wraps it), imported
here by its path, so these tests run without Sphinx. What each page must list is found
another way than the generator finds it: the keys ``OPTIONS`` accept from the keys the
options parser names when it refuses an unknown one, the flags from each command's
parser as ``call_command`` builds it, the check ids from every id the package's source
mentions, the exceptions from the classes ``procpool_tasks.exceptions`` defines.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from types import ModuleType
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import get_commands, load_command_class

from procpool_tasks import exceptions, options
from tests.conftest import REPO_ROOT

DOCS = REPO_ROOT / "docs"


def _load_reference() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_reference", DOCS / "_ext" / "reference.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and typing look modules up by name
    spec.loader.exec_module(module)
    return module


reference = _load_reference()


def section(text: str, heading: str) -> str:
    """The text under ``heading`` (a whole line), up to the next heading of its level."""
    level = heading.split(" ", 1)[0]
    start = text.index(f"\n{heading}\n") + len(heading) + 2
    following = re.search(rf"^{level} ", text[start:], flags=re.MULTILINE)
    return text[start : start + following.start()] if following else text[start:]


def keys_accepted(given: dict[str, Any]) -> list[str]:
    """The keys the options parser lists when ``given`` holds one it does not know."""
    with pytest.raises(ImproperlyConfigured) as refused:
        options.BackendOptions.from_options("default", given)
    listed = str(refused.value).split("the keys are ", 1)[1]
    return re.findall(r"'([^']+)'", listed)


UNKNOWN = "surely-not-a-key"
NESTED: dict[str, dict[str, Any]] = {
    "## `OPTIONS`": {UNKNOWN: 1},
    "## `retry`": {"retry": {UNKNOWN: 1}},
    "## `task_options`": {"task_options": {"myapp.tasks.send": {UNKNOWN: 1}}},
    "## `schedule`": {"schedule": {"nightly": {"task": "myapp.tasks.report", UNKNOWN: 1}}},
}


@pytest.mark.parametrize("heading", NESTED)
def test_the_settings_page_lists_every_key_the_options_accept(heading: str) -> None:
    accepted = keys_accepted(NESTED[heading])
    listed = re.findall(r"^\| `([^`]+)` \|", section(reference.settings(), heading), re.M)

    assert accepted
    assert listed == accepted


def test_every_option_says_what_it_means_and_nothing_else_does() -> None:
    meanings = {
        "## `OPTIONS`": options.OPTION_MEANINGS,
        "## `retry`": options.RETRY_MEANINGS,
        "## `task_options`": options.TASK_OPTION_MEANINGS,
        "## `schedule`": options.SCHEDULE_MEANINGS,
    }
    for heading, given in NESTED.items():
        assert list(meanings[heading]) == keys_accepted(given), heading
        assert all(meaning.strip() for meaning in meanings[heading].values()), heading


def test_the_settings_page_gives_the_defaults_of_the_parsed_options() -> None:
    page = section(reference.settings(), "## `OPTIONS`")
    parsed = options.BackendOptions.from_options("default", {"path": "/srv/journal"})

    assert "| `durable` | `True` |" in page
    assert f"| `max_attempts` | `{parsed.max_attempts}` |" in page
    assert '| `path` | `BASE_DIR / ".procpool_tasks"` |' in page
    assert "| `admin_actions` | `False` |" in page


def procpool_commands() -> list[str]:
    return sorted(
        name
        for name, app in get_commands().items()
        if app == "procpool_tasks" and name.startswith("procpool_")
    )


def test_the_commands_page_has_every_procpool_command() -> None:
    page = reference.commands()
    commands = REPO_ROOT / "procpool_tasks" / "management" / "commands"
    on_disk = sorted(path.stem for path in commands.glob("procpool_*.py"))

    assert procpool_commands() == on_disk
    assert re.findall(r"^## `(procpool_\w+)`$", page, flags=re.MULTILINE) == on_disk


@pytest.mark.parametrize("name", procpool_commands())
def test_the_commands_page_lists_every_flag_of_the_command(name: str) -> None:
    parser = load_command_class("procpool_tasks", name).create_parser("manage.py", name)
    flags = [flag for action in parser._actions for flag in action.option_strings]
    positionals = [
        "{" + ",".join(action.choices) + "}" if action.choices else action.metavar or action.dest
        for action in parser._actions
        if not action.option_strings
    ]
    page = section(reference.commands(), f"## `{name}`")

    assert "--backend" in flags
    for flag in flags:
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", page), flag
    for positional in positionals:
        assert f"| `{positional}` |" in page, positional


def test_the_checks_page_lists_every_check_id_the_package_mentions() -> None:
    mentioned = {
        found
        for path in (REPO_ROOT / "procpool_tasks").rglob("*.py")
        for found in re.findall(r"procpool_tasks\.[EW]\d{3}", path.read_text())
    }
    page = reference.checks()
    listed = set(re.findall(r"^\| `(procpool_tasks\.[EW]\d{3})` \|", page, flags=re.MULTILINE))

    assert {"procpool_tasks.E001", "procpool_tasks.W001"} <= mentioned
    assert listed == mentioned
    # Each with the words of its constant's comment.
    assert "| `procpool_tasks.E002` | error | `procpool_tasks.checks.JOURNAL_UNSAFE` |" in page


def test_the_exceptions_page_lists_every_public_exception() -> None:
    defined = sorted(
        name
        for name, value in vars(exceptions).items()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__ == exceptions.__name__
    )
    page = reference.exceptions()

    assert sorted(re.findall(r"^### `(\w+)`$", page, flags=re.MULTILINE)) == defined
    assert sorted(name for name in exceptions.__all__ if name != "FORMER_PATHS") == defined
    for former in exceptions.FORMER_PATHS:
        assert f"`{former}`" in page


def test_the_status_json_page_lists_every_key_of_the_schema() -> None:
    schema = json.loads((REPO_ROOT / "procpool_tasks" / "status.schema.json").read_text())
    page = reference.status_schema()

    for key in schema["properties"]:
        assert f"| `{key}` |" in page, key
    for name, definition in schema["$defs"].items():
        shape = section(page, f"### `{name}`")
        for key in definition.get("properties", {}):
            assert re.search(rf"^\| `{re.escape(key)}`( \(optional\))? \|", shape, re.M), key


def test_the_benchmarks_page_has_every_system_and_workload_and_no_targets() -> None:
    data = json.loads((DOCS / "benchmarks.json").read_text())
    page = reference.benchmarks()

    for system in data["systems"]:
        assert f"| {system['label']} |" in page
    for workload in data["workloads"]:
        assert workload["title"] in page
    assert "target" not in page.lower()


def test_every_generated_section_a_page_asks_for_exists() -> None:
    asked = {
        match.group(1)
        for page in DOCS.rglob("*.md")
        for match in reference.MARKER.finditer(page.read_text())
    }

    assert asked == set(reference.GENERATORS)


def test_a_page_gets_its_section_in_place_of_the_marker() -> None:
    filled = reference.fill("# Checks\n\n<!-- generated: checks -->\n\nAfter.\n")

    assert filled.startswith("# Checks\n\n| id | level | constant | what is wrong |\n")
    assert filled.endswith("|\n\nAfter.\n")
    assert "<!-- generated" not in filled


def test_the_journal_format_page_shows_the_layout_as_a_text_block() -> None:
    page = reference.journal_format()

    assert "```text\nsegments/<segment>.log " in page
    assert "## Segment summaries" in page


def test_the_pages_link_to_files_that_exist() -> None:
    """Relative links between the Markdown files (the README's too) work on any git host."""
    for page in [REPO_ROOT / "README.md", *DOCS.rglob("*.md")]:
        for target in re.findall(r"\]\(([^)#:\s]+\.(?:md|svg|png))(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).is_file(), f"{page}: {target}"


def test_the_readme_stays_short() -> None:
    assert len((REPO_ROOT / "README.md").read_bytes()) <= 8192

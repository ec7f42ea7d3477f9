"""The reference pages of the documentation, generated from the code as Markdown.

Plain Python, no Sphinx: ``procpool_docs.py`` (the Sphinx extension) puts these strings
where a page says ``<!-- generated: NAME -->``, and ``tests/test_docs_reference.py`` calls
them directly. ``commands`` needs Django set up (``conf.py`` uses ``tests.settings``);
the others only import ``procpool_tasks``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
import json
import pkgutil
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Where a page asks for a generated section.
MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)
_CHECK_ID = re.compile(r"procpool_tasks\.[EW]\d{3}")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def escape(text: str) -> str:
    """Plain text (argparse help, docstrings' prose) safe inside Markdown, tables too."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def _cell(text: str) -> str:
    """Markdown written in the code (backticks and all), safe inside a table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _code(value: object) -> str:
    text = repr(value)
    return f"`` {text} ``" if "`" in text else f"`{text}`"


# -- settings: options.py ---------------------------------------------------------------


def _dataclass_defaults(cls: type) -> dict[str, Any]:
    defaults = {}
    for each in dataclasses.fields(cls):
        if each.default is not dataclasses.MISSING:
            defaults[each.name] = each.default
        elif each.default_factory is not dataclasses.MISSING:
            defaults[each.name] = each.default_factory()
    return defaults


def _options_table(meanings: Mapping[str, str], defaults: Mapping[str, str]) -> list[str]:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, meaning in meanings.items():
        lines.append(f"| `{key}` | {defaults.get(key, '')} | {_cell(meaning)} |")
    return lines


def settings() -> str:
    """Every key the backend's ``OPTIONS`` accept, nested ones too, with default and meaning."""
    from procpool_tasks import options

    backend_defaults = {
        key: _code(value) for key, value in _dataclass_defaults(options.BackendOptions).items()
    }
    backend_defaults["path"] = f'`BASE_DIR / "{options.DEFAULT_JOURNAL_DIRNAME}"`'
    retry_defaults = {
        key: _code(value)
        for key, value in _dataclass_defaults(options.RetryPolicy).items()
        if key in options.RETRY_MEANINGS
    }
    retry_defaults["exceptions"] = "`[]`"
    schedule_defaults = {
        key: _code(value)
        for key, value in _dataclass_defaults(options.ScheduleOptions).items()
        if key in options.SCHEDULE_MEANINGS
    }
    schedule_defaults["task"] = "required"
    schedule_defaults["queue_name"] = schedule_defaults["priority"] = "the task's own"
    task_defaults = dict.fromkeys(options.TASK_OPTION_MEANINGS, "the backend's")
    task_defaults["max_attempts"] = "not given"
    task_defaults["backoff"] = "the retry policy's"
    out = [
        "(settings-options)=",
        "## `OPTIONS`",
        "",
        "The keys of a `ProcPoolBackend`'s `OPTIONS` in `TASKS`. A wrong value is the "
        "system check error `procpool_tasks.E001`, which names the key.",
        "",
        *_options_table(options.OPTION_MEANINGS, backend_defaults),
        "",
        "(settings-retry)=",
        "## `retry`",
        "",
        'The keys of a retry policy: `OPTIONS["retry"]`, or a task\'s own `retry` in '
        "`task_options` or `@task(retry=...)`. A key left out of a task's own policy comes "
        "from the backend's.",
        "",
        *_options_table(options.RETRY_MEANINGS, retry_defaults),
        "",
        "(settings-task-options)=",
        "## `task_options`",
        "",
        'The keys of one task\'s entry in `OPTIONS["task_options"]`, whose keys are task '
        "paths. On Django 6.1 and the backport a task's `@task(...)` takes "
        + ", ".join(f"`{name}`" for name in options.DECORATOR_OPTIONS)
        + " too, and those win.",
        "",
        *_options_table(options.TASK_OPTION_MEANINGS, task_defaults),
        "",
        "(settings-schedule)=",
        "## `schedule`",
        "",
        'The keys of one periodic task in `OPTIONS["schedule"]`, whose keys are schedule '
        "names: 1 to 64 letters, digits, `_`, `.` and `-`, starting with a letter, a digit "
        "or `_`.",
        "",
        *_options_table(options.SCHEDULE_MEANINGS, schedule_defaults),
    ]
    return "\n".join(out) + "\n"


# -- commands: their argparse parsers ---------------------------------------------------


def command_names() -> list[str]:
    """Every ``procpool_*`` management command of the package, by module."""
    package = importlib.import_module("procpool_tasks.management.commands")
    modules = pkgutil.iter_modules(package.__path__)
    return sorted(each.name for each in modules if each.name.startswith("procpool_"))


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser Django builds for ``manage.py NAME`` (Django must be set up)."""
    module = importlib.import_module(f"procpool_tasks.management.commands.{name}")
    parser: argparse.ArgumentParser = module.Command().create_parser("manage.py", name)
    return parser


def _django_option_strings() -> set[str]:
    """The flags Django gives every command (``--settings``, ``-v``, ...)."""
    from django.core.management.base import BaseCommand

    return {
        option
        for action in BaseCommand().create_parser("manage.py", "x")._actions
        for option in action.option_strings
    }


def _actions(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        if action.help != argparse.SUPPRESS:
            yield action


def _invocation(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = parser._get_formatter()
    return formatter._format_action_invocation(action)


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if not action.help:
        return ""
    return parser._get_formatter()._expand_help(action)


def _default(action: argparse.Action) -> str:
    if action.option_strings == [] or action.default in (None, argparse.SUPPRESS, False, []):
        return ""
    if isinstance(action, argparse._StoreTrueAction | argparse._CountAction):
        return ""
    return f"`{action.default}`"


def commands() -> str:
    """Every ``procpool_*`` command with every flag of its parser."""
    django_flags = _django_option_strings()
    out: list[str] = []
    for name in command_names():
        parser = command_parser(name)
        own = [a for a in _actions(parser) if not set(a.option_strings) & django_flags]
        common = [a for a in _actions(parser) if set(a.option_strings) & django_flags]
        out += [
            f"({name})=",
            f"## `{name}`",
            "",
            "```text",
            parser.format_usage().strip(),
            "```",
            "",
            escape(parser.description or ""),
            "",
            "| argument | default | meaning |",
            "|---|---|---|",
        ]
        for action in own:
            invocation = _invocation(parser, action)
            if action.choices and not action.option_strings:
                invocation = "{" + ",".join(map(str, action.choices)) + "}"
            meaning = _help(parser, action)
            # A help that names its default says it better than the value on this machine.
            default = "" if "default" in meaning else _default(action)
            out.append(f"| `{_cell(invocation)}` | {default} | {escape(meaning)} |")
        out += [
            "",
            "Django's own options: "
            + ", ".join(f"`{_cell(_invocation(parser, action))}`" for action in common)
            + ".",
            "",
        ]
    return "\n".join(out)


# -- system checks: checks.py -----------------------------------------------------------


def check_ids() -> dict[str, tuple[str, str]]:
    """Check id -> (its constant in ``procpool_tasks.checks``, the ``#:`` comment above it)."""
    source = (REPO_ROOT / "procpool_tasks" / "checks.py").read_text()
    lines = source.splitlines()
    found = {}
    for node in ast.parse(source).body:
        if not (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            and _CHECK_ID.fullmatch(node.value.value)
        ):
            continue
        comment: list[str] = []
        number = node.lineno - 2
        while number >= 0 and lines[number].startswith("#:"):
            comment.insert(0, lines[number][2:].strip())
            number -= 1
        found[node.value.value] = (node.targets[0].id, " ".join(comment))
    return found


def checks() -> str:
    """Every system check id with its constant and what it means."""
    out = ["| id | level | constant | what is wrong |", "|---|---|---|---|"]
    for check_id, (constant, meaning) in sorted(check_ids().items()):
        level = "error" if check_id.split(".")[1].startswith("E") else "warning"
        out.append(
            f"| `{check_id}` | {level} | `procpool_tasks.checks.{constant}` | {_cell(meaning)} |"
        )
    return "\n".join(out) + "\n"


# -- exceptions: exceptions.py ----------------------------------------------------------


def _class_path(cls: type) -> str:
    module = "" if cls.__module__ == "builtins" else f"{cls.__module__}."
    return f"{module}{cls.__qualname__}"


def exception_classes() -> dict[str, type[BaseException]]:
    """Name -> class, for every exception in ``procpool_tasks.exceptions.__all__``."""
    module = importlib.import_module("procpool_tasks.exceptions")
    return {
        name: getattr(module, name)
        for name in module.__all__
        if isinstance(getattr(module, name), type)
        and issubclass(getattr(module, name), BaseException)
    }


def _docstring(obj: object) -> str:
    """A docstring as Markdown: ``code`` of reST is code in Markdown too."""
    text = inspect.getdoc(obj) or ""
    return "\n".join(line.rstrip() for line in text.splitlines())


def exceptions() -> str:
    """Every public exception: its path, what it subclasses, its docstring; former paths."""
    module = importlib.import_module("procpool_tasks.exceptions")
    out: list[str] = []
    for name, cls in exception_classes().items():
        bases = ", ".join(f"`{_class_path(base)}`" for base in cls.__bases__)
        out += [
            f"(exception-{name})=",
            f"### `{name}`",
            "",
            f"`procpool_tasks.exceptions.{name}`, a subclass of {bases}.",
            "",
            _docstring(cls),
            "",
        ]
    out += [
        "(exceptions-former-paths)=",
        "## Former paths",
        "",
        "Where each exception lived before 0.2.0. These paths still import the same class "
        "until 0.3.0, with a `DeprecationWarning`, so that results written by 0.1 and retry "
        "policies that list an old path keep working.",
        "",
        "| former path | now |",
        "|---|---|",
    ]
    for former, cls in module.FORMER_PATHS.items():
        out.append(f"| `{former}` | `procpool_tasks.exceptions.{cls.__name__}` |")
    return "\n".join(out) + "\n"


# -- procpool_status --json: status.schema.json -----------------------------------------


def _schema_type(schema: Mapping[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#schema-{name})"
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    kind = schema.get("type", "")
    kinds = kind if isinstance(kind, list) else [kind]
    text = " or ".join(f"`{each}`" for each in kinds if each)
    if "array" in kinds and "items" in schema:
        text += f" of {_schema_type(schema['items'])}"
    if "object" in kinds and isinstance(schema.get("additionalProperties"), Mapping):
        text += f" of {_schema_type(schema['additionalProperties'])} by name"
    if "anyOf" in schema or "oneOf" in schema:
        text = " or ".join(_schema_type(each) for each in schema.get("anyOf", schema.get("oneOf")))
    return text or "any"


def _properties_table(schema: Mapping[str, Any]) -> list[str]:
    required = set(schema.get("required", ()))
    lines = ["| key | type | meaning |", "|---|---|---|"]
    for key, value in schema.get("properties", {}).items():
        mark = "" if key in required else " (optional)"
        lines.append(
            f"| `{key}`{mark} | {_schema_type(value)} | {_cell(value.get('description', ''))} |"
        )
    return lines


def status_schema() -> str:
    """The JSON Schema of ``procpool_status --json``: every key, and every shape it uses."""
    schema = json.loads((REPO_ROOT / "procpool_tasks" / "status.schema.json").read_text())
    out = [_cell(schema.get("description", "")), "", *_properties_table(schema), ""]
    for name, definition in schema.get("$defs", {}).items():
        out += [f"(schema-{name})=", f"### `{name}`", ""]
        if definition.get("description"):
            out += [_cell(definition["description"]), ""]
        if "properties" in definition:
            out += [*_properties_table(definition), ""]
        else:
            out += [f"A {_schema_type(definition)}.", ""]
    return "\n".join(out)


# -- the journal's format: the docstrings of procpool_tasks.journal -----------------------


def rest_to_markdown(text: str) -> str:
    """A docstring's paragraphs and ``::`` literal blocks as Markdown."""
    out: list[str] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line.rstrip().endswith("::"):
            out.append(line)
            continue
        out.append(line.rstrip()[:-1])  # "Layout ...::" -> "Layout ...:"
        block: list[str] = []
        while index < len(lines) and (not lines[index].strip() or lines[index].startswith(" ")):
            block.append(lines[index])
            index += 1
        while block and not block[-1].strip():
            block.pop()
        while block and not block[0].strip():
            block.pop(0)
        indent = min(len(each) - len(each.lstrip()) for each in block if each.strip())
        out += ["", "```text", *(each[indent:] for each in block), "```", ""]
    return "\n".join(out).replace("\n\n\n", "\n\n")


def journal_format() -> str:
    """The journal's layout, lines and durability (``procpool_tasks.journal``), and what a
    segment's summary holds (``procpool_tasks.journal.history``)."""
    journal = importlib.import_module("procpool_tasks.journal")
    history = importlib.import_module("procpool_tasks.journal.history")
    doc = inspect.getdoc(journal) or ""
    rest = doc.partition("\n\n")[2]
    return "\n".join(
        [
            rest_to_markdown(rest),
            "",
            "## Segment summaries",
            "",
            rest_to_markdown((inspect.getdoc(history) or "").partition("\n\n")[2]),
        ]
    )


# -- benchmarks: docs/benchmarks.json ---------------------------------------------------


def benchmarks() -> str:
    """The tables of the run in ``docs/benchmarks.json``, without the targets of an issue."""
    from benchmarks.report import markdown_of_json

    data = json.loads((REPO_ROOT / "docs" / "benchmarks.json").read_text())
    return markdown_of_json(data, with_targets=False)


GENERATORS: dict[str, Callable[[], str]] = {
    "settings": settings,
    "commands": commands,
    "checks": checks,
    "exceptions": exceptions,
    "status-schema": status_schema,
    "benchmarks": benchmarks,
    "journal-format": journal_format,
}


def fill(text: str) -> str:
    """A page's text with each ``<!-- generated: NAME -->`` line replaced by its section."""
    return MARKER.sub(lambda match: GENERATORS[match.group(1)]().rstrip("\n"), text)

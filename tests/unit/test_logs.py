"""``logs.configure``: which handler and level each logger gets, and what a project's wins."""

from __future__ import annotations

import functools
import io
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from procpool_tasks import compat, logs

OWN = logging.getLogger(logs.LOGGER_NAME)


@pytest.fixture(autouse=True)
def restored_loggers() -> Iterator[None]:
    """The two loggers as they were before the test, whatever it configured."""
    loggers = (OWN, compat.FRAMEWORK_LOGGER)
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    levels_set = set(logs._levels_set)
    for logger in loggers:
        logger.handlers.clear()
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
    logs._levels_set.clear()
    yield
    for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate
    logs._levels_set.clear()
    logs._levels_set.update(levels_set)


@pytest.mark.parametrize(
    ("verbosity", "own", "framework"),
    [
        (0, logging.ERROR, logging.CRITICAL),
        (1, logging.INFO, logging.CRITICAL),
        (2, logging.DEBUG, logging.DEBUG),
        (3, logging.DEBUG, logging.DEBUG),
    ],
)
def test_verbosity_sets_the_level_of_both_loggers(verbosity: int, own: int, framework: int) -> None:
    logs.configure(verbosity, io.StringIO())

    assert (OWN.level, compat.FRAMEWORK_LOGGER.level) == (own, framework)


def test_both_loggers_write_the_format_to_the_stream_and_do_not_propagate() -> None:
    stream = io.StringIO()
    logs.configure(2, stream)

    logging.getLogger("procpool_tasks.worker.dispatch").info("own %s", 1)
    compat.FRAMEWORK_LOGGER.error("framework")

    lines = stream.getvalue().splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == ["INFO own 1", "ERROR framework"]
    assert (OWN.propagate, compat.FRAMEWORK_LOGGER.propagate) == (False, False)


def test_configuring_again_changes_the_stream_and_level_and_adds_no_second_handler() -> None:
    logs.configure(1, io.StringIO())
    stream = io.StringIO()
    logs.configure(0, stream)

    OWN.error("once")

    assert len(OWN.handlers) == 1
    assert OWN.level == logging.ERROR
    assert stream.getvalue().endswith(" ERROR once\n")


def test_a_projects_handlers_stay_the_only_ones_and_its_level_stays() -> None:
    project = logging.StreamHandler(io.StringIO())
    OWN.addHandler(project)
    compat.FRAMEWORK_LOGGER.setLevel(logging.WARNING)

    logs.configure(2, io.StringIO())

    assert OWN.handlers == [project]
    assert OWN.propagate is True
    assert OWN.level == logging.DEBUG  # no level of its own: -v decides
    assert compat.FRAMEWORK_LOGGER.level == logging.WARNING
    assert len(compat.FRAMEWORK_LOGGER.handlers) == 1  # no handler of its own: the worker's


def test_a_traceback_from_another_process_follows_the_message() -> None:
    stream = io.StringIO()
    logs.configure(1, stream)

    logs.log_with_traceback(
        OWN, logging.WARNING, "Traceback (most recent call last):\nValueError: boom\n", "x=%s", 1
    )
    logs.log_with_traceback(OWN, logging.DEBUG, "not shown\n", "below the level")

    assert stream.getvalue().split(" ", 2)[2] == (
        "WARNING x=1\nTraceback (most recent call last):\nValueError: boom\n"
    )


def test_the_time_of_a_line_is_what_loggings_own_formatter_writes() -> None:
    # Made once a second and kept: across seconds, a day, and back to an earlier second.
    ours, reference = logs._Formatter(logs.FORMAT), logging.Formatter(logs.FORMAT)
    for created in (1e9, 1e9 + 0.999, 1e9 + 1.0005, 1e9 + 1.5, 1e9 + 86400.25, 1e9 + 0.5):
        record = logging.makeLogRecord({"msg": "m", "created": created})
        record.msecs = int((created - int(created)) * 1000)  # as LogRecord makes it
        assert ours.format(record) == reference.format(record)


def test_a_line_logged_without_the_walk_of_the_stack_names_its_caller() -> None:
    stream = io.StringIO()
    logs.configure(1, stream)
    records: list[logging.LogRecord] = []

    def keep(record: logging.LogRecord) -> bool:
        records.append(record)
        return True

    OWN.addFilter(keep)
    try:
        logs.log(OWN, logging.WARNING, "task %s %d", "a", 1)
    finally:
        OWN.removeFilter(keep)

    [record] = records
    assert (record.funcName, record.filename) == (
        "test_a_line_logged_without_the_walk_of_the_stack_names_its_caller",
        "test_logs.py",
    )
    assert stream.getvalue().endswith(" WARNING task a 1\n")


class CountedWrites(io.StringIO):
    """A stream that keeps each write apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def messages(text: str) -> list[str]:
    return [line.split(" ", 3)[3] for line in text.splitlines()]


def test_held_lines_are_written_in_one_write_each_time_they_are_written() -> None:
    stream = CountedWrites()
    logs.configure(2, stream)

    with logs.held_lines():
        OWN.info("started")
        compat.FRAMEWORK_LOGGER.info("framework")
        OWN.info("finished")
        assert stream.writes == []
        logs.write_held()
        assert len(stream.writes) == 1
        OWN.info("next turn")
        logs.write_held()

    assert messages(stream.getvalue()) == ["started", "framework", "finished", "next turn"]
    assert len(stream.writes) == 2


def test_the_lines_of_other_threads_are_written_at_once_while_one_holds_its_own() -> None:
    stream = io.StringIO()
    logs.configure(1, stream)

    with logs.held_lines():
        OWN.info("held")
        other = threading.Thread(target=OWN.info, args=("other thread",))
        other.start()
        other.join()
        assert messages(stream.getvalue()) == ["other thread"]

    assert messages(stream.getvalue()) == ["other thread", "held"]


def test_held_lines_are_written_when_the_block_ends_with_an_error() -> None:
    stream = io.StringIO()
    logs.configure(1, stream)

    def log_then_fail() -> None:
        with logs.held_lines():
            OWN.info("before the error")
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        log_then_fail()

    assert messages(stream.getvalue()) == ["before the error"]
    OWN.info("after the block")
    assert messages(stream.getvalue()) == ["before the error", "after the block"]


def test_a_forked_process_writes_its_lines_at_once_and_never_the_parents_held_ones(
    tmp_path: Path,
) -> None:
    with (tmp_path / "log").open("w") as stream:
        logs.configure(1, stream)
        with logs.held_lines():
            OWN.info("parent, held")
            pid = os.fork()
            if pid == 0:  # the child: a copy of the held line, and the holder's thread id
                try:
                    OWN.info("child")
                    logs.write_held()
                finally:
                    os._exit(0)
            assert os.waitpid(pid, 0)[1] == 0
            assert messages((tmp_path / "log").read_text()) == ["child"]

    assert messages((tmp_path / "log").read_text()) == ["child", "parent, held"]


def test_a_warning_is_written_at_once_after_the_lines_held_before_it() -> None:
    stream = CountedWrites()
    logs.configure(1, stream)

    with logs.held_lines():
        OWN.info("started")
        OWN.warning("failed")
        assert messages(stream.getvalue()) == ["started", "failed"]
        OWN.info("next")
        assert messages(stream.getvalue()) == ["started", "failed"]

    assert messages(stream.getvalue()) == ["started", "failed", "next"]


@pytest.mark.parametrize(
    "log_info",
    [OWN.info, functools.partial(logs.log, OWN, logging.INFO)],
    ids=["with its record", "without a record"],
)
def test_a_held_line_the_stream_cannot_encode_costs_only_itself(
    log_info: Callable[[str], None], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with (tmp_path / "log").open("w", encoding="ascii") as stream:
        logs.configure(1, stream)
        with logs.held_lines():
            log_info("before")
            log_info("caf\u00e9")
            log_info("after")

    assert messages((tmp_path / "log").read_text()) == ["before", "after"]
    error = capsys.readouterr().err
    assert "UnicodeEncodeError" in error  # reported, as logging does
    assert "caf\u00e9" in error  # the line it could not write, in logging's report


# -- a held line made without a record (``logs.log``, the supervisor's lines per task) ------

LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|DEBUG) (.*)")


def test_a_held_line_made_without_a_record_is_the_line_its_record_makes() -> None:
    stream = io.StringIO()
    logs.configure(2, stream)
    child = logging.getLogger(f"{logs.LOGGER_NAME}.worker.dispatch")

    with logs.held_lines():
        logs.log(child, logging.INFO, "Task id=%s attempt=%d", "caf\u00e9", 1)
        child.info("Task id=%s attempt=%d", "caf\u00e9", 1)
        logs.log(child, logging.DEBUG, "%s%%", "done")
        logs.log(child, logging.DEBUG, "no arguments: %%s")
        logs.log(child, logging.DEBUG, "%(name)s", {"name": "a mapping"})
        assert logs._held[0][1] is None  # no record made
        assert stream.getvalue() == ""

    lines = stream.getvalue().splitlines()
    assert [LINE.fullmatch(line).groups() for line in lines] == [  # type: ignore[union-attr]
        ("INFO", "Task id=caf\u00e9 attempt=1"),
        ("INFO", "Task id=caf\u00e9 attempt=1"),
        ("DEBUG", "done%"),
        ("DEBUG", "no arguments: %%s"),
        ("DEBUG", "a mapping"),
    ]


def test_a_line_a_project_could_see_is_logged_with_its_record() -> None:
    stream = io.StringIO()
    logs.configure(1, stream)
    seen: list[str] = []

    def keep(record: logging.LogRecord) -> bool:
        seen.append(record.getMessage())
        return True

    projects = logging.Handler()
    projects.emit = lambda record: seen.append(f"handler: {record.getMessage()}")  # type: ignore[method-assign]
    [ours] = OWN.handlers
    with logs.held_lines():
        OWN.addFilter(keep)
        logs.log(OWN, logging.INFO, "line %d", len(seen))
        OWN.removeFilter(keep)
        ours.addFilter(keep)
        logs.log(OWN, logging.INFO, "line %d", len(seen))
        ours.removeFilter(keep)
        OWN.addHandler(projects)
        logs.log(OWN, logging.INFO, "line %d", len(seen))
        OWN.removeHandler(projects)
        logs.log(OWN, logging.INFO, "not seen")

    assert seen == ["line 0", "line 1", "handler: line 2"]
    assert messages(stream.getvalue()) == ["line 0", "line 1", "line 2", "not seen"]


def test_a_held_line_that_cannot_be_formatted_is_reported_as_logging_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stream = io.StringIO()
    logs.configure(1, stream)

    with logs.held_lines():
        logs.log(OWN, logging.INFO, "%d tasks", "many")
        logs.log(OWN, logging.INFO, "after")

    assert messages(stream.getvalue()) == ["after"]
    error = capsys.readouterr().err
    assert "--- Logging error ---" in error
    assert "%d format: a real number is required, not str" in error


def test_a_line_made_without_a_record_has_the_time_loggings_formatter_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ours, reference = logs._Formatter(logs.FORMAT), logging.Formatter(logs.FORMAT)
    for now_ns in (10**18, 10**18 + 999_400_000, 10**18 + 86_400_000_500_000):
        monkeypatch.setattr(time, "time_ns", lambda now_ns=now_ns: now_ns)
        record = logging.makeLogRecord({"msg": "m 1", "levelno": 20, "levelname": "INFO"})
        record.created, record.msecs = now_ns / 1e9, (now_ns // 1_000_000) % 1000

        assert ours.line(logging.INFO, "m 1") == reference.format(record)


def test_a_line_logged_at_a_warning_or_outside_the_block_is_written_at_once() -> None:
    stream = io.StringIO()
    logs.configure(1, stream)

    logs.log(OWN, logging.INFO, "before the block")
    with logs.held_lines():
        logs.log(OWN, logging.INFO, "held")
        logs.log(OWN, logging.WARNING, "warned")
        other = threading.Thread(target=logs.log, args=(OWN, logging.INFO, "other thread"))
        other.start()
        other.join()
        assert messages(stream.getvalue()) == ["before the block", "held", "warned", "other thread"]
        logs.log(OWN, logging.INFO, "held too")
        assert "held too" not in stream.getvalue()

    assert messages(stream.getvalue())[-1] == "held too"


def test_the_handlers_level_and_a_projects_formatter_still_apply() -> None:
    stream = io.StringIO()
    logs.configure(2, stream)
    [ours] = OWN.handlers

    with logs.held_lines():
        ours.setLevel(logging.INFO)
        logs.log(OWN, logging.DEBUG, "below the handler's level")
        ours.setFormatter(logging.Formatter("%(levelname)s|%(message)s"))
        logs.log(OWN, logging.INFO, "formatted by the project")
        ours.setFormatter(logs._Formatter(logs.FORMAT, datefmt="%H"))
        logs.log(OWN, logging.INFO, "with a date format")

    assert stream.getvalue().splitlines()[0] == "INFO|formatted by the project"
    assert re.fullmatch(r"\d\d INFO with a date format", stream.getvalue().splitlines()[1])


def test_a_library_that_hooks_records_gets_the_supervisors_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As Sentry's logging integration does: it replaces Logger.callHandlers.
    stream = io.StringIO()
    logs.configure(1, stream)
    seen: list[str] = []
    call_handlers = logging.Logger.callHandlers

    def hooked(self: logging.Logger, record: logging.LogRecord) -> None:
        seen.append(record.getMessage())
        call_handlers(self, record)

    factory = logging.getLogRecordFactory()

    def made(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        seen.append(f"made: {record.getMessage()}")
        return record

    with logs.held_lines():
        with monkeypatch.context() as patched:
            patched.setattr(logging.Logger, "callHandlers", hooked)
            logs.log(OWN, logging.INFO, "hooked")
        with monkeypatch.context() as patched:
            patched.setattr(logging, "_logRecordFactory", made)
            logs.log(OWN, logging.INFO, "a factory")
        logs.log(OWN, logging.INFO, "not seen")

    assert seen == ["hooked", "made: a factory"]
    assert messages(stream.getvalue()) == ["hooked", "a factory", "not seen"]


def test_without_thread_ids_a_line_is_written_at_once_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = io.StringIO()
    logs.configure(1, stream)
    monkeypatch.setattr(logging, "logThreads", False)

    with logs.held_lines():
        logs.log(OWN, logging.INFO, "at once")
        assert messages(stream.getvalue()) == ["at once"]

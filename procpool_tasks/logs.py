"""How the worker's processes log: one stream, one format, on any Django and any DEBUG.

The supervisor, each worker process and the reloader call ``configure``, so a line looks
the same whichever process wrote it::

    2025-01-01 12:00:00,000 WARNING Task id=... state=FAILED duration=0.090s: ValueError: boom
    Traceback (most recent call last):
      ...

Django's default ``LOGGING`` would send the framework's lines (``django.tasks`` is a child
of ``django``) to stderr, unformatted and only with ``DEBUG = True``; so the loggers set up
here do not propagate. A project's own ``LOGGING`` for ``procpool_tasks`` or the
framework's logger wins: handlers it gave a logger stay its only ones, a level it set stays.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TextIO

from . import compat

__all__ = [
    "FORMAT",
    "LOGGER_NAME",
    "configure",
    "held_lines",
    "levels",
    "log",
    "log_with_traceback",
    "write_held",
]

FORMAT = "%(asctime)s %(levelname)s %(message)s"
#: The parent of every logger of this package (``procpool_tasks.worker.supervisor``, ...).
LOGGER_NAME = "procpool_tasks"

#: The loggers whose level ``configure`` set, so a second call may set it again.
_levels_set: set[str] = set()


#: The process and thread whose lines the worker's handlers hold (``held_lines``), if any.
_holder: tuple[int, int] | None = None
#: A line held: the handler that writes it, its record (for ``handleError``; None for a
#: line ``log`` formatted without one), its text.
_HeldLine = tuple["_WorkerHandler", logging.LogRecord | None, str]
#: The lines held, in order; only the holder's thread touches the list.
_held: list[_HeldLine] = []


class _WorkerHandler(logging.StreamHandler[TextIO]):
    """The handler ``configure`` adds, told apart from a project's own.

    A line of the thread that holds its lines (``held_lines``) is kept for ``write_held``,
    unless it is a warning or worse: that one is written at once, after those held.
    """

    def emit(self, record: logging.LogRecord) -> None:
        if _holder is None or (record.process, record.thread) != _holder:
            super().emit(record)
        elif record.levelno >= logging.WARNING:
            write_held()
            super().emit(record)
        else:
            try:
                _held.append((self, record, self.format(record) + self.terminator))
            except Exception:  # as StreamHandler.emit: a bad record is no reason to stop
                self.handleError(record)

    def flush(self) -> None:
        write_held()  # at exit, too (``logging.shutdown``)
        super().flush()


@contextlib.contextmanager
def held_lines() -> Iterator[None]:
    """Hold the lines this thread logs through the worker's handlers until ``write_held``.

    For the supervisor's loop, which logs two lines per task: it writes a turn's lines
    at once before it waits again, in one write, where each line was a write (and a wake-up
    of whatever reads the stream) of its own. Its warnings and errors are written at once,
    after the lines held before them: what went wrong is out even if the process is
    killed in a wait that follows (a SIGKILL loses the held INFO lines of that turn). The
    lines of other threads and processes, and of a project's own handlers, are written at
    once, as before (so they may come before INFO lines held meanwhile); those held are
    written when the block ends, however it ends.
    """
    global _holder
    _holder = (os.getpid(), threading.get_ident())
    try:
        yield
    finally:
        write_held()
        _holder = None


def write_held() -> None:
    """Write the lines held so far, a write per stream, in the order they were logged.

    Only in the thread that holds them; elsewhere (another thread, a forked process with a
    copy of the list) nothing.
    """
    if not _held or _holder != (os.getpid(), threading.get_ident()):
        return
    lines = _held.copy()
    _held.clear()
    for stream, group in itertools.groupby(lines, key=lambda line: line[0].stream):
        _write_lines(stream, list(group))


def _write_lines(stream: TextIO, lines: list[_HeldLine]) -> None:
    """Write held lines in one write; if that fails, one by one, each failure reported
    as ``emit`` reports it: a line the stream cannot encode costs only itself."""
    try:
        stream.write("".join(text for _, _, text in lines))
        stream.flush()
        return
    except Exception:  # noqa: S110 (each line is tried, and reported, below)
        pass
    for handler, record, text in lines:
        try:
            stream.write(text)
            stream.flush()
        except Exception:
            handler.handleError(
                record or logging.LogRecord("", logging.INFO, "", 0, text, (), None)
            )


class _Formatter(logging.Formatter):
    """``FORMAT``, with the time's seconds made once a second, not once a line: a
    supervisor logs two lines per task, and ``strftime`` was a fifth of each."""

    _second_text: tuple[int, str] = (-1, "")  # one attribute: read whole by any thread

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's name)
        if datefmt:
            return super().formatTime(record, datefmt)
        return self.time_text(int(record.created), int(record.msecs))

    def time_text(self, second: int, msecs: int) -> str:
        """``asctime`` of a time ``msecs`` into ``second`` (seconds since the epoch)."""
        last_second, text = self._second_text
        if second != last_second:
            text = time.strftime(self.default_time_format, self.converter(second))
            self._second_text = (second, text)
        return f"{text},{msecs:03d}"  # as default_msec_format, '%s,%03d'

    def line(self, level: int, message: str) -> str:
        """``format`` of a record logged now at ``level`` with ``message`` and no
        exception: ``FORMAT``, made without the record."""
        now_ns = time.time_ns()
        second, msecs = divmod(now_ns // 1_000_000, 1000)
        return f"{self.time_text(second, msecs)} {logging.getLevelName(level)} {message}"


def levels(verbosity: int) -> tuple[int, int]:
    """The levels of this package's loggers and of the framework's for ``-v verbosity``.

    -v 0: errors only; -v 1: a line per task start and finish, failures with their
    traceback; -v 2: debug. The framework's lines repeat the worker's own task lines
    (which also name the queue, the duration and the error), so they show at -v 2 only.
    """
    own = {0: logging.ERROR, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    return own, logging.DEBUG if verbosity >= 2 else logging.CRITICAL


def configure(verbosity: int, stream: TextIO | None = None) -> None:
    """Log this package's and the framework's lines to ``stream`` (stdout), in ``FORMAT``."""
    own, framework = levels(verbosity)
    for logger, level in (
        (logging.getLogger(LOGGER_NAME), own),
        (compat.FRAMEWORK_LOGGER, framework),
    ):
        _configure_logger(logger, level, sys.stdout if stream is None else stream)


def _configure_logger(logger: logging.Logger, level: int, stream: TextIO) -> None:
    ours = [handler for handler in logger.handlers if isinstance(handler, _WorkerHandler)]
    if ours:  # configured before, in this process
        for handler in ours:
            handler.setStream(stream)
    elif not logger.handlers:  # else the project's LOGGING gave it handlers: only those
        handler = _WorkerHandler(stream)
        handler.setFormatter(_Formatter(FORMAT))
        logger.addHandler(handler)
        # Django's own handlers of ``django`` would print the framework's lines again.
        logger.propagate = False
    if logger.level == logging.NOTSET or logger.name in _levels_set:
        logger.setLevel(level)
        _levels_set.add(logger.name)


def log_with_traceback(
    logger: logging.Logger, level: int, traceback: str, msg: str, *args: object
) -> None:
    """Log ``msg`` followed by a traceback another process formatted, as ``exc_info`` is.

    The traceback is the record's ``exc_text``: a formatter prints it after the message
    (``logging.Formatter``) or in a field of its own (JSON formatters), so the message
    itself stays one line.
    """
    if logger.isEnabledFor(level):
        record = _record(logger, level, msg, args)
        record.exc_text = traceback.rstrip("\n")
        logger.handle(record)


def log(logger: logging.Logger, level: int, msg: str, *args: object) -> None:
    """``logger.log``, for the lines a supervisor logs for every task.

    A line that goes only to the worker's handler, in this package's format, while its
    lines are held (the supervisor's loop), is formatted and held without a record: the
    record (the caller's frame, the process's and thread's names, ...) and its trip through
    the logger and the handler cost a tenth of the supervisor's CPU per task, for a line
    whose text does not use them. Any other line gets its record: it names the caller's
    file, line and function as ``logger.log`` does, without the walk of the stack
    (``Logger.findCaller``) that cost a sixth of each line.
    """
    if not logger.isEnabledFor(level):
        return
    handler = _sole_handler_holding(logger, level)
    if handler is None or (len(args) == 1 and isinstance(args[0], Mapping)):
        logger.handle(_record(logger, level, msg, args))  # (a mapping: ``%(name)s``)
        return
    formatter = handler.formatter
    assert isinstance(formatter, _Formatter)  # noqa: S101 (_sole_handler_holding checked)
    try:
        text = formatter.line(level, msg % args if args else msg)  # as ``getMessage``
    except Exception:  # a bad line: the record's way reports it as logging does
        logger.handle(_record(logger, level, msg, args))
        return
    _held.append((handler, None, text + handler.terminator))


def _sole_handler_holding(logger: logging.Logger, level: int) -> _WorkerHandler | None:
    """The worker's handler, if a line ``logger`` logs at ``level`` now would reach it and
    no other handler, pass no filter, be held (``held_lines``) and be formatted as
    ``FORMAT`` by this module's formatter; else None."""
    if level >= logging.WARNING or _holder != (os.getpid(), threading.get_ident()):
        return None
    if logger.filters or not _records_unhooked(logger):
        return None
    handlers: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        handlers += current.handlers
        current = current.parent if current.propagate else None
    if len(handlers) != 1:
        return None
    handler = handlers[0]
    if not isinstance(handler, _WorkerHandler) or handler.filters or level < handler.level:
        return None
    formatter = handler.formatter
    if type(formatter) is not _Formatter or formatter._fmt != FORMAT or formatter.datefmt:
        return None
    return handler


def _records_unhooked(logger: logging.Logger) -> bool:
    """Whether a record would only be formatted and written: no library hooks records
    (Sentry's logging integration replaces ``Logger.callHandlers``; a ``Logger`` subclass
    or a record factory may change them), and a record names its thread and process,
    without which ``_WorkerHandler`` writes a line at once."""
    logger_class = logging.Logger
    return (
        type(logger) is logger_class
        and logger_class.handle.__module__ == "logging"
        and logger_class.callHandlers.__module__ == "logging"
        and logger_class.makeRecord.__module__ == "logging"
        and logging.getLogRecordFactory() is logging.LogRecord
        and logging.logThreads
        and logging.logProcesses
    )


def _record(
    logger: logging.Logger, level: int, msg: str, args: tuple[object, ...]
) -> logging.LogRecord:
    """A record made by the caller of this module's function that calls this."""
    frame = sys._getframe(2)
    code = frame.f_code
    return logger.makeRecord(
        logger.name, level, code.co_filename, frame.f_lineno, msg, args, None, code.co_name
    )

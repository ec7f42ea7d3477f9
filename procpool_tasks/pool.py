"""The process pool: CPython's ``ProcessPoolExecutor``, with a memory limit per process.

``max_tasks_per_child`` replaces a worker process after N tasks; nothing in the executor
replaces one that has grown too big. A process here measures its resident memory after
each task (``Outcome.memory_mib``) and, past the limit, leaves the way a process at its
task count does: it sends the result with its pid as the one that exits, and the
executor joins it and starts another. The task that pushed it over keeps its outcome.

The executor has no public hook for the function its processes run, so ``_spawn_process``
(CPython 3.11 to 3.13) is overridden to start ``_work``, the executor's own worker loop
with that one check added; it uses the executor's private ``_sendback_result`` and
``_ExceptionWithTraceback`` to speak the same protocol.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, _base
from concurrent.futures import process as _executor
from typing import Any

__all__ = ["WorkerPool"]


class WorkerPool(ProcessPoolExecutor):
    """A process pool whose processes leave after a task that took them past
    ``max_memory_mib`` of resident memory (None: no limit)."""

    def __init__(self, *, max_memory_mib: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._max_memory_mib = max_memory_mib

    def _spawn_process(self) -> None:
        if self._max_memory_mib is None:
            super()._spawn_process()  # type: ignore[misc]
            return
        executor: Any = self  # its attributes are private, and untyped in typeshed
        process = executor._mp_context.Process(
            target=_work,
            args=(
                executor._call_queue,
                executor._result_queue,
                executor._initializer,
                executor._initargs,
                executor._max_tasks_per_child,
                self._max_memory_mib,
            ),
        )
        process.start()
        executor._processes[process.pid] = process


def _work(
    call_queue: Any,
    result_queue: Any,
    initializer: Any,
    initargs: tuple[Any, ...],
    max_tasks: int | None,
    max_memory_mib: float,
) -> None:
    """The executor's worker loop, leaving after a task that ends over the memory limit."""
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException:
            _base.LOGGER.critical("Exception in initializer:", exc_info=True)
            return  # the executor sees the process gone and marks the pool broken
    tasks_run = 0
    while True:
        call_item = call_queue.get(block=True)
        if call_item is None:
            result_queue.put(os.getpid())  # a clean shutdown
            return
        tasks_run += 1
        outcome: dict[str, Any]
        try:
            outcome = {"result": call_item.fn(*call_item.args, **call_item.kwargs)}
        except BaseException as error:
            trace = error.__traceback__
            outcome = {"exception": _executor._ExceptionWithTraceback(error, trace)}  # type: ignore[arg-type]
        used_mib = getattr(outcome.get("result"), "memory_mib", 0.0)
        leaving = (max_tasks is not None and tasks_run >= max_tasks) or used_mib > max_memory_mib
        _executor._sendback_result(
            result_queue, call_item.work_id, exit_pid=os.getpid() if leaving else None, **outcome
        )
        del outcome, call_item
        if leaving:
            return

"""A backend for the handoff tests that can hold little: no run_after, priority or async.

``FileListBackend`` appends each task it is given as a JSON line to the file
``OPTIONS["path"]`` and never runs it: a target that the tests can count copies in, and
that no finder knows (``procpool_tasks.operations.finders``).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from django.utils import timezone

from procpool_tasks import compat


class FileListBackend(compat.BaseTaskBackend):
    supports_defer = False
    supports_async_task = False
    supports_priority = False
    supports_get_result = True

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        self.validate_task(task)
        result: Any = compat.TaskResult(
            task=task,
            id=secrets.token_hex(8),
            status=compat.TaskResultStatus.READY,
            enqueued_at=timezone.now(),
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=list(args),
            kwargs=dict(kwargs),
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        line = {"id": result.id, "task": task.module_path, "args": result.args}
        with Path(self.options["path"]).open("a") as file:
            file.write(json.dumps({**line, "kwargs": result.kwargs, "queue": task.queue_name}))
            file.write("\n")
        return result

    def get_result(self, result_id: str) -> Any:
        raise compat.TaskResultDoesNotExist(result_id)

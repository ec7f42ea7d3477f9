"""Automatic retries: a task that raises a listed exception runs again after a backoff.

Real ``procpool_worker`` subprocesses run the tasks; ``tests.tasks.fail_times`` logs when
each attempt started, so the tests see how many attempts ran and how far apart. Delays
are a tenth of a second, without jitter, so that the backoff shows and the tests stay fast.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from procpool_tasks.backend import ProcPoolBackend
from procpool_tasks.options import RetryPolicy
from tests import tasks
from tests.conftest import REPO_ROOT, Env, wait_for
from tests.signal_log import SIGNAL_LOG_VARIABLE
from tests.support import TIMED_OUT, refreshed, set_options

TRANSIENT = "tests.tasks.TransientError"
DROPPED = "tests.tasks.ConnectionDropped"


def policy(**changes: Any) -> dict[str, Any]:
    """A retry policy of three attempts, 0.1 s then 0.2 s apart, for TransientError."""
    return {
        "attempts": 3,
        "delay": 0.1,
        "backoff": 2,
        "jitter": False,
        "exceptions": [TRANSIENT],
        **changes,
    }


def starts_of(log: Path) -> list[float]:
    """When each attempt of a ``fail_times`` task started (POSIX time)."""
    return [float(line) for line in log.read_text().splitlines()] if log.exists() else []


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


#: A line of the worker's own log: date, time, level, message.
LOG_LINE = re.compile(r"\S+ \S+ (?:DEBUG|INFO|WARNING|ERROR|CRITICAL) (.*)")


def messages_about(output: str, result_id: str) -> list[str]:
    """The worker's log messages (without time and level) that name this task id."""
    return [
        match[1]
        for match in map(LOG_LINE.fullmatch, output.splitlines())
        if match and f"id={result_id} " in match[1]
    ]


def retry_message(result_id: str, attempt: int, of: int, error: str, delay: str) -> str:
    return (
        f"Task id={result_id} path=tests.tasks.fail_times queue=default state=READY: "
        f"attempt {attempt} of {of} raised {error}; retrying in {delay}"
    )


def last_lines(result: Any) -> list[str]:
    """The last line of each attempt's traceback: the exception as it was raised."""
    return [error.traceback.rstrip().splitlines()[-1] for error in result.errors]


# -- retried until it succeeds, or until the last attempt ------------------------------------


def test_task_raising_a_listed_exception_runs_again_after_its_backoff_until_it_succeeds(
    env: Env,
) -> None:
    set_options(env, retry=policy())
    env.variables[SIGNAL_LOG_VARIABLE] = str(env.tmp_path / "signals.log")
    log = env.tmp_path / "attempts.log"
    result = tasks.fail_times.enqueue(str(log), 2)

    output = env.run_batch("--processes", "1", "--worker-id", "retrier")

    assert refreshed(result).status == "SUCCESSFUL"
    assert result.return_value == 3
    assert result.worker_ids == ["retrier", "retrier", "retrier"]
    assert [error.exception_class_path for error in result.errors] == [TRANSIENT, TRANSIENT]
    assert last_lines(result) == [
        f"{TRANSIENT}: attempt 1 of 2 planned failures",
        f"{TRANSIENT}: attempt 2 of 2 planned failures",
    ]
    # Each attempt started at least its backoff after the one before it began.
    first_gap, second_gap = gaps(starts_of(log))
    assert first_gap >= 0.1
    assert second_gap >= 0.2
    assert [m for m in messages_about(output, result.id) if "state=READY" in m] == [
        retry_message(result.id, 1, 3, f"{TRANSIENT}: attempt 1 of 2 planned failures", "0.1s"),
        retry_message(result.id, 2, 3, f"{TRANSIENT}: attempt 2 of 2 planned failures", "0.2s"),
    ]
    # An attempt that is retried is not finished: one task_finished, for the last; each
    # retry is the task enqueued again, READY, under its id.
    assert (env.tmp_path / "signals.log").read_text().splitlines() == [
        f"started {result.id}",
        f"enqueued {result.id} READY",
        f"started {result.id}",
        f"enqueued {result.id} READY",
        f"started {result.id}",
        f"finished {result.id} SUCCESSFUL",
    ]


def test_task_that_keeps_raising_ends_failed_after_its_last_attempt_with_every_error(
    env: Env,
) -> None:
    set_options(env, retry=policy())
    env.variables[SIGNAL_LOG_VARIABLE] = str(env.tmp_path / "signals.log")
    log = env.tmp_path / "attempts.log"
    result = tasks.fail_times.enqueue(str(log), 10)

    output = env.run_batch("--processes", "1", "--worker-id", "retrier")

    assert refreshed(result).status == "FAILED"
    assert result.worker_ids == ["retrier"] * 3
    assert [error.exception_class_path for error in result.errors] == [TRANSIENT] * 3
    assert last_lines(result) == [
        f"{TRANSIENT}: attempt {attempt} of 10 planned failures" for attempt in (1, 2, 3)
    ]
    assert len(starts_of(log)) == 3
    messages = messages_about(output, result.id)
    assert [m for m in messages if "state=READY" in m] == [
        retry_message(result.id, 1, 3, f"{TRANSIENT}: attempt 1 of 10 planned failures", "0.1s"),
        retry_message(result.id, 2, 3, f"{TRANSIENT}: attempt 2 of 10 planned failures", "0.2s"),
    ]
    assert [m.split(" duration=")[0] for m in messages if "state=FAILED" in m] == [
        f"Task id={result.id} path=tests.tasks.fail_times queue=default state=FAILED"
    ]
    assert (env.tmp_path / "signals.log").read_text().splitlines() == [
        *[f"started {result.id}", f"enqueued {result.id} READY"] * 2,
        f"started {result.id}",
        f"finished {result.id} FAILED",
    ]


def test_backoff_grows_by_its_factor_up_to_max_delay(env: Env) -> None:
    set_options(env, retry=policy(attempts=4, delay=0.1, backoff=3, max_delay=0.2))
    log = env.tmp_path / "attempts.log"
    result = tasks.fail_times.enqueue(str(log), 10)

    output = env.run_batch("--processes", "1")

    assert refreshed(result).status == "FAILED"
    assert [m.rsplit("; ", 1)[1] for m in messages_about(output, result.id) if "READY" in m] == [
        "retrying in 0.1s",
        "retrying in 0.2s",  # 0.3 capped
        "retrying in 0.2s",  # 0.9 capped
    ]
    spacing = gaps(starts_of(log))
    assert all(gap >= wait for gap, wait in zip(spacing, [0.1, 0.2, 0.2], strict=True)), spacing


def test_backoff_past_the_range_of_a_float_waits_max_delay_and_the_worker_goes_on(
    env: Env,
) -> None:
    """delay * backoff**(n-1) overflows: with backoff 2 after attempt 1025, here after 3."""
    set_options(env, retry=policy(attempts=4, delay=0.1, backoff=1e200, max_delay=0.2))
    result = tasks.fail_times.enqueue(str(env.tmp_path / "attempts.log"), 10)

    output = env.run_batch("--processes", "1")  # exits 0: the supervisor did not crash

    assert refreshed(result).status == "FAILED"
    assert len(result.worker_ids) == 4
    assert [m.rsplit("; ", 1)[1] for m in messages_about(output, result.id) if "READY" in m] == [
        "retrying in 0.1s",
        "retrying in 0.2s",
        "retrying in 0.2s",
    ]


def test_a_long_policy_waits_max_delay_between_its_late_attempts() -> None:
    long_policy = RetryPolicy(attempts=2000, backoff=2, delay=1, max_delay=300, jitter=False)
    assert [long_policy.delay_after(n) for n in (1, 2, 9, 10, 1024, 1025, 1999)] == [
        1,
        2,
        256,
        300,
        300,
        300,
        300,
    ]
    at_once = RetryPolicy(attempts=2000, backoff=2, delay=0, jitter=False)
    assert at_once.delay_after(1999) == 0


def test_jitter_takes_at_most_half_of_the_backoff_off(env: Env) -> None:
    set_options(env, retry=policy(attempts=4, delay=0.2, backoff=1, jitter=True))
    log = env.tmp_path / "attempts.log"
    result = tasks.fail_times.enqueue(str(log), 10)

    output = env.run_batch("--processes", "1")

    assert refreshed(result).status == "FAILED"
    delays = [
        float(m.rsplit("retrying in ", 1)[1].removesuffix("s"))
        for m in messages_about(output, result.id)
        if "state=READY" in m
    ]
    assert len(delays) == 3
    assert all(0.1 <= delay <= 0.2 for delay in delays), delays
    assert all(gap >= 0.1 for gap in gaps(starts_of(log))), gaps(starts_of(log))


def test_task_waiting_for_its_retry_is_ready_and_deferred_until_its_backoff_has_passed(
    env: Env,
) -> None:
    set_options(env, retry=policy(delay=120))
    log = env.tmp_path / "attempts.log"
    result = tasks.fail_times.enqueue(str(log), 1)
    worker = env.start_worker("--processes", "1", "--worker-id", "first")

    wait_for(lambda: "retrying in 120.0s" in worker.output, what="the first attempt to fail")
    assert worker.stop() == 0

    assert refreshed(result).status == "READY"
    assert result.worker_ids == ["first"]
    assert last_lines(result) == [f"{TRANSIENT}: attempt 1 of 1 planned failures"]
    status = json.loads(run_command(env, "procpool_status", "--json"))
    assert (status["queues"]["default"]["DEFERRED"], status["queues"]["default"]["READY"]) == (
        1,
        0,
    )
    # Another worker honours the backoff too: nothing is due.
    env.run_batch("--processes", "1", "--worker-id", "second")
    assert refreshed(result).status == "READY"
    assert len(starts_of(log)) == 1


# -- which exceptions are retried --------------------------------------------------------------


def test_only_listed_exceptions_and_their_subclasses_are_retried(env: Env) -> None:
    set_options(env, retry=policy())
    unlisted_log, subclass_log = env.tmp_path / "unlisted.log", env.tmp_path / "subclass.log"
    unlisted = tasks.fail_times.enqueue(str(unlisted_log), 1, "ValueError")
    subclass = tasks.fail_times.enqueue(str(subclass_log), 1, "ConnectionDropped")

    env.run_batch("--processes", "1")

    assert refreshed(unlisted).status == "FAILED"
    assert len(unlisted.worker_ids) == 1
    assert last_lines(unlisted) == ["ValueError: attempt 1 of 1 planned failures"]
    assert len(starts_of(unlisted_log)) == 1
    assert refreshed(subclass).status == "SUCCESSFUL"
    assert subclass.return_value == 2
    assert [error.exception_class_path for error in subclass.errors] == [DROPPED]


def test_without_a_retry_option_a_raising_task_fails_at_once(env: Env) -> None:
    log = env.tmp_path / "attempts.log"
    result = tasks.fail_times.enqueue(str(log), 1)

    output = env.run_batch("--processes", "1")

    assert refreshed(result).status == "FAILED"
    assert len(result.worker_ids) == 1
    assert len(starts_of(log)) == 1
    assert "retrying" not in output


def test_a_policy_without_exceptions_retries_any_exception_but_not_a_timeout(env: Env) -> None:
    set_options(
        env,
        retry=policy(attempts=2, exceptions=[]),
        task_options={"tests.tasks.sleep_for": {"timeout": 0.5}},
    )
    log = env.tmp_path / "attempts.log"
    raising = tasks.fail_times.enqueue(str(log), 1, "ValueError")
    slow = tasks.sleep_for.enqueue(30)

    env.run_batch("--processes", "1")

    assert refreshed(raising).status == "SUCCESSFUL"
    assert last_lines(raising) == ["ValueError: attempt 1 of 1 planned failures"]
    assert refreshed(slow).status == "FAILED"
    assert len(slow.worker_ids) == 1
    assert last_lines(slow) == [f"{TIMED_OUT}: The task exceeded its timeout of 0.5s"]


def test_a_policy_that_lists_the_timeout_error_retries_a_task_that_timed_out(env: Env) -> None:
    set_options(
        env,
        retry=policy(attempts=2, exceptions=[TIMED_OUT]),
        task_options={"tests.tasks.sleep_for": {"timeout": 0.3}},
    )
    slow = tasks.sleep_for.enqueue(30)

    env.run_batch("--processes", "1")

    assert refreshed(slow).status == "FAILED"
    assert last_lines(slow) == [f"{TIMED_OUT}: The task exceeded its timeout of 0.3s"] * 2


def test_a_policy_that_names_the_timeout_error_by_its_path_of_0_1_still_retries_it(
    env: Env,
) -> None:
    set_options(
        env,
        retry=policy(attempts=2, exceptions=["procpool_tasks.execution.TaskTimeoutError"]),
        task_options={"tests.tasks.sleep_for": {"timeout": 0.3}},
    )
    slow = tasks.sleep_for.enqueue(30)

    env.run_batch("--processes", "1")

    assert refreshed(slow).status == "FAILED"
    assert last_lines(slow) == [f"{TIMED_OUT}: The task exceeded its timeout of 0.3s"] * 2


# -- per-task options --------------------------------------------------------------------------


def test_a_tasks_own_retry_policy_is_merged_over_the_backends(env: Env) -> None:
    set_options(
        env,
        retry=policy(attempts=2),
        task_options={"tests.tasks.fail_times": {"retry": {"attempts": 4}}},
    )
    own_log = env.tmp_path / "own.log"
    own = tasks.fail_times.enqueue(str(own_log), 10)
    unlisted = tasks.fail_times.enqueue(str(env.tmp_path / "unlisted.log"), 10, "ValueError")
    backends = tasks.fail_with.enqueue("not listed")

    output = env.run_batch("--processes", "1")

    assert refreshed(own).status == "FAILED"
    assert len(own.worker_ids) == 4
    # The task gave only its attempts: delay, backoff and exceptions are the backend's.
    assert [m.rsplit("; ", 1)[1] for m in messages_about(output, own.id) if "READY" in m] == [
        "retrying in 0.1s",
        "retrying in 0.2s",
        "retrying in 0.4s",
    ]
    assert len(refreshed(unlisted).worker_ids) == 1
    assert refreshed(backends).status == "FAILED"
    assert len(backends.worker_ids) == 1  # ValueError is not in the backend's list either


def test_retry_none_in_task_options_turns_retries_off_for_that_task_only(env: Env) -> None:
    set_options(
        env,
        retry=policy(exceptions=[]),
        task_options={"tests.tasks.fail_with": {"retry": None}},
    )
    off = tasks.fail_with.enqueue("no retries for me")
    on = tasks.fail_times.enqueue(str(env.tmp_path / "attempts.log"), 1, "ValueError")

    output = env.run_batch("--processes", "1")

    assert refreshed(off).status == "FAILED"
    assert len(off.worker_ids) == 1
    assert last_lines(off) == ["ValueError: no retries for me"]
    assert not [m for m in messages_about(output, off.id) if "retrying" in m]
    assert refreshed(on).status == "SUCCESSFUL"
    assert len(on.worker_ids) == 2


def test_a_tasks_own_timeout_wins_over_task_timeout_which_wins_over_the_option(
    env: Env,
) -> None:
    set_options(
        env,
        task_timeout=0.5,
        task_options={"tests.tasks.block_until": {"timeout": 0.5}},
    )
    never = env.tmp_path / "never"
    outlives_the_option = tasks.sleep_for.enqueue(1.0)
    held = tasks.block_until.enqueue(str(never), str(env.tmp_path / "started"))

    env.run_batch("--processes", "1", "--task-timeout", "30")

    assert refreshed(outlives_the_option).status == "SUCCESSFUL"
    assert refreshed(held).status == "FAILED"
    assert last_lines(held) == [f"{TIMED_OUT}: The task exceeded its timeout of 0.5s"]


# -- checks ----------------------------------------------------------------------------------


def run_command(env: Env, *args: str, expect_code: int = 0) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "django", *args],
        env=env.variables,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == expect_code, done.stdout + done.stderr
    return done.stdout + done.stderr


def check_errors(output: str) -> list[str]:
    """The system check errors in a command's output: ``(id) message`` and its hint."""
    return re.findall(r": (\(procpool_tasks\.E\d+\) .*\n\tHINT: .*)", output)


def procpool_messages(backend: ProcPoolBackend) -> list[tuple[str | None, str, str | None]]:
    """The backend's own check messages as (id, message, hint)."""
    return [(m.id, m.msg, m.hint) for m in backend.check() if (m.id or "").startswith("procpool")]


OPTIONS_HINT = "\tHINT: Fix the backend's OPTIONS in the TASKS setting."
WHERE = "TASKS['default']['OPTIONS']"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param(
            {"retry": {"attempts": 0}},
            f"{WHERE}['retry']['attempts'] must be a whole number >= 1, not 0",
            id="attempts-zero",
        ),
        pytest.param(
            {"retry": {"attempts": 2.5}},
            f"{WHERE}['retry']['attempts'] must be a whole number >= 1, not 2.5",
            id="attempts-fraction",
        ),
        pytest.param(
            {"retry": {"backoff": 0.5}},
            f"{WHERE}['retry']['backoff'] must be a number >= 1 (1: the same wait each "
            "time), not 0.5",
            id="backoff-below-one",
        ),
        pytest.param(
            {"retry": {"delay": -1}},
            f"{WHERE}['retry']['delay'] must be a number of seconds >= 0, not -1",
            id="delay-negative",
        ),
        pytest.param(
            {"retry": {"max_delay": "5m"}},
            f"{WHERE}['retry']['max_delay'] must be a number of seconds >= 0, not '5m'",
            id="max-delay-text",
        ),
        pytest.param(
            {"retry": {"jitter": "yes"}},
            f"{WHERE}['retry']['jitter'] must be True or False, not 'yes'",
            id="jitter-text",
        ),
        pytest.param(
            {"retry": {"exceptions": TRANSIENT}},
            f"{WHERE}['retry']['exceptions'] must be a list of exception class paths, "
            f"not '{TRANSIENT}'",
            id="exceptions-a-string",
        ),
        pytest.param(
            {"retry": {"exceptions": ["TransientError"]}},
            f"{WHERE}['retry']['exceptions'] must hold dotted paths such as "
            "'myapp.errors.Transient', not 'TransientError'",
            id="exceptions-not-dotted",
        ),
        pytest.param(
            {"retry": {"tries": 3}},
            f"{WHERE}['retry'] has unknown keys ['tries']; the keys are 'attempts', "
            "'backoff', 'delay', 'max_delay', 'jitter' and 'exceptions'",
            id="retry-unknown-key",
        ),
        pytest.param(
            {"retry": 3},
            f"{WHERE}['retry'] must be a dict such as {{'attempts': 3}}, not 3",
            id="retry-a-number",
        ),
        pytest.param(
            {"enqueue_on_commit": "yes"},
            f"{WHERE}['enqueue_on_commit'] must be True or False, not 'yes'",
            id="enqueue-on-commit-text",
        ),
        pytest.param(
            {"task_options": {"tests.tasks.add": {"timeout": 0}}},
            f"{WHERE}['task_options']['tests.tasks.add']['timeout'] must be a number of "
            "seconds > 0, or None; not 0",
            id="task-timeout-zero",
        ),
        pytest.param(
            {"task_options": {"tests.tasks.add": {"retry": {"attempts": -1}}}},
            f"{WHERE}['task_options']['tests.tasks.add']['retry']['attempts'] must be a "
            "whole number >= 1, not -1",
            id="task-retry-attempts",
        ),
        pytest.param(
            {"task_options": {"tests.tasks.add": {"enqueue_on_commit": 1}}},
            f"{WHERE}['task_options']['tests.tasks.add']['enqueue_on_commit'] must be True "
            "or False, not 1",
            id="task-enqueue-on-commit",
        ),
        pytest.param(
            {"task_options": {"tests.tasks.add": {"retries": 3}}},
            f"{WHERE}['task_options']['tests.tasks.add'] has unknown keys ['retries']; the "
            "keys are 'retry', 'max_attempts', 'backoff', 'timeout' and 'enqueue_on_commit'",
            id="task-unknown-key",
        ),
        pytest.param(
            {"task_options": {"add": {"timeout": 1}}},
            f"{WHERE}['task_options'] keys must be dotted task paths such as "
            "'myapp.tasks.send_mail', not 'add'",
            id="task-path-not-dotted",
        ),
        pytest.param(
            {"retention": {"SUCCESSFUL": 0}},
            f"{WHERE}['retention']['SUCCESSFUL'] must be a number of seconds > 0, or None; not 0",
            id="retention-zero",
        ),
        pytest.param(
            {"retention": {"RUNNING": 60}},
            f"{WHERE}['retention'] has unknown keys ['RUNNING']; the keys are 'SUCCESSFUL', "
            "'FAILED' and 'HANDED_OFF'",
            id="retention-unknown-status",
        ),
    ],
)
def test_wrong_policy_options_are_check_error_e001_naming_the_key(
    env: Env, options: dict[str, Any], message: str
) -> None:
    checked = ProcPoolBackend(
        alias="default", params={"OPTIONS": {"path": str(env.journal), **options}}
    )

    assert procpool_messages(checked) == [
        ("procpool_tasks.E001", message, "Fix the backend's OPTIONS in the TASKS setting.")
    ]


def test_worker_with_a_wrong_retry_option_refuses_to_start_and_runs_nothing(env: Env) -> None:
    set_options(env, retry={"attempts": 0})
    result = tasks.add.enqueue(1, 2)

    output = run_command(env, "procpool_worker", "--batch", "--no-reload", expect_code=1)

    assert check_errors(output) == [
        f"(procpool_tasks.E001) {WHERE}['retry']['attempts'] must be a whole number >= 1, "
        f"not 0\n{OPTIONS_HINT}"
    ]
    assert refreshed(result).status == "READY"


def test_retry_exceptions_that_do_not_import_are_check_error_e003(env: Env) -> None:
    set_options(
        env,
        retry={"exceptions": ["tests.tasks.NoSuchError", TRANSIENT]},
        task_options={"tests.tasks.fail_times": {"retry": {"exceptions": ["tests.tasks.add"]}}},
    )

    output = run_command(env, "check", expect_code=1)

    hint = "\tHINT: Give the dotted path of an exception class, such as 'myapp.errors.Transient'."
    assert check_errors(output) == [
        f"(procpool_tasks.E003) {WHERE}['retry']['exceptions'] names "
        f"'tests.tasks.NoSuchError', which cannot be imported\n{hint}",
        f"(procpool_tasks.E003) {WHERE}['task_options']['tests.tasks.fail_times']['retry']"
        f"['exceptions'] names 'tests.tasks.add', which is not an exception class\n{hint}",
    ]


def test_task_options_for_paths_that_are_not_tasks_are_check_error_e004(env: Env) -> None:
    set_options(
        env,
        task_options={
            "tests.tasks.fail_times": {"timeout": 5},
            "tests.tasks.not_a_task": {"timeout": 5},
            "tests.nosuch.send_mail": {"retry": None},
        },
    )

    output = run_command(env, "check", expect_code=1)

    hint = (
        "\tHINT: Use the dotted path of a function decorated with @task (its module_path), "
        "e.g. 'myapp.tasks.send_mail'."
    )
    assert check_errors(output) == [
        f"(procpool_tasks.E004) {WHERE}['task_options'] names '{path}', which is not a task\n{hint}"
        for path in ("tests.nosuch.send_mail", "tests.tasks.not_a_task")
    ]


def test_the_retry_options_of_these_tests_pass_every_check(env: Env) -> None:
    checked = ProcPoolBackend(
        alias="default",
        params={
            "OPTIONS": {
                "path": str(env.journal),
                "retry": policy(exceptions=[TRANSIENT, DROPPED]),
                "task_options": {
                    "tests.tasks.fail_times": {"retry": {"attempts": 4}, "timeout": 5},
                    "tests.tasks.fail_with": {"retry": None, "enqueue_on_commit": True},
                },
            }
        },
    )
    assert procpool_messages(checked) == []

"""Run procpool_tasks end to end: enqueue a few hundred tasks, run the worker, summarise.

    python3 example/demo.py [--tasks 300] [--processes 2]

Uses a fresh journal directory each run, so it can be run again and again; it ends with
the commands that look at what ran there.
"""

from __future__ import annotations

import argparse
import collections
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLE_DIR = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=300, help="how many tasks (default 300)")
    parser.add_argument("--processes", type=int, default=2, help="worker processes (default 2)")
    options = parser.parse_args()

    journal = tempfile.mkdtemp(prefix="procpool-demo-")
    os.environ["EXAMPLE_JOURNAL"] = journal
    os.environ["DJANGO_SETTINGS_MODULE"] = "example_project.settings"
    sys.path.insert(0, str(EXAMPLE_DIR))
    import django

    django.setup()
    from example_project import tasks

    print(f"Journal: {journal}")
    started = time.monotonic()
    results = []
    for n in range(options.tasks):
        if n % 50 == 0:
            results.append(tasks.build_report.enqueue(f"report-{n}", rows=n))
        elif n % 25 == 0:
            results.append(tasks.divide.enqueue(n, 0))  # fails, on purpose
        elif n % 10 == 0:
            results.append(tasks.fetch_profile.enqueue(n))
        else:
            results.append(tasks.checksum.enqueue(f"item-{n}"))
    enqueue_s = time.monotonic() - started
    print(f"Enqueued {len(results)} tasks in {enqueue_s:.2f}s (each fsync'd to the journal)")

    command = [
        sys.executable, str(EXAMPLE_DIR / "manage.py"), "procpool_worker",
        "--batch", "--queue-name", "*", "--processes", str(options.processes), "-v", "0",
    ]  # fmt: skip
    print(f"Running: {shlex.join([os.path.relpath(command[1]), *command[2:]])}")
    started = time.monotonic()
    worker = subprocess.Popen(command)
    sample = results[::10]
    while worker.poll() is None:
        if sys.stdout.isatty():  # a progress line, read back from the result files
            done = sum(result.task.get_result(result.id).is_finished for result in sample)
            print(f"\r  finished ~{done * len(results) // len(sample)}/{len(results)}", end="")
        time.sleep(0.2)
    run_s = time.monotonic() - started
    print(f"\r  worker exited with code {worker.returncode} after {run_s:.2f}s" + " " * 10)
    if worker.returncode != 0:
        return worker.returncode

    for result in results:
        result.refresh()
    by_status = collections.Counter(str(result.status) for result in results)
    print("\nSummary")
    for status, count in sorted(by_status.items()):
        print(f"  {status:<11} {count}")
    print(f"  throughput  {len(results) / run_s:.0f} tasks/s with {options.processes} processes")
    sample_result = results[1]
    print(f"\nA result:  {sample_result.task.name}{tuple(sample_result.args)} -> "
          f"{sample_result.return_value}")  # fmt: skip
    failed = next(result for result in results if result.status == "FAILED")
    print(f"A failure: {failed.task.name}{tuple(failed.args)} raised "
          f"{failed.errors[0].exception_class_path}")  # fmt: skip
    print_how_to_look(journal)
    unfinished = sum(not result.is_finished for result in results)
    return 0 if unfinished == 0 else 1


def print_how_to_look(journal: str) -> None:
    """The commands that show what the demo ran: its journal stays until it is deleted."""
    python = "python3" if shutil.which("python3") == sys.executable else sys.executable
    manage = os.path.relpath(EXAMPLE_DIR / "manage.py")
    prefix = f"EXAMPLE_JOURNAL={shlex.quote(journal)} {shlex.quote(python)} {shlex.quote(manage)}"
    print("\nLook at what it ran (the journal stays until you delete it):")
    print(f"  {prefix} procpool_status         # counts per queue, the failures")
    print(f"  {prefix} procpool_status --json  # the same, as JSON")
    print(f"  rm -r {shlex.quote(journal)}")


if __name__ == "__main__":
    sys.exit(main())

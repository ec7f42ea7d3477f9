import json
import shlex
import subprocess
import sys

from tests import tasks
from tests.conftest import REPO_ROOT, Env


def test_enqueued_task_runs_in_a_batch_worker(env: Env) -> None:
    result = tasks.add.enqueue(2, 3)

    env.run_batch("--processes", "1")

    result.refresh()
    assert result.status == "SUCCESSFUL"
    assert result.return_value == 5


def test_the_demo_quotes_its_command_and_ends_with_the_commands_that_look_at_its_run(
    env: Env,
) -> None:
    demo = subprocess.run(
        [sys.executable, "example/demo.py", "--tasks", "30", "--processes", "1"],
        env={**env.variables, "TMPDIR": str(env.tmp_path)},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    lines = demo.stdout.splitlines()

    [journal] = env.tmp_path.glob("procpool-demo-*")
    assert lines[0] == f"Journal: {journal}"
    assert lines[2] == (
        "Running: example/manage.py procpool_worker --batch --queue-name '*' --processes 1 -v 0"
    )
    python = shlex.quote(sys.executable)
    prefix = f"EXAMPLE_JOURNAL={journal} {python} example/manage.py"
    assert lines[-4:] == [
        "Look at what it ran (the journal stays until you delete it):",
        f"  {prefix} procpool_status         # counts per queue, the failures",
        f"  {prefix} procpool_status --json  # the same, as JSON",
        f"  rm -r {journal}",
    ]
    # As a shell runs it, pasted; the test settings' module must not stand in for the demo's.
    shell_env = {
        key: value for key, value in env.variables.items() if key != "DJANGO_SETTINGS_MODULE"
    }
    looked = subprocess.run(
        ["sh", "-c", lines[-2].strip()],
        env=shell_env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(looked.stdout)["totals"]["SUCCESSFUL"] == 29

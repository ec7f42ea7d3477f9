"""Benchmarks: procpool_tasks beside the task queues a user would otherwise pick.

``python -m benchmarks`` runs every workload on every system on this machine and prints
a Markdown table with ratios against procpool_tasks (durable); ``--quick`` runs the same
code with tiny sizes. See ``python -m benchmarks --help`` and docs/benchmarks.md.

Modules, one concern each::

    __main__.py    the command line: options, progress on stderr, the order of the run
    systems.py     one adapter per system: its settings, worker command, service, history
    projects.py    a throwaway Django project per system and run (settings in a temp dir)
    client.py      what runs inside such a project: enqueue, wait, latency, get_result
    bench_tasks.py the @task functions every system runs
    workloads.py   the workloads (a)-(f) of the issue, sizes for a full and a quick run
    limits.py      the physical limits of the design on this disk and machine
    processes.py   starting, measuring (RSS of a process tree) and stopping processes
    stats.py       a figure: the median of repeats and their spread
    machine.py     what a run ran on: CPU, memory, the disk measured, versions
    report.py      the Markdown table, the JSON results and the PNG chart
    compare.py     --compare: this run's ratios to procpool_tasks against an earlier run's
"""

"""The ``procpool_worker`` process tree: the supervisor, its parts, what runs in a process.

Nothing outside this package imports it but the ``procpool_worker`` command. Modules, one
concern each::

    supervisor  the loop: claim, dispatch, wait, commit; starts and stops everything below
    ready       the ready set, in priority order
    intake      reading the journal into the ready set
    dispatch    claims, sending tasks to processes, deaths, time and memory limits
    pool        the worker processes themselves and their pipes
    zygote      the fork of the supervisor that forks the worker processes (and the next)
    outcomes    what each end of a task means, acted on once committed
    states      the state transitions a task goes through, and the errors recorded
    committer   group commit of finished states, in a process of its own
    recovery    the tasks of supervisors that died
    background  result files made ahead (a process), the history's summaries (a thread)
    wakeups     signals and journal changes, into one selector
    lifeline    a process dies with the one it serves
    child       what runs in a worker process: one task at a time
    reload      ``--reload``: restart the supervisor when the code changes
"""

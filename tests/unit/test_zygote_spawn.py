"""Asking the zygote for a process, over a real socket, with the zygote's end played here."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from procpool_tasks.worker.zygote import WORKER, Zygote


def test_a_spawn_ends_when_the_zygote_dies_between_its_fork_and_its_answer() -> None:
    # The child the zygote forked holds the status pipe, so no end of file comes there:
    # the zygote's socket says it is gone. The supervisor used to wait a minute for the
    # answer (SPAWN_TIMEOUT_S), claiming and committing nothing meanwhile.
    supervisor_end, zygote_end = socket.socketpair()
    zygote = object.__new__(Zygote)  # its constructor forks a real zygote: not this one
    zygote._socket = supervisor_end
    held_by_the_forked_child: list[int] = []

    def fork_then_die() -> None:
        _kind, fds, _flags, _address = socket.recv_fds(zygote_end, 1, 2)
        held_by_the_forked_child.extend(fds)
        zygote_end.close()

    zygote_process = threading.Thread(target=fork_then_die, daemon=True)
    zygote_process.start()
    try:
        with pytest.raises(ConnectionResetError, match="closed its socket"):
            zygote._spawn(WORKER)
    finally:
        zygote_process.join(timeout=5)  # (it waits for ever if no request came)
        supervisor_end.close()
        for fd in held_by_the_forked_child:
            os.close(fd)

"""What the operator commands and the status page do: status, requeue, quarantine, handoff.

Each module is a library of plain functions over a backend and its journal; the commands
in ``management/commands`` and the views in ``web`` only parse input and show results.
"""

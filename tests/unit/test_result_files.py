"""Result files made ahead of their claims: empty, they read as no state at all."""

from __future__ import annotations

from procpool_tasks import journal
from procpool_tasks.worker import states
from tests.unit.conftest import INSTANCE, enqueue


def result_file(store: journal.Journal, record: journal.Record) -> bytes:
    segment, offset = journal.parse_id(record.id)
    return (store.results_dir / segment / f"{offset:x}.json").read_bytes()


def test_a_result_file_made_ahead_is_empty_and_reads_as_no_state(
    store: journal.Journal,
) -> None:
    record = enqueue(store)

    store.prepare_result_file(record.id)

    assert result_file(store, record) == b""
    assert store.read_state(record.id) is None


def test_a_result_file_made_ahead_never_replaces_a_state(store: journal.Journal) -> None:
    record = enqueue(store)
    running = states.running(record, None, "worker", INSTANCE)
    store.write_state(running)
    before = result_file(store, record)

    store.prepare_result_file(record.id)

    assert result_file(store, record) == before
    assert store.read_state(record.id) == running


def test_a_claim_appends_to_the_file_made_ahead(store: journal.Journal) -> None:
    record = enqueue(store)
    store.prepare_result_file(record.id)
    running = states.running(record, None, "worker", INSTANCE)

    store.write_state(running)

    assert store.read_state(record.id) == running


def test_a_listing_names_the_tasks_with_a_state_and_not_those_made_ahead(
    store: journal.Journal,
) -> None:
    """So that a supervisor starting on a backlog whose files were made reads no state of
    its own for each task (``Intake``), nor does a survey (``history``)."""
    claimed, prepared, untouched = enqueue(store), enqueue(store), enqueue(store)
    store.write_state(states.running(claimed, None, "worker", INSTANCE))
    store.prepare_result_file(prepared.id)

    segment = journal.parse_id(untouched.id)[0]
    assert store.ids_with_state(segment) == {claimed.id}

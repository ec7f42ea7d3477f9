"""Result files made ahead of their claims: empty, they read as no state at all."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from procpool_tasks import journal
from procpool_tasks.worker import states
from tests.unit.conftest import INSTANCE, enqueue


def path_of(store: journal.Journal, record: journal.Record) -> Path:
    segment, offset = journal.parse_id(record.id)
    return store.results_dir / segment / f"{offset:x}.json"


def result_file(store: journal.Journal, record: journal.Record) -> bytes:
    return path_of(store, record).read_bytes()


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


@pytest.fixture(params=["walked from the root", "kept open"])
def claiming_store(request: pytest.FixtureRequest, store: journal.Journal) -> journal.Journal:
    """A journal as web processes open it, and as a supervisor does (directories kept)."""
    if request.param == "kept open":
        store.keep_directories_open()
    return store


def test_a_claim_reads_and_appends_through_the_file_made_ahead(
    claiming_store: journal.Journal,
) -> None:
    record = enqueue(claiming_store)
    claiming_store.prepare_result_file(record.id)
    running = states.running(record, None, "worker", INSTANCE)

    with claiming_store.result_file(record.id) as file:
        assert file.read_state() is None
        file.write_state(running)

    assert claiming_store.read_state(record.id) == running
    assert path_of(claiming_store, record).read_bytes() == b"\n" + journal.state_line(running)


def test_a_claim_reads_the_last_state_and_appends_after_it(
    claiming_store: journal.Journal,
) -> None:
    record = enqueue(claiming_store)
    first = states.running(record, None, "worker", INSTANCE)
    claiming_store.write_state(first)
    again = states.running(record, first, "worker", INSTANCE)

    with claiming_store.result_file(record.id) as file:
        assert file.read_state() == first
        file.write_state(again)

    assert claiming_store.read_state(record.id) == again
    appended = b"".join(b"\n" + journal.state_line(state) for state in (first, again))
    assert path_of(claiming_store, record).read_bytes() == appended


def test_a_claim_of_a_task_without_a_file_makes_it_and_reading_alone_makes_nothing(
    claiming_store: journal.Journal,
) -> None:
    """A segment pruned meanwhile must not get its results directory back from a read."""
    record, other = enqueue(claiming_store), enqueue(claiming_store)
    results = path_of(claiming_store, record).parent

    with claiming_store.result_file(other.id) as file:
        assert file.read_state() is None
    assert not results.exists()

    running = states.running(record, None, "worker", INSTANCE)
    with claiming_store.result_file(record.id) as file:
        assert file.read_state() is None
        file.write_state(running)
    assert claiming_store.read_state(record.id) == running


def test_a_claim_replaces_a_fifo_planted_for_a_result_file_and_does_not_hang(
    claiming_store: journal.Journal,
) -> None:
    record = enqueue(claiming_store)
    path = path_of(claiming_store, record)
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    running = states.running(record, None, "worker", INSTANCE)

    with claiming_store.result_file(record.id) as file:
        assert file.read_state() is None
        file.write_state(running)

    assert stat.S_ISREG(path.lstat().st_mode)
    assert claiming_store.read_state(record.id) == running


def test_a_claim_refuses_a_symlink_planted_for_a_result_file_and_writes_nothing_through_it(
    claiming_store: journal.Journal, tmp_path: Path
) -> None:
    record = enqueue(claiming_store)
    path = path_of(claiming_store, record)
    path.parent.mkdir(parents=True)
    target = tmp_path / "target"
    target.write_bytes(b"")
    path.symlink_to(target)

    with claiming_store.result_file(record.id) as file, pytest.raises(journal.JournalError):
        file.read_state()

    assert target.read_bytes() == b""


def test_a_task_without_a_state_reads_as_pruned_once_its_segment_is_done_or_gone(
    claiming_store: journal.Journal,
) -> None:
    """What a claim asks of every task it finds without a state (``was_pruned``)."""
    record = enqueue(claiming_store)
    segment = journal.parse_id(record.id)[0]
    claiming_store.prepare_result_file(record.id)
    assert not claiming_store.was_pruned(record.id)

    claiming_store.mark_done(segment)
    assert claiming_store.was_pruned(record.id)

    (claiming_store.segments_dir / f"{segment}.done").unlink()
    assert not claiming_store.was_pruned(record.id)
    for path in claiming_store.segments_dir.glob(f"{segment}.*"):
        path.unlink()
    assert claiming_store.was_pruned(record.id)


def test_a_supervisors_pruned_check_survives_its_journal_removed_and_made_again(
    store: journal.Journal,
) -> None:
    """The segments directory it keeps open is then a removed one: its answers are asked
    again by path, and it is opened again."""
    store.keep_directories_open()
    before = enqueue(store)
    assert not store.was_pruned(before.id)

    shutil.rmtree(store.path)
    store.ensure()
    after = enqueue(store)

    assert not store.was_pruned(after.id)
    assert not store.was_pruned(after.id)  # (through the directory opened again)
    store.mark_done(journal.parse_id(after.id)[0])
    assert store.was_pruned(after.id)


def test_a_claim_appends_through_the_file_it_opened_to_read(
    claiming_store: journal.Journal,
) -> None:
    """One open for both steps: the append goes to the file read, wherever its name went."""
    record = enqueue(claiming_store)
    claiming_store.prepare_result_file(record.id)
    path = path_of(claiming_store, record)
    running = states.running(record, None, "worker", INSTANCE)

    with claiming_store.result_file(record.id) as file:
        assert file.read_state() is None
        path.rename(path.with_name("elsewhere"))
        file.write_state(running)

    assert path.with_name("elsewhere").read_bytes() == b"\n" + journal.state_line(running)
    assert not path.exists()

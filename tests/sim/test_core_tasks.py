"""Tasks in ``pve_sim.tasks``: UPIDs, worker progression on the event heap, logs and statuses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pve_sim.errors import PveApiError
from pve_sim.tasks import (
    Scheduler,
    Task,
    TaskError,
    TaskManager,
    UpidFields,
    decode_upid,
    encode_upid,
    format_duration,
    status_type,
)

START = 1_750_000_000.0


class ManualTime:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    "upid",
    [
        "UPID:example-node:0000C346:165A0CE4:68D7279C:aptupdate::root@pam:",
        "UPID:example-node:000934AF:0D015579:68BF3A41:hastart:100:root@pam:",
        "UPID:pve1:003A1F2C:10B2C3D4E:6650A1B2:vzstart:101:ops@pve!operator:",
    ],
)
def test_pve_test_vectors_round_trip(upid: str) -> None:
    fields = decode_upid(upid)

    assert fields is not None
    assert encode_upid(fields) == upid


def test_decoded_fields_are_numbers_and_the_token_user_is_kept() -> None:
    fields = decode_upid("UPID:pve1:003A1F2C:0B2C3D4E:6650A1B2:vzstart:101:ops@pve!operator:")

    assert fields == UpidFields("pve1", 0x3A1F2C, 0xB2C3D4E, 0x6650A1B2, "vzstart", "101", "ops@pve!operator")


@pytest.mark.parametrize(
    "text",
    [
        "UPID:pve1:003A1F2C:0B2C3D4E:6650A1B2:vzstart:101:root@pam",  # no trailing colon
        "UPID:pve1:3A1F2C:0B2C3D4E:6650A1B2:vzstart:101:root@pam:",  # pid not 8 hex digits
        "UPID:-pve1:003A1F2C:0B2C3D4E:6650A1B2:vzstart:101:root@pam:",  # invalid node name
        "not-a-upid",
    ],
)
def test_malformed_upids_do_not_decode(text: str) -> None:
    assert decode_upid(text) is None


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("OK", "ok"),
        ("WARNINGS: 2", "warning"),
        ("unexpected status", "unknown"),
        (None, "unknown"),
        ("migration aborted", "error"),
    ],
)
def test_status_types_as_statusfilter_sees_them(status: str | None, kind: str) -> None:
    assert status_type(status) == kind


def test_durations_print_like_abstract_migrate() -> None:
    assert format_duration(3725.9) == "01:02:05"


def test_scheduler_runs_due_events_in_time_then_insertion_order() -> None:
    clock = ManualTime()
    scheduler = Scheduler(clock)
    seen: list[tuple[str, float]] = []
    scheduler.at(START + 5, lambda: seen.append(("b", scheduler.now())))
    scheduler.at(START + 2, lambda: seen.append(("a", scheduler.now())))
    scheduler.at(START + 5, lambda: seen.append(("c", scheduler.now())))
    scheduler.at(START + 9, lambda: seen.append(("late", scheduler.now())))

    scheduler.run_due(START + 6)

    assert seen == [("a", START + 2), ("b", START + 5), ("c", START + 5)]
    assert scheduler.pending() == 1
    assert scheduler.now() == START + 6


def _manager(instant: bool) -> tuple[ManualTime, Scheduler, TaskManager]:
    clock = ManualTime()
    scheduler = Scheduler(clock)
    manager = TaskManager(scheduler, instant=lambda: instant, node_boot_epoch=lambda node: START - 1000)
    return clock, scheduler, manager


def _two_step(task: Task) -> Iterator[float]:
    task.log("step one")
    yield 10.0
    task.log("step two")


def test_task_runs_its_steps_when_simulated_time_reaches_them() -> None:
    clock, scheduler, manager = _manager(instant=False)
    task = manager.start("pve1", "vzstart", "101", "root@pam", _two_step)

    assert task.running and task.lines == ["step one"]
    clock.now = START + 9.5
    scheduler.run_due(clock.now)
    assert task.running
    clock.now = START + 10
    scheduler.run_due(clock.now)

    assert not task.running
    assert task.lines == ["step one", "step two", "TASK OK"]
    assert (task.endtime, task.exitstatus) == (int(START + 10), "OK")
    assert task.status_entry()["status"] == "stopped"


def test_instant_tasks_finish_inside_the_call_that_started_them() -> None:
    _clock, _scheduler, manager = _manager(instant=True)

    task = manager.start("pve1", "vzstart", "101", "root@pam", _two_step)

    assert task.exitstatus == "OK" and task.endtime == int(START)


def test_upid_carries_node_type_id_user_and_start_time() -> None:
    _clock, _scheduler, manager = _manager(instant=True)

    task = manager.start("pve1", "vzcreate", "101", "ops@pve!operator", _two_step)

    fields = decode_upid(task.upid)
    assert fields is not None
    assert (fields.node, fields.type, fields.id, fields.user, fields.starttime) == (
        "pve1",
        "vzcreate",
        "101",
        "ops@pve!operator",
        int(START),
    )
    assert fields.pstart == 1000 * 100 + 1  # ticks since the node booted


def test_every_task_gets_a_distinct_upid() -> None:
    _clock, _scheduler, manager = _manager(instant=True)

    upids = {manager.start("pve1", "vzstart", "101", "root@pam", _two_step).upid for _ in range(200)}

    assert len(upids) == 200


def test_worker_errors_end_the_task_with_task_error() -> None:
    _clock, _scheduler, manager = _manager(instant=True)

    def failing(task: Task) -> Iterator[float]:
        task.log("trying")
        yield 1.0
        raise TaskError("CT is locked (migrate)\nsecond line")

    def pve_error(task: Task) -> Iterator[float]:
        raise PveApiError(500, "Configuration file 'nodes/pve1/lxc/101.conf' does not exist")
        yield 0.0

    failed = manager.start("pve1", "vzstart", "101", "root@pam", failing)
    missing = manager.start("pve1", "vzstart", "101", "root@pam", pve_error)

    assert failed.exitstatus == "CT is locked (migrate) second line"
    assert failed.lines[-1] == "TASK ERROR: CT is locked (migrate) second line"
    assert missing.exitstatus == "Configuration file 'nodes/pve1/lxc/101.conf' does not exist"


def test_warnings_are_counted_into_the_exit_status() -> None:
    _clock, _scheduler, manager = _manager(instant=True)

    def warns(task: Task) -> Iterator[float]:
        task.warn("WARN: something odd")
        task.warn("WARN: again")
        yield 0.0

    task = manager.start("pve1", "vzdump", "", "root@pam", warns)

    assert task.exitstatus == "WARNINGS: 2"
    assert task.lines[-1] == "TASK WARNINGS: 2"


def test_aborted_task_stops_and_its_worker_never_resumes() -> None:
    clock, scheduler, manager = _manager(instant=False)
    task = manager.start("pve1", "vzshutdown", "101", "root@pam", _two_step)

    manager.abort(task, "interrupted by signal")
    clock.now = START + 20
    scheduler.run_due(clock.now)

    assert task.exitstatus == "interrupted by signal"
    assert "step two" not in task.lines


def test_log_pages_count_lines_from_one_and_limit_zero_reads_all() -> None:
    task = Task(upid="x", fields=UpidFields("pve1", 1, 1, 1, "vzstart", "101", "root@pam"))
    task.lines = [f"line {i}" for i in range(1, 8)]

    total, page = task.log_page(start=2, limit=3)
    _, everything = task.log_page(start=0, limit=0)

    assert total == 7
    assert page == [{"n": 3, "t": "line 3"}, {"n": 4, "t": "line 4"}, {"n": 5, "t": "line 5"}]
    assert len(everything) == 7


def test_empty_log_reads_as_no_content() -> None:
    task = Task(upid="x", fields=UpidFields("pve1", 1, 1, 1, "vzstart", "101", "root@pam"))

    assert task.log_page(0, 50) == (1, [{"n": 1, "t": "no content"}])


def test_token_sees_its_own_tasks_and_its_user_sees_them_too() -> None:
    task = Task(upid="x", fields=UpidFields("pve1", 1, 1, 1, "vzstart", "101", "ops@pve!operator"))
    user_task = Task(upid="y", fields=UpidFields("pve1", 1, 1, 1, "vzstart", "101", "ops@pve"))

    assert task.is_owned_by("ops@pve!operator") and task.is_owned_by("ops@pve")
    assert not task.is_owned_by("ops@pve!other")
    assert not user_task.is_owned_by("ops@pve!operator")
    assert task.list_entry()["user"] == "ops@pve" and task.list_entry()["tokenid"] == "operator"

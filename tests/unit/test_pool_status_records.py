"""The pool's status records the balancer reads back at each cycle (``status.inFlight``,
``status.offloaded``), as typed models: what an older operator wrote still reads, and what this one
writes is the same wire form (camelCase, RFC 3339 times, unset fields left out)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from pve_operator.api.v1alpha1 import ActionKind, OffloadedContainer
from pve_operator.execution.pool_input import project_in_flight, read_in_flight, read_offloaded
from pve_operator.planning.balancing import InFlight, plan_balance
from tests.unit.planning.balancing.scenarios import build_input, load

SCENARIOS = Path(__file__).parents[1] / "scenarios" / "balancing"


def test_an_in_flight_migration_reads_and_writes_back_unchanged() -> None:
    wire = {
        "vmid": 3104,
        "action": "Migrate",
        "policy": "web",
        "sourceNode": "srv-px1",
        "targetNode": "srv-px2",
        "wasRunning": True,
        "startedAt": "2026-12-03T07:41:17Z",
        "reason": "srv-px1 memory 91% > 80% for 3 samples",
        "upid": "UPID:srv-px1:0000C0DE:00ABCDEF:674E1A2B:vzmigrate:3104:op@pve!operator:",
    }
    [entry] = read_in_flight([wire])
    assert entry.action is ActionKind.MIGRATE and entry.was_running and entry.target_node == "srv-px2"
    assert entry.to_dict() == wire


def test_an_entry_an_older_version_wrote_without_a_start_time_still_reads_and_a_broken_one_fails_loudly() -> None:
    [old] = read_in_flight([{"vmid": 3100, "action": "Offload", "sourceNode": "srv-px1"}])
    assert old.action is ActionKind.OFFLOAD and old.started_at == datetime.fromtimestamp(0, UTC)
    assert old.upid is None and not old.was_running
    with pytest.raises(ValidationError, match="action"):
        read_in_flight([{"vmid": 3100, "action": "Explode", "sourceNode": "srv-px1"}])


def test_offloaded_records_read_typed_and_an_unreadable_one_is_skipped() -> None:
    wire = {
        "vmid": 3101,
        "node": "srv-px1",
        "memoryUsedBytes": 1073741824,
        "cpuUsedFraction": 0.25,
        "offloadedAt": "2026-12-03T07:41:17Z",
    }
    records = read_offloaded([wire, {"vmid": "not-a-number", "node": "srv-px1"}])
    assert records == [
        OffloadedContainer(
            vmid=3101,
            node="srv-px1",
            memory_used_bytes=1073741824,
            cpu_used_fraction=0.25,
            offloaded_at=datetime(2026, 12, 3, 7, 41, 17, tzinfo=UTC),
        )
    ]
    assert records[0].to_dict() == wire


def _in_flight(vmid: int, action: str, task: str, source: str = "srv-px1", target: str | None = None) -> Any:
    return read_in_flight(
        [
            {
                "vmid": vmid,
                "action": action,
                "sourceNode": source,
                **({"targetNode": target} if target else {}),
                "startedAt": "2026-12-03T07:41:17Z",
                "upid": f"UPID:{source}:0000C0DE:00ABCDEF:674E1A2B:{task}:{vmid}:op@pve!operator:",
            }
        ]
    )[0]


def test_offloads_in_flight_are_planned_as_done_so_the_same_overload_is_not_relieved_twice() -> None:
    # Scenario 09: srv-px1 at 94 % needs two offloads (3103, then 3102). The next cycle samples while their
    # shutdowns run: PVE still shows srv-px1 at 94 %.
    inp = build_input(load(SCENARIOS / "09-offload-priority-then-age.yaml"))
    assert [(a.kind, a.vmid) for a in plan_balance(inp).actions] == [("Offload", 3103), ("Offload", 3102)]
    in_flight = [_in_flight(3103, "Offload", "vzshutdown"), _in_flight(3102, "Offload", "vzshutdown")]
    busy_only = replace(inp, in_flight=InFlight(other_vmids=frozenset({3102, 3103})))
    assert [(a.kind, a.vmid) for a in plan_balance(busy_only).actions] == [("Offload", 3104)], (
        "without the projection, a third CT is stopped for the overload the first two already relieve"
    )
    projected = project_in_flight(inp, in_flight)
    assert plan_balance(projected).actions == ()
    assert projected.in_flight.busy_vmids == {3102, 3103}


def test_a_restore_in_flight_counts_its_ct_on_its_target_as_started_and_its_copy_as_inbound() -> None:
    inp = build_input(load(SCENARIOS / "14-restore-elsewhere.yaml"))
    [restore] = [a for a in plan_balance(inp).actions if a.kind == "Restore"]
    assert restore.node != restore.target
    copying = project_in_flight(inp, [_in_flight(restore.vmid, "Restore", "vzmigrate", restore.node, restore.target)])
    starting = project_in_flight(inp, [_in_flight(restore.vmid, "Restore", "vzstart", restore.node, restore.target)])
    for projected in (copying, starting):
        ct = projected.snapshot.containers[restore.vmid]
        assert ct.node == restore.target and ct.running
        assert not [a for a in plan_balance(projected).actions if a.vmid == restore.vmid]
    assert copying.in_flight.inbound_count(restore.target) == 1, "the copy counts against the target's inbound limit"
    assert starting.in_flight.inbound_count(restore.target) == 0 and restore.vmid in starting.in_flight.busy_vmids

"""The pool's status records the balancer reads back at each cycle (``status.inFlight``,
``status.offloaded``), as typed models: what an older operator wrote still reads, and what this one
writes is the same wire form (camelCase, RFC 3339 times, unset fields left out)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from pve_operator.api.v1alpha1 import ActionKind, OffloadedContainer
from pve_operator.execution.pool_input import read_in_flight, read_offloaded


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

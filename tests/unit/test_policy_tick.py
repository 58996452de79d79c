"""The policy timer ticks every POLICY_TICK_SECONDS: it reconciles while the policy has PVE tasks in flight (so a
task that ended is followed up within a tick, and a creation burst is not held to the reconcile interval), and
otherwise once per RECONCILE_INTERVAL_SECONDS."""

from __future__ import annotations

import time

import pytest

from pve_operator.api.v1alpha1 import ActionKind, PolicyTask, PolicyTaskStep
from pve_operator.handlers.containerpolicy import _due, journal_of
from pve_operator.runtime import RECONCILE_INTERVAL_SECONDS, OperatorRuntime

TASK = PolicyTask(
    vmid=3100,
    action=ActionKind.CREATE,
    step=PolicyTaskStep.CREATE,
    node="srv-px1",
    upid="UPID:srv-px1:0000A1B2:0001C3D4:6745A000:vzcreate:3100:op@pve!t:",
    started_at="2026-12-04T05:00:00Z",
    reason="scale up",
    hostname="web-00",
    index=0,
)


def test_a_policy_never_reconciled_by_this_process_is_due() -> None:
    assert _due(OperatorRuntime(), "uid-1", {})


def test_without_tasks_in_flight_a_tick_waits_for_the_reconcile_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = OperatorRuntime()
    runtime.last_policy_cycle["uid-1"] = 1000.0
    monkeypatch.setattr(time, "monotonic", lambda: 1000.0 + RECONCILE_INTERVAL_SECONDS - 1)
    assert not _due(runtime, "uid-1", {"tasksInFlight": []})
    monkeypatch.setattr(time, "monotonic", lambda: 1000.0 + RECONCILE_INTERVAL_SECONDS)
    assert _due(runtime, "uid-1", {"tasksInFlight": []})


def test_with_tasks_in_flight_every_tick_reconciles(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = OperatorRuntime()
    runtime.last_policy_cycle["uid-1"] = 1000.0
    monkeypatch.setattr(time, "monotonic", lambda: 1000.5)
    assert _due(runtime, "uid-1", {"tasksInFlight": [TASK.to_dict()]})


def test_the_journal_reads_back_from_status_and_a_broken_entry_is_dropped() -> None:
    status = {"tasksInFlight": [TASK.to_dict(), {"vmid": 3101, "action": "Create"}]}
    assert journal_of(status) == [TASK]
    assert TASK.to_dict()["startedAt"] == "2026-12-04T05:00:00Z" and TASK.to_dict()["step"] == "Create"


def test_a_cycle_reads_the_journal_the_previous_cycle_wrote_even_before_kopf_hands_it_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A spec change waiting for the lock while the timer's cycle runs gets Kopf's arguments from before that
    cycle's status write: with the stale journal it would take an ended task's next step a second time."""
    import kopf

    from pve_operator.handlers import containerpolicy

    seen: list[object] = []

    def fake_reconcile(**kwargs: object) -> None:
        status = kwargs["status"]
        assert isinstance(status, dict)
        seen.append(status.get("tasksInFlight"))
        patch = kwargs["patch"]
        assert isinstance(patch, kopf.Patch)
        patch.status["tasksInFlight"] = [] if status.get("tasksInFlight") else [TASK.to_dict()]

    monkeypatch.setattr(containerpolicy, "reconcile_policy", fake_reconcile)
    runtime = OperatorRuntime()

    class Memo:
        pass

    memo = Memo()
    memo.runtime = runtime  # type: ignore[attr-defined]
    stale_kwargs = {
        "memo": memo,
        "meta": {"uid": "uid-1", "generation": 1},
        "name": "web",
        "namespace": "apps",
        "spec": {},
        "status": {},  # Kopf's copy, from before either cycle
        "body": {},
        "pool_specs": {},
        "policies_by_pool": {},
        "pool_operations_in_flight": {},
    }
    containerpolicy._run_reconcile(True, **stale_kwargs, patch=kopf.Patch())
    containerpolicy._run_reconcile(True, **stale_kwargs, patch=kopf.Patch())
    assert seen == [None, [TASK.to_dict()]]
    assert runtime.policy_status["uid-1"]["tasksInFlight"] == [], "the second cycle's journal is the one kept"


def test_a_ct_the_policy_is_creating_counts_for_its_index_before_pve_shows_its_marks() -> None:
    """In a create's first moments PVE lists the CT with only ``lock: create``. Without the journal, its index
    looks free and its VMID taken: the next cycle made a second CT with the same host name under another VMID
    (the chaos suite's duplicate)."""
    from dataclasses import replace

    from pve_operator.handlers.containerpolicy import being_created
    from pve_operator.planning.actions import CreateContainer
    from pve_operator.planning.model import ContainerStatus
    from pve_operator.planning.reconcile import plan_reconcile
    from tests.builders import build_ct
    from tests.unit.planning.test_reconcile import INTENT, lab, owned

    present = [owned(3100 + i, "srv-px1", i) for i in range(4)]
    creating = PolicyTask.model_validate({**TASK.to_dict(), "vmid": 3104, "index": 4})
    snapshot = lab(
        *[p.observation for p in present],
        build_ct(3104, "srv-px1", status=ContainerStatus.STOPPED, lock="create"),
    )
    intent = replace(INTENT, replicas=5)
    before = [a for a in plan_reconcile(intent, snapshot, present).actions if isinstance(a, CreateContainer)]
    assert [a.index for a in before] == [4] and before[0].vmid != 3104, "the old planning: index 4 under another VMID"
    counted = present + being_created([creating], present, snapshot)
    assert [(o.vmid, o.index) for o in counted[4:]] == [(3104, 4)]
    assert not [a for a in plan_reconcile(intent, snapshot, counted).actions if isinstance(a, CreateContainer)]


def test_a_policy_being_deleted_is_not_reconciled_by_its_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The deletion finalizer now comes back every 2 s instead of holding the policy's lock until every CT is
    gone; a timer tick in between must not plan (and create) CTs the finalizer is destroying."""
    import kopf

    from pve_operator.handlers import containerpolicy

    reconciled: list[str] = []
    monkeypatch.setattr(containerpolicy, "reconcile_policy", lambda **kwargs: reconciled.append(str(kwargs["name"])))

    class Memo:
        runtime = OperatorRuntime()

    kwargs = {
        "memo": Memo(),
        "name": "web",
        "namespace": "apps",
        "spec": {},
        "status": {},
        "body": {},
        "pool_specs": {},
        "policies_by_pool": {},
        "pool_operations_in_flight": {},
    }
    deleting = {"uid": "uid-1", "generation": 1, "deletionTimestamp": "2026-12-04T10:00:00Z"}
    containerpolicy._run_reconcile(False, **kwargs, meta=deleting, patch=kopf.Patch())
    containerpolicy._run_reconcile(True, **kwargs, meta=deleting, patch=kopf.Patch())
    assert reconciled == []
    containerpolicy._run_reconcile(True, **kwargs, meta={"uid": "uid-2", "generation": 1}, patch=kopf.Patch())
    assert reconciled == ["web"]

"""The balance executor against pve_sim: no pool cycle waits for a PVE task.

An offload marks its CT and starts its shutdown; a restore starts its CT, or first the stopped migration
that moves it. Each is journaled with its UPID (``status.inFlight``) and the cycle returns; later cycles
look at the task once each (``follow``) and take the next step or end the action. Issue 10: before,
the pool's cycle waited for every offload's stop and every restore's copy and start, and took no sample
meanwhile (a restore moving a large CT on local storage blocked the safety net of every other node).

Most tests freeze pve_sim's clock, so "still running" is a fact of PVE's own task list, not a race.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pve_operator.api.v1alpha1 import InFlightOperation
from pve_operator.execution.balancer import BalanceExecutor, BalanceOutcome, journal_entry
from pve_operator.handlers.balancing import balance_executor
from pve_operator.planning.actions import BalanceAction, OffloadContainer, RestoreContainer
from pve_operator.planning.ownership import OFFLOADED_TAG, normalize_tags
from tests.integration.test_create_windows import operator_client
from tests.integration.test_executor import BLUEPRINT, IDENTITY, creates, executor


class MemoryJournal:
    """The journal the pool's status keeps, in memory: the entries (as a restarted operator reads them back
    from their wire form) and what was begun, started and finished."""

    def __init__(self) -> None:
        self.entries: dict[int, InFlightOperation] = {}
        self.events: list[tuple[str, int]] = []

    def begin(self, action: BalanceAction) -> None:
        self.entries[action.vmid] = journal_entry(action, "web", datetime.now(UTC))
        self.events.append(("begin", action.vmid))

    def started(self, vmid: int, upid: str) -> None:
        self.entries[vmid] = self.entries[vmid].model_copy(update={"upid": upid})
        self.events.append(("started", vmid))

    def finish(self, vmid: int) -> None:
        self.entries.pop(vmid, None)
        self.events.append(("finish", vmid))

    def read_back(self) -> list[InFlightOperation]:
        return [InFlightOperation.model_validate(e.to_dict()) for e in self.entries.values()]


def _executor(sim: Any, journal: MemoryJournal) -> BalanceExecutor:
    return balance_executor(operator_client(sim), {v: IDENTITY for v in range(3100, 3110)}, journal)


def _follow_to_the_end(sim: Any, journal: MemoryJournal, *, step_s: float = 5) -> list[BalanceOutcome]:
    """Later pool cycles, each with a new executor (what a restarted operator has: the journal alone); PVE's
    clock moves on between them until the journal is empty."""
    outcomes: list[BalanceOutcome] = []
    for _ in range(60):
        if not journal.entries:
            return outcomes
        sim.cluster.advance_clock(step_s)
        outcomes += _executor(sim, journal).follow(journal.read_back())
    raise AssertionError(f"still in flight after 60 cycles: {journal.entries}")


def _ct(sim: Any, node: str, vmid: int) -> tuple[str, frozenset[str]]:
    api = sim.proxmox().nodes(node).lxc(vmid)
    return api.status.current.get()["status"], frozenset(normalize_tags(str(api.config.get().get("tags") or "")))


def _offload(vmid: int, node: str = "srv-px1") -> OffloadContainer:
    return OffloadContainer(vmid=vmid, node=node, reason="test", source_percent_before=95, source_percent_after=80)


def _restore(vmid: int, node: str, target: str) -> RestoreContainer:
    return RestoreContainer(
        vmid=vmid,
        node=node,
        target=target,
        reason="room again",
        expected_memory_used_bytes=0,
        expected_cpu_used_fraction=0.0,
        source_percent_before=0,
        source_percent_after=0,
        target_percent_before=0,
        target_percent_after=0,
    )


def _tasks(sim: Any, node: str, vmid: int, source: str = "all") -> list[str]:
    return [t["type"] for t in sim.proxmox().nodes(node).tasks.get(vmid=vmid, source=source)]


def test_an_offload_is_started_and_the_cycle_returns_while_the_ct_shuts_down(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=1.0)
    assert all(o.succeeded for o in executor(sim).apply(creates(3), BLUEPRINT))
    sim.cluster.clock.freeze()
    journal = MemoryJournal()
    outcomes = _executor(sim, journal).apply([_offload(3101), _offload(3102)], {})

    assert [(o.in_progress, o.succeeded) for o in outcomes] == [(True, False), (True, False)], outcomes
    for vmid in (3101, 3102):
        assert "vzshutdown" in _tasks(sim, "srv-px1", vmid, "active"), "the cycle returned while PVE shuts it down"
        status, tags = _ct(sim, "srv-px1", vmid)
        assert status == "running" and OFFLOADED_TAG in tags, "marked before its stop, so repair never restarts it"
        assert ":vzshutdown:" in str(journal.entries[vmid].upid)

    done = _follow_to_the_end(sim, journal)
    assert sorted((o.action.vmid, o.succeeded) for o in done) == [(3101, True), (3102, True)], done
    assert all(o.message.startswith("offloaded (stopped) CT") and "test" in o.message for o in done)
    for vmid in (3101, 3102):
        status, tags = _ct(sim, "srv-px1", vmid)
        assert status == "stopped" and OFFLOADED_TAG in tags
        assert _tasks(sim, "srv-px1", vmid).count("vzshutdown") == 1, "no step done twice"
    assert _ct(sim, "srv-px1", 3100)[0] == "running"


def test_the_offloads_of_one_plan_stop_in_parallel(pve_sim_server: Any) -> None:
    # Found by bench/offload_latency.py: the stops of one plan's offloads ran one after the other.
    sim = pve_sim_server(time_scale=0.05)
    assert all(o.succeeded for o in executor(sim).apply(creates(3), BLUEPRINT))
    journal = MemoryJournal()
    assert all(o.in_progress for o in _executor(sim, journal).apply([_offload(3101), _offload(3102)], {}))
    assert all(o.succeeded for o in _follow_to_the_end(sim, journal, step_s=0))
    shutdowns = sim.proxmox().nodes("srv-px1").tasks.get(typefilter="vzshutdown", limit=50)
    tasks = [t for t in shutdowns if t.get("id") in ("3101", "3102")]
    first, second = sorted(tasks, key=lambda t: int(t["starttime"]))
    assert int(second["starttime"]) < int(first["endtime"]), "the second stop began before the first ended"


def test_a_restore_that_moves_the_ct_follows_its_copy_then_its_start_across_cycles(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=1.0)
    assert all(o.succeeded for o in executor(sim).apply(creates(2), BLUEPRINT))
    journal = MemoryJournal()
    _executor(sim, journal).apply([_offload(3101)], {})
    assert all(o.succeeded for o in _follow_to_the_end(sim, journal))
    sim.cluster.clock.freeze()

    outcomes = _executor(sim, journal).apply([_restore(3101, "srv-px1", "srv-px2")], {})
    assert outcomes[0].in_progress and "moving it srv-px1 → srv-px2" in outcomes[0].message, outcomes
    assert ":vzmigrate:" in str(journal.entries[3101].upid), "the copy is the first task"
    assert "vzmigrate" in _tasks(sim, "srv-px1", 3101, "active"), "the cycle returned while PVE copies the CT"

    seen_steps = set()
    done: list[BalanceOutcome] = []
    for _ in range(60):
        if not journal.entries:
            break
        seen_steps.add(str(journal.entries[3101].upid).split(":")[5])
        sim.cluster.advance_clock(5)
        done += _executor(sim, journal).follow(journal.read_back())
    assert seen_steps == {"vzmigrate", "vzstart"}, "after the copy, the start is journaled in its place"
    assert [(o.succeeded, o.message) for o in done] == [
        (True, "restored (started) CT 3101 on srv-px2 after moving it srv-px1 → srv-px2: room again")
    ]
    status, tags = _ct(sim, "srv-px2", 3101)
    assert status == "running" and OFFLOADED_TAG not in tags, "the mark goes only once the CT runs"
    assert _tasks(sim, "srv-px2", 3101).count("vzstart") == 1


def test_an_offloaded_ct_started_again_before_the_follow_is_not_offloaded_and_loses_its_mark(
    pve_sim_server: Any,
) -> None:
    # The state decides, not the task's OK: someone started the CT again once its shutdown had ended.
    sim = pve_sim_server(time_scale=0.0)
    assert all(o.succeeded for o in executor(sim).apply(creates(1), BLUEPRINT))
    journal = MemoryJournal()
    _executor(sim, journal).apply([_offload(3100)], {})
    api = sim.proxmox()
    while any(t == "vzshutdown" for t in _tasks(sim, "srv-px1", 3100, "active")):
        sim.cluster.advance_clock(1)
    api.nodes("srv-px1").lxc(3100).status.start.post()
    [outcome] = _follow_to_the_end(sim, journal)
    assert not outcome.succeeded and "offloaded mark removed" in outcome.message, outcome
    assert _ct(sim, "srv-px1", 3100)[0] == "running" and OFFLOADED_TAG not in _ct(sim, "srv-px1", 3100)[1]
    assert not journal.entries

"""The balance executor against pve_sim: the offloads of one plan stop their CTs at the same time.

Found by bench/offload_latency.py: with a migration in flight the planner relieves an overloaded node by
offloading two CTs, and the executor ran their stop tasks one after the other (its thread pool was sized by
``maxConcurrentMigrations``, 1), so the pool's cycle, and the record of its first offload, came one stop
task later than with one offload. The pool's safety net runs its stops in parallel now, bounded by the
per-pool task limit.
"""

from __future__ import annotations

from typing import Any

from pve_operator.handlers.balancing import balance_executor
from pve_operator.planning.actions import BalanceAction, OffloadContainer
from tests.integration.test_create_windows import operator_client
from tests.integration.test_executor import BLUEPRINT, IDENTITY, creates, executor


class MemoryJournal:
    """The journal interface the pool's status implements, kept in a list (what was begun, ended)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    def begin(self, action: BalanceAction) -> None:
        self.events.append(("begin", action.vmid))

    def started(self, vmid: int, upid: str) -> None:
        self.events.append(("started", vmid))

    def finish(self, vmid: int) -> None:
        self.events.append(("finish", vmid))


def test_the_offloads_of_one_plan_stop_in_parallel(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=0.05)  # a shutdown takes a few simulated seconds
    assert all(o.succeeded for o in executor(sim).apply(creates(3), BLUEPRINT))
    journal = MemoryJournal()
    run = balance_executor(operator_client(sim), {v: IDENTITY for v in (3100, 3101, 3102)}, journal)
    offloads = [
        OffloadContainer(vmid=v, node="srv-px1", reason="test", source_percent_before=95, source_percent_after=80)
        for v in (3101, 3102)
    ]
    outcomes = run.apply(offloads, {})
    assert all(o.succeeded for o in outcomes), [o.message for o in outcomes]
    api = sim.proxmox()
    shutdowns = api.nodes("srv-px1").tasks.get(typefilter="vzshutdown", limit=50)
    tasks = [t for t in shutdowns if t.get("id") in ("3101", "3102")]
    assert len(tasks) == 2
    first, second = sorted(tasks, key=lambda t: int(t["starttime"]))
    assert int(second["starttime"]) < int(first["endtime"]), "the second stop began before the first ended"
    assert {api.nodes("srv-px1").lxc(v).status.current.get()["status"] for v in (3101, 3102)} == {"stopped"}
    assert sorted(journal.events) == sorted([("begin", 3101), ("begin", 3102), ("finish", 3101), ("finish", 3102)])

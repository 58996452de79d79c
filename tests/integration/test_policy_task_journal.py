"""The policy executor never waits for a PVE task: a cycle starts tasks, journals them (status.tasksInFlight)
and returns; later cycles look at each task once and take the action's next step. Against pve_sim with its
clock frozen, so "still running" is a fact of PVE's own task list, not a race."""

from __future__ import annotations

from typing import Any

from pve_operator.api.v1alpha1 import ActionKind, PolicyTask, PolicyTaskStep
from pve_operator.execution.executor import CycleResult, Outcome, PolicyExecutor
from pve_operator.planning.actions import Action, DestroyContainer, StartContainer
from tests.integration.test_executor import BLUEPRINT, creates, executor


def _running_tasks(sim: Any, vmid: int) -> set[str]:
    tasks = sim.proxmox().nodes("srv-px1").tasks.get(vmid=vmid, source="active")
    return {t["type"] for t in tasks if str(t.get("status") or "RUNNING").upper() == "RUNNING"}


def _restarted(journal: list[PolicyTask]) -> list[PolicyTask]:
    """The journal as a restarted operator reads it back from status (the wire form)."""
    return [PolicyTask.model_validate(t.to_dict()) for t in journal]


def _follow_to_the_end(sim: Any, run: PolicyExecutor, journal: list[PolicyTask]) -> list[Outcome]:
    """Later cycles with nothing new planned: PVE's clock moves on between them until the journal is empty."""
    outcomes: list[Outcome] = []
    for _ in range(60):
        if not journal:
            return outcomes
        sim.cluster.advance_clock(5)
        cycle = run.run_cycle(_restarted(journal), [], BLUEPRINT, slots=4)
        outcomes += cycle.outcomes
        journal = cycle.in_flight
    raise AssertionError(f"tasks still in flight after 60 cycles: {journal}")


def _cycle(run: PolicyExecutor, actions: list[Action], *, slots: int = 4) -> CycleResult:
    return run.run_cycle([], actions, BLUEPRINT, slots=slots)


def test_a_cycle_starts_the_creations_and_returns_while_their_tasks_run(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=1.0)
    sim.cluster.clock.freeze()
    cycle = _cycle(executor(sim), creates(2))
    assert cycle.outcomes == [] and cycle.deferred == []
    assert [(t.vmid, t.action, t.step) for t in cycle.in_flight] == [
        (3100, ActionKind.CREATE, PolicyTaskStep.CREATE),
        (3101, ActionKind.CREATE, PolicyTaskStep.CREATE),
    ]
    assert all(t.upid.startswith("UPID:srv-px1:") and ":vzcreate:" in t.upid for t in cycle.in_flight)
    assert "vzcreate" in _running_tasks(sim, 3100), "the cycle returned while PVE still creates the CT"

    # A new executor (a restarted operator, or the other replica) goes on from the journal alone.
    outcomes = _follow_to_the_end(sim, executor(sim), cycle.in_flight)
    assert sorted(o.action.vmid for o in outcomes) == [3100, 3101]
    assert all(o.succeeded and o.message.startswith("created and started CT") for o in outcomes), outcomes
    for vmid in (3100, 3101):
        assert sim.proxmox().nodes("srv-px1").lxc(vmid).status.current.get()["status"] == "running"
        types = [t["type"] for t in sim.proxmox().nodes("srv-px1").tasks.get(vmid=vmid, source="all")]
        assert types.count("vzcreate") == 1 and types.count("vzstart") == 1, "no step done twice"


def test_task_slots_bound_the_tasks_in_flight_and_the_rest_waits_for_a_later_cycle(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=1.0)
    sim.cluster.clock.freeze()
    planned = creates(4)
    cycle = _cycle(executor(sim), planned, slots=2)
    assert [t.vmid for t in cycle.in_flight] == [3100, 3101]
    assert cycle.deferred == planned[2:]
    assert not sim.proxmox().nodes("srv-px1").tasks.get(vmid=3102, source="all"), "nothing started beyond the slots"


def test_an_action_on_a_ct_whose_task_is_in_flight_waits_for_it(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=1.0)
    sim.cluster.clock.freeze()
    run = executor(sim)
    first = _cycle(run, creates(1))
    start = StartContainer(3100, "srv-px1", "stopped outside the operator")
    second = run.run_cycle(first.in_flight, [start], BLUEPRINT, slots=4)
    assert second.deferred == [start] and second.outcomes == []
    assert [t.step for t in second.in_flight] == [PolicyTaskStep.CREATE]


def test_a_deletion_stops_then_destroys_over_cycles_and_the_ct_is_gone(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=1.0)
    run = executor(sim)
    assert all(o.succeeded for o in run.apply(creates(1), BLUEPRINT))
    sim.cluster.clock.freeze()
    cycle = _cycle(run, [DestroyContainer(3100, "srv-px1", True, "scale down")])
    assert [t.step for t in cycle.in_flight] == [PolicyTaskStep.STOP]
    assert sim.proxmox().nodes("srv-px1").lxc(3100).config.get(), "still there while it stops"
    (outcome,) = _follow_to_the_end(sim, run, cycle.in_flight)
    assert outcome.succeeded and outcome.message.startswith("stopped and destroyed CT 3100 on srv-px1")
    assert not [r for r in sim.proxmox().cluster.resources.get(type="vm") if r.get("vmid") == 3100]


def test_a_failed_task_ends_its_action_as_failed_with_pves_reason(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=1.0)
    sim.cluster.clock.freeze()
    sim.admin.fail_tasks("vzcreate", "unable to create CT 3100 - simulated storage error")
    cycle = _cycle(executor(sim), creates(1))
    (outcome,) = _follow_to_the_end(sim, executor(sim), cycle.in_flight)
    assert not outcome.succeeded
    assert outcome.message.startswith("Create CT 3100 failed") and "simulated storage error" in outcome.message


def test_apply_reports_two_actions_on_one_ct_in_their_order(pve_sim_server: Any) -> None:
    """The second action on a CT begins in the cycle its first ends in: each outcome goes to its own action."""
    sim = pve_sim_server(time_scale=0.0)
    create = creates(1)[0]
    start = StartContainer(3100, "srv-px1", "stopped outside the operator")
    made, started = executor(sim).apply([create, start], BLUEPRINT)
    assert made.action is create and made.succeeded and made.message.startswith("created and started CT 3100")
    assert started.action is start and started.skipped and "running again" in started.message


def test_a_task_pve_cannot_be_asked_about_stays_in_flight_and_is_followed_later(pve_sim_server: Any) -> None:
    """A 5xx or an unreachable node on the status read says nothing about the task: the entry stays."""
    sim = pve_sim_server(time_scale=1.0)
    sim.cluster.clock.freeze()
    run = executor(sim)
    cycle = _cycle(run, creates(1))
    sim.cluster.advance_clock(10)  # the create has ended in PVE
    sim.cluster.faults.add_request_fault(
        method="GET",
        path_regex=r"^/nodes/[^/]+/tasks/[^/]+/status$",
        status=596,
        message="Connection timed out",
        count=20,
    )
    looked = run.run_cycle(cycle.in_flight, [], BLUEPRINT, slots=4)  # the client's read retries fail too
    assert looked.outcomes == [] and looked.in_flight == cycle.in_flight, "not failed, not forgotten"
    sim.cluster.faults.clear()
    (outcome,) = _follow_to_the_end(sim, run, looked.in_flight)
    assert outcome.succeeded and outcome.message.startswith("created and started CT 3100")


def test_a_ct_that_loses_its_marks_while_it_stops_is_not_destroyed(pve_sim_server: Any) -> None:
    """The destroy comes a cycle after the stop: ownership is proved again right before it."""
    sim = pve_sim_server(time_scale=1.0)
    run = executor(sim)
    assert all(o.succeeded for o in run.apply(creates(1), BLUEPRINT))
    sim.cluster.clock.freeze()
    cycle = _cycle(run, [DestroyContainer(3100, "srv-px1", True, "scale down")])
    sim.cluster.advance_clock(30)  # the stop ends; someone takes the marks off before the next cycle looks
    sim.proxmox().nodes("srv-px1").lxc(3100).config.put(delete="tags")
    (outcome,) = _follow_to_the_end(sim, run, cycle.in_flight)
    assert not outcome.succeeded and "not provably owned" in outcome.message
    assert sim.proxmox().nodes("srv-px1").lxc(3100).config.get(), "left in place"

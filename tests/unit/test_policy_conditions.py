"""A ContainerPolicy's conditions from one cycle's facts (handlers/policy_conditions.py), without a
cluster: what `kubectl get ctp` and Argo CD show for each situation."""

from __future__ import annotations

from dataclasses import replace

from pve_operator.api.v1alpha1 import ConditionReason, ContainerState, ContainerStatus
from pve_operator.handlers.policy_conditions import PolicyCycleFacts, policy_conditions


def ct(vmid: int, state: ContainerState = ContainerState.RUNNING, node: str = "srv-px1") -> ContainerStatus:
    return ContainerStatus(vmid=vmid, hostname=f"ct-{vmid}", node=node, state=state)


FACTS = PolicyCycleFacts(
    paused=False,
    statuses=(ct(3100), ct(3101, ContainerState.OFFLOADED)),
    desired=2,
    pool_name="lab",
    pool_nodes=("srv-px1", "srv-px2"),
)


def reasons(facts: PolicyCycleFacts) -> list[tuple[str, str, str]]:
    return [(u.type, u.status, u.reason) for u in policy_conditions(facts)]


def test_every_desired_ct_running_or_offloaded_is_ready() -> None:
    assert reasons(FACTS) == [
        ("Progressing", "False", "Reconciled"),
        ("Degraded", "False", "AsExpected"),
        ("Ready", "True", "AllReplicasReady"),
    ]


def test_a_failure_is_degraded_and_not_ready_with_the_same_reason_and_the_count() -> None:
    facts = replace(FACTS, failure=(ConditionReason.TEMPLATE_NOT_FOUND, "template missing on srv-px2"))
    progressing, degraded, ready = policy_conditions(facts)
    assert (degraded.reason, degraded.message) == (ConditionReason.TEMPLATE_NOT_FOUND, "template missing on srv-px2")
    assert (ready.status, ready.reason) == ("False", ConditionReason.TEMPLATE_NOT_FOUND)
    assert ready.message == "1 of 2 CTs running; template missing on srv-px2"
    assert progressing.reason == ConditionReason.RECONCILING


def test_degraded_names_the_worst_problem_first() -> None:
    offline = replace(FACTS, statuses=(ct(3100), ct(3101, ContainerState.UNKNOWN, node="srv-px2")))
    assert policy_conditions(offline)[1].reason == ConditionReason.NODE_OFFLINE
    assert "srv-px2" in policy_conditions(offline)[1].message
    overlapping = replace(offline, overlaps="3110-3119 also in web2")
    assert policy_conditions(overlapping)[1].reason == ConditionReason.VMID_RANGE_OVERLAP
    stray = replace(FACTS, statuses=(ct(3100), ct(3101, node="srv-px9")))
    assert policy_conditions(stray)[1].reason == ConditionReason.OUTSIDE_POOL
    warned = replace(FACTS, spec_warnings=("spec.placement.nodeWeights: srv-px9 is not a node",))
    assert (policy_conditions(warned)[1].status, policy_conditions(warned)[1].reason) == ("False", "SpecWarning")


def test_progressing_says_what_the_cycle_waits_for() -> None:
    short = replace(FACTS, desired=4)
    assert reasons(replace(short, paused=True))[0] == ("Progressing", "False", "Paused")
    assert reasons(replace(short, pending=(3102,)))[0] == ("Progressing", "True", "WaitingForCreation")
    full = replace(short, placement_refusals={"srv-px1": "at 80%"}, unplaced=2)
    assert policy_conditions(full)[0].reason == ConditionReason.POOL_FULL
    assert "2 CT(s) cannot be placed" in policy_conditions(full)[0].message
    assert reasons(short)[0] == ("Progressing", "True", "Reconciling")
    assert reasons(short)[2] == ("Ready", "False", "ReplicasNotReady")


def test_a_surge_rollout_stays_ready_and_a_scale_down_in_progress_is_still_reconciling() -> None:
    surging = replace(FACTS, statuses=(*FACTS.statuses, ct(3102)), outdated=2, rolling=True)
    assert reasons(surging) == [
        ("Progressing", "True", "RollingUpdate"),
        ("Degraded", "False", "AsExpected"),
        ("Ready", "True", "AllReplicasReady"),
    ], "every desired CT runs while the surge CT is added: the policy stays available"
    assert (
        "2 CT(s) with an older template to replace; 3 CTs exist for 2 wanted" in policy_conditions(surging)[0].message
    )
    shrinking = replace(FACTS, statuses=(*FACTS.statuses, ct(3102)))
    assert reasons(shrinking)[0] == ("Progressing", "True", "Reconciling")
    assert reasons(shrinking)[2] == ("Ready", "True", "AllReplicasReady")


def test_a_kept_volume_handover_stays_ready_and_progressing_names_the_pairs() -> None:
    waiting = ct(3102, ContainerState.STOPPED)
    handing = replace(FACTS, statuses=(*FACTS.statuses, waiting), outdated=2, rolling=True, handovers={3102: 3100})
    assert reasons(handing) == [
        ("Progressing", "True", "RollingUpdate"),
        ("Degraded", "False", "AsExpected"),
        ("Ready", "True", "AllReplicasReady"),
    ], "the replacement waits stopped for its volumes: the desired CTs still run"
    assert policy_conditions(handing)[0].message.endswith("kept volumes being handed over: CT 3100 → 3102")

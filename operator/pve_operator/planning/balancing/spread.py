"""A CT's placement rules in balancing: every move, restore target and repair honours its policy's rules.

Two kinds of rule decide whether one of our CTs may go to a node:

* the policy's weight for the node (``placement.nodeWeights``: 0 means never there);
* the policy's topology (:mod:`pve_operator.planning.topology`): required node affinity, and
  DoNotSchedule spread constraints a move may not leave above ``maxSkew`` and worse than before.

ScheduleAnyway constraints and preferred node affinity rank the allowed targets (:func:`target_rank`)
before load does. Counts are taken from the working state, so each planned move is counted before
the next one is judged.
"""

from __future__ import annotations

from pve_operator.planning.balancing.inputs import BalancingInput
from pve_operator.planning.balancing.state import WorkingState
from pve_operator.planning.topology import TopologyRules, count_by_node


def policy_rules(inp: BalancingInput, vmid: int) -> TopologyRules | None:
    """The topology rules of the CT's policy, or None when it has none."""
    rules = inp.topology.get(inp.managed[vmid].policy)
    return rules if rules is not None and rules.constrained else None


def policy_counts(inp: BalancingInput, state: WorkingState, policy: str) -> dict[str, int]:
    """The policy's CTs per node as the working state has them now."""
    location = state.location
    return count_by_node(location[v] for v, m in inp.managed.items() if m.policy == policy and v in location)


def rule_refusal(inp: BalancingInput, state: WorkingState, vmid: int, target: str) -> str | None:
    """Why the CT's topology rules keep it off ``target`` (from where the state has it), or None."""
    rules = policy_rules(inp, vmid)
    if rules is None:
        return None
    counts = policy_counts(inp, state, inp.managed[vmid].policy)
    return rules.move_refusal(counts, state.location[vmid], target)


def target_refusal(inp: BalancingInput, state: WorkingState, vmid: int, target: str) -> str | None:
    """Why the CT may not go to ``target``: its policy's weight 0 there, or its topology rules."""
    if target in inp.managed[vmid].excluded_nodes:
        return f"its policy gives {target} weight 0"
    return rule_refusal(inp, state, vmid, target)


def target_rank(inp: BalancingInput, state: WorkingState, vmid: int, target: str) -> tuple[int, int]:
    """(ScheduleAnyway excess, minus preferred-affinity weight) of moving the CT to ``target``: lower is
    better, (0, 0) for a CT whose policy has no soft rules."""
    rules = policy_rules(inp, vmid)
    if rules is None:
        return (0, 0)
    counts = policy_counts(inp, state, inp.managed[vmid].policy)
    return (rules.move_penalty(counts, state.location[vmid], target), -rules.preference(target))

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

from weakref import WeakKeyDictionary

from pve_operator.planning.balancing.inputs import BalancingInput
from pve_operator.planning.balancing.state import WorkingState
from pve_operator.planning.topology import TopologyRules, count_by_node


def policy_rules(inp: BalancingInput, vmid: int) -> TopologyRules | None:
    """The topology rules of the CT's policy, or None when it has none."""
    rules = inp.topology.get(inp.managed[vmid].policy)
    return rules if rules is not None and rules.constrained else None


#: Per working state: the policies' members (fixed for a state) and their counts at a move number.
_CACHE: WeakKeyDictionary[WorkingState, dict[str, tuple[list[int], int, dict[str, int]]]] = WeakKeyDictionary()


def policy_counts(inp: BalancingInput, state: WorkingState, policy: str) -> dict[str, int]:
    """The policy's CTs per node as the working state has them now (cached until the state's next move:
    the planners ask for every candidate and target, ``bench/spread.py`` measures it)."""
    per_state = _CACHE.setdefault(state, {})
    cached = per_state.get(policy)
    if cached is not None and cached[1] == state.moves:
        return cached[2]
    location = state.location
    members = (
        cached[0] if cached is not None else [v for v, m in inp.managed.items() if m.policy == policy and v in location]
    )
    counts = count_by_node(location[v] for v in members)
    per_state[policy] = (members, state.moves, counts)
    return counts


#: Per working state: (policy, move number, source, target) -> the rules' verdict on such a move.
_VERDICTS: WeakKeyDictionary[WorkingState, dict[tuple[str, int, str, str], str | None]] = WeakKeyDictionary()


def rule_refusal(inp: BalancingInput, state: WorkingState, vmid: int, target: str) -> str | None:
    """Why the CT's topology rules keep it off ``target`` (from where the state has it), or None. The
    verdict depends only on the policy's counts, the source and the target: asked for every candidate CT of
    a node, it is computed once per policy, node pair and state."""
    rules = policy_rules(inp, vmid)
    if rules is None:
        return None
    policy, source = inp.managed[vmid].policy, state.location[vmid]
    verdicts = _VERDICTS.setdefault(state, {})
    key = (policy, state.moves, source, target)
    if key not in verdicts:
        verdicts[key] = rules.move_refusal(policy_counts(inp, state, policy), source, target)
    return verdicts[key]


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

"""Spread and node affinity over random clusters (hypothesis, derandomized): whatever the cluster and the
policies' rules, no balancing plan breaks a hard rule.

The clusters are test_properties.py's (offline, maintenance, weight-0 and out-of-pool nodes, foreign,
pinned, locked, offloaded and cooling-down CTs, operations in flight, every metric), with random rack
labels on the pool's nodes and random placement rules per policy: a spread over hosts or racks with
maxSkew 1-2, DoNotSchedule or ScheduleAnyway, and sometimes a required rack affinity. Replaying a plan's
actions in order, every move and every restore elsewhere must:

* go to a node the CT's policy's required affinity allows (and that has its DoNotSchedule keys);
* leave each DoNotSchedule constraint at or under maxSkew, or no worse than before that step (a skew
  above maxSkew before the plan is only ever repaired);

and the whole plan must still be a fixed point: planning again on its result proposes nothing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pve_operator.api.v1alpha1 import PlacementSpec
from pve_operator.planning.actions import MigrateContainer, RestoreContainer
from pve_operator.planning.balancing import BalancingInput, plan_balance
from pve_operator.planning.topology import HOSTNAME_LABEL, TopologyInputs, TopologyRules, count_by_node, rules_for
from tests.unit.planning.balancing.test_properties import PROPERTIES, clusters, next_cycle, unlimited

RACK = "topology.pve/rack"


@st.composite
def with_topology(draw: st.DrawFn, *, steady: bool = False, in_flight: bool = True) -> BalancingInput:
    inp = draw(clusters(steady=steady, in_flight=in_flight))
    labels = {
        spec.name: {
            **({RACK: rack} if (rack := draw(st.sampled_from(["r1", "r2", None]))) else {}),
            HOSTNAME_LABEL: spec.name,
        }
        for spec in inp.pool_nodes
        if not spec.outside_pool
    }
    weights = {spec.name: 0 if spec.maintenance else spec.weight for spec in inp.pool_nodes if not spec.outside_pool}
    online = frozenset(name for name, node in inp.snapshot.nodes.items() if node.online)
    topology: dict[str, TopologyRules] = {}
    for policy in sorted({m.policy for m in inp.managed.values()}):
        placement: dict[str, Any] = {}
        if draw(st.booleans()):
            placement["topologySpreadConstraints"] = [
                {
                    "topologyKey": draw(st.sampled_from([HOSTNAME_LABEL, RACK])),
                    "maxSkew": draw(st.integers(1, 2)),
                    "whenUnsatisfiable": draw(st.sampled_from(["DoNotSchedule", "ScheduleAnyway"])),
                }
            ]
        if draw(st.integers(0, 3)) == 0:
            racks = draw(st.lists(st.sampled_from(["r1", "r2"]), min_size=1, max_size=2, unique=True))
            expression = {"key": RACK, "operator": "In", "values": racks}
            placement["nodeAffinity"] = {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [expression]}]
                }
            }
        topology[policy] = rules_for(PlacementSpec.model_validate(placement), labels, TopologyInputs(weights, online))
    return replace(inp, topology=topology)


def _replay_checks(inp: BalancingInput) -> None:
    plan = plan_balance(inp)
    location = {vmid: ct.node for vmid, ct in inp.snapshot.containers.items()}
    for action in plan.actions:
        target = action.target if isinstance(action, MigrateContainer | RestoreContainer) else None
        if target is None or target == location[action.vmid]:
            continue
        policy = inp.managed[action.vmid].policy
        rules = inp.topology.get(policy)
        if rules is not None and rules.constrained:
            assert rules.affinity_refusal(target) is None, f"CT {action.vmid} sent to {target}: {action.reason}"
            ours = [v for v, m in inp.managed.items() if m.policy == policy]
            before = count_by_node(location[v] for v in ours)
            after = dict(before)
            after[location[action.vmid]] -= 1
            after[target] = after.get(target, 0) + 1
            for spread in rules.spread:
                if spread.hard:
                    skew_before, skew_after = rules.skew(spread, before), rules.skew(spread, after)
                    assert skew_after <= max(spread.max_skew, skew_before), (
                        f"CT {action.vmid} → {target} takes {spread.topology_key} skew {skew_before} → {skew_after}"
                    )
        location[action.vmid] = target


@PROPERTIES
@given(with_topology())
def test_no_plan_breaks_a_hard_rule(inp: BalancingInput) -> None:
    _replay_checks(inp)


@PROPERTIES
@given(with_topology(steady=True, in_flight=False))
def test_a_plan_with_rules_is_a_fixed_point(inp: BalancingInput) -> None:
    inp = unlimited(inp)
    plan = plan_balance(inp)
    again = plan_balance(next_cycle(inp, plan))
    assert again.actions == (), [a.reason for a in again.actions]

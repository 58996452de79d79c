"""Topology rules (planning/topology.py): Kubernetes' spread and node-affinity semantics over pool nodes,
and what placement and scale-down do with them."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from pve_operator.api.v1alpha1 import PlacementSpec
from pve_operator.planning.model import Metric
from pve_operator.planning.placement import ContainerDemand, NodeCandidate, place
from pve_operator.planning.topology import (
    HOSTNAME_LABEL,
    Requirement,
    SelectorOperator,
    TopologyInputs,
    TopologyRules,
    rules_for,
)
from tests.builders import GIB, MIB, build_node

DEMAND = ContainerDemand(memory_bytes=1024 * MIB, cpu_cores=1, disk_bytes=4 * GIB)

#: Two racks: r1 holds px1 and px2, r2 holds px3; px4 has no rack label.
RACKS = {
    "srv-px1": {"topology.pve/rack": "r1", "zone": "a", "gen": "3"},
    "srv-px2": {"topology.pve/rack": "r1", "zone": "b", "gen": "2"},
    "srv-px3": {"topology.pve/rack": "r2", "zone": "a", "gen": "3"},
    "srv-px4": {"zone": "b"},
}


def labels_of(nodes: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    return {name: {**labels, HOSTNAME_LABEL: name} for name, labels in nodes.items()}


def rules(placement: dict[str, Any], nodes: dict[str, dict[str, str]] = RACKS, **weights: int) -> TopologyRules:
    node_weights = {name: weights.get(name.replace("srv-", ""), 1) for name in nodes}
    return rules_for(
        PlacementSpec.model_validate(placement),
        labels_of(nodes),
        TopologyInputs(node_weights, frozenset(nodes)),
    )


def spread(key: str, skew: int = 1, when: str = "DoNotSchedule") -> dict[str, Any]:
    return {"topologySpreadConstraints": [{"topologyKey": key, "maxSkew": skew, "whenUnsatisfiable": when}]}


def required(*expressions: dict[str, Any]) -> dict[str, Any]:
    terms = {"nodeSelectorTerms": [{"matchExpressions": list(expressions)}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": terms}}


@pytest.mark.parametrize(
    ("operator", "values", "labels", "matches"),
    [
        ("In", ("a", "b"), {"zone": "a"}, True),
        ("In", ("a",), {}, False),
        ("NotIn", ("a",), {"zone": "b"}, True),
        ("NotIn", ("a",), {}, True),  # Kubernetes: NotIn holds for a node without the label
        ("NotIn", ("a",), {"zone": "a"}, False),
        ("Exists", (), {"zone": ""}, True),
        ("DoesNotExist", (), {"zone": "a"}, False),
        ("Gt", ("2",), {"zone": "3"}, True),
        ("Gt", ("3",), {"zone": "3"}, False),
        ("Lt", ("3",), {"zone": "2"}, True),
        ("Gt", ("2",), {"zone": "x"}, False),  # not an integer: no match, as in Kubernetes
    ],
)
def test_selector_operators_have_kubernetes_semantics(
    operator: str, values: tuple[str, ...], labels: dict[str, str], matches: bool
) -> None:
    assert Requirement("zone", SelectorOperator(operator), values).matches(labels) is matches


def test_a_new_ct_may_go_where_count_plus_one_minus_min_is_within_max_skew() -> None:
    hostname = rules(spread(HOSTNAME_LABEL))
    counts = {"srv-px1": 2, "srv-px2": 1, "srv-px3": 1, "srv-px4": 1}
    assert hostname.add_refusal(counts, "srv-px2") is None
    why = hostname.add_refusal(counts, "srv-px1")
    assert why is not None and "3 of the policy's CTs in srv-px1 against 1" in why and "maxSkew 1" in why


def test_domains_are_label_values_and_nodes_without_the_key_are_refused_for_do_not_schedule() -> None:
    racks = rules(spread("topology.pve/rack"))
    # r1 = px1 + px2 (3 CTs), r2 = px3 (2): one more in r1 makes 4 against 2.
    counts = {"srv-px1": 2, "srv-px2": 1, "srv-px3": 2}
    assert racks.domain_counts(racks.spread[0], counts) == {"r1": 3, "r2": 2}
    assert racks.add_refusal(counts, "srv-px2") is not None
    assert racks.add_refusal(counts, "srv-px3") is None
    assert "has no label topology.pve/rack" in (racks.add_refusal(counts, "srv-px4") or "")


def test_a_move_may_not_leave_the_skew_above_max_skew_and_worse() -> None:
    hostname = rules(spread(HOSTNAME_LABEL))
    even = {"srv-px1": 2, "srv-px2": 2, "srv-px3": 2, "srv-px4": 2}
    assert hostname.move_refusal(even, "srv-px1", "srv-px2") is not None  # 1/3: skew 2
    # Already over-skewed (4 vs 1): a move that lowers the skew is allowed, one that keeps it is not worse.
    skewed = {"srv-px1": 4, "srv-px2": 1, "srv-px3": 2, "srv-px4": 2}
    assert hostname.move_refusal(skewed, "srv-px1", "srv-px2") is None
    assert hostname.move_refusal(skewed, "srv-px3", "srv-px4") is None  # 4,1,1,3: skew 3, not worse
    assert hostname.move_refusal(skewed, "srv-px2", "srv-px4") is not None  # 4,0,2,3: skew 4, worse
    assert hostname.violations(skewed)[0].crowded == "srv-px1"
    assert hostname.violations(skewed)[0].sparse == "srv-px2"


def test_schedule_anyway_never_refuses_but_ranks() -> None:
    soft = rules(spread(HOSTNAME_LABEL, when="ScheduleAnyway"))
    counts = {"srv-px1": 3, "srv-px2": 0, "srv-px3": 0, "srv-px4": 0}
    assert soft.add_refusal(counts, "srv-px1") is None
    assert soft.soft_penalty(counts, "srv-px1") == 3 and soft.soft_penalty(counts, "srv-px2") == 0


def test_required_affinity_keeps_nodes_out_of_placement_and_out_of_the_domains() -> None:
    zone_a = rules({**required({"key": "zone", "operator": "In", "values": ["a"]}), **spread(HOSTNAME_LABEL)})
    assert zone_a.domain_nodes == {"srv-px1", "srv-px3"}
    assert zone_a.affinity_refusal("srv-px2") == "does not match placement.nodeAffinity.required"
    # srv-px2's CTs are not counted: the domains px1/px3 are even.
    assert zone_a.skew(zone_a.spread[0], {"srv-px1": 1, "srv-px2": 5, "srv-px3": 1}) == 0


def test_nodes_at_weight_zero_or_offline_are_not_domains() -> None:
    placement = PlacementSpec.model_validate(spread(HOSTNAME_LABEL))
    weights = {"srv-px1": 1, "srv-px2": 0, "srv-px3": 1, "srv-px4": 1}
    r = rules_for(placement, labels_of(RACKS), TopologyInputs(weights, frozenset({"srv-px1", "srv-px2", "srv-px3"})))
    assert r.domain_nodes == {"srv-px1", "srv-px3"}


def test_nine_cts_over_three_nodes_with_max_skew_one_go_three_three_three_whatever_the_weights() -> None:
    three = {f"srv-px{i}": {} for i in (1, 2, 3)}
    r = rules(spread(HOSTNAME_LABEL), three)
    candidates = [NodeCandidate(build_node(name), weight=w) for name, w in zip(three, (4, 1, 1), strict=True)]
    result = place(range(9), candidates, DEMAND, metric=Metric.MEMORY, ceiling_fraction=0.9, rules=r)
    assert Counter(result.nodes) == {"srv-px1": 3, "srv-px2": 3, "srv-px3": 3}
    # Without the rule the weights decide (4:1:1).
    plain = place(range(9), candidates, DEMAND, metric=Metric.MEMORY, ceiling_fraction=0.9)
    assert Counter(plain.nodes)["srv-px1"] > 3


def test_a_full_domain_blocks_do_not_schedule_and_says_why() -> None:
    three = {f"srv-px{i}": {} for i in (1, 2, 3)}
    r = rules(spread(HOSTNAME_LABEL), three)
    full = NodeCandidate(build_node("srv-px3", memory_used_gib=30), weight=1)
    candidates = [NodeCandidate(build_node("srv-px1"), weight=1), NodeCandidate(build_node("srv-px2"), weight=1), full]
    result = place(range(6), candidates, DEMAND, metric=Metric.MEMORY, ceiling_fraction=0.9, rules=r)
    # px3 takes nothing, so px1 and px2 may hold one each above its 0: two placed, then no node allowed.
    assert Counter(result.nodes) == {"srv-px1": 1, "srv-px2": 1}
    assert result.rule_refused == {"srv-px1", "srv-px2"}
    assert "maxSkew 1" in result.refusals["srv-px1"] and "ceiling" in result.refusals["srv-px3"]


def test_schedule_anyway_places_everything_but_prefers_the_spread() -> None:
    three = {f"srv-px{i}": {} for i in (1, 2, 3)}
    r = rules(spread(HOSTNAME_LABEL, when="ScheduleAnyway"), three)
    full = NodeCandidate(build_node("srv-px3", memory_used_gib=30), weight=1)
    candidates = [NodeCandidate(build_node("srv-px1"), weight=1), NodeCandidate(build_node("srv-px2"), weight=1), full]
    result = place(range(6), candidates, DEMAND, metric=Metric.MEMORY, ceiling_fraction=0.9, rules=r)
    assert Counter(result.nodes) == {"srv-px1": 3, "srv-px2": 3}
    assert not result.rule_refused


def test_preferred_affinity_wins_over_weights_among_allowed_nodes() -> None:
    preferred = {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 50, "preference": {"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["2"]}]}}
            ]
        }
    }
    r = rules(preferred)
    candidates = [NodeCandidate(build_node(name), weight=5 if name == "srv-px2" else 1) for name in RACKS]
    result = place(range(4), candidates, DEMAND, metric=Metric.MEMORY, ceiling_fraction=0.9, rules=r)
    assert set(result.nodes) == {"srv-px1", "srv-px3"}  # gen 3 nodes, despite px2's weight 5


def test_required_affinity_places_only_on_matching_nodes() -> None:
    r = rules(required({"key": "topology.pve/rack", "operator": "NotIn", "values": ["r1"]}))
    candidates = [NodeCandidate(build_node(name), weight=1) for name in RACKS]
    result = place(range(4), candidates, DEMAND, metric=Metric.MEMORY, ceiling_fraction=0.9, rules=r)
    assert set(result.nodes) == {"srv-px3", "srv-px4"}  # NotIn r1 includes px4, which has no rack label


def test_the_ha_registration_uses_the_nodes_the_policy_may_use_and_says_what_pve_cannot_express() -> None:
    from pve_operator.api.v1alpha1 import HaSpec
    from pve_operator.planning.ha_registration import ha_intent

    placement = {
        **required({"key": "zone", "operator": "In", "values": ["a"]}),
        "topologySpreadConstraints": [
            {"topologyKey": HOSTNAME_LABEL, "maxSkew": 1, "whenUnsatisfiable": "DoNotSchedule"},
            {"topologyKey": "topology.pve/rack", "maxSkew": 1, "whenUnsatisfiable": "DoNotSchedule"},
        ],
    }
    r = rules(placement)
    weights = {"srv-px1": 1, "srv-px2": 1, "srv-px3": 0, "srv-px4": 1}
    intent = ha_intent(("apps", "web", "uid"), HaSpec(), weights, r, strict=True)
    # srv-px2 and srv-px4 are zone b, srv-px3 weighs 0: only srv-px1 is left.
    assert intent.allowed_nodes == ("srv-px1",) and intent.strict
    assert intent.spread_over_nodes and intent.other_spread_keys == ("topology.pve/rack",)

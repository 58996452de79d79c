"""Topology spread and node affinity end to end (issue 12 §1, acceptance §5): pve_sim over HTTPS, the real
API server, the operator as a process.

The lab here has three nodes: the two-node lab plus srv-px3, a copy of srv-px2 (32 GiB, 8% base memory).
Pool weights are 2:1:1 unless said otherwise, so a policy that ignored its spread constraint would put
about twice as many CTs on srv-px1 as on each of the others. Per-node counts are read from the
simulator's own state (not PVE's lagging /cluster/resources), and so are the tasks it ran: a CT destroyed
or created behind the test's back shows as a vzdestroy / vzcreate task.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.conftest import Lab, lab_scenario_data, ready_replicas, recent_actions, sim_state
from tests.fixtures.kube import wait_for
from tests.fixtures.operator import apply_objects, connect_pool, pool_manifest

pytestmark = [pytest.mark.kube, pytest.mark.slow]

NODES = ("srv-px1", "srv-px2", "srv-px3")
THRESHOLDS = {"migrateAbovePercent": 75, "offloadAbovePercent": 90, "restoreBelowPercent": 60, "sustainedSamples": 3}
HOSTNAME_KEY = "kubernetes.io/hostname"
SPREAD_BY_HOST = {
    "topologySpreadConstraints": [{"topologyKey": HOSTNAME_KEY, "maxSkew": 1, "whenUnsatisfiable": "DoNotSchedule"}]
}


# -- the three-node lab ----------------------------------------------------------------------------


def topology_lab(
    kube: Any,
    namespace: str,
    pve_sim_server: Any,
    pve_operator_process: Any,
    *,
    weights: tuple[int, int, int] = (2, 1, 1),
    labels: dict[str, dict[str, str]] | None = None,
    balancing: dict[str, Any] | None = None,
    time_scale: float = 0.05,
) -> Lab:
    from pve_sim.scenario import parse_scenario

    data = lab_scenario_data()
    data["nodes"].append({**data["nodes"][1], "name": "srv-px3"})
    sim = pve_sim_server(parse_scenario(data, f"<{namespace}>"), time_scale=time_scale)
    pool_kwargs: dict[str, Any] = {
        "nodes": tuple(zip(NODES, weights, strict=True)),
        "thresholds": THRESHOLDS,
        "balancing": {"intervalSeconds": 5, "mode": "Automatic", "cooldownSeconds": 10, **(balancing or {})},
    }
    connect_pool(kube, namespace, sim, **pool_kwargs)
    if labels:
        # pool_manifest has no labels: apply the pool again with them, before the operator starts.
        pool = pool_manifest("lab", endpoint=sim.url, **pool_kwargs)
        for node in pool["spec"]["nodes"]:
            if node["name"] in labels:
                node["labels"] = labels[node["name"]]
        apply_objects(kube, namespace, pool)
    lab = Lab(kube, namespace, sim, pve_operator_process(namespace))
    lab.wait_condition("proxmoxserverpool", "lab", "Ready", "True", "Connected")
    return lab


def policy_cts(lab: Lab, policy: str = "web") -> dict[int, dict[str, Any]]:
    """The policy's CTs as the simulator has them (authoritative): vmid -> node, hostname, status, lock."""
    found = {}
    for vmid, ct in sim_state(lab)["containers"].items():
        hostname = str(ct["config"].get("hostname", ""))
        if hostname.startswith(f"ct-{policy}-"):
            found[int(vmid)] = {"node": ct["node"], "hostname": hostname, "status": ct["status"], "lock": ct["lock"]}
    return found


def per_node(lab: Lab, policy: str = "web") -> dict[str, int]:
    counts = Counter(ct["node"] for ct in policy_cts(lab, policy).values())
    return {node: counts.get(node, 0) for node in NODES}


def tasks(lab: Lab, task_type: str) -> list[dict[str, Any]]:
    """Every task of ``task_type`` the simulator ran (vzcreate, vzdestroy, vzmigrate, ...)."""
    return [t for t in sim_state(lab)["tasks"] if t["type"] == task_type]


def progressing_reason(lab: Lab, policy: str = "web") -> str | None:
    found = lab.condition("containerpolicy", policy, "Progressing")
    return None if found is None else found.get("reason")


def after_pool_samples(lab: Lab, count: int, check: Callable[[], None] = lambda: None, timeout_s: float = 90) -> None:
    """Wait until the pool has taken ``count`` more samples (one balancing decision each, every 5 s),
    running ``check`` at every poll: how a test lets the operator act (or not) for a while."""
    seen: list[str] = []

    def advanced() -> bool:
        check()
        stamp = lab.status("proxmoxserverpool", "lab").get("lastSampleTime")
        if stamp and (not seen or seen[-1] != stamp):
            seen.append(stamp)
        return len(seen) > count

    wait_for(advanced, timeout_s=timeout_s, interval_s=0.5, what=f"{count} more samples of the pool")


def warnings(lab: Lab, reason: str) -> list[str]:
    return [e["message"] for e in lab.events() if e["reason"] == reason]


# -- tests -----------------------------------------------------------------------------------------


def test_spread_survives_a_node_going_offline_and_is_repaired_by_migration_when_it_returns(
    kube: Any, kube_namespace: str, installed_crds: Any, pve_sim_server: Any, pve_operator_process: Any
) -> None:
    lab = topology_lab(kube, kube_namespace, pve_sim_server, pve_operator_process)
    lab.apply_policy("web", replicas=9, extra_spec={"placement": SPREAD_BY_HOST})
    lab.wait_policy("web", ready_replicas(9), "9 CTs running")
    # Weights 2:1:1 alone would give 5/2/2 (or 4/3/2): the spread constraint wins.
    assert per_node(lab) == {"srv-px1": 3, "srv-px2": 3, "srv-px3": 3}
    before = policy_cts(lab)
    on_px3 = {vmid for vmid, ct in before.items() if ct["node"] == "srv-px3"}

    def nothing_destroyed_or_recreated(expected_creations: int) -> Callable[[], None]:
        def check() -> None:
            assert not tasks(lab, "vzdestroy"), "a CT of the policy was destroyed"
            assert len(tasks(lab, "vzcreate")) <= expected_creations, "CTs were created to replace the offline ones"
            hostnames = [ct["hostname"] for ct in policy_cts(lab).values()]
            assert len(hostnames) == len(set(hostnames)), f"an index was created twice: {sorted(hostnames)}"
            assert progressing_reason(lab) != "Unschedulable", lab.condition("containerpolicy", "web", "Progressing")

        return check

    # srv-px3 fails: its CTs are of unknown state, left alone; the policy does not count them.
    lab.sim.cluster.set_node_online("srv-px3", False)
    degraded = lab.wait_condition("containerpolicy", "web", "Degraded", "True", "NodeOffline", timeout_s=90)
    assert "srv-px3" in degraded["message"]
    after_pool_samples(lab, 3, nothing_destroyed_or_recreated(9))
    assert set(policy_cts(lab)) == set(before)

    # Scale to 12 while srv-px3 is away: the domains are the two online nodes, 3 each, so the three new
    # CTs go there within maxSkew 1 (5/4: srv-px1's weight 2 decides the odd one).
    lab.kube.kubectl("scale", "ctp", "web", "--replicas=12", "-n", lab.namespace)
    check = nothing_destroyed_or_recreated(12)

    def twelve_created() -> bool:
        check()
        cts = policy_cts(lab)
        online = [ct for ct in cts.values() if ct["node"] != "srv-px3"]
        return len(cts) == 12 and len(online) == 9 and all(ct["status"] == "running" for ct in online)

    wait_for(twelve_created, timeout_s=120, interval_s=0.5, what="12 CTs, the 9 on the online nodes running")
    counts = per_node(lab)
    assert counts == {"srv-px1": 5, "srv-px2": 4, "srv-px3": 3}, counts
    assert {vmid for vmid, ct in policy_cts(lab).items() if ct["node"] == "srv-px3"} == on_px3
    assert set(before) <= set(policy_cts(lab)), "the CTs of the offline node are still the policy's"
    assert sorted(ct["hostname"] for ct in policy_cts(lab).values()) == [f"ct-web-{i:02d}" for i in range(12)]
    assert len(tasks(lab, "vzcreate")) == 12

    # srv-px3 is back with its 3 CTs: 5/4/3 is a skew of 2 > 1, and balancing repairs it by migration.
    lab.sim.cluster.set_node_online("srv-px3", True)

    def repaired() -> bool:
        assert not tasks(lab, "vzdestroy"), "a CT of the policy was destroyed"
        cts = policy_cts(lab).values()
        return per_node(lab) == {"srv-px1": 4, "srv-px2": 4, "srv-px3": 4} and all(
            ct["status"] == "running" and not ct["lock"] for ct in cts
        )

    wait_for(repaired, timeout_s=180, interval_s=0.5, what="4 CTs running on every node")
    wait_for(
        lambda: not lab.status("proxmoxserverpool", "lab").get("inFlight"), timeout_s=60, what="no migration in flight"
    )
    # Past the 10 s cooldown: nothing moves back.
    after_pool_samples(lab, 4, lambda: None)
    assert per_node(lab) == {"srv-px1": 4, "srv-px2": 4, "srv-px3": 4}
    migrated = Counter(int(t["id"]) for t in tasks(lab, "vzmigrate"))
    assert migrated and all(n == 1 for n in migrated.values()), f"a CT moved back and forth: {migrated}"
    assert len(tasks(lab, "vzcreate")) == 12 and not tasks(lab, "vzdestroy")

    repairs = [a for a in recent_actions(lab) if a["action"] == "Migrate" and a["result"] == "Succeeded"]
    assert repairs and all("repair the spread" in a["reason"] for a in repairs), repairs
    assert {a["vmid"] for a in repairs} == set(migrated)
    assert all(a["targetNode"] == "srv-px3" for a in repairs), repairs
    events = [e["message"] for e in lab.events() if e["reason"] == "Migrated"]
    assert events and all("repair the spread" in m for m in events), events
    lab.wait_policy("web", ready_replicas(12), "12 CTs running and Ready", timeout_s=60)


def test_a_load_spike_never_piles_the_policy_onto_another_node(
    kube: Any, kube_namespace: str, installed_crds: Any, pve_sim_server: Any, pve_operator_process: Any
) -> None:
    """srv-px1 loaded above migrateAbovePercent with 3/3/3: any move off it would leave 2/4/3 (skew 2 >
    maxSkew 1), so relief says SpreadViolation instead of breaking the spread."""
    lab = topology_lab(kube, kube_namespace, pve_sim_server, pve_operator_process)
    lab.apply_policy("web", replicas=9, memory_mib=4096, extra_spec={"placement": SPREAD_BY_HOST})
    lab.wait_policy("web", ready_replicas(9), "9 CTs running")
    assert per_node(lab) == {"srv-px1": 3, "srv-px2": 3, "srv-px3": 3}

    skews: list[dict[str, int]] = []

    def spread_kept() -> None:
        counts = per_node(lab)
        skews.append(counts)
        assert sum(counts.values()) == 9, counts
        assert max(counts.values()) - min(counts.values()) <= 1, f"the policy piled up: {counts}"

    # 8% -> 60% base: srv-px1 at 60% + 3 x 6.9% = 80.6%, above 75% (under the 90% offload line).
    lab.sim.cluster.set_node_load("srv-px1", "memory", 0.60)
    usage = lab.sim.cluster.node_usage("srv-px1")
    assert 75 < 100 * usage["mem"] / usage["maxmem"] < 90

    def refused() -> bool:
        spread_kept()
        return any("placement rules" in m and "srv-px1" in m for m in warnings(lab, "MigrateRefused"))

    wait_for(refused, timeout_s=180, interval_s=0.5, what="a MigrateRefused warning naming the placement rules")
    message = next(m for m in warnings(lab, "MigrateRefused") if "placement rules" in m)
    assert "topologySpreadConstraints kubernetes.io/hostname" in message and "maxSkew 1" in message, message
    # ... and the pool's status records it on the CT: Refused with SpreadViolation.
    refusals = [
        a
        for a in lab.status("proxmoxserverpool", "lab").get("recentActions") or []
        if a.get("result") == "Refused" and a.get("message") == "SpreadViolation"
    ]
    assert refusals and refusals[-1]["sourceNode"] == "srv-px1" and "placement rules" in refusals[-1]["reason"]
    # The spike lasts: several more decisions, none of which breaks the spread.
    after_pool_samples(lab, 4, spread_kept)
    assert len(skews) >= 10
    assert not tasks(lab, "vzmigrate"), "every move off srv-px1 would break maxSkew 1"
    assert per_node(lab) == {"srv-px1": 3, "srv-px2": 3, "srv-px3": 3}


def test_scale_down_removes_from_the_most_crowded_nodes_not_just_the_newest_cts(
    kube: Any, kube_namespace: str, installed_crds: Any, pve_sim_server: Any, pve_operator_process: Any
) -> None:
    """3/3/3 where the three newest CTs are all on srv-px1: newest-first alone would leave 0/3/3."""
    lab = topology_lab(
        kube, kube_namespace, pve_sim_server, pve_operator_process, weights=(1, 1, 1), balancing={"mode": "Off"}
    )

    def apply(replicas: int, zero_weight: tuple[str, ...]) -> None:
        placement: dict[str, Any] = dict(SPREAD_BY_HOST)
        if zero_weight:
            placement["nodeWeights"] = [{"name": n, "weight": 0} for n in zero_weight]
        lab.apply_policy("web", replicas=replicas, extra_spec={"placement": placement})

    apply(6, ("srv-px1",))  # the six oldest on srv-px2 and srv-px3
    lab.wait_policy("web", ready_replicas(6), "6 CTs running")
    assert per_node(lab) == {"srv-px1": 0, "srv-px2": 3, "srv-px3": 3}
    apply(9, ("srv-px2", "srv-px3"))  # the three newest on srv-px1
    lab.wait_policy("web", ready_replicas(9), "9 CTs running")
    assert per_node(lab) == {"srv-px1": 3, "srv-px2": 3, "srv-px3": 3}
    newest = {vmid for vmid, ct in policy_cts(lab).items() if ct["node"] == "srv-px1"}

    apply(6, ())  # every node weighs 1 again, and the policy shrinks to 6
    lab.wait_policy("web", ready_replicas(6), "6 CTs running after the scale-down")
    wait_for(lambda: len(policy_cts(lab)) == 6, timeout_s=60, what="3 CTs destroyed")
    assert per_node(lab) == {"srv-px1": 2, "srv-px2": 2, "srv-px3": 2}
    destroyed = {int(t["id"]) for t in tasks(lab, "vzdestroy")}
    assert len(destroyed) == 3 and len(destroyed & newest) == 1, (destroyed, newest)
    assert not tasks(lab, "vzmigrate"), "the counts come from the scale-down alone"


def test_required_affinity_that_no_node_with_room_matches_is_unschedulable_until_the_node_returns(
    kube: Any, kube_namespace: str, installed_crds: Any, pve_sim_server: Any, pve_operator_process: Any
) -> None:
    lab = topology_lab(
        kube,
        kube_namespace,
        pve_sim_server,
        pve_operator_process,
        labels={"srv-px1": {"zone": "west"}, "srv-px3": {"zone": "east"}},
    )
    lab.sim.cluster.set_node_online("srv-px3", False)  # the only node of zone east
    wait_for(
        lambda: lab.status("proxmoxserverpool", "lab").get("nodeSummary") == "2/3",
        timeout_s=60,
        what="the pool sees srv-px3 offline",
    )
    affinity = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["east"]}]}]
        }
    }
    lab.apply_policy("zoned", replicas=2, extra_spec={"placement": {"nodeAffinity": affinity}})

    condition = lab.wait_condition("containerpolicy", "zoned", "Progressing", "False", "Unschedulable", timeout_s=90)
    message = condition["message"]
    assert message.startswith("2 CT(s) cannot be placed"), message
    assert "srv-px1: does not match placement.nodeAffinity.required" in message, message
    assert "srv-px2: does not match placement.nodeAffinity.required" in message, message
    assert "srv-px3: offline" in message, message
    ready = lab.condition("containerpolicy", "zoned", "Ready")
    assert ready is not None and ready["status"] == "False"
    assert not policy_cts(lab, "zoned"), "no CT may go to a node outside zone east"

    # srv-px3 comes back: both CTs go there, and only there.
    lab.sim.cluster.set_node_online("srv-px3", True)
    lab.wait_policy("zoned", ready_replicas(2), "2 CTs running in zone east", timeout_s=120)
    assert per_node(lab, "zoned") == {"srv-px1": 0, "srv-px2": 0, "srv-px3": 2}
    assert progressing_reason(lab, "zoned") != "Unschedulable"

"""The simulated HA manager (pve-ha-manager 5.2.0 ``src/PVE/HA/Manager.pm``): requested states
applied one HA round later, placement under HA rules, fencing and recovery of an offline node's
services, and CRS auto-rebalance -- observed through proxmoxer over HTTPS, time moved with the
simulator's clock (manual clock: tasks finish at once, HA rounds run as time is advanced)."""

from __future__ import annotations

from typing import Any

import pytest

from pve_sim.ha import imbalance
from tests.fixtures.sim import SimServerFactory, SimTestServer
from tests.sim.ha_support import ha_log, ha_scenario, hastate

GIB = 1024**3


def relocations(api: Any) -> list[str]:
    """CT ids of the ``vzmigrate`` tasks the HA stack (root@pam) ran, oldest first."""
    tasks = [t for node in ("srv-px1", "srv-px2", "srv-px3") for t in api.nodes(node).tasks.get(typefilter="vzmigrate")]
    return [t["id"] for t in sorted(tasks, key=lambda t: t["starttime"]) if t["user"] == "root@pam"]


def test_a_requested_state_is_applied_one_ha_round_later(pve_sim_server: SimServerFactory) -> None:
    server = pve_sim_server(ha_scenario({201: "srv-px1"}, ha=[201]), time_scale=1.0)
    server.cluster.clock.freeze()
    root = server.proxmox("root@pam")

    root.cluster.ha.resources("ct:201").put(state="stopped")
    before = (hastate(root, 201)[0], root.nodes("srv-px1").lxc(201).status.current.get()["status"])
    server.cluster.advance_clock(1)
    requested = hastate(root, 201)[0]
    server.cluster.advance_clock(20)

    assert before == ("started", "running")
    assert requested == "request_stop"
    assert hastate(root, 201)[0] == "stopped"
    assert root.nodes("srv-px1").lxc(201).status.current.get()["status"] == "stopped"


def test_a_strict_node_affinity_rule_moves_the_resource_to_its_node(pve_sim_server: SimServerFactory) -> None:
    server = pve_sim_server(ha_scenario({201: "srv-px1", 202: "srv-px2"}, ha=[201, 202]))
    root = server.proxmox("root@pam")

    root.cluster.ha.rules.post(rule="pin", type="node-affinity", nodes="srv-px3", strict=1, resources="ct:202")

    assert hastate(root, 202) == ("started", "srv-px3")
    assert root.nodes("srv-px3").lxc(202).status.current.get()["status"] == "running"
    assert "relocate service 'ct:202' to node 'srv-px3'" in ha_log(server)
    assert relocations(root) == ["202"]


def test_fencing_recovers_an_offline_nodes_services_after_the_fence_delay(pve_sim_server: SimServerFactory) -> None:
    server = pve_sim_server(
        ha_scenario(
            {201: "srv-px1", 202: "srv-px1", 203: "srv-px3"},
            ha=[201, 202, 203],
            rules=[
                {
                    "rule": "only-1-or-3",
                    "type": "node-affinity",
                    "nodes": ["srv-px1", "srv-px3"],
                    "strict": True,
                    "resources": ["ct:201"],
                },
                {
                    "rule": "apart",
                    "type": "resource-affinity",
                    "affinity": "negative",
                    "resources": ["ct:202", "ct:203"],
                },
            ],
        )
    )
    root = server.proxmox("root@pam")

    server.cluster.set_node_online("srv-px1", False)
    server.cluster.advance_clock(50)
    waiting = hastate(root, 201)
    server.cluster.advance_clock(10)  # 60 s: fence delay over
    fenced = hastate(root, 201)
    server.cluster.advance_clock(50)
    still_fenced = hastate(root, 202)
    server.cluster.advance_clock(10)  # 120 s: the dead node's agent lock expired

    assert waiting == ("started", "srv-px1")
    assert fenced == ("fence", "srv-px1") and still_fenced == ("fence", "srv-px1")
    assert hastate(root, 201) == ("started", "srv-px3")  # strict: never srv-px2
    assert hastate(root, 202) == ("started", "srv-px2")  # negative affinity with ct:203 on srv-px3
    assert root.nodes("srv-px3").lxc(201).status.current.get()["status"] == "running"
    assert root.nodes("srv-px2").lxc(202).status.current.get()["status"] == "running"
    log = ha_log(server)
    assert "fencing: acknowledged - got agent lock for node 'srv-px1'" in log
    assert "recover service 'ct:201' from fenced node 'srv-px1' to node 'srv-px3'" in log


def test_the_fence_delay_is_a_scenario_setting(pve_sim_server: SimServerFactory) -> None:
    server = pve_sim_server(
        ha_scenario(
            {201: "srv-px1"}, ha=[201], timing={"haFenceDelaySeconds": 5, "haFenceSeconds": 10, "haCrmRoundSeconds": 5}
        )
    )
    root = server.proxmox("root@pam")

    server.cluster.set_node_online("srv-px1", False)
    server.cluster.advance_clock(10)

    state, node = hastate(root, 201)
    assert state == "started" and node != "srv-px1"


def test_without_quorum_nothing_is_fenced(pve_sim_server: SimServerFactory) -> None:
    server = pve_sim_server(ha_scenario({201: "srv-px2"}, ha=[201], nodes=("srv-px1", "srv-px2")))
    root = server.proxmox("root@pam")

    server.cluster.set_node_online("srv-px2", False)
    server.cluster.advance_clock(600)

    assert server.cluster.state.containers[201].node == "srv-px2"
    assert (
        root.cluster.ha.status.manager_status.get()["manager_status"]["service_status"]["ct:201"]["state"] == "started"
    )


def test_disabled_services_are_not_recovered(pve_sim_server: SimServerFactory) -> None:
    server = pve_sim_server(ha_scenario({201: "srv-px1"}, ha=[201], resource_options={201: {"state": "disabled"}}))

    server.cluster.set_node_online("srv-px1", False)
    server.cluster.advance_clock(300)

    assert server.cluster.state.containers[201].node == "srv-px1"


STATIC_REBALANCE = {"ha": "static", "haAutoRebalance": True}


def test_crs_auto_rebalance_moves_ha_resources_off_the_loaded_node(pve_sim_server: SimServerFactory) -> None:
    cts = {201: "srv-px1", 202: "srv-px1", 203: "srv-px1", 204: "srv-px1", 205: "srv-px1"}
    server = pve_sim_server(ha_scenario(cts, ha=[201, 202, 203, 204], crs=STATIC_REBALANCE))
    root = server.proxmox("root@pam")

    server.cluster.advance_clock(25)  # two rounds above the threshold: hold duration not reached
    held = relocations(root)
    server.cluster.advance_clock(600 - 25)

    assert held == []
    # 5 equal CTs on srv-px1 (ct:205 is not HA managed but counts as load): 1.41 -> 1.02 -> 0.57
    # -> 0.28, below the default threshold of 30 %: no further move.
    assert relocations(root) == ["201", "202", "203"]
    log = ha_log(server)
    assert "auto rebalance - relocate ct:201 to srv-px2 (expected change for imbalance from 1.41 to 1.02)" in log
    assert "got crm command: relocate ct:202 srv-px3" in log
    assert server.cluster.state.containers[205].node == "srv-px1"  # not HA managed: never moved
    assert round(server.cluster.ha.node_imbalance(), 2) == 0.28


def test_crs_auto_rebalance_settings_are_read_from_datacenter_cfg(pve_sim_server: SimServerFactory) -> None:
    cts = {201: "srv-px1", 202: "srv-px1", 203: "srv-px1", 204: "srv-px1"}
    off = pve_sim_server(ha_scenario(cts, ha=list(cts), crs={"ha": "static"}))
    basic = pve_sim_server(ha_scenario(cts, ha=list(cts), crs={"ha": "basic", "haAutoRebalance": True}))
    high = pve_sim_server(ha_scenario(cts, ha=list(cts), crs={**STATIC_REBALANCE, "haAutoRebalanceMargin": 100}))
    slow = pve_sim_server(ha_scenario(cts, ha=list(cts), crs={**STATIC_REBALANCE, "haAutoRebalanceHoldDuration": 30}))

    for server in (off, basic, high, slow):
        server.cluster.advance_clock(250)

    assert [relocations(s.proxmox("root@pam")) for s in (off, basic, high)] == [[], [], []]
    assert relocations(slow.proxmox("root@pam")) == []  # 30 rounds = 300 s not reached yet
    slow.cluster.advance_clock(60)
    assert relocations(slow.proxmox("root@pam")) == ["201"]
    options = off.proxmox("root@pam").cluster.options.get()
    assert options["crs"] == {"ha": "static"}
    assert slow.proxmox("root@pam").cluster.options.get()["crs"]["ha-auto-rebalance-hold-duration"] == 30


def test_rebalance_respects_negative_affinity(pve_sim_server: SimServerFactory) -> None:
    cts = {201: "srv-px1", 202: "srv-px1", 203: "srv-px2", 204: "srv-px3"}
    rules = [
        {
            "rule": "not-with-203",
            "type": "resource-affinity",
            "affinity": "negative",
            "resources": ["ct:201", "ct:203"],
        },
        {
            "rule": "not-with-204",
            "type": "resource-affinity",
            "affinity": "negative",
            "resources": ["ct:201", "ct:204"],
        },
    ]
    server = pve_sim_server(ha_scenario(cts, ha=list(cts), rules=rules, crs=STATIC_REBALANCE))

    server.cluster.advance_clock(600)

    assert server.cluster.state.containers[201].node == "srv-px1"


@pytest.mark.parametrize(
    ("loads", "expected"),
    [
        # pve-ha-manager src/test/test-crs-dynamic-auto-rebalance2: 4 equal VMs (1 core, 4 GiB) on
        # 24-core / 32 GiB nodes, moved one by one: 1.41 -> 0.94 -> 0.35.
        ([4, 0, 0], 1.41),
        ([3, 1, 0], 0.94),
        ([2, 1, 1], 0.35),
    ],
)
def test_imbalance_reproduces_pve_s_regression_figures(loads: list[int], expected: float) -> None:
    node_loads = [(n * 1.0 / 24 + n * 4 * GIB / (32 * GIB)) / 2 for n in loads]

    assert round(imbalance(node_loads), 2) == expected


def test_hastate_and_node_status_in_cluster_resources(pve_sim_server: SimServerFactory) -> None:
    server: SimTestServer = pve_sim_server(ha_scenario({201: "srv-px1"}, ha=[201]))
    root = server.proxmox("root@pam")

    server.cluster.set_node_online("srv-px1", False)
    server.cluster.advance_clock(60)
    nodes = {e["node"]: e.get("hastate") for e in root.cluster.resources.get(type="node")}

    assert nodes == {"srv-px1": "fence", "srv-px2": "online", "srv-px3": "online"}
    assert hastate(root, 201)[0] == "fence"

"""CTs that are HA resources of Proxmox VE, against pve_sim (its HA manager acts a round after a request):
the operator waits for the HA manager instead of trusting the ``ha*`` task's OK, says when it does not
follow, and reads the HA rules and CRS setting that keep balancing off such CTs."""

from __future__ import annotations

from typing import Any

import pytest

from pve_operator.execution.pool_input import read_ha_facts
from pve_operator.planning.actions import DestroyContainer, StartContainer
from pve_operator.pve import ha
from tests.fixtures.kube import wait_for
from tests.integration.test_executor import BLUEPRINT, creates, executor
from tests.sim.ha_support import ha_scenario


def _running(sim: Any, vmid: int) -> str:
    return str(sim.proxmox().nodes("srv-px1").lxc(vmid).status.current.get()["status"])


def _ha_resources(sim: Any) -> set[str]:
    return {str(r["sid"]) for r in sim.proxmox().cluster.ha.resources.get()}


def test_an_ha_managed_ct_is_stopped_by_the_ha_manager_before_it_is_destroyed_and_its_resource_purged(
    pve_sim_server: Any,
) -> None:
    # Real-time-ish simulator: the HA manager acts on a request one simulated round after its task ended.
    sim = pve_sim_server(time_scale=0.05)
    run = executor(sim)
    assert all(o.succeeded for o in run.apply(creates(1), BLUEPRINT))
    sim.proxmox().cluster.ha.resources.post(sid="ct:3100", state="started")
    assert _ha_resources(sim) == {"ct:3100"}

    # The old executor destroyed right after the hastop task's OK: PVE refused, the CT was still running.
    outcome = run.apply([DestroyContainer(vmid=3100, node="srv-px1", running=True, reason="scale down")], BLUEPRINT)[0]
    assert outcome.succeeded, outcome.message
    assert not [r for r in sim.proxmox().cluster.resources.get(type="vm") if r.get("vmid") == 3100]
    assert _ha_resources(sim) == set(), "destroy purges the CT's HA resource"
    tasks = [t["type"] for t in sim.proxmox().nodes("srv-px1").tasks.get(vmid=3100, limit=50)]
    assert "hastop" in tasks and "vzdestroy" in tasks


def test_a_start_the_ha_manager_does_not_carry_out_is_reported_as_not_converging(
    pve_sim_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = pve_sim_server(time_scale=0.05)
    run = executor(sim)
    assert all(o.succeeded for o in run.apply(creates(1), BLUEPRINT))
    sim.proxmox().cluster.ha.resources.post(sid="ct:3100", state="stopped")
    sim.proxmox().nodes("srv-px1").lxc(3100).status.stop.post()  # an hastop: the manager stops it

    def stopped() -> bool:
        return _running(sim, 3100) == "stopped"

    wait_for(stopped, timeout_s=30, what="CT 3100 stopped by the HA manager")
    # Every start the HA manager tries fails (a broken CT): the request is accepted, nothing happens.
    sim.cluster.faults.add_task_failure("vzstart", "startup for container '3100' failed", count=1000, vmid=3100)
    monkeypatch.setattr(ha, "HA_CONVERGE_SECONDS", 3.0)
    outcome = run.apply([StartContainer(3100, "srv-px1", "stopped outside the operator")], BLUEPRINT)[0]
    tasks = [
        (t["type"], t.get("status"), t["user"]) for t in sim.proxmox().nodes("srv-px1").tasks.get(vmid=3100, limit=50)
    ]
    assert not outcome.succeeded, tasks
    assert isinstance(outcome.error, ha.PveHaNotConverging)
    assert "managed by Proxmox VE's HA stack" in outcome.message and "hastart" in outcome.message
    assert "stopped on srv-px1" in outcome.message


def test_ha_rules_and_crs_auto_rebalance_are_read_for_balancing(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=0.0)
    run = executor(sim)
    assert all(o.succeeded for o in run.apply(creates(3), BLUEPRINT))
    api = sim.proxmox()
    for vmid in (3100, 3101, 3102):
        api.cluster.ha.resources.post(sid=f"ct:{vmid}", state="started")
    api.cluster.ha.rules.post(
        rule="web-apart", type="resource-affinity", resources="ct:3100,ct:3101", affinity="negative"
    )
    client = run._client  # the operator's own PveClient (token of the operator's user)
    facts = read_ha_facts(client, client.snapshot(0.0))
    assert dict(facts.rule_of) == {3100: "web-apart", 3101: "web-apart"}
    assert facts.auto_rebalance is False
    snapshot = client.snapshot(0.0)
    assert snapshot.containers[3102].ha_state == "started" and snapshot.containers[3102].ha_managed


def test_crs_auto_rebalance_is_read_from_datacenter_cfg(pve_sim_server: Any) -> None:
    scenario = ha_scenario({201: "srv-px1"}, ha=[201], crs={"ha": "static", "haAutoRebalance": True})
    sim = pve_sim_server(scenario, time_scale=0.0)
    client = executor(sim)._client
    facts = read_ha_facts(client, client.snapshot(0.0))
    assert facts.auto_rebalance is True and dict(facts.rule_of) == {}
    # Without an HA-managed CT nothing is read (no requests for clusters that do not use HA).
    plain = pve_sim_server(ha_scenario({201: "srv-px1"}, crs={"ha": "static", "haAutoRebalance": True}), time_scale=0.0)
    plain_client = executor(plain)._client
    assert read_ha_facts(plain_client, plain_client.snapshot(0.0)).auto_rebalance is False


def test_on_pve_8_without_ha_rules_the_ha_groups_place_the_cts(pve_sim_server: Any) -> None:
    """PVE 8 answers GET /cluster/ha/rules with 501 (rules came with pve-ha-manager 5.0): the balancing cycle
    must not fail on it; HA groups, which place CTs there, count as rules (ha-group-<group>)."""
    scenario = ha_scenario(
        {201: "srv-px1", 202: "srv-px1"},
        ha=[201, 202],
        groups=[{"group": "pinned", "nodes": ["srv-px1"], "restricted": True}],
        resource_options={201: {"group": "pinned"}},
    )
    sim = pve_sim_server(scenario, time_scale=0.0)
    sim.cluster.faults.add_request_fault(
        method="GET",
        path_regex="^/cluster/ha/rules$",
        status=501,
        message="Method 'GET /cluster/ha/rules' not implemented",
    )
    client = executor(sim)._client
    facts = read_ha_facts(client, client.snapshot(0.0))
    assert not sim.cluster.faults.describe()["request_faults"], "GET /cluster/ha/rules was answered with the 501"
    assert dict(facts.rule_of) == {201: "ha-group-pinned"}

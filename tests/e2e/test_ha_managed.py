"""CTs that are HA resources of Proxmox VE, end to end (issue 12 §2 and §5): a real API server, the
operator as a process and pve_sim over HTTPS, whose HA manager carries out a request a round after the
``hastart``/``hastop``/``hamigrate`` task that handed it over ended.

The lab: three nodes (srv-px1..3, 8 cores and 32 GiB each, 8% base memory), the lab's foreign CT 3150 on
srv-px2; CTs of the policy are registered as HA resources by root through the PVE API, as an
administrator does with ``ha-manager add ct:<vmid>``.
"""

from __future__ import annotations

import copy
import json
import re
import time
from itertools import pairwise
from typing import Any

import pytest

from pve_sim.scenario import parse_scenario
from tests.e2e.conftest import Lab, lab_scenario_data, ready_replicas, sim_state
from tests.fixtures.kube import wait_for
from tests.fixtures.operator import connect_pool

pytestmark = [pytest.mark.kube, pytest.mark.slow]

NODES = ("srv-px1", "srv-px2", "srv-px3")
THRESHOLDS = {"migrateAbovePercent": 75, "offloadAbovePercent": 90, "restoreBelowPercent": 60, "sustainedSamples": 3}
OPERATOR_USER = "ctoperator@pve"
MIGRATION_TASKS = ("vzmigrate", "hamigrate")


# -- the lab ---------------------------------------------------------------------------------------


def ha_lab(
    kube: Any,
    namespace: str,
    pve_sim_server: Any,
    pve_operator_process: Any,
    *,
    weights: tuple[int, int, int],
    replicas: int,
    time_scale: float = 0.05,
    timing: dict[str, Any] | None = None,
    crs: dict[str, Any] | None = None,
) -> Lab:
    """Three nodes, a pool over them with ``weights``, balancing and offload Automatic, and a policy of
    ``replicas`` CTs of 2 GiB, all running."""
    data = lab_scenario_data()
    template = data["nodes"][0]
    data["nodes"] = [{**copy.deepcopy(template), "name": name} for name in NODES]
    data["timing"].update(timing or {})
    if crs is not None:
        data["cluster"]["options"] = {"crs": crs}
    sim = pve_sim_server(parse_scenario(data, f"<{namespace}>"), time_scale=time_scale)
    connect_pool(
        kube,
        namespace,
        sim,
        nodes=tuple(zip(NODES, weights, strict=True)),
        thresholds=THRESHOLDS,
        balancing={"intervalSeconds": 5, "mode": "Automatic", "cooldownSeconds": 30},
        offload={"mode": "Automatic"},
    )
    lab = Lab(kube, namespace, sim, pve_operator_process(namespace))
    lab.wait_condition("proxmoxserverpool", "lab", "Ready", "True", "Connected")
    lab.apply_policy("web", replicas=replicas, memory_mib=2048)
    lab.wait_policy("web", ready_replicas(replicas), f"{replicas} CTs running", timeout_s=180)
    return lab


def make_ha_managed(lab: Lab, *vmids: int) -> None:
    """``ha-manager add ct:<vmid> --state started``, as root through the API."""
    api = lab.sim.proxmox()
    for vmid in vmids:
        api.cluster.ha.resources.post(sid=f"ct:{vmid}", state="started")


def ha_resources(lab: Lab) -> dict[str, dict[str, Any]]:
    return {str(r["sid"]): dict(r) for r in lab.sim.proxmox().cluster.ha.resources.get()}


def node_of(lab: Lab, vmid: int) -> str | None:
    """The node holding the CT's config (/cluster/resources lists it there at once), or None."""
    return next((str(ct["node"]) for ct in lab.cts() if ct["vmid"] == vmid), None)


def current_status(lab: Lab, node: str, vmid: int) -> str:
    """The CT's own status/current (authoritative; /cluster/resources reports states late)."""
    return str(lab.sim.proxmox().nodes(node).lxc(vmid).status.current.get()["status"])


def pool_status(lab: Lab) -> dict[str, Any]:
    return lab.status("proxmoxserverpool", "lab")


def pool_actions(lab: Lab, vmid: int | None = None, action: str | None = None) -> list[dict[str, Any]]:
    actions = pool_status(lab).get("recentActions") or []
    return [a for a in actions if (vmid is None or a.get("vmid") == vmid) and (action is None or a["action"] == action)]


def set_maintenance(lab: Lab, weights: tuple[int, int, int], *in_maintenance: str) -> None:
    nodes = [
        {"name": name, "weight": weight, "maintenance": name in in_maintenance}
        for name, weight in zip(NODES, weights, strict=True)
    ]
    lab.kube.kubectl(
        "patch",
        "proxmoxserverpool",
        "lab",
        "-n",
        lab.namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"nodes": nodes}}),
    )


def sim_tasks(lab: Lab, vmid: int | None = None, *types: str) -> list[dict[str, Any]]:
    """Every task the simulator ran (the operator's, root's and the HA stack's), oldest first."""
    tasks = [
        t
        for t in sim_state(lab)["tasks"]
        if (vmid is None or t["id"] == str(vmid)) and (not types or t["type"] in types)
    ]
    return sorted(tasks, key=lambda t: (t["starttime"], t["upid"]))


def by_operator(task: dict[str, Any]) -> bool:
    return str(task.get("user")) == OPERATOR_USER


_MIGRATION_LINE = re.compile(r"starting migration of CT (\d+) to node '([^']+)'")


def moves(lab: Lab) -> dict[int, list[tuple[str, str]]]:
    """Per CT, the (source, target) of each successful ``vzmigrate`` (the operator's or the HA LRM's)."""
    found: dict[int, list[tuple[str, str]]] = {}
    for task in sim_tasks(lab, None, "vzmigrate"):
        if task["status"] != "OK":
            continue
        target = next((m.group(2) for line in task["log"] if (m := _MIGRATION_LINE.search(str(line)))), None)
        assert target is not None, task
        found.setdefault(int(task["id"]), []).append((str(task["node"]), target))
    return found


def every_text(lab: Lab) -> str:
    """Everything a user reads about the lab: events, the pool's and the policy's status."""
    return json.dumps([lab.events(), pool_status(lab), lab.status("containerpolicy", "web")])


# -- 1. lifecycle ------------------------------------------------------------------------------------


def test_an_ha_managed_ct_is_started_migrated_and_destroyed_through_the_ha_manager(
    kube: Any, kube_namespace: str, installed_crds: Any, pve_sim_server: Any, pve_operator_process: Any
) -> None:
    """Stopped by hand (hastop) → started again through hastart; drained off a node in maintenance with
    hamigrate, recorded Succeeded only once PVE's HA manager has it on the target; scaled away → stopped
    by the HA manager before the destroy, and its HA resource purged."""
    weights = (2, 1, 1)
    # A slow copy (8 GiB at 60 MiB/s: over two simulated minutes, ~14 s here): the HA manager's
    # relocation lasts long after the hamigrate task that asked for it ended.
    lab = ha_lab(
        kube,
        kube_namespace,
        pve_sim_server,
        pve_operator_process,
        weights=weights,
        replicas=3,
        time_scale=0.1,
        timing={"migrateMiBPerSecond": 60},
    )
    vmids = sorted(int(ct["vmid"]) for ct in lab.managed_cts())
    assert vmids == [3100, 3101, 3102]
    make_ha_managed(lab, *vmids)
    wait_for(
        lambda: (pool_status(lab).get("ha") or {}).get("managedContainers") == 3,
        timeout_s=60,
        what="status.ha.managedContainers 3",
    )
    ha = pool_status(lab)["ha"]
    assert ha["inRules"] == 0 and ha["crsAutoRebalance"] is False, ha
    assert "3 of the operator's CTs are HA resources" in ha["message"], ha

    # The newest CT: the one a scale-down removes at the end.
    victim = 3102
    home = node_of(lab, victim)
    assert home is not None
    api = lab.sim.proxmox()

    # -- stopped by hand: PVE answers with hastop, its HA manager shuts the CT down a round later.
    upid = api.nodes(home).lxc(victim).status.stop.post()
    assert ":hastop:" in upid
    lab.wait_task(upid)
    assert ha_resources(lab)[f"ct:{victim}"]["state"] == "stopped"

    def shut_down_by_the_ha_manager() -> bool:
        return any(t["user"] == "root@pam" and t["status"] == "OK" for t in sim_tasks(lab, victim, "vzshutdown"))

    wait_for(shut_down_by_the_ha_manager, timeout_s=60, what=f"the HA manager's shutdown of CT {victim}")

    def started_again() -> bool:
        restarts = [t for t in sim_tasks(lab, victim, "hastart") if by_operator(t)]
        return bool(restarts) and current_status(lab, home, victim) == "running"

    wait_for(started_again, timeout_s=120, what=f"CT {victim} started again by the operator through hastart")
    assert ha_resources(lab)[f"ct:{victim}"]["state"] == "started", "the HA resource asks for started again"
    stopped_at = next(t["starttime"] for t in sim_tasks(lab, victim, "hastop"))
    assert not [t for t in sim_tasks(lab, victim, "vzstart") if by_operator(t) and t["starttime"] >= stopped_at], (
        "an HA-managed CT is started through PVE's HA manager"
    )
    lab.wait_policy("web", ready_replicas(3), "the policy Ready with 3 running CTs", timeout_s=120)

    # -- its node goes into maintenance: the operator drains it with hamigrate.
    set_maintenance(lab, weights, home)

    def drained() -> bool:
        # Read the record first, then where the CT is: a Succeeded record must never be ahead of PVE.
        recorded = pool_actions(lab, victim, "Migrate")
        assert not [a for a in recorded if a["result"] == "Failed"], recorded
        done = [a for a in recorded if a["result"] == "Succeeded"]
        where = node_of(lab, victim)
        if done:
            assert where == done[-1]["targetNode"], (
                f"Migrate of CT {victim} recorded Succeeded to {done[-1]['targetNode']} while PVE has it on "
                f"{where}: {done[-1]}"
            )
            assert current_status(lab, where, victim) == "running", done[-1]
            return True
        return False

    wait_for(drained, timeout_s=240, interval_s=0.5, what=f"the migration of CT {victim} recorded Succeeded")
    target = node_of(lab, victim)
    assert target is not None and target != home
    requests = [t for t in sim_tasks(lab, victim, *MIGRATION_TASKS) if by_operator(t)]
    assert [t["type"] for t in requests] == ["hamigrate"], requests
    relocations = [t for t in sim_tasks(lab, victim, "vzmigrate") if t["user"] == "root@pam"]
    assert relocations and relocations[-1]["status"] == "OK", "the HA manager's LRM did the move"
    assert relocations[-1]["starttime"] >= requests[0]["endtime"], "the move followed the request"
    assert [a["result"] for a in pool_actions(lab, victim, "Migrate")] == ["InProgress", "Succeeded"]
    wait_for(lambda: not pool_status(lab).get("inFlight"), timeout_s=60, what="the journal empty")
    assert not [a for a in pool_actions(lab) if a["result"] == "Failed"], pool_actions(lab)
    assert all(ct["node"] != home for ct in lab.managed_cts()), "the node in maintenance is drained"

    # -- scaled down: the newest CT goes, through hastop, the HA manager's shutdown, and a purging destroy.
    lab.kube.kubectl("scale", "ctp", "web", "--replicas=2", "-n", lab.namespace)

    def destroyed() -> bool:
        return node_of(lab, victim) is None and f"ct:{victim}" not in ha_resources(lab)

    wait_for(destroyed, timeout_s=180, what=f"CT {victim} destroyed and its HA resource gone")
    lab.wait_policy("web", ready_replicas(2), "the policy Ready with 2 CTs", timeout_s=120)
    assert set(ha_resources(lab)) == {"ct:3100", "ct:3101"}, "the other CTs stay HA resources"
    last = [t for t in sim_tasks(lab, victim) if t["starttime"] >= requests[0]["starttime"]]
    ours = [t["type"] for t in last if by_operator(t)]
    assert ours[-2:] == ["hastop", "vzdestroy"], ours
    destroy = next(t for t in reversed(last) if t["type"] == "vzdestroy")
    assert destroy["status"] == "OK"
    shutdown = [t for t in last if t["type"] == "vzshutdown" and t["user"] == "root@pam"]
    assert shutdown and shutdown[-1]["endtime"] <= destroy["starttime"], "stopped by the HA manager first"
    text = every_text(lab)
    assert "container is running" not in text and "CT is running" not in text
    assert not [e for e in lab.events() if e["reason"] in ("DeleteFailed", "StartFailed", "MigrateFailed")]
    policy = lab.status("containerpolicy", "web")
    assert not [a for a in policy.get("recentActions") or [] if a["result"] == "Failed"], policy["recentActions"]
    assert {c["type"]: c["status"] for c in policy["conditions"]}.get("Degraded") != "True", policy["conditions"]


# -- 2. HA rules ----------------------------------------------------------------------------------------


def test_a_ct_named_by_an_ha_rule_is_never_migrated_while_the_others_are_drained(
    kube: Any, kube_namespace: str, installed_crds: Any, pve_sim_server: Any, pve_operator_process: Any
) -> None:
    weights = (2, 1, 1)
    lab = ha_lab(kube, kube_namespace, pve_sim_server, pve_operator_process, weights=weights, replicas=4)
    on_px1 = sorted(int(ct["vmid"]) for ct in lab.managed_cts() if ct["node"] == "srv-px1")
    assert len(on_px1) >= 2, lab.managed_cts()
    vmids = sorted(int(ct["vmid"]) for ct in lab.managed_cts())
    make_ha_managed(lab, *vmids)
    pinned, others = on_px1[0], on_px1[1:]
    lab.sim.proxmox().cluster.ha.rules.post(
        rule="keep-on-px1", type="node-affinity", nodes="srv-px1", resources=f"ct:{pinned}", strict=1
    )
    wait_for(
        lambda: (pool_status(lab).get("ha") or {}).get("inRules") == 1,
        timeout_s=60,
        what="status.ha.inRules 1",
    )
    ha = pool_status(lab)["ha"]
    assert ha["managedContainers"] == 4 and ha["crsAutoRebalance"] is False, ha
    assert "1 named in PVE HA rules" in ha["message"], ha

    set_maintenance(lab, weights, "srv-px1")

    def others_drained() -> bool:
        tried = [a for a in pool_actions(lab, pinned, "Migrate") if a["result"] != "Refused"]
        assert not tried, f"the operator migrated CT {pinned}, which HA rule keep-on-px1 names: {tried}"
        return all(
            node_of(lab, vmid) not in ("srv-px1", None)
            and any(a["result"] == "Succeeded" for a in pool_actions(lab, vmid, "Migrate"))
            for vmid in others
        )

    wait_for(others_drained, timeout_s=180, interval_s=0.5, what=f"CTs {others} drained off srv-px1")
    wait_for(
        lambda: any(a["result"] == "Refused" and a["message"] == "HaRule" for a in pool_actions(lab, pinned)),
        timeout_s=60,
        what=f"a HaRule refusal for CT {pinned}",
    )
    refusal = next(a for a in pool_actions(lab, pinned) if a["result"] == "Refused")
    assert "keep-on-px1" in refusal["reason"], refusal
    assert any(
        str(pinned) in e["message"] and "HA rule" in e["message"] for e in lab.events() if e["type"] == "Warning"
    ), "a Warning event says why"
    time.sleep(15)  # three more balancing cycles with srv-px1 still in maintenance
    assert node_of(lab, pinned) == "srv-px1"
    assert current_status(lab, "srv-px1", pinned) == "running"
    assert not [a for a in pool_actions(lab, pinned, "Migrate") if a["result"] != "Refused"]
    assert not [t for t in sim_tasks(lab, pinned, *MIGRATION_TASKS)], "nobody moved the CT the rule names"
    assert [t["type"] for t in sim_tasks(lab, None, *MIGRATION_TASKS) if by_operator(t)] == ["hamigrate"] * len(others)
    assert (pool_status(lab).get("ha") or {}).get("inRules") == 1


# -- 3. two balancers ---------------------------------------------------------------------------------


def test_with_crs_auto_rebalance_pve_balances_ha_cts_and_nothing_moves_back_and_forth(
    kube: Any, kube_namespace: str, installed_crds: Any, pve_sim_server: Any, pve_operator_process: Any
) -> None:
    """PVE 9.2's CRS auto-rebalance and the operator both see srv-px1 as the loaded node: PVE by the CTs'
    configured sizes (four of six on it), the operator by its memory (a noisy neighbour keeps it above
    migrateAbovePercent for the whole run). Over ten simulated minutes PVE moves HA CTs, the operator moves
    none of them, and no CT goes back to a node it left."""
    time_scale = 0.1
    lab = ha_lab(
        kube,
        kube_namespace,
        pve_sim_server,
        pve_operator_process,
        weights=(4, 1, 1),
        replicas=6,
        time_scale=time_scale,
        crs={"ha": "static", "haAutoRebalance": True, "haAutoRebalanceHoldDuration": 1},
    )
    vmids = sorted(int(ct["vmid"]) for ct in lab.managed_cts())
    assert sum(1 for ct in lab.managed_cts() if ct["node"] == "srv-px1") == 4, lab.managed_cts()
    before = {vmid: node_of(lab, vmid) for vmid in vmids}
    assert not moves(lab)

    started_at = lab.sim.cluster.now()
    make_ha_managed(lab, *vmids)
    # srv-px1: 70% + 4 CTs x 3.4% = 83.8%, above 75 (migrate) and under 90 (offload); still ~80% after
    # PVE moved one CT away.
    lab.sim.cluster.set_node_load("srv-px1", "memory", 0.70)

    def px1_percent() -> float:
        usage = lab.sim.cluster.node_usage("srv-px1")
        return 100.0 * usage["mem"] / usage["maxmem"]

    assert 75 < px1_percent() < 90
    wait_for(
        lambda: (pool_status(lab).get("ha") or {}).get("crsAutoRebalance") is True,
        timeout_s=60,
        what="status.ha.crsAutoRebalance true",
    )
    ha = pool_status(lab)["ha"]
    assert ha["managedContainers"] == 6 and ha["inRules"] == 0, ha
    assert "PVE balances them" in ha["message"] and "does not migrate them" in ha["message"], ha

    wait_for(
        lambda: lab.sim.cluster.now() - started_at >= 600,
        timeout_s=600 * time_scale * 3 + 60,
        interval_s=1,
        what="ten simulated minutes",
    )
    wait_for(
        lambda: not any(ct.get("lock") for ct in lab.cts()),
        timeout_s=60,
        what="no migration in flight",
    )

    history = moves(lab)
    assert history, "PVE's CRS auto-rebalance moved no CT: nothing was tested"
    crm = "\n".join(sim_state(lab)["ha"]["log"])
    assert "auto rebalance - relocate" in crm, crm
    operator_moves = [t for t in sim_tasks(lab, None, *MIGRATION_TASKS) if by_operator(t)]
    assert operator_moves == [], f"the operator migrated HA-managed CTs PVE balances: {operator_moves}"
    assert not pool_actions(lab, None, "Migrate"), pool_actions(lab, None, "Migrate")
    for vmid, path in history.items():
        assert path[0][0] == before[vmid], (vmid, before[vmid], path)
        assert all(a[1] == b[0] for a, b in pairwise(path)), (vmid, path)
        visited = [path[0][0], *(target for _, target in path)]
        assert len(visited) == len(set(visited)), f"CT {vmid} went back to a node it left: {visited}"
    assert px1_percent() > 75, "the operator still saw srv-px1 overloaded and left the moves to PVE"
    assert all(ct["status"] == "running" for ct in lab.managed_cts())
    assert (pool_status(lab).get("ha") or {}).get("crsAutoRebalance") is True

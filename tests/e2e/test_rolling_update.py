"""A template change rolled out end to end: the operator, the real API server and pve_sim.

Changing ``spec.template.ostemplate`` (a Recreate-class field) of a running 4-CT policy recreates the CTs
one at a time (``maxUnavailable: 1``): each comes back with its index, VMID and host name and the new
template, never more than one CT is missing or down, and the status counts updatedReplicas up to 4. A
hot change (memory) in the same run is applied in place, and OnDelete leaves outdated CTs alone. With
``maxUnavailable: 0, maxSurge: 1`` every CT keeps running: a new one runs before an old one goes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.conftest import SIM_TIME_SCALE, Lab, lab_scenario_data, ready_replicas
from tests.fixtures.kube import wait_for
from tests.fixtures.operator import connect_pool, policy_manifest

pytestmark = [pytest.mark.kube, pytest.mark.slow]

OLD = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
NEW = "local:vztmpl/debian-13-standard_13.1-2_amd64.tar.zst"


def _lab(kube: Any, namespace: str, pve_sim_server: Any, pve_operator_process: Any) -> Lab:
    from pve_sim.scenario import parse_scenario

    data = lab_scenario_data()
    data["containers"] = []
    data["templates"].append({"volid": NEW, "ostype": "debian", "sizeMiB": 130})
    sim = pve_sim_server(parse_scenario(data, "<rolling-update>"), time_scale=SIM_TIME_SCALE)
    connect_pool(kube, namespace, sim, balancing={"mode": "Off"}, offload={"mode": "Off"})
    operator = pve_operator_process(namespace)
    lab = Lab(kube, namespace, sim, operator)
    lab.wait_condition("proxmoxserverpool", "lab", "Ready", "True", "Connected")
    return lab


def _policy(ostemplate: str, *, strategy: dict[str, Any] | None = None, memory_mib: int = 2048) -> dict[str, Any]:
    manifest = policy_manifest("web", replicas=4, memory_mib=memory_mib)
    manifest["spec"]["template"]["ostemplate"] = ostemplate
    if strategy is not None:
        manifest["spec"]["updateStrategy"] = strategy
    return manifest


def _apply(lab: Lab, manifest: dict[str, Any]) -> None:
    from tests.fixtures.operator import apply_objects

    apply_objects(lab.kube, lab.namespace, manifest)


def rollout_watch(lab: Lab, replicas: int) -> tuple[Callable[[], bool], dict[str, int]]:
    """A ``wait_for`` condition that is true once the policy ``web`` has ``replicas`` CTs, all current and
    running, and, updated at each call, the fewest CTs running and the most CTs that existed at one sample."""
    worst = {"running": replicas, "cts": replicas}

    def rolled() -> bool:
        cts = lab.managed_cts()
        running = sum(1 for ct in cts if ct["status"] == "running" and not ct.get("lock"))
        worst["running"] = min(worst["running"], running)
        worst["cts"] = max(worst["cts"], len(cts))
        current = lab.status("containerpolicy", "web")
        return current.get("updatedReplicas") == replicas and len(cts) == replicas and running == replicas

    return rolled, worst


def _created_from(lab: Lab) -> dict[int, list[str]]:
    """VMID -> the template file each vzcreate of it extracted, in order (the simulator's task logs)."""
    found: dict[int, list[str]] = {}
    for task in lab.sim.cluster.state_dump()["tasks"]:
        if task["type"] == "vzcreate" and str(task["id"]).isdigit():
            lines = [line for line in task["log"] if "extracting archive" in line]
            found.setdefault(int(task["id"]), []).append(lines[0].rsplit("/", 1)[-1].rstrip("'") if lines else "?")
    return found


def test_a_template_change_recreates_the_cts_one_at_a_time_with_their_vmids_and_host_names(
    kube: Any, kube_namespace: str, installed_crds: Any, pve_sim_server: Any, pve_operator_process: Any
) -> None:
    lab = _lab(kube, kube_namespace, pve_sim_server, pve_operator_process)
    _apply(lab, _policy(OLD))
    status = lab.wait_policy("web", ready_replicas(4), "4 CTs running")
    assert status["updatedReplicas"] == 4
    before = {ct["vmid"]: ct["name"] for ct in lab.managed_cts()}
    assert sorted(before) == [3100, 3101, 3102, 3103]
    old_hash = status["templateHash"]

    _apply(lab, _policy(NEW))
    lab.wait_policy("web", lambda s: s.get("templateHash") not in (None, old_hash), "the new template seen")
    worst = {"down": 0}

    def rolled() -> bool:
        cts = lab.managed_cts()
        running = sum(1 for ct in cts if ct["status"] == "running" and not ct.get("lock"))
        worst["down"] = max(worst["down"], 4 - running)
        current = lab.status("containerpolicy", "web")
        return current.get("updatedReplicas") == 4 and current.get("readyReplicas") == 4 and running == 4

    wait_for(rolled, timeout_s=240, interval_s=0.3, what="every CT recreated with the new template")
    status = lab.status("containerpolicy", "web")
    after = {ct["vmid"]: ct["name"] for ct in lab.managed_cts()}
    assert after == before, "each CT came back with its own VMID and host name"
    assert worst["down"] <= 1, f"maxUnavailable 1, but {worst['down']} CTs were missing or down at once"
    # Every CT was created twice, first from the old template, then from the new one.
    assert _created_from(lab) == {
        v: ["debian-12-standard_12.7-1_amd64.tar.zst", "debian-13-standard_13.1-2_amd64.tar.zst"]
        for v in range(3100, 3104)
    }
    destroyed = [a for a in status.get("recentActions") or [] if a["action"] == "Delete" and a["result"] == "Succeeded"]
    assert len(destroyed) == 4 and all("rolling update" in a["reason"] for a in destroyed)
    lab.wait_condition("containerpolicy", "web", "Progressing", "False", "Reconciled")


def test_ondelete_leaves_outdated_cts_and_a_hot_change_is_applied_in_place(
    kube: Any, kube_namespace: str, installed_crds: Any, pve_sim_server: Any, pve_operator_process: Any
) -> None:
    lab = _lab(kube, kube_namespace, pve_sim_server, pve_operator_process)
    _apply(lab, _policy(OLD, strategy={"type": "OnDelete"}))
    lab.wait_policy("web", ready_replicas(4), "4 CTs running")
    _apply(lab, _policy(NEW, strategy={"type": "OnDelete"}, memory_mib=3072))
    status = lab.wait_policy(
        "web",
        lambda s: s.get("updatedReplicas") == 0 and s.get("readyReplicas") == 4,
        "the template change seen, nothing recreated",
    )
    assert status["replicas"] == 4
    wait_for(
        lambda: all(int(ct["maxmem"]) == 3072 * 1024 * 1024 for ct in lab.managed_cts()),
        timeout_s=90,
        what="memory 3072 MiB applied in place to every CT",
    )
    assert _created_from(lab) == {v: ["debian-12-standard_12.7-1_amd64.tar.zst"] for v in range(3100, 3104)}
    lab.wait_condition("containerpolicy", "web", "Progressing", "False", "Reconciled")


def test_a_template_that_cannot_be_created_stops_the_rollout_after_one_ct_and_setting_it_back_heals(
    kube: Any, kube_namespace: str, installed_crds: Any, pve_sim_server: Any, pve_operator_process: Any
) -> None:
    lab = _lab(kube, kube_namespace, pve_sim_server, pve_operator_process)
    _apply(lab, _policy(OLD))
    lab.wait_policy("web", ready_replicas(4), "4 CTs running")
    broken = "local:vztmpl/debian-14-standard_14.0-1_amd64.tar.zst"  # not on the storage
    _apply(lab, _policy(broken))
    lab.wait_condition("containerpolicy", "web", "Degraded", "True", "RolloutStuck", timeout_s=120)
    degraded = lab.condition("containerpolicy", "web", "Degraded")
    assert degraded is not None and "rolling update stopped: CT 3100" in degraded["message"]
    # Several more cycles: still only the one CT gone, the other three untouched.
    for _ in range(3):
        lab.wait_policy("web", lambda s: s.get("replicas") == 3, "3 CTs kept while the rollout is stuck")
        time.sleep(2.5)
    destroyed = {t["id"] for t in lab.sim.cluster.state_dump()["tasks"] if t["type"] == "vzdestroy"}
    assert destroyed == {"3100"}, destroyed

    _apply(lab, _policy(OLD))
    status = lab.wait_policy(
        "web", lambda s: s.get("readyReplicas") == 4 and s.get("updatedReplicas") == 4, "healed with the old template"
    )
    assert status["replicas"] == 4
    assert _created_from(lab)[3100] == ["debian-12-standard_12.7-1_amd64.tar.zst"] * 2


def test_a_surge_rollout_keeps_every_ct_running_and_never_more_than_one_extra(
    kube: Any, kube_namespace: str, installed_crds: Any, pve_sim_server: Any, pve_operator_process: Any
) -> None:
    """maxUnavailable 0, maxSurge 1: a CT with the new template is created and running before an outdated one
    is destroyed, so 4 CTs run at every sample and there are never more than 5."""
    lab = _lab(kube, kube_namespace, pve_sim_server, pve_operator_process)
    surge = {"type": "RollingUpdate", "maxUnavailable": 0, "maxSurge": 1}
    _apply(lab, _policy(OLD, strategy=surge))
    status = lab.wait_policy("web", ready_replicas(4), "4 CTs running")
    old_hash = status["templateHash"]

    _apply(lab, _policy(NEW, strategy=surge))
    lab.wait_policy("web", lambda s: s.get("templateHash") not in (None, old_hash), "the new template seen")
    rolled, worst = rollout_watch(lab, 4)
    wait_for(rolled, timeout_s=300, interval_s=0.3, what="every CT replaced by one with the new template")
    assert worst["running"] >= 4, f"maxUnavailable 0, but only {worst['running']} CTs ran at one sample"
    assert worst["cts"] <= 5, f"maxSurge 1, but {worst['cts']} CTs existed at once"
    created = _created_from(lab)
    new_file = "debian-13-standard_13.1-2_amd64.tar.zst"
    assert sum(1 for files in created.values() for f in files if f == new_file) == 4, created
    assert len({ct["vmid"] for ct in lab.managed_cts()}) == 4
    status = lab.status("containerpolicy", "web")
    surged = [a for a in status.get("recentActions") or [] if "rolling update surge" in a["reason"]]
    assert surged, "the creations say they are the rollout's surge"
    lab.wait_condition("containerpolicy", "web", "Progressing", "False", "Reconciled")

"""keepOnRecreate end to end: the operator, the real API server and pve_sim.

A 3-CT policy whose data volume (``mp0``) has ``keepOnRecreate`` rolls to a new ostemplate and a bigger data
volume in the spec (``maxUnavailable: 1, maxSurge: 1``): each outdated CT gets a replacement on its node that
waits stopped, the old CT is stopped, Proxmox VE reassigns the volume (``move_volume``), the replacement
starts and the old CT goes. The data volumes after the rollout are the original ones (8 GiB, where a new one
would be the new spec's 16 GiB), renamed for their new CTs; at most one CT is down at any 0.3 s sample and
never more than 4 CTs exist.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e.conftest import ready_replicas
from tests.e2e.test_rolling_update import NEW, OLD, _apply, _lab, _policy, rollout_watch
from tests.fixtures.kube import wait_for

pytestmark = [pytest.mark.kube, pytest.mark.slow]

STRATEGY = {"type": "RollingUpdate", "maxUnavailable": 1, "maxSurge": 1}


def _with_data(manifest: dict[str, Any], size_gib: int) -> dict[str, Any]:
    manifest["spec"]["replicas"] = 3
    manifest["spec"]["template"]["mountPoints"] = [
        {"storage": "local-lvm", "sizeGiB": size_gib, "path": "/srv/data", "backup": True, "keepOnRecreate": True}
    ]
    return manifest


def _data_volumes(lab: Any) -> dict[int, str]:
    """Each managed CT's mp0 volume ID."""
    return {ct["vmid"]: lab.ct_config(ct["node"], ct["vmid"])["mp0"].split(",", 1)[0] for ct in lab.managed_cts()}


def _sizes(lab: Any) -> dict[str, int]:
    found = {}
    for node in ("srv-px1", "srv-px2"):
        for item in lab.sim.proxmox().nodes(node).storage("local-lvm").content.get():
            found[item["volid"]] = int(item["size"])
    return found


def test_a_rollout_hands_each_data_volume_to_the_ct_that_replaces_its_owner(
    kube: Any, kube_namespace: str, installed_crds: Any, pve_sim_server: Any, pve_operator_process: Any
) -> None:
    lab = _lab(kube, kube_namespace, pve_sim_server, pve_operator_process)
    _apply(lab, _with_data(_policy(OLD, strategy=STRATEGY), 8))
    status = lab.wait_policy("web", ready_replicas(3), "3 CTs running")
    old_hash = status["templateHash"]
    before = _data_volumes(lab)
    assert len(before) == 3 and all(_sizes(lab)[v] == 8 << 30 for v in before.values())

    _apply(lab, _with_data(_policy(NEW, strategy=STRATEGY), 16))
    lab.wait_policy("web", lambda s: s.get("templateHash") not in (None, old_hash), "the new template seen")
    rolled, worst = rollout_watch(lab, 3)
    wait_for(rolled, timeout_s=420, interval_s=0.3, what="every CT replaced, its data volume handed over")
    assert worst["running"] >= 2, f"maxUnavailable 1, but only {worst['running']} CTs ran at one sample"
    assert worst["cts"] <= 4, f"maxSurge 1, but {worst['cts']} CTs existed at once"
    after = _data_volumes(lab)
    sizes = _sizes(lab)
    for vmid, volid in after.items():
        assert volid.startswith(f"local-lvm:vm-{vmid}-disk-"), volid
        assert sizes[volid] == 8 << 30, f"CT {vmid} has a new volume ({sizes[volid]} B), not the handed-over one"
    assert not [v for v in before.values() if v in sizes and v not in after.values()], "an old volume left behind"
    def handed() -> list[dict[str, Any]]:
        recent = lab.status("containerpolicy", "web").get("recentActions") or []
        return [a for a in recent if a["action"] == "HandOver" and a["result"] == "Succeeded"]

    # The last handover's destroy task may end in PVE a moment before the operator's next tick looks at it.
    wait_for(lambda: len(handed()) >= 3, timeout_s=30, interval_s=0.5, what="three HandOver records")
    assert len(handed()) == 3, handed()
    assert all("received mp0 from CT" in a["message"] for a in handed())
    lab.wait_condition("containerpolicy", "web", "Progressing", "False", "Reconciled")


def test_an_operator_killed_in_the_middle_of_a_handover_finishes_it_after_a_restart(
    kube: Any, kube_namespace: str, installed_crds: Any, pve_sim_server: Any, pve_operator_process: Any
) -> None:
    """SIGKILL while the old CT is stopped and its move_volume request is held (8 s of latency): the restarted
    operator finds the pair from the replacement's signed record, finishes the handover (or continues it), and
    no CT is left stopped and no data volume is lost."""
    lab = _lab(kube, kube_namespace, pve_sim_server, pve_operator_process)
    manifest = _with_data(_policy(OLD, strategy=STRATEGY), 8)
    manifest["spec"]["replicas"] = 2
    _apply(lab, manifest)
    status = lab.wait_policy("web", ready_replicas(2), "2 CTs running")
    before = _data_volumes(lab)
    faults = lab.sim.cluster.faults
    faults.set_latency(8.0, path_regex=r"^/nodes/[^/]+/lxc/\d+/move_volume$")
    manifest = _with_data(_policy(NEW, strategy=STRATEGY), 16)
    manifest["spec"]["replicas"] = 2
    _apply(lab, manifest)
    lab.wait_policy("web", lambda s: s.get("templateHash") != status["templateHash"], "the new template seen")

    def mid_handover() -> bool:
        cts = lab.managed_cts()
        return len(cts) == 3 and sum(1 for ct in cts if ct["status"] == "stopped") == 2

    wait_for(mid_handover, timeout_s=120, interval_s=0.2, what="an old CT stopped beside its waiting replacement")
    assert lab.operator is not None
    lab.operator.kill()
    faults.clear()
    restarted = time.monotonic()
    lab.operator.start()
    rolled, worst = rollout_watch(lab, 2)
    wait_for(rolled, timeout_s=300, interval_s=0.3, what="the rollout finished by the restarted operator")
    recovery = time.monotonic() - restarted
    after = _data_volumes(lab)
    sizes = _sizes(lab)
    assert len(after) == 2 and all(sizes[v] == 8 << 30 for v in after.values()), (after, sizes)
    assert not [v for v in before.values() if v in sizes and v not in after.values()], "an old volume left behind"
    assert worst["cts"] <= 3
    print(f"\nkept-volume handover finished {recovery:.1f} s after the operator's restart")

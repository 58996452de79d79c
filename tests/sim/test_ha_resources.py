"""``/cluster/ha/resources`` as pve-ha-manager 5.2.0 answers it (``src/PVE/API2/HA/Resources.pm``,
``src/PVE/HA/Config.pm``), through the real proxmoxer client over HTTPS against pve_sim."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.sim import SimServerFactory, SimTestServer
from tests.sim.ha_support import ha_log, ha_scenario, hastate, pve_error


@pytest.fixture
def server(pve_sim_server: SimServerFactory) -> SimTestServer:
    return pve_sim_server(ha_scenario({201: "srv-px1", 202: "srv-px2", 203: "srv-px3", 204: "srv-px1"}, ha=[201]))


@pytest.fixture
def root(server: SimTestServer) -> Any:
    return server.proxmox("root@pam")


def test_create_by_vmid_lists_reads_and_reports_hastate(root: Any) -> None:
    root.cluster.ha.resources.post(sid="202", comment="db", max_relocate=2)

    listed = root.cluster.ha.resources.get()
    read = root.cluster.ha.resources("ct:202").get()
    only_vms = root.cluster.ha.resources.get(type="vm")

    assert [entry["sid"] for entry in listed] == ["ct:201", "ct:202"]
    assert {k: read[k] for k in ("sid", "type", "comment", "max_relocate")} == {
        "sid": "ct:202",
        "type": "ct",
        "comment": "db",
        "max_relocate": 2,
    }
    assert "state" not in read and len(read["digest"]) == 40  # only what resources.cfg holds
    assert only_vms == []
    assert hastate(root, 202) == ("started", "srv-px2")
    assert hastate(root, 203)[0] is None


def test_create_refuses_what_pve_refuses(root: Any) -> None:
    assert pve_error(root.cluster.ha.resources.post, sid="ct:999").content == (
        "resource 'ct:999' does not exist in cluster"
    )
    assert pve_error(root.cluster.ha.resources.post, sid="999").content == (
        "unable to detect SID from VMID - VM/CT 999 does not exist"
    )
    assert pve_error(root.cluster.ha.resources.post, sid="vm:202").content == (
        "resource 'vm:202' - guest with ID 202 is not a VM"
    )
    assert pve_error(root.cluster.ha.resources.post, sid="ct:201").content == (
        "create resource failed: resource ID 'ct:201' already defined"
    )
    assert pve_error(root.cluster.ha.resources.post, sid="ct:202", type="vm").content == "types does not match"
    assert pve_error(root.cluster.ha.resources.post, sid="ct:202", group="g1").content == (
        "invalid parameter 'group': ha groups have been migrated to rules"
    )
    bad = pve_error(root.cluster.ha.resources.post, sid="ct 1")
    assert bad.status_code == 400
    assert bad.errors == {"sid": "invalid format - value does not look like a valid ha resource id\n"}


def test_update_changes_the_requested_state_and_checks_digest_and_delete(root: Any) -> None:
    digest = root.cluster.ha.resources("ct:201").get()["digest"]

    root.cluster.ha.resources("ct:201").put(state="stopped", comment="x", digest=digest)
    stopped = root.nodes("srv-px1").lxc(201).status.current.get()
    root.cluster.ha.resources("ct:201").put(delete="comment")

    assert stopped["status"] == "stopped" and stopped["ha"] == {"managed": 1, "state": "stopped"}
    assert "comment" not in root.cluster.ha.resources("ct:201").get()
    assert pve_error(root.cluster.ha.resources("ct:201").put, state="started", digest=digest).content == (
        "update resources config failed: detected modified configuration - file changed by other user? Try again."
    )
    assert pve_error(root.cluster.ha.resources("ct:201").put, delete="nodes").content == (
        "update resources config failed: no such option 'nodes'"
    )
    assert pve_error(root.cluster.ha.resources("ct:203").put, state="stopped").content == (
        "update resources config failed: no such resource 'ct:203'"
    )


def test_delete_purges_the_resource_from_rules_unless_told_not_to(root: Any) -> None:
    for vmid in (202, 203):
        root.cluster.ha.resources.post(sid=f"ct:{vmid}")
    root.cluster.ha.rules.post(rule="apart", type="resource-affinity", affinity="negative", resources="ct:201,ct:202")
    root.cluster.ha.rules.post(rule="pin", type="node-affinity", nodes="srv-px3", resources="ct:203")

    root.cluster.ha.resources("ct:203").delete()
    root.cluster.ha.resources("ct:202").delete(purge=0)

    rules = {rule["rule"]: rule for rule in root.cluster.ha.rules.get()}
    assert set(rules) == {"apart"}  # 'pin' lost its only resource
    assert rules["apart"]["resources"] == "ct:201,ct:202"  # purge=0 left it in the rule
    assert [r["sid"] for r in root.cluster.ha.resources.get()] == ["ct:201"]
    assert root.nodes("srv-px3").lxc(203).status.current.get()["status"] == "running"  # untouched
    assert pve_error(root.cluster.ha.resources("ct:203").delete).content == (
        "cannot delete service 'ct:203', not HA managed!"
    )


def test_reading_needs_sys_audit_and_changing_sys_console(server: SimTestServer) -> None:
    operator = server.proxmox("ctoperator@pve", token="operator")  # Sys.Audit, no Sys.Console

    assert [r["sid"] for r in operator.cluster.ha.resources.get()] == ["ct:201"]
    refused = pve_error(operator.cluster.ha.resources.post, sid="ct:202")
    assert refused.status_code == 403
    assert refused.content == "Permission check failed (/, Sys.Console)"
    assert pve_error(operator.cluster.ha.resources("ct:201").delete).status_code == 403


def test_migrate_and_relocate_queue_a_crm_command_the_manager_carries_out(root: Any, server: SimTestServer) -> None:
    answer = root.cluster.ha.resources("ct:201").migrate.post(node="srv-px2")

    assert answer == {"sid": "ct:201", "requested-node": "srv-px2"}
    assert hastate(root, 201) == ("started", "srv-px2")
    assert root.nodes("srv-px2").lxc(201).status.current.get()["status"] == "running"
    assert "got crm command: migrate ct:201 srv-px2" in ha_log(server)
    moved = [t for t in root.nodes("srv-px1").tasks.get(typefilter="vzmigrate") if t["id"] == "201"]
    assert moved and moved[0]["user"] == "root@pam" and moved[0]["status"] == "OK"

    root.cluster.ha.resources("ct:201").relocate.post(node="srv-px2")
    assert "ignore crm command - service already on target node: relocate ct:201 srv-px2" in ha_log(server)
    assert pve_error(root.cluster.ha.resources("ct:202").relocate.post, node="srv-px1").content == (
        "resource 'ct:202' is not HA managed"
    )


def test_motion_answers_name_comigrated_and_blocking_resources(root: Any, server: SimTestServer) -> None:
    for vmid in (202, 203, 204):
        root.cluster.ha.resources.post(sid=f"ct:{vmid}")
    root.cluster.ha.rules.post(
        rule="together", type="resource-affinity", affinity="positive", resources="ct:201,ct:204"
    )
    root.cluster.ha.rules.post(rule="apart", type="resource-affinity", affinity="negative", resources="ct:201,ct:203")

    blocked = root.cluster.ha.resources("ct:201").migrate.post(node="srv-px3")
    moved = root.cluster.ha.resources("ct:201").migrate.post(node="srv-px2")

    assert blocked["comigrated-resources"] == ["ct:204"]
    assert blocked["blocking-resources"] == [{"sid": "ct:203", "cause": "resource-affinity"}]
    assert (
        "crm command 'migrate ct:201 srv-px3' error - service 'ct:203' on node 'srv-px3'"
        " in negative affinity with service 'ct:201'"
    ) in ha_log(server)
    assert "blocking-resources" not in moved
    assert hastate(root, 201) == ("started", "srv-px2")
    assert hastate(root, 204) == ("started", "srv-px2")  # moved along with its positive partner

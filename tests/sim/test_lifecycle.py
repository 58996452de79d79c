"""A CT's whole life and every endpoint's happy path, through the real proxmoxer client over HTTPS.

The operator's API token (least privilege, privsep) drives everything the operator would do; root
is used only where the operator has no business (pools, cluster status).
"""

from __future__ import annotations

from typing import Any

import pytest
from proxmoxer.tools import Tasks

from tests.fixtures.sim import SimServerFactory, SimTestServer

TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"


@pytest.fixture
def server(pve_sim_server: SimServerFactory) -> SimTestServer:
    return pve_sim_server()


@pytest.fixture
def operator(server: SimTestServer) -> Any:
    return server.proxmox("ctoperator@pve", token="operator")


@pytest.fixture
def root(server: SimTestServer) -> Any:
    return server.proxmox("root@pam")


def finished(api: Any, upid: str) -> dict[str, Any]:
    """The task status once stopped (the manual clock runs tasks to completion at once)."""
    node = Tasks.decode_upid(upid)["node"]
    status: dict[str, Any] = api.nodes(node).tasks(upid).status.get()
    assert status["status"] == "stopped", status
    return status


def create_ct(api: Any, vmid: int = 201, node: str = "srv-px1", **params: Any) -> dict[str, Any]:
    upid = api.nodes(node).lxc.post(
        vmid=vmid,
        ostemplate=TEMPLATE,
        hostname=f"ct-{vmid}",
        memory=1024,
        cores=2,
        rootfs="local-lvm:8",
        net0="name=eth0,bridge=vmbr0,ip=dhcp",
        unprivileged=1,
        **params,
    )
    return finished(api, upid)


def test_operator_creates_runs_reconfigures_migrates_and_destroys_a_ct(operator: Any) -> None:
    created = create_ct(operator, start=1, tags="lab;web", pool="lab")
    status = operator.nodes("srv-px1").lxc(201).status.current.get()

    assert created["exitstatus"] == "OK" and created["type"] == "vzcreate"
    assert (status["status"], status["name"], status["cpus"], status["maxmem"]) == ("running", "ct-201", 2, 1 << 30)
    assert status["tags"] == "lab;web" and status["ha"] == {"managed": 0}

    assert operator.nodes("srv-px1").lxc(201).config.put(memory=2048, description="web server") is None
    config = operator.nodes("srv-px1").lxc(201).config.get()
    assert (config["memory"], config["description"]) == (2048, "web server\n")  # PVE ends each line in a newline

    assert finished(operator, operator.nodes("srv-px1").lxc(201).status.shutdown.post(timeout=30))["exitstatus"] == "OK"
    assert operator.nodes("srv-px1").lxc(201).status.current.get()["status"] == "stopped"
    assert finished(operator, operator.nodes("srv-px1").lxc(201).status.start.post())["exitstatus"] == "OK"
    assert finished(operator, operator.nodes("srv-px1").lxc(201).status.reboot.post())["exitstatus"] == "OK"

    migration = finished(operator, operator.nodes("srv-px1").lxc(201).migrate.post(target="srv-px2", restart=1))
    assert migration["exitstatus"] == "OK"
    moved = operator.nodes("srv-px2").lxc(201).status.current.get()
    assert moved["status"] == "running"
    assert {ct["vmid"] for ct in operator.nodes("srv-px2").lxc.get()} == {201, 3150}
    assert 201 not in {ct["vmid"] for ct in operator.nodes("srv-px1").lxc.get()}

    assert finished(operator, operator.nodes("srv-px2").lxc(201).status.stop.post())["exitstatus"] == "OK"
    assert finished(operator, operator.nodes("srv-px2").lxc(201).delete(purge=1))["exitstatus"] == "OK"
    assert 201 not in {ct["vmid"] for ct in operator.nodes("srv-px2").lxc.get()}


def test_migration_log_reads_like_pves(operator: Any) -> None:
    create_ct(operator, start=1)

    upid = operator.nodes("srv-px1").lxc(201).migrate.post(target="srv-px2", restart=1)
    finished(operator, upid)
    lines = [entry["t"] for entry in operator.nodes("srv-px1").tasks(upid).log.get(limit=0)]

    texts = [line[20:] for line in lines[:-1]]  # drop the "YYYY-MM-DD HH:MM:SS " prefix
    assert texts[0] == "shutdown CT 201"
    assert texts[1].startswith("starting migration of CT 201 to node 'srv-px2' (")
    assert "found local volume 'local-lvm:vm-201-disk-0' (in current VM config)" in texts
    assert "start container on target node" in texts
    assert texts[-1] == "migration finished successfully (duration 00:00:00)"
    assert lines[-1] == "TASK OK"


def test_lists_and_indexes(operator: Any, root: Any, server: SimTestServer) -> None:
    create_ct(operator, start=1)

    assert operator.version.get()["version"] == "9.1.2"
    assert operator.nodes("srv-px1").version.get()["release"] == "9.1"
    assert {n["node"] for n in operator.nodes.get()} == {"srv-px1", "srv-px2"}
    assert operator.nodes("srv-px1").qemu.get() == []
    assert {e["subdir"] for e in operator.nodes("srv-px1").lxc(201).get()} >= {"config", "status", "migrate"}
    assert {e["subdir"] for e in operator.nodes("srv-px1").lxc(201).status.get()} >= {"current", "start", "stop"}
    assert operator.cluster.nextid.get() == "100"

    node_status = operator.nodes("srv-px1").status.get()
    assert node_status["cpuinfo"]["cpus"] == 8
    assert node_status["memory"]["total"] == 32 << 30
    assert node_status["pveversion"].startswith("pve-manager/9.1.2/")

    cluster_status = root.cluster.status.get()
    assert cluster_status[0] == {
        "type": "cluster",
        "id": "cluster",
        "nodes": 2,
        "version": 1,
        "name": "lab",
        "quorate": 1,
    }

    tasks = root.cluster.tasks.get()
    assert {t["type"] for t in tasks} == {"vzcreate", "vzstart"}


def test_cluster_resources_types_and_filters(operator: Any, root: Any, server: SimTestServer) -> None:
    create_ct(operator, start=1, pool="lab")
    server.cluster.advance_clock(10)  # let pvestatd broadcast the new CT

    everything = operator.cluster.resources.get()
    vms = operator.cluster.resources.get(type="vm")
    storages = operator.cluster.resources.get(type="storage")
    nodes = operator.cluster.resources.get(type="node")

    # The operator's role has SDN.Use but not SDN.Audit, so the local network zones stay hidden.
    assert {e["type"] for e in everything} == {"pool", "lxc", "node", "storage"}
    assert {e["id"] for e in root.cluster.resources.get() if e["type"] == "network"} == {
        "network/srv-px1/zone/localnetwork",
        "network/srv-px2/zone/localnetwork",
    }
    entry = next(e for e in vms if e["vmid"] == 201)
    assert entry["id"] == "lxc/201" and entry["status"] == "running" and entry["pool"] == "lab"
    assert entry["maxmem"] == 1 << 30 and entry["maxcpu"] == 2 and entry["maxdisk"] == 8 << 30
    assert {e["id"] for e in storages} == {
        "storage/srv-px1/local",
        "storage/srv-px2/local",
        "storage/srv-px1/local-lvm",
        "storage/srv-px2/local-lvm",
    }
    assert {e["id"] for e in nodes} == {"node/srv-px1", "node/srv-px2"}
    assert operator.cluster.resources.get(type="sdn") == []


def test_storage_and_rrd(operator: Any) -> None:
    create_ct(operator, start=1)

    rootdir = operator.nodes("srv-px1").storage.get(content="rootdir", enabled=1)
    templates = operator.nodes("srv-px1").storage.get(content="vztmpl")
    node_rrd = operator.nodes("srv-px1").rrddata.get(timeframe="hour")
    ct_rrd = operator.nodes("srv-px1").lxc(201).rrddata.get(timeframe="hour", cf="MAX")

    assert [s["storage"] for s in rootdir] == ["local-lvm"]
    assert rootdir[0]["total"] == 400 << 30 and 0 < rootdir[0]["used_fraction"] < 1
    assert [s["storage"] for s in templates] == ["local"]
    assert isinstance(node_rrd, list) and isinstance(ct_rrd, list)


def test_tasks_of_a_node(operator: Any) -> None:
    create_ct(operator, start=1)

    tasks = operator.nodes("srv-px1").tasks.get()
    started = operator.nodes("srv-px1").tasks.get(typefilter="vzstart")
    upid = started[0]["upid"]
    status = operator.nodes("srv-px1").tasks(upid).status.get()
    log = operator.nodes("srv-px1").tasks(upid).log.get()

    assert [t["type"] for t in tasks] == ["vzstart", "vzcreate"]
    assert tasks[0]["user"] == "ctoperator@pve" and tasks[0]["tokenid"] == "operator"
    assert status["exitstatus"] == "OK" and status["id"] == "201"
    assert log == [{"n": 1, "t": "TASK OK"}]


def test_pools(root: Any) -> None:
    assert root.pools.post(poolid="web", comment="web tier") is None

    listed = root.pools.get()
    detail = root.pools("web").get()

    assert {"poolid": "web", "comment": "web tier"} in listed
    assert detail == {"members": [], "comment": "web tier", "poolid": "web"}
    assert root.pools("web").delete() is None
    assert "web" not in {p["poolid"] for p in root.pools.get()}


def test_permissions_ha_and_access(operator: Any, root: Any) -> None:
    perms = operator.access.permissions.get()
    ha_current = root.cluster.ha.status.current.get()
    ha_manager = root.cluster.ha.status.manager_status.get()

    assert perms["/"]["VM.PowerMgmt"] == 1
    assert ha_current[0]["id"] == "quorum" and ha_current[0]["quorate"] == 1
    assert ha_manager["manager_status"] == {}
    assert root.cluster.ha.rules.get() == []

"""Privileges through proxmoxer: PVE's exact 403s, privilege separation of API tokens, pools, and
list endpoints that filter silently instead of refusing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from proxmoxer.core import ResourceException

from pve_sim.scenario import Scenario, parse_scenario
from tests.fixtures.sim import SimServerFactory, SimTestServer

LAB = Path(__file__).resolve().parents[2] / "examples" / "scenarios" / "two-nodes.yaml"
TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
OPERATOR_PRIVS = [
    "VM.Allocate",
    "VM.Audit",
    "VM.Config.CPU",
    "VM.Config.Memory",
    "VM.Config.Disk",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.Migrate",
    "VM.PowerMgmt",
    "Datastore.AllocateSpace",
    "Datastore.Audit",
    "SDN.Use",
    "Sys.Audit",
    "Pool.Audit",
]


def permissions_scenario() -> Scenario:
    data: dict[str, Any] = yaml.safe_load(LAB.read_text())

    def user(userid: str, *tokens: dict[str, Any]) -> None:
        data["users"].append({"userid": userid, "password": f"{userid.split('@')[0]}-password", "tokens": list(tokens)})

    def acl(path: str, role: str, **grantee: str) -> None:
        data["acl"].append({"path": path, "role": role, **grantee})

    data["roles"] += [
        {"id": "NoPower", "privileges": [p for p in OPERATOR_PRIVS if p != "VM.PowerMgmt"]},
        {"id": "OptionsOnly", "privileges": ["VM.Audit", "VM.Config.Options"]},
    ]
    data["containers"][0]["pool"] = "lab"
    data["pools"].append({"poolid": "other"})
    user("narrow@pve", {"id": "powerless", "secret": "powerless-secret"}, {"id": "wide", "secret": "wide-secret"})
    acl("/", "CTOperator", user="narrow@pve")
    acl("/", "NoPower", token="narrow@pve!powerless")
    acl("/", "Administrator", token="narrow@pve!wide")
    user("auditor@pve", {"id": "ro", "secret": "ro-secret"})
    acl("/", "PVEAuditor", user="auditor@pve")
    acl("/", "PVEVMUser", token="auditor@pve!ro")
    user("full@pve", {"id": "all", "secret": "all-secret", "privsep": False})
    acl("/", "CTOperator", user="full@pve")
    user("one@pve")
    acl("/vms/3150", "PVEAuditor", user="one@pve")
    user("pooladmin@pve")
    acl("/pool/lab", "PVEVMAdmin", user="pooladmin@pve")
    acl("/storage", "PVEDatastoreUser", user="pooladmin@pve")
    acl("/sdn/zones/localnetwork/vmbr0", "PVESDNUser", user="pooladmin@pve")
    user("options@pve")
    acl("/vms", "OptionsOnly", user="options@pve")
    data["users"][0]["tokens"] = [{"id": "auto", "secret": "auto-secret", "privsep": True}]
    return parse_scenario(data, "permissions")


@pytest.fixture
def server(pve_sim_server: SimServerFactory) -> SimTestServer:
    return pve_sim_server(permissions_scenario())


def denied(action: Callable[[], object]) -> str:
    with pytest.raises(ResourceException) as caught:
        action()
    assert caught.value.status_code == 403, caught.value
    return str(caught.value.content)


def test_token_without_power_management_gets_pves_exact_403(server: SimTestServer) -> None:
    api = server.proxmox("narrow@pve", token="powerless")

    message = denied(lambda: api.nodes("srv-px2").lxc(3150).status.stop.post())

    assert message == "Permission check failed (/vms/3150, VM.PowerMgmt)"
    assert api.nodes("srv-px2").lxc(3150).status.current.get()["status"] == "running"


def test_privsep_token_is_bounded_by_its_users_privileges(server: SimTestServer) -> None:
    wide = server.proxmox("narrow@pve", token="wide")  # Administrator on its own ACL, CTOperator as user

    upid = wide.nodes("srv-px2").lxc(3150).status.stop.post()
    sys_modify = denied(lambda: wide.nodes("srv-px1").lxc.post(vmid=201, ostemplate=TEMPLATE, unprivileged=0))

    assert upid.endswith(":vzstop:3150:narrow@pve!wide:")
    assert sys_modify == "Permission check failed (/, Sys.Modify)"
    assert wide.access.permissions.get(path="/")["/"] == {p: 1 for p in sorted(OPERATOR_PRIVS)}


def test_privsep_token_keeps_only_what_both_it_and_its_user_hold(server: SimTestServer) -> None:
    api = server.proxmox("auditor@pve", token="ro")  # user: PVEAuditor, token: PVEVMUser

    status = api.nodes("srv-px2").lxc(3150).status.current.get()
    message = denied(lambda: api.nodes("srv-px2").lxc(3150).status.stop.post())

    assert status["status"] == "running"
    assert message == "Permission check failed (/vms/3150, VM.PowerMgmt)"


def test_token_without_privsep_has_its_users_privileges(server: SimTestServer) -> None:
    api = server.proxmox("full@pve", token="all")

    upid = api.nodes("srv-px2").lxc(3150).status.stop.post()

    assert ":vzstop:3150:full@pve!all:" in upid


def test_root_token_with_privsep_does_not_bypass_checks(server: SimTestServer) -> None:
    api = server.proxmox("root@pam", token="auto")

    message = denied(lambda: api.nodes("srv-px2").lxc(3150).status.current.get())

    assert message == "Permission check failed (/vms/3150, VM.Audit)"


def test_lists_filter_silently(server: SimTestServer) -> None:
    one = server.proxmox("one@pve")
    server.proxmox("root@pam").nodes("srv-px2").lxc.post(
        vmid=201, ostemplate=TEMPLATE, rootfs="local-lvm:4", unprivileged=1
    )

    listed = [ct["vmid"] for ct in one.nodes("srv-px2").lxc.get()]
    resources = one.cluster.resources.get()
    pools = one.pools.get()

    assert listed == [3150]
    assert [e["vmid"] for e in resources if e["type"] == "lxc"] == [3150]
    assert "pool" not in next(e for e in resources if e["type"] == "lxc")  # no Pool.Audit on /pool/lab
    assert not any(e["type"] == "storage" for e in resources)
    node_entries = [e for e in resources if e["type"] == "node"]
    assert node_entries and all("mem" not in e and "maxmem" not in e for e in node_entries)
    assert pools == []


def test_create_needs_vm_allocate_on_the_vmid_or_the_pool(server: SimTestServer) -> None:
    auditor = server.proxmox("auditor@pve")
    pool_admin = server.proxmox("pooladmin@pve")

    plain = denied(lambda: auditor.nodes("srv-px1").lxc.post(vmid=201, ostemplate=TEMPLATE, rootfs="local-lvm:4"))
    outside_pool = denied(lambda: pool_admin.nodes("srv-px1").lxc.post(vmid=201, ostemplate=TEMPLATE, pool="other"))
    upid = pool_admin.nodes("srv-px1").lxc.post(
        vmid=201,
        ostemplate=TEMPLATE,
        rootfs="local-lvm:4",
        pool="lab",
        unprivileged=1,
        net0="name=eth0,bridge=vmbr0,ip=dhcp",
        memory=1024,
    )

    assert plain == "Permission check failed"
    assert outside_pool == "Permission check failed"
    assert pool_admin.nodes("srv-px1").tasks(upid).status.get()["exitstatus"] == "OK"
    members = server.proxmox("root@pam").pools("lab").get()["members"]
    assert {m["vmid"] for m in members} == {201, 3150}


def test_create_checks_storage_and_bridge_privileges(server: SimTestServer) -> None:
    pool_admin = server.proxmox("pooladmin@pve")

    bridge = denied(
        lambda: pool_admin.nodes("srv-px1").lxc.post(
            vmid=201,
            ostemplate=TEMPLATE,
            rootfs="local-lvm:4",
            pool="lab",
            unprivileged=1,
            net0="name=eth0,bridge=vmbr1,ip=dhcp",
        )
    )
    options = server.proxmox("options@pve")
    memory = denied(lambda: options.nodes("srv-px2").lxc(3150).config.put(memory=1024))
    description = options.nodes("srv-px2").lxc(3150).config.put(description="ok")

    assert bridge == "Permission check failed (/sdn/zones/localnetwork/vmbr1, SDN.Use)"
    assert memory == "Permission check failed (/vms/3150, VM.Config.Memory)"
    assert description is None


def test_nesting_needs_vm_allocate_and_other_features_need_root(server: SimTestServer) -> None:
    operator = server.proxmox("ctoperator@pve", token="operator")

    nesting = operator.nodes("srv-px2").lxc(3150).config.put(features="nesting=1")
    keyctl = denied(lambda: operator.nodes("srv-px2").lxc(3150).config.put(features="nesting=1,keyctl=1"))

    assert nesting is None
    assert keyctl == "Permission check failed (changing feature flags (except nesting) is only allowed for root@pam)"


def test_node_status_and_cluster_status_need_sys_audit(server: SimTestServer) -> None:
    one = server.proxmox("one@pve")

    assert denied(lambda: one.nodes("srv-px1").status.get()) == "Permission check failed (/nodes/srv-px1, Sys.Audit)"
    assert denied(lambda: one.cluster.status.get()) == "Permission check failed (/, Sys.Audit)"
    assert denied(lambda: one.nodes("srv-px1").rrddata.get(timeframe="hour")) == (
        "Permission check failed (/nodes/srv-px1, Sys.Audit)"
    )


def test_reading_someone_elses_permissions_needs_sys_audit_on_access(server: SimTestServer) -> None:
    one = server.proxmox("one@pve")
    narrow = server.proxmox("narrow@pve")

    own = one.access.permissions.get()
    other = denied(lambda: one.access.permissions.get(userid="narrow@pve"))
    own_token = narrow.access.permissions.get(userid="narrow@pve!powerless", path="/vms/3150")

    assert own == {
        "/vms/3150": {
            "VM.Audit": 1,
            "Sys.Audit": 1,
            "Datastore.Audit": 1,
            "Pool.Audit": 1,
            "SDN.Audit": 1,
            "Mapping.Audit": 1,
            "VM.GuestAgent.Audit": 1,
        }
    }
    assert other == "Permission check failed (/access, Sys.Audit)"
    assert "VM.PowerMgmt" not in own_token["/vms/3150"]


def test_pools_need_pool_allocate(server: SimTestServer) -> None:
    operator = server.proxmox("ctoperator@pve", token="operator")

    assert denied(lambda: operator.pools.post(poolid="mine")) == "Permission check failed (/pool/mine, Pool.Allocate)"
    assert denied(lambda: operator.pools("lab").delete()) == "Permission check failed (/pool/lab, Pool.Allocate)"

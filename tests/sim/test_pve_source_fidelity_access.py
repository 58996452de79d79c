"""Access behaviour that follows PVE's Perl sources, checked over real HTTPS.

Each test names the PVE function whose behaviour it pins down:

* permission paths filled from JSON bodies -- pve-http-server ``PVE::APIServer::AnyEvent::
  extract_params``, pve-manager ``PVE::HTTPServer::rest_handler``, pve-access-control
  ``PVE::RPCEnvironment::exec_api2_perm_check`` with pve-common ``PVE::Tools::template_replace``
  and ``PVE::AccessControl::normalize_path``;
* ``GET /storage`` -- pve-storage ``PVE/API2/Storage/Config.pm`` ``index``;
* ``GET /access/users`` -- pve-access-control ``PVE/API2/User.pm`` ``index``;
* ``GET``/``PUT /nodes/{node}/dns`` -- pve-manager ``PVE/API2/Nodes.pm`` ``dns``/``update_dns``,
  pve-common ``PVE::INotify`` ``read_etc_resolv_conf``/``update_etc_resolv_conf``;
* ``GET /cluster/options`` and tag rules -- pve-manager ``PVE/API2/Cluster.pm`` ``get_options``,
  pve-guest-common ``PVE::GuestHelpers`` ``get_allowed_tags``/``assert_tag_permissions``,
  pve-cluster ``PVE/DataCenterConfig.pm`` ``parse_datacenter_config``;
* SDN.Use on bridges -- pve-container ``PVE::LXC::check_ct_modify_config_perm`` and
  ``check_bridge_access``, pve-guest-common ``PVE::GuestHelpers::check_vnet_access``,
  pve-access-control ``PVE::RPCEnvironment::get_effective_permissions``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from proxmoxer.core import ResourceException

from pve_sim.access import DatacenterOptions
from pve_sim.scenario import Scenario, ScenarioError, parse_scenario
from tests.fixtures.sim import SimServerFactory, SimTestServer

LAB = Path(__file__).resolve().parents[2] / "examples" / "scenarios" / "two-nodes.yaml"
TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
CT_PRIVS = [
    "VM.Allocate",
    "VM.Audit",
    "VM.Config.CPU",
    "VM.Config.Memory",
    "VM.Config.Disk",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.PowerMgmt",
    "Datastore.AllocateSpace",
    "Datastore.Audit",
]


def fidelity_scenario() -> Scenario:
    data: dict[str, Any] = yaml.safe_load(LAB.read_text())

    def user(userid: str, *groups: str) -> None:
        data["users"].append({"userid": userid, "password": f"{userid.split('@')[0]}-password", "groups": list(groups)})

    def acl(path: str, role: str, **grantee: Any) -> None:
        data["acl"].append({"path": path, "role": role, **grantee})

    data["roles"] += [
        {"id": "PoolMaker", "privileges": ["Pool.Allocate"]},
        {"id": "CtNoSdn", "privileges": CT_PRIVS},
        {"id": "UserAdmin", "privileges": ["User.Modify"]},
        {"id": "StorageAudit", "privileges": ["Datastore.Audit"]},
    ]
    data["groups"] = [{"groupid": "ops"}, {"groupid": "dev"}]
    user("poolmaker@pve")
    acl("/pool/gopool", "PoolMaker", user="poolmaker@pve")
    acl("/pool/formpool", "PoolMaker", user="poolmaker@pve")
    user("alice@pve", "ops")
    user("bob@pve", "dev")
    user("helpdesk@pve")
    acl("/access/groups/ops", "UserAdmin", user="helpdesk@pve")
    user("nobody@pve")
    user("localonly@pve")
    acl("/storage/local", "StorageAudit", user="localonly@pve")
    user("vlan@pve")
    acl("/", "CtNoSdn", user="vlan@pve")
    acl("/sdn/zones/localnetwork/vmbr0/20", "PVESDNUser", user="vlan@pve")
    return parse_scenario(data, "fidelity")


@pytest.fixture
def server(pve_sim_server: SimServerFactory) -> SimTestServer:
    return pve_sim_server(fidelity_scenario())


def denied(action: Callable[[], object]) -> str:
    with pytest.raises(ResourceException) as caught:
        action()
    assert caught.value.status_code == 403, caught.value
    return str(caught.value.content)


def ticket_session(server: SimTestServer, userid: str) -> requests.Session:
    """A requests session logged in with a ticket (cookie + CSRF header), for raw JSON bodies."""
    session = server.session()
    login = session.post(
        f"{server.url}/api2/json/access/ticket",
        data={"username": userid, "password": server.user_password(userid)},
    )
    assert login.status_code == 200, login.text
    data = login.json()["data"]
    session.cookies.set("PVEAuthCookie", data["ticket"])
    session.headers["CSRFPreventionToken"] = data["CSRFPreventionToken"]
    return session


# ------------------------------------------------------------------ 1. permission paths from JSON


def test_json_body_fills_the_permission_path_as_form_bodies_do(server: SimTestServer) -> None:
    """pve-http-server ``extract_params`` decodes a JSON body into the parameters and pve-manager
    ``PVE::HTTPServer::rest_handler`` hands them to ``check_api2_permissions`` before validation,
    so ``['perm', '/pool/{poolid}', ['Pool.Allocate']]`` (pve-manager ``API2/Pool.pm``
    ``create_pool``) names the requested pool whatever the body's encoding."""
    session = ticket_session(server, "poolmaker@pve")
    url = f"{server.url}/api2/json/pools"

    created = session.post(url, json={"poolid": "gopool", "comment": "from JSON"})
    refused = session.post(url, json={"poolid": "otherpool"})
    form_created = server.proxmox("poolmaker@pve").pools.post(poolid="formpool")
    form_refused = denied(lambda: server.proxmox("poolmaker@pve").pools.post(poolid="otherpool"))

    assert created.status_code == 200, created.text
    assert refused.status_code == 403
    assert refused.reason == "Permission check failed (/pool/otherpool, Pool.Allocate)"
    assert form_created is None
    assert form_refused == "Permission check failed (/pool/otherpool, Pool.Allocate)"
    pools = {p["poolid"]: p.get("comment") for p in server.proxmox().pools.get()}
    assert pools["gopool"] == "from JSON" and "formpool" in pools and "otherpool" not in pools


def test_json_scalars_fill_the_path_as_perl_prints_them(server: SimTestServer) -> None:
    """pve-common ``PVE::Tools::template_replace`` fills ``{name}`` with ``$data->{name} || '-'``
    (a JSON number prints as Perl prints it; false, 0, empty and missing become ``-``), then
    ``PVE::AccessControl::normalize_path`` folds slashes; a JSON array is a Perl reference whose
    text normalize_path rejects, and an undefined path holds no privilege."""
    session = ticket_session(server, "poolmaker@pve")
    url = f"{server.url}/api2/json/pools"

    number = session.post(url, json={"poolid": 12})
    false = session.post(url, json={"poolid": False})
    missing = session.post(url, json={"comment": "no id"})
    array = session.post(url, json={"poolid": ["gopool"]})

    assert (number.status_code, number.reason) == (403, "Permission check failed (/pool/12, Pool.Allocate)")
    assert (false.status_code, false.reason) == (403, "Permission check failed (/pool/-, Pool.Allocate)")
    assert (missing.status_code, missing.reason) == (403, "Permission check failed (/pool/-, Pool.Allocate)")
    assert (array.status_code, array.reason) == (403, "Permission check failed (, Pool.Allocate)")


def test_json_body_on_a_path_with_uri_parameters(server: SimTestServer) -> None:
    """``rest_handler`` merges the URI's parameters with the body's; a JSON config update of a CT
    is checked on ``/vms/<vmid>`` like a form one (pve-container ``API2/LXC.pm`` ``update_vm``)."""
    session = ticket_session(server, "vlan@pve")
    url = f"{server.url}/api2/json/nodes/srv-px2/lxc/3150/config"

    answer = session.put(url, json={"description": "set via JSON", "onboot": True})

    assert answer.status_code == 200, answer.text
    config = server.proxmox().nodes("srv-px2").lxc(3150).config.get()
    assert config["description"] == "set via JSON\n"
    assert config["onboot"] == 1


# ------------------------------------------------------------------ 2. endpoints real clients call


def test_storage_index_lists_what_the_caller_may_audit_or_allocate(server: SimTestServer) -> None:
    """pve-storage ``PVE/API2/Storage/Config.pm`` ``index``: ``check_any`` of Datastore.Audit or
    Datastore.AllocateSpace on ``/storage/<id>``; entries are the storage.cfg sections with
    ``storage``, ``digest`` and ``content`` as a comma list; ``type`` filters."""
    root = server.proxmox().storage.get()
    local_only = server.proxmox("localonly@pve").storage.get()
    nobody = server.proxmox("nobody@pve").storage.get()
    lvmthin = server.proxmox().storage.get(type="lvmthin")

    assert [(s["storage"], s["type"], s["content"]) for s in root] == [
        ("local", "dir", "backup,iso,vztmpl"),
        ("local-lvm", "lvmthin", "images,rootdir"),
    ]
    assert root[0]["path"] == "/var/lib/vz"
    assert len({s["digest"] for s in root}) == 1 and len(root[0]["digest"]) == 40
    assert [s["storage"] for s in local_only] == ["local"]
    assert nobody == []
    assert [s["storage"] for s in lvmthin] == ["local-lvm"]


def test_user_index_shows_users_the_caller_may_modify_or_audit(server: SimTestServer) -> None:
    """pve-access-control ``PVE/API2/User.pm`` ``index``: everything with User.Modify or Sys.Audit
    on ``/access/groups``; else members of groups the caller holds one of them on, plus itself
    (compared with the auth id: a token does not see its user without privileges)."""
    everyone = server.proxmox().access.users.get()
    helpdesk = server.proxmox("helpdesk@pve").access.users.get()
    nobody = server.proxmox("nobody@pve").access.users.get()
    token = server.proxmox("ctoperator@pve", token="operator").access.users.get(full=1)

    assert {u["userid"] for u in everyone} >= {"root@pam", "alice@pve", "bob@pve", "ctoperator@pve"}
    assert [u["userid"] for u in helpdesk] == ["alice@pve", "helpdesk@pve"]
    assert nobody == [{"enable": 1, "expire": 0, "realm-type": "pve", "userid": "nobody@pve"}]
    # CTOperator holds Sys.Audit on / for the user and the token: every user is listed.
    operator = next(u for u in token if u["userid"] == "ctoperator@pve")
    assert operator["tokens"] == [{"tokenid": "operator", "privsep": 1, "expire": 0}]
    assert operator["groups"] == ""
    assert server.proxmox().access.users.get(enabled=0) == []
    alice = next(u for u in everyone if u["userid"] == "alice@pve")
    assert "groups" not in alice
    assert [u["userid"] for u in server.proxmox().access.users.get(full=1) if u["groups"] == "ops"] == ["alice@pve"]


def test_dns_update_needs_sys_modify_and_rewrites_resolv_conf(server: SimTestServer) -> None:
    """pve-manager ``PVE/API2/Nodes.pm`` ``update_dns`` (Sys.Modify on ``/nodes/{node}``) writes
    /etc/resolv.conf with pve-common ``update_etc_resolv_conf`` (repeats and 0.0.0.0 dropped, unset
    servers gone); ``dns`` reads it back with ``read_etc_resolv_conf`` (servers renumbered)."""
    operator = server.proxmox("ctoperator@pve", token="operator")
    root = server.proxmox()

    refused = denied(lambda: operator.nodes("srv-px1").dns.put(search="example.org", dns1="192.0.2.1"))
    root.nodes("srv-px1").dns.put(search="example.org", dns1="0.0.0.0", dns2="192.0.2.1", dns3="192.0.2.1")
    first = operator.nodes("srv-px1").dns.get()
    root.nodes("srv-px1").dns.put(search="lab.example", dns2="198.51.100.7")
    second = root.nodes("srv-px1").dns.get()

    assert refused == "Permission check failed (/nodes/srv-px1, Sys.Modify)"
    assert first == {"search": "example.org", "dns1": "192.0.2.1"}
    assert second == {"search": "lab.example", "dns1": "198.51.100.7"}
    assert root.nodes("srv-px2").dns.get()["search"] != "lab.example"
    with pytest.raises(ResourceException) as bad:
        root.nodes("srv-px1").dns.put(search="x", dns1="not-an-ip")
    assert bad.value.status_code == 400


def test_unimplemented_endpoints_still_answer_501(server: SimTestServer) -> None:
    with pytest.raises(ResourceException) as caught:
        server.proxmox().cluster.sdn.vnets.get()
    assert caught.value.status_code == 501
    assert "GET /cluster/sdn/vnets" in str(caught.value)


# ------------------------------------------------------------------ 3. tag restrictions


def test_cluster_options_report_datacenter_cfg_and_allowed_tags(server: SimTestServer) -> None:
    """pve-manager ``PVE/API2/Cluster.pm`` ``get_options``: the parsed datacenter.cfg with
    Sys.Audit on ``/`` (only ``console``/``tag-style`` without), plus ``allowed-tags``
    (``get_allowed_tags``); pve-cluster ``parse_datacenter_config`` always sets ``description``
    and ``mac_prefix`` and splits the tag lists."""
    default = server.proxmox().cluster.options.get()
    server.admin.set_datacenter_options(
        {
            "userTagAccess": {"userAllow": "list", "userAllowList": ["team-a", "Team-B"]},
            "registeredTags": ["managed"],
            "crs": {"ha": "static"},
        }
    )
    configured = server.proxmox().cluster.options.get()
    unprivileged = server.proxmox("nobody@pve").cluster.options.get()

    assert default == {"description": "", "mac_prefix": "BC:24:11", "allowed-tags": ["legacy"]}
    assert configured == {
        "description": "",
        "mac_prefix": "BC:24:11",
        "crs": {"ha": "static"},
        "registered-tags": ["managed"],
        "user-tag-access": {"user-allow": "list", "user-allow-list": ["Team-B", "team-a"]},
        "allowed-tags": ["Team-B", "legacy", "managed", "team-a"],
    }
    assert unprivileged == {"allowed-tags": ["Team-B", "team-a"]}


def _create(api: Any, vmid: int, **options: Any) -> str:
    upid: str = api.nodes("srv-px1").lxc.post(
        vmid=vmid, ostemplate=TEMPLATE, rootfs="local-lvm:4", unprivileged=1, **options
    )
    return upid


def test_tags_follow_user_tag_access_and_registered_tags(server: SimTestServer) -> None:
    """pve-guest-common ``assert_tag_permissions`` (called by pve-container
    ``check_ct_modify_config_perm`` on create and update): without Sys.Modify on ``/`` a tag that
    is added or removed must be allowed by ``user-tag-access`` and must not be registered, else
    403 ``Permission check failed (/, Sys.Modify for modifying tag '<tag>')``."""
    server.admin.set_datacenter_options(
        {"userTagAccess": {"userAllow": "list", "userAllowList": ["team-a"]}, "registeredTags": ["managed"]}
    )
    operator = server.proxmox("ctoperator@pve", token="operator")
    root = server.proxmox()

    unlisted = denied(lambda: _create(operator, 401, tags="team-a;other"))
    registered = denied(lambda: _create(operator, 401, tags="managed"))
    upper_case = denied(lambda: _create(operator, 401, tags="Team-A"))  # compared before lower-casing
    _create(operator, 401, tags="team-a")
    add_registered = denied(lambda: operator.nodes("srv-px1").lxc(401).config.put(tags="team-a;managed"))
    root.nodes("srv-px1").lxc(401).config.put(tags="team-a;managed")
    remove_registered = denied(lambda: operator.nodes("srv-px1").lxc(401).config.put(tags="team-a"))
    delete_all = denied(lambda: operator.nodes("srv-px1").lxc(401).config.put(delete="tags"))
    operator.nodes("srv-px1").lxc(401).config.put(description="untouched tags pass")

    assert unlisted == "Permission check failed (/, Sys.Modify for modifying tag 'other')"
    assert registered == "Permission check failed (/, Sys.Modify for modifying tag 'managed')"
    assert upper_case == "Permission check failed (/, Sys.Modify for modifying tag 'Team-A')"
    assert add_registered == "Permission check failed (/, Sys.Modify for modifying tag 'managed')"
    assert remove_registered == "Permission check failed (/, Sys.Modify for modifying tag 'managed')"
    assert delete_all == "Permission check failed (/, Sys.Modify for modifying tag 'managed')"
    assert root.nodes("srv-px1").lxc(401).config.get()["tags"] == "managed;team-a"


def test_existing_allows_tags_of_auditable_guests_and_none_allows_nothing(server: SimTestServer) -> None:
    """``get_allowed_tags``: ``existing`` adds the tags of every guest the caller may VM.Audit
    (``legacy`` on CT 3150 here); ``none`` allows no tag change at all; the default ``free``
    allows any tag that is not registered."""
    operator = server.proxmox("ctoperator@pve", token="operator")
    _create(operator, 402, tags="anything")  # default: free

    server.admin.set_datacenter_options({"userTagAccess": {"userAllow": "existing"}})
    existing_ok = operator.nodes("srv-px1").lxc(402).config.put(tags="anything;legacy")
    existing_new = denied(lambda: operator.nodes("srv-px1").lxc(402).config.put(tags="anything;legacy;fresh"))

    server.admin.set_datacenter_options({"userTagAccess": {"userAllow": "none", "userAllowList": ["legacy"]}})
    none = denied(lambda: operator.nodes("srv-px1").lxc(402).config.put(tags="anything"))

    assert existing_ok is None
    assert existing_new == "Permission check failed (/, Sys.Modify for modifying tag 'fresh')"
    assert none == "Permission check failed (/, Sys.Modify for modifying tag 'legacy')"


def test_scenario_sets_datacenter_options_and_names_bad_fields() -> None:
    data: dict[str, Any] = yaml.safe_load(LAB.read_text())
    data["cluster"]["options"] = {
        "userTagAccess": {"userAllow": "list", "userAllowList": ["b", "A"]},
        "registeredTags": ["managed"],
    }
    options = DatacenterOptions.from_spec(parse_scenario(data, "lab.yaml").cluster.options)

    data["cluster"]["options"] = {"userTagAccess": {"userAllow": "everything"}}
    with pytest.raises(ScenarioError) as bad_mode:
        parse_scenario(data, "lab.yaml")
    data["cluster"]["options"] = {"registeredTags": ["-bad"]}
    with pytest.raises(ScenarioError) as bad_tag:
        parse_scenario(data, "lab.yaml")

    assert options.as_config()["user-tag-access"] == {"user-allow": "list", "user-allow-list": ["A", "b"]}
    assert options.as_config()["registered-tags"] == ["managed"]
    assert str(bad_mode.value).startswith("lab.yaml: cluster.options.userTagAccess.userAllow: ")
    assert "'everything'" in str(bad_mode.value)
    assert str(bad_tag.value).startswith("lab.yaml: cluster.options.registeredTags[0]: ")
    assert "is not a valid tag" in str(bad_tag.value)


# ------------------------------------------------------------------ 4. SDN.Use on bridges


def test_bridges_need_sdn_use_on_the_bridge_or_the_vlan(server: SimTestServer) -> None:
    """pve-container ``check_ct_modify_config_perm`` -> ``check_bridge_access`` -> pve-guest-common
    ``check_vnet_access``: SDN.Use on ``/sdn/zones/localnetwork/<bridge>/<tag>`` with a VLAN tag,
    on the bridge itself without one; both the old and the new value of a changed ``netN``."""
    vlan = server.proxmox("vlan@pve")

    untagged = denied(lambda: _create(vlan, 403, net0="name=eth0,bridge=vmbr0,ip=dhcp"))
    other_vlan = denied(lambda: _create(vlan, 403, net0="name=eth0,bridge=vmbr0,tag=30,ip=dhcp"))
    _create(vlan, 403, net0="name=eth0,bridge=vmbr0,tag=20,ip=dhcp")
    retag = denied(lambda: vlan.nodes("srv-px1").lxc(403).config.put(net0="name=eth0,bridge=vmbr0,tag=30,ip=dhcp"))
    trunk = denied(
        lambda: vlan.nodes("srv-px1").lxc(403).config.put(net0="name=eth0,bridge=vmbr0,tag=20,trunks=20;100,ip=dhcp")
    )

    assert untagged == "Permission check failed (/sdn/zones/localnetwork/vmbr0, SDN.Use)"
    assert other_vlan == "Permission check failed (/sdn/zones/localnetwork/vmbr0/30, SDN.Use)"
    assert retag == "Permission check failed (/sdn/zones/localnetwork/vmbr0/30, SDN.Use)"
    assert trunk == "Permission check failed (/sdn/zones/localnetwork/vmbr0/100, SDN.Use)"


def test_effective_permissions_report_sdn_paths_for_pre_checks(server: SimTestServer) -> None:
    """pve-access-control ``get_effective_permissions``: every ACL tree node is listed, so the
    VLAN grant and the paths above it show up; ``path=`` answers for one path."""
    vlan = server.proxmox("vlan@pve")

    everything = vlan.access.permissions.get()
    bridge = vlan.access.permissions.get(path="/sdn/zones/localnetwork/vmbr0")
    vlan20 = vlan.access.permissions.get(path="/sdn/zones/localnetwork/vmbr0/20")

    assert everything["/sdn/zones/localnetwork/vmbr0/20"]["SDN.Use"] == 1
    assert "SDN.Use" not in everything.get("/sdn/zones/localnetwork/vmbr0", {})
    assert "SDN.Use" not in bridge.get("/sdn/zones/localnetwork/vmbr0", {})
    assert vlan20["/sdn/zones/localnetwork/vmbr0/20"]["SDN.Use"] == 1

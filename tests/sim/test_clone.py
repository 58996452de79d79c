"""CT templates and clones in pve_sim, through the real proxmoxer client over HTTPS.

Each test names the PVE source it pins down: pve-container ``src/PVE/API2/LXC.pm`` (``template``,
``clone_vm``), ``src/PVE/LXC.pm`` (``template_create``, ``copy_volume``), pve-storage
``src/PVE/Storage.pm`` (``volume_has_feature``, ``vdisk_clone``) and its plugins (``create_base``,
``clone_image``, ``volume_has_feature``), pve-access-control ``src/PVE/RPCEnvironment.pm``
(``exec_api2_perm_check``). Servers run at time scale 1 with the clock frozen: simulated time moves
only when a test advances it, so a task can be looked at while it runs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from proxmoxer.tools import Tasks

from pve_sim.scenario import ScenarioError, parse_scenario
from tests.fixtures.sim import SimServerFactory, SimTestServer
from tests.sim.task_support import finish, refused, task_log, task_status

LAB = Path(__file__).resolve().parents[2] / "examples" / "scenarios" / "two-nodes.yaml"
OPERATOR = ("ctoperator@pve", "operator")
GIB = 1 << 30
TEMPLATE_CT = 3160
"""A template CT on lvmthin (its rootfs a base volume), 4 GiB."""
DIR_TEMPLATE_CT = 3162
"""A template CT on a dir storage: templates work there, linked clones do not."""
PLAIN_CT = 3161
"""A normal stopped CT, 8 GiB, one NIC."""
NET0 = "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=dhcp,type=veth"


def clone_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(LAB.read_text())
    data["storages"] += [
        {"name": "vzdir", "type": "dir", "content": ["rootdir", "images"], "capacityGiB": 200},
        {"name": "thick", "type": "lvm", "content": ["rootdir", "images"], "capacityGiB": 200},
    ]
    base = {"node": "srv-px1", "memoryMiB": 1024, "usage": {"disk": {"type": "constant", "value": 0.25}}}
    data["containers"] += [
        {
            **base,
            "vmid": TEMPLATE_CT,
            "hostname": "golden",
            "template": True,
            "rootfs": {"storage": "local-lvm", "sizeGiB": 4},
        },
        {
            **base,
            "vmid": PLAIN_CT,
            "hostname": "plain",
            "cores": 2,
            "tags": ["web"],
            "description": "plain CT",
            "rootfs": {"storage": "local-lvm", "sizeGiB": 8},
            "net": [{"name": "eth0", "bridge": "vmbr0", "ip": "dhcp", "hwaddr": "BC:24:11:00:00:01"}],
        },
        {
            **base,
            "vmid": DIR_TEMPLATE_CT,
            "hostname": "dirgold",
            "template": True,
            "rootfs": {"storage": "vzdir", "sizeGiB": 2},
        },
    ]
    # cloner@pve may clone but allocate nothing; allocator@pve may clone and allocate guests, but
    # not storage space; poolcloner@pve may allocate only inside the pool 'lab'.
    data["users"] += [
        {"userid": "cloner@pve", "password": "cloner-password"},
        {"userid": "allocator@pve", "password": "allocator-password"},
        {"userid": "poolcloner@pve", "password": "poolcloner-password"},
    ]
    data["roles"] += [
        {"id": "Cloner", "privileges": ["VM.Clone", "VM.Audit"]},
        {"id": "Allocator", "privileges": ["VM.Clone", "VM.Allocate", "VM.Audit", "SDN.Use"]},
        {"id": "Spacer", "privileges": ["Datastore.AllocateSpace", "SDN.Use"]},
        {"id": "PoolAllocator", "privileges": ["VM.Allocate", "VM.Audit"]},
    ]
    data["acl"] += [
        {"path": "/", "role": "Cloner", "user": "cloner@pve"},
        {"path": "/", "role": "Allocator", "user": "allocator@pve"},
        {"path": "/", "role": "Cloner", "user": "poolcloner@pve"},
        {"path": "/", "role": "Spacer", "user": "poolcloner@pve"},
        {"path": "/pool/lab", "role": "PoolAllocator", "user": "poolcloner@pve"},
    ]
    return data


@pytest.fixture
def server(pve_sim_server: SimServerFactory) -> SimTestServer:
    started = pve_sim_server(parse_scenario(clone_data(), "clone"), time_scale=1.0)
    started.cluster.clock.freeze()
    return started


@pytest.fixture
def root(server: SimTestServer) -> Any:
    return server.proxmox("root@pam")


@pytest.fixture
def api(server: SimTestServer) -> Any:
    return server.proxmox(OPERATOR[0], token=OPERATOR[1])


def storage_used(api: Any, sid: str, node: str = "srv-px1") -> int:
    return int(next(s for s in api.nodes(node).storage.get() if s["storage"] == sid)["used"])


def vmids(api: Any) -> set[int]:
    return {int(ct["vmid"]) for ct in api.nodes("srv-px1").lxc.get()}


# ================================================================================= template


def test_template_converts_a_stopped_ct_renaming_its_volume_to_base(server: SimTestServer, root: Any) -> None:
    """API2/LXC.pm 'template': returns null and forks 'vztemplate'; LXC.pm template_create renames
    each volume with vdisk_create_base (LvmThinPlugin.pm create_base: vm- -> base-, lvrename) and
    writes template: 1. A template cannot be started (API2/LXC/Status.pm vm_start)."""
    upid = root.nodes("srv-px1").lxc.post(
        vmid=201, ostemplate="local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst", rootfs="local-lvm:8"
    )
    finish(server, root, upid)

    assert root.nodes("srv-px1").lxc(201).template.post() is None
    task = next(t for t in root.nodes("srv-px1").tasks.get(typefilter="vztemplate", source="all"))
    assert (task["id"], task["status"]) == ("201", "RUNNING")
    server.cluster.advance_clock(1)  # templateSeconds

    config = root.nodes("srv-px1").lxc(201).config.get()
    assert config["template"] == 1
    assert config["rootfs"] == "local-lvm:base-201-disk-0,size=8G"
    log = task_log(root, task["upid"])
    assert log[0].endswith('Renamed "vm-201-disk-0" to "base-201-disk-0" in volume group "pve"')
    assert log[-1] == "TASK OK"
    resource = next(r for r in root.cluster.resources.get(type="vm") if r["vmid"] == 201)
    assert resource["template"] == 1
    start = finish(server, root, root.nodes("srv-px1").lxc(201).status.start.post())
    assert start["exitstatus"] == "you can't start a CT if it's a template"


def test_template_refuses_a_template_a_running_ct_and_storage_without_the_feature(
    server: SimTestServer, root: Any
) -> None:
    """API2/LXC.pm 'template': "you can't convert a template to a template", "... if the CT is
    running" (500 before the task); LXC.pm template_create: volume_has_feature('template') fails on
    thick LVM (LVMPlugin.pm has the template feature commented out) inside the task."""
    assert refused(lambda: root.nodes("srv-px1").lxc(TEMPLATE_CT).template.post()).content == (
        "you can't convert a template to a template"
    )
    running = refused(lambda: root.nodes("srv-px2").lxc(3150).template.post())
    assert (running.status_code, running.content) == (500, "you can't convert a CT to template if the CT is running")

    upid = root.nodes("srv-px1").lxc.post(
        vmid=202, ostemplate="local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst", rootfs="thick:4"
    )
    finish(server, root, upid)
    root.nodes("srv-px1").lxc(202).template.post()
    server.cluster.advance_clock(5)
    task = next(t for t in root.nodes("srv-px1").tasks.get(typefilter="vztemplate", source="all"))
    assert task["status"] == "Template feature is not available for 'thick:vm-202-disk-0'"
    assert "template" not in root.nodes("srv-px1").lxc(202).config.get()


def test_scenario_template_ct_has_a_base_volume_and_refuses_thick_lvm() -> None:
    """A scenario's template CT looks like one POST .../template made; it needs the template feature."""
    data = clone_data()
    scenario = parse_scenario(data, "clone")
    assert next(ct for ct in scenario.containers if ct.vmid == TEMPLATE_CT).template
    data["containers"][-1]["rootfs"] = {"storage": "thick", "sizeGiB": 2}
    with pytest.raises(ScenarioError, match="a template CT needs a storage with the 'template' feature, not 'lvm'"):
        parse_scenario(data, "clone")


# ================================================================================= clone


def test_linked_clone_of_a_template_on_lvmthin_is_fast_and_shares_the_base_volume(
    server: SimTestServer, root: Any
) -> None:
    """API2/LXC.pm clone_vm: full defaults to 0 for a template; vdisk_clone -> LvmThinPlugin.pm
    clone_image (a thin snapshot of base-<vmid>-disk-0 named vm-<newid>-disk-0); the task is
    'vzclone' with the *source* VMID as its ID. The clone shares the base's blocks on the pool."""
    before = storage_used(root, "local-lvm")
    upid = root.nodes("srv-px1").lxc(TEMPLATE_CT).clone.post(newid=301, hostname="ct-301")
    assert Tasks.decode_upid(upid)["type"] == "vzclone" and Tasks.decode_upid(upid)["id"] == str(TEMPLATE_CT)

    server.cluster.advance_clock(0.9)
    assert task_status(root, upid)["status"] == "running"
    server.cluster.advance_clock(0.1)  # cloneSeconds: 1
    assert task_status(root, upid)["exitstatus"] == "OK"

    config = root.nodes("srv-px1").lxc(301).config.get()
    assert config["rootfs"] == "local-lvm:vm-301-disk-0,size=4G"
    assert (config["hostname"], "template" in config, "lock" in config) == ("ct-301", False, False)
    assert server.cluster.state.linked_clones == {"local-lvm:vm-301-disk-0": f"local-lvm:base-{TEMPLATE_CT}-disk-0"}
    assert task_log(root, upid)[:3] == [
        f"creating a clone of container {TEMPLATE_CT} with ID 301",
        f"create linked clone of mount point rootfs (local-lvm:base-{TEMPLATE_CT}-disk-0)",
        '  Logical volume "vm-301-disk-0" created.',
    ]
    # the clone's data ('ct-*' usage rule: 30 % of 4 GiB) minus the 25 % it shares with the base
    assert storage_used(root, "local-lvm") - before == pytest.approx(0.05 * 4 * GIB, abs=1)
    assert root.nodes("srv-px1").lxc(301).status.current.get()["status"] == "stopped"
    finish(server, root, root.nodes("srv-px1").lxc(301).delete())
    assert server.cluster.state.linked_clones == {}
    assert storage_used(root, "local-lvm") == before


def test_linked_clone_of_a_normal_ct_is_refused_with_pves_message(server: SimTestServer, root: Any) -> None:
    """clone_vm: a linked clone asks volume_has_feature('clone') of each volume; lvmthin clones only
    base volumes (LvmThinPlugin.pm: clone => {base, snap}); the eval unlocks the source again."""
    error = refused(lambda: root.nodes("srv-px1").lxc(PLAIN_CT).clone.post(newid=302, full=0))
    assert (error.status_code, error.content) == (
        500,
        f"Linked clone feature for 'local-lvm:vm-{PLAIN_CT}-disk-0' is not available",
    )
    assert "lock" not in root.nodes("srv-px1").lxc(PLAIN_CT).config.get()
    assert 302 not in vmids(root)


def test_linked_clone_needs_a_storage_that_can_make_one(server: SimTestServer, root: Any) -> None:
    """Plugin.pm volume_has_feature: clone_image on a file storage makes a qcow2 volume, which a CT
    (valid_target_formats raw, subvol) cannot use -- a dir template clones only in full."""
    error = refused(lambda: root.nodes("srv-px1").lxc(DIR_TEMPLATE_CT).clone.post(newid=303))
    assert (
        error.content
        == f"Linked clone feature for 'vzdir:{DIR_TEMPLATE_CT}/base-{DIR_TEMPLATE_CT}-disk-0.raw' is not available"
    )

    upid = root.nodes("srv-px1").lxc(DIR_TEMPLATE_CT).clone.post(newid=303, full=1)
    assert finish(server, root, upid)["exitstatus"] == "OK"
    assert root.nodes("srv-px1").lxc(303).config.get()["rootfs"] == "vzdir:303/vm-303-disk-0.raw,size=2G"


def test_full_clone_copies_the_config_with_new_mac_addresses(server: SimTestServer, root: Any) -> None:
    """clone_vm: every option is copied except unused volumes, snapshots, pending and 'template';
    netN gets a new hwaddr ("always change MAC! address"); hostname/description replace the source's;
    copy_volume allocates a new volume on 'storage'; the new CT is stopped and unlocked."""
    source = root.nodes("srv-px1").lxc(PLAIN_CT).config.get()
    upid = (
        root.nodes("srv-px1")
        .lxc(PLAIN_CT)
        .clone.post(newid=304, hostname="ct-304", description="copy", storage="vzdir", pool="lab")
    )
    assert finish(server, root, upid)["exitstatus"] == "OK"

    clone = root.nodes("srv-px1").lxc(304).config.get()
    assert clone["rootfs"] == "vzdir:304/vm-304-disk-0.raw,size=8G"
    assert (clone["hostname"], clone["description"]) == ("ct-304", "copy\n")
    mac = re.search(r"hwaddr=([0-9A-F:]{17})", clone["net0"])
    assert mac is not None and mac.group(1) != "BC:24:11:00:00:01"
    assert clone["net0"] == NET0.replace("BC:24:11:00:00:01", mac.group(1))
    ignored = {"rootfs", "hostname", "description", "net0", "digest"}
    assert {k: v for k, v in clone.items() if k not in ignored} == {k: v for k, v in source.items() if k not in ignored}
    assert root.nodes("srv-px1").lxc(304).status.current.get()["status"] == "stopped"
    assert 304 in {m["vmid"] for m in root.pools("lab").get()["members"] if m.get("vmid")}
    assert server.cluster.state.linked_clones == {}


def test_full_clone_takes_time_proportional_to_the_volume_size(server: SimTestServer, root: Any) -> None:
    """copy_volume copies the whole volume: 8 GiB at cloneMiBPerSecond (400) is 20.48 s, plus the
    fixed cloneSeconds (1); bwlimit (KiB/s) caps the rate."""
    upid = root.nodes("srv-px1").lxc(PLAIN_CT).clone.post(newid=305)
    server.cluster.advance_clock(21.4)
    assert task_status(root, upid)["status"] == "running"
    server.cluster.advance_clock(0.1)
    assert task_status(root, upid)["exitstatus"] == "OK"

    slow = root.nodes("srv-px1").lxc(PLAIN_CT).clone.post(newid=306, bwlimit=102400)  # 100 MiB/s: 81.92 s + 1 s
    server.cluster.advance_clock(82.5)
    assert task_status(root, slow)["status"] == "running"
    server.cluster.advance_clock(0.5)
    assert task_status(root, slow)["exitstatus"] == "OK"


def test_clone_refuses_a_newid_in_use(server: SimTestServer, root: Any) -> None:
    """create_and_lock_config -> PVE::Cluster::check_vmid_unused; the source's 'disk' lock is
    removed again."""
    error = refused(lambda: root.nodes("srv-px1").lxc(TEMPLATE_CT).clone.post(newid=3150))
    assert (error.status_code, error.content) == (500, "CT 3150 already exists on node 'srv-px2'")
    assert "lock" not in root.nodes("srv-px1").lxc(TEMPLATE_CT).config.get()


def test_clone_refuses_storage_for_linked_clones_and_local_storage_for_another_node(root: Any) -> None:
    """clone_vm: "parameter 'storage' not allowed for linked clones"; a target node needs every
    volume on shared storage ("can't clone CT to node ... (CT uses local storage)")."""
    linked = refused(lambda: root.nodes("srv-px1").lxc(TEMPLATE_CT).clone.post(newid=307, storage="vzdir"))
    assert linked.content == "parameter 'storage' not allowed for linked clones"
    remote = refused(lambda: root.nodes("srv-px1").lxc(PLAIN_CT).clone.post(newid=307, target="srv-px2"))
    assert remote.content == "can't clone CT to node 'srv-px2' (CT uses local storage)"
    missing = refused(lambda: root.nodes("srv-px1").lxc(999).clone.post(newid=307))
    assert missing.content == "Configuration file 'nodes/srv-px1/lxc/999.conf' does not exist"
    assert 307 not in vmids(root)


@pytest.mark.parametrize(
    ("who", "params", "message"),
    [
        (OPERATOR, {}, f"Permission check failed (/vms/{TEMPLATE_CT}, VM.Clone)"),
        (("cloner@pve", None), {}, "Permission check failed"),
        (("allocator@pve", None), {}, "Permission check failed (/storage/local-lvm, Datastore.AllocateSpace)"),
        (("poolcloner@pve", None), {}, "Permission check failed"),
    ],
    ids=["no-VM.Clone", "no-VM.Allocate", "no-Datastore.AllocateSpace", "pool-not-named"],
)
def test_clone_permissions_name_the_missing_privilege(
    server: SimTestServer, who: tuple[str, str | None], params: dict[str, Any], message: str
) -> None:
    """exec_api2_perm_check: ['and', VM.Clone on /vms/{vmid}, ['or', VM.Allocate on /vms/{newid},
    VM.Allocate on /pool/{pool} (require_param pool)]] -- a failing 'or' is a bare 403; clone_vm
    then checks Datastore.AllocateSpace on each volume's storage."""
    userid, token = who
    api = server.proxmox(userid, token=token) if token else server.proxmox(userid)
    error = refused(lambda: api.nodes("srv-px1").lxc(TEMPLATE_CT).clone.post(newid=308, **params))
    assert (error.status_code, error.content) == (403, message)


def test_clone_into_a_pool_needs_vm_allocate_only_there(server: SimTestServer, root: Any) -> None:
    """The 'or' branch /pool/{pool}: VM.Allocate on the pool is enough; the clone joins the pool."""
    api = server.proxmox("poolcloner@pve")
    upid = api.nodes("srv-px1").lxc(TEMPLATE_CT).clone.post(newid=309, pool="lab")
    assert finish(server, root, upid)["exitstatus"] == "OK"
    assert 309 in {m.get("vmid") for m in root.pools("lab").get()["members"]}


def test_clone_task_locks_source_disk_and_new_ct_create_while_it_runs(server: SimTestServer, root: Any) -> None:
    """clone_vm: set_lock($vmid, 'disk') on the source, create_and_lock_config($newid) then the new
    config (lock 'create', no volumes yet) before fork_worker; the worker adds the volumes, then
    removes both locks. Meanwhile the source refuses to start and the new CT to be changed."""
    upid = root.nodes("srv-px1").lxc(PLAIN_CT).clone.post(newid=310)

    assert root.nodes("srv-px1").lxc(PLAIN_CT).config.get()["lock"] == "disk"
    new = root.nodes("srv-px1").lxc(310).config.get()
    assert (new["lock"], "rootfs" in new, new["hostname"]) == ("create", False, "plain")
    locked = refused(lambda: root.nodes("srv-px1").lxc(310).config.put(memory=2048))
    assert locked.content == "CT is locked (create)"
    start = root.nodes("srv-px1").lxc(PLAIN_CT).status.start.post()
    server.cluster.advance_clock(3)
    assert task_status(root, start)["exitstatus"] == "CT is locked (disk)"
    assert task_status(root, upid)["status"] == "running"

    assert finish(server, root, upid)["exitstatus"] == "OK"
    assert "lock" not in root.nodes("srv-px1").lxc(PLAIN_CT).config.get()
    assert "lock" not in root.nodes("srv-px1").lxc(310).config.get()


def test_failed_clone_frees_the_new_volumes_and_config(server: SimTestServer, root: Any) -> None:
    """clone_vm's worker on error: unlock the source, vdisk_free the new volumes, destroy the new
    config, die "clone failed: <reason>"."""
    server.cluster.fail_tasks("vzclone", "rsync: write failed (No space left on device)")
    upid = root.nodes("srv-px1").lxc(TEMPLATE_CT).clone.post(newid=311)
    status = finish(server, root, upid)
    assert status["exitstatus"] == "clone failed: rsync: write failed (No space left on device)"
    assert 311 not in vmids(root)
    assert "lock" not in root.nodes("srv-px1").lxc(TEMPLATE_CT).config.get()
    assert server.cluster.state.linked_clones == {}

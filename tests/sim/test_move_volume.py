"""Moving CT volumes in pve_sim (``POST /nodes/{node}/lxc/{vmid}/move_volume``), through the real
proxmoxer client over HTTPS.

Each test names the PVE source it pins down: pve-container ``src/PVE/API2/LXC.pm`` ``move_volume``
(``$load_and_check_reassign_configs``, ``$volume_reassignfn``, ``$move_to_storage_checks``,
``$storage_realcmd``), ``src/PVE/LXC/Config.pm`` ``update_pct_config``, pve-storage
``src/PVE/Storage.pm`` ``rename_volume`` / ``volume_has_feature`` and the plugins' ``rename_volume``.
Servers run at time scale 1 with the clock frozen: simulated time moves only when a test advances
it, so a task can be looked at while it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from proxmoxer.tools import Tasks

from pve_sim.handlers.move_volume import RENAME_SECONDS
from pve_sim.scenario import parse_scenario
from tests.fixtures.sim import SimServerFactory, SimTestServer
from tests.sim.task_support import finish, refused, task_log, task_status

LAB = Path(__file__).resolve().parents[2] / "examples" / "scenarios" / "two-nodes.yaml"
OPERATOR = ("ctoperator@pve", "operator")
NODE = "srv-px1"
SOURCE = 3100
"""A stopped CT on srv-px1 (rootfs local-lvm:vm-3100-disk-0); the fixture gives it mp0 on local-lvm."""
TARGET = 3105
"""A stopped CT on srv-px1 (rootfs local-lvm:vm-3105-disk-0)."""
RUNNING = 3110
"""A running CT on srv-px1."""
LOCKED = 3120
"""A stopped CT on srv-px1 locked 'backup'."""
TEMPLATE = 3160
"""A template CT on srv-px1."""
REMOTE = 3150
"""The lab's running CT on srv-px2."""
MP0 = "local-lvm:vm-3100-disk-1,mp=/srv/data,backup=1,size=2G"
GIB = 1 << 30
MODIFIED = "detected modified configuration - file changed by other user? Try again."


def move_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(LAB.read_text())
    data["storages"] += [
        {"name": "vzdir", "type": "dir", "content": ["rootdir", "images"], "capacityGiB": 200},
        {"name": "thick", "type": "lvm", "content": ["rootdir", "images"], "capacityGiB": 200},
        {"name": "tank", "type": "zfspool", "content": ["rootdir", "images"], "capacityGiB": 200},
    ]
    base = {"node": NODE, "memoryMiB": 1024, "usage": {"disk": {"type": "constant", "value": 0.25}}}
    data["containers"] += [
        {**base, "vmid": SOURCE, "hostname": "source", "rootfs": {"storage": "local-lvm", "sizeGiB": 8}},
        {**base, "vmid": TARGET, "hostname": "target", "rootfs": {"storage": "local-lvm", "sizeGiB": 4}},
        {
            **base,
            "vmid": RUNNING,
            "hostname": "live",
            "status": "running",
            "rootfs": {"storage": "local-lvm", "sizeGiB": 4},
        },
        {
            **base,
            "vmid": LOCKED,
            "hostname": "locked",
            "lock": "backup",
            "rootfs": {"storage": "local-lvm", "sizeGiB": 4},
        },
        {
            **base,
            "vmid": TEMPLATE,
            "hostname": "golden",
            "template": True,
            "rootfs": {"storage": "local-lvm", "sizeGiB": 4},
        },
    ]
    # mover@pve may change disks of the source only; nospace@pve of every CT, but allocate no space.
    data["users"] += [
        {"userid": "mover@pve", "password": "mover-password"},
        {"userid": "nospace@pve", "password": "nospace-password"},
    ]
    data["roles"] += [
        {"id": "DiskMover", "privileges": ["VM.Config.Disk", "VM.Audit"]},
        {"id": "Spacer", "privileges": ["Datastore.AllocateSpace"]},
    ]
    data["acl"] += [
        {"path": f"/vms/{SOURCE}", "role": "DiskMover", "user": "mover@pve"},
        {"path": "/storage", "role": "Spacer", "user": "mover@pve"},
        {"path": "/", "role": "DiskMover", "user": "nospace@pve"},
    ]
    return data


@pytest.fixture
def server(pve_sim_server: SimServerFactory) -> SimTestServer:
    started = pve_sim_server(parse_scenario(move_data(), "move"), time_scale=1.0)
    started.cluster.clock.freeze()
    root = started.proxmox("root@pam")
    root.nodes(NODE).lxc(SOURCE).config.put(mp0="local-lvm:2,mp=/srv/data,backup=1")
    return started


@pytest.fixture
def root(server: SimTestServer) -> Any:
    return server.proxmox("root@pam")


def config(api: Any, vmid: int, node: str = NODE) -> dict[str, Any]:
    result: dict[str, Any] = api.nodes(node).lxc(vmid).config.get()
    return result


def storage_used(server: SimTestServer, sid: str = "local-lvm") -> int:
    """Bytes used on ``sid`` on srv-px1 as the simulator accounts them (root volumes by their usage
    profile, mount points at a tenth of their size; the ``/_sim`` state view shows it)."""
    return server.cluster.storage_used_bytes(server.cluster.state.storages[sid], NODE)


def content(api: Any, sid: str = "local-lvm") -> dict[str, int]:
    """Volume ID -> owning VMID of the CT volumes on ``sid`` (on srv-px1)."""
    return {item["volid"]: item["vmid"] for item in api.nodes(NODE).storage(sid).content.get(content="rootdir")}


def reassign(api: Any, vmid: int = SOURCE, node: str = NODE, /, **params: Any) -> Any:
    return api.nodes(node).lxc(vmid).move_volume.post(**params)


# ================================================================================= reassign


def test_reassign_moves_the_volume_to_the_target_ct_and_it_outlives_the_source(
    server: SimTestServer, root: Any
) -> None:
    """$volume_reassignfn: fork_worker('move_volume', '<vmid>-<key>><target>-<target key>'); the
    worker renames the LV to the target's next free disk name (LVMPlugin.pm rename_volume: lvrename,
    lvchange moves the pve-vm-<vmid> tag), drops the key from the source, writes the mount point --
    every option kept, only 'volume' replaced -- into the target. The volume is the target's now:
    destroying the source leaves it, destroying the target frees it."""
    source_digest, target_digest = config(root, SOURCE)["digest"], config(root, TARGET)["digest"]
    upid = reassign(root, volume="mp0", **{"target-vmid": TARGET, "target-volume": "mp0"})
    decoded = Tasks.decode_upid(upid)
    assert (decoded["type"], decoded["id"], decoded["user"]) == (
        "move_volume",
        f"{SOURCE}-mp0>{TARGET}-mp0",
        "root@pam",
    )
    assert task_status(root, upid)["status"] == "running"
    during = config(root, SOURCE)
    assert during["mp0"] == MP0 and "lock" not in during  # PVE holds flocks, no 'lock' in the configs

    server.cluster.advance_clock(RENAME_SECONDS)
    assert task_status(root, upid)["exitstatus"] == "OK"
    assert task_log(root, upid) == [
        f"moving volume 'mp0' from container '{SOURCE}' to '{TARGET}'",
        f'  Renamed "vm-{SOURCE}-disk-1" to "vm-{TARGET}-disk-1" in volume group "pve"',
        f"  Logical volume pve/vm-{TARGET}-disk-1 changed.",
        f"removing volume 'mp0' from container '{SOURCE}' config",
        f"target container '{TARGET}' updated with 'mp0'",
        "TASK OK",
    ]
    source, target = config(root, SOURCE), config(root, TARGET)
    assert "mp0" not in source and "lock" not in source and "lock" not in target
    assert target["mp0"] == f"local-lvm:vm-{TARGET}-disk-1,mp=/srv/data,backup=1,size=2G"
    assert source["digest"] != source_digest and target["digest"] != target_digest
    assert content(root)[f"local-lvm:vm-{TARGET}-disk-1"] == TARGET

    used = storage_used(server)
    finish(server, root, root.nodes(NODE).lxc(SOURCE).delete())
    volumes = content(root)
    assert volumes[f"local-lvm:vm-{TARGET}-disk-1"] == TARGET
    assert not [volid for volid in volumes if f"-{SOURCE}-" in volid]
    assert used - storage_used(server) == 0.25 * 8 * GIB  # only the source's rootfs data is freed

    used = storage_used(server)
    finish(server, root, root.nodes(NODE).lxc(TARGET).delete())
    assert not [volid for volid in content(root) if f"-{TARGET}-" in volid]
    # the target's rootfs data (25 % of 4 GiB) and the moved mount point's (a tenth of its 2 GiB)
    assert used - storage_used(server) == 0.25 * 4 * GIB + (2 * GIB) // 10


def test_reassign_by_a_token_is_the_token_s_task_and_defaults_the_target_key(server: SimTestServer) -> None:
    """target-volume defaults to the source key; the task belongs to the caller (here an API token)."""
    api = server.proxmox(OPERATOR[0], token=OPERATOR[1])
    upid = reassign(api, volume="mp0", **{"target-vmid": TARGET})
    assert upid.endswith(f":move_volume:{SOURCE}-mp0>{TARGET}-mp0:ctoperator@pve!operator:")
    assert finish(server, api, upid)["exitstatus"] == "OK"
    assert config(api, TARGET)["mp0"].startswith(f"local-lvm:vm-{TARGET}-disk-1,")


def test_reassign_to_an_unused_key_writes_the_bare_volume_id(server: SimTestServer, root: Any) -> None:
    """$volume_reassignfn: an unusedN target key gets just the new volid (no mount point options)."""
    upid = reassign(root, volume="mp0", **{"target-vmid": TARGET, "target-volume": "unused3"})
    assert Tasks.decode_upid(upid)["id"] == f"{SOURCE}-mp0>{TARGET}-unused3"
    assert finish(server, root, upid)["exitstatus"] == "OK"
    assert config(root, TARGET)["unused3"] == f"local-lvm:vm-{TARGET}-disk-1"
    assert "mp0" not in config(root, TARGET)


def test_reassign_within_one_ct_renames_to_its_next_free_disk(server: SimTestServer, root: Any) -> None:
    """target-vmid = vmid: one config serves as source and target; rename_volume still picks the
    lowest free disk number (the volume's own name still takes its number), and lvchange has no
    tag to move."""
    upid = reassign(root, volume="mp0", **{"target-vmid": SOURCE, "target-volume": "mp7"})
    assert finish(server, root, upid)["exitstatus"] == "OK"
    assert task_log(root, upid)[1:3] == [
        f'  Renamed "vm-{SOURCE}-disk-1" to "vm-{SOURCE}-disk-2" in volume group "pve"',
        f"removing volume 'mp0' from container '{SOURCE}' config",
    ]
    moved = config(root, SOURCE)
    assert "mp0" not in moved
    assert moved["mp7"] == f"local-lvm:vm-{SOURCE}-disk-2,mp=/srv/data,backup=1,size=2G"


@pytest.mark.parametrize(
    ("spec", "before", "after"),
    [
        ("vzdir:1,mp=/d", f"vzdir:{SOURCE}/vm-{SOURCE}-disk-0.raw", f"vzdir:{TARGET}/vm-{TARGET}-disk-0.raw"),
        ("tank:1,mp=/z", f"tank:subvol-{SOURCE}-disk-0", f"tank:subvol-{TARGET}-disk-0"),
        ("thick:1,mp=/t", f"thick:vm-{SOURCE}-disk-0", f"thick:vm-{TARGET}-disk-0"),
    ],
    ids=["dir", "zfspool", "lvm"],
)
def test_reassign_names_the_volume_as_the_storage_plugin_does(
    server: SimTestServer, root: Any, spec: str, before: str, after: str
) -> None:
    """The plugins' rename_volume: Plugin.pm '<vmid>/vm-<vmid>-disk-N.raw', ZFSPoolPlugin.pm
    'subvol-<vmid>-disk-N', LVMPlugin.pm 'vm-<vmid>-disk-N' -- the lowest number free for the
    target on that storage."""
    root.nodes(NODE).lxc(SOURCE).config.put(mp1=spec)
    assert config(root, SOURCE)["mp1"].startswith(f"{before},")
    upid = reassign(root, volume="mp1", **{"target-vmid": TARGET})
    assert finish(server, root, upid)["exitstatus"] == "OK"
    assert config(root, TARGET)["mp1"] == f"{after},mp={spec.split('mp=')[1]},size=1G"
    assert after in content(root, after.split(":")[0])


def test_reassign_of_a_linked_clone_on_zfs_keeps_naming_its_base(server: SimTestServer, root: Any) -> None:
    """ZFSPoolPlugin.pm rename_volume returns '<base>/<new name>' for a linked clone: the renamed
    volume is still a clone of the template's base volume, now owned by the target."""
    root.nodes(NODE).lxc(SOURCE).config.put(mp1="tank:1,mp=/z")
    assert root.nodes(NODE).lxc(SOURCE).template.post() is None  # a vztemplate task, no UPID
    server.cluster.advance_clock(10)
    finish(server, root, root.nodes(NODE).lxc(SOURCE).clone.post(newid=3130))
    assert config(root, 3130)["mp1"] == f"tank:basevol-{SOURCE}-disk-0/subvol-3130-disk-0,mp=/z,size=1G"

    finish(server, root, reassign(root, 3130, volume="mp1", **{"target-vmid": TARGET}))
    moved = f"tank:basevol-{SOURCE}-disk-0/subvol-{TARGET}-disk-0"
    assert config(root, TARGET)["mp1"] == f"{moved},mp=/z,size=1G"
    finish(server, root, root.nodes(NODE).lxc(3130).delete())
    assert server.cluster.state.linked_clones == {moved: f"tank:basevol-{SOURCE}-disk-0"}


def test_reassign_to_a_running_target_hotplugs_the_mount_point(server: SimTestServer, root: Any) -> None:
    """update_pct_config on a running target: vmconfig_hotplug_pending hot-plugs a mount point the
    config does not have yet (apply_pending_mountpoint with $running), so it lands in the current
    config at once -- nothing is left pending."""
    upid = reassign(root, volume="mp0", **{"target-vmid": RUNNING})
    assert finish(server, root, upid)["exitstatus"] == "OK"
    expected = f"local-lvm:vm-{RUNNING}-disk-1,mp=/srv/data,backup=1,size=2G"
    assert root.nodes(NODE).lxc(RUNNING).config.get(current=1)["mp0"] == expected
    assert server.cluster.state.containers[RUNNING].pending == {}
    assert root.nodes(NODE).lxc(RUNNING).status.current.get()["status"] == "running"


def test_reassign_of_an_unused_volume_of_a_running_ct(server: SimTestServer, root: Any) -> None:
    """An unusedN volume is not in use, so a running source may give it away (only a configured
    mount point needs the source stopped). The unused volume comes from a move to another storage,
    which keeps the original as unused0."""
    finish(server, root, reassign(root, volume="mp0", storage="vzdir"))
    assert config(root, SOURCE)["unused0"] == f"local-lvm:vm-{SOURCE}-disk-1"
    finish(server, root, root.nodes(NODE).lxc(SOURCE).status.start.post())

    upid = reassign(root, volume="unused0", **{"target-vmid": TARGET, "target-volume": "unused1"})
    assert finish(server, root, upid)["exitstatus"] == "OK"
    assert "unused0" not in config(root, SOURCE)
    assert config(root, TARGET)["unused1"] == f"local-lvm:vm-{TARGET}-disk-1"


@pytest.mark.parametrize(
    ("vmid", "params", "message"),
    [
        (SOURCE, {"volume": "rootfs", "target-vmid": TARGET}, "Cannot move to/from 'rootfs'"),
        (SOURCE, {"volume": "mp0", "target-vmid": TARGET, "target-volume": "rootfs"}, "Cannot move to/from 'rootfs'"),
        (
            SOURCE,
            {"volume": "unused0", "target-vmid": TARGET, "target-volume": "mp0"},
            "Moving an unused volume to a used one is not possible",
        ),
        (SOURCE, {"volume": "mp0", "target-vmid": 999}, "could not find CT 999"),
        (
            SOURCE,
            {"volume": "mp0", "target-vmid": REMOTE},
            "Both containers need to be on the same node (srv-px1 != srv-px2)",
        ),
        (LOCKED, {"volume": "mp0", "target-vmid": TARGET}, "CT is locked (backup)"),
        (SOURCE, {"volume": "mp0", "target-vmid": LOCKED}, "CT is locked (backup)"),
        (SOURCE, {"volume": "mp0", "target-vmid": TEMPLATE}, "Can't move volumes from or to template CT"),
        (SOURCE, {"volume": "mp0", "target-vmid": TARGET, "digest": "0" * 40}, f"Container {SOURCE}: {MODIFIED}"),
        (
            SOURCE,
            {"volume": "mp0", "target-vmid": TARGET, "target-digest": "1" * 40},
            f"Container {TARGET}: {MODIFIED}",
        ),
        (SOURCE, {"volume": "mp5", "target-vmid": TARGET}, f"volume 'mp5' for container '{SOURCE}' does not exist"),
        (
            SOURCE,
            {"volume": "mp0", "target-vmid": SOURCE},
            f"Target volume key 'mp0' is already in use for container '{SOURCE}'",
        ),
        (
            SOURCE,
            {"volume": "mp0", "target-vmid": TARGET, "storage": "vzdir"},
            "either set storage or target-vmid, but not both",
        ),
    ],
    ids=[
        "rootfs",
        "to-rootfs",
        "unused-to-used",
        "unknown-target",
        "other-node",
        "source-locked",
        "target-locked",
        "template",
        "digest",
        "target-digest",
        "missing-key",
        "key-in-use",
        "storage-and-target",
    ],
)
def test_reassign_refusals_fail_the_request_before_any_task(
    server: SimTestServer, root: Any, vmid: int, params: dict[str, Any], message: str
) -> None:
    """$load_and_check_reassign_configs runs before fork_worker; its die is the request's 500 (and
    nothing changes). Both 'storage' and 'target-vmid' die even before that."""
    before = {ct: config(root, ct) for ct in (SOURCE, TARGET)}
    error = refused(lambda: reassign(root, vmid, **params))
    assert (error.status_code, error.content) == (500, message)
    assert {ct: config(root, ct) for ct in (SOURCE, TARGET)} == before
    assert not root.nodes(NODE).tasks.get(typefilter="move_volume", source="all")


def test_reassign_refuses_a_running_source_and_a_key_in_use_by_the_target(server: SimTestServer, root: Any) -> None:
    """The last check: "Cannot move in-use volume while the source CT is running - detach or shutdown
    first"; "Target volume key ... is already in use" looks at the target's config."""
    root.nodes(NODE).lxc(RUNNING).config.put(mp0="local-lvm:1,mp=/live")  # hot-plugged
    running = refused(lambda: reassign(root, RUNNING, volume="mp0", **{"target-vmid": TARGET}))
    assert (running.status_code, running.content) == (
        500,
        "Cannot move in-use volume while the source CT is running - detach or shutdown first",
    )
    in_use = refused(lambda: reassign(root, volume="mp0", **{"target-vmid": RUNNING}))
    assert in_use.content == f"Target volume key 'mp0' is already in use for container '{RUNNING}'"


def test_reassign_refuses_a_bind_mount_as_storage_without_the_rename_feature(root: Any) -> None:
    """volume_has_feature('rename') of a path is undef (Storage.pm: no storage), so a bind mount
    fails with "Storage does not support moving ..." -- before the bind mount check is reached."""
    root.nodes(NODE).lxc(SOURCE).config.put(mp1="/srv/shared,mp=/shared")
    error = refused(lambda: reassign(root, volume="mp1", **{"target-vmid": TARGET}))
    assert (error.status_code, error.content) == (
        500,
        "Storage does not support moving of this disk to another container",
    )


def test_reassign_looks_up_the_configs_on_the_node_in_the_url(root: Any) -> None:
    """Both CTs are on srv-px1 (vmlist), but the call runs on srv-px2, whose load_config finds no file."""
    error = refused(lambda: reassign(root, SOURCE, "srv-px2", volume="mp0", **{"target-vmid": TARGET}))
    assert (error.status_code, error.content) == (
        500,
        f"Configuration file 'nodes/srv-px2/lxc/{SOURCE}.conf' does not exist",
    )


def test_storage_and_target_vmid_missing_is_a_parameter_error(root: Any) -> None:
    """raise_param_exc on both parameters when neither is given."""
    error = refused(lambda: reassign(root, volume="mp0"))
    message = "both 'storage' and 'target-vmid' missing, either needs to be set"
    assert error.status_code == 400
    assert error.errors == {"target-vmid": message, "storage": message}


@pytest.mark.parametrize(
    ("params", "bad"),
    [
        ({"volume": "mp256", "target-vmid": TARGET}, "volume"),
        ({"volume": "mp0", "target-vmid": TARGET, "target-volume": "net0"}, "target-volume"),
        ({"volume": "mp0", "target-vmid": 99}, "target-vmid"),
        ({"volume": "mp0", "target-vmid": TARGET, "digest": "x" * 41}, "digest"),
        ({"volume": "mp0", "target-vmid": TARGET, "bwlimit": -1}, "bwlimit"),
        ({"volume": "mp0", "target-vmid": TARGET, "force": 1}, "force"),
    ],
    ids=["volume-enum", "target-volume-enum", "vmid-range", "digest-length", "bwlimit-minimum", "unknown"],
)
def test_parameters_are_validated_against_pves_schema(root: Any, params: dict[str, Any], bad: str) -> None:
    """The schema of move_volume (additionalProperties 0; volume keys rootfs, mp0..mp255,
    unused0..unused255): a violation is a 400 naming the parameter."""
    error = refused(lambda: reassign(root, **params))
    assert error.status_code == 400
    assert set(error.errors) == {bad}


def test_reassign_refuses_a_protected_target_inside_the_task(server: SimTestServer, root: Any) -> None:
    """update_pct_config checks protection only in the worker, after the source config was written:
    the task fails and the renamed volume belongs to no config any more (PVE leaves it on the
    storage; the simulator lists only volumes a config references)."""
    root.nodes(NODE).lxc(TARGET).config.put(protection=1)
    upid = reassign(root, volume="mp0", **{"target-vmid": TARGET})
    status = finish(server, root, upid)
    assert status["exitstatus"] == f"can't update CT {TARGET} drive 'mp0' - protection mode enabled"
    assert "mp0" not in config(root, SOURCE) and "mp0" not in config(root, TARGET)


def test_reassign_task_waits_for_the_config_flock_and_checks_again(server: SimTestServer, root: Any) -> None:
    """The worker takes lock_config of both CTs and runs the checks again: a CT started meanwhile
    fails the task (the check before fork_worker had passed)."""
    start = root.nodes(NODE).lxc(SOURCE).status.start.post()  # holds the source's flock for 2 s
    upid = reassign(root, volume="mp0", **{"target-vmid": TARGET})
    status = finish(server, root, upid)
    assert status["exitstatus"] == "Cannot move in-use volume while the source CT is running - detach or shutdown first"
    assert task_status(root, start)["exitstatus"] == "OK"
    assert config(root, SOURCE)["mp0"] == MP0


@pytest.mark.parametrize(
    ("userid", "source", "target", "message"),
    [
        ("mover@pve", RUNNING, SOURCE, f"Permission check failed (/vms/{RUNNING}, VM.Config.Disk)"),
        ("mover@pve", SOURCE, TARGET, f"Permission check failed (/vms/{TARGET}, VM.Config.Disk)"),
        ("nospace@pve", SOURCE, TARGET, "Permission check failed (/storage/local-lvm, Datastore.AllocateSpace)"),
    ],
    ids=["no-VM.Config.Disk-on-source", "no-VM.Config.Disk-on-target", "no-Datastore.AllocateSpace"],
)
def test_reassign_permissions_name_the_missing_privilege(
    server: SimTestServer, root: Any, userid: str, source: int, target: int, message: str
) -> None:
    """Declared: VM.Config.Disk on /vms/{vmid}; then, for a non-root caller, check_vm_perm
    VM.Config.Disk on the target; after the checks Datastore.AllocateSpace on the volume's storage."""
    error = refused(lambda: reassign(server.proxmox(userid), source, volume="mp0", **{"target-vmid": target}))
    assert (error.status_code, error.content) == (403, message)
    assert config(root, SOURCE)["mp0"] == MP0


def test_reassign_within_the_source_needs_no_privilege_on_another_ct(server: SimTestServer) -> None:
    """mover@pve holds VM.Config.Disk on the source only (and Datastore.AllocateSpace): moving a
    volume to another key of the same CT is allowed, and the task is the caller's."""
    api = server.proxmox("mover@pve")
    upid = reassign(api, volume="mp0", **{"target-vmid": SOURCE, "target-volume": "mp1"})
    assert finish(server, api, upid)["exitstatus"] == "OK"
    assert Tasks.decode_upid(upid)["user"] == "mover@pve"
    assert config(api, SOURCE)["mp1"] == f"local-lvm:vm-{SOURCE}-disk-2,mp=/srv/data,backup=1,size=2G"


# ================================================================================= to another storage


def test_move_to_storage_copies_keeps_the_original_as_unused_and_locks_meanwhile(
    server: SimTestServer, root: Any
) -> None:
    """$move_to_storage_checks set_lock 'disk'; fork_worker('move_volume', $vmid); copy_volume
    allocates vm-<vmid>-disk-N on the storage (alloc_disk: raw on a dir storage) and copies the 2 GiB
    at cloneMiBPerSecond (400: 5.12 s); the key names the copy, add_unused_volume keeps the
    original; remove_lock."""
    upid = reassign(root, volume="mp0", storage="vzdir")
    decoded = Tasks.decode_upid(upid)
    assert (decoded["type"], decoded["id"]) == ("move_volume", str(SOURCE))
    assert config(root, SOURCE)["lock"] == "disk"
    server.cluster.advance_clock(5.0)
    assert task_status(root, upid)["status"] == "running"
    server.cluster.advance_clock(0.2)
    assert task_status(root, upid)["exitstatus"] == "OK"

    moved = config(root, SOURCE)
    assert moved["mp0"] == f"vzdir:{SOURCE}/vm-{SOURCE}-disk-0.raw,mp=/srv/data,backup=1,size=2G"
    assert moved["unused0"] == f"local-lvm:vm-{SOURCE}-disk-1"
    assert "lock" not in moved
    assert task_log(root, upid)[0] == (
        f"Formatting '/var/lib/vz/images/{SOURCE}/vm-{SOURCE}-disk-0.raw', fmt=raw size=2147483648 preallocation=off"
    )


def test_move_to_storage_with_delete_frees_the_original(server: SimTestServer, root: Any) -> None:
    """delete=1: vdisk_free of the original (lvremove) instead of an unusedN entry; rootfs may move."""
    upid = reassign(root, volume="rootfs", storage="thick", delete=1)
    assert finish(server, root, upid)["exitstatus"] == "OK"
    moved = config(root, SOURCE)
    assert moved["rootfs"] == f"thick:vm-{SOURCE}-disk-0,size=8G"
    assert not [key for key in moved if key.startswith("unused")]
    assert f'  Logical volume "vm-{SOURCE}-disk-0" successfully removed.' in task_log(root, upid)
    assert f"local-lvm:vm-{SOURCE}-disk-0" not in content(root)


@pytest.mark.parametrize(
    ("vmid", "params", "message"),
    [
        (RUNNING, {"volume": "rootfs"}, "cannot move volumes of a running container"),
        (
            SOURCE,
            {"volume": "unused0"},
            "cannot move volume 'unused0', only configured volumes can be moved to another storage",
        ),
        (LOCKED, {"volume": "rootfs"}, "CT is locked (backup)"),
        (SOURCE, {"volume": "mp0", "digest": "0" * 40}, MODIFIED),
    ],
    ids=["running", "unused", "locked", "digest"],
)
def test_move_to_storage_refusals(root: Any, vmid: int, params: dict[str, Any], message: str) -> None:
    """$move_to_storage_checks (under lock_config, before fork_worker)."""
    before = config(root, vmid)
    error = refused(lambda: reassign(root, vmid, storage="vzdir", **params))
    assert (error.status_code, error.content) == (500, message)
    assert config(root, vmid) == before


def test_move_to_storage_of_a_template_makes_a_base_volume(server: SimTestServer, root: Any) -> None:
    """$storage_realcmd: a template's copy goes through vdisk_create_base (ZFSPoolPlugin.pm
    create_base: subvol- -> basevol-); the original base volume is kept as unused0."""
    upid = reassign(root, TEMPLATE, volume="rootfs", storage="tank")
    assert finish(server, root, upid)["exitstatus"] == "OK"
    moved = config(root, TEMPLATE)
    assert (moved["rootfs"], moved["unused0"]) == (
        f"tank:basevol-{TEMPLATE}-disk-0,size=4G",
        f"local-lvm:base-{TEMPLATE}-disk-0",
    )
    assert moved["template"] == 1 and "lock" not in moved


def test_move_to_storage_of_a_bind_mount_fails_the_task(server: SimTestServer, root: Any) -> None:
    """The worker's activate_volumes parses the volume ID, which a path is not."""
    root.nodes(NODE).lxc(SOURCE).config.put(mp1="/srv/shared,mp=/shared")
    status = finish(server, root, reassign(root, volume="mp1", storage="vzdir"))
    assert status["exitstatus"] == "unable to parse volume ID '/srv/shared'"
    after = config(root, SOURCE)
    assert after["mp1"] == "/srv/shared,mp=/shared" and "lock" not in after


def test_move_to_storage_needs_allocate_space_on_the_target_storage(server: SimTestServer) -> None:
    """$rpcenv->check(/storage/$storage, Datastore.AllocateSpace) comes first."""
    error = refused(lambda: reassign(server.proxmox("nospace@pve"), volume="mp0", storage="vzdir"))
    assert (error.status_code, error.content) == (
        403,
        "Permission check failed (/storage/vzdir, Datastore.AllocateSpace)",
    )


def test_failed_move_to_storage_frees_the_copy_and_unlocks(server: SimTestServer, root: Any) -> None:
    """$storage_realcmd on error: vdisk_free the new volume, remove_lock, die."""
    server.cluster.fail_tasks("move_volume", "rsync: write failed (No space left on device)")
    upid = reassign(root, volume="mp0", storage="thick")
    status = finish(server, root, upid)
    assert status["exitstatus"] == "rsync: write failed (No space left on device)"
    assert task_log(root, upid)[-2] == f'  Logical volume "vm-{SOURCE}-disk-0" successfully removed.'
    after = config(root, SOURCE)
    assert after["mp0"] == MP0 and "lock" not in after and "unused0" not in after

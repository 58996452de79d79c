"""Moving a CT volume (pve-container ``src/PVE/API2/LXC.pm`` ``move_volume``, ``src/PVE/LXC.pm``
``copy_volume`` and ``alloc_disk``, ``src/PVE/LXC/Config.pm`` ``update_pct_config``; pve-storage
``src/PVE/Storage.pm`` ``rename_volume``, ``volume_has_feature`` and the plugins' ``rename_volume``).

``POST …/move_volume`` has two modes; setting both ``storage`` and ``target-vmid`` dies first
(``either set storage or target-vmid, but not both``, 500), setting neither is a 400 on both.

**Reassign** (``target-vmid``): everything ``$load_and_check_reassign_configs`` checks fails the
request (without a config lock), in PVE's order -- rootfs, unused to used, both CTs in the vmlist,
the same node, both configs loaded on the node in the URL and unlocked, no template, ``digest`` and
``target-digest`` (``Container <vmid>: detected modified configuration …``), the key set in the
source and free in the target, the volume's storage has the ``rename`` feature (a bind or device
mount point has no storage, so it fails here too: PVE's later "Cannot move a bindmount …" check is
never reached), and the source stopped unless the key is ``unusedN``. Before that a non-root caller
needs ``VM.Config.Disk`` on the target CT, after it ``Datastore.AllocateSpace`` on the volume's
storage. The ``move_volume`` task (ID ``<vmid>-<key>><target>-<target key>``) takes both config
flocks (PVE's ``lock_config``, no ``lock:`` in the configs), checks everything again, renames the
volume to the target's next free disk name (the rename takes :data:`RENAME_SECONDS`; LVM prints
``lvrename``/``lvchange``), removes the key from the source and writes the target's key:
``unusedN`` gets the bare volume ID, ``mpN`` the source's mount point options with the new volume,
applied like ``update_pct_config`` applies it -- on a stopped target at once, on a running one
hot-plugged (a new mount point always is, so it never ends up in ``pending``). A target with
``protection`` fails the task after the source config was written, as in PVE: the renamed volume
then belongs to no config (the simulator lists only volumes a config references, so it is gone).
Snapshots and replication jobs, which the simulator has none of, are not checked.

**Storage** (``storage``): ``Datastore.AllocateSpace`` on the target storage, then under
``lock_config`` the CT must be unlocked and stopped, the key a configured volume (not ``unusedN``)
and ``digest`` current; the CT is locked ``disk`` until the ``move_volume`` task (ID ``<vmid>``)
ends. ``copy_volume`` allocates ``vm-<vmid>-disk-<N>`` on the storage (``alloc_disk``: it needs
``rootdir`` content, except on ZFS) and copies the volume at ``cloneMiBPerSecond`` (``bwlimit``
caps it); a template's copy becomes a base volume (not on thick LVM). The key then names the copy,
and the original becomes the first free ``unusedN`` -- or is freed with ``delete=1``. A bind or
device mount point fails the task (``activate_volumes``: ``unable to parse volume ID``). A failing
task frees the copy; while it runs, the copy belongs to no config yet, so the simulator neither
lists it nor keeps another allocation from picking its name.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pve_sim.api_schema import parse_property_string
from pve_sim.errors import ParameterError, PveApiError, internal
from pve_sim.formats import FormatError
from pve_sim.handlers.clone import _storage_type_log
from pve_sim.handlers.lxc import CT, VM_PATH, _apply_pending, _hotplug_pending, _log_allocation, _log_free
from pve_sim.handlers.registry import Perm, route
from pve_sim.state import MIB, ContainerState, StorageState, option_family, parse_disk_size, print_property_string
from pve_sim.tasks import Task, TaskError, Worker

if TYPE_CHECKING:
    from pve_sim.cluster import Request, SimCluster

RENAME_SECONDS = 1.0
"""How long a reassign task's ``rename_volume`` takes (an ``lvrename``, ``zfs rename``, ``rbd
rename`` or a file rename: a matter of a second). Not a scenario timing."""

MAX_UNUSED_DISKS = 256
"""pve-container ``$MAX_UNUSED_DISKS`` (``unused0`` .. ``unused255``)."""

_FORMATS = {"rootfs": "lxc-rootfs", "mp": "lxc-mp", "unused": "lxc-unused"}
_VOLUME_ID_RE = re.compile(r"^([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)$", re.IGNORECASE)
"""pve-storage ``PVE::Storage::Plugin::parse_volume_id``."""
_MODIFIED = "detected modified configuration - file changed by other user? Try again."
"""pve-common ``PVE::Tools::assert_if_modified``."""


def _is_unused(key: str) -> bool:
    return option_family(key) == "unused"


def _parse_volume(key: str, value: str) -> dict[str, str]:
    """``PVE::LXC::Config->parse_volume``: the property string as strings (an absent key parses as
    ``''``, which dies ``format error`` with the missing properties, 500)."""
    try:
        parsed = parse_property_string(_FORMATS[option_family(key)], value)
    except FormatError as err:
        raise PveApiError(500, err.message.rstrip("\n"), err.errors) from None
    return {name: str(item) for name, item in parsed.items()}


def _storage_of(volid: str) -> tuple[str, str] | None:
    """``parse_volume_id($volid, 1)``: (storage, volname), or None (a bind or device mount's path)."""
    match = _VOLUME_ID_RE.match(volid)
    return (match.group(1), match.group(2)) if match else None


def _modified(digest: str | None, current: str) -> bool:
    """``PVE::Tools::assert_if_modified``: only a true (Perl) digest is compared."""
    return digest not in (None, "", "0") and digest != current


# ================================================================================= the endpoint


@route("POST", f"{CT}/move_volume", perm=Perm(VM_PATH, ("VM.Config.Disk",)), proxy=True)
def move_volume(cluster: SimCluster, req: Request) -> object:
    """``move_volume``: dispatch on ``target-vmid`` / ``storage``; returns the task's UPID."""
    target_vmid = req.opt_integer("target-vmid")
    storage_id = req.opt_text("storage")
    if storage_id and target_vmid:
        raise internal("either set storage or target-vmid, but not both")
    if target_vmid:
        return _reassign(cluster, req, target_vmid)
    if storage_id:
        return _move_to_storage(cluster, req, storage_id)
    message = "both 'storage' and 'target-vmid' missing, either needs to be set"
    raise ParameterError({"target-vmid": message, "storage": message})


# ================================================================================= reassign


def _reassign(cluster: SimCluster, req: Request, target_vmid: int) -> str:
    state = cluster.state
    node, vmid, authid = req.node, req.vmid, req.authid
    key = req.text("volume")
    target_key = req.opt_text("target-volume") or key
    digest = req.opt_text("digest")
    target_digest = req.opt_text("target-digest")

    def load_and_check() -> tuple[ContainerState, ContainerState, dict[str, str], str]:
        """``$load_and_check_reassign_configs``: (source, target, the parsed volume, its storage)."""
        if key == "rootfs" or target_key == "rootfs":
            raise internal("Cannot move to/from 'rootfs'")
        if _is_unused(key) and not _is_unused(target_key):
            raise internal("Moving an unused volume to a used one is not possible")
        for wanted in (vmid, target_vmid):
            if wanted not in state.containers:
                raise internal(f"could not find CT {wanted}")
        source_node = state.containers[vmid].node
        target_node = state.containers[target_vmid].node
        if source_node != target_node:
            raise internal(f"Both containers need to be on the same node ({source_node} != {target_node})")
        source = state.load_config(vmid, node)
        state.check_lock(source)
        if target_vmid == vmid:
            target = source
        else:
            target = state.load_config(target_vmid, node)
            state.check_lock(target)
        if source.is_template or target.is_template:
            raise internal("Can't move volumes from or to template CT")
        if _modified(digest, source.digest()):
            raise internal(f"Container {vmid}: {_MODIFIED}")
        if _modified(target_digest, target.digest()):
            raise internal(f"Container {target_vmid}: {_MODIFIED}")
        if key not in source.config:
            raise internal(f"volume '{key}' for container '{vmid}' does not exist")
        if target_key in target.config:
            raise internal(f"Target volume key '{target_key}' is already in use for container '{target_vmid}'")
        drive = _parse_volume(key, str(source.config[key]))
        volid = drive.get("volume", "")
        if not volid:
            raise internal(f"Volume '{key}' has no associated image")
        located = _storage_of(volid)
        if located is None or not state.storage_config(located[0]).has_rename_feature(located[1]):
            raise internal("Storage does not support moving of this disk to another container")
        if state.running_on(vmid, node) and not _is_unused(key):
            raise internal("Cannot move in-use volume while the source CT is running - detach or shutdown first")
        return source, target, drive, located[0]

    if authid != "root@pam":
        cluster.access.check_vm_perm(authid, target_vmid, None, ["VM.Config.Disk"])
    _, _, _, sid = load_and_check()
    cluster.access.check(authid, f"/storage/{sid}", ["Datastore.AllocateSpace"])

    def body(task: Task) -> Worker:
        yield from cluster.flock(task, vmid)
        try:
            yield from cluster.flock(task, target_vmid)
            try:
                source, target, drive, _sid = load_and_check()
                cluster.injected_failure(task)
                task.log(f"moving volume '{key}' from container '{vmid}' to '{target_vmid}'")
                yield RENAME_SECONDS
                old_volid = drive["volume"]
                new_volid = state.rename_volume(old_volid, target_vmid, node)
                _log_rename(task, state.storage_config(_sid), old_volid, new_volid, vmid != target_vmid)
                del source.config[key]
                task.log(f"removing volume '{key}' from container '{vmid}' config")
                cluster.record(source)
                if _is_unused(target_key):
                    target.config[target_key] = new_volid
                else:
                    drive["volume"] = new_volid
                    _update_pct_config(cluster, target, target_key, print_property_string(drive, "mp"))
                cluster.record(target)
                task.log(f"target container '{target_vmid}' updated with '{target_key}'")
            finally:
                cluster.funlock(task, target_vmid)
        finally:
            cluster.funlock(task, vmid)

    task_id = f"{vmid}-{key}>{target_vmid}-{target_key}"
    return cluster.start_task(node, "move_volume", task_id, authid, body).upid


def _log_rename(task: Task, storage: StorageState, old_volid: str, new_volid: str, new_owner: bool) -> None:
    """What ``rename_volume`` prints: ``lvrename``, then ``lvchange`` moving the ``pve-vm-<vmid>``
    tag when the owner changes (``LVMPlugin.pm``); the other plugins rename silently."""
    if storage.type not in ("lvm", "lvmthin"):
        return
    old_name, new_name = old_volid.split(":", 1)[1], new_volid.split(":", 1)[1]
    task.log(f'  Renamed "{old_name}" to "{new_name}" in volume group "pve"')
    if new_owner:
        task.log(f"  Logical volume pve/{new_name} changed.")


def _update_pct_config(cluster: SimCluster, ct: ContainerState, key: str, value: str) -> None:
    """``update_pct_config($vmid, $conf, $running, {$key => $value})`` for a mount point: protection
    and the storage's content type are checked, the value goes to ``pending`` and is then applied --
    ``vmconfig_hotplug_pending`` for a running CT (a mount point the config does not have yet is
    hot-plugged), else ``vmconfig_apply_pending``."""
    if ct.config.get("protection"):
        raise TaskError(f"can't update CT {ct.vmid} drive '{key}' - protection mode enabled")
    volid = _parse_volume(key, value)["volume"]
    located = _storage_of(volid)
    if located is not None and "rootdir" not in cluster.state.storage_config(located[0]).content:
        raise TaskError(f"storage '{located[0]}' does not allow content type 'rootdir' (Container)")
    ct.pending[key] = value
    if key in ct.pending_delete:
        ct.pending_delete.remove(key)
    if ct.running:
        _hotplug_pending(cluster, ct, {key})
    else:
        _apply_pending(cluster, ct, {key})


# ================================================================================= to another storage


def _move_to_storage(cluster: SimCluster, req: Request, storage_id: str) -> str:
    state = cluster.state
    node, vmid, authid = req.node, req.vmid, req.authid
    key = req.text("volume")
    digest = req.opt_text("digest")
    delete = req.flag("delete")
    bwlimit = req.get("bwlimit")

    cluster.access.check(authid, f"/storage/{storage_id}", ["Datastore.AllocateSpace"])
    # $move_to_storage_checks, under lock_config.
    cluster.sync_flock(vmid, node)
    ct = state.load_config(vmid, node)
    state.check_lock(ct)
    if state.running_on(vmid, node):
        raise internal("cannot move volumes of a running container")
    if _is_unused(key):
        raise internal(f"cannot move volume '{key}', only configured volumes can be moved to another storage")
    drive = _parse_volume(key, str(ct.config.get(key, "")))
    old_volid = drive["volume"]
    if _modified(digest, ct.digest()):
        raise internal(_MODIFIED)
    ct.config["lock"] = "disk"
    cluster.record(ct)

    def body(task: Task) -> Worker:
        new_volid: str | None = None
        target: StorageState | None = None
        try:
            current = state.load_config(vmid, node)
            loaded_digest = current.digest()
            if _storage_of(old_volid) is None:  # activate_volumes([$old_volid]): a bind/device mount
                raise TaskError(f"unable to parse volume ID '{old_volid}'")
            # copy_volume
            size = parse_disk_size(drive["size"]) if "size" in drive else 0
            target = state.storage_config(storage_id)  # alloc_disk
            if "rootdir" not in target.content and target.type != "zfspool":
                raise TaskError(f"content type 'rootdir' is not available or configured on storage '{storage_id}'")
            state.storage_check_enabled(storage_id, node)  # vdisk_alloc -> activate_storage
            new_volid = f"{storage_id}:{state.free_volume_name(target, vmid, node)}"
            _log_allocation(task, target, new_volid, size)
            cluster.injected_failure(task)
            rate = state.timing.clone_mib_per_second
            if bwlimit:
                rate = min(rate, float(str(bwlimit)) / 1024)  # KiB/s
            yield (size / MIB) / rate
            if current.is_template:
                if target.type == "lvm":
                    raise TaskError("can't create base images in lvm storage")
                volname = new_volid.split(":", 1)[1]
                base = target.base_volume_name(volname)
                _storage_type_log(task, target, volname.rpartition("/")[2], base.rpartition("/")[2])
                drive["volume"] = f"{storage_id}:{base}"
            else:
                drive["volume"] = new_volid
            new_volid = drive["volume"]
            current = state.load_config(vmid, node)
            if current.digest() != loaded_digest:
                raise TaskError(_MODIFIED)
            current.config[key] = print_property_string(drive, option_family(key))
            if not delete:
                _add_unused_volume(current, old_volid)
            cluster.record(current)
            new_volid = None  # the config has it now
            if delete:
                source_storage = state.storages.get(old_volid.split(":", 1)[0])
                if source_storage is not None:
                    _log_free(task, source_storage, old_volid)
                state.linked_clones.pop(old_volid, None)
        except (TaskError, PveApiError):
            if new_volid is not None and target is not None:
                _log_free(task, target, new_volid)
            raise
        finally:
            _remove_lock(cluster, vmid, node, "disk")

    return cluster.start_task(node, "move_volume", str(vmid), authid, body).upid


def _add_unused_volume(ct: ContainerState, volid: str) -> None:
    """``add_unused_volume``: the lowest free ``unusedN`` (none for a volume already listed)."""
    free: str | None = None
    for index in range(MAX_UNUSED_DISKS - 1, -1, -1):
        existing = ct.config.get(f"unused{index}")
        if existing:
            if existing == volid:
                return
        else:
            free = f"unused{index}"
    if free is None:
        raise TaskError("Too many unused volumes - please delete them first.")
    ct.config[free] = volid


def _remove_lock(cluster: SimCluster, vmid: int, node: str, lock: str) -> None:
    """``remove_lock($vmid, 'disk')`` (a failure is only warned about)."""
    ct = cluster.state.containers.get(vmid)
    if ct is not None and ct.node == node and ct.config.get("lock") == lock:
        del ct.config["lock"]
        cluster.record(ct)

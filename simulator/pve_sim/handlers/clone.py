"""CT templates and clones (pve-container ``src/PVE/API2/LXC.pm`` ``template`` and ``clone_vm``,
``src/PVE/LXC.pm`` ``template_create`` and ``copy_volume``; pve-storage ``src/PVE/Storage.pm``
``volume_has_feature``, ``vdisk_create_base``, ``vdisk_clone`` and the plugins' ``create_base`` /
``clone_image``).

``POST …/template`` turns a stopped CT into a template in a ``vztemplate`` task: each volume is
renamed to its base name (``vm-`` -> ``base-``, ZFS ``subvol-`` -> ``basevol-``) on storages with
the ``template`` feature, then ``template: 1`` is written. The API answers ``null`` (no UPID).

``POST …/clone`` copies a CT into ``newid``. Everything PVE checks before ``fork_worker`` fails the
request, in PVE's order: pool, target node, target storage, quorum, the source's config lock
(``set_lock($vmid, 'disk')``), ``newid`` free (``create_and_lock_config``), then per option:
``storage`` only with ``full``, snapshots (the simulator has none), each volume's storage
(``Datastore.AllocateSpace``, shared for ``target``), a full clone of a running CT only from a
snapshot, a linked clone only where ``volume_has_feature('clone')`` holds (a base volume on
lvmthin, zfspool, rbd or btrfs -- never a CT on a file storage), bind/device mount points refused,
NICs get new MAC addresses (and ``SDN.Use`` on their bridge). The new config, with ``lock: create``
and without ``template`` and the volumes, exists when the UPID is returned; the source is locked
``disk`` until the ``vzclone`` task (whose ID is the *source* VMID) ends. A linked clone takes
``cloneSeconds``; a full clone adds the volumes' size at ``cloneMiBPerSecond`` (``bwlimit`` caps it).
A failing task frees the new volumes, removes the new config and ends ``clone failed: <reason>``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pve_sim.errors import PveApiError, internal, permission_denied
from pve_sim.handlers.lxc import CT, VM_PATH, _log_allocation, _log_free, _parse, check_bridge_access
from pve_sim.handlers.registry import AllOf, AnyOf, Perm, route
from pve_sim.history import GIB
from pve_sim.state import (
    MIB,
    ConfigValue,
    ContainerState,
    StorageState,
    format_size,
    option_family,
    parse_disk_size,
    print_property_string,
)
from pve_sim.tasks import Task, TaskError, Worker

if TYPE_CHECKING:
    from pve_sim.cluster import Request, SimCluster

CLONE_PERM = AllOf(
    (
        Perm(VM_PATH, ("VM.Clone",)),
        AnyOf(
            (
                Perm("/vms/{newid}", ("VM.Allocate",)),
                Perm("/pool/{pool}", ("VM.Allocate",), require_param="pool"),
            )
        ),
    )
)
"""``clone_vm``'s declared check: ``VM.Clone`` on the source, ``VM.Allocate`` on the new VMID or on
the pool named by ``pool`` (a failing ``or`` is a bare ``Permission check failed``)."""

_SNAPSHOT_KEYS = ("snapshots", "parent", "snaptime", "snapstate")


def _volume_keys(config: dict[str, ConfigValue]) -> list[str]:
    """``foreach_volume``: rootfs, then mount points by number (unused volumes are not included)."""
    keys = [key for key in config if key == "rootfs" or option_family(key) == "mp"]
    return sorted(keys, key=lambda k: (k != "rootfs", int(k[2:]) if k.startswith("mp") else 0))


def _storage_type_log(task: Task, storage: StorageState, old_name: str, new_name: str) -> None:
    if storage.type == "lvmthin":
        task.log(f'  Renamed "{old_name}" to "{new_name}" in volume group "pve"')
        task.log(f"  Logical volume pve/{new_name} changed.")


# ================================================================================= template


@route("POST", f"{CT}/template", perm=Perm(VM_PATH, ("VM.Allocate",)), proxy=True)
def template(cluster: SimCluster, req: Request) -> object:
    """``template``: under ``lock_config``, the CT must exist, be unlocked, not be a template and
    not run; the ``vztemplate`` worker (which inherits the flock) checks every volume for the
    ``template`` feature (``Template feature is not available for '<volid>'``), renames them to
    their base names and writes ``template: 1``. Returns ``null``: the caller gets no UPID."""
    state = cluster.state
    node, vmid, authid = req.node, req.vmid, req.authid
    cluster.sync_flock(vmid, node)
    ct = state.load_config(vmid, node)
    state.check_lock(ct)
    if ct.is_template:
        raise internal("you can't convert a template to a template")
    if state.running_on(vmid, node):
        raise internal("you can't convert a CT to template if the CT is running")

    def body(task: Task) -> Worker:
        yield from cluster.flock(task, vmid)
        try:
            current = state.load_config(vmid, node)
            parsed_volumes: list[tuple[str, dict[str, str], StorageState]] = []
            for key in _volume_keys(current.config):
                parsed = {k: str(v) for k, v in _parse(key, str(current.config[key])).items()}
                volid = parsed.get("volume", "")
                sid, sep, _ = volid.partition(":")
                storage = state.storages.get(sid) if sep and not volid.startswith("/") else None
                if storage is None or not storage.has_template_feature():
                    raise TaskError(f"Template feature is not available for '{volid}'")
                parsed_volumes.append((key, parsed, storage))
            cluster.injected_failure(task)
            yield state.timing.template_seconds
            for key, parsed, storage in parsed_volumes:
                sid, volname = parsed["volume"].split(":", 1)
                base_name = storage.base_volume_name(volname)
                if base_name == volname:
                    raise TaskError("create_base not possible with base image")
                _storage_type_log(task, storage, volname.rpartition("/")[2], base_name.rpartition("/")[2])
                parsed["volume"] = f"{sid}:{base_name}"
                current.config[key] = print_property_string(parsed, option_family(key))
            current.config["template"] = 1
            cluster.record(current)
        finally:
            cluster.funlock(task, vmid)

    cluster.start_task(node, "vztemplate", str(vmid), authid, body)
    return None


# ================================================================================= clone


@route("POST", f"{CT}/clone", perm=CLONE_PERM, proxy=True)
def clone_vm(cluster: SimCluster, req: Request) -> object:
    """``clone_vm``: the synchronous checks in PVE's order, the new config, then ``vzclone``."""
    state = cluster.state
    access = cluster.access
    node, vmid, authid = req.node, req.vmid, req.authid
    newid = req.integer("newid")
    pool = req.opt_text("pool")
    if pool is not None and pool not in access.pools:
        raise permission_denied(f"pool '{pool}' does not exist")
    snapname = req.opt_text("snapname")
    storage_id = req.opt_text("storage")
    target = req.opt_text("target")
    if target in (node, "localhost"):
        target = None
    if target is not None and target not in state.nodes:
        raise internal(f"no such cluster node '{target}'")
    if storage_id is not None:
        state.storage_check_enabled(storage_id, node)
        if target is not None and not state.storage_check_enabled(storage_id, target).shared:
            raise internal(f"can't clone to non-shared storage '{storage_id}'")
    cluster.check_quorum()

    # set_lock($vmid, 'disk'): lock_config, load_config, check_lock.
    cluster.sync_flock(vmid, node)
    source = state.load_config(vmid, node)
    state.check_lock(source)
    # create_and_lock_config($newid, 0): check_vmid_unused (the source lock is removed again on error).
    state.check_vmid_unused(newid)

    # The rest runs in an eval that, on error, unlocks the source and removes the new config: here
    # everything is checked before anything changes, which leaves the same state behind.
    running = state.running_on(vmid, node)
    full_param = req.get("full")
    full = not source.is_template if full_param is None else bool(full_param)
    if storage_id is not None and not full:
        raise internal("parameter 'storage' not allowed for linked clones")
    if snapname:
        raise internal(f"snapshot '{snapname}' does not exist")

    newconf: dict[str, ConfigValue] = {}
    mountpoints: dict[str, dict[str, str]] = {}
    shared_vm = True
    for opt in sorted(source.config):
        family = option_family(opt)
        if family == "unused":
            continue
        value = source.config[opt]
        if opt == "rootfs" or family == "mp":
            parsed = {k: str(v) for k, v in _parse(opt, str(value)).items()}
            volid = parsed["volume"]
            if volid.startswith("/") or ":" not in volid:
                kind = "device" if volid.startswith("/dev/") else "bind"
                raise internal(f"unable to clone mountpoint '{opt}' (type {kind})")
            source_sid, volname = volid.split(":", 1)
            sid = storage_id if storage_id is not None else source_sid
            if not state.storage_config(sid).shared:
                shared_vm = False
            access.check(authid, f"/storage/{sid}", ["Datastore.AllocateSpace"])
            if full:
                if running:
                    raise internal("Full clone of a running container is only possible from a snapshot")
            elif not state.storage_config(source_sid).has_linked_clone_feature(volname):
                raise internal(f"Linked clone feature for '{volid}' is not available")
            mountpoints[opt] = parsed
        elif family == "net":
            # "always change MAC! address"
            parsed = {k: str(v) for k, v in _parse(opt, str(value)).items()}
            parsed["hwaddr"] = cluster.new_mac_address()
            newconf[opt] = print_property_string(parsed, "net")
            check_bridge_access(cluster, authid, str(newconf[opt]))
        else:
            newconf[opt] = value
    if target is not None and not shared_vm:
        raise internal(f"can't clone CT to node '{target}' (CT uses local storage)")
    newconf["lock"] = "create"
    for key in (*_SNAPSHOT_KEYS, "template"):
        newconf.pop(key, None)
    hostname = req.opt_text("hostname")
    if hostname:
        newconf["hostname"] = hostname
    description = req.opt_text("description")
    if description:
        newconf["description"] = description

    source.config["lock"] = "disk"
    cluster.record(source)
    new_ct = ContainerState(vmid=newid, node=node, config=newconf, created_epoch=cluster.now())
    tags = [tag for tag in str(newconf.get("tags", "")).split(";") if tag]
    cluster.register_container(
        new_ct, cluster.profiles_for_new_ct(str(newconf.get("hostname") or f"CT{newid}"), tags, node)
    )
    bwlimit = req.get("bwlimit")

    def body(task: Task) -> Worker:
        task.log(f"creating a clone of container {vmid} with ID {newid}")
        created: list[tuple[str, StorageState]] = []
        try:
            if state.running_on(vmid, node) != running:
                raise TaskError("unexpected state change")
            cluster.injected_failure(task)
            yield state.timing.clone_seconds / 2
            for opt in _volume_keys({key: "" for key in mountpoints}):
                mp = mountpoints[opt]
                volid = mp["volume"]
                source_sid, volname = volid.split(":", 1)
                if full:
                    task.log(f"create full clone of mountpoint {opt} ({volid})")
                    store = state.storage_config(storage_id if storage_id is not None else source_sid)
                    new_volid = f"{store.sid}:{_free_disk_name(store, newid, created)}"
                    size = parse_disk_size(mp["size"]) if "size" in mp else 4 * GIB
                    mp["size"] = format_size(size)
                    _log_allocation(task, store, new_volid, size)
                    created.append((new_volid, store))
                    rate = state.timing.clone_mib_per_second
                    if bwlimit:
                        rate = min(rate, float(str(bwlimit)) / 1024)  # KiB/s
                    yield (size / MIB) / rate
                else:
                    task.log(f"create linked clone of mount point {opt} ({volid})")
                    store = state.storage_config(source_sid)
                    free = _free_disk_name(store, newid, created)
                    new_volid = f"{store.sid}:{store.linked_clone_name(volname, free)}"
                    if store.type == "lvmthin":
                        task.log(f'  Logical volume "{free}" created.')
                    created.append((new_volid, store))
                    state.linked_clones[new_volid] = volid
                mp["volume"] = new_volid
                _update_new_config(cluster, new_ct, opt, print_property_string(mp, option_family(opt)))
            if pool:
                cluster.access.add_vm_to_pool(newid, pool)
            # mount_all + post_clone_hook (hostname, /etc/hosts, SSH host keys).
            yield state.timing.clone_seconds / 2
        except (TaskError, PveApiError) as err:
            _remove_lock(cluster, source, "disk")
            for new_volid, store in created:
                _log_free(task, store, new_volid)
                state.linked_clones.pop(new_volid, None)
            if state.containers.get(newid) is new_ct:
                cluster.unregister_container(newid)
            raise TaskError(f"clone failed: {err.message}") from None
        _remove_lock(cluster, source, "disk")
        if new_ct.config.get("lock") != "create":
            raise TaskError("Lost 'create' config lock, aborting.")
        del new_ct.config["lock"]
        if target is not None:
            new_ct.node = target  # move_config_to_node
        cluster.record(new_ct)

    return cluster.start_task(node, "vzclone", str(vmid), authid, body).upid


def _free_disk_name(store: StorageState, vmid: int, created: list[tuple[str, StorageState]]) -> str:
    """``find_free_diskname``: the first ``vm-<vmid>-disk-N`` style name not yet used on ``store``."""
    taken = {volid.split(":", 1)[1].rpartition("/")[2] for volid, other in created if other.sid == store.sid}
    index = 0
    while store.volume_name(vmid, index).rpartition("/")[2] in taken:
        index += 1
    return store.volume_name(vmid, index)


def _update_new_config(cluster: SimCluster, ct: ContainerState, key: str, value: str) -> None:
    """``$update_conf``: under ``$lock_and_reload``, which dies if the ``create`` lock is gone."""
    if cluster.state.containers.get(ct.vmid) is not ct or ct.config.get("lock") != "create":
        raise TaskError("Lost 'create' config lock, aborting.")
    ct.config[key] = value
    cluster.record(ct)


def _remove_lock(cluster: SimCluster, ct: ContainerState, lock: str) -> None:
    """``remove_lock($vmid, 'disk')`` on the source (its failure is only warned about)."""
    if cluster.state.containers.get(ct.vmid) is ct and ct.config.get("lock") == lock:
        del ct.config["lock"]
        cluster.record(ct)

"""LXC endpoints: list, create, destroy, config, status and power (pve-container ``API2/LXC.pm``,
``API2/LXC/Config.pm``, ``API2/LXC/Status.pm``).

Every handler follows PVE's order of checks: what PVE checks before ``fork_worker`` fails the
request (HTTP 4xx/5xx); what it checks inside the worker fails the task (``TASK ERROR: …``). Workers
are generators (see :mod:`pve_sim.tasks`) that hold the CT's config flock like ``lock_config`` does.
All lookups are on the node named in the URL, as on a real node: a CT on another node "does not
exist" there and is "not running" there.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from pve_sim.api_schema import parse_property_string
from pve_sim.errors import ParameterError, PveApiError, internal, permission_denied
from pve_sim.formats import FormatError, normalize_tags, split_list
from pve_sim.handlers.common import io_rates, vmstatus_entry
from pve_sim.handlers.guest_access import assert_ct_tag_permissions, check_ct_bridge_access
from pve_sim.handlers.registry import Perm, route
from pve_sim.history import GIB
from pve_sim.pressure import ct_pressure
from pve_sim.rrd import ct_rrd_keys, has_pve9_rrd, only_keys, rrd_rows, rrd_timeframes
from pve_sim.state import (
    ConfigValue,
    ContainerState,
    HaResource,
    StorageState,
    TemplateVolume,
    description_as_read,
    format_size,
    option_family,
    print_property_string,
    stored_value,
)
from pve_sim.tasks import Task, TaskError, Worker

if TYPE_CHECKING:
    from pve_sim.cluster import Request, SimCluster

CT = "/nodes/{node}/lxc/{vmid}"
VM_PATH = "/vms/{vmid}"

NEW_DISK_RE = re.compile(r"^([^:\s]+):(\d+(\.\d+)?)$")
"""pve-container ``src/PVE/LXC.pm`` ``$NEW_DISK_RE`` (PVE 9): ``<storage>:<GiB>`` allocates a new volume.
A bare size (``rootfs=8``) does not match: only create turns it into ``<storage>:8``, and only after
``check_ct_modify_config_perm`` refused it to non-root users as an arbitrary path."""

PERL_STORAGE_PM = "/usr/share/perl5/PVE/Storage.pm"
ARBITRARY_PATH_ERROR = f"Only root can pass arbitrary filesystem paths. at {PERL_STORAGE_PM} line 651."
"""pve-storage ``src/PVE/Storage.pm`` ``check_volume_access`` (libpve-storage-perl 9.1.0, line 651):
``die "Only root can pass arbitrary filesystem paths."`` has no trailing newline, so Perl appends
`` at <file> line <n>.`` to the message the API returns."""

_VOLNAME_OWNER_RE = re.compile(r"^(?:\d+/)?(?:vm|subvol|base|basevol)-(\d+)-")

FASTPLUG_OPTIONS = frozenset(
    {"description", "onboot", "startup", "protection", "hostname", "hookscript", "cores", "tags", "lock"}
)
"""Options a running CT takes at once (``$LXC_FASTPLUG_OPTIONS``)."""
HOTPLUG_OPTIONS = frozenset({"memory", "swap", "cpulimit", "cpuunits"})
"""Further options ``vmconfig_hotplug_pending`` applies to a running CT (cgroup changes)."""

# Parameters of create that are not config options (extracted before the config is built).
_CREATE_EXTRA = (
    "node",
    "vmid",
    "ignore-unpack-errors",
    "bwlimit",
    "start",
    "ha-managed",
    "unprivileged",
    "restore",
    "unique",
    "force",
    "password",
    "ssh-public-keys",
    "pool",
    "ostemplate",
    "storage",
)
# Not extracted: ``debug`` is a config option ($confdesc->{debug} in pve-container
# src/PVE/LXC/Config.pm); create stores it and check_ct_modify_config_perm wants VM.Config.Options.
CREATE_EXTRACT_SHARE = 5 / 6
"""Share of ``createSeconds`` spent before the full config is written (allocating, unpacking); the
rest is ``post_create_hook`` (SSH host keys)."""
_PROPERTY_FORMATS = {"net": "lxc-net", "rootfs": "lxc-rootfs", "mp": "lxc-mp", "features": "lxc-features"}


# ================================================================================= list / index


@route("GET", "/nodes/{node}/lxc", proxy=True)
def vmlist(cluster: SimCluster, req: Request) -> object:
    """CTs whose config lives on the node, those the caller may audit."""
    node = req.node
    result = []
    node_usage = cluster.node_usage_now(node) if node in cluster.state.nodes else None
    for ct in cluster.state.containers.values():
        if ct.node != node:
            continue
        if not cluster.access.allowed(req.authid, f"/vms/{ct.vmid}", ["VM.Audit"]):
            continue
        result.append(vmstatus_entry(cluster, ct, cluster.ct_usage_now(ct.vmid), node_usage))
    return result


@route("GET", CT, proxy=True)
def vmdiridx(cluster: SimCluster, req: Request) -> object:
    """Directory index; loads the config, so a missing CT is PVE's config error."""
    cluster.state.load_config(req.vmid, req.node)
    return [
        {"subdir": name}
        for name in (
            "config",
            "pending",
            "status",
            "vncproxy",
            "termproxy",
            "vncwebsocket",
            "spiceproxy",
            "migrate",
            "clone",
            "rrd",
            "rrddata",
            "firewall",
            "snapshot",
            "resize",
            "interfaces",
        )
    ]


@route("GET", f"{CT}/status", proxy=True)
def vmcmdidx(cluster: SimCluster, req: Request) -> object:
    cluster.state.load_config(req.vmid, req.node)
    return [
        {"subdir": name} for name in ("current", "start", "stop", "shutdown", "reboot", "suspend", "resume", "migrate")
    ]


@route("GET", f"{CT}/status/current", perm=Perm(VM_PATH, ("VM.Audit",)), proxy=True)
def vm_status(cluster: SimCluster, req: Request) -> object:
    """``vmstatus`` of one CT plus its HA state."""
    ct = cluster.state.load_config(req.vmid, req.node)
    entry = vmstatus_entry(cluster, ct, cluster.ct_usage_now(ct.vmid))
    entry["ha"] = ha_service_status(cluster, ct.vmid)
    return entry


def ha_service_status(cluster: SimCluster, vmid: int) -> dict[str, object]:
    """``PVE::HA::Config::get_service_status``: ``{"managed": 0}`` or the service's state."""
    if not cluster.state.is_ha_managed(vmid):
        return {"managed": 0}
    sid = f"ct:{vmid}"
    status: dict[str, object] = {"managed": 1}
    service = cluster.ha.services.get(sid)
    if service is not None:
        status["state"] = service.state
    return status


@route("GET", f"{CT}/rrddata", perm=Perm(VM_PATH, ("VM.Audit",)))
def ct_rrddata(cluster: SimCluster, req: Request) -> object:
    """RRD rows of the CT, from its placement and usage history (not proxied, as in PVE).

    PSI columns (PVE 9, running CTs only) come from :mod:`pve_sim.pressure`, with the CT's node's
    usage at the same instant; a PVE 8 scenario answers the ten ``pve2-vm`` columns only.
    """
    vmid = req.vmid
    if cluster.usage.ct_created_epoch(vmid) is None:
        raise internal(f"RRD error: opening '/var/lib/rrdcached/db/pve-vm-9.0/{vmid}': No such file or directory")

    usage_model = cluster.usage

    def sample(epoch: float) -> Mapping[str, float]:
        usage = usage_model.ct_usage_at(vmid, epoch)
        if usage is None:
            return {}
        rates = io_rates(usage)
        row = {
            "maxcpu": usage.cpus,
            "cpu": usage.cpu_fraction,
            "maxmem": float(usage.maxmem_bytes),
            "mem": float(usage.mem_bytes),
            "maxdisk": float(usage.maxdisk_bytes),
            "disk": float(usage.disk_bytes) if usage.running else 0.0,
            **rates,
            "memhost": float(usage.mem_bytes),
        }
        if usage.running:
            # pvestatd writes the PSI columns of a stopped CT as unknown (left out of the row).
            row.update(ct_pressure(usage, usage_model.node_usage_at(usage.node, epoch)))
        return row

    version = cluster.state.pve_version
    return rrd_rows(
        req.text("timeframe"),
        req.opt_text("cf") or "AVERAGE",
        cluster.now(),
        cluster.clock.start_epoch,
        sample if has_pve9_rrd(version) else only_keys(sample, ct_rrd_keys(version)),
        timeframes=rrd_timeframes(version),
    )


# ================================================================================= create


def _pve_major(cluster: SimCluster) -> int:
    head = cluster.state.pve_version.split(".", 1)[0]
    return int(head) if head.isdigit() else 9


@route("POST", "/nodes/{node}/lxc", proxy=True)
def create_vm(cluster: SimCluster, req: Request) -> object:
    """``create_vm``: synchronous checks in PVE's order, then a ``vzcreate`` task."""
    state = cluster.state
    access = cluster.access
    authid = req.authid
    node = req.node
    vmid = req.vmid
    params = dict(req.params)
    if params.get("restore"):
        raise PveApiError(501, "pve_sim does not implement restoring backups (restore=1)")

    cluster.check_quorum()
    start_after_create = bool(params.get("start"))
    ha_managed = bool(params.get("ha-managed"))
    unprivileged_param = params.get("unprivileged")
    # pve-container 6.0.6 (PVE 9) creates unprivileged CTs unless told otherwise.
    unprivileged = _pve_major(cluster) >= 9 if unprivileged_param is None else bool(unprivileged_param)
    if not unprivileged and _pve_major(cluster) >= 9:
        access.check(authid, "/", ["Sys.Modify"])
    if ha_managed:
        access.check(authid, "/", ["Sys.Console"])
    state.check_vmid_unused(vmid)

    pool = req.opt_text("pool")
    if pool is not None and pool not in access.pools:
        raise permission_denied(f"pool '{pool}' does not exist")
    if not (
        access.allowed(authid, f"/vms/{vmid}", ["VM.Allocate"])
        or (pool and access.allowed(authid, f"/pool/{pool}", ["VM.Allocate"]))
    ):
        raise permission_denied()

    ostemplate = str(params["ostemplate"])
    default_storage = str(params.get("storage") or "local")
    option_params = {key: value for key, value in params.items() if key not in _CREATE_EXTRA}
    check_ct_modify_config_perm(cluster, authid, vmid, pool, {}, option_params, [], unprivileged)

    template = check_template_access(cluster, authid, ostemplate)

    mp_params: dict[str, str] = {}
    plain_params: dict[str, object] = {}
    for key, value in option_params.items():
        family = option_family(key)
        if key == "rootfs" or family == "mp":
            text = str(value)
            mp_params[key] = f"{default_storage}:{text}" if re.match(r"^\d+(\.\d+)?$", text) else text
        elif family == "unused":
            continue  # PVE warns "ignoring 'unusedN', cannot create/restore with unused volume"
        else:
            plain_params[key] = value
    if mp_params and "rootfs" not in mp_params:
        raise internal("mount points configured, but 'rootfs' not set - aborting")

    for key in sorted(mp_params, key=lambda k: (k != "rootfs", k)):
        volume = str(_parse(key, mp_params[key])["volume"])
        if volume.startswith("/"):
            if not req.is_root:
                raise internal("Only root can pass arbitrary filesystem paths.")
            continue
        check_and_activate_storage(cluster, authid, volume.split(":", 1)[0], node)
    if "rootfs" not in mp_params:
        check_and_activate_storage(cluster, authid, default_storage, node)
        mp_params["rootfs"] = f"{default_storage}:4"

    config: dict[str, ConfigValue] = {}
    for key in sorted(plain_params):
        config[key] = _stored_option(cluster, key, plain_params[key])
    if unprivileged:
        config["unprivileged"] = 1

    # create_and_lock_config: the config appears with lock 'create' before the task starts.
    state.check_vmid_unused(vmid)
    ct = ContainerState(vmid=vmid, node=node, config={"lock": "create"}, created_epoch=cluster.now())
    hostname = str(config.get("hostname") or f"CT{vmid}")
    tags = split_list(str(config.get("tags", "")))
    cluster.register_container(ct, cluster.profiles_for_new_ct(hostname, tags, node))

    def body(task: Task) -> Worker:
        yield from cluster.flock(task, vmid)
        try:
            yield from _create_worker(cluster, task, ct, config, mp_params, template, ostemplate, pool)
        finally:
            cluster.funlock(task, vmid)
        if start_after_create:
            try:
                vm_start_api(cluster, node, vmid, authid, skiplock=False, is_root=req.is_root)
            except PveApiError as err:
                raise TaskError(err.message) from None
        if ha_managed:
            task.log("Add as HA resource")
            state.ha_resources[f"ct:{vmid}"] = HaResource(
                sid=f"ct:{vmid}",
                state="started" if start_after_create else "stopped",
                max_restart=None,
                max_relocate=None,
                failback=None,
            )
            cluster.ha.arm()

    return cluster.start_task(node, "vzcreate", str(vmid), authid, body).upid


def _create_worker(
    cluster: SimCluster,
    task: Task,
    ct: ContainerState,
    config: dict[str, ConfigValue],
    mp_params: Mapping[str, str],
    template: TemplateVolume | None,
    ostemplate: str,
    pool: str | None,
) -> Iterator[float]:
    """The body of ``vzcreate`` (pve-container ``src/PVE/API2/LXC.pm`` ``create_vm``, its ``$code``).

    The config passes through these states while the task runs:

    1. ``{lock: create}`` only (``create_and_lock_config``, before the UPID is returned) while the
       volumes are allocated and the template is unpacked (``create_disks``, ``restore_archive``);
    2. after OS detection, ``write_config($vmid, $conf)`` writes the config built from the
       parameters (hostname if given, tags, description, net, rootfs/mp volumes, arch, ostype,
       unprivileged, ...) -- **without** ``lock``, which only the file had -- while
       ``post_create_hook`` sets passwords and SSH host keys;
    3. ``hostname ||= "CT<vmid>"``, ``memory ||= 512``, ``swap //= 512`` are added and written again;
       then the CT joins its pool, and the task ends (or goes on to start the CT).
    """
    state = cluster.state
    vmid = ct.vmid
    allocated: list[tuple[str, StorageState, str]] = []
    try:
        for key in sorted(mp_params, key=lambda k: (k != "rootfs", k)):
            parsed = _parse(key, mp_params[key])
            volume = str(parsed["volume"])
            new_disk = NEW_DISK_RE.match(volume)
            if new_disk is None:
                if volume.startswith("/"):
                    config[key] = mp_params[key]
                    continue
                raise TaskError(f"volume '{volume}' does not exist")
            storage = state.storage_config(new_disk.group(1))
            size_bytes = int(float(new_disk.group(2)) * GIB)
            volid = state.next_volume_name(storage, vmid, ct.node)
            if any(volid == existing for existing, _, _ in allocated):
                volid = f"{storage.sid}:{storage.volume_name(vmid, len(allocated))}"
            allocated.append((volid, storage, key))
            _log_allocation(task, storage, volid, size_bytes)
            printed = {k: str(v) for k, v in parsed.items() if k != "volume"}
            printed["volume"] = volid
            printed["size"] = format_size(size_bytes)
            config[key] = print_property_string(printed, option_family(key))
        if template is None:
            task.log(f"can't find file '{ostemplate}'")
            raise TaskError(f"can't find file '{ostemplate}'")
        filename = ostemplate.split("/", 1)[-1]
        task.log(f"extracting archive '/var/lib/vz/template/cache/{filename}'")
        extract_seconds = cluster.state.timing.create_seconds * CREATE_EXTRACT_SHARE
        yield extract_seconds
        cluster.injected_failure(task)
        size = template.size_bytes * 4  # a compressed template unpacks to about four times its size
        task.log(f"Total bytes read: {size} ({size // (1024 * 1024)}MiB, 180MiB/s)")
        # PVE::LXC::Setup->new: arch (if unset) and the OS type are detected from the unpacked rootfs.
        if "arch" not in config:
            task.log("Detected container architecture: amd64")
            config["arch"] = "amd64"
        if config.get("ostype") != "unmanaged":
            config["ostype"] = template.ostype
        # write_config($vmid, $conf) "safe config (after OS detection)": the config becomes the one being
        # built, which never had the 'create' lock -- from here on the CT has no lock, but not yet the
        # hostname/memory/swap defaults.
        ct.config = dict(config)
        cluster.record(ct)
        # post_create_hook: root password, SSH keys, SSH host keys.
        task.log("Creating SSH host key 'ssh_host_ed25519_key' - this may take some time ...")
        yield cluster.state.timing.create_seconds - extract_seconds
        task.log(f"done: SHA256:{_fake_fingerprint(vmid)} root@{config.get('hostname') or f'CT{vmid}'}")
    except (TaskError, PveApiError) as err:
        message = err.message
        for volid, storage, _key in allocated:
            _log_free(task, storage, volid)
        cluster.unregister_container(vmid)
        raise TaskError(f"unable to create CT {vmid} - {message}") from None
    # "set some defaults", then write_config again; the pool membership comes last.
    config["hostname"] = config.get("hostname") or f"CT{vmid}"
    config["memory"] = config.get("memory") or 512
    config.setdefault("swap", 512)
    ct.config = dict(config)
    cluster.record(ct)
    if pool:
        cluster.access.add_vm_to_pool(vmid, pool)


def _log_allocation(task: Task, storage: StorageState, volid: str, size_bytes: int) -> None:
    name = volid.split(":", 1)[1]
    if storage.type in ("lvmthin", "lvm"):
        task.log(f'  Logical volume "{name}" created.')
    elif storage.type in ("zfspool", "zfs"):
        return
    else:
        task.log(f"Formatting '/var/lib/vz/images/{name}', fmt=raw size={size_bytes} preallocation=off")
    blocks = size_bytes // 4096
    task.log(f"Creating filesystem with {blocks} 4k blocks and {blocks // 4} inodes")
    task.log("Filesystem UUID: 5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a")
    task.log("Superblock backups stored on blocks: ")
    task.log("\t32768, 98304, 163840, 229376, 294912, 819200, 884736")


def _log_free(task: Task, storage: StorageState, volid: str) -> None:
    name = volid.split(":", 1)[1]
    if storage.type in ("lvmthin", "lvm"):
        task.log(f'  Logical volume "{name}" successfully removed.')


def _fake_fingerprint(vmid: int) -> str:
    return base64.b64encode(hashlib.sha256(f"ct{vmid}".encode()).digest()).decode().rstrip("=")


def check_template_access(cluster: SimCluster, authid: str, volid: str) -> TemplateVolume | None:
    """``check_volume_access(..., 'vztmpl')``: storage exists, is a template volume, caller may read it.

    Returns the template (or None when the volume does not exist: that only fails inside the task).
    """
    if ":" not in volid:
        if authid != "root@pam":
            raise internal(ARBITRARY_PATH_ERROR)
        return None
    sid, volname = volid.split(":", 1)
    cluster.state.storage_config(sid)
    if not volname.startswith("vztmpl/"):
        raise internal(f"unable to use volume {volid} - content type needs to be 'vztmpl'")
    if authid != "root@pam" and not cluster.access.allowed(authid, f"/storage/{sid}", ["Datastore.Allocate"]):
        cluster.access.check(authid, f"/storage/{sid}", ["Datastore.AllocateSpace", "Datastore.Audit"], any_of=True)
    return cluster.state.templates.get(volid)


def check_rootdir_volume_access(cluster: SimCluster, authid: str, vmid: int, volid: str) -> None:
    """pve-storage ``src/PVE/Storage.pm`` ``check_volume_access($rpcenv, $user, $cfg, $vmid, $volid,
    'rootdir')`` for a non-root caller: a volume without a storage (a bare size such as ``8``, which
    is not ``$NEW_DISK_RE``) is an "arbitrary filesystem path"; ``Datastore.Allocate`` on the storage
    grants any volume; the CT's own volumes are fine; another guest's need ``Datastore.Audit`` on
    the storage and ``VM.Config.Disk`` on that guest; anything else is refused."""
    if authid == "root@pam":
        return
    sid, sep, volname = volid.partition(":")
    if not sep or not sid:
        raise internal(ARBITRARY_PATH_ERROR)
    cluster.state.storage_config(sid)
    if cluster.access.allowed(authid, f"/storage/{sid}", ["Datastore.Allocate"]):
        return
    owner_match = _VOLNAME_OWNER_RE.match(volname)
    owner = int(owner_match.group(1)) if owner_match else None
    if owner is not None and owner == vmid:
        return
    if owner is not None:
        cluster.access.check(authid, f"/storage/{sid}", ["Datastore.Audit"])
        cluster.access.check(authid, f"/vms/{owner}", ["VM.Config.Disk"])
        return
    raise internal(f"missing privileges to access {volid}")


def check_and_activate_storage(cluster: SimCluster, authid: str, sid: str, node: str) -> StorageState:
    """create's ``$check_and_activate_storage``: enabled on the node, holds CT dirs, caller may allocate."""
    storage = cluster.state.storage_check_enabled(sid, node)
    if "rootdir" not in storage.content:
        raise ParameterError({"storage": f"storage '{sid}' does not support container directories"})
    cluster.access.check(authid, f"/storage/{sid}", ["Datastore.AllocateSpace"])
    return storage


def check_ct_modify_config_perm(
    cluster: SimCluster,
    authid: str,
    vmid: int,
    pool: str | None,
    old: Mapping[str, ConfigValue],
    new: Mapping[str, object],
    delete: list[str],
    unprivileged: bool,
) -> None:
    """``PVE::LXC::check_ct_modify_config_perm``: the privilege each option needs (root skips all)."""
    if authid == "root@pam":
        return
    access = cluster.access

    def vm_perm(privilege: str) -> None:
        access.check_vm_perm(authid, vmid, pool, [privilege])

    def check(key: str, deleting: bool) -> None:
        family = option_family(key)
        if key in ("cores", "cpuunits", "cpulimit"):
            vm_perm("VM.Config.CPU")
        elif key == "rootfs" or family == "mp":
            vm_perm("VM.Config.Disk")
            if deleting:
                return
            volume = str(_parse(key, str(new[key]))["volume"])
            if volume.startswith("/"):
                kind = "device" if volume.startswith("/dev/") else "bind"
                raise permission_denied(f"mount point type {kind} is only allowed for root@pam")
            new_disk = NEW_DISK_RE.match(volume)
            if new_disk is not None:
                access.check(authid, f"/storage/{new_disk.group(1)}", ["Datastore.AllocateSpace"])
            else:
                check_rootdir_volume_access(cluster, authid, vmid, volume)
        elif key in ("memory", "swap"):
            vm_perm("VM.Config.Memory")
        elif family == "net":
            vm_perm("VM.Config.Network")
            for raw in (old.get(key), None if deleting else new.get(key)):
                if raw:
                    check_bridge_access(cluster, authid, str(raw))
        elif family == "dev":
            raise permission_denied("configuring device passthrough is only allowed for root@pam")
        elif key in ("nameserver", "searchdomain", "hostname"):
            vm_perm("VM.Config.Network")
        elif key == "features":
            if not unprivileged:
                raise permission_denied("changing feature flags for privileged container is only allowed for root@pam")
            source = old.get(key) if deleting else new.get(key)
            features = _features(str(source or ""))
            old_features = _features(str(old.get(key) or "")) if not deleting else {}
            changed = {k for k in set(features) | set(old_features) if features.get(k) != old_features.get(k)}
            if changed - {"nesting"}:
                raise permission_denied("changing feature flags (except nesting) is only allowed for root@pam")
            if "nesting" in changed:
                vm_perm("VM.Allocate")
        elif key == "hookscript":
            raise permission_denied("changing the hookscript is only allowed for root@pam")
        elif key == "tags":
            assert_ct_tag_permissions(cluster, authid, vmid, old.get(key), "" if deleting else new.get(key))
        else:
            vm_perm("VM.Config.Options")

    for key in sorted(new):
        check(key, False)
    for key in delete:
        check(key, True)


def check_bridge_access(cluster: SimCluster, authid: str, raw: str) -> None:
    """``check_vnet_access``: SDN.Use on the bridge (or on each VLAN of it) in zone localnetwork."""
    net = _parse("net0", raw)
    bridge = net.get("bridge")
    if bridge is None:
        return
    check_ct_bridge_access(cluster, authid, bridge, net.get("tag"), net.get("trunks"))


def _features(value: str) -> dict[str, object]:
    return _parse("features", value) if value else {}


def _parse(key: str, value: str) -> dict[str, object]:
    fmt = _PROPERTY_FORMATS.get(option_family(key))
    if fmt is None:
        return {}
    try:
        return parse_property_string(fmt, value, path=key)
    except FormatError as err:
        errors = err.errors or {key: err.message}
        raise ParameterError(errors) from None


def _stored_option(cluster: SimCluster, key: str, value: object) -> ConfigValue:
    """A parameter as the config stores it: tags normalised, net with hwaddr and type, …"""
    family = option_family(key)
    if key == "tags":
        return normalize_tags(str(value))
    if family == "net":
        parsed = {k: str(v) for k, v in _parse(key, str(value)).items()}
        parsed["type"] = "veth"
        if not parsed.get("hwaddr"):
            parsed["hwaddr"] = cluster.new_mac_address()
        return print_property_string(parsed, "net")
    if family in ("features", "rootfs", "mp"):
        parsed = {k: str(v) for k, v in _parse(key, str(value)).items()}
        return print_property_string(parsed, family)
    return stored_value(value)


# ================================================================================= power


@route("POST", f"{CT}/status/start", perm=Perm(VM_PATH, ("VM.PowerMgmt",)), proxy=True)
def vm_start(cluster: SimCluster, req: Request) -> object:
    return vm_start_api(cluster, req.node, req.vmid, req.authid, skiplock=req.flag("skiplock"), is_root=req.is_root)


def _check_skiplock(skiplock: bool, is_root: bool) -> None:
    if skiplock and not is_root:
        raise ParameterError({"skiplock": "Only root may use this option."})


def vm_start_api(cluster: SimCluster, node: str, vmid: int, authid: str, *, skiplock: bool, is_root: bool) -> str:
    """``vm_start`` (also called by create with ``start=1``): returns the UPID."""
    _check_skiplock(skiplock, is_root)
    if cluster.state.running_on(vmid, node):
        raise internal(f"CT {vmid} already running")
    cluster.check_quorum()
    if cluster.state.is_ha_managed(vmid):
        return _ha_request(cluster, node, vmid, authid, "hastart", f"Requesting HA start for CT {vmid}", "started")

    def body(task: Task) -> Worker:
        yield from cluster.flock(task, vmid)
        try:
            ct = cluster.state.load_config(vmid, node)
            if ct.is_template:
                raise TaskError("you can't start a CT if it's a template")
            if not skiplock and ct.lock != "mounted":
                cluster.state.check_lock(ct)
            if ct.config.get("unprivileged"):
                for volume_key in ("rootfs", *[k for k in ct.config if option_family(k) == "mp"]):
                    raw = ct.config.get(volume_key)
                    if raw and _parse(volume_key, str(raw)).get("quota") in ("1", 1, True):
                        raise TaskError("Quotas are not supported by unprivileged containers.")
            cluster.injected_failure(task)
            yield cluster.state.timing.start_seconds
            ct = cluster.state.load_config(vmid, node)
            if not ct.running:
                apply_pending(cluster, ct)
                cluster.set_running(ct, True)
        finally:
            cluster.funlock(task, vmid)

    return cluster.start_task(node, "vzstart", str(vmid), authid, body).upid


@route("POST", f"{CT}/status/stop", perm=Perm(VM_PATH, ("VM.PowerMgmt",)), proxy=True)
def vm_stop(cluster: SimCluster, req: Request) -> object:
    node, vmid, authid = req.node, req.vmid, req.authid
    skiplock = req.flag("skiplock")
    _check_skiplock(skiplock, req.is_root)
    overrule = req.flag("overrule-shutdown")
    if not cluster.state.running_on(vmid, node):
        raise internal(f"CT {vmid} not running")
    if cluster.state.is_ha_managed(vmid):
        if overrule:
            raise ParameterError({"overrule-shutdown": "Not applicable for HA resources."})
        return _ha_request(cluster, node, vmid, authid, "hastop", f"Requesting HA stop for CT {vmid}", "stopped")

    def body(task: Task) -> Worker:
        if overrule:
            aborted = _abort_tasks(cluster, node, "vzshutdown", vmid)
            if aborted:
                task.log(f"overruled vzshutdown tasks: {', '.join(aborted)}")
        yield from cluster.flock(task, vmid)
        try:
            ct = cluster.state.load_config(vmid, node)
            if not skiplock and ct.lock != "mounted":
                cluster.state.check_lock(ct)
            cluster.injected_failure(task)
            if not ct.running:
                return
            yield cluster.state.timing.stop_seconds
            if ct.running:
                cluster.set_running(ct, False)
        finally:
            cluster.funlock(task, vmid)

    return cluster.start_task(node, "vzstop", str(vmid), authid, body).upid


@route("POST", f"{CT}/status/shutdown", perm=Perm(VM_PATH, ("VM.PowerMgmt",)), proxy=True)
def vm_shutdown(cluster: SimCluster, req: Request) -> object:
    node, vmid, authid = req.node, req.vmid, req.authid
    timeout = req.opt_integer("timeout")
    timeout = 60 if timeout is None else timeout
    force_stop = req.flag("forceStop")
    if not cluster.state.running_on(vmid, node):
        raise internal(f"CT {vmid} not running")
    if cluster.state.is_ha_managed(vmid):
        return _ha_request(cluster, node, vmid, authid, "hastop", f"Requesting HA stop for CT {vmid}", "stopped")

    def body(task: Task) -> Worker:
        yield from cluster.flock(task, vmid)
        try:
            ct = cluster.state.load_config(vmid, node)
            cluster.state.check_lock(ct)
            cluster.injected_failure(task)
            yield from stop_container(cluster, ct, timeout=timeout, kill_after_timeout=force_stop, task=task)
        finally:
            cluster.funlock(task, vmid)

    return cluster.start_task(node, "vzshutdown", str(vmid), authid, body).upid


LXC_STOP_DEFAULT_TIMEOUT = 60
"""``lxc-stop`` waits this long for a clean shutdown when not given ``--timeout`` (lxc ``lxc_stop.c``)."""


def stop_container(
    cluster: SimCluster,
    ct: ContainerState,
    *,
    timeout: int | None,
    kill_after_timeout: bool,
    task: Task | None = None,
) -> Iterator[float]:
    """``PVE::LXC::vm_stop($vmid, 0, $timeout, $kill_after_timeout)`` (pve-container ``src/PVE/LXC.pm``).

    It runs ``lxc-stop -n <vmid> [--nokill] --timeout <timeout>`` (``run_command`` timeout
    ``timeout + 5``). The CT needs ``shutdownSeconds`` to shut down, forever if it ignores shutdown
    (:attr:`ContainerState.ignores_shutdown`). Within ``timeout`` it stops. Past it, without
    ``--nokill`` lxc-stop kills it; with ``--nokill`` lxc-stop exits 1, vm_stop ``warn``s
    ``command 'lxc-stop …' failed: exit code 1`` and polls the CT's command socket for another
    ``timeout + 5`` seconds: a CT that stops meanwhile is fine, else ``die "container did not stop\\n"``
    after ``2 * timeout + 5`` seconds in all, the CT still running.
    """
    if not ct.running:
        return
    needed = math.inf if ct.ignores_shutdown else cluster.state.timing.shutdown_seconds
    lxc_timeout = float(LXC_STOP_DEFAULT_TIMEOUT if timeout is None else timeout)
    if needed <= lxc_timeout:
        yield needed
    elif kill_after_timeout:
        yield lxc_timeout  # lxc-stop's shutdown timed out: it kills the CT
    else:
        yield lxc_timeout
        if task is not None:
            option = "" if timeout is None else f" --timeout {timeout}"
            task.log(f"command 'lxc-stop -n {ct.vmid} --nokill{option}' failed: exit code 1")
        poll = lxc_timeout + 5
        if needed > lxc_timeout + poll:
            yield poll
            raise TaskError("container did not stop")
        yield needed - lxc_timeout
    if ct.running:
        cluster.set_running(ct, False)


@route("POST", f"{CT}/status/reboot", perm=Perm(VM_PATH, ("VM.PowerMgmt",)), proxy=True)
def vm_reboot(cluster: SimCluster, req: Request) -> object:
    node, vmid, authid = req.node, req.vmid, req.authid
    timeout = req.opt_integer("timeout")
    if not cluster.state.running_on(vmid, node):
        raise internal(f"VM {vmid} not running")

    def body(task: Task) -> Worker:
        yield from cluster.flock(task, vmid)
        try:
            ct = cluster.state.load_config(vmid, node)
            if not ct.running:
                return
            cluster.injected_failure(task)
            half = cluster.state.timing.reboot_seconds / 2
            if ct.ignores_shutdown:
                # vm_reboot: vm_stop($vmid, 0, $timeout, 1) kills once lxc-stop's timeout passed.
                yield float(LXC_STOP_DEFAULT_TIMEOUT if timeout is None else timeout)
            elif timeout is not None and half > timeout:
                yield float(timeout)
            else:
                yield half
            cluster.set_running(ct, False)
            yield half
            ct = cluster.state.load_config(vmid, node)
            apply_pending(cluster, ct)
            cluster.set_running(ct, True)
        finally:
            cluster.funlock(task, vmid)

    return cluster.start_task(node, "vzreboot", str(vmid), authid, body).upid


def _abort_tasks(cluster: SimCluster, node: str, task_type: str, vmid: int) -> list[str]:
    """``abort_guest_tasks``: kill running tasks of a type for the CT; their log ends in an error."""
    aborted = []
    for task in cluster.tasks.node_tasks(node):
        if task.running and task.type == task_type and task.id == str(vmid):
            cluster.tasks.abort(task, "interrupted by signal")
            cluster.funlock(task, vmid)
            aborted.append(task.upid)
    return aborted


def _ha_request(cluster: SimCluster, node: str, vmid: int, authid: str, task_type: str, line: str, state: str) -> str:
    """HA-managed CT: the task only sets the requested state (``ha-manager set ct:<vmid> --state``);
    the HA manager acts one HA round later (:mod:`pve_sim.ha`)."""

    def body(task: Task) -> Worker:
        task.log(line)
        resource = cluster.state.ha_resources.get(f"ct:{vmid}")
        if resource is not None:
            resource.state = state
        yield 0.0
        cluster.ha.act_soon(f"ct:{vmid}")

    return cluster.start_task(node, task_type, str(vmid), authid, body).upid


# ================================================================================= destroy


@route("DELETE", CT, perm=Perm(VM_PATH, ("VM.Allocate",)), proxy=True)
def destroy_vm(cluster: SimCluster, req: Request) -> object:
    node, vmid, authid = req.node, req.vmid, req.authid
    force = req.flag("force")
    purge = req.flag("purge")
    state = cluster.state
    ct = state.load_config(vmid, node)

    def early_checks(current: ContainerState) -> bool:
        if current.config.get("protection"):
            raise internal(f"can't remove CT {vmid} - protection mode enabled")
        state.check_lock(current)
        ha_managed = state.is_ha_managed(vmid)
        if not purge and ha_managed:
            raise internal(f"unable to remove CT {vmid} - used in HA resources and purge parameter not set.")
        return ha_managed

    early_checks(ct)
    running_error = f"unable to destroy CT {vmid} - container is running"
    if not force and state.running_on(vmid, node):
        raise internal(running_error)

    def body(task: Task) -> Worker:
        yield from cluster.flock(task, vmid)
        try:
            current = state.load_config(vmid, node)
            ha_managed = early_checks(current)
            if current.running:
                if not force:
                    raise TaskError(running_error)
                task.log(f"forced to stop CT {vmid} before destroying!")
                yield cluster.state.timing.stop_seconds
                cluster.set_running(current, False)
            cluster.injected_failure(task)
            volumes = current.volumes()
            current.config = {"lock": "destroyed"}
            current.pending.clear()
            current.pending_delete.clear()
            cluster.record(current)
            yield cluster.state.timing.destroy_seconds
            for volume in volumes:
                storage = state.storages.get(volume.storage)
                if storage is not None:
                    _log_free(task, storage, volume.volid)
            cluster.access.remove_vm_access(vmid)
            if purge:
                task.log(f"purging CT {vmid} from related configurations..")
                if ha_managed:
                    purge_ha_resource(cluster, f"ct:{vmid}", purge_rules=True)
                    task.log(f"NOTE: removed CT {vmid} from HA resource configuration.")
            cluster.unregister_container(vmid)
        finally:
            cluster.funlock(task, vmid)

    return cluster.start_task(node, "vzdestroy", str(vmid), authid, body).upid


# ================================================================================= config


@route("GET", f"{CT}/config", perm=Perm(VM_PATH, ("VM.Audit",)), proxy=True)
def vm_config(cluster: SimCluster, req: Request) -> object:
    """The config (pending values applied unless ``current=1``) plus its ``digest``."""
    snapshot = req.opt_text("snapshot")
    if snapshot and req.flag("current"):
        message = "cannot use 'snapshot' parameter with 'current'"
        raise ParameterError({"snapshot": message, "current": message})
    ct = cluster.state.load_config(req.vmid, req.node)
    if snapshot:
        raise internal(f"snapshot '{snapshot}' does not exist")
    config: dict[str, object] = dict(sorted(ct.current_config(with_pending=not req.flag("current")).items()))
    if "description" in config:
        # Stored as '#' comment lines; parse_pct_config appends "\n" to every line it reads back.
        description = description_as_read(ct.current_config(with_pending=not req.flag("current"))["description"])
        if description is None:
            del config["description"]
        else:
            config["description"] = description
    config["digest"] = ct.digest()
    return config


@route(
    "PUT",
    f"{CT}/config",
    perm=Perm(
        VM_PATH,
        ("VM.Config.Disk", "VM.Config.CPU", "VM.Config.Memory", "VM.Config.Network", "VM.Config.Options"),
        any_of=True,
    ),
    proxy=True,
)
def update_vm(cluster: SimCluster, req: Request) -> object:
    """``update_vm``: synchronous; hot-applies what a running CT can take, the rest goes pending."""
    state = cluster.state
    authid = req.authid
    vmid = req.vmid
    params = {k: v for k, v in req.params.items() if k not in ("node", "vmid")}
    digest = params.pop("digest", None)
    if not params:
        raise internal("no options specified")
    delete = split_list(str(params.pop("delete", "") or ""))
    revert = split_list(str(params.pop("revert", "") or ""))

    # Everything below runs under PVE::LXC::Config->lock_config (pve-container
    # src/PVE/API2/LXC/Config.pm update_vm): wait for the flock a start/stop/shutdown/create/
    # migrate/destroy task holds, up to 10 s, then 500 "can't lock file ... - got timeout".
    cluster.sync_flock(vmid, req.node)
    ct = state.load_config(vmid, req.node)
    state.check_lock(ct)
    if digest and digest != ct.digest():
        raise internal("detected modified configuration - file changed by other user? Try again.")
    unprivileged = bool(ct.config.get("unprivileged"))
    check_ct_modify_config_perm(cluster, authid, vmid, None, ct.config, {}, delete, unprivileged)
    check_ct_modify_config_perm(cluster, authid, vmid, None, ct.config, {}, revert, unprivileged)
    for opt in revert:
        if not _option_exists(opt):
            raise ParameterError({"revert": f"unknown option '{opt}'"})
        if opt in params:
            raise ParameterError({"revert": f"you can't use '-{opt}' and '-revert {opt}' at the same time"})
    for opt in delete:
        if not _option_exists(opt):
            raise ParameterError({"delete": f"unknown option '{opt}'"})
        if opt in params:
            raise ParameterError({"delete": f"you can't use '-{opt}' and -delete {opt}' at the same time"})
        if opt in revert:
            raise ParameterError({"delete": f"you can't use '-delete {opt}' and '-revert {opt}' at the same time"})
    check_ct_modify_config_perm(cluster, authid, vmid, None, ct.config, params, [], unprivileged)

    for opt in revert:
        ct.pending.pop(opt, None)
        if opt in ct.pending_delete:
            ct.pending_delete.remove(opt)
    modified: set[str] = set()
    for opt in delete:
        if opt not in ct.config and opt not in ct.pending:
            continue  # PVE warns "cannot delete 'x' - not set in current configuration!"
        modified.add(opt)
        if opt in ("memory", "rootfs", "ostype"):
            raise internal(f"unable to delete required option '{opt}'")
        if option_family(opt) in ("unused", "mp") and ct.config.get("protection"):
            raise internal(f"can't remove CT {vmid} drive '{opt}' - protection mode enabled")
        if opt == "unprivileged":
            raise internal(f"unable to delete read-only option: '{opt}'")
        ct.pending.pop(opt, None)
        if opt not in ct.pending_delete:
            ct.pending_delete.append(opt)
    new_values: dict[str, ConfigValue] = {}
    for opt in sorted(params):
        value = params[opt]
        family = option_family(opt)
        modified.add(opt)
        if opt == "rootfs" or family == "mp":
            if ct.config.get("protection"):
                raise internal(f"can't update CT {vmid} drive '{opt}' - protection mode enabled")
            volume = str(_parse(opt, str(value))["volume"])
            if not volume.startswith("/"):
                sid = volume.split(":", 1)[0] if ":" in volume else "local"
                storage = state.storage_config(sid)
                if "rootdir" not in storage.content:
                    raise internal(f"storage '{sid}' does not allow content type 'rootdir' (Container)")
        elif opt == "unprivileged":
            raise internal(f"unable to modify read-only option: '{opt}'")
        new_values[opt] = _stored_option(cluster, opt, value)
        if opt in ct.pending_delete:
            ct.pending_delete.remove(opt)
    ct.pending.update(new_values)
    # Drop pending values equal to the current ones (cleanup_pending).
    for opt in list(ct.pending):
        if ct.config.get(opt) == ct.pending[opt]:
            del ct.pending[opt]
    if ct.running:
        _hotplug_pending(cluster, ct, modified)
    else:
        _apply_pending(cluster, ct, modified)
    cluster.record(ct)
    return None


def _option_exists(opt: str) -> bool:
    from pve_sim.api_schema import ENDPOINTS

    endpoint = ENDPOINTS[("PUT", f"{CT}/config")]
    return endpoint.lookup(opt) is not None and opt not in ("delete", "revert", "digest", "node", "vmid")


def _hotplug_pending(cluster: SimCluster, ct: ContainerState, selection: set[str]) -> None:
    """``vmconfig_hotplug_pending``: fast-plug options, cgroup limits and NICs take effect now."""
    for opt in sorted(list(ct.pending_delete)):
        if opt not in selection:
            continue
        if opt in FASTPLUG_OPTIONS or opt in HOTPLUG_OPTIONS or option_family(opt) == "net":
            ct.config.pop(opt, None)
            ct.pending_delete.remove(opt)
    for opt in sorted(ct.pending):
        if opt not in selection:
            continue
        family = option_family(opt)
        if (
            opt in FASTPLUG_OPTIONS
            or opt in HOTPLUG_OPTIONS
            or family == "net"
            or (family == "mp" and opt not in ct.config)
        ):
            ct.config[opt] = _finalise_volume(cluster, ct, opt, ct.pending.pop(opt))


def _apply_pending(cluster: SimCluster, ct: ContainerState, selection: set[str] | None = None) -> None:
    """``vmconfig_apply_pending`` (stopped CT or start): pending values become the config."""
    for opt in list(ct.pending_delete):
        if selection is not None and opt not in selection:
            continue
        ct.config.pop(opt, None)
        ct.pending_delete.remove(opt)
    for opt in sorted(ct.pending):
        if selection is not None and opt not in selection:
            continue
        ct.config[opt] = _finalise_volume(cluster, ct, opt, ct.pending.pop(opt))


def apply_pending(cluster: SimCluster, ct: ContainerState) -> None:
    """Everything pending takes effect (at start and reboot)."""
    _apply_pending(cluster, ct, None)


def _finalise_volume(cluster: SimCluster, ct: ContainerState, opt: str, value: ConfigValue) -> ConfigValue:
    """A new-disk mount point (``local-lvm:8``) gets a real volume when it is applied."""
    family = option_family(opt)
    if family not in ("mp", "rootfs"):
        return value
    parsed = {k: str(v) for k, v in _parse(opt, str(value)).items()}
    new_disk = NEW_DISK_RE.match(parsed.get("volume", ""))
    if new_disk is None:
        return value
    storage = cluster.state.storage_config(new_disk.group(1))
    parsed["volume"] = cluster.state.next_volume_name(storage, ct.vmid, ct.node)
    parsed["size"] = format_size(int(float(new_disk.group(2)) * GIB))
    return print_property_string(parsed, family)


def purge_ha_resource(cluster: SimCluster, sid: str, *, purge_rules: bool) -> None:
    """pve-ha-manager ``src/PVE/HA/Config.pm`` ``delete_service_from_config``: the resource leaves
    ha/resources.cfg; with ``purge`` it also leaves every rule, and a rule left without resources
    is deleted."""
    state = cluster.state
    state.ha_resources.pop(sid, None)
    if purge_rules:
        for rule_id in list(state.ha_rules):
            rule = state.ha_rules[rule_id]
            rule.resources.discard(sid)
            if not rule.resources:
                del state.ha_rules[rule_id]

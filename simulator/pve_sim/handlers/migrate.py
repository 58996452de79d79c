"""CT migration (pve-container ``API2/LXC.pm`` ``migrate_vm`` and ``LXC/Migrate.pm``,
pve-guest-common ``AbstractMigrate.pm``).

Containers have no live migration. A running CT moves in *restart mode*: shut down (``timeout``,
default 180 s, no kill), copy local volumes (``migrateBaseSeconds`` plus size /
``migrateMiBPerSecond`` for non-shared storage), move the config to the target, start it there.
The task log has PVE's timestamped lines; any failure before the config moved aborts with
``ERROR: migration aborted (duration HH:MM:SS): <reason>`` and the task's exit status is just
``migration aborted`` (the reason is only in the log). A failure in phase 1 starts a CT that was
running again on the source (``final_cleanup``); a failure in ``prepare`` -- e.g. a CT that ignores the
shutdown, ``container did not stop`` -- leaves it as it is (still running).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pve_sim.errors import ParameterError, internal
from pve_sim.formats import FormatError, IdMap, parse_idmap
from pve_sim.handlers.lxc import VM_PATH, apply_pending, stop_container
from pve_sim.handlers.registry import Perm, route
from pve_sim.state import (
    ContainerState,
    StorageState,
    Volume,
    parse_property_string,
    print_property_string,
)
from pve_sim.tasks import Task, TaskError, Worker, format_duration, format_log_time

if TYPE_CHECKING:
    from pve_sim.cluster import Request, SimCluster

RESTART_MODE_ONLY_ERROR = (
    "running container can only be migrated in restart mode at /usr/share/perl5/PVE/LXC/Migrate.pm line 49."
)
"""pve-container ``src/PVE/LXC/Migrate.pm`` ``prepare``: ``die "running container can only be migrated in
restart mode" if !$restart`` has no trailing newline, so Perl appends `` at <file> line <n>.``. Line 49
is pve-container 6.0.18, the version PVE 9.1.2 shipped (6.1.x moved it to line 53). Reached when the
CT was started between the API's own check and the worker (the worker waited for the config flock)."""


@route("POST", "/nodes/{node}/lxc/{vmid}/migrate", perm=Perm(VM_PATH, ("VM.Migrate",)), proxy=True)
def migrate_vm(cluster: SimCluster, req: Request) -> object:
    """Synchronous checks of ``migrate_vm``, then a ``vzmigrate`` (or ``hamigrate``) task."""
    state = cluster.state
    node, vmid, authid = req.node, req.vmid, req.authid
    target = req.text("target")
    if target == node:
        raise ParameterError({"target": "target is local node."})
    cluster.check_quorum()
    if target not in state.nodes:
        raise internal(f"no such cluster node '{target}'")
    ct = state.load_config(vmid, node)
    online = req.flag("online")
    restart = req.flag("restart")
    if state.running_on(vmid, node) and not online and not restart:
        raise internal("can't migrate running container without --online or --restart")
    storage_map: IdMap | None = None
    target_storage = req.opt_text("target-storage")
    if target_storage:
        try:
            storage_map = parse_idmap(target_storage, "pve-storage-id")
        except FormatError as err:
            raise ParameterError({"target-storage": f"failed to parse storage map: {err.message}"}) from None
        if not storage_map.identity:
            cluster.access.check_vm_perm(authid, vmid, None, ["VM.Config.Disk"])
        for sid in [*sorted(storage_map.entries.values()), *([storage_map.default] if storage_map.default else [])]:
            _check_storage_access_migrate(cluster, authid, sid, target)
    if state.is_ha_managed(vmid):
        return _ha_migrate(cluster, node, vmid, authid, target)
    timeout = req.opt_integer("timeout")
    options = _MigrateOptions(
        target=target,
        online=online,
        restart=restart,
        timeout=180 if timeout is None else timeout,
        storage_map=storage_map,
        bwlimit_kib=_bwlimit(req.get("bwlimit")),
    )
    del ct
    return cluster.start_task(
        node, "vzmigrate", str(vmid), authid, lambda task: _migrate(cluster, task, node, vmid, options)
    ).upid


@dataclass(frozen=True)
class _MigrateOptions:
    """What the caller asked for: target, mode, shutdown timeout, storage map, bandwidth limit."""

    target: str
    online: bool
    restart: bool
    timeout: int
    storage_map: IdMap | None
    bwlimit_kib: float | None = None

    def map_storage(self, sid: str) -> str:
        return self.storage_map.map(sid) if self.storage_map is not None else sid


def _bwlimit(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def _check_storage_access_migrate(cluster: SimCluster, authid: str, sid: str, target: str) -> None:
    storage = cluster.state.storage_check_enabled(sid, target)
    cluster.access.check(authid, f"/storage/{sid}", ["Datastore.AllocateSpace"])
    if "rootdir" not in storage.content:
        raise internal(f"storage '{sid}' does not support CT rootdirs")


def _ha_migrate(cluster: SimCluster, node: str, vmid: int, authid: str, target: str) -> str:
    """HA-managed CT: the task runs ``ha-manager migrate ct:<vmid> <target>``, which only queues a
    CRM command; the HA manager relocates the CT afterwards (:meth:`pve_sim.ha.HaManager.command`)."""

    def body(task: Task) -> Worker:
        task.log(f"Requesting HA migration for CT {vmid} to node {target}")
        yield 0.0
        cluster.ha.command("migrate", f"ct:{vmid}", target)

    return cluster.start_task(node, "hamigrate", str(vmid), authid, body).upid


def relocation_task(cluster: SimCluster, vmid: int, source: str, target: str) -> Task:
    """The HA LRM's relocation of a CT (pve-ha-manager ``src/PVE/HA/Resources/PVECT.pm``
    ``migrate``: ``migrate_vm`` with ``restart => 1`` when it runs, ``online => 0``), a ``vzmigrate``
    task of root@pam on the source node."""
    options = _MigrateOptions(target=target, online=False, restart=True, timeout=180, storage_map=None)
    return cluster.start_task(
        source, "vzmigrate", str(vmid), "root@pam", lambda task: _migrate(cluster, task, source, vmid, options)
    )


class _Log:
    """AbstractMigrate's log: every line prefixed with the time (and ``ERROR:`` for errors)."""

    def __init__(self, cluster: SimCluster, task: Task) -> None:
        self._cluster = cluster
        self._task = task

    @property
    def task(self) -> Task:
        """The task itself, for output that bypasses ``$self->log`` (a ``warn`` goes to the log as is)."""
        return self._task

    def info(self, message: str) -> None:
        prefix = format_log_time(self._cluster.now())
        for line in message.rstrip("\n").split("\n"):
            self._task.log(f"{prefix} {line}")

    def err(self, message: str) -> None:
        prefix = format_log_time(self._cluster.now())
        for line in message.rstrip("\n").split("\n"):
            self._task.log(f"{prefix} ERROR: {line}")


def _migrate(cluster: SimCluster, task: Task, source: str, vmid: int, options: _MigrateOptions) -> Worker:
    """The ``vzmigrate`` worker: prepare, phase 1 (copy + move config), phase 3, final cleanup."""
    log = _Log(cluster, task)
    started = cluster.now()
    yield from cluster.flock(task, vmid)
    try:
        try:
            was_running = yield from _prepare(cluster, log, source, vmid, options)
            yield from _phase1_with_cleanup(cluster, task, log, source, vmid, options, was_running)
        except TaskError as err:
            log.err(f"migration aborted (duration {format_duration(cluster.now() - started)}): {err.message}")
            raise TaskError("migration aborted") from None
        yield from _final_cleanup_on_target(cluster, log, vmid, options, was_running)
        log.info(f"migration finished successfully (duration {format_duration(cluster.now() - started)})")
    finally:
        cluster.funlock(task, vmid)


def _prepare(
    cluster: SimCluster, log: _Log, source: str, vmid: int, options: _MigrateOptions
) -> Generator[float, None, bool]:
    """``prepare``: checks, the ssh test to the target, and (restart mode) shutting the CT down."""
    state = cluster.state
    ct = _load(cluster, vmid, source)
    if ct.lock:
        raise TaskError(f"CT is locked ({ct.lock})")
    running = ct.running
    if running:
        if options.online:
            raise TaskError("lxc live migration is currently not implemented")
        if not options.restart:
            raise TaskError(RESTART_MODE_ONLY_ERROR)
    for key, raw in sorted(ct.config.items()):
        if not (key == "rootfs" or key.startswith("mp") or key.startswith("unused")):
            continue
        volume = parse_property_string(str(raw), "volume")
        volid = volume.get("volume", "")
        if volid.startswith("/"):
            if volume.get("shared") in ("1", "on", "yes", "true"):
                continue
            kind = "device" if volid.startswith("/dev/") else "bind"
            raise TaskError(f"cannot migrate local {kind} mount point '{key}'")
        sid = volid.split(":", 1)[0]
        storage = _enabled(cluster, sid, source)
        if "rootdir" not in storage.content:
            raise TaskError(f"content type 'rootdir' is not available on storage '{sid}'")
        target_sid = sid if storage.shared else options.map_storage(sid)
        target_storage = _enabled(cluster, target_sid, options.target)
        if "rootdir" not in target_storage.content:
            raise TaskError(f"{volid}: content type 'rootdir' is not available on storage '{target_sid}'")
    yield state.timing.migrate_base_seconds / 2
    if not state.nodes[options.target].online:
        raise TaskError("Can't connect to destination address using public key")
    if options.restart and running:
        log.info(f"shutdown CT {vmid}")
        # PVE::LXC::vm_stop($vmid, 0, $timeout): no kill. A CT that ignores the shutdown makes this
        # die "container did not stop" after 2 * timeout + 5 s; prepare fails before phase 1, so the
        # CT is not touched again: it keeps running on the source.
        yield from stop_container(cluster, ct, timeout=options.timeout, kill_after_timeout=False, task=log.task)
    return running


def _phase1_with_cleanup(
    cluster: SimCluster,
    task: Task,
    log: _Log,
    source: str,
    vmid: int,
    options: _MigrateOptions,
    was_running: bool,
) -> Iterator[float]:
    copied: list[str] = []
    try:
        yield from _phase1(cluster, task, log, source, vmid, options, copied)
    except TaskError as err:
        log.err(err.message)
        log.info("aborting phase 1 - cleanup resources")
        for volid in copied:
            log.err(f"found stale volume copy '{volid}' on node '{options.target}'")
        log.info("start final cleanup")
        ct = cluster.state.containers.get(vmid)
        if ct is not None and ct.node == source:
            if ct.lock == "migrate":
                del ct.config["lock"]
                cluster.record(ct)
            if options.restart and was_running and not ct.running:
                log.info("start container on source node")
                yield cluster.state.timing.start_seconds
                cluster.set_running(ct, True)
        raise


def _phase1(
    cluster: SimCluster,
    task: Task,
    log: _Log,
    source: str,
    vmid: int,
    options: _MigrateOptions,
    copied: list[str],
) -> Iterator[float]:
    """``phase1``: lock ``migrate``, copy local volumes, move the config to the target node."""
    state = cluster.state
    ct = _load(cluster, vmid, source)
    target = state.nodes[options.target]
    log.info(f"starting migration of CT {vmid} to node '{target.name}' ({target.ip})")
    ct.config["lock"] = "migrate"
    cluster.record(ct)
    volumes = ct.volumes()
    local: list[tuple[Volume, StorageState, str]] = []
    for volume in sorted(volumes, key=lambda v: v.volid):
        storage = state.storage_config(volume.storage)
        if storage.shared:
            log.info(f"volume '{volume.volid}' is on shared storage '{storage.sid}'")
            continue
        local.append((volume, storage, options.map_storage(storage.sid)))
    for volume, _storage, _target_sid in local:
        log.info(f"found local volume '{volume.volid}' (in current VM config)")
    cluster.injected_failure(task)
    volume_map: dict[str, str] = {}
    rate = state.timing.migrate_mib_per_second
    if options.bwlimit_kib:
        rate = min(rate, options.bwlimit_kib / 1024)  # bwlimit is KiB/s, like PVE's
    for volume, storage, target_sid in local:
        target_storage = state.storage_config(target_sid)
        name = volume.volid.split(":", 1)[1]
        new_volid = (
            f"{target_sid}:{name}"
            if target_sid == storage.sid
            else state.next_volume_name(target_storage, vmid, options.target)
        )
        if target_storage.type in ("lvmthin", "lvm"):
            log.info(f'  Logical volume "{new_volid.split(":", 1)[1]}" created.')
        seconds = (volume.size_bytes / (1024 * 1024)) / rate if rate > 0 else 0.0
        yield seconds
        copied.append(new_volid)
        records = volume.size_bytes // 32768
        log.info(f"{records}+0 records in")
        log.info(f"{records}+0 records out")
        log.info(
            f"{volume.size_bytes} bytes ({volume.size_bytes / 1e9:.1f} GB, {volume.size_bytes / 2**30:.1f} GiB) "
            f"copied, {seconds:.4f} s, {rate * 1.048576:.0f} MB/s"
        )
        log.info(f"successfully imported '{new_volid}'")
        log.info(f"volume '{volume.volid}' is '{new_volid}' on the target")
        volume_map[volume.volid] = new_volid
    ct = _load(cluster, vmid, source)
    for key, raw in list(ct.config.items()):
        if not (key == "rootfs" or key.startswith("mp") or key.startswith("unused")):
            continue
        parsed = parse_property_string(str(raw), "volume")
        if parsed.get("volume") in volume_map:
            parsed["volume"] = volume_map[parsed["volume"]]
            ct.config[key] = print_property_string(parsed, "rootfs" if key == "rootfs" else key.rstrip("0123456789"))
    ct.node = options.target
    cluster.record(ct)


def _final_cleanup_on_target(
    cluster: SimCluster, log: _Log, vmid: int, options: _MigrateOptions, was_running: bool
) -> Iterator[float]:
    """phase 3 frees the source copies; ``final_cleanup`` unlocks on the target and restarts there."""
    state = cluster.state
    yield state.timing.migrate_base_seconds / 2
    log.info("start final cleanup")
    ct = state.containers.get(vmid)
    if ct is None:
        return
    if ct.lock == "migrate":
        del ct.config["lock"]
        cluster.record(ct)
    if options.restart and was_running:
        target = state.nodes[options.target]
        log.info("start container on target node")
        log.info(
            f"# /usr/bin/ssh -e none -o 'BatchMode=yes' -o 'HostKeyAlias={target.name}' "
            f"-o 'UserKnownHostsFile=/etc/pve/nodes/{target.name}/ssh_known_hosts' "
            f"-o 'GlobalKnownHostsFile=none' root@{target.ip} pct start {vmid}"
        )
        yield state.timing.start_seconds
        ct = state.containers.get(vmid)
        if ct is not None and not ct.running:
            apply_pending(cluster, ct)
            cluster.set_running(ct, True)


def _load(cluster: SimCluster, vmid: int, node: str) -> ContainerState:
    ct = cluster.state.containers.get(vmid)
    if ct is None or ct.node != node:
        raise TaskError(f"Configuration file '{cluster.state.config_path(vmid, node)}' does not exist")
    return ct


def _enabled(cluster: SimCluster, sid: str, node: str) -> StorageState:
    try:
        return cluster.state.storage_check_enabled(sid, node)
    except Exception as err:  # PveApiError from the storage layer: a task failure here
        raise TaskError(getattr(err, "message", str(err))) from None

"""Cluster-wide endpoints (pve-manager ``API2/Cluster.pm``, ``API2.pm`` version, pve-ha-manager status).

``/cluster/resources`` is the operator's main read: one call for every guest, node, storage and pool.
Like PVE it reports guests and node statistics as pvestatd last broadcast them (see
:meth:`SimCluster.stats_view`), while ``lock``, ``tags`` and ``pool`` are read live from the
configs. It has to stay fast with thousands of CTs: one pass over the CTs, permissions cached, no
per-CT allocation beyond the entry itself.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from pve_sim.access import allowed_tags
from pve_sim.errors import ParameterError, internal
from pve_sim.handlers.common import number, resource_entry
from pve_sim.handlers.guest_access import guest_tags
from pve_sim.handlers.registry import Perm, route

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pve_sim.cluster import Request, SimCluster, StatsView
    from pve_sim.history import CtUsage
    from pve_sim.state import StorageState


@route("GET", "/version")
def version(cluster: SimCluster, req: Request) -> object:
    full = cluster.state.pve_version
    release = ".".join(full.split(".")[:2])
    return {"version": full, "release": release, "repoid": cluster.state.repoid}


def _major(cluster: SimCluster) -> int:
    head = cluster.state.pve_version.split(".", 1)[0]
    return int(head) if head.isdigit() else 9


@route("GET", "/cluster/resources")
def resources(cluster: SimCluster, req: Request) -> object:
    """Pools, guests, nodes, storages (and SDN/network zones), filtered per entry by permission."""
    kind = req.opt_text("type")
    authid = req.authid
    access = cluster.access
    state = cluster.state
    view = cluster.stats_view()
    result: list[dict[str, object]] = []

    pool_entries: dict[str, dict[str, object]] = {}
    if kind is None or kind == "pool":
        for poolid in sorted(access.pools):
            if not access.allowed(authid, f"/pool/{poolid}", ["Pool.Audit"]):
                continue
            entry: dict[str, object] = {"id": f"/pool/{poolid}", "pool": poolid, "type": "pool"}
            pool_entries[poolid] = entry
            result.append(entry)

    if kind is None or kind == "vm":
        vm_pool = access.vm_pool
        ha = state.ha_resources
        if ha:
            cluster.ha.sync()
        containers = state.containers
        for vmid in sorted(containers, key=str):
            ct = containers[vmid]
            entry = resource_entry(cluster, ct, view.cts.get(vmid), view.epoch)
            member_of = vm_pool.get(vmid)
            if member_of is not None:
                entry["pool"] = member_of
                pool_entry = pool_entries.get(member_of)
                if pool_entry is not None and entry.get("uptime"):
                    _add_to_pool(pool_entry, entry)
            if not access.allowed(authid, f"/vms/{vmid}", ["VM.Audit"]):
                continue
            lock = ct.config.get("lock")
            if lock:
                entry["lock"] = lock
            tags = ct.config.get("tags")
            if tags:
                entry["tags"] = tags
            if member_of is not None and not access.allowed(authid, f"/pool/{member_of}", ["Pool.Audit"]):
                del entry["pool"]
            if f"ct:{vmid}" in ha:
                hastate = cluster.ha.service_state(f"ct:{vmid}")
                if hastate is not None:
                    entry["hastate"] = hastate
            result.append(entry)

    if kind is None or kind == "node":
        for name in state.nodes:
            result.append(
                node_entry(cluster, name, view, audit=access.allowed(authid, f"/nodes/{name}", ["Sys.Audit"]))
            )

    if kind is None or kind == "storage":
        used = storage_usage(cluster, view.cts)
        for sid in sorted(state.storages):
            if not access.allowed(authid, f"/storage/{sid}", ["Datastore.Audit"]):
                continue
            storage = state.storages[sid]
            if not storage.enabled:
                continue
            for name, node in state.nodes.items():
                if not storage.available_on(name):
                    continue
                entry = {
                    "id": f"storage/{name}/{sid}",
                    "storage": sid,
                    "node": name,
                    "type": "storage",
                    "plugintype": storage.type,
                    "status": "unknown",
                    "shared": 1 if storage.shared else 0,
                    "content": storage.content_string(),
                }
                if node.online:
                    entry["maxdisk"] = storage.capacity_bytes
                    entry["disk"] = storage_used(cluster, storage, name, used)
                    entry["status"] = "available"
                result.append(entry)

    if _major(cluster) < 9:
        if kind is None or kind == "sdn":
            for name in sorted(state.nodes):
                if access.allowed(authid, "/sdn/zones/localnetwork", ["SDN.Audit"]):
                    result.append(
                        {
                            "id": f"sdn/{name}/localnetwork",
                            "sdn": "localnetwork",
                            "node": name,
                            "type": "sdn",
                            "status": "ok",
                        }
                    )
    elif kind is None and access.allowed(authid, "/sdn/zones/localnetwork", ["SDN.Audit"]):
        for name in state.nodes:
            result.append(
                {
                    "id": f"network/{name}/zone/localnetwork",
                    "type": "network",
                    "network-type": "zone",
                    "network": "localnetwork",
                    "node": name,
                    "status": "ok",
                }
            )
    return result


def _add_to_pool(pool_entry: dict[str, object], entry: dict[str, object]) -> None:
    """Pool statistics as PVE sums them from running members (weighted CPU)."""
    uptime = int(entry.get("uptime", 0))  # type: ignore[call-overload]
    if uptime > int(pool_entry.get("uptime", 0)):  # type: ignore[call-overload]
        pool_entry["uptime"] = uptime
    pool_entry["mem"] = int(pool_entry.get("mem", 0)) + int(entry.get("mem", 0))  # type: ignore[call-overload]
    pool_entry["maxmem"] = int(pool_entry.get("maxmem", 0)) + int(entry.get("maxmem", 0))  # type: ignore[call-overload]
    old_cpu = float(pool_entry.get("cpu", 0))  # type: ignore[arg-type]
    old_max = float(pool_entry.get("maxcpu", 0))  # type: ignore[arg-type]
    cpu = float(entry.get("cpu", 0))  # type: ignore[arg-type]
    maxcpu = float(entry.get("maxcpu", 0))  # type: ignore[arg-type]
    total = old_max + maxcpu
    pool_entry["cpu"] = (old_cpu * old_max + cpu * maxcpu) / total if total else 0
    pool_entry["maxcpu"] = number(total)


def node_entry(cluster: SimCluster, name: str, view: StatsView, *, audit: bool) -> dict[str, object]:
    """``extract_node_stats``: status from membership (live), statistics from the last broadcast."""
    node = cluster.state.nodes[name]
    usage = view.nodes.get(name)
    entry: dict[str, object] = {"id": f"node/{name}", "node": name, "type": "node", "status": "unknown"}
    if usage is not None:
        if node.online:
            if audit:
                entry["uptime"] = max(0, int(view.epoch - node.boot_epoch))
                entry["cpu"] = usage.cpu_fraction
                entry["mem"] = usage.mem_bytes
                entry["disk"] = usage.rootfs_used_bytes
            entry["status"] = "online"
        entry["level"] = ""
        if audit:
            entry["maxcpu"] = usage.cores
            entry["maxmem"] = usage.memory_bytes
            entry["maxdisk"] = usage.rootfs_bytes
    if not node.online:
        entry["status"] = "offline"
    entry["cgroup-mode"] = 2
    if cluster.state.ha_resources:
        # pve-manager ``API2/Cluster.pm``: the manager status' ``node_status`` of the node.
        entry["hastate"] = cluster.ha.node_status.get(name) or ("online" if node.online else "unknown")
    return entry


def storage_usage(cluster: SimCluster, ct_usages: Mapping[int, CtUsage]) -> dict[tuple[str, str], int]:
    """Bytes CT root volumes use, per (storage, node); shared storages under node ``""``."""
    state = cluster.state
    totals: dict[tuple[str, str], int] = {}
    for vmid, usage in ct_usages.items():
        if usage.storage is None:
            continue
        storage = state.storages.get(usage.storage)
        if storage is None:
            continue
        key = (usage.storage, "" if storage.shared else usage.node)
        used = usage.disk_bytes
        ct = state.containers.get(vmid)
        base_vmid = state.linked_rootfs_base(ct) if ct is not None else None
        base_usage = ct_usages.get(base_vmid) if base_vmid is not None else None
        if base_usage is not None and base_usage.storage == usage.storage:
            used -= min(used, base_usage.disk_bytes)  # a linked clone stores only what differs from its base
        totals[key] = totals.get(key, 0) + used
    return totals


def storage_used(cluster: SimCluster, storage: StorageState, node: str, totals: dict[tuple[str, str], int]) -> int:
    """Used bytes of a storage on a node: unmodelled base use + CT root volumes + templates."""
    used = storage.base_used_bytes + totals.get((storage.sid, "" if storage.shared else node), 0)
    for template in cluster.state.templates.values():
        if template.storage == storage.sid:
            used += template.size_bytes
    return min(used, storage.capacity_bytes)


@route("GET", "/cluster/nextid")
def nextid(cluster: SimCluster, req: Request) -> object:
    """The lowest free VMID from 100, as a string (PVE's Perl stringifies it); ``vmid`` asserts one."""
    vmid = req.opt_integer("vmid")
    if vmid:
        if vmid in cluster.state.containers:
            raise ParameterError({"vmid": f"VM {vmid} already exists"})
        return str(vmid)
    for candidate in range(100, 1_000_000):
        if candidate not in cluster.state.containers:
            return str(candidate)
    raise internal("unable to get any free VMID in range [100, 1000000]")


@route("GET", "/cluster/status", perm=Perm("/", ("Sys.Audit",)))
def cluster_status(cluster: SimCluster, req: Request) -> object:
    state = cluster.state
    entry_node = next(iter(state.nodes), "")
    result: list[dict[str, object]] = [
        {
            "type": "cluster",
            "id": "cluster",
            "nodes": len(state.nodes),
            "version": state.config_version,
            "name": cluster.name,
            "quorate": 1 if cluster.is_quorate() else 0,
        }
    ]
    for name in sorted(state.nodes):
        node = state.nodes[name]
        result.append(
            {
                "type": "node",
                "id": f"node/{name}",
                "name": name,
                "nodeid": node.nodeid,
                "local": 1 if name == entry_node else 0,
                "online": 1 if node.online else 0,
                "ip": node.ip,
                "level": "",
            }
        )
    return result


# ------------------------------------------------------------------------------ datacenter options


@route("GET", "/cluster/options")
def get_options(cluster: SimCluster, req: Request) -> object:
    """pve-manager ``PVE/API2/Cluster.pm`` ``get_options``: datacenter.cfg plus ``allowed-tags``.

    Declared ``user => 'all'`` (its ``check`` on ``/`` Sys.Audit never runs): with Sys.Audit on
    ``/`` the whole parsed datacenter.cfg, else only ``console`` and ``tag-style``; always
    ``allowed-tags``, the sorted tags ``get_allowed_tags`` lets the caller set and see.
    """
    access = cluster.access
    config = access.datacenter.as_config()
    if req.is_root or access.allowed(req.authid, "/", ["Sys.Audit"]):
        result: dict[str, object] = config
    else:
        result = {key: config[key] for key in ("console", "tag-style") if key in config}
    privileged = True if req.is_root else None
    tags, _registered, _free = allowed_tags(access, access.datacenter, req.authid, guest_tags(cluster), privileged)
    result["allowed-tags"] = sorted(tags)
    return result


# ------------------------------------------------------------------------------ storage.cfg

# Storage types whose storage.cfg entry carries no ``shared`` key: they are shared by nature
# (pve-storage plugins that do not declare the ``shared`` option).
_INHERENTLY_SHARED = frozenset({"nfs", "cifs", "cephfs", "rbd", "pbs", "iscsi", "iscsidirect", "glusterfs"})


def storage_config_entry(storage: StorageState, digest: str) -> dict[str, object]:
    """One storage as pve-storage ``API2/Storage/Config.pm`` ``$api_storage_config`` returns it.

    The section's keys plus ``storage`` and the file's ``digest``; ``content`` as
    ``content_hash_to_string`` prints it (``none`` when empty), ``nodes`` comma-separated when
    restricted. Only what the simulator models is present (``local`` is PVE's fixed
    ``/var/lib/vz`` directory storage).
    """
    entry: dict[str, object] = {
        "storage": storage.sid,
        "type": storage.type,
        "content": storage.content_string() or "none",
        "digest": digest,
    }
    if storage.sid == "local" and storage.type == "dir":
        entry["path"] = "/var/lib/vz"
    if storage.shared and storage.type not in _INHERENTLY_SHARED:
        entry["shared"] = 1
    if not storage.enabled:
        entry["disable"] = 1
    if storage.nodes is not None:
        entry["nodes"] = ",".join(sorted(storage.nodes))
    return entry


def storage_cfg_digest(cluster: SimCluster) -> str:
    """A SHA-1 over the storage configuration, standing in for storage.cfg's ``digest``."""
    text = "\n".join(
        f"{s.type}: {s.sid}|{s.content_string()}|{int(s.shared)}|{int(s.enabled)}|{sorted(s.nodes or ())}"
        for s in sorted(cluster.state.storages.values(), key=lambda s: s.sid)
    )
    return hashlib.sha1(text.encode()).hexdigest()


@route("GET", "/storage")
def storage_index(cluster: SimCluster, req: Request) -> object:
    """pve-storage ``PVE/API2/Storage/Config.pm`` ``index``: the storages the caller may see.

    ``user => 'all'``; a storage is listed when the caller holds Datastore.Audit or
    Datastore.AllocateSpace on ``/storage/<id>`` (``check_any``, pool roles included), filtered by
    ``type`` when given.
    """
    digest = storage_cfg_digest(cluster)
    wanted = req.opt_text("type")
    result = []
    for sid in sorted(cluster.state.storages):
        if not req.is_root and not cluster.access.allowed(
            req.authid, f"/storage/{sid}", ["Datastore.Audit", "Datastore.AllocateSpace"], any_of=True
        ):
            continue
        storage = cluster.state.storages[sid]
        if wanted and storage.type != wanted:
            continue
        result.append(storage_config_entry(storage, digest))
    return result

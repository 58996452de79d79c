"""Pool endpoints (pve-manager ``API2/Pool.pm``). Pools live in the user config (:mod:`pve_sim.access`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pve_sim.errors import internal
from pve_sim.handlers.cluster import storage_usage, storage_used
from pve_sim.handlers.common import resource_entry
from pve_sim.handlers.registry import Perm, route

if TYPE_CHECKING:
    from pve_sim.cluster import Request, SimCluster


def _pool_info(cluster: SimCluster, poolid: str, member_type: str | None) -> dict[str, object]:
    """One pool with its ``members`` (guests as pvestatd last saw them, storages of the entry node)."""
    pool = cluster.access.pools.get(poolid)
    if pool is None:
        raise internal(f"pool '{poolid}' does not exist")
    view = cluster.stats_view()
    members: list[dict[str, object]] = []
    for vmid in sorted(pool.vms, key=str):
        ct = cluster.state.containers.get(vmid)
        if ct is None or (member_type is not None and member_type != "lxc"):
            continue
        members.append(resource_entry(cluster, ct, view.cts.get(vmid), view.epoch))
    if member_type is None or member_type == "storage":
        entry_node = next(iter(cluster.state.nodes), "")
        totals = storage_usage(cluster, view.cts)
        for sid in sorted(pool.storage):
            storage = cluster.state.storages.get(sid)
            if storage is None:
                continue
            node = entry_node
            if storage.nodes is not None and node not in storage.nodes:
                node = sorted(storage.nodes)[0]
            entry: dict[str, object] = {
                "id": f"storage/{node}/{sid}",
                "storage": sid,
                "node": node,
                "type": "storage",
                "plugintype": storage.type,
                "status": "unknown",
                "shared": 1 if storage.shared else 0,
                "content": storage.content_string(),
            }
            if cluster.state.nodes[node].online and storage.enabled:
                entry["maxdisk"] = storage.capacity_bytes
                entry["disk"] = storage_used(cluster, storage, node, totals)
                entry["status"] = "available"
            members.append(entry)
    info: dict[str, object] = {"members": members}
    if pool.comment is not None:
        info["comment"] = pool.comment
    info["poolid"] = poolid
    return info


@route("GET", "/pools")
def pools_index(cluster: SimCluster, req: Request) -> object:
    """Pools the caller may audit; with ``poolid`` that one pool with its members."""
    poolid = req.opt_text("poolid")
    if poolid:
        return [_pool_info(cluster, poolid, req.opt_text("type"))]
    result = []
    for name in sorted(cluster.access.pools):
        if not cluster.access.allowed(req.authid, f"/pool/{name}", ["Pool.Audit"]):
            continue
        pool = cluster.access.pools[name]
        entry: dict[str, object] = {"poolid": name}
        if pool.comment is not None:
            entry["comment"] = pool.comment
        result.append(entry)
    return result


@route("POST", "/pools", perm=Perm("/pool/{poolid}", ("Pool.Allocate",)))
def create_pool(cluster: SimCluster, req: Request) -> object:
    cluster.access.create_pool(req.text("poolid"), req.opt_text("comment"))
    return None


@route("GET", "/pools/{poolid}", perm=Perm("/pool/{poolid}", ("Pool.Audit",)))
def read_pool(cluster: SimCluster, req: Request) -> object:
    return _pool_info(cluster, req.text("poolid"), req.opt_text("type"))


@route("DELETE", "/pools/{poolid}", perm=Perm("/pool/{poolid}", ("Pool.Allocate",)))
def delete_pool(cluster: SimCluster, req: Request) -> object:
    cluster.access.delete_pool(req.text("poolid"), cluster.state.containers.keys(), cluster.state.storages.keys())
    return None


@route("DELETE", "/pools", perm=Perm("/pool/{poolid}", ("Pool.Allocate",)))
def delete_pool_by_param(cluster: SimCluster, req: Request) -> object:
    """``DELETE /pools?poolid=X`` (pve-manager ``API2/Pool.pm`` ``delete_pool``, PVE 8.1+): the same
    checks as the deprecated ``DELETE /pools/{poolid}`` (only empty pools)."""
    return delete_pool(cluster, req)

"""Node endpoints (pve-manager ``API2/Nodes.pm``, pve-storage ``API2/Storage/Status.pm``).

``/nodes`` reports what pvestatd last broadcast; ``/nodes/{node}/status`` reads the node live; both
derive from the load model (base load plus the CTs running on the node).
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pve_sim.errors import ParameterError, internal
from pve_sim.formats import split_list
from pve_sim.handlers.cluster import node_entry, storage_usage, storage_used
from pve_sim.handlers.registry import Perm, route
from pve_sim.pressure import node_pressure
from pve_sim.rrd import has_pve9_rrd, node_rrd_keys, only_keys, rrd_rows, rrd_timeframes

if TYPE_CHECKING:
    from pve_sim.cluster import Request, SimCluster

_CPU_FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ss ht "
    "syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology cpuid pni pclmulqdq ssse3 fma cx16 "
    "pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm abm 3dnowprefetch "
    "avx2 bmi1 bmi2 erms invpcid avx512f avx512dq rdseed adx smap clflushopt clwb avx512cd sha_ni avx512bw "
    "avx512vl xsaveopt xsavec xgetbv1 xsaves arat vnmi avx512vbmi umip pku ospke avx512_vbmi2 gfni vaes "
    "vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq la57 rdpid fsrm md_clear arch_capabilities"
)


@route("GET", "/nodes")
def nodes_index(cluster: SimCluster, req: Request) -> object:
    view = cluster.stats_view()
    result = []
    for name, node in cluster.state.nodes.items():
        audit = cluster.access.allowed(req.authid, f"/nodes/{name}", ["Sys.Audit"])
        entry = node_entry(cluster, name, view, audit=audit)
        entry.pop("cgroup-mode", None)
        entry.pop("hastate", None)
        entry["ssl_fingerprint"] = node.ssl_fingerprint()
        result.append(entry)
    return result


@route("GET", "/nodes/{node}/status", perm=Perm("/nodes/{node}", ("Sys.Audit",)), proxy=True)
def node_status(cluster: SimCluster, req: Request) -> object:
    """The node read live: CPU, memory, root filesystem from base load plus running CTs."""
    name = req.node
    node = cluster.state.nodes[name]
    usage = cluster.node_usage_now(name)
    now = cluster.now()
    load = usage.cpu_fraction * usage.cores
    memory_free = usage.memory_bytes - usage.mem_bytes
    rootfs_free = usage.rootfs_bytes - usage.rootfs_used_bytes
    return {
        "uptime": node.uptime_seconds(now),
        "loadavg": [f"{load:.2f}", f"{load * 0.95:.2f}", f"{load * 0.9:.2f}"],
        "kversion": f"Linux {node.kernel_release} {node.kernel_version}",
        "current-kernel": {
            "sysname": "Linux",
            "release": node.kernel_release,
            "version": node.kernel_version,
            "machine": "x86_64",
        },
        "boot-info": {"mode": "efi", "secureboot": 0},
        "cpuinfo": {
            "model": node.cpu_model,
            "cpus": node.cores,
            "sockets": node.sockets,
            "cores": max(1, node.cores // max(1, node.sockets) // 2),
            "mhz": "2400.000",
            "hvm": "1",
            "flags": _CPU_FLAGS,
            "user_hz": 100,
        },
        "cpu": usage.cpu_fraction,
        "wait": 0.0004,
        "idle": 0,
        "memory": {
            "total": usage.memory_bytes,
            "used": usage.mem_bytes,
            "free": memory_free,
            "available": memory_free,
        },
        "ksm": {"shared": 0},
        "swap": {"total": node.swap_bytes, "used": 0, "free": node.swap_bytes},
        "pveversion": f"pve-manager/{cluster.state.pve_version}/{cluster.state.repoid}",
        "rootfs": {
            "total": usage.rootfs_bytes,
            "used": usage.rootfs_used_bytes,
            "free": rootfs_free,
            "avail": rootfs_free,
        },
    }


@route("GET", "/nodes/{node}/version", proxy=True)
def node_version(cluster: SimCluster, req: Request) -> object:
    full = cluster.state.pve_version
    return {"version": full, "release": ".".join(full.split(".")[:2]), "repoid": cluster.state.repoid}


@route("GET", "/nodes/{node}/qemu", proxy=True)
def qemu_list(cluster: SimCluster, req: Request) -> object:
    """The simulator has containers only."""
    return []


@route("GET", "/nodes/{node}/rrddata", perm=Perm("/nodes/{node}", ("Sys.Audit",)))
def node_rrddata(cluster: SimCluster, req: Request) -> object:
    """RRD rows of a node from the load history (not proxied: every node has the cluster's RRDs).

    PSI columns (PVE 9) come from :mod:`pve_sim.pressure`; a PVE 8 scenario answers the twelve
    ``pve2-node`` columns only.
    """
    name = req.node
    if name not in cluster.state.nodes:
        raise internal(f"RRD error: opening '/var/lib/rrdcached/db/pve-node-9.0/{name}': No such file or directory")
    node = cluster.state.nodes[name]
    usage_model = cluster.usage

    def sample(epoch: float) -> Mapping[str, float]:
        if not usage_model.node_online_at(name, epoch):
            return {}
        usage = usage_model.node_usage_at(name, epoch)
        busy = usage.cpu_fraction * usage.cores
        net = 2_000.0 + busy * 250_000.0
        return {
            "loadavg": busy,
            "maxcpu": float(usage.cores),
            "cpu": usage.cpu_fraction,
            "iowait": 0.0004,
            "memtotal": float(usage.memory_bytes),
            "memused": float(usage.mem_bytes),
            "swaptotal": float(node.swap_bytes),
            "swapused": 0.0,
            "roottotal": float(usage.rootfs_bytes),
            "rootused": float(usage.rootfs_used_bytes),
            "netin": net,
            "netout": net * 0.6,
            "memavailable": float(usage.memory_bytes - usage.mem_bytes),
            "arcsize": 0.0,
            **node_pressure(usage),
        }

    version = cluster.state.pve_version
    return rrd_rows(
        req.text("timeframe"),
        req.opt_text("cf") or "AVERAGE",
        cluster.now(),
        cluster.clock.start_epoch,
        sample if has_pve9_rrd(version) else only_keys(sample, node_rrd_keys(version)),
        timeframes=rrd_timeframes(version),
    )


@route("GET", "/nodes/{node}/storage", proxy=True)
def storage_index(cluster: SimCluster, req: Request) -> object:
    """Storages as seen from the node, with space figures; only those the caller may audit or use."""
    node = req.node
    state = cluster.state
    content = req.opt_text("content")
    wanted_content = split_list(content) if content is not None else None
    only = req.opt_text("storage")
    enabled_only = req.flag("enabled")
    target = req.opt_text("target")
    if target in (node, "localhost"):
        target = None

    info: dict[str, dict[str, object]] = {}
    for sid, storage in state.storages.items():
        enabled = storage.enabled and storage.available_on(node)
        if wanted_content is not None and (not enabled or not any(c in storage.content for c in wanted_content)):
            continue
        info[sid] = {
            "type": storage.type,
            "total": 0,
            "avail": 0,
            "used": 0,
            "shared": 1 if storage.shared else 0,
            "content": storage.content_string(),
            "active": 0,
            "enabled": 1 if enabled else 0,
        }
    if only and only not in info:
        raise ParameterError({"storage": "No such storage."})
    totals = storage_usage(cluster, cluster.usage.nodes_usage_at(cluster.now(), state.containers.keys())[0])
    result = []
    for sid in sorted(info):
        data = info[sid]
        if not cluster.access.allowed(
            req.authid, f"/storage/{sid}", ["Datastore.Audit", "Datastore.AllocateSpace"], any_of=True
        ):
            continue
        if only and only != sid:
            continue
        storage = state.storages[sid]
        if enabled_only and not storage.enabled:
            continue
        if target is not None and (
            not storage.shared or not storage.available_on(node) or not storage.available_on(target)
        ):
            continue
        if data["enabled"]:
            used = storage_used(cluster, storage, node, totals)
            data["total"] = storage.capacity_bytes
            data["used"] = used
            data["avail"] = storage.capacity_bytes - used
            data["active"] = 1
            data["used_fraction"] = used / storage.capacity_bytes if storage.capacity_bytes else 0
        result.append({"storage": sid, **data})
    return result


_TEMPLATE_FORMATS = {"gz": "tgz", "xz": "txz", "zst": "tzst", "bz2": "tbz2"}


@route(
    "GET",
    "/nodes/{node}/storage/{storage}/content",
    perm=Perm("/storage/{storage}", ("Datastore.Audit", "Datastore.AllocateSpace"), any_of=True),
    proxy=True,
)
def storage_content(cluster: SimCluster, req: Request) -> object:
    """Volumes of one storage as seen from the node (pve-storage ``API2/Storage/Content.pm`` ``index``):
    the CT templates (``vztmpl``) and the CTs' volumes (``rootdir``), filtered by ``content`` and
    ``vmid``. The storage must exist, be enabled and be available on the node, as
    ``storage_check_enabled`` demands (``storage 'x' is not available on node 'y'``, 500)."""
    node = req.node
    state = cluster.state
    sid = req.text("storage")
    storage = state.storage_check_enabled(sid, node)
    wanted = req.opt_text("content")
    vmid = req.opt_integer("vmid")
    items: list[dict[str, object]] = []
    if wanted in (None, "vztmpl") and vmid is None and "vztmpl" in storage.content:
        for template in sorted(state.templates.values(), key=lambda t: t.volid):
            if template.storage != sid:
                continue
            suffix = template.filename.rsplit(".", 1)[-1]
            items.append(
                {
                    "volid": template.volid,
                    "content": "vztmpl",
                    "format": _TEMPLATE_FORMATS.get(suffix, suffix),
                    "size": template.size_bytes,
                    "ctime": int(cluster.clock.start_epoch),
                }
            )
    if wanted in (None, "rootdir"):
        for ct in sorted(state.containers.values(), key=lambda c: c.vmid):
            if (vmid is not None and ct.vmid != vmid) or (not storage.shared and ct.node != node):
                continue
            for volume in ct.volumes():
                if volume.storage == sid:
                    items.append(
                        {
                            "volid": volume.volid,
                            "content": "rootdir",
                            "format": "raw",
                            "size": volume.size_bytes,
                            "vmid": ct.vmid,
                        }
                    )
    return items


# ------------------------------------------------------------------------------ DNS (/etc/resolv.conf)

_RESOLV_CONF: weakref.WeakKeyDictionary[SimCluster, dict[str, str]] = weakref.WeakKeyDictionary()
"""Each node's /etc/resolv.conf text, per simulated cluster (absent = the default below)."""

_RESOLV_LINE_RE = re.compile(r"^(search|domain)\s+(\S+)\s*")
_NAMESERVER_RE = re.compile(r"^\s*nameserver\s+(\S+)\s*")


def _resolv_conf(cluster: SimCluster, node: str) -> str:
    """The node's resolv.conf; by default a search domain named after the cluster and one resolver
    on the node network (the simulator's choice: the installer writes what the admin typed)."""
    return _RESOLV_CONF.get(cluster, {}).get(node, f"search {cluster.name}.lan\nnameserver 10.10.0.1\n")


@route("GET", "/nodes/{node}/dns", perm=Perm("/nodes/{node}", ("Sys.Audit",)), proxy=True)
def read_dns(cluster: SimCluster, req: Request) -> object:
    """pve-manager ``PVE/API2/Nodes.pm`` ``dns``: pve-common ``PVE::INotify::read_etc_resolv_conf``.

    ``search`` is the first word after the last ``search``/``domain`` line; ``dns1``..``dns3`` the
    first three ``nameserver`` lines.
    """
    result: dict[str, object] = {}
    count = 0
    for line in _resolv_conf(cluster, req.node).splitlines():
        match = _RESOLV_LINE_RE.match(line)
        if match:
            result["search"] = match.group(2)
            continue
        server = _NAMESERVER_RE.match(line)
        if server:
            count += 1
            if count <= 3:
                result[f"dns{count}"] = server.group(1)
    return result


@route("PUT", "/nodes/{node}/dns", perm=Perm("/nodes/{node}", ("Sys.Modify",)), proxy=True)
def update_dns(cluster: SimCluster, req: Request) -> object:
    """pve-manager ``PVE/API2/Nodes.pm`` ``update_dns`` (Sys.Modify on ``/nodes/{node}``).

    pve-common ``PVE::INotify::update_etc_resolv_conf`` rewrites the file from the parameters: a
    ``search`` line when ``search`` is non-empty, then ``nameserver`` lines for ``dns1``..``dns3``
    in that order, skipping empty values, ``0.0.0.0`` and repeats; unset servers are gone
    afterwards (nothing is merged with the old file). Lines other than search/domain/nameserver
    would be kept; the simulated file has none.
    """
    lines: list[str] = []
    search = req.opt_text("search")
    if search:
        lines.append(f"search {search}")
    written: set[str] = set()
    for key in ("dns1", "dns2", "dns3"):
        server = req.opt_text(key)
        if server and server != "0.0.0.0" and server not in written:
            written.add(server)
            lines.append(f"nameserver {server}")
    _RESOLV_CONF.setdefault(cluster, {})[req.node] = "".join(f"{line}\n" for line in lines)
    return None

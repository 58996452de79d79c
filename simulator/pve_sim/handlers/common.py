"""Shapes shared by several endpoints: a CT's ``vmstatus`` entry and its ``/cluster/resources`` entry.

``vmstatus`` (pve-container ``PVE::LXC::vmstatus``) is what ``status/current`` and the node's CT
list return, read live. ``/cluster/resources`` and pool member lists use ``extract_vm_stats``
(pve-manager ``API2Tools.pm``), built from what pvestatd last broadcast: before the first broadcast
that saw the CT, only ``id``/``vmid``/``node``/``type`` and ``status: unknown``. A CT of a node that
left the cluster keeps the status and stats of that node's last broadcast (``running``, frozen uptime
and usage) until pmxcfs drops them 5 minutes later; then it is back to ``status: unknown``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pve_sim.history import CtUsage, NodeUsage
from pve_sim.pressure import CT_PRESSURE_KEYS, ct_pressure
from pve_sim.rrd import has_pve9_rrd
from pve_sim.state import ContainerState

if TYPE_CHECKING:
    from pve_sim.cluster import SimCluster

# Synthetic traffic: bytes per second per busy core (network) and per running CT (disk I/O).
_NET_BYTES_PER_CORE_SECOND = 250_000.0
_NET_BASE_BYTES_PER_SECOND = 1_200.0
_DISK_BYTES_PER_CORE_SECOND = 400_000.0


def number(value: float) -> float | int:
    """An int when the value is integral (PVE prints ``cpus: 2``, not ``2.0``)."""
    return int(value) if float(value).is_integer() else value


def io_rates(usage: CtUsage) -> dict[str, float]:
    """Bytes per second of network and disk traffic (RRD ``DERIVE`` sources), from CPU use."""
    if not usage.running:
        return {"netin": 0.0, "netout": 0.0, "diskread": 0.0, "diskwrite": 0.0}
    busy = usage.cpu_fraction * usage.cpus
    net = _NET_BASE_BYTES_PER_SECOND + busy * _NET_BYTES_PER_CORE_SECOND
    disk = busy * _DISK_BYTES_PER_CORE_SECOND
    return {"netin": net, "netout": net * 0.6, "diskread": disk * 0.3, "diskwrite": disk}


def io_counters(usage: CtUsage | None, uptime_seconds: int) -> dict[str, int]:
    """Byte counters since the CT started (``netin``, ``netout``, ``diskread``, ``diskwrite``)."""
    if usage is None or not usage.running:
        return {"netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0}
    return {key: int(rate * uptime_seconds) for key, rate in io_rates(usage).items()}


def vmstatus_entry(
    cluster: SimCluster, ct: ContainerState, usage: CtUsage | None, node_usage: NodeUsage | None = None
) -> dict[str, object]:
    """One CT as ``PVE::LXC::vmstatus`` reports it (live).

    ``node_usage`` is the CT's node's usage now (for the PSI figures of PVE 9); computed when not
    given, so a list of many CTs of one node passes it once.
    """
    now = cluster.now()
    node = cluster.state.nodes[ct.node]
    running = ct.running
    uptime = int(now - ct.started_epoch) if running and ct.started_epoch is not None else 0
    entry: dict[str, object] = {
        "vmid": ct.vmid,
        "type": "lxc",
        "status": "running" if running else "stopped",
        "name": ct.name,
        "cpus": number(ct.cpus(node.cores)),
    }
    if ct.tags:
        entry["tags"] = ct.tags
    if running and usage is not None:
        entry["disk"] = usage.disk_bytes
        entry["maxdisk"] = usage.maxdisk_bytes or ct.maxdisk_bytes
    else:
        entry["disk"] = 0
        entry["maxdisk"] = ct.maxdisk_bytes
    entry["mem"] = usage.mem_bytes if running and usage is not None else 0
    entry["swap"] = 0
    entry["maxmem"] = ct.maxmem_bytes
    entry["maxswap"] = ct.maxswap_bytes
    entry["uptime"] = uptime
    entry["cpu"] = usage.cpu_fraction if running and usage is not None else 0
    entry.update(io_counters(usage if running else None, uptime))
    if ct.is_template:
        entry["template"] = 1
    if ct.lock:
        entry["lock"] = ct.lock
    if running:
        entry["pid"] = ct.pid
        if has_pve9_rrd(cluster.state.pve_version):
            entry.update(_vmstatus_pressure(cluster, ct, usage, node_usage))
    return entry


def _vmstatus_pressure(
    cluster: SimCluster, ct: ContainerState, usage: CtUsage | None, node_usage: NodeUsage | None
) -> dict[str, str]:
    """PVE 9's PSI keys of a running CT, as JSON strings with two decimals.

    ``vmstatus`` copies the ``avg10=`` figures that ``PVE::ProcFSTools::parse_pressure`` captured
    with a regex out of ``/sys/fs/cgroup/lxc/{vmid}/*.pressure`` and nothing numifies them, so the
    API sends ``"pressurecpusome": "0.00"`` although the schema says ``number`` (the RRD columns,
    written through rrdtool, are numbers).
    """
    if usage is None or not usage.running:
        figures: dict[str, float] = dict.fromkeys(CT_PRESSURE_KEYS, 0.0)
    else:
        node = node_usage if node_usage is not None and usage.node == ct.node else cluster.node_usage_now(usage.node)
        figures = ct_pressure(usage, node)
    return {key: f"{figures[key]:.2f}" for key in CT_PRESSURE_KEYS}


def resource_entry(
    cluster: SimCluster, ct: ContainerState, stats: CtUsage | None, stats_epoch: float
) -> dict[str, object]:
    """``extract_vm_stats``: a CT as pvestatd last broadcast it (``stats`` at ``stats_epoch``).

    On the hot path of ``/cluster/resources`` (thousands of CTs per call), hence written flat.
    """
    vmid = ct.vmid
    started = ct.started_epoch
    if not cluster.state.nodes[ct.node].online:
        # The node left the cluster: every node still has its last broadcast for up to 5 minutes
        # (pve-cluster src/pmxcfs/status.c rrd_entry_is_old), so the CT keeps its last status.
        stale = cluster.stale_ct_stats(ct)
        stats, stats_epoch, started = stale if stale is not None else (None, stats_epoch, None)
    if stats is None:
        return {"id": f"lxc/{vmid}", "vmid": vmid, "node": ct.node, "type": "lxc", "status": "unknown"}
    running = stats.running
    uptime = int(stats_epoch - started) if running and started is not None and started <= stats_epoch else 0
    cpus = stats.cpus
    entry: dict[str, object] = {
        "id": f"lxc/{vmid}",
        "vmid": vmid,
        "node": ct.node,
        "type": "lxc",
        "status": "running" if running else "stopped",
        "uptime": uptime,
        "name": ct.name,
        "template": 1 if ct.config.get("template") else 0,
        "maxcpu": int(cpus) if cpus == int(cpus) else cpus,
        "cpu": stats.cpu_fraction if running else 0,
        "maxmem": stats.maxmem_bytes,
        "mem": stats.mem_bytes if running else 0,
        "maxdisk": stats.maxdisk_bytes or ct.maxdisk_bytes,
        "disk": stats.disk_bytes if running else 0,
    }
    if running:
        busy = stats.cpu_fraction * cpus
        net = (_NET_BASE_BYTES_PER_SECOND + busy * _NET_BYTES_PER_CORE_SECOND) * uptime
        disk_io = busy * _DISK_BYTES_PER_CORE_SECOND * uptime
        entry["netin"] = int(net)
        entry["netout"] = int(net * 0.6)
        entry["diskread"] = int(disk_io * 0.3)
        entry["diskwrite"] = int(disk_io)
    else:
        entry["netin"] = entry["netout"] = entry["diskread"] = entry["diskwrite"] = 0
    return entry

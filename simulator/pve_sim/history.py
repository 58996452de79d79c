"""The load model over time: where each CT was, whether it ran, and what it used, at any instant.

PVE answers load questions from three places that see time differently: ``status/current`` and
``/nodes/{node}/status`` read the kernel *now*; ``/cluster/resources`` and ``/nodes`` read what
pvestatd last broadcast (every 10 s); ``rrddata`` reads an RRD of the past. The simulator keeps no
snapshots for any of them. Instead it records, compactly, the facts that change at discrete moments
and evaluates the usage profiles at whatever instant is asked:

* per CT, *placement segments*: from an epoch on, the CT is on node N, running or not, with these
  sizes (cores, memory, rootfs) -- appended only when one of those changes (create, start, stop,
  migrate, a hot-plugged memory change, destroy);
* per CT and per node, *profile timelines*: from an epoch on, this metric follows this profile
  (a scenario's ``setContainerUsage``/``setNodeLoad`` appends);
* per node, *online segments*.

A CT's usage at time t is its profile value at ``t - start_epoch`` (the scenario time base) times its
size at t, on the node it was on at t, if it was running (memory, CPU) or existed (disk). A node's
usage is its base load plus the usage of the CTs running on it. Everything is O(1) per CT per instant
(segments are searched from the newest end, and nearly every query is about the newest one).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

METRICS: tuple[str, ...] = ("memory", "cpu", "disk")
"""The usage metrics every CT and node has a profile for."""

MIB = 1024 * 1024
GIB = 1024 * MIB


class Profile(Protocol):
    """A usage fraction in [0, 1] as a function of simulated seconds since start."""

    def value_at(self, elapsed_seconds: float) -> float: ...


class _Zero:
    """The idle profile (used when nothing else is known)."""

    def value_at(self, elapsed_seconds: float) -> float:
        return 0.0


IDLE: Profile = _Zero()


@dataclass(frozen=True)
class Placement:
    """From ``since_epoch`` on: the CT's node, whether it runs, and its sizes."""

    since_epoch: float
    node: str
    running: bool
    cpus: float
    maxmem_bytes: int
    maxdisk_bytes: int
    storage: str | None
    """Storage of the rootfs volume (where the CT's disk use lands)."""


class _Timeline:
    """Values that hold from an epoch on. Nearly every query is about the newest value."""

    __slots__ = ("since", "values")

    def __init__(self, epoch: float, value: object) -> None:
        self.since: list[float] = [epoch]
        self.values: list[object] = [value]

    def set(self, epoch: float, value: object) -> None:
        if epoch <= self.since[-1]:
            # A change at the same instant replaces the last value (the clock never goes back).
            while len(self.since) > 1 and epoch < self.since[-1]:
                self.since.pop()
                self.values.pop()
            if epoch <= self.since[-1]:
                self.values[-1] = value
                return
        self.since.append(epoch)
        self.values.append(value)

    def at(self, epoch: float) -> object | None:
        since = self.since
        if epoch >= since[-1]:
            return self.values[-1]
        index = bisect_right(since, epoch)
        return self.values[index - 1] if index else None

    def latest(self) -> object:
        return self.values[-1]


class _CtRecord:
    """Everything recorded about one CT: lifetime, placements, and one profile timeline per metric."""

    __slots__ = ("cpu", "created", "disk", "memory", "placements", "removed")

    def __init__(self, placement: Placement, profiles: Mapping[str, Profile]) -> None:
        epoch = placement.since_epoch
        self.created = epoch
        self.removed: float | None = None
        self.placements = _Timeline(epoch, placement)
        self.memory = _Timeline(epoch, profiles.get("memory", IDLE))
        self.cpu = _Timeline(epoch, profiles.get("cpu", IDLE))
        self.disk = _Timeline(epoch, profiles.get("disk", IDLE))

    def metric(self, name: str) -> _Timeline:
        _check_metric(name)
        timeline: _Timeline = getattr(self, name)
        return timeline


@dataclass(frozen=True)
class CtUsage:
    """A CT's usage at one instant, in PVE's units."""

    node: str
    running: bool
    cpus: float
    cpu_fraction: float
    """CPU use as a fraction of ``cpus`` (0 when stopped)."""
    mem_bytes: int
    maxmem_bytes: int
    disk_bytes: int
    """Bytes used on the rootfs volume (counted on the storage even when stopped)."""
    maxdisk_bytes: int
    storage: str | None


@dataclass(frozen=True)
class NodeCapacity:
    """A node's fixed capacity."""

    cores: int
    memory_bytes: int
    rootfs_bytes: int


@dataclass(frozen=True)
class NodeUsage:
    """A node's usage at one instant, in PVE's units."""

    cpu_fraction: float
    """CPU use as a fraction of all the node's cores (capped at 1)."""
    cores: int
    mem_bytes: int
    memory_bytes: int
    rootfs_used_bytes: int
    rootfs_bytes: int
    running_cts: int
    cpu_demand_cores: float = 0.0
    """Cores' worth of CPU asked for (base load plus running CTs), *not* capped at ``cores``: what
    pressure stall information is derived from (:mod:`pve_sim.pressure`)."""
    mem_demand_bytes: int = 0
    """Memory asked for (base load plus running CTs), not capped at ``memory_bytes``."""

    def as_dict(self) -> dict[str, float]:
        return {
            "cpu": self.cpu_fraction,
            "maxcpu": float(self.cores),
            "mem": float(self.mem_bytes),
            "maxmem": float(self.memory_bytes),
            "disk": float(self.rootfs_used_bytes),
            "maxdisk": float(self.rootfs_bytes),
        }


class UsageModel:
    """Placement and profile history for CTs and nodes, and their usage at any instant."""

    def __init__(self, start_epoch: float) -> None:
        self.start_epoch = start_epoch
        self._cts: dict[int, _CtRecord] = {}
        self._node_capacity: dict[str, NodeCapacity] = {}
        self._node_profiles: dict[str, dict[str, _Timeline]] = {}
        self._node_online: dict[str, _Timeline] = {}
        self._ever_on_node: dict[str, set[int]] = {}

    # ------------------------------------------------------------------ recording

    def add_node(
        self, node: str, capacity: NodeCapacity, profiles: Mapping[str, Profile], online: bool, epoch: float
    ) -> None:
        self._node_capacity[node] = capacity
        self._node_profiles[node] = {m: _Timeline(epoch, profiles.get(m, IDLE)) for m in METRICS}
        self._node_online[node] = _Timeline(epoch, online)
        self._ever_on_node.setdefault(node, set())

    def set_node_profile(self, node: str, metric: str, profile: Profile, epoch: float) -> None:
        _check_metric(metric)
        self._node_profiles[node][metric].set(epoch, profile)

    def set_node_online(self, node: str, online: bool, epoch: float) -> None:
        self._node_online[node].set(epoch, online)

    def add_ct(self, vmid: int, placement: Placement, profiles: Mapping[str, Profile]) -> None:
        """Start recording a CT (create, or a scenario's CT). A reused VMID starts a fresh record."""
        old = self._cts.get(vmid)
        if old is not None:
            for members in self._ever_on_node.values():
                members.discard(vmid)
        self._cts[vmid] = _CtRecord(placement, profiles)
        self._ever_on_node.setdefault(placement.node, set()).add(vmid)

    def place_ct(self, vmid: int, placement: Placement) -> None:
        """Record a change of node, run state or size (only if something actually changed)."""
        timeline = self._cts[vmid].placements
        last = timeline.latest()
        if isinstance(last, Placement) and _same_place(last, placement):
            return
        timeline.set(placement.since_epoch, placement)
        self._ever_on_node.setdefault(placement.node, set()).add(vmid)

    def set_ct_profile(self, vmid: int, metric: str, profile: Profile, epoch: float) -> None:
        self._cts[vmid].metric(metric).set(epoch, profile)

    def remove_ct(self, vmid: int, epoch: float) -> None:
        """The CT is gone from ``epoch`` on (its past stays for node history)."""
        record = self._cts.get(vmid)
        if record is not None:
            record.removed = epoch

    # ------------------------------------------------------------------ queries

    def ct_profiles(self, vmid: int) -> dict[str, Profile]:
        """The profiles in force now (latest)."""
        record = self._cts[vmid]
        return {m: record.metric(m).latest() for m in METRICS}  # type: ignore[misc]

    def node_profiles(self, node: str) -> dict[str, Profile]:
        return {m: t.latest() for m, t in self._node_profiles[node].items()}  # type: ignore[misc]

    def ct_created_epoch(self, vmid: int) -> float | None:
        record = self._cts.get(vmid)
        return record.created if record is not None else None

    def ct_exists_at(self, vmid: int, epoch: float) -> bool:
        record = self._cts.get(vmid)
        if record is None or epoch < record.created:
            return False
        return record.removed is None or epoch < record.removed

    def ct_placement_at(self, vmid: int, epoch: float) -> Placement | None:
        if not self.ct_exists_at(vmid, epoch):
            return None
        value = self._cts[vmid].placements.at(epoch)
        return value if isinstance(value, Placement) else None

    def node_online_at(self, node: str, epoch: float) -> bool:
        return bool(self._node_online[node].at(epoch))

    def ct_usage_at(self, vmid: int, epoch: float) -> CtUsage | None:
        """The CT's usage at ``epoch``, or None if it did not exist then (hot path: keep it flat)."""
        record = self._cts.get(vmid)
        if record is None or epoch < record.created or (record.removed is not None and epoch >= record.removed):
            return None
        timeline = record.placements
        placement = timeline.values[-1] if epoch >= timeline.since[-1] else timeline.at(epoch)
        if not isinstance(placement, Placement):
            return None
        elapsed = epoch - self.start_epoch
        disk_tl = record.disk
        disk_profile = disk_tl.values[-1] if epoch >= disk_tl.since[-1] else disk_tl.at(epoch)
        disk = int(_value(disk_profile, elapsed) * placement.maxdisk_bytes)
        if not placement.running:
            return CtUsage(
                placement.node,
                False,
                placement.cpus,
                0.0,
                0,
                placement.maxmem_bytes,
                disk,
                placement.maxdisk_bytes,
                placement.storage,
            )
        cpu_tl = record.cpu
        mem_tl = record.memory
        cpu = _value(cpu_tl.values[-1] if epoch >= cpu_tl.since[-1] else cpu_tl.at(epoch), elapsed)
        mem_fraction = _value(mem_tl.values[-1] if epoch >= mem_tl.since[-1] else mem_tl.at(epoch), elapsed)
        return CtUsage(
            placement.node,
            True,
            placement.cpus,
            cpu,
            int(mem_fraction * placement.maxmem_bytes),
            placement.maxmem_bytes,
            disk,
            placement.maxdisk_bytes,
            placement.storage,
        )

    def node_base_at(self, node: str, epoch: float) -> tuple[float, int, int]:
        """(cpu cores busy, memory bytes, rootfs bytes) of the node's own base load at ``epoch``."""
        capacity = self._node_capacity[node]
        elapsed = epoch - self.start_epoch
        profiles = self._node_profiles[node]
        cpu_cores = _value(profiles["cpu"].at(epoch), elapsed) * capacity.cores
        mem = int(_value(profiles["memory"].at(epoch), elapsed) * capacity.memory_bytes)
        disk = int(_value(profiles["disk"].at(epoch), elapsed) * capacity.rootfs_bytes)
        return cpu_cores, mem, disk

    def node_usage_at(self, node: str, epoch: float) -> NodeUsage:
        """Base load plus the CTs running on the node at ``epoch`` (evaluates the CTs ever placed there)."""
        usages = (self.ct_usage_at(vmid, epoch) for vmid in self._ever_on_node.get(node, ()))
        return self._aggregate(node, epoch, (u for u in usages if u is not None and u.node == node))

    def _aggregate(self, node: str, epoch: float, ct_usages: Iterable[CtUsage]) -> NodeUsage:
        capacity = self._node_capacity[node]
        cpu_cores, mem, disk = self.node_base_at(node, epoch)
        running = 0
        for usage in ct_usages:
            if usage.running:
                running += 1
                cpu_cores += usage.cpu_fraction * usage.cpus
                mem += usage.mem_bytes
        return NodeUsage(
            cpu_fraction=min(1.0, cpu_cores / capacity.cores) if capacity.cores else 0.0,
            cores=capacity.cores,
            mem_bytes=min(mem, capacity.memory_bytes),
            memory_bytes=capacity.memory_bytes,
            rootfs_used_bytes=min(disk, capacity.rootfs_bytes),
            rootfs_bytes=capacity.rootfs_bytes,
            running_cts=running,
            cpu_demand_cores=cpu_cores,
            mem_demand_bytes=mem,
        )

    def nodes_usage_at(self, epoch: float, vmids: Iterable[int]) -> tuple[dict[int, CtUsage], dict[str, NodeUsage]]:
        """Every listed CT's usage and every node's usage at one instant, each CT evaluated once."""
        ct_usages: dict[int, CtUsage] = {}
        per_node: dict[str, list[CtUsage]] = {node: [] for node in self._node_capacity}
        usage_at = self.ct_usage_at
        for vmid in vmids:
            usage = usage_at(vmid, epoch)
            if usage is not None:
                ct_usages[vmid] = usage
                bucket = per_node.get(usage.node)
                if bucket is not None:
                    bucket.append(usage)
        node_usages = {node: self._aggregate(node, epoch, bucket) for node, bucket in per_node.items()}
        return ct_usages, node_usages


def _value(profile: object, elapsed: float) -> float:
    if profile is None:
        return 0.0
    value: float = profile.value_at(elapsed)  # type: ignore[attr-defined]
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value


def _same_place(a: Placement, b: Placement) -> bool:
    return (
        a.node == b.node
        and a.running == b.running
        and a.cpus == b.cpus
        and a.maxmem_bytes == b.maxmem_bytes
        and a.maxdisk_bytes == b.maxdisk_bytes
        and a.storage == b.storage
    )


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric '{metric}' (one of {', '.join(METRICS)})")

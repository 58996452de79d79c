"""The planner's view of a Proxmox cluster: one snapshot, taken in one API call per cycle.

Units are in the names: ``*_bytes`` are bytes, ``*_fraction`` is 0..1, ``cpu_cores`` counts cores.
A snapshot is immutable; planners that project the effect of their own actions build new snapshots
with :meth:`ClusterSnapshot.with_container` rather than mutating.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType

from pve_operator.api.v1alpha1 import MetricWeights, UsageMetric
from pve_operator.api.v1alpha1 import Thresholds as ThresholdsSpec


class Metric(StrEnum):
    """Which resource a threshold is measured on. ``MAX`` is the highest of the three."""

    MEMORY = "memory"
    CPU = "cpu"
    DISK = "disk"
    MAX = "max"


@dataclass(frozen=True)
class WeightedMetric:
    """A weighted mean of memory, CPU and disk use (``thresholds.metric: weighted``).

    ``(w_mem * mem + w_cpu * cpu + w_disk * disk) / (w_mem + w_cpu + w_disk)``, each a fraction of the
    node's capacity, so the result is a fraction too and the thresholds compare it as they compare one
    resource. PVE 9's dynamic CRS balances on ``(cpu + mem) / 2`` (pve-ha-manager ``NodeStats::load``),
    VMware DRS on CPU and memory together; the weights let a pool say how much each one counts.
    Weights are relative (only their ratios matter) and at least one must be above 0.
    """

    memory: float = 1.0
    cpu: float = 1.0
    disk: float = 0.0

    def __post_init__(self) -> None:
        weights = (self.memory, self.cpu, self.disk)
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"metric weights must be >= 0 with at least one above 0, got {weights}")

    @property
    def value(self) -> str:
        """How messages name it, e.g. ``weighted(memory 1, cpu 0.5)``."""
        parts = [f"{name} {weight:g}" for name, weight in self.parts if weight > 0]
        return f"weighted({', '.join(parts)})"

    @property
    def parts(self) -> tuple[tuple[Metric, float], ...]:
        return ((Metric.MEMORY, self.memory), (Metric.CPU, self.cpu), (Metric.DISK, self.disk))

    def combine(self, memory: float, cpu: float, disk: float) -> float:
        """The weighted mean of three fractions."""
        return (self.memory * memory + self.cpu * cpu + self.disk * disk) / (self.memory + self.cpu + self.disk)


#: What a pool measures its nodes by: one resource, the highest of the three, or a weighted mean.
UsageMeasure = Metric | WeightedMetric


def pool_measure(thresholds: ThresholdsSpec) -> UsageMeasure:
    """The measure a pool's ``thresholds`` name (``metric``, with ``metricWeights`` for ``weighted``)."""
    if thresholds.metric is not UsageMetric.WEIGHTED:
        return Metric(thresholds.metric.value)
    weights = thresholds.metric_weights or MetricWeights()
    return WeightedMetric(memory=weights.memory, cpu=weights.cpu, disk=weights.disk)


class ContainerStatus(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    #: PVE shows ``unknown`` before pvestatd's first broadcast and for CTs on offline nodes.
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class NodeUsage:
    """One node's capacity and current use."""

    name: str
    online: bool
    cpu_cores: float
    cpu_used_fraction: float
    memory_total_bytes: int
    memory_used_bytes: int
    disk_total_bytes: int
    disk_used_bytes: int

    def used_fraction(self, metric: UsageMeasure) -> float:
        """Use of ``metric`` as a fraction of capacity (0 when the capacity is unknown)."""
        if isinstance(metric, WeightedMetric):
            return metric.combine(
                self.used_fraction(Metric.MEMORY), self.used_fraction(Metric.CPU), self.used_fraction(Metric.DISK)
            )
        if metric is Metric.MAX:
            return max(self.used_fraction(m) for m in (Metric.MEMORY, Metric.CPU, Metric.DISK))
        if metric is Metric.CPU:
            return self.cpu_used_fraction
        used, total = (
            (self.memory_used_bytes, self.memory_total_bytes)
            if metric is Metric.MEMORY
            else (self.disk_used_bytes, self.disk_total_bytes)
        )
        return used / total if total > 0 else 0.0


@dataclass(frozen=True)
class ContainerObservation:
    """One CT as the cluster snapshot shows it (``/cluster/resources`` fields, typed)."""

    vmid: int
    node: str
    status: ContainerStatus
    name: str = ""
    tags: frozenset[str] = frozenset()
    lock: str | None = None
    pool: str | None = None
    cpu_cores: float = 0.0
    #: CPU use as a fraction of the CT's own cores (PVE's ``cpu`` field).
    cpu_used_fraction: float = 0.0
    memory_limit_bytes: int = 0
    memory_used_bytes: int = 0
    disk_limit_bytes: int = 0
    disk_used_bytes: int = 0
    uptime_seconds: int = 0
    template: bool = False
    #: What PVE reported when ``status`` was made ``UNKNOWN`` because the CT's node is offline (stale).
    reported_status: ContainerStatus | None = None
    #: ``hastate`` of ``/cluster/resources``: the CT is an HA resource of PVE (``started``, ``stopped``,
    #: ``fence``, ``recovery``, ``migrate``...); None when it is not HA-managed.
    ha_state: str | None = None

    @property
    def ha_managed(self) -> bool:
        return self.ha_state is not None

    @property
    def running(self) -> bool:
        return self.status is ContainerStatus.RUNNING


@dataclass(frozen=True)
class ClusterSnapshot:
    """Nodes and CTs at ``taken_at`` (epoch seconds, as the caller's clock said)."""

    taken_at: float
    nodes: Mapping[str, NodeUsage]
    containers: Mapping[int, ContainerObservation] = field(default_factory=dict)
    #: VMIDs of QEMU VMs: never ours, but VMIDs are cluster-wide, so they are never free either.
    vm_vmids: frozenset[int] = frozenset()
    #: Storages every node reaches (``shared`` in storage.cfg: NFS, Ceph RBD, ...): a CT whose volumes are
    #: all on them may be cloned onto any node.
    shared_storages: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        taken_at: float,
        nodes: Iterable[NodeUsage],
        containers: Iterable[ContainerObservation] = (),
        vm_vmids: Iterable[int] = (),
        shared_storages: Iterable[str] = (),
    ) -> ClusterSnapshot:
        """The snapshot, with the status of every CT on an offline node made ``UNKNOWN``.

        PVE keeps reporting the last status a node broadcast for its CTs in ``/cluster/resources`` for
        up to about 5 minutes after the node stopped reporting (pmxcfs keeps the node's status data
        until it is too old), while the node itself is ``offline`` as soon as corosync drops it. A
        ``running`` there is stale: nothing may act on it (a repair, a scale-down, a move), so the
        node's own status decides. The reported status is kept in ``reported_status``.
        """
        node_map = {n.name: n for n in nodes}
        observed = []
        for ct in containers:
            node = node_map.get(ct.node)
            if node is not None and not node.online and ct.status is not ContainerStatus.UNKNOWN:
                ct = replace(ct, status=ContainerStatus.UNKNOWN, reported_status=ct.status)
            observed.append(ct)
        return cls(
            taken_at=taken_at,
            nodes=MappingProxyType(node_map),
            containers=MappingProxyType({c.vmid: c for c in observed}),
            vm_vmids=frozenset(vm_vmids),
            shared_storages=frozenset(shared_storages),
        )

    def used_vmids(self) -> frozenset[int]:
        """Every VMID in use in the cluster, by a CT or a VM, ours or not."""
        return frozenset(self.containers) | self.vm_vmids

    def containers_on(self, node: str) -> list[ContainerObservation]:
        return [c for c in self.containers.values() if c.node == node]

    def with_container(self, container: ContainerObservation) -> ClusterSnapshot:
        """A copy with ``container`` added or replaced (node usage is not recomputed)."""
        containers = dict(self.containers)
        containers[container.vmid] = container
        return replace(self, containers=MappingProxyType(containers))

"""Node load arithmetic shared by the strategies, the limits and :func:`project`.

A node's load is kept in absolute units (CPU cores in use, memory bytes, disk bytes) so that moving a
CT between nodes of different sizes is exact: the CT's load is subtracted from one node and added to
the other, and the fractions are derived afterwards. What a CT contributes to its node:

* running: ``cpu_used_fraction * cpu_cores`` cores, its used memory, its used disk;
* stopped: only its disk (a stopped CT holds no memory and no CPU).

Offload therefore frees memory and CPU but not disk, and a stopped migration moves only disk.
:class:`WorkingState` is the mutable projection one planning call works on; :func:`project` applies
finished-or-planned actions to a snapshot and returns a new one (the operator uses it to apply the
in-flight journal to PVE's lagging statistics, the planner to chain its stages).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType

from pve_operator.planning.actions import BalanceAction, MigrateContainer, OffloadContainer
from pve_operator.planning.model import (
    ClusterSnapshot,
    ContainerObservation,
    ContainerStatus,
    Metric,
    NodeUsage,
    UsageMeasure,
    WeightedMetric,
)
from pve_operator.planning.ownership import OFFLOADED_TAG

#: Tolerance of threshold comparisons: a projection that lands on a threshold is "at", not "above".
EPSILON = 1e-9
GIB = 1024**3


@dataclass(frozen=True, slots=True)
class Load:
    """What a CT adds to its node: CPU cores in use, memory bytes, disk bytes."""

    cpu_cores: float
    memory_bytes: int
    disk_bytes: int

    @property
    def running_part(self) -> Load:
        """The part that goes away when the CT stops (memory and CPU)."""
        return Load(self.cpu_cores, self.memory_bytes, 0)

    @property
    def disk_part(self) -> Load:
        return Load(0.0, 0, self.disk_bytes)


ZERO = Load(0.0, 0, 0)


def ct_load(ct: ContainerObservation) -> Load:
    """The CT's contribution to its node's usage, as the snapshot shows it."""
    if ct.running:
        return Load(ct.cpu_used_fraction * ct.cpu_cores, ct.memory_used_bytes, ct.disk_used_bytes)
    return Load(0.0, 0, ct.disk_used_bytes)


def restored_load(ct: ContainerObservation, memory_bytes: int, cpu_fraction: float) -> Load:
    """What a stopped CT adds once started with the given expected usage (its disk is already counted)."""
    return Load(cpu_fraction * ct.cpu_cores, memory_bytes, 0)


class NodeState:
    """One node's capacity and projected use, in absolute units (mutable; one planning call owns it)."""

    __slots__ = (
        "cores",
        "cpu_fixed_fraction",
        "cpu_used",
        "disk_total",
        "disk_used",
        "mem_total",
        "mem_used",
        "name",
        "online",
    )

    def __init__(self, usage: NodeUsage) -> None:
        self.name = usage.name
        self.online = usage.online
        self.cores = usage.cpu_cores
        #: CPU fraction as reported when the core count is unknown (0): it cannot be projected then.
        self.cpu_fixed_fraction = usage.cpu_used_fraction
        self.cpu_used = usage.cpu_used_fraction * usage.cpu_cores
        self.mem_total = usage.memory_total_bytes
        self.mem_used = usage.memory_used_bytes
        self.disk_total = usage.disk_total_bytes
        self.disk_used = usage.disk_used_bytes

    @property
    def capacity_known(self) -> bool:
        """Whether every capacity is known, which a node must have before anything is moved onto it."""
        return self.cores > 0 and self.mem_total > 0 and self.disk_total > 0

    def fraction(self, metric: UsageMeasure, delta: Load = ZERO, sign: int = 1) -> float:
        """Use of ``metric`` as a fraction, after adding ``sign * delta`` (same rules as ``NodeUsage``)."""
        if isinstance(metric, WeightedMetric):
            return metric.combine(
                self.fraction(Metric.MEMORY, delta, sign),
                self.fraction(Metric.CPU, delta, sign),
                self.fraction(Metric.DISK, delta, sign),
            )
        if metric is Metric.MEMORY:
            return (self.mem_used + sign * delta.memory_bytes) / self.mem_total if self.mem_total > 0 else 0.0
        if metric is Metric.CPU:
            if self.cores <= 0:
                return self.cpu_fixed_fraction
            return (self.cpu_used + sign * delta.cpu_cores) / self.cores
        if metric is Metric.DISK:
            return (self.disk_used + sign * delta.disk_bytes) / self.disk_total if self.disk_total > 0 else 0.0
        return max(
            self.fraction(Metric.MEMORY, delta, sign),
            self.fraction(Metric.CPU, delta, sign),
            self.fraction(Metric.DISK, delta, sign),
        )

    def fits(self, delta: Load) -> bool:
        """Whether ``delta`` physically fits: memory and disk stay within capacity (CPU can be overcommitted)."""
        return (
            self.mem_used + delta.memory_bytes <= self.mem_total
            and self.disk_used + delta.disk_bytes <= self.disk_total
        )

    def add(self, delta: Load, sign: int = 1) -> None:
        self.cpu_used += sign * delta.cpu_cores
        self.mem_used += sign * delta.memory_bytes
        self.disk_used += sign * delta.disk_bytes

    def to_usage(self, original: NodeUsage) -> NodeUsage:
        cpu = self.cpu_used / self.cores if self.cores > 0 else original.cpu_used_fraction
        return replace(
            original,
            cpu_used_fraction=max(0.0, cpu),
            memory_used_bytes=max(0, self.mem_used),
            disk_used_bytes=max(0, self.disk_used),
        )


class WorkingState:
    """A mutable projection of a snapshot: node loads plus where each CT is and what it adds."""

    def __init__(self, snapshot: ClusterSnapshot, metric: UsageMeasure) -> None:
        self.snapshot = snapshot
        self.metric = metric
        self.nodes: dict[str, NodeState] = {name: NodeState(usage) for name, usage in snapshot.nodes.items()}
        self.location: dict[int, str] = {vmid: ct.node for vmid, ct in snapshot.containers.items()}
        self.load: dict[int, Load] = {vmid: ct_load(ct) for vmid, ct in snapshot.containers.items()}
        self.running: dict[int, bool] = {vmid: ct.running for vmid, ct in snapshot.containers.items()}
        #: Moves applied so far: caches of where CTs are (``spread.py``) are keyed by it.
        self.moves = 0

    def fraction(self, node: str) -> float:
        state = self.nodes.get(node)
        return state.fraction(self.metric) if state is not None else 0.0

    def move(self, vmid: int, target: str) -> None:
        """The CT's whole current load leaves its node and arrives on ``target``."""
        load = self.load[vmid]
        source = self.location[vmid]
        if source in self.nodes:
            self.nodes[source].add(load, -1)
        if target in self.nodes:
            self.nodes[target].add(load)
        self.location[vmid] = target
        self.moves += 1

    def stop(self, vmid: int) -> None:
        """The CT stops: its memory and CPU leave the node, its disk stays."""
        load = self.load[vmid]
        node = self.location[vmid]
        if node in self.nodes:
            self.nodes[node].add(load.running_part, -1)
        self.load[vmid] = load.disk_part
        self.running[vmid] = False

    def start(self, vmid: int, running_load: Load) -> None:
        """The (stopped) CT starts where it is and adds ``running_load``."""
        node = self.location[vmid]
        if node in self.nodes:
            self.nodes[node].add(running_load)
        self.load[vmid] = Load(running_load.cpu_cores, running_load.memory_bytes, self.load[vmid].disk_bytes)
        self.running[vmid] = True

    def apply(self, action: BalanceAction) -> None:
        """Apply one planned action (same arithmetic as :func:`project`)."""
        if action.vmid not in self.location:
            return
        if isinstance(action, MigrateContainer):
            if self.location[action.vmid] != action.target:
                self.move(action.vmid, action.target)
        elif isinstance(action, OffloadContainer):
            if self.running[action.vmid]:
                self.stop(action.vmid)
        elif not self.running[action.vmid]:
            if self.location[action.vmid] != action.target:
                self.move(action.vmid, action.target)
            ct = self.snapshot.containers[action.vmid]
            self.start(
                action.vmid,
                restored_load(ct, action.expected_memory_used_bytes, action.expected_cpu_used_fraction),
            )


def project(snapshot: ClusterSnapshot, actions: Iterable[BalanceAction]) -> ClusterSnapshot:
    """The snapshot as it will be once ``actions`` are done, in order.

    * Migrate: the CT's usage leaves its node and arrives on the target; the CT shows on the target.
    * Offload: the CT stops (memory and CPU leave its node, disk stays) and carries the offloaded tag.
    * Restore: the CT moves to the target if it is elsewhere (disk only, it is stopped), then starts with
      the action's expected usage, without the offloaded tag.

    Idempotent per action: a migration whose CT already shows on its target, an offload of a CT that is
    already stopped and a restore of a CT that is already running change nothing, so projecting the
    journal over a snapshot that has (partly) caught up never counts an operation twice. Actions on
    CTs missing from the snapshot are skipped.
    """
    nodes = {name: NodeState(usage) for name, usage in snapshot.nodes.items()}
    containers = dict(snapshot.containers)

    def shift(node: str, load: Load, sign: int) -> None:
        if node in nodes:
            nodes[node].add(load, sign)

    for action in actions:
        ct = containers.get(action.vmid)
        if ct is None:
            continue
        if isinstance(action, MigrateContainer):
            if ct.node == action.target:
                continue
            load = ct_load(ct)
            shift(ct.node, load, -1)
            shift(action.target, load, 1)
            containers[ct.vmid] = replace(ct, node=action.target)
        elif isinstance(action, OffloadContainer):
            if not ct.running:
                continue
            shift(ct.node, ct_load(ct).running_part, -1)
            containers[ct.vmid] = replace(
                ct,
                status=ContainerStatus.STOPPED,
                cpu_used_fraction=0.0,
                memory_used_bytes=0,
                tags=ct.tags | {OFFLOADED_TAG},
            )
        else:
            if ct.running:
                continue
            if ct.node != action.target:
                disk = ct_load(ct).disk_part
                shift(ct.node, disk, -1)
                shift(action.target, disk, 1)
            shift(
                action.target,
                restored_load(ct, action.expected_memory_used_bytes, action.expected_cpu_used_fraction),
                1,
            )
            containers[ct.vmid] = replace(
                ct,
                node=action.target,
                status=ContainerStatus.RUNNING,
                cpu_used_fraction=action.expected_cpu_used_fraction,
                memory_used_bytes=action.expected_memory_used_bytes,
                tags=ct.tags - {OFFLOADED_TAG},
            )
    return replace(
        snapshot,
        nodes=MappingProxyType({name: nodes[name].to_usage(usage) for name, usage in snapshot.nodes.items()}),
        containers=MappingProxyType(containers),
    )


def node_fractions(snapshot: ClusterSnapshot, metric: UsageMeasure) -> Mapping[str, float]:
    """Every node's use of ``metric`` as a fraction."""
    return {name: usage.used_fraction(metric) for name, usage in snapshot.nodes.items()}


# -- sustained samples ---------------------------------------------------------------------------


def sustained_above(samples: Sequence[float] | None, count: int, threshold: float) -> bool:
    """The last ``count`` samples are all above ``threshold`` (fewer samples than that: not sustained)."""
    if samples is None or len(samples) < count:
        return False
    return all(s > threshold + EPSILON for s in samples[len(samples) - count :])


def sustained_at_or_below(samples: Sequence[float] | None, count: int, threshold: float) -> bool:
    """The last ``count`` samples are all at or below ``threshold``."""
    if samples is None or len(samples) < count:
        return False
    return all(s <= threshold + EPSILON for s in samples[len(samples) - count :])


def samples_above(samples: Sequence[float] | None, count: int, threshold: float) -> int:
    """How many of the last ``count`` samples are above ``threshold`` (for explanations)."""
    if not samples:
        return 0
    return sum(1 for s in samples[max(0, len(samples) - count) :] if s > threshold + EPSILON)


def above(fraction: float, threshold: float) -> bool:
    return fraction > threshold + EPSILON


def at_or_below(fraction: float, threshold: float) -> bool:
    return fraction <= threshold + EPSILON


# -- figures in reasons --------------------------------------------------------------------------


def pct(fraction: float) -> str:
    """A fraction as a short percent figure: ``0.82 -> '82%'``, ``0.7466 -> '74.7%'``."""
    return f"{round(fraction * 100, 1):g}%"


def percent(fraction: float) -> float:
    """A fraction as percent, rounded to 0.01 (the figures actions carry)."""
    return round(fraction * 100, 2)


def threshold_figure(fraction: float) -> str:
    """A threshold as the CRD writes it: ``0.75 -> '75'``."""
    return f"{round(fraction * 100, 2):g}"

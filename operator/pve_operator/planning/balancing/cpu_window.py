"""CPU as a sustained average: what the planner sees of CPU is the mean over the sample window.

``/cluster/resources`` reports each node's and each CT's CPU as pvestatd last measured it (a 10 s
average). Memory moves slowly; CPU does not: one sample of a busy build or a cron job would make the
planner move CTs for a load that is gone by the time the migration ends. ProxLB switched guest CPU to
the RRD's hour average for this reason (ProxLB #94); PVE 9's dynamic CRS averages over its hold rounds.
Here the window is the pool's ``sustainedSamples``: the same samples that must all be above a
threshold before anything moves also decide how much CPU a move takes along.

A node's CPU is split in two, so that a migration does not leave its CPU behind in the source's
average: the CTs on it now (each averaged over its own samples, which follow the CT across nodes:
a CT's CPU is a fraction of its own cores) plus the *rest* (host processes, VMs and anything not in
the snapshot), averaged per node. The rest is what the node reports minus what its CTs report, so it
does not change when a CT moves.

Mutable (one instance per pool, kept by the operator between cycles) but free of I/O: ``record`` takes
a snapshot, ``averaged`` returns a new snapshot with CPU figures replaced; memory and disk are untouched.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import replace
from types import MappingProxyType

from pve_operator.planning.model import ClusterSnapshot, ContainerObservation, NodeUsage


class CpuWindow:
    """The last ``samples`` CPU readings of every node (its rest) and every running CT."""

    def __init__(self, samples: int) -> None:
        if samples < 1:
            raise ValueError(f"samples must be at least 1, got {samples}")
        self.samples = samples
        self._node_rest: dict[str, deque[float]] = {}
        self._ct: dict[int, deque[float]] = {}

    def resize(self, samples: int) -> None:
        """Keep the newest ``samples`` readings (``sustainedSamples`` changed)."""
        if samples < 1:
            raise ValueError(f"samples must be at least 1, got {samples}")
        if samples != self.samples:
            self.samples = samples
            self._node_rest = {k: deque(v, maxlen=samples) for k, v in self._node_rest.items()}
            self._ct = {k: deque(v, maxlen=samples) for k, v in self._ct.items()}

    def record(self, snapshot: ClusterSnapshot) -> None:
        """Add one reading per online node and running CT; forget CTs that stopped or are gone (a CT
        started again starts a new window) and nodes that are offline."""
        running = {vmid: ct for vmid, ct in snapshot.containers.items() if ct.running}
        for vmid in [v for v in self._ct if v not in running]:
            del self._ct[vmid]
        for vmid, ct in running.items():
            self._ct.setdefault(vmid, deque(maxlen=self.samples)).append(ct.cpu_used_fraction)
        ct_cores = _running_cores_by_node(snapshot.containers.values())
        for name, usage in snapshot.nodes.items():
            if not usage.online or usage.cpu_cores <= 0:
                self._node_rest.pop(name, None)
                continue
            # Never below 0: the node's and its CTs' figures are sampled apart.
            rest = max(0.0, usage.cpu_used_fraction * usage.cpu_cores - ct_cores.get(name, 0.0))
            self._node_rest.setdefault(name, deque(maxlen=self.samples)).append(rest)

    def averaged(self, snapshot: ClusterSnapshot) -> ClusterSnapshot:
        """``snapshot`` with each running CT's and each node's CPU the mean over the window (a CT or node
        without readings keeps the snapshot's figure)."""
        containers: dict[int, ContainerObservation] = {}
        for vmid, ct in snapshot.containers.items():
            window = self._ct.get(vmid)
            containers[vmid] = replace(ct, cpu_used_fraction=_mean(window)) if ct.running and window else ct
        ct_cores = _running_cores_by_node(containers.values())
        nodes: dict[str, NodeUsage] = {}
        for name, usage in snapshot.nodes.items():
            rest = self._node_rest.get(name)
            if not usage.online or usage.cpu_cores <= 0 or not rest:
                nodes[name] = usage
                continue
            busy = _mean(rest) + ct_cores.get(name, 0.0)
            nodes[name] = replace(usage, cpu_used_fraction=min(1.0, max(0.0, busy / usage.cpu_cores)))
        return replace(snapshot, nodes=MappingProxyType(nodes), containers=MappingProxyType(containers))


def _running_cores_by_node(containers: Iterable[ContainerObservation]) -> dict[str, float]:
    """Cores in use by the running CTs of each node."""
    cores: dict[str, float] = {}
    for ct in containers:
        if ct.running:
            cores[ct.node] = cores.get(ct.node, 0.0) + ct.cpu_used_fraction * ct.cpu_cores
    return cores


def _mean(values: deque[float]) -> float:
    return sum(values) / len(values)

"""Pressure stall information (PSI) as PVE 9 reports it, derived from demand versus capacity.

What PVE reports (pve-manager ``PVE/Service/pvestatd.pm``, pve-common ``PVE/ProcFSTools.pm``
``read_pressure``/``read_cgroup_pressure``, pve-container ``PVE::LXC::vmstatus``, pve-cluster
``src/pmxcfs/status.c``; all PVE 9):

* a node's RRD (``/nodes/{node}/rrddata``) carries ``pressurecpusome``, ``pressureiosome``,
  ``pressureiofull``, ``pressurememorysome`` and ``pressurememoryfull``: the ``avg10`` figures of
  ``/proc/pressure/{cpu,io,memory}`` that pvestatd reads every 10 s, consolidated per RRD row. There
  is no node ``pressurecpufull``: the kernel's system-wide CPU ``full`` line is always zero, and PVE
  does not store it;
* a running CT's ``vmstatus`` (``GET /nodes/{node}/lxc``, ``.../status/current``) carries those
  five plus ``pressurecpufull``, the ``avg10`` figures of ``/sys/fs/cgroup/lxc/{vmid}/*.pressure``;
  its RRD carries the same six. A stopped CT has none (pvestatd writes them as unknown). In
  ``vmstatus`` they are JSON *strings* such as ``"12.34"`` (regex captures nothing numifies), in the
  RRDs numbers. PVE 8 has no pressure at all (``pve2-node``/``pve2-vm`` RRDs, no PSI in ``vmstatus``).

Kernel semantics: ``some`` is the share of wall time in which at least one (non-idle) task was
stalled waiting for the resource; ``full`` the share in which *all* non-idle tasks were stalled at
once (so ``full <= some``). ``avg10`` is an exponentially decaying average over about 10 s, printed
as a percentage with two decimals (``LOAD_INT``/``LOAD_FRAC``: truncated, not rounded).

The simulator has no scheduler and no page reclaim, so the figures here are a *model*, not a
measurement: each is a curve of how far demand is from capacity. The curve is::

    x          = (ratio - knee) / (half - knee)
    psi(ratio) = 0                          if ratio <= knee
               = 100 * (1 - 2 ** -(x ** 2))   otherwise

then truncated to two decimals like the kernel's figure: zero up to ``knee``, a smooth start above
it (no jump), exactly 50 % at ``half``, and approaching 100 % beyond; monotone (non-decreasing) in
``ratio`` and bounded to [0, 100]. ``ratio`` is *demand* over capacity and is not capped at 1: a
node asked for 12 cores' worth of work on 8 cores has a CPU ratio of 1.5, although its ``cpu`` shows
100 %. The constants are chosen to look like busy PVE hosts, not fitted to measurements:

* CPU ``some`` (:data:`CPU_SOME`, knee 0.60, half 1.10). Runnable tasks start to queue well before a
  host is fully busy (bursts meet on the same cores), so CPU pressure starts at 60 % utilisation:
  0.7 -> 2.7 %, 0.8 -> 10.5 %, 0.9 -> 22.1 %, 1.0 -> 35.8 %, 1.2 -> 63.1 %, 1.5 -> 89.4 %, 2.0 -> 99.6 %.
* CPU ``full`` of a CT (:data:`CPU_FULL`, knee 0.80, half 1.30): all of a CT's runnable tasks waiting
  at once needs a busier host: 0.9 -> 2.7 %, 1.0 -> 10.5 %, 1.2 -> 35.8 %, 1.5 -> 74.3 %.
* Memory ``some`` (:data:`MEMORY_SOME`, knee 0.85, half 1.00). Below ~85 % the kernel frees page
  cache without anyone waiting; above it direct reclaim and refaults stall tasks, steeply towards
  100 %: 0.9 -> 7.4 %, 0.95 -> 26.5 %, 0.97 -> 35.8 %, 1.0 -> 50 %, 1.1 -> 85.4 %.
* Memory ``full`` (:data:`MEMORY_FULL`, knee 0.90, half 1.05): the same shape moved right, since
  every task stalls at once only closer to exhaustion (thrashing): 0.95 -> 7.4 %, 0.97 -> 14.0 %,
  1.0 -> 26.5 %, 1.1 -> 70.8 %. Being the ``some`` curve shifted right, it is never above ``some``.
* I/O ``some``/``full`` stay 0: the simulator models no disk contention.

Which ratio feeds which curve:

* node: CPU ``some`` from the node's CPU demand (base load plus each running CT's CPU fraction
  times its cores) over its cores; memory ``some``/``full`` from its memory demand (base load plus
  each running CT's memory) over its RAM. The kernel's system-wide figure averages the CPUs weighted
  by their non-idle time, so one CT stalling at its own memory limit barely moves it on a busy
  many-core host; the model leaves that contribution out.
* CT: a CT shares its node's CPUs, so while it has CPU demand its CPU ``some`` is the node's and its
  CPU ``full`` is :data:`CPU_FULL` of the node's CPU ratio (an idle CT has no runnable task to
  stall: 0). It stalls on memory when its usage nears its own limit (``memory``; PVE sets the cgroup's
  ``memory.high`` at about 99.2 % of it) *or* when the node runs out: memory ``some``/``full`` use the
  larger of its own usage/limit and the node's memory ratio.

Instant values: the model answers the steady state for the load at that instant; a real ``avg10``
follows a step in load over about 10 s. Everything here is a pure function of the usage, so the
same scenario and profiles give the same figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from pve_sim.history import CtUsage, NodeUsage
from pve_sim.rrd import CT_RRD_KEYS, NODE_RRD_KEYS


@dataclass(frozen=True)
class PsiCurve:
    """Pressure in percent as a function of demand/capacity: 0 up to ``knee``, 50 at ``half``."""

    knee: float
    """The ratio up to which nothing stalls."""
    half: float
    """The ratio at which the pressure is 50 % (greater than ``knee``)."""

    def __post_init__(self) -> None:
        if not self.half > self.knee >= 0.0:
            raise ValueError("a PSI curve needs 0 <= knee < half")

    def percent(self, ratio: float) -> float:
        """The pressure for ``ratio`` (demand over capacity, may exceed 1), in [0, 100], two decimals."""
        excess = ratio - self.knee
        if not excess > 0.0:  # also NaN
            return 0.0
        x = excess / (self.half - self.knee)
        return truncate_percent(100.0 * (1.0 - 2.0 ** -(x * x)))


CPU_SOME: Final = PsiCurve(knee=0.60, half=1.10)
"""Node (and CT) CPU ``some`` over CPU demand/cores."""
CPU_FULL: Final = PsiCurve(knee=0.80, half=1.30)
"""A CT's CPU ``full`` over its node's CPU demand/cores (PVE reports no node CPU ``full``)."""
MEMORY_SOME: Final = PsiCurve(knee=0.85, half=1.00)
"""Memory ``some`` over memory demand/capacity."""
MEMORY_FULL: Final = PsiCurve(knee=0.90, half=1.05)
"""Memory ``full`` over memory demand/capacity (the ``some`` curve moved right: never above it)."""

NODE_PRESSURE_KEYS: Final[tuple[str, ...]] = tuple(k for k in NODE_RRD_KEYS if k.startswith("pressure"))
"""A node's PSI data sources (``rrd_def_node_pve9_0``), in file order."""

CT_PRESSURE_KEYS: Final[tuple[str, ...]] = tuple(k for k in CT_RRD_KEYS if k.startswith("pressure"))
"""A guest's PSI values (``vmstatus`` and ``rrd_def_vm_pve9_0``), in file order."""


def truncate_percent(value: float) -> float:
    """A percentage as the kernel prints ``avg10``: two decimals, truncated; clamped to [0, 100]."""
    if not value > 0.0:
        return 0.0
    # The epsilon keeps a value such as 50.0 (computed as 49.999999999) at 50.00.
    return min(100.0, math.floor(value * 100.0 + 1e-6) / 100.0)


def node_cpu_ratio(usage: NodeUsage) -> float:
    """CPU demand over cores, uncapped (base load plus running CTs' ``cpu * cpus``)."""
    return usage.cpu_demand_cores / usage.cores if usage.cores else 0.0


def node_memory_ratio(usage: NodeUsage) -> float:
    """Memory demand over RAM, uncapped (base load plus running CTs' memory)."""
    return usage.mem_demand_bytes / usage.memory_bytes if usage.memory_bytes else 0.0


def node_pressure_from_ratios(cpu_ratio: float, memory_ratio: float) -> dict[str, float]:
    """A node's five PSI figures (percent) for a CPU and a memory demand/capacity ratio."""
    return {
        "pressurecpusome": CPU_SOME.percent(cpu_ratio),
        "pressureiosome": 0.0,
        "pressureiofull": 0.0,
        "pressurememorysome": MEMORY_SOME.percent(memory_ratio),
        "pressurememoryfull": MEMORY_FULL.percent(memory_ratio),
    }


def ct_pressure_from_ratios(
    cpu_busy: bool, own_memory_ratio: float, node_cpu: float, node_memory: float
) -> dict[str, float]:
    """A running CT's six PSI figures (percent).

    ``cpu_busy``: the CT has CPU demand; ``own_memory_ratio``: its memory use over its limit;
    ``node_cpu``/``node_memory``: its node's demand ratios (see the module docstring).
    """
    memory_ratio = max(own_memory_ratio, node_memory)
    return {
        "pressurecpusome": CPU_SOME.percent(node_cpu) if cpu_busy else 0.0,
        "pressurecpufull": CPU_FULL.percent(node_cpu) if cpu_busy else 0.0,
        "pressureiosome": 0.0,
        "pressureiofull": 0.0,
        "pressurememorysome": MEMORY_SOME.percent(memory_ratio),
        "pressurememoryfull": MEMORY_FULL.percent(memory_ratio),
    }


def node_pressure(usage: NodeUsage) -> dict[str, float]:
    """The node RRD's PSI figures for a node's usage at one instant."""
    return node_pressure_from_ratios(node_cpu_ratio(usage), node_memory_ratio(usage))


def ct_pressure(usage: CtUsage, node: NodeUsage) -> dict[str, float]:
    """A CT's PSI figures at one instant, given its node's usage at that instant; empty when stopped."""
    if not usage.running:
        return {}
    own_memory = usage.mem_bytes / usage.maxmem_bytes if usage.maxmem_bytes else 0.0
    return ct_pressure_from_ratios(usage.cpu_fraction > 0.0, own_memory, node_cpu_ratio(node), node_memory_ratio(node))

"""What the balancing planner is given: one frozen value per cycle, built by the operator.

Everything the planner decides on is in :class:`BalancingInput`: the cluster snapshot, the pool's
nodes, the thresholds and limits (fractions here, percent in the CRD), the facts the operator keeps
about its own CTs (policy priority, age, pin, offload mark, last action), each node's recent samples
of the pool's metric, the operations still in flight, and ``now``. Nothing is read from a clock or
the network, so the same input always gives the same plan.

CTs that are not in :attr:`BalancingInput.managed` are foreign: their usage counts on their node, but
the planner never proposes anything for them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from pve_operator.api.v1alpha1 import PressureMetric, PressureThreshold
from pve_operator.planning.model import ClusterSnapshot, Metric, UsageMeasure
from pve_operator.planning.topology import TopologyRules

#: Tag a user puts on a CT to keep the operator from migrating or offloading it (it is still restored
#: in place when it was offloaded before it was pinned). The operator also treats CTs of a policy
#: annotated as pinned this way; either way it arrives here as :attr:`ManagedCT.pinned`.
PINNED_TAG = "pve-operator-pinned"


def _fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a fraction between 0 and 1, got {value!r}")


class PressureResource(StrEnum):
    """Which pressure stall figure of a node the pressure trigger reads (PVE 9 node RRD)."""

    #: ``pressurememorysome``: share of time at least one task waited for memory (reclaim, swap-in).
    MEMORY = "memory"
    #: ``pressurecpusome``: share of time at least one runnable task waited for a CPU.
    CPU = "cpu"


@dataclass(frozen=True)
class PressureTrigger:
    """``thresholds.pressure``: a node whose pressure stall share (PSI "some", 0..1) stays above
    ``above_fraction`` for ``sustained_samples`` samples is relieved even while its figure in the pool's
    metric is under ``migrate_above``: the planner moves CTs off it until its use of the stalled
    resource (CPU or memory) is ``relief_fraction`` lower (like the kubelet's eviction-minimum-reclaim),
    onto nodes not under pressure themselves that stay under ``migrate_above`` in the pool's metric.
    Utilisation says how full a node is; pressure says whether its tasks suffer.
    """

    resource: PressureResource
    above_fraction: float
    relief_fraction: float

    def __post_init__(self) -> None:
        _fraction("pressure above_fraction", self.above_fraction)
        _fraction("pressure relief_fraction", self.relief_fraction)
        if self.relief_fraction <= 0:
            raise ValueError(f"pressure relief_fraction must be above 0, got {self.relief_fraction}")

    @property
    def rrd_key(self) -> str:
        """The node RRD column (PVE 9 ``rrd_def_node_pve9_0``) the trigger reads."""
        return f"pressure{self.resource.value}some"

    @property
    def stalled_metric(self) -> Metric:
        """The usage figure a node under this pressure sheds."""
        return Metric.CPU if self.resource is PressureResource.CPU else Metric.MEMORY

    @classmethod
    def from_spec(cls, spec: PressureThreshold | None) -> PressureTrigger | None:
        """``thresholds.pressure`` of the CRD (percent) as the planner takes it, or None."""
        if spec is None:
            return None
        resource = PressureResource.MEMORY if spec.metric is PressureMetric.MEMORY_PRESSURE else PressureResource.CPU
        return cls(resource, spec.above_percent / 100, spec.relief_percent / 100)


@dataclass(frozen=True)
class Thresholds:
    """When a node counts as loaded, as fractions of its capacity in ``metric``.

    ``restore_below < migrate_above < offload_above`` is required (the CRD's CEL rules say the same):
    it is the hysteresis that keeps the operator from undoing its own work.
    """

    metric: UsageMeasure = Metric.MEMORY
    migrate_above_fraction: float = 0.75
    offload_above_fraction: float = 0.90
    restore_below_fraction: float = 0.60
    #: Consecutive samples a threshold must be crossed before the planner acts (a short spike is ignored).
    sustained_samples: int = 3
    #: Optional trigger on pressure stall information (PVE 9), in addition to the thresholds.
    pressure: PressureTrigger | None = None

    def __post_init__(self) -> None:
        _fraction("migrate_above_fraction", self.migrate_above_fraction)
        _fraction("offload_above_fraction", self.offload_above_fraction)
        _fraction("restore_below_fraction", self.restore_below_fraction)
        if not self.restore_below_fraction < self.migrate_above_fraction < self.offload_above_fraction:
            raise ValueError(
                "thresholds must satisfy restore_below < migrate_above < offload_above, got "
                f"{self.restore_below_fraction} / {self.migrate_above_fraction} / {self.offload_above_fraction}"
            )
        if self.sustained_samples < 1:
            raise ValueError(f"sustained_samples must be at least 1, got {self.sustained_samples}")

    @classmethod
    def from_percent(
        cls,
        *,
        metric: UsageMeasure = Metric.MEMORY,
        migrate_above_percent: float = 75,
        offload_above_percent: float = 90,
        restore_below_percent: float = 60,
        sustained_samples: int = 3,
        pressure: PressureTrigger | None = None,
    ) -> Thresholds:
        """Build from the CRD's percent figures."""
        return cls(
            metric=metric,
            migrate_above_fraction=migrate_above_percent / 100,
            offload_above_fraction=offload_above_percent / 100,
            restore_below_fraction=restore_below_percent / 100,
            sustained_samples=sustained_samples,
            pressure=pressure,
        )


class BalancingObjective(StrEnum):
    """``balancing.objective``: which migration strategy :func:`plan_balance` runs by default."""

    #: ``rebalance``: bring nodes back under the migrate threshold, nothing more.
    RELIEVE = "Relieve"
    #: ``level``: relieve, then lower the pool's peak (``level.py``).
    LEVEL = "Level"


@dataclass(frozen=True)
class BalancingLimits:
    """The pool's ``balancing`` settings that bound what one cycle may do (applied in ``limits.py``),
    and the objective with its two knobs (used by ``level.py``)."""

    #: Migrations in flight at once across the pool, counting the ones already running.
    max_concurrent_migrations: int = 1
    #: Seconds a CT stays put after the operator migrated, offloaded or restored it.
    cooldown_seconds: float = 1800
    #: An optional move (the pass that lowers the peak after every node is relieved) must narrow its
    #: source-target gap by at least this much (percentage points / 100). Relief moves are not gated.
    min_improvement_fraction: float = 0.10
    #: Migrations into one node per cycle, counting the ones arriving now. Not in the CRD: one at a time
    #: lets each arrival show up in the node's statistics before the next is planned against them
    #: (proxlb-solver's ``max_node_inflow``).
    max_inbound_per_target: int = 1
    #: Relieve (``rebalance``) or Level (``level``): the migration strategy ``plan_balance`` runs by default.
    objective: BalancingObjective = BalancingObjective.RELIEVE
    #: Level: a levelling move must narrow its source-target gap by at least this much (points / 100).
    min_gain_fraction: float = 0.02
    #: Level: the plan stops at its first move whose peak is at most ``1 + this`` times the best peak found.
    level_tolerance_fraction: float = 0.05

    def __post_init__(self) -> None:
        if self.max_concurrent_migrations < 1:
            raise ValueError(f"max_concurrent_migrations must be at least 1, got {self.max_concurrent_migrations}")
        if self.max_inbound_per_target < 1:
            raise ValueError(f"max_inbound_per_target must be at least 1, got {self.max_inbound_per_target}")
        if self.cooldown_seconds < 0:
            raise ValueError(f"cooldown_seconds must not be negative, got {self.cooldown_seconds}")
        _fraction("min_improvement_fraction", self.min_improvement_fraction)
        _fraction("min_gain_fraction", self.min_gain_fraction)
        _fraction("level_tolerance_fraction", self.level_tolerance_fraction)

    @classmethod
    def from_percent(
        cls,
        *,
        max_concurrent_migrations: int = 1,
        cooldown_seconds: float = 1800,
        min_improvement_percent: float = 10,
        max_inbound_per_target: int = 1,
        objective: str = BalancingObjective.RELIEVE.value,
        min_gain_percent: float = 2,
        level_tolerance_percent: float = 5,
    ) -> BalancingLimits:
        """Build from the CRD's ``balancing`` figures."""
        return cls(
            max_concurrent_migrations=max_concurrent_migrations,
            cooldown_seconds=cooldown_seconds,
            min_improvement_fraction=min_improvement_percent / 100,
            max_inbound_per_target=max_inbound_per_target,
            objective=BalancingObjective(objective),
            min_gain_fraction=min_gain_percent / 100,
            level_tolerance_fraction=level_tolerance_percent / 100,
        )


@dataclass(frozen=True)
class PoolNodeSpec:
    """A node of the ProxmoxServerPool as balancing sees it. Nodes outside the pool are never targets."""

    name: str
    #: Placement weight. 0 places nothing new on the node, so balancing never moves CTs onto it either.
    weight: int = 1
    #: Drain: the operator's CTs are migrated away and nothing is moved onto the node.
    maintenance: bool = False
    #: Not a node of the pool, but CTs of ours are on it (moved there by hand): drained like a
    #: maintenance node, so balancing brings them back; never a target.
    outside_pool: bool = False


def with_stray_nodes(
    pool_nodes: tuple[PoolNodeSpec, ...], snapshot: ClusterSnapshot, managed: Mapping[int, ManagedCT]
) -> tuple[PoolNodeSpec, ...]:
    """The pool's nodes plus every other node a CT of ours is on, as an ``outside_pool`` drain."""
    known = {spec.name for spec in pool_nodes}
    strays = sorted(
        {ct.node for vmid in managed if (ct := snapshot.containers.get(vmid)) is not None and ct.node not in known}
    )
    return pool_nodes + tuple(PoolNodeSpec(name, weight=0, maintenance=True, outside_pool=True) for name in strays)


@dataclass(frozen=True)
class ManagedCT:
    """What the operator knows about one of its own CTs beyond the snapshot."""

    vmid: int
    #: Name of the ContainerPolicy the CT belongs to (shown in reasons).
    policy: str
    #: The policy's priority: lower is offloaded first and restored last.
    priority: int
    #: Creation time as the ownership record holds it (RFC 3339 UTC): sorts oldest first.
    created_at: str
    #: Never migrated or offloaded (``PINNED_TAG`` or the policy's pin annotation).
    pinned: bool = False
    #: Stopped on purpose by offload; restore starts it again.
    offloaded: bool = False
    #: Epoch seconds of the operator's last migrate/offload/restore of this CT, for the cooldown.
    last_action_at: float | None = None
    #: Memory the CT is expected to use once restored (what it used when offloaded); None: its limit.
    restore_memory_bytes: int | None = None
    #: CPU it is expected to use once restored, as a fraction of its own cores; None: all of them.
    restore_cpu_fraction: float | None = None
    #: Nodes the CT's policy gives weight 0 (``placement.nodeWeights``): never a target for it.
    excluded_nodes: frozenset[str] = frozenset()

    #: Failed migrations of this CT since its last successful one (``recentActions``), the newest last.
    migration_failures: MigrationFailures | None = None
    #: The Proxmox VE HA rule (node-affinity or resource-affinity) that names this CT: PVE's HA manager
    #: decides its node, so balancing never migrates it.
    ha_rule: str | None = None

    def in_cooldown(self, now: float, cooldown_seconds: float) -> bool:
        return self.last_action_at is not None and now - self.last_action_at < cooldown_seconds

    def migration_retry_at(self) -> float | None:
        """Epoch seconds before which no migration of this CT is tried again, or None."""
        return self.migration_failures.retry_at() if self.migration_failures else None


#: First wait after a failed migration; it doubles with each further failure in a row, up to the cap.
#: A restart migration that fails because the CT ignores shutdown fails the same way every time
#: (pve-container ``LXC/Migrate.pm`` shuts the CT down without force), and each try costs the
#: shutdown timeout: trying every cycle would be a loop of failed tasks.
MIGRATION_RETRY_BACKOFF_SECONDS = 600.0
MIGRATION_RETRY_BACKOFF_CAP_SECONDS = 6 * 3600.0


@dataclass(frozen=True)
class MigrationFailures:
    """Consecutive failed migrations of one CT: how many, when the last one ended, what PVE said."""

    count: int
    last_failed_at: float
    last_message: str

    def retry_at(self) -> float:
        wait = min(MIGRATION_RETRY_BACKOFF_SECONDS * 2.0 ** (self.count - 1), MIGRATION_RETRY_BACKOFF_CAP_SECONDS)
        return self.last_failed_at + wait


def migration_failures_from(
    actions: Iterable[tuple[int, str, str, float, str]],
) -> dict[int, MigrationFailures]:
    """Consecutive migration failures per CT from recorded actions ``(vmid, action, result, time,
    message)`` in time order: a success resets the count; offloads and restores do not count."""
    failures: dict[int, MigrationFailures] = {}
    for vmid, action, result, when, message in actions:
        if action != "Migrate":
            continue
        if result == "Succeeded":
            failures.pop(vmid, None)
        elif result == "Failed":
            before = failures.get(vmid)
            failures[vmid] = MigrationFailures((before.count if before else 0) + 1, when, message)
    return failures


@dataclass(frozen=True)
class InFlight:
    """Operations the execution journal says are still running.

    The snapshot handed to the planner should already show them done (``project(snapshot, journal)``):
    PVE's statistics lag behind a migration, and planning against the lag would move the same load twice.
    """

    #: vmid -> target node of migrations (and restores that migrate) still running.
    migrations: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}))
    #: Other CTs with an operation running (stop, start): left alone this cycle.
    other_vmids: frozenset[int] = frozenset()
    #: CTs an earlier stage of the plan being made already acts on: skipped silently by later stages
    #: (they are not blocked, they are taken care of).
    planned_vmids: frozenset[int] = frozenset()

    @property
    def busy_vmids(self) -> frozenset[int]:
        return frozenset(self.migrations) | self.other_vmids

    def inbound_count(self, node: str) -> int:
        """Migrations in flight that arrive on ``node``."""
        return sum(1 for target in self.migrations.values() if target == node)

    def with_planned(self, vmids: frozenset[int]) -> InFlight:
        """A copy that marks ``vmids`` as acted on earlier in this plan."""
        return InFlight(migrations=self.migrations, other_vmids=self.other_vmids, planned_vmids=vmids)


@dataclass(frozen=True)
class BalancingInput:
    """Everything one balancing decision depends on."""

    snapshot: ClusterSnapshot
    #: The pool's nodes in spec order (first-fit and tie-breaks follow it).
    pool_nodes: tuple[PoolNodeSpec, ...]
    #: Our CTs by vmid. Anything else in the snapshot is foreign and never touched.
    managed: Mapping[int, ManagedCT]
    #: Node -> recent samples of ``thresholds.metric`` as fractions, oldest first, the latest last.
    history: Mapping[str, Sequence[float]]
    now: float
    thresholds: Thresholds = field(default_factory=Thresholds)
    limits: BalancingLimits = field(default_factory=BalancingLimits)
    in_flight: InFlight = field(default_factory=InFlight)
    #: ``balancing.mode`` is not Off: migrations are planned.
    balancing_enabled: bool = True
    #: ``offload.mode`` is not Off: offloads and restores are planned.
    offload_enabled: bool = True
    #: Node -> recent samples of the pressure trigger's PSI figure as fractions, oldest first (only
    #: with ``thresholds.pressure``; a node without samples is not under pressure).
    pressure_history: Mapping[str, Sequence[float]] = field(default_factory=lambda: MappingProxyType({}))
    #: Policy name (``ManagedCT.policy``) -> its spread and node affinity rules; policies without rules
    #: may be missing. Every move and restore target honours them (``spread.py``).
    topology: Mapping[str, TopologyRules] = field(default_factory=lambda: MappingProxyType({}))
    #: PVE's CRS rebalances HA resources itself (datacenter.cfg ``crs: ha-auto-rebalance=1``, PVE 9.2):
    #: the operator leaves the placement of its HA-managed CTs to PVE instead of moving them against it.
    ha_auto_rebalance: bool = False

    def __post_init__(self) -> None:
        names = [n.name for n in self.pool_nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"pool node names must be unique, got {names}")

    @property
    def pool_node_names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.pool_nodes)

    def pool_node(self, name: str) -> PoolNodeSpec | None:
        return next((n for n in self.pool_nodes if n.name == name), None)

    def pressure_now(self, node: str) -> float | None:
        """The node's latest pressure sample (fraction), or None without a trigger or samples."""
        samples = self.pressure_history.get(node) if self.thresholds.pressure is not None else None
        return samples[-1] if samples else None

    def under_pressure(self, node: str) -> bool:
        """The latest pressure sample is above the trigger: the node receives no CTs."""
        trigger, now = self.thresholds.pressure, self.pressure_now(node)
        return trigger is not None and now is not None and now > trigger.above_fraction

    def sustained_pressure(self, node: str) -> bool:
        """The last ``sustainedSamples`` pressure samples are all above the trigger."""
        trigger = self.thresholds.pressure
        samples = self.pressure_history.get(node)
        count = self.thresholds.sustained_samples
        if trigger is None or samples is None or len(samples) < count:
            return False
        return all(s > trigger.above_fraction for s in samples[len(samples) - count :])

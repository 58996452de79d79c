"""Limits applied once, after the strategies and before execution.

A strategy proposes what it would do; :class:`Limiter` decides what happens this cycle:

* ``maxConcurrentMigrations``: migrations (and restores that migrate) in flight plus the ones admitted
  stay within the limit;
* at most ``max_inbound_per_target`` migrations into one node per cycle, counting the ones arriving now;
* per-CT cooldown (a maintenance drain is exempt: the user asked for it), pins, locks, operations in
  flight, and CTs that are not ours, checked again whatever the strategy did: the last line of defence;
* ordering: every admitted action is checked against the state projected from the actions admitted
  before it, so dropping one action never lets a later one overcommit a node that counted on the room
  the dropped one would have made. An action whose target is too full *now* waits for later actions in
  the list that free room there (moves out of it, offloads on it) and is admitted after them, as in
  proxlb-solver's planner; one that never fits is refused (``WouldOvercommit``).

Each admitted action that adds load to a node lists, in ``depends_on``, the admitted actions before it
that take load off that node. The execution contract: start actions in plan order, and start one only
once its ``depends_on`` have finished; otherwise they may overlap. Then a node never holds more than
the plan's projection at its latest arrival so far (the moves that made room for it are done, later
arrivals have not started), which is at or under its threshold.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from pve_operator.planning.actions import BalanceAction, MigrateContainer, OffloadContainer, RestoreContainer
from pve_operator.planning.balancing.eligibility import migration_backoff
from pve_operator.planning.balancing.inputs import BalancingInput
from pve_operator.planning.balancing.proposal import Refusal, RefusalKind, Stage
from pve_operator.planning.balancing.state import Load, WorkingState, at_or_below, restored_load
from pve_operator.planning.model import ContainerStatus


@dataclass(frozen=True)
class LimitedActions:
    """What the limits let through, in a safe order, and what they held back."""

    actions: tuple[BalanceAction, ...]
    refusals: tuple[Refusal, ...]
    #: vmid -> vmids whose actions must finish before this one starts (they make its room).
    depends_on: Mapping[int, tuple[int, ...]]


def is_migration(action: BalanceAction) -> bool:
    """Whether the action migrates a CT (and so counts against the migration limits)."""
    return isinstance(action, MigrateContainer) or (isinstance(action, RestoreContainer) and action.moves)


def _stage(action: BalanceAction) -> Stage:
    return action.kind


class _Wait(Exception):
    """The action does not fit yet; it may once later actions have freed room."""


class Limiter:
    """Admits actions stage by stage, keeping the counters and the projection between stages."""

    def __init__(self, inp: BalancingInput) -> None:
        self._inp = inp
        self._state = WorkingState(inp.snapshot, inp.thresholds.metric)
        self._migrations = len(inp.in_flight.migrations)
        self._inbound: Counter[str] = Counter(inp.in_flight.migrations.values())
        self._freed_by: dict[str, list[int]] = {}
        self._admitted: list[BalanceAction] = []
        self._depends_on: dict[int, tuple[int, ...]] = {}
        self._acted: set[int] = set()

    @property
    def admitted(self) -> tuple[BalanceAction, ...]:
        return tuple(self._admitted)

    @property
    def acted_vmids(self) -> frozenset[int]:
        return frozenset(self._acted)

    @property
    def depends_on(self) -> Mapping[int, tuple[int, ...]]:
        return MappingProxyType(dict(self._depends_on))

    def admit(self, actions: Sequence[BalanceAction]) -> tuple[list[BalanceAction], list[Refusal]]:
        """Admit what the limits allow, in a safe order; refuse the rest with the reason."""
        admitted: list[BalanceAction] = []
        refusals: list[Refusal] = []
        pending = list(actions)
        while pending:
            waiting: list[BalanceAction] = []
            for action in pending:
                try:
                    refused = self._check(action)
                except _Wait:
                    waiting.append(action)
                    continue
                if refused is not None:
                    refusals.append(refused)
                else:
                    self._accept(action)
                    admitted.append(action)
            if len(waiting) == len(pending):
                break  # nothing moved this pass: the rest can never fit
            pending = waiting
        for action in pending:
            refusals.append(
                self._refusal(
                    action,
                    RefusalKind.WOULD_OVERCOMMIT,
                    f"{action.kind} of CT {action.vmid} to {self._target(action)} dropped: without the actions the "
                    f"limits held back, {self._target(action)} would end above its threshold",
                )
            )
        return admitted, refusals

    # -- checks ----------------------------------------------------------------------------------

    def _check(self, action: BalanceAction) -> Refusal | None:
        inp = self._inp
        managed = inp.managed.get(action.vmid)
        ct = inp.snapshot.containers.get(action.vmid)
        if managed is None or ct is None:
            return self._refusal(action, RefusalKind.NOT_MANAGED, f"CT {action.vmid} is not the operator's: untouched")
        if action.vmid in self._acted:
            return self._refusal(action, RefusalKind.IN_FLIGHT, f"CT {action.vmid} is already acted on in this plan")
        if action.vmid in inp.in_flight.busy_vmids:
            return self._refusal(action, RefusalKind.IN_FLIGHT, f"CT {action.vmid} has an operation in flight")
        if ct.lock:
            return self._refusal(action, RefusalKind.LOCKED, f"CT {action.vmid} is locked ({ct.lock})")
        if ct.status is ContainerStatus.UNKNOWN:
            return self._refusal(action, RefusalKind.STATUS_UNKNOWN, f"CT {action.vmid} state is unknown to PVE")
        moves_ct = isinstance(action, OffloadContainer) or is_migration(action)
        if managed.pinned and moves_ct:
            return self._refusal(action, RefusalKind.PINNED, f"CT {action.vmid} is pinned")
        evacuation = isinstance(action, MigrateContainer) and action.evacuation
        if not evacuation and managed.in_cooldown(inp.now, inp.limits.cooldown_seconds):
            return self._refusal(action, RefusalKind.COOLDOWN, f"CT {action.vmid} is in cooldown")
        if self._state.location.get(action.vmid) != action.node:
            return self._refusal(
                action, RefusalKind.IN_FLIGHT, f"CT {action.vmid} is no longer on {action.node}: plan is stale"
            )
        if is_migration(action):
            target = self._target(action)
            if backoff := migration_backoff(inp.now, action.vmid, managed):
                return self._refusal(action, *backoff)
            if self._migrations >= inp.limits.max_concurrent_migrations:
                return self._refusal(
                    action,
                    RefusalKind.CONCURRENCY_LIMIT,
                    f"{action.kind} of CT {action.vmid} to {target} waits: maxConcurrentMigrations "
                    f"{inp.limits.max_concurrent_migrations} reached",
                )
            if self._inbound[target] >= inp.limits.max_inbound_per_target:
                return self._refusal(
                    action,
                    RefusalKind.INBOUND_LIMIT,
                    f"{action.kind} of CT {action.vmid} to {target} waits: {target} already receives a migration "
                    "this cycle",
                )
        self._check_room(action)
        return None

    def _check_room(self, action: BalanceAction) -> None:
        """Raise ``_Wait`` when the action's target would end above its threshold on the current projection."""
        state = self._state
        thresholds = self._inp.thresholds
        if isinstance(action, OffloadContainer):
            return
        node = state.nodes.get(action.target)
        if node is None or not node.online:
            raise _Wait
        if isinstance(action, MigrateContainer):
            load = state.load[action.vmid]
            limit = thresholds.migrate_above_fraction
        else:
            ct = self._inp.snapshot.containers[action.vmid]
            start = restored_load(ct, action.expected_memory_used_bytes, action.expected_cpu_used_fraction)
            disk = state.load[action.vmid].disk_bytes if action.moves else 0
            load = Load(start.cpu_cores, start.memory_bytes, disk)
            limit = thresholds.restore_below_fraction
        if not node.fits(load) or not at_or_below(node.fraction(thresholds.metric, load), limit):
            raise _Wait

    # -- bookkeeping -----------------------------------------------------------------------------

    def _accept(self, action: BalanceAction) -> None:
        self._state.apply(action)
        self._admitted.append(action)
        self._acted.add(action.vmid)
        if isinstance(action, OffloadContainer):
            self._freed_by.setdefault(action.node, []).append(action.vmid)
            return
        target = action.target
        if is_migration(action):
            self._migrations += 1
            self._inbound[target] += 1
            self._freed_by.setdefault(action.node, []).append(action.vmid)
        makers = tuple(v for v in self._freed_by.get(target, []) if v != action.vmid)
        if makers:
            self._depends_on[action.vmid] = makers

    def _target(self, action: BalanceAction) -> str:
        return action.node if isinstance(action, OffloadContainer) else action.target

    def _refusal(self, action: BalanceAction, kind: RefusalKind, reason: str) -> Refusal:
        return Refusal(kind=kind, stage=_stage(action), reason=reason, vmid=action.vmid, node=action.node)


def apply_limits(inp: BalancingInput, actions: Sequence[BalanceAction]) -> LimitedActions:
    """Run one list of actions through a fresh :class:`Limiter`."""
    limiter = Limiter(inp)
    admitted, refusals = limiter.admit(actions)
    return LimitedActions(actions=tuple(admitted), refusals=tuple(refusals), depends_on=limiter.depends_on)

"""What a strategy returns: actions, plus refusals that say why something visible was not done.

Refusals are data, not log lines, so the operator can turn them into status entries and Kubernetes
events ("CT 3104 stays on srv-px1: in cooldown for another 12 minutes") and tests can assert on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pve_operator.planning.actions import BalanceAction

Stage = Literal["Migrate", "Offload", "Restore"]


class RefusalKind(StrEnum):
    """Why the planner did not act where a user might expect it to."""

    #: Above a threshold now, but not for ``sustainedSamples`` samples: a spike is waited out.
    NOT_SUSTAINED = "NotSustained"
    #: The CT was migrated, offloaded or restored less than ``cooldownSeconds`` ago.
    COOLDOWN = "Cooldown"
    #: The CT is pinned (tag or policy annotation).
    PINNED = "Pinned"
    #: PVE holds a lock on the CT (backup, migrate, ...).
    LOCKED = "Locked"
    #: An operation on the CT is still running.
    IN_FLIGHT = "InFlight"
    #: PVE does not report the CT's state yet.
    STATUS_UNKNOWN = "StatusUnknown"
    #: No eligible node has room under its threshold for the CT.
    NO_TARGET = "NoTarget"
    #: Stopping every eligible CT of ours would not bring the node under the offload threshold.
    NO_RELIEF = "NoRelief"
    #: The CT is not the operator's (never proposed by a strategy; the limits check it again).
    NOT_MANAGED = "NotManaged"
    #: ``maxConcurrentMigrations`` reached (counting migrations in flight).
    CONCURRENCY_LIMIT = "ConcurrencyLimit"
    #: The target already receives a migration this cycle.
    INBOUND_LIMIT = "InboundLimit"
    #: Without an action the limits dropped, this one would take its target above its threshold.
    WOULD_OVERCOMMIT = "WouldOvercommit"
    #: The CT's last migration(s) failed (e.g. PVE's restart migration: ``container did not stop``,
    #: the CT ignores shutdown and PVE never force-stops it there): not tried again before a backoff.
    MIGRATION_FAILED = "MigrationFailed"
    #: The only move that would relieve the node (or repair a spread) breaks the CT's policy's
    #: topologySpreadConstraints (DoNotSchedule) or required node affinity: not done, said instead.
    SPREAD_VIOLATION = "SpreadViolation"
    #: A Proxmox VE HA rule (node or resource affinity) names the CT: PVE's HA manager places it.
    HA_RULE = "HaRule"
    #: The CT is HA-managed and PVE's CRS auto-rebalance is on: PVE balances it, not the operator.
    HA_BALANCED_BY_PVE = "HaBalancedByPve"


@dataclass(frozen=True)
class Refusal:
    """One thing not done, with the figures."""

    kind: RefusalKind
    stage: Stage
    reason: str
    vmid: int | None = None
    node: str | None = None


@dataclass(frozen=True)
class Proposal:
    """A strategy's answer: actions in the order they are safe to run, and refusals."""

    actions: tuple[BalanceAction, ...] = ()
    refusals: tuple[Refusal, ...] = ()

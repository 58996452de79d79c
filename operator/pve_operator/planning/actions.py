"""Actions the planners propose: plain data with a reason a user can read.

Execution (``pve_operator.execution``) applies them under limits; status and events show them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pve_operator.planning.model import UsageMeasure


@dataclass(frozen=True)
class CreateContainer:
    vmid: int
    node: str
    index: int
    hostname: str
    reason: str
    kind: Literal["Create"] = "Create"
    #: A rolling update's replacement for this outdated CT, which holds keepOnRecreate volumes: created on
    #: its node, stopped and without those mount points (its record names the source), for
    #: :class:`HandOverVolumes` to give them to it.
    volumes_from: int | None = None


@dataclass(frozen=True)
class StartContainer:
    vmid: int
    node: str
    reason: str
    kind: Literal["Start"] = "Start"


@dataclass(frozen=True)
class DestroyContainer:
    """Stop (if running) and destroy with purge. Only ever proposed for CTs proven ours."""

    vmid: int
    node: str
    running: bool
    reason: str
    kind: Literal["Delete"] = "Delete"
    #: Refused while the CT's config still has any of these keys (kept volumes a handover has not moved).
    unless_holding: tuple[str, ...] = ()


@dataclass(frozen=True)
class RestoreConfig:
    """Put drifted settings back (``changes`` are PVE config keys and values)."""

    vmid: int
    node: str
    changes: dict[str, int | str] = field(default_factory=dict)
    reason: str = ""
    kind: Literal["Repair"] = "Repair"
    #: Restart-class settings (Proxmox VE keeps them pending on a running CT): reboot the CT afterwards.
    restart: bool = False


@dataclass(frozen=True)
class RecordTemplate:
    """Stamp the (signed) template hash into the ownership record of a CT created before records carried
    one: the CT is taken to have the template the policy has now (so an upgrade recreates nothing)."""

    vmid: int
    node: str
    template_hash: str
    reason: str = "record the template the CT has, for rolling updates"
    kind: Literal["Repair"] = "Repair"


@dataclass(frozen=True)
class RestoreMarks:
    """Put back the policy's notes in the description (above the ownership record, which is kept), the tags
    it wants that are missing, and take off the tags template.tags no longer lists (``remove_tags``; other
    tags others added are left alone)."""

    vmid: int
    node: str
    notes: str | None = None
    add_tags: frozenset[str] = frozenset()
    remove_tags: frozenset[str] = frozenset()
    reason: str = ""
    kind: Literal["Repair"] = "Repair"


@dataclass(frozen=True)
class HandOverVolumes:
    """A rolling update's handover of keepOnRecreate volumes from an outdated CT (``source_vmid``) to the
    replacement made for it (``vmid``, same node, stopped): stop the source, reassign each of ``keys`` still
    on it (PVE ``move_volume`` with ``target-vmid``), start the replacement, destroy the source. Every step
    is skipped when already done, so a handover cut short is finished by the next one. ``source_vmid`` None:
    the source is gone (its volumes with it): the replacement gets new empty volumes for the keys it lacks,
    and starts."""

    vmid: int
    node: str
    source_vmid: int | None
    keys: tuple[str, ...]
    reason: str
    kind: Literal["HandOver"] = "HandOver"


@dataclass(frozen=True)
class MigrateContainer:
    """Move a CT to ``target``. A running CT moves with a restart (LXC has no live migration), so it is
    down for the move; a stopped CT only has its volumes copied.

    The percent figures are the pool's metric on both nodes just before and (projected) just after this
    move, in plan order, so status and events can show what the planner expected.
    """

    vmid: int
    node: str
    target: str
    running: bool
    reason: str
    source_percent_before: float
    source_percent_after: float
    target_percent_before: float
    target_percent_after: float
    #: A maintenance drain: the user asked for the node to be emptied, so the per-CT cooldown does not apply.
    evacuation: bool = False
    kind: Literal["Migrate"] = "Migrate"


@dataclass(frozen=True)
class OffloadContainer:
    """Stop a running CT of ours to shed load, and mark it offloaded (tag) so that repair leaves it stopped
    and restore starts it again when there is room. Its disk stays on ``node``."""

    vmid: int
    node: str
    reason: str
    source_percent_before: float
    source_percent_after: float
    running: bool = True
    kind: Literal["Offload"] = "Offload"


@dataclass(frozen=True)
class RestoreContainer:
    """Start an offloaded CT again on ``target``; when ``target`` differs from ``node`` (where it lies
    stopped), migrate it there first (a stopped migration: no downtime beyond the copy).

    ``expected_*`` is the usage the planner counted for the CT once started (what it used when it was
    offloaded, else its limits): projection adds exactly this to the target.
    """

    vmid: int
    node: str
    target: str
    reason: str
    expected_memory_used_bytes: int
    #: CPU use as a fraction of the CT's own cores, like ``ContainerObservation.cpu_used_fraction``.
    expected_cpu_used_fraction: float
    source_percent_before: float
    source_percent_after: float
    target_percent_before: float
    target_percent_after: float
    running: bool = False
    kind: Literal["Restore"] = "Restore"

    @property
    def moves(self) -> bool:
        """Whether the CT is migrated before it starts."""
        return self.target != self.node


#: What the balancing planner proposes (``pve_operator.planning.balancing``).
BalanceAction = MigrateContainer | OffloadContainer | RestoreContainer

Action = (
    CreateContainer
    | StartContainer
    | DestroyContainer
    | RestoreConfig
    | RecordTemplate
    | RestoreMarks
    | HandOverVolumes
)


def describe(action: BalanceAction, metric: UsageMeasure) -> str:
    """E.g. ``migrate CT 3104 srv-px1 → srv-px2: memory 82% → 64% on srv-px1`` (the source's figures)."""
    verb = {"Migrate": "migrate", "Offload": "offload (stop)", "Restore": "restore (start)"}[action.kind]
    target = getattr(action, "target", None)
    where = f"{action.node} → {target}" if target and target != action.node else action.node
    return (
        f"{verb} CT {action.vmid} {where}: {metric.value} "
        f"{action.source_percent_before:.0f}% → {action.source_percent_after:.0f}% on {action.node}"
    )

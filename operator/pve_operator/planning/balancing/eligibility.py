"""Which CTs a strategy may act on and which nodes may receive, with the reason when not.

Shared by every strategy and by the limits, so that "pinned", "locked", "in cooldown" mean the same
thing everywhere and produce the same words in status.
"""

from __future__ import annotations

from pve_operator.planning.balancing.inputs import BalancingInput, ManagedCT
from pve_operator.planning.balancing.proposal import Refusal, RefusalKind, Stage
from pve_operator.planning.balancing.state import WorkingState
from pve_operator.planning.model import ContainerObservation, ContainerStatus


def blocked(
    inp: BalancingInput,
    ct: ContainerObservation,
    managed: ManagedCT,
    *,
    cooldown: bool = True,
    pin: bool = True,
    migration: bool = False,
) -> tuple[RefusalKind, str] | None:
    """Why this CT of ours must be left alone this cycle, or None. ``cooldown``/``pin``: whether they
    count; ``migration``: the action would migrate it (a recent failed migration then counts too)."""
    if ct.vmid in inp.in_flight.busy_vmids:
        return RefusalKind.IN_FLIGHT, f"CT {ct.vmid} has an operation in flight"
    if ct.lock:
        return RefusalKind.LOCKED, f"CT {ct.vmid} is locked ({ct.lock})"
    if ct.status is ContainerStatus.UNKNOWN:
        return RefusalKind.STATUS_UNKNOWN, f"CT {ct.vmid} state is unknown to PVE"
    if pin and managed.pinned:
        return RefusalKind.PINNED, f"CT {ct.vmid} is pinned"
    if cooldown and managed.in_cooldown(inp.now, inp.limits.cooldown_seconds):
        assert managed.last_action_at is not None
        left = inp.limits.cooldown_seconds - (inp.now - managed.last_action_at)
        return RefusalKind.COOLDOWN, f"CT {ct.vmid} is in cooldown for another {_duration(left)}"
    if migration:
        return ha_placed(inp, ct, managed) or migration_backoff(inp.now, ct.vmid, managed)
    return None


def ha_placed(inp: BalancingInput, ct: ContainerObservation, managed: ManagedCT) -> tuple[RefusalKind, str] | None:
    """Why Proxmox VE's HA stack, not the operator, decides where this CT runs, or None."""
    if managed.ha_rule is not None:
        return (
            RefusalKind.HA_RULE,
            f"CT {ct.vmid} is in Proxmox VE HA rule {managed.ha_rule}: PVE's HA manager decides its node",
        )
    if inp.ha_auto_rebalance and ct.ha_managed:
        return (
            RefusalKind.HA_BALANCED_BY_PVE,
            f"CT {ct.vmid} is HA-managed and PVE's CRS auto-rebalance is on: PVE balances it",
        )
    return None


def migration_backoff(now: float, vmid: int, managed: ManagedCT) -> tuple[RefusalKind, str] | None:
    """``MigrationFailed`` while the backoff after the CT's last failed migration(s) runs."""
    failures = managed.migration_failures
    if failures is None or now >= failures.retry_at():
        return None
    hint = ""
    if "did not stop" in failures.last_message:
        hint = (
            " (it ignored the shutdown of the restart migration; Proxmox VE never force-stops a CT there, "
            "so the CT kept running on its node)"
        )
    return (
        RefusalKind.MIGRATION_FAILED,
        f"CT {vmid}: its last {failures.count} migration(s) failed{hint}; not tried again for another "
        f"{_duration(failures.retry_at() - now)}: {failures.last_message}"[:1024],
    )


def refusal(stage: Stage, why: tuple[RefusalKind, str], vmid: int, node: str) -> Refusal:
    return Refusal(kind=why[0], stage=stage, reason=why[1], vmid=vmid, node=node)


def managed_by_node(
    inp: BalancingInput, state: WorkingState
) -> dict[str, list[tuple[ContainerObservation, ManagedCT]]]:
    """Our CTs grouped by the node the snapshot shows them on, each list by vmid (one pass over them).
    CTs an earlier stage of this plan acts on are left out: they are taken care of."""
    groups: dict[str, list[tuple[ContainerObservation, ManagedCT]]] = {}
    planned = inp.in_flight.planned_vmids
    for vmid in sorted(inp.managed):
        ct = inp.snapshot.containers.get(vmid)
        if ct is None or ct.template or vmid in planned:
            continue
        groups.setdefault(state.location[vmid], []).append((ct, inp.managed[vmid]))
    return groups


def receiving_nodes(inp: BalancingInput, state: WorkingState) -> list[str]:
    """Pool nodes that may receive CTs, in pool order: online, not in maintenance, weight above 0,
    capacities known, not under pressure (``thresholds.pressure``, latest sample). (Thresholds are
    checked per move, on the projected load.)"""
    result = []
    for spec in inp.pool_nodes:
        node = state.nodes.get(spec.name)
        if node is None or not node.online or spec.maintenance or spec.weight <= 0 or not node.capacity_known:
            continue
        if inp.under_pressure(spec.name):
            continue
        result.append(spec.name)
    return result


def _duration(seconds: float) -> str:
    whole = max(0, round(seconds))
    if whole >= 3600:
        return f"{whole // 3600}h{(whole % 3600) // 60:02d}m"
    if whole >= 60:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole}s"

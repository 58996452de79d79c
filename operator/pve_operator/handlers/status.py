"""Status builders: snapshots, plans and outcomes → the API's status models. Pure functions."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from pydantic import ValidationError

from pve_operator.api.v1alpha1 import (
    MAX_RECENT_ACTIONS,
    ActionKind,
    ActionResult,
    Condition,
    ConditionReason,
    ConditionStatus,
    ConditionType,
    ContainerState,
    ContainerStatus,
    ForeignInRangeContainer,
    NodeDistribution,
    OwnershipLostContainer,
    RecordedAction,
    describe_validation_error,
    set_condition,
)
from pve_operator.api.v1alpha1.common import format_timestamp
from pve_operator.api.v1alpha1.serverpool import NodeStatus, ProxmoxServerPoolSpec
from pve_operator.execution.executor import Outcome
from pve_operator.planning.model import ClusterSnapshot, ContainerObservation, Metric
from pve_operator.planning.ownership import MANAGED_TAG, OFFLOADED_TAG, ForeignClaim, OwnershipRecord, policy_tag
from pve_operator.planning.reconcile import OwnedContainer
from pve_operator.pve.errors import (
    PveAuthenticationError,
    PveError,
    PveNotProxmox,
    PvePermissionError,
    PveUnreachable,
)
from pve_operator.pve.ha import PveHaNotConverging
from pve_operator.runtime import ConfigurationError


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def rfc3339(moment: datetime) -> str:
    return format_timestamp(moment)


def parse_conditions(raw: Iterable[Mapping[str, Any]] | None) -> tuple[Condition, ...]:
    result = []
    for item in raw or ():
        try:
            result.append(Condition.model_validate(item))
        except ValueError:
            continue  # a hand-edited condition we cannot read is replaced, not fatal
    return tuple(result)


class ConditionUpdate(NamedTuple):
    """One condition to set in this cycle's status."""

    type: ConditionType
    status: ConditionStatus
    reason: ConditionReason
    message: str = ""


def failed(reason: ConditionReason, message: str) -> list[ConditionUpdate]:
    """The object cannot do its work: ``Ready=False`` and ``Degraded=True``, same reason and message."""
    return [
        ConditionUpdate(ConditionType.READY, ConditionStatus.FALSE, reason, message),
        ConditionUpdate(ConditionType.DEGRADED, ConditionStatus.TRUE, reason, message),
    ]


def failure(exc: BaseException, *, where: str, redact: Callable[[str], str]) -> tuple[ConditionReason, str]:
    """The condition reason and message for what stopped a cycle, the one mapping for both kinds.

    ``where`` names the Proxmox VE side as the object sees it ("Proxmox VE API at https://...", "Proxmox
    VE of pool lab"); ``redact`` removes secret values from any text that quotes an answer."""
    if isinstance(exc, ConfigurationError):
        return exc.reason, exc.message
    if isinstance(exc, ValidationError):
        return ConditionReason.INVALID_SPEC, describe_validation_error(exc)
    if isinstance(exc, PveUnreachable):
        return ConditionReason.UNREACHABLE, redact(f"{where} is unreachable: {exc}")
    if isinstance(exc, PveAuthenticationError):
        return ConditionReason.AUTHENTICATION_FAILED, redact(f"{where} rejected the credentials: {exc.pve_message}")
    if isinstance(exc, PvePermissionError):
        return ConditionReason.PERMISSION_DENIED, redact(f"Proxmox VE denied a request: {exc}")
    if isinstance(exc, PveNotProxmox):
        return ConditionReason.NOT_PROXMOX, redact(f"{where} does not answer as Proxmox VE: {exc}")
    if isinstance(exc, PveHaNotConverging):
        return ConditionReason.HA_NOT_CONVERGING, redact(str(exc))
    if isinstance(exc, PveError):
        return ConditionReason.PROXMOX_ERROR, redact(str(exc))
    # Not a Proxmox answer (a TLS file gone during a Secret rotation, a bug): say so, retry next cycle.
    return ConditionReason.INTERNAL_ERROR, redact(f"{type(exc).__name__}: {exc}")[:1024]


def with_conditions(
    current: Sequence[Condition],
    updates: Iterable[ConditionUpdate],
    *,
    now: datetime,
    generation: int | None,
) -> tuple[Condition, ...]:
    """Apply the updates, keeping lastTransitionTime where status holds."""
    conditions = tuple(current)
    for condition_type, status, reason, message in updates:
        conditions = set_condition(
            conditions,
            condition_type,
            status,
            reason=reason,
            message=message,
            now=now,
            observed_generation=generation,
        )
    return conditions


def conditions_payload(conditions: Sequence[Condition]) -> list[dict[str, Any]]:
    return [c.to_dict() for c in conditions]


def percent(value: float) -> float:
    return round(value * 100.0, 1)


def node_statuses(spec: ProxmoxServerPoolSpec, snapshot: ClusterSnapshot) -> list[NodeStatus]:
    managed: dict[str, int] = {}
    for ct in snapshot.containers.values():
        if MANAGED_TAG in ct.tags:
            managed[ct.node] = managed.get(ct.node, 0) + 1
    result = []
    for name in spec.node_names:
        usage = snapshot.nodes.get(name)
        if usage is None or not usage.online:
            result.append(NodeStatus(name=name, online=False, managed_containers=managed.get(name, 0)))
            continue
        result.append(
            NodeStatus(
                name=name,
                online=True,
                cpu_percent=percent(usage.used_fraction(Metric.CPU)),
                memory_percent=percent(usage.used_fraction(Metric.MEMORY)),
                disk_percent=percent(usage.used_fraction(Metric.DISK)),
                managed_containers=managed.get(name, 0),
            )
        )
    return result


def container_state(obs: ContainerObservation | None, *, node_online: bool = True) -> ContainerState:
    if obs is None:
        return ContainerState.MISSING
    if not node_online:
        return ContainerState.UNKNOWN
    if obs.lock == "migrate":
        return ContainerState.MIGRATING
    if obs.lock == "create" or obs.status.value == "unknown":
        return ContainerState.CREATING
    if obs.running:
        return ContainerState.RUNNING
    if OFFLOADED_TAG in obs.tags:
        return ContainerState.OFFLOADED
    return ContainerState.STOPPED


def container_statuses(
    owned: Sequence[OwnedContainer],
    snapshot: ClusterSnapshot,
    hostname_for: Callable[[int], str],
    template_hash: str = "",
) -> list[ContainerStatus]:
    result = []
    for item in sorted(owned, key=lambda o: o.vmid):
        obs = item.observation
        node = snapshot.nodes.get(obs.node) if obs else None
        entry: dict[str, Any] = {
            "vmid": item.vmid,
            "hostname": (obs.name if obs and obs.name else hostname_for(item.index)),
            "node": obs.node if obs else None,
            "state": container_state(obs, node_online=node is not None and node.online),
            "created_at": item.created_at or None,
            "template_hash": item.template_hash or None,
            "outdated": True if item.template_hash and template_hash and item.template_hash != template_hash else None,
        }
        if obs is not None and node is not None and obs.running:
            if node.cpu_cores:
                entry["cpu_percent"] = percent(obs.cpu_used_fraction * obs.cpu_cores / node.cpu_cores)
            if node.memory_total_bytes:
                entry["memory_percent"] = percent(obs.memory_used_bytes / node.memory_total_bytes)
            if node.disk_total_bytes:
                entry["disk_percent"] = percent(obs.disk_used_bytes / node.disk_total_bytes)
        result.append(ContainerStatus.model_validate(entry))
    return result


def distribution(statuses: Sequence[ContainerStatus], node_order: Sequence[str]) -> list[NodeDistribution]:
    counts: dict[str, list[int]] = {name: [0, 0] for name in node_order}
    for ct in statuses:
        if ct.node is None:
            continue
        bucket = counts.setdefault(ct.node, [0, 0])
        bucket[0] += 1
        bucket[1] += ct.state is ContainerState.RUNNING
    return [NodeDistribution(node=n, replicas=c[0], running=c[1]) for n, c in counts.items()]


def recorded(outcome: Outcome, *, policy: str, now: datetime, hostname: str | None = None) -> RecordedAction:
    action = outcome.action
    source = getattr(action, "node", None)
    return RecordedAction(
        time=now,
        action=ActionKind(action.kind),
        vmid=action.vmid,
        hostname=hostname or getattr(action, "hostname", None),
        policy=policy,
        source_node=None if action.kind == "Create" else source,
        target_node=source if action.kind == "Create" else None,
        reason=action.reason[:1024],
        result=ActionResult.SUCCEEDED if outcome.succeeded else ActionResult.FAILED,
        message=outcome.message[:1024],
    )


def append_recent(existing: Iterable[Mapping[str, Any]] | None, new: Sequence[RecordedAction]) -> list[dict[str, Any]]:
    """recentActions with ``new`` appended, oldest dropped beyond the cap."""
    merged = [dict(item) for item in existing or ()] + [a.to_dict() for a in new]
    return merged[-MAX_RECENT_ACTIONS:]


def ownership_lost(
    previous: Mapping[str, Any],
    owned: Sequence[OwnedContainer],
    snapshot: ClusterSnapshot,
    policy_uid: str,
) -> list[OwnershipLostContainer]:
    """CTs the policy counted before (``status.containers``, or already listed as lost) that are still
    in the cluster but no longer proven ours, with the mark that is gone. Stateless: a restarted
    operator reports them too."""
    known = {int(c["vmid"]) for c in previous.get("containers") or () if "vmid" in c}
    known |= {int(c["vmid"]) for c in previous.get("ownershipLost") or () if "vmid" in c}
    proven = {o.vmid for o in owned}
    lost = []
    for vmid in sorted(known - proven):
        ct = snapshot.containers.get(vmid)
        if ct is None:
            continue  # gone: the policy recreates it as Missing, nothing was lost
        missing = [tag for tag in (MANAGED_TAG, policy_tag(policy_uid)) if tag not in ct.tags]
        what = f"tag {', '.join(missing)}" if missing else "the ownership record in its description"
        lost.append(OwnershipLostContainer(vmid=vmid, node=ct.node, missing=what))
    return lost


def counted_vmids(status: Mapping[str, Any]) -> frozenset[int]:
    """The VMIDs the policy's status lists as its CTs: seen created (and proven) by this policy before."""
    return frozenset(int(c["vmid"]) for c in status.get("containers") or () if c.get("vmid") is not None)


def foreign_in_range(
    records: Mapping[int, OwnershipRecord | ForeignClaim | None],
) -> list[ForeignInRangeContainer]:
    """Status entries for the CTs that claim to be the policy's and prove nothing, by VMID."""
    return [
        ForeignInRangeContainer(vmid=r.vmid, node=r.node or None, why=r.why)
        for r in sorted((r for r in records.values() if isinstance(r, ForeignClaim)), key=lambda r: r.vmid)
    ]

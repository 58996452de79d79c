"""ContainerPolicy handlers: reconcile actual CTs toward the spec, repair drift, clean up on delete.

Thin glue: validate spec → take one snapshot → prove ownership → plan (``planning.reconcile``) →
execute (``execution``) → write status and events. Runs on create/update(spec)/resume and on a timer
(drift repair, fill growth). A per-policy lock keeps the two from overlapping.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NoReturn

import kopf
from kubernetes import client as kube_client
from pydantic import ValidationError

from pve_operator.api.v1alpha1 import (
    GROUP,
    VERSION,
    ActionKind,
    ConditionReason,
    ConditionStatus,
    ConditionType,
    ContainerPolicySpec,
    ContainerState,
    ContainerStatus,
    DeletionPolicy,
    FillStoppedReason,
    PolicyTask,
    ProxmoxServerPoolSpec,
    VmidConflict,
    describe_validation_error,
)
from pve_operator.api.v1alpha1.common import full_match, parse_epoch
from pve_operator.api.v1alpha1.containerpolicy import SSH_PUBLIC_KEY, PolicyHaStatus
from pve_operator.api.v1alpha1.serverpool import parse_endpoint
from pve_operator.execution.discovery import creations_in_progress, discover_owned, sweep_configs
from pve_operator.execution.executor import (
    CycleResult,
    NotOurs,
    Outcome,
    PolicyExecutor,
    PolicyIdentity,
    TemplateNotFound,
)
from pve_operator.execution.ha_registration import apply_ha, read_and_plan
from pve_operator.execution.policy_input import blueprint_from, intent_from, retired_tags, template_tags
from pve_operator.handlers.common import POLICIES, contained, namespaced
from pve_operator.handlers.policy_conditions import PolicyCycleFacts, policy_conditions
from pve_operator.handlers.status import (
    ConditionUpdate,
    append_recent,
    conditions_payload,
    container_statuses,
    counted_vmids,
    distribution,
    failed,
    failure,
    foreign_in_range,
    now_utc,
    ownership_lost,
    parse_conditions,
    recorded,
    rfc3339,
    with_conditions,
)
from pve_operator.metrics import ACTIONS, MANAGED_CONTAINERS, RECONCILE_ERRORS, RECONCILIATIONS
from pve_operator.planning.actions import Action, CreateContainer, DestroyContainer, RecordTemplate
from pve_operator.planning.ha_registration import HaIntent, ha_intent
from pve_operator.planning.ownership import (
    ownership_tags,
)
from pve_operator.planning.pve_access import features_refusal, refused_tag_in
from pve_operator.planning.reconcile import (
    Backoff,
    FailedAttempt,
    GrowthStop,
    OwnedContainer,
    PolicyIntent,
    ReconcilePlan,
    clone_volumes_shared,
    creation_backoffs,
    find_clone_source,
    handover_pairs,
    plan_reconcile,
)
from pve_operator.planning.vmid_ranges import (
    PolicyVmidRange,
    VmidRangeOverlap,
    describe_overlaps,
    find_overlaps,
    shared_vmids,
)
from pve_operator.pve.client import PveClient
from pve_operator.pve.errors import (
    PveError,
)
from pve_operator.pve.ha import PveHaNotConverging
from pve_operator.pve.params import (
    CloneFrom,
    ContainerBlueprint,
)
from pve_operator.runtime import (
    DRIFT_SWEEP_PER_CYCLE,
    MAX_PARALLEL_TASKS,
    POLICY_TICK_SECONDS,
    RECONCILE_INTERVAL_SECONDS,
    TASK_TIMEOUT_SECONDS,
    ConfigurationError,
    OperatorRuntime,
)

log = logging.getLogger(__name__)

Updates = list[ConditionUpdate]
_GROWTH_REASON = {
    GrowthStop.USAGE_LIMIT_REACHED: FillStoppedReason.USAGE_LIMIT_REACHED,
    GrowthStop.MAX_REPLICAS_REACHED: FillStoppedReason.MAX_REPLICAS_REACHED,
    GrowthStop.POOL_FULL: FillStoppedReason.USAGE_LIMIT_REACHED,
}


class PolicyBlocked(ConfigurationError):
    """Reconciliation cannot proceed (the pool is gone or invalid, CTs are still being created);
    ``reason``/``message`` go into the conditions."""


# -- translation of API types into planner and executor inputs ------------------------------------


def ssh_keys_from_sources(runtime: OperatorRuntime, namespace: str, policy: ContainerPolicySpec) -> tuple[str, ...]:
    """The keys of ``template.sshPublicKeysFrom``, read now (only when the cycle creates): one OpenSSH public
    key per line, empty lines and ``#`` comments skipped; anything else is a ConfigurationError naming the
    object, the key and the line (nothing is created with a half-read key list)."""
    keys: list[str] = []
    for source in policy.template.ssh_public_keys_from:
        kind, ref = source.reference
        if kind == "Secret":
            text = runtime.secret_value(namespace, ref.name, ref.key)
        else:
            text = runtime.config_map_value(namespace, ref.name, ref.key)
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not full_match(SSH_PUBLIC_KEY, line):
                raise ConfigurationError(
                    ConditionReason.INVALID_SPEC,
                    f"spec.template.sshPublicKeysFrom: {kind} {namespace}/{ref.name} key {ref.key} line {number} is "
                    "not an OpenSSH public key (<type> <base64> [comment], e.g. ssh-ed25519 AAAA... user@host)",
                )
            keys.append(line)
    return tuple(keys)


# -- VMID ranges of the other policies on the same Proxmox VE cluster ---------------------------


def ranges_on_same_cluster(
    namespace: str,
    pool_name: str,
    pool: ProxmoxServerPoolSpec,
    policies_by_pool: Mapping[Any, Any],
    pools: Mapping[Any, Any],
) -> list[PolicyVmidRange]:
    """The VMID ranges of every policy the operator sees on the same Proxmox VE cluster: the same
    pool, or a pool (in any watched namespace) with the same API host and port."""
    address = pool.address
    ranges = []
    for (other_namespace, other_pool), summaries in policies_by_pool.items():
        if (other_namespace, other_pool) != (namespace, pool_name):
            other_specs = list(pools.get((other_namespace, other_pool), []))
            try:
                other_address = parse_endpoint(str(other_specs[0].get("endpoint", ""))) if other_specs else None
            except ValueError:
                other_address = None
            if other_address is None or (other_address.host, other_address.port) != (address.host, address.port):
                continue
        ranges += [
            PolicyVmidRange(str(other_namespace), s["name"], s["uid"], int(s["start"]), int(s["end"]))
            for s in summaries
        ]
    return ranges


def vmid_conflict_statuses(plan: ReconcilePlan, overlaps: list[VmidRangeOverlap]) -> list[VmidConflict]:
    """Status entries for the CTs kept off ``start + index``, saying who holds their VMID."""
    entries = []
    for item in plan.vmid_conflicts:
        owner = next((o.other.label for o in overlaps if item.wanted_vmid in o.vmids), None)
        held_by = (
            f"VMID {item.wanted_vmid} is also in the vmidRange of ContainerPolicy {owner}"
            if owner
            else f"VMID {item.wanted_vmid} is held by a guest that is not this policy's"
        )
        entries.append(VmidConflict(index=item.index, wanted_vmid=item.wanted_vmid, vmid=item.vmid, held_by=held_by))
    return entries


# -- conditions ---------------------------------------------------------------------------------


def _error_updates(exc: Exception, pool_name: str, runtime: OperatorRuntime) -> Updates:
    reason, message = failure(exc, where=f"Proxmox VE of pool {pool_name}", redact=runtime.redact)
    if reason is ConditionReason.INTERNAL_ERROR:
        log.warning("ContainerPolicy cycle failed: %s", message)
    return failed(reason, message)


# -- the reconcile cycle ------------------------------------------------------------------------


def _pool_spec(index: Mapping[Any, Any], namespace: str, pool_name: str) -> ProxmoxServerPoolSpec:
    found = list(index.get((namespace, pool_name), []))
    if not found:
        raise PolicyBlocked(ConditionReason.POOL_NOT_FOUND, f"ProxmoxServerPool {namespace}/{pool_name} does not exist")
    try:
        return ProxmoxServerPoolSpec.model_validate(found[0])
    except ValidationError as exc:
        raise PolicyBlocked(
            ConditionReason.POOL_INVALID, f"ProxmoxServerPool {pool_name}: {describe_validation_error(exc)}"
        ) from None


@dataclass
class PolicyCycle:
    """What one reconcile of a policy found, decided and did: built by :func:`_observe_and_plan`, acted on
    by :func:`_act`, reported by :func:`_report` (so the handler itself stays a sequence of phases)."""

    policy: ContainerPolicySpec
    pool: ProxmoxServerPoolSpec
    pool_name: str
    connection: Any
    snapshot: Any
    records: dict[int, Any]
    key: Any
    counted: frozenset[int]
    owned: list[OwnedContainer]
    intent: PolicyIntent
    plan: ReconcilePlan
    pending: list[int]
    overlaps: list[VmidRangeOverlap]
    backoffs: dict[int, Backoff]
    refused_tags: frozenset[str] = frozenset()
    features_refused: str | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    ha_status: dict[str, Any] | None = None
    ha_problem: PveError | None = None
    #: The template CT the policy clones from (template.clone), where it is now.
    clone: CloneFrom | None = None
    #: The policy's PVE tasks in flight as the last cycle left them (status.tasksInFlight) ...
    journal: list[PolicyTask] = field(default_factory=list)
    #: ... and as this cycle leaves them (None until it acted).
    in_flight: list[PolicyTask] | None = None


def reconcile_policy(
    *,
    name: str,
    namespace: str,
    uid: str,
    generation: int | None,
    spec: dict[str, Any],
    status: dict[str, Any],
    body: Any,
    patch: kopf.Patch,
    runtime: OperatorRuntime,
    pools: Mapping[Any, Any],
    policies_by_pool: Mapping[Any, Any],
    in_flight: Mapping[Any, Any],
) -> None:
    """One cycle: validate, observe and plan, act, report (each phase below)."""
    now = now_utc()
    previous = parse_conditions(status.get("conditions"))
    pool_name = str(spec.get("poolRef", {}).get("name", ""))
    reporter = ProgressReporter(body, namespace, name, status.get("recentActions"))
    try:
        policy = ContainerPolicySpec.model_validate(spec)
    except ValidationError as exc:
        _report_invalid_spec(body, patch, previous, describe_validation_error(exc), now, generation)
        return
    cycle: PolicyCycle | None = None
    try:
        cycle = _observe_and_plan(
            policy, (namespace, name, uid), pool_name, status, runtime, pools, policies_by_pool, in_flight, now
        )
        _act(cycle, (namespace, name, uid), status, runtime, reporter)
    except Exception as exc:
        if cycle is not None and cycle.in_flight is not None:
            _write_journal(cycle.in_flight, patch)  # tasks it started are followed, whatever failed after
        _report_error(exc, body, patch, previous, pool_name, runtime, now, generation)
        return
    RECONCILIATIONS.labels("ContainerPolicy", "ok").inc()
    _report(cycle, (namespace, name, uid), status, body, patch, previous, reporter, runtime, now, generation)


def _report_invalid_spec(
    body: Any, patch: kopf.Patch, previous: Sequence[Any], message: str, now: Any, generation: int | None
) -> None:
    old = next((c for c in previous if c.type == ConditionType.READY), None)
    if old is None or old.reason != "InvalidSpec" or old.message != message:
        kopf.warn(body, reason="InvalidSpec", message=message)
    _write_conditions(patch, previous, failed(ConditionReason.INVALID_SPEC, message), now, generation)


def _report_error(
    exc: Exception,
    body: Any,
    patch: kopf.Patch,
    previous: Sequence[Any],
    pool_name: str,
    runtime: OperatorRuntime,
    now: Any,
    generation: int | None,
) -> None:
    updates = _error_updates(exc, pool_name, runtime)
    _write_conditions(patch, previous, updates, now, generation)
    RECONCILIATIONS.labels("ContainerPolicy", "error").inc()
    RECONCILE_ERRORS.labels("ContainerPolicy", updates[0].reason).inc()
    old = next((c for c in previous if c.type == ConditionType.READY), None)
    if old is None or old.reason != updates[0].reason:
        kopf.warn(body, reason=updates[0].reason, message=updates[0].message)


def _observe_and_plan(
    policy: ContainerPolicySpec,
    identity: tuple[str, str, str],
    pool_name: str,
    status: Mapping[str, Any],
    runtime: OperatorRuntime,
    pools: Mapping[Any, Any],
    policies_by_pool: Mapping[Any, Any],
    in_flight: Mapping[Any, Any],
    now: Any,
) -> PolicyCycle:
    """One snapshot, the CTs proven ours, the intent and the plan, with the creations gated."""
    namespace, _, uid = identity
    pool = _pool_spec(pools, namespace, pool_name)
    connection = runtime.connection(namespace, pool_name, pool)
    client = connection.client
    snapshot = client.snapshot(time.time())
    owned, records, key, counted = _discover(policy, uid, client, snapshot, runtime, status)
    overlaps = _overlaps(policy, identity, pool_name, pool, pools, policies_by_pool)
    clone = _clone_source(policy, snapshot, client)
    backoffs = _creation_backoffs(status, now)
    journal = journal_of(status)
    pool_busy = frozenset[int]().union(*in_flight.get((namespace, pool_name), []))
    intent = _cycle_intent(policy, pool, uid, status, snapshot, overlaps, pool_busy, clone, backoffs, journal)
    cycle = PolicyCycle(
        policy=policy,
        pool=pool,
        pool_name=pool_name,
        connection=connection,
        snapshot=snapshot,
        records=records,
        key=key,
        counted=counted,
        owned=owned,
        intent=intent,
        plan=_plan_with_drift_sweep(intent, snapshot, client, owned, runtime, uid),
        pending=_unknown_creations(snapshot, policy, owned, intent.disrupted_vmids),
        overlaps=overlaps,
        backoffs=backoffs,
        clone=clone,
        journal=journal,
    )
    _gate_creations(cycle, uid)
    return cycle


def _plan_with_drift_sweep(
    intent: PolicyIntent,
    snapshot: Any,
    client: PveClient,
    owned: list[OwnedContainer],
    runtime: OperatorRuntime,
    uid: str,
) -> ReconcilePlan:
    """The plan, with the configs of the next few CTs read for drift (the sweep goes round over the cycles)."""
    swept, runtime.drift_cursor[uid] = sweep_configs(
        client, owned, runtime.drift_cursor.get(uid, 0), DRIFT_SWEEP_PER_CYCLE
    )
    return plan_reconcile(intent, snapshot, swept)


def _unknown_creations(
    snapshot: Any, policy: ContainerPolicySpec, owned: list[OwnedContainer], journaled: frozenset[int]
) -> list[int]:
    """CTs in the range being created that this policy does not follow itself (a crash before its journal was
    written): they hold creation back until their marks are readable. Its own creations are not in the way."""
    return [v for v in creations_in_progress(snapshot, policy.vmid_range.as_range(), owned) if v not in journaled]


def _discover(
    policy: ContainerPolicySpec, uid: str, client: PveClient, snapshot: Any, runtime: OperatorRuntime, status: Any
) -> tuple[list[OwnedContainer], dict[int, Any], Any, frozenset[int]]:
    """The CTs proven ours in this snapshot, with the record cache, the ownership key and the VMIDs status
    counts (an unsigned record of a counted CT is signed once)."""
    records = runtime.records_for(uid)
    key = runtime.ownership_key()
    counted = counted_vmids(status)
    owned = discover_owned(client, snapshot, uid, policy.vmid_range.as_range(), records, key=key, counted=counted)
    return owned + being_created(journal_of(status), owned, snapshot), records, key, counted


def being_created(
    journal: Sequence[PolicyTask], owned: Sequence[OwnedContainer], snapshot: Any
) -> list[OwnedContainer]:
    """The CTs this policy's own creations are making that PVE does not show with their marks yet (the first
    moments of a create: only ``lock: create``): counted with the index they are created for, so the planner
    neither creates a second CT for that index under another VMID nor acts on them (they are locked)."""
    proven = {o.vmid for o in owned}
    return [
        OwnedContainer(
            vmid=task.vmid,
            index=task.index or 0,
            created_at=rfc3339(task.started_at),
            observation=snapshot.containers[task.vmid],
            volumes_from=task.source_vmid,
        )
        for task in journal
        if task.action is ActionKind.CREATE and task.vmid not in proven and task.vmid in snapshot.containers
    ]


def _cycle_intent(
    policy: ContainerPolicySpec,
    pool: ProxmoxServerPoolSpec,
    uid: str,
    status: Mapping[str, Any],
    snapshot: Any,
    overlaps: list[VmidRangeOverlap],
    busy: frozenset[int],
    clone: CloneFrom | None,
    backoffs: Mapping[int, Backoff],
    journal: Sequence[PolicyTask],
) -> PolicyIntent:
    """The planner's view of the policy this cycle: the spec with what status, the snapshot and the other
    policies add (fill mode's count so far, shared VMIDs, CTs the pool's balancing is busy with, online
    nodes, the clone source, a rollout paused by failing creations, tags to retire) and the policy's own tasks
    in flight (those CTs are busy and not available; those being destroyed are planned as gone)."""
    journaled = frozenset(v for t in journal for v in (t.vmid, t.source_vmid) if v)  # busy with our own tasks
    intent = intent_from(
        policy,
        pool,
        uid,
        int(status.get("desiredReplicas") or 0),
        reserved_vmids=shared_vmids(overlaps),
        busy_vmids=busy | journaled,
        online_nodes=frozenset(n.name for n in snapshot.nodes.values() if n.online),
        clone=clone,
        rollout_paused=bool(backoffs),
        retired_tags=retired_tags(policy, status),
    )
    leaving = frozenset(t.vmid for t in journal if t.action is ActionKind.DELETE)
    return replace(intent, leaving_vmids=leaving, disrupted_vmids=journaled)


def _creation_backoffs(status: Mapping[str, Any], now: datetime) -> dict[int, Backoff]:
    """The creations that keep failing (status.recentActions) and how long each waits before its next try."""
    return creation_backoffs(
        failed_creations(status.get("recentActions")),
        now.timestamp(),
        base_seconds=RECONCILE_INTERVAL_SECONDS,
        cap_seconds=CREATION_BACKOFF_CAP_SECONDS,
    )


def _overlaps(
    policy: ContainerPolicySpec,
    identity: tuple[str, str, str],
    pool_name: str,
    pool: ProxmoxServerPoolSpec,
    pools: Mapping[Any, Any],
    policies_by_pool: Mapping[Any, Any],
) -> list[VmidRangeOverlap]:
    """The parts of the policy's VMID range other policies on the same Proxmox VE cluster also claim."""
    namespace, name, uid = identity
    own_range = PolicyVmidRange(namespace, name, uid, policy.vmid_range.start, policy.vmid_range.end)
    return find_overlaps(own_range, ranges_on_same_cluster(namespace, pool_name, pool, policies_by_pool, pools))


def _clone_source(policy: ContainerPolicySpec, snapshot: Any, client: PveClient) -> CloneFrom | None:
    """template.clone resolved in this cycle's snapshot (and the template's config: are its volumes on shared
    storage?); TemplateNotFound (nothing is created) when the template CT is missing, not a template, or its
    name is ambiguous."""
    source = policy.template.clone
    if source is None:
        return None
    try:
        vmid, node = find_clone_source(snapshot, vmid=source.from_vmid, name=source.from_name)
    except ValueError as exc:
        raise ConfigurationError(ConditionReason.TEMPLATE_NOT_FOUND, str(exc)) from None
    shared = clone_volumes_shared(client.container_config(node, vmid), snapshot.shared_storages, source.storage)
    return CloneFrom(vmid, node, source.full, source.storage, shared=shared)


def _gate_creations(cycle: PolicyCycle, uid: str) -> None:
    """Drop the plan's creations while CTs are still being created, those in backoff, and all of them when
    Proxmox VE would refuse the tags or the features (said in the conditions instead)."""

    def without_creations(keep: Callable[[CreateContainer], bool] = lambda a: False) -> None:
        actions = [a for a in cycle.plan.actions if not isinstance(a, CreateContainer) or keep(a)]
        cycle.plan = replace(cycle.plan, actions=actions)

    def creating() -> bool:
        return any(isinstance(a, CreateContainer) for a in cycle.plan.actions)

    if cycle.pending:
        without_creations()
    if cycle.backoffs:
        without_creations(lambda a: a.vmid not in cycle.backoffs)
    access = cycle.connection.tag_access
    wanted = ownership_tags(uid) | set(cycle.policy.template.tags)
    refused_tags = access.refused(wanted, cycle.snapshot) if access is not None else frozenset()
    if refused_tags and creating():
        cycle.refused_tags = refused_tags
        without_creations()
    template = cycle.policy.template
    authid = cycle.connection.authid
    features_refused = (
        features_refusal(template.features, unprivileged=template.unprivileged, authid=authid) if authid else None
    )
    if features_refused and creating():
        cycle.features_refused = features_refused
        without_creations()


def _act(
    cycle: PolicyCycle,
    identity: tuple[str, str, str],
    status: Mapping[str, Any],
    runtime: OperatorRuntime,
    reporter: ProgressReporter,
) -> None:
    """Run the plan (create-only secrets read only when creating), look again when something ran, and keep
    spec.ha's registration in PVE."""
    namespace, name, uid = identity
    policy, client = cycle.policy, cycle.connection.client
    executor = _policy_executor(
        cycle.connection, PolicyIdentity(namespace, name, uid, policy.vmid_range.as_range(), cycle.key)
    )
    blueprint = _blueprint_for_cycle(cycle, namespace, runtime)
    done = executor.run_cycle(
        cycle.journal, cycle.plan.actions, blueprint, slots=cycle.connection.task_slots(uid), on_outcome=reporter
    )
    cycle.outcomes, cycle.in_flight = done.outcomes, done.in_flight
    cycle.connection.policy_tasks[uid] = len(done.in_flight)
    for outcome in cycle.outcomes:
        if isinstance(outcome.error, NotOurs) or isinstance(outcome.action, RecordTemplate):
            cycle.records.pop(outcome.action.vmid, None)  # proof lost, or the record was rewritten: read again
    if cycle.outcomes or cycle.in_flight != cycle.journal:
        cycle.snapshot = client.snapshot(time.time())
        cycle.owned = discover_owned(
            client,
            cycle.snapshot,
            uid,
            policy.vmid_range.as_range(),
            cycle.records,
            key=cycle.key,
            counted=cycle.counted,
        )
    # A CT still being created is registered with the HA stack once it exists: the HA manager would start it.
    creating = {t.vmid for t in done.in_flight if t.action is ActionKind.CREATE}
    ready = [o for o in cycle.owned if o.vmid not in creating]
    cycle.ha_status, cycle.ha_problem = register_ha(client, policy, cycle.pool, cycle.intent, identity, ready, status)


def _policy_executor(connection: Any, identity: PolicyIdentity) -> PolicyExecutor:
    """The executor of one policy's actions on the pool's connection (its rate limiter, the task limits)."""
    return PolicyExecutor(
        connection.client,
        identity,
        limiter=connection.limiter,
        max_workers=MAX_PARALLEL_TASKS,
        task_timeout_seconds=TASK_TIMEOUT_SECONDS,
        now_rfc3339=lambda: rfc3339(now_utc()),
    )


def _blueprint_for_cycle(cycle: PolicyCycle, namespace: str, runtime: OperatorRuntime) -> ContainerBlueprint:
    """The blueprint of this cycle's creations: the root password and the keys of sshPublicKeysFrom are read
    from their Secrets/ConfigMaps only when the plan creates a CT (a cycle that creates nothing reads none)."""
    policy = cycle.policy
    if not any(isinstance(a, CreateContainer) for a in cycle.plan.actions):
        return blueprint_from(policy, clone=cycle.clone)
    secret_ref = policy.template.root_password_secret_ref
    password = runtime.secret_value(namespace, secret_ref.name, secret_ref.key) if secret_ref is not None else None
    blueprint = blueprint_from(policy, password=password, clone=cycle.clone)
    ssh_keys = ssh_keys_from_sources(runtime, namespace, policy)
    if ssh_keys:
        blueprint = replace(blueprint, ssh_public_keys=tuple(dict.fromkeys(blueprint.ssh_public_keys + ssh_keys)))
    return blueprint


def _report(
    cycle: PolicyCycle,
    identity: tuple[str, str, str],
    status: Mapping[str, Any],
    body: Any,
    patch: kopf.Patch,
    previous: Sequence[Any],
    reporter: ProgressReporter,
    runtime: OperatorRuntime,
    now: Any,
    generation: int | None,
) -> None:
    """Status, events and conditions from what the cycle found and did."""
    namespace, name, uid = identity
    policy, pool, intent = cycle.policy, cycle.pool, cycle.intent
    # Skipped actions were not needed after all; refused ones (proof lost) are told as OwnershipLost.
    outcomes = [o for o in cycle.outcomes if not o.skipped and not isinstance(o.error, NotOurs)]
    _report_ownership(cycle, status, body, patch, uid)
    # Events were posted as each action ended (ProgressReporter).
    statuses = container_statuses(cycle.owned, cycle.snapshot, policy.render_hostname, intent.template_hash)
    for state in ContainerState:
        MANAGED_CONTAINERS.labels(namespace, name, state.value).set(sum(1 for c in statuses if c.state is state))
    _write_counts(cycle, statuses, patch)
    _write_journal(cycle.in_flight if cycle.in_flight is not None else cycle.journal, patch)
    if outcomes:
        patch.status["recentActions"] = reporter.recent
    patch.status["ha"] = cycle.ha_status
    spec_warnings = policy.warnings(pool)
    failure = _cycle_failure(cycle, [o for o in outcomes if not o.succeeded], runtime)
    updates = policy_conditions(_cycle_facts(cycle, statuses, failure, spec_warnings))
    degraded_before = next((c.message for c in previous if c.type == ConditionType.DEGRADED), None)
    if spec_warnings and updates[1].reason is ConditionReason.SPEC_WARNING and degraded_before != updates[1].message:
        kopf.warn(body, reason=ConditionReason.SPEC_WARNING, message=updates[1].message)
    _warn_on_new_degraded_reason(body, previous, updates)
    _write_conditions(patch, previous, updates, now, generation)


def journal_of(status: Mapping[str, Any]) -> list[PolicyTask]:
    """status.tasksInFlight as typed entries; an entry that does not parse (hand-edited) is dropped, said in the
    log: its task is then not followed (what it left is repaired like any drift)."""
    journal = []
    for raw in status.get("tasksInFlight") or ():
        try:
            journal.append(PolicyTask.model_validate(raw))
        except ValidationError as exc:
            log.warning("status.tasksInFlight entry %r is not valid, not followed: %s", raw, exc)
    return journal


def _write_journal(in_flight: Sequence[PolicyTask], patch: kopf.Patch) -> None:
    patch.status["tasksInFlight"] = [t.to_dict() for t in in_flight]


def _write_counts(cycle: PolicyCycle, statuses: Sequence[ContainerStatus], patch: kopf.Patch) -> None:
    """The replica counts, the CT list, the distribution over the nodes, VMID conflicts and fill's stop."""
    plan, intent = cycle.plan, cycle.intent
    patch.status["replicas"] = len(statuses)
    patch.status["desiredReplicas"] = plan.desired_replicas
    patch.status["readyReplicas"] = sum(1 for c in statuses if c.state is ContainerState.RUNNING)
    patch.status["offloadedReplicas"] = sum(1 for c in statuses if c.state is ContainerState.OFFLOADED)
    patch.status["migratingReplicas"] = sum(1 for c in statuses if c.state is ContainerState.MIGRATING)
    patch.status["updatedReplicas"] = sum(1 for o in cycle.owned if o.template_hash == intent.template_hash)
    patch.status["templateHash"] = intent.template_hash
    patch.status["containers"] = [c.to_dict() for c in statuses]
    patch.status["distribution"] = [d.to_dict() for d in distribution(statuses, cycle.pool.node_names)]
    patch.status["vmidConflicts"] = [c.to_dict() for c in vmid_conflict_statuses(plan, cycle.overlaps)]
    patch.status["templateTags"] = sorted(template_tags(cycle.policy))
    patch.status["retiredTags"] = sorted(
        t
        for t in intent.retired_tags
        if any(o.observation is not None and t in o.observation.tags for o in cycle.owned)
    )
    if cycle.policy.fill is not None:
        stopped = _GROWTH_REASON[plan.growth_stop].value if plan.growth_stop else None
        if "vmidRange" in plan.placement_refusals:
            stopped = FillStoppedReason.VMID_RANGE_EXHAUSTED.value
        patch.status["fillStoppedReason"] = stopped


def _cycle_facts(
    cycle: PolicyCycle,
    statuses: Sequence[ContainerStatus],
    failure: tuple[ConditionReason, str] | None,
    spec_warnings: Sequence[str],
) -> PolicyCycleFacts:
    """What the conditions depend on (:func:`policy_conditions`), from the cycle."""
    plan = cycle.plan
    return PolicyCycleFacts(
        paused=cycle.policy.paused,
        statuses=tuple(statuses),
        desired=plan.desired_replicas,
        pending=tuple(cycle.pending),
        placement_refusals=dict(plan.placement_refusals),
        rule_refused=plan.rule_refused,
        outdated=len(plan.outdated),
        rolling=cycle.intent.rollout_max_unavailable is not None,
        handovers=plan.handovers,
        unplaced=plan.unplaced,
        failure=failure,
        overlaps=describe_overlaps(cycle.overlaps) if cycle.overlaps else "",
        pool_name=cycle.pool_name,
        pool_nodes=tuple(cycle.pool.node_names),
        spec_warnings=spec_warnings,
    )


def _report_ownership(cycle: PolicyCycle, status: Mapping[str, Any], body: Any, patch: kopf.Patch, uid: str) -> None:
    """status.ownershipLost and status.foreignInRange, each CT newly listed told once."""
    lost = ownership_lost(status, cycle.owned, cycle.snapshot, uid)
    _warn_once_per_ct(
        body,
        "OwnershipLost",
        status.get("ownershipLost"),
        {
            item.vmid: f"CT {item.vmid} on {item.node} lost its ownership mark ({item.missing} is gone): "
            "the operator no longer acts on it or counts it"
            for item in lost
        },
    )
    patch.status["ownershipLost"] = [item.to_dict() for item in lost]
    foreign = foreign_in_range(cycle.records)
    _warn_once_per_ct(
        body,
        "ForeignInRange",
        status.get("foreignInRange"),
        {
            claim.vmid: f"CT {claim.vmid} on {claim.node or 'an unknown node'} carries this policy's tags and "
            f"record but is not the operator's ({claim.why}): left untouched and not counted"
            for claim in foreign
        },
    )
    patch.status["foreignInRange"] = [item.to_dict() for item in foreign]


def _cycle_failure(
    cycle: PolicyCycle, failures: list[Outcome], runtime: OperatorRuntime
) -> tuple[ConditionReason, str] | None:
    """What the Degraded/Ready conditions say failed this cycle (or keeps failing), or None: features or tags
    PVE would refuse, failed actions, creations in backoff, spec.ha's registration."""
    access = cycle.connection.tag_access
    if cycle.features_refused:
        return ConditionReason.FEATURES_NOT_ALLOWED, f"no CT is created: {cycle.features_refused}"[:1024]
    if cycle.refused_tags and access is not None and access.rules is not None:
        return ConditionReason.TAGS_NOT_ALLOWED, (
            f"no CT is created: Proxmox VE would refuse tag(s) {', '.join(sorted(cycle.refused_tags))}: "
            f"{access.rules.explain(cycle.refused_tags)}"
        )[:1024]
    if failures:
        return _failure_condition(failures)
    if cycle.backoffs:
        # Nothing was tried this cycle, but the creations still fail: keep saying so.
        waiting = min(cycle.backoffs.values(), key=lambda b: b.retry_in_seconds)
        if cycle.plan.outdated and cycle.intent.rollout_max_unavailable is not None:
            return ConditionReason.ROLLOUT_STUCK, (
                f"rolling update stopped: CT {waiting.vmid} could not be created with the new template "
                f"({waiting.failures} attempt(s)): {waiting.last_message}; no more CTs are replaced until it "
                "is (fix the template, or set it back: the outdated CTs are then current again)"
            )[:1024]
        return _reason_of_recorded_failure(waiting.last_message), (
            f"creating CT {waiting.vmid} failed {waiting.failures} time(s) in a row; next attempt in "
            f"{waiting.retry_in_seconds:.0f} s ({len(cycle.backoffs)} creation(s) waiting): {waiting.last_message}"
        )[:1024]
    if cycle.ha_problem is not None:
        reason, message = failure(
            cycle.ha_problem, where=f"Proxmox VE of pool {cycle.pool_name}", redact=runtime.redact
        )
        return reason, f"registering the CTs with Proxmox VE's HA stack (spec.ha) failed: {message}"[:1024]
    return None


def _warn_once_per_ct(body: Any, reason: str, listed_before: Any, messages: Mapping[int, str]) -> None:
    """A Warning per CT newly in a status list (``listed_before``: that list as the last cycle wrote it)."""
    told = {int(c["vmid"]) for c in listed_before or () if "vmid" in c}
    for vmid, message in messages.items():
        if vmid not in told:
            kopf.warn(body, reason=reason, message=message)


#: Degraded reasons the failed actions' own events already tell.
_TOLD_BY_ACTION_EVENTS = frozenset({ConditionReason.ACTIONS_FAILED, ConditionReason.TEMPLATE_NOT_FOUND})


def register_ha(
    client: PveClient,
    policy: ContainerPolicySpec,
    pool: ProxmoxServerPoolSpec,
    intent: PolicyIntent,
    identity: tuple[str, str, str],
    owned: Sequence[OwnedContainer],
    status: Mapping[str, Any],
) -> tuple[dict[str, Any] | None, PveError | None]:
    """Keep the policy's HA resources and rules (spec.ha) in PVE: ``(status.ha, the PVE error or None)``.
    Without spec.ha and with nothing registered before (status.ha absent), nothing is read."""
    namespace, name, _ = identity
    if (policy.ha is None or not policy.ha.enabled) and not status.get("ha"):
        return None, None
    required = policy.placement.node_affinity.required if policy.placement.node_affinity else None
    intent_ha = ha_intent(
        identity, policy.ha, policy.effective_node_weights(pool), intent.topology, strict=required is not None
    )
    # A replacement waiting for kept volumes is registered once its handover started it: the HA manager
    # would start it before it has them.
    waiting = handover_pairs([o for o in owned if o.observation is not None], intent)
    vmids = {o.index: o.vmid for o in owned if o.observation is not None and o.verified and o.vmid not in waiting}
    try:
        plan = read_and_plan(client, intent_ha, vmids)
        done = apply_ha(client, plan)
    except PveError as exc:
        return dict(status.get("ha") or {}) or None, exc
    for line in done:
        log.info("ContainerPolicy %s/%s: %s", namespace, name, line)
    if not plan.registered and not plan.rules:
        return None, None
    message = "; ".join([*done[-3:], *plan.notes]) or "in place"
    if plan.foreign_resources:
        message += f"; {', '.join(plan.foreign_resources)} registered by someone else: left as they are"
    return PolicyHaStatus(resources=len(plan.registered), rules=plan.rules, message=message[:1024]).to_dict(), None


def _failure_condition(failures: list[Outcome]) -> tuple[ConditionReason, str]:
    """Reason and message of the conditions when actions failed: ``TemplateNotFound`` (nothing can be
    created until the template is there) before the generic ``ActionsFailed``."""
    missing = next((o for o in failures if isinstance(o.error, TemplateNotFound)), None)
    if missing is not None:
        return ConditionReason.TEMPLATE_NOT_FOUND, missing.message
    stuck = next((o for o in failures if isinstance(o.error, PveHaNotConverging)), None)
    if stuck is not None:
        return ConditionReason.HA_NOT_CONVERGING, stuck.message
    refused = next((o for o in failures if refused_tag_in(o.message)), None)
    if refused is not None:
        return ConditionReason.TAGS_NOT_ALLOWED, _tags_refused_message(refused.message)
    return ConditionReason.ACTIONS_FAILED, failures[0].message if failures else ""


def _tags_refused_message(message: str) -> str:
    return (
        f"{message}: Proxmox VE's datacenter.cfg restricts tags (user-tag-access or registered-tags) and the "
        "operator's user lacks Sys.Modify on /; allow the operator's tags there or grant Sys.Modify on / "
        "(the ProxmoxServerPool names the setting when its user may read /cluster/options, Sys.Audit on /)"
    )[:1024]


def _warn_on_new_degraded_reason(body: Any, previous: Any, updates: Updates) -> None:
    """One warning event when Degraded turns to a new reason (not one per cycle); ActionsFailed is
    already told by the failed actions' own events."""
    degraded = next((u for u in updates if u.type is ConditionType.DEGRADED), None)
    if degraded is None or degraded.status is not ConditionStatus.TRUE or degraded.reason in _TOLD_BY_ACTION_EVENTS:
        return
    old = next((c for c in previous if c.type == ConditionType.DEGRADED), None)
    if old is None or old.status is not ConditionStatus.TRUE or old.reason != degraded.reason:
        kopf.warn(body, reason=degraded.reason, message=degraded.message)


def _write_conditions(patch: kopf.Patch, previous: Any, updates: Updates, now: Any, generation: int | None) -> None:
    conditions = with_conditions(previous, updates, now=now, generation=generation)
    patch.status["conditions"] = conditions_payload(conditions)
    patch.status["observedGeneration"] = generation


_EVENT_REASONS = {
    "Create": "Created",
    "Start": "Started",
    "Delete": "Deleted",
    "Repair": "Repaired",
    "HandOver": "HandOverCompleted",
}


#: Longest wait before a creation that keeps failing is tried again (the wait doubles from the
#: reconcile interval).
CREATION_BACKOFF_CAP_SECONDS = 300.0


def _reason_of_recorded_failure(message: str) -> ConditionReason:
    """The condition reason of a failure known only from recentActions' message (a backed-off cycle):
    the texts are TemplateNotFound's own (``PolicyExecutor._check_template``)."""
    if message.startswith("Create CT") and (" is not on storage " in message or "cannot be found on node" in message):
        return ConditionReason.TEMPLATE_NOT_FOUND
    if refused_tag_in(message):
        return ConditionReason.TAGS_NOT_ALLOWED
    return ConditionReason.ACTIONS_FAILED


def failed_creations(recent: Any) -> list[FailedAttempt]:
    """The policy's Create attempts from ``status.recentActions``, oldest first, with the volume handovers
    (by the replacement's VMID): a handover that keeps failing backs off like a creation, and pauses the
    rollout meanwhile, instead of stopping its source CT at every cycle."""
    attempts = []
    for entry in recent or ():
        if entry.get("action") not in ("Create", "HandOver") or entry.get("vmid") is None:
            continue
        at = parse_epoch(entry.get("time"))
        if at is None:
            continue
        succeeded = entry.get("result") == "Succeeded"
        attempts.append(FailedAttempt(int(entry["vmid"]), at, succeeded, str(entry.get("message") or "")))
    return attempts


#: Seconds between two progress writes of recentActions while a cycle's actions run.
PROGRESS_WRITE_INTERVAL_SECONDS = 5.0


class ProgressReporter:
    """Tells each action's outcome as it ends: its event at once, and ``status.recentActions`` at most
    every few seconds, so a long scale-up shows progress and a killed cycle has already told what it
    did. Called from the executor's worker threads."""

    def __init__(self, body: Any, namespace: str, name: str, recent: Any) -> None:
        self._body, self._namespace, self._name = body, namespace, name
        self._recent = [dict(item) for item in recent or ()]
        self._lock = threading.Lock()
        self._last_write = time.monotonic()

    @property
    def recent(self) -> list[dict[str, Any]]:
        """recentActions with every outcome told so far."""
        with self._lock:
            return list(self._recent)

    def __call__(self, outcome: Outcome) -> None:
        if outcome.skipped or isinstance(outcome.error, NotOurs):
            return  # not an action after all; told (or not) by the cycle
        _announce(self._body, outcome)
        with self._lock:
            self._recent = append_recent(self._recent, [recorded(outcome, policy=self._name, now=now_utc())])
            due = time.monotonic() - self._last_write >= PROGRESS_WRITE_INTERVAL_SECONDS
            if due:
                self._last_write = time.monotonic()
                recent = list(self._recent)
        if due:
            try:
                body = {"status": {"recentActions": recent}}
                kube_client.CustomObjectsApi().patch_namespaced_custom_object_status(
                    GROUP, VERSION, self._namespace, "containerpolicies", self._name, body
                )
            except Exception as exc:  # progress is a courtesy; the cycle's own status write follows
                log.debug("progress write of %s/%s failed: %s", self._namespace, self._name, exc)


def _announce(body: Any, outcome: Outcome) -> None:
    kind = outcome.action.kind
    ACTIONS.labels(kind, "Succeeded" if outcome.succeeded else "Failed").inc()
    if outcome.succeeded:
        kopf.info(body, reason=_EVENT_REASONS.get(kind, kind), message=outcome.message)
    else:
        kopf.warn(body, reason=f"{kind}Failed", message=outcome.message)


# -- Kopf handlers ------------------------------------------------------------------------------


def _due(runtime: OperatorRuntime, uid: str, status: Mapping[str, Any]) -> bool:
    """Whether a timer tick reconciles: while tasks are in flight (each tick follows them, so a task that
    ended is acted on within a tick), else once RECONCILE_INTERVAL_SECONDS passed since the last cycle."""
    if status.get("tasksInFlight"):
        return True
    last = runtime.last_policy_cycle.get(uid)
    return last is None or time.monotonic() - last >= RECONCILE_INTERVAL_SECONDS


#: Status fields a cycle reads back from the one before: what this process wrote last is used, not the copy in
#: Kopf's arguments, which a cycle that ran just before (the timer's, while a spec change waited for the lock)
#: may not have reached yet. A stale journal would take an ended task's next step twice.
_CARRIED_STATUS = ("tasksInFlight", "recentActions")


def _run_reconcile(blocking: bool, **kwargs: Any) -> None:
    memo = kwargs["memo"]
    meta = kwargs["meta"]
    uid = str(meta.get("uid"))
    runtime: OperatorRuntime = memo.runtime
    carried = runtime.policy_status.get(uid, {})
    status = {**dict(kwargs["status"]), **carried}
    if meta.get("deletionTimestamp"):
        return  # being deleted: the finalizer destroys (or releases) the CTs; nothing is planned any more
    if not blocking and not _due(runtime, uid, status):
        return
    lock = runtime.lock_for(uid)
    if not lock.acquire(blocking=blocking):
        return  # a reconcile of this policy is running; the timer comes back
    status = {**dict(kwargs["status"]), **runtime.policy_status.get(uid, {})}  # as the last cycle left it
    runtime.last_policy_cycle[uid] = time.monotonic()
    try:
        reconcile_policy(
            name=kwargs["name"],
            namespace=namespaced(kwargs["namespace"]),
            uid=uid,
            generation=meta.get("generation"),
            spec=dict(kwargs["spec"]),
            status=status,
            body=kwargs["body"],
            patch=kwargs["patch"],
            runtime=memo.runtime,
            pools=kwargs["pool_specs"],
            policies_by_pool=kwargs["policies_by_pool"],
            in_flight=kwargs["pool_operations_in_flight"],
        )
    finally:
        _carry_status(runtime, uid, kwargs["patch"])
        lock.release()


def _carry_status(runtime: OperatorRuntime, uid: str, patch: kopf.Patch) -> None:
    """Keep what this call wrote of :data:`_CARRIED_STATUS` for the next call (Kopf's copy may lag behind)."""
    written = patch.status
    runtime.policy_status[uid] = {
        **runtime.policy_status.get(uid, {}),
        **{key: written[key] for key in _CARRIED_STATUS if key in written},
    }


@kopf.on.resume(*POLICIES)
@kopf.on.create(*POLICIES)
@kopf.on.update(*POLICIES, field="spec")
@contained(RECONCILE_INTERVAL_SECONDS)
def policy_changed(**kwargs: Any) -> None:
    log.info("ContainerPolicy %s/%s: %s, reconciling", kwargs["namespace"], kwargs["name"], kwargs.get("reason"))
    _run_reconcile(True, **kwargs)


@kopf.timer(*POLICIES, interval=POLICY_TICK_SECONDS, initial_delay=POLICY_TICK_SECONDS)
@contained(RECONCILE_INTERVAL_SECONDS)
def policy_timer(**kwargs: Any) -> None:
    _run_reconcile(False, **kwargs)


#: How soon a policy's deletion looks at its stop and destroy tasks again (each look that finds CTs left is a
#: "failed temporarily" line in the log and an event: not every policy tick).
DELETION_TICK_SECONDS = max(2.0, POLICY_TICK_SECONDS)


@kopf.on.delete(*POLICIES)
@contained(30)
def policy_deleted(
    name: str,
    namespace: str | None,
    spec: kopf.Spec,
    meta: kopf.Meta,
    body: kopf.Body,
    patch: kopf.Patch,
    memo: Any,
    **kwargs: Any,
) -> None:
    """Delete: stop and destroy every CT of ours. Retain: remove our marks (and spec.ha's registration)
    and leave them.

    Like a reconcile, each call starts tasks (journaled in ``status.tasksInFlight``) and comes back: the
    finalizer is called again every tick until no CT of ours is left. It stays while PVE is unreachable
    (and says so), because CTs of ours may still exist.
    """
    runtime: OperatorRuntime = memo.runtime
    namespace = namespaced(namespace)
    uid = str(meta.get("uid"))
    raw = dict(spec)
    status = {**dict(kwargs.get("status") or {}), **runtime.policy_status.get(uid, {})}
    with runtime.lock_for(uid):
        try:
            removal = _remove_owned(runtime, kwargs["pool_specs"], (namespace, name, uid), raw, status, body)
        except (PolicyBlocked, ConfigurationError, PveError) as exc:
            _deletion_blocked(exc, str(raw.get("poolRef", {}).get("name", "")), runtime, status, meta, body, patch)
        _write_journal(removal.in_flight, patch)
        _carry_status(runtime, uid, patch)
    failed = [o for o in removal.outcomes if not o.succeeded]
    if failed:
        raise kopf.TemporaryError(f"deletion waits: {failed[0].message}", delay=30)
    if removal.left:
        # Kopf's way for a finalizer to come back (it logs this as a handler failing temporarily): the tasks
        # are looked at again, not waited for.
        message = f"deletion in progress: {len(removal.left)} CT(s) of ours being stopped and destroyed"
        raise kopf.TemporaryError(message, delay=DELETION_TICK_SECONDS)
    for remembered in (runtime.records, runtime.policy_status, runtime.last_policy_cycle):
        remembered.pop(uid, None)


def _deletion_blocked(
    exc: Exception,
    pool_name: str,
    runtime: OperatorRuntime,
    status: Mapping[str, Any],
    meta: Any,
    body: Any,
    patch: kopf.Patch,
) -> NoReturn:
    """Deletion cannot go on now (PVE unreachable, no ownership key, a creation nobody follows): an event, and
    Degraded where Argo CD and `kubectl get` look (the CTs may still exist); tried again in 30 s."""
    message = f"deletion waits: {_error_updates(exc, pool_name, runtime)[0].message}"
    kopf.warn(body, reason="DeletionBlocked", message=message)
    blocked: Updates = [
        ConditionUpdate(ConditionType.DEGRADED, ConditionStatus.TRUE, ConditionReason.DELETION_BLOCKED, message)
    ]
    _write_conditions(patch, parse_conditions(status.get("conditions")), blocked, now_utc(), meta.get("generation"))
    raise kopf.TemporaryError(message, delay=30) from None


def _release_owned(
    executor: PolicyExecutor,
    client: PveClient,
    identity: tuple[str, str, str],
    owned: Sequence[OwnedContainer],
    status: Mapping[str, Any],
    body: Any,
) -> None:
    """deletionPolicy Retain: spec.ha's registration and the ownership marks removed; the CTs stay."""
    namespace, name, uid = identity
    if status.get("ha"):
        apply_ha(client, read_and_plan(client, HaIntent(namespace, name, uid, None, ()), {}))
    for item in owned:
        assert item.observation is not None
        kopf.info(body, reason="Released", message=executor.release(item.vmid, item.observation.node))


def _remove_owned(
    runtime: OperatorRuntime,
    pool_specs: Mapping[Any, Any],
    identity: tuple[str, str, str],
    raw: dict[str, Any],
    status: Mapping[str, Any],
    body: Any,
) -> CycleResult:
    """The policy's deletion in PVE: destroy its CTs (deletionPolicy Delete; purge also removes their HA
    resources) or release them (Retain: ownership marks and spec.ha's registration removed). Destruction is
    stop, then destroy, journaled: this starts and advances tasks, it does not wait for them."""
    namespace, name, uid = identity
    pool_name = str(raw.get("poolRef", {}).get("name", ""))
    vmid_range = range(int(raw["vmidRange"]["start"]), int(raw["vmidRange"]["end"]) + 1)
    pool = _pool_spec(pool_specs, namespace, pool_name)
    connection = runtime.connection(namespace, pool_name, pool)
    client = connection.client
    snapshot = client.snapshot(time.time())
    key = runtime.ownership_key()
    owned = discover_owned(client, snapshot, uid, vmid_range, {}, key=key, counted=counted_vmids(status))
    journal, retain = journal_of(status), raw.get("deletionPolicy") == DeletionPolicy.RETAIN.value
    # A creation this policy follows itself is finished and then destroyed; Retain waits for it to end.
    followed = set() if retain else {t.vmid for t in journal}
    if pending := [v for v in creations_in_progress(snapshot, vmid_range, owned) if v not in followed]:
        raise PolicyBlocked(
            ConditionReason.WAITING_FOR_CREATION, f"CT(s) {', '.join(map(str, pending))} are still being created"
        )
    executor = _policy_executor(connection, PolicyIdentity(namespace, name, uid, vmid_range, key))
    if retain:
        _release_owned(executor, client, identity, owned, status, body)
        return CycleResult()
    return _destroy_owned(executor, connection, uid, journal, owned, raw, body)


def _destroy_owned(
    executor: PolicyExecutor,
    connection: Any,
    uid: str,
    journal: list[PolicyTask],
    owned: Sequence[OwnedContainer],
    raw: dict[str, Any],
    body: Any,
) -> CycleResult:
    """deletionPolicy Delete: advance the journal, and start stop→destroy of the CTs in the free task slots."""
    actions: list[Action] = [
        DestroyContainer(vmid=o.vmid, node=o.observation.node, running=o.observation.running, reason="policy deleted")
        for o in owned
        if o.observation is not None
    ]
    done = executor.run_cycle(
        journal,
        actions,
        blueprint_from(ContainerPolicySpec.model_validate(raw)),
        slots=connection.task_slots(uid),
        on_outcome=lambda outcome: _announce(body, outcome),
    )
    connection.policy_tasks[uid] = len(done.in_flight)
    return done

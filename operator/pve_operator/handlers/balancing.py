"""The pool's balancing cycle: sample → plan (``planning.balancing``) → execute or recommend → status.

Called by the ProxmoxServerPool timer after each successful sample, with that sample's snapshot
(one list call serves monitoring and balancing). Thin glue: the decisions are the planner's, the
actions the balance executor's; this module collects inputs from Kubernetes and PVE and writes the
story back (status, events, metrics).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import client as kube_client

from pve_operator.api.v1alpha1 import (
    API_VERSION,
    GROUP,
    MAX_RECENT_ACTIONS,
    MAX_RECOMMENDATIONS,
    VERSION,
    ActionKind,
    ActionResult,
    AutomationMode,
    HaStatus,
    InFlightOperation,
    OffloadedContainer,
    ProxmoxServerPoolSpec,
    Recommendation,
    RecordedAction,
)
from pve_operator.execution.balancer import BalanceExecutor, BalanceOutcome, Journal, journal_entry
from pve_operator.execution.executor import PolicyIdentity
from pve_operator.execution.pool_input import (
    CollectedInput,
    collect_input,
    policy_summary,
    project_in_flight,
    read_in_flight,
    read_offloaded,
)
from pve_operator.metrics import ACTIONS, REFUSALS
from pve_operator.planning.actions import BalanceAction, MigrateContainer, OffloadContainer, RestoreContainer, describe
from pve_operator.planning.balancing import (
    BalancePlan,
    BalancingInput,
    PressureTrigger,
    Refusal,
    plan_balance,
)
from pve_operator.planning.balancing.cpu_window import CpuWindow
from pve_operator.planning.balancing.rrd_history import PressureSamples, newest, recent_rows, recent_samples
from pve_operator.planning.model import ClusterSnapshot, pool_measure
from pve_operator.pve.client import PveClient
from pve_operator.pve.errors import PveError
from pve_operator.runtime import MAX_PARALLEL_TASKS, TASK_TIMEOUT_SECONDS, OperatorRuntime

log = logging.getLogger(__name__)

#: Samples kept per node (the planner needs ``sustainedSamples``; a few more help events explain).
HISTORY_LENGTH = 60


@dataclass
class PoolMemory:
    """What the operator remembers between cycles of one pool (lost on restart: acts later, not wrong)."""

    history: dict[str, deque[float]] = field(default_factory=dict)
    #: CPU readings of the nodes and CTs: the planner sees CPU averaged over sustainedSamples samples.
    cpu: CpuWindow = field(default_factory=lambda: CpuWindow(3))
    #: Pressure (PSI) samples per node, with ``thresholds.pressure``: one per RRD row (minute).
    pressure: PressureSamples = field(default_factory=lambda: PressureSamples(HISTORY_LENGTH))
    #: Nodes whose RRD has no pressure column (PVE 8), last reported.
    pressure_unavailable: frozenset[str] = frozenset()
    #: The samples were seeded from the nodes' RRDs (first cycle of this pool object in this process).
    seeded: bool = False
    last_action_at: dict[int, float] = field(default_factory=dict)
    last_refusals: frozenset[tuple[str, int | None, str | None]] = frozenset()
    last_recommendations: frozenset[tuple[str, int, str | None]] = frozenset()


_memories: dict[tuple[str, str], tuple[str, PoolMemory]] = {}
_memories_lock = threading.Lock()


def pool_memory(namespace: str, name: str, uid: str) -> PoolMemory:
    """What the operator remembers of the pool object ``uid``. A pool deleted and re-created under the
    same name is another object: it starts with no samples and no cooldowns (the old object's were
    about another spec, and its recentActions went with it), and the old object's memory is dropped."""
    with _memories_lock:
        held = _memories.get((namespace, name))
        if held is None or held[0] != uid:
            held = (uid, PoolMemory())
            _memories[(namespace, name)] = held
        return held[1]


def forget_pool_memory(namespace: str, name: str) -> None:
    """Drop what the operator remembers of a deleted pool."""
    with _memories_lock:
        _memories.pop((namespace, name), None)


@kopf.index(GROUP, VERSION, "containerpolicies")
def policies_by_pool(
    name: str, namespace: str | None, uid: str, spec: kopf.Spec, annotations: kopf.Annotations, **_: Any
) -> dict[tuple[str | None, str], dict[str, Any]]:
    """The policies of each pool, by (namespace, pool name)."""
    summary = policy_summary(name, uid, dict(spec), dict(annotations))
    return {(namespace, summary["pool"]): summary}


class StatusJournal:
    """Writes the pool's ``status.inFlight`` through the API *before* each action (and clears it after).

    Kopf's own patch is applied only when the handler returns; a journal must be durable while the
    action runs, so this writes directly (merge patch of the whole list, under a lock).
    """

    def __init__(
        self, namespace: str, name: str, entries: Sequence[InFlightOperation], owners: Mapping[int, str]
    ) -> None:
        self._namespace = namespace
        self._name = name
        self._owners = owners
        self._entries: dict[int, InFlightOperation] = {e.vmid: e for e in entries}
        self._lock = threading.Lock()

    @property
    def entries(self) -> list[InFlightOperation]:
        with self._lock:
            return list(self._entries.values())

    def payload(self) -> list[dict[str, Any]]:
        """``status.inFlight`` as the API stores it."""
        return [e.to_dict() for e in self.entries]

    def _write(self) -> None:
        body = {"status": {"inFlight": [e.to_dict() for e in self._entries.values()]}}
        kube_client.CustomObjectsApi().patch_namespaced_custom_object_status(
            GROUP, VERSION, self._namespace, "proxmoxserverpools", self._name, body
        )

    def begin(self, action: BalanceAction) -> None:
        entry = journal_entry(action, self._owners.get(action.vmid), datetime.now(UTC))
        with self._lock:
            self._entries[action.vmid] = entry
            self._write()

    def started(self, vmid: int, upid: str) -> None:
        with self._lock:
            if vmid in self._entries:
                self._entries[vmid] = self._entries[vmid].model_copy(update={"upid": upid})
                self._write()

    def finish(self, vmid: int) -> None:
        with self._lock:
            if self._entries.pop(vmid, None) is not None:
                self._write()

    def drop(self, vmids: Sequence[int]) -> None:
        with self._lock:
            for vmid in vmids:
                self._entries.pop(vmid, None)


def _policy_body(namespace: str, policy: Mapping[str, Any]) -> dict[str, Any]:
    """Enough of a ContainerPolicy for an event's involvedObject."""
    return {
        "apiVersion": API_VERSION,
        "kind": "ContainerPolicy",
        "metadata": {"name": policy["name"], "namespace": namespace, "uid": policy["uid"]},
    }


def _percent(value: float) -> float:
    return round(value, 1)


def _planned_fields(action: BalanceAction, policy: str | None, now: float) -> dict[str, Any]:
    """The fields a recommendation and a recorded action share: what, where, why, with the figures."""
    target = getattr(action, "target", None)
    return {
        "time": datetime.fromtimestamp(now, UTC),
        "action": ActionKind(action.kind),
        "vmid": action.vmid,
        "policy": policy,
        "source_node": action.node,
        "target_node": target,
        "reason": action.reason[:1024],
        "source_percent_before": _percent(action.source_percent_before),
        "source_percent_after": _percent(action.source_percent_after),
        "target_percent_before": _percent(getattr(action, "target_percent_before", 0.0)) if target else None,
        "target_percent_after": _percent(getattr(action, "target_percent_after", 0.0)) if target else None,
    }


def _recorded(
    action: BalanceAction, policy: str | None, result: ActionResult, message: str, now: float
) -> RecordedAction:
    return RecordedAction(**_planned_fields(action, policy, now), result=result, message=message[:1024])


def _recommendation(action: BalanceAction, policy: str | None, now: float) -> Recommendation:
    return Recommendation(**_planned_fields(action, policy, now))


def seed_from_rrd(
    client: PveClient,
    pool: ProxmoxServerPoolSpec,
    snapshot: ClusterSnapshot,
    memory: PoolMemory,
    now: float,
    where: str,
) -> dict[str, list[dict[str, Any]]]:
    """First cycle of a pool in this process (a restart, a new leader): the last minutes of each online
    node's RRD (one request per node) stand in for the samples this process has not taken, so a node
    that has been overloaded all along is acted on now, not ``sustainedSamples`` intervals later. The
    current sample is appended after these, so ``sustainedSamples - 1`` rows are taken (pressure: the
    rows before the newest, which ``sample_pressure`` takes from the rows returned here). Nothing is
    seeded where the RRD cannot give the pool's metric (disk) or is not recent; a failed read only means
    waiting, as before. Returns the rows read, by node, so the cycle does not read them again."""
    memory.seeded = True
    metric = pool_measure(pool.thresholds)
    count = pool.thresholds.sustained_samples - 1
    trigger = PressureTrigger.from_spec(pool.thresholds.pressure)
    fetched: dict[str, list[dict[str, Any]]] = {}
    if count < 1:
        return fetched
    for node in pool.nodes:
        usage = snapshot.nodes.get(node.name)
        if usage is None or not usage.online or memory.history.get(node.name):
            continue
        try:
            rows = client.node_rrd(node.name)
        except PveError as exc:
            log.warning("RRD of %s not read, its samples start now: %s", node.name, exc)
            continue
        fetched[node.name] = rows
        seeded = recent_samples(rows, metric, count, now)
        if seeded:
            memory.history[node.name] = deque(seeded, maxlen=HISTORY_LENGTH)
        if trigger is not None:
            memory.pressure.seed(node.name, recent_rows(rows, trigger.rrd_key, count + 1, now)[:-1])
    log.info("pool %s: samples seeded from the RRD for %s", where, ", ".join(sorted(memory.history)) or "no node")
    return fetched


def sample_pressure(
    client: PveClient,
    pool: ProxmoxServerPoolSpec,
    snapshot: ClusterSnapshot,
    memory: PoolMemory,
    body: Any,
    fetched: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> None:
    """The newest RRD row's pressure of each online pool node (one request per node and cycle; see
    :class:`PressureSamples` for which rows count), when the pool has a pressure trigger. A node whose RRD
    has no pressure column (PVE 8) gets no samples; the pool says so once (an event) rather than failing.
    ``fetched``: RRD rows already read this cycle, by node."""
    trigger = PressureTrigger.from_spec(pool.thresholds.pressure)
    if trigger is None:
        memory.pressure.clear()
        return
    missing = set()
    for node in pool.nodes:
        usage = snapshot.nodes.get(node.name)
        if usage is None or not usage.online:
            memory.pressure.drop(node.name)
        elif not _record_pressure(client, trigger.rrd_key, node.name, memory, (fetched or {}).get(node.name)):
            missing.add(node.name)
    if missing and frozenset(missing) != memory.pressure_unavailable:
        kopf.warn(
            body,
            reason="PressureUnavailable",
            message=(
                f"thresholds.pressure: {', '.join(sorted(missing))} report no {trigger.rrd_key} in their RRD "
                "(pressure stall information needs Proxmox VE 9): the pressure trigger does nothing there"
            ),
        )
    memory.pressure_unavailable = frozenset(missing)


def _record_pressure(
    client: PveClient, key: str, node: str, memory: PoolMemory, rows: Sequence[Mapping[str, Any]] | None
) -> bool:
    """Record the newest pressure sample of ``node`` (from ``rows`` when read this cycle, else one request);
    False when its RRD has no ``key`` column. A failed read drops the node's samples (it waits, as if new)."""
    try:
        found = newest(rows, key) if rows is not None else client.node_pressure(node, key)
    except PveError as exc:
        log.warning("pressure of %s not read: %s", node, exc)
        memory.pressure.drop(node)
        return True
    if found is None:
        memory.pressure.drop(node)
        return False
    row_time, percent = found
    memory.pressure.record(node, row_time, percent / 100)
    return True


def balance_executor(client: PveClient, owners: Mapping[int, PolicyIdentity], journal: Journal) -> BalanceExecutor:
    """The executor of one pool cycle. Its tasks run up to the per-pool task limit at once, so the stops of
    several offloads run in parallel (they ran one after the other when this was maxConcurrentMigrations,
    usually 1); migrations are only started here, and the planner keeps them within that limit."""
    return BalanceExecutor(
        client, owners, journal, max_parallel=MAX_PARALLEL_TASKS, task_timeout_seconds=TASK_TIMEOUT_SECONDS
    )


def balance_pool(
    *,
    name: str,
    namespace: str,
    uid: str,
    pool: ProxmoxServerPoolSpec,
    status: Mapping[str, Any],
    body: Any,
    patch: kopf.Patch,
    runtime: OperatorRuntime,
    policies: Sequence[Mapping[str, Any]],
    client: PveClient,
    snapshot: ClusterSnapshot,
) -> None:
    """One balancing cycle: sample, collect the planner's input, follow what is in flight, plan, report
    what is recommended or refused, start the automatic actions (journaled), record the outcomes."""
    now = time.time()
    memory = pool_memory(namespace, name, uid)
    _sample(client, pool, snapshot, memory, body, now, f"{namespace}/{name}")
    collected = _collect(namespace, pool, status, runtime, policies, client, memory.cpu.averaged(snapshot), memory, now)
    policy_of = collected.policy_of
    journal = StatusJournal(
        namespace, name, read_in_flight(status.get("inFlight")), {v: str(p["name"]) for v, p in policy_of.items()}
    )
    executor = balance_executor(client, collected.owners, journal)
    inp, followed = _follow_in_flight(executor, journal, collected, status, memory, body, now)
    plan, run_plan, to_recommend = _plan(inp, pool)
    patch.status["ha"] = ha_summary(inp)
    _report_recommendations(patch, body, memory, to_recommend, policy_of, pool_measure(pool.thresholds), now)
    records = _report_refusals(body, memory, plan, policy_of, now)
    to_run = list(run_plan.actions)
    started = executor.apply(to_run, run_plan.depends_on) if to_run else []
    outcomes: list[BalanceOutcome] = followed + [o for o in started if not o.deferred]
    offloaded = _record_outcomes(outcomes, records, namespace, body, memory, policy_of, snapshot, status, now)
    _write_cycle_status(patch, status, records, _still_offloaded(offloaded, inp, to_run), journal)


def _collect(
    namespace: str,
    pool: ProxmoxServerPoolSpec,
    status: Mapping[str, Any],
    runtime: OperatorRuntime,
    policies: Sequence[Mapping[str, Any]],
    client: PveClient,
    snapshot: ClusterSnapshot,
    memory: PoolMemory,
    now: float,
) -> CollectedInput:
    """The planner's input for this cycle (``collect_input``) from the pool memory's samples and cooldowns."""
    return collect_input(
        namespace=namespace,
        pool=pool,
        status=status,
        records_for=runtime.records_for,
        ownership_key=runtime.ownership_key(),
        policies=policies,
        client=client,
        snapshot=snapshot,
        history=memory.history,
        last_action_at=memory.last_action_at,
        now=now,
    )


def _write_cycle_status(
    patch: kopf.Patch,
    status: Mapping[str, Any],
    records: Sequence[RecordedAction],
    still_offloaded: Sequence[OffloadedContainer],
    journal: StatusJournal,
) -> None:
    """recentActions (this cycle's records appended, capped), offloaded and the in-flight journal."""
    if records:
        merged = [dict(x) for x in status.get("recentActions") or []] + [r.to_dict() for r in records]
        patch.status["recentActions"] = merged[-MAX_RECENT_ACTIONS:]
    patch.status["offloaded"] = [o.to_dict() for o in still_offloaded]
    patch.status["inFlight"] = journal.payload()


def _still_offloaded(
    offloaded: Mapping[int, OffloadedContainer], inp: BalancingInput, started: Sequence[BalanceAction]
) -> list[OffloadedContainer]:
    """status.offloaded: the entries of CTs still offloaded (their tag) or offloaded this cycle, by VMID; those
    of CTs restored by hand or deleted are dropped."""
    offloading = {a.vmid for a in started if isinstance(a, OffloadContainer)}
    managed = inp.managed
    kept = [o for v, o in offloaded.items() if (v in managed and managed[v].offloaded) or v in offloading]
    return sorted(kept, key=lambda o: o.vmid)


def _sample(
    client: PveClient,
    pool: ProxmoxServerPoolSpec,
    snapshot: ClusterSnapshot,
    memory: PoolMemory,
    body: Any,
    now: float,
    where: str,
) -> None:
    """The pool's metric per node into the sample history (seeded from the RRD on the first cycle), CPU
    over the same window (the planner weighs CPU as it was sustained, not as one sample shows it), and
    the pressure stall figures."""
    metric = pool_measure(pool.thresholds)
    fetched = seed_from_rrd(client, pool, snapshot, memory, now, where) if not memory.seeded else {}
    for node in pool.nodes:
        usage = snapshot.nodes.get(node.name)
        if usage is not None and usage.online:
            memory.history.setdefault(node.name, deque(maxlen=HISTORY_LENGTH)).append(usage.used_fraction(metric))
    memory.cpu.resize(pool.thresholds.sustained_samples)
    memory.cpu.record(snapshot)
    sample_pressure(client, pool, snapshot, memory, body, fetched)


def _follow_in_flight(
    executor: BalanceExecutor,
    journal: StatusJournal,
    collected: CollectedInput,
    status: Mapping[str, Any],
    memory: PoolMemory,
    body: Any,
    now: float,
) -> tuple[BalancingInput, list[BalanceOutcome]]:
    """Follow the actions earlier cycles started (one task-status read each; a restore whose move ended
    starts its CT), repair what a previous operator process left in flight without a task to follow, and
    return the planner's input with what is still in flight projected as done."""
    inp = collected.input
    entries = journal.entries
    followed = [_with_planned_figures(o, status) for o in executor.follow([e for e in entries if e.upid])]
    leftovers = [e for e in entries if not e.upid]
    if leftovers:
        for message in executor.repair(leftovers, lambda vmid: vmid in collected.locked):
            kopf.info(body, reason="Repaired", message=message)
        journal.drop([e.vmid for e in leftovers if e.vmid not in collected.locked])
    still = [e for e in journal.entries if e.upid]  # as followed: a restore may have gone on to its start
    inp = project_in_flight(inp, still)
    # Pressure samples of nodes a migration just ended on (off or onto) show the pressure it was meant
    # to end; those of nodes a migration is still under way on describe neither the snapshot (projected
    # as done) nor the future: neither counts until rows from after the move arrive.
    for outcome in followed:
        if not outcome.in_progress:
            for moved_on in (outcome.action.node, getattr(outcome.action, "target", outcome.action.node)):
                memory.pressure.forget(str(moved_on), now)
    # Likewise the nodes an offload or restore is under way on: their pressure is about to change.
    moving = {e.source_node for e in still} | {str(e.target_node) for e in still if e.target_node}
    return replace(inp, pressure_history=memory.pressure.history(excluding=moving)), followed


def _plan(inp: BalancingInput, pool: ProxmoxServerPoolSpec) -> tuple[BalancePlan, BalancePlan, list[BalanceAction]]:
    """(the full plan, the plan that runs, what is only recommended). The full plan (every stage not Off)
    is what Recommend shows; what runs is planned with only the Automatic stages, so that e.g. offload
    never counts on migrations that are merely recommended."""
    balancing_mode = pool.balancing.mode
    offload_mode = pool.offload.mode
    plan = plan_balance(inp)

    def automatic(action: BalanceAction) -> bool:
        mode = balancing_mode if isinstance(action, MigrateContainer) else offload_mode
        return mode is AutomationMode.AUTOMATIC

    to_recommend = [a for a in plan.actions if not automatic(a)]
    if not to_recommend:
        return plan, plan, to_recommend
    run_plan = plan_balance(
        replace(
            inp,
            balancing_enabled=balancing_mode is AutomationMode.AUTOMATIC,
            offload_enabled=offload_mode is AutomationMode.AUTOMATIC,
        )
    )
    return plan, run_plan, to_recommend


def _report_recommendations(
    patch: kopf.Patch,
    body: Any,
    memory: PoolMemory,
    to_recommend: list[BalanceAction],
    policy_of: Mapping[int, Mapping[str, Any]],
    metric: Any,
    now: float,
) -> None:
    """Mode Recommend: status.recommendations, and an event when the set changes."""
    patch.status["recommendations"] = [
        _recommendation(a, _policy_name(policy_of, a.vmid), now).to_dict() for a in to_recommend[:MAX_RECOMMENDATIONS]
    ]
    signature = frozenset((a.kind, a.vmid, getattr(a, "target", None)) for a in to_recommend)
    if signature != memory.last_recommendations:
        for action in to_recommend:
            kopf.info(body, reason="Recommended", message=f"would {describe(action, metric)} ({action.reason})")
        memory.last_recommendations = signature


def _report_refusals(
    body: Any, memory: PoolMemory, plan: BalancePlan, policy_of: Mapping[int, Mapping[str, Any]], now: float
) -> list[RecordedAction]:
    """Refusals worth telling: an event and a recentActions entry when they change (not every cycle)."""
    refusal_records: list[RecordedAction] = []
    refusal_signature = frozenset((r.kind.value, r.vmid, r.node) for r in plan.refusals if _worth_reporting(r))
    if refusal_signature == memory.last_refusals:
        return refusal_records
    for refusal in plan.refusals:
        if not _worth_reporting(refusal) or (refusal.kind.value, refusal.vmid, refusal.node) in memory.last_refusals:
            continue
        REFUSALS.labels(refusal.stage, refusal.kind.value).inc()
        kopf.warn(body, reason=f"{refusal.stage}Refused", message=refusal.reason[:1024])
        if refusal.vmid is not None:
            refusal_records.append(
                RecordedAction(
                    time=datetime.fromtimestamp(now, UTC),
                    action=ActionKind(refusal.stage),
                    vmid=refusal.vmid,
                    policy=_policy_name(policy_of, refusal.vmid),
                    source_node=refusal.node,
                    reason=refusal.reason[:1024],
                    result=ActionResult.REFUSED,
                    message=refusal.kind.value,
                )
            )
    memory.last_refusals = refusal_signature
    return refusal_records


def _record_outcomes(
    outcomes: list[BalanceOutcome],
    records: list[RecordedAction],
    namespace: str,
    body: Any,
    memory: PoolMemory,
    policy_of: Mapping[int, Mapping[str, Any]],
    snapshot: ClusterSnapshot,
    status: Mapping[str, Any],
    now: float,
) -> dict[int, OffloadedContainer]:
    """Each outcome as a recentActions entry (appended to ``records``) and events on the pool and the CT's
    policy; cooldowns started; the offloaded list updated (returned); fresh samples awaited on the nodes
    an action changed."""
    offloaded = {o.vmid: o for o in read_offloaded(status.get("offloaded"))}
    touched_nodes: set[str] = set()
    for outcome in outcomes:
        action = outcome.action
        if outcome.in_progress:
            result = ActionResult.IN_PROGRESS
        else:
            result = ActionResult.SUCCEEDED if outcome.succeeded else ActionResult.FAILED
        ACTIONS.labels(action.kind, result.value).inc()
        records.append(_recorded(action, _policy_name(policy_of, action.vmid), result, outcome.message, now))
        owner = policy_of.get(action.vmid)
        _tell_outcome(outcome, [body] + ([_policy_body(namespace, owner)] if owner else []))
        if outcome.in_progress or outcome.succeeded:
            memory.last_action_at[action.vmid] = now  # the cooldown starts with the migration, done or not
        if isinstance(action, OffloadContainer) and outcome.in_progress:
            # What the CT uses now, before its shutdown: restore counts it at this size.
            offloaded[action.vmid] = _offloaded_record(action, snapshot, now)
        elif isinstance(action, OffloadContainer) and not outcome.succeeded:
            offloaded.pop(action.vmid, None)
        if outcome.succeeded:
            touched_nodes |= {action.node, getattr(action, "target", action.node)}
            if isinstance(action, OffloadContainer) and action.vmid not in offloaded:
                offloaded[action.vmid] = _offloaded_record(action, snapshot, now)
            elif isinstance(action, RestoreContainer):
                offloaded.pop(action.vmid, None)
    # Samples taken before an action no longer describe the node: wait for fresh ones (this is what
    # keeps PVE's lagging statistics from triggering the same relief twice).
    for touched in touched_nodes:
        memory.history.pop(touched, None)
        memory.pressure.forget(touched, now)
    return offloaded


def _tell_outcome(outcome: BalanceOutcome, bodies: Sequence[Any]) -> None:
    """The outcome as an event on each body: Migrated/Offloaded/Restored, <Kind>InProgress or <Kind>Failed."""
    kind = outcome.action.kind
    reason = {"Migrate": "Migrated", "Offload": "Offloaded", "Restore": "Restored"}[kind]
    for target_body in bodies:
        if outcome.succeeded:
            kopf.info(target_body, reason=reason, message=outcome.message[:1024])
        elif outcome.in_progress:
            kopf.info(target_body, reason=f"{kind}InProgress", message=outcome.message[:1024])
        else:
            kopf.warn(target_body, reason=f"{kind}Failed", message=outcome.message[:1024])


def _offloaded_record(action: OffloadContainer, snapshot: ClusterSnapshot, now: float) -> OffloadedContainer:
    """What the CT used just before it was stopped: restore counts it at this size."""
    ct = snapshot.containers.get(action.vmid)
    return OffloadedContainer(
        vmid=action.vmid,
        node=action.node,
        memory_used_bytes=ct.memory_used_bytes if ct else 0,
        cpu_used_fraction=ct.cpu_used_fraction if ct else 0.0,
        offloaded_at=datetime.fromtimestamp(now, UTC).replace(microsecond=0),
    )


def ha_summary(inp: BalancingInput) -> dict[str, Any] | None:
    """``status.ha``: how many of our CTs are HA resources, how many an HA rule places, and whether PVE's
    CRS balances them (None, which removes the field, when none is HA-managed)."""
    ours = [inp.snapshot.containers[v] for v in inp.managed if v in inp.snapshot.containers]
    managed = [ct for ct in ours if ct.ha_managed]
    if not managed:
        return None
    in_rules = sum(1 for ct in managed if inp.managed[ct.vmid].ha_rule is not None)
    parts = [
        f"{len(managed)} of the operator's CTs are HA resources of Proxmox VE: their starts, stops and "
        "migrations go through PVE's HA manager, and the operator waits until they take effect"
    ]
    if inp.ha_auto_rebalance:
        parts.append("PVE's CRS auto-rebalance is on, so PVE balances them and the operator does not migrate them")
    if in_rules:
        parts.append(f"{in_rules} named in PVE HA rules stay where PVE's HA manager places them")
    return HaStatus(
        managed_containers=len(managed),
        in_rules=in_rules,
        crs_auto_rebalance=inp.ha_auto_rebalance,
        message="; ".join(parts)[:1024],
    ).to_dict()


def _with_planned_figures(outcome: BalanceOutcome, status: Mapping[str, Any]) -> BalanceOutcome:
    """A followed action's outcome with the figures its start recorded (recentActions' InProgress entry), so
    the Succeeded/Failed record says what the planner expected, as a waited one did."""
    kind = outcome.action.kind
    started = next(
        (
            a
            for a in reversed(status.get("recentActions") or [])
            if a.get("vmid") == outcome.action.vmid and a.get("action") == kind and a.get("result") == "InProgress"
        ),
        None,
    )
    if started is None:
        return outcome

    def figure(key: str) -> float:
        return float(started.get(key) or 0.0)

    before, after = figure("sourcePercentBefore"), figure("sourcePercentAfter")
    action: BalanceAction
    if isinstance(outcome.action, OffloadContainer):
        action = replace(outcome.action, source_percent_before=before, source_percent_after=after)
    else:
        action = replace(
            outcome.action,
            source_percent_before=before,
            source_percent_after=after,
            target_percent_before=figure("targetPercentBefore"),
            target_percent_after=figure("targetPercentAfter"),
        )
    return replace(outcome, action=action)


def _policy_name(policy_of: Mapping[int, Mapping[str, Any]], vmid: int) -> str | None:
    policy = policy_of.get(vmid)
    return str(policy["name"]) if policy else None


#: Refusals that are the normal course of things, not something a user acts on: a spike waited out, an
#: operation still running, a state PVE has not reported yet, and the pacing of a plan by the limits
#: (moves waiting for ``maxConcurrentMigrations`` or for their target's one arrival per cycle: they run
#: in later cycles). Posting them as Warnings would make every multi-move plan look like a problem.
_ROUTINE_REFUSALS = frozenset(
    {"NotSustained", "InFlight", "StatusUnknown", "ConcurrencyLimit", "InboundLimit", "HaBalancedByPve"}
)


def _worth_reporting(refusal: Refusal) -> bool:
    """Refusals users act on (a Warning event, a recentActions entry, the refusals metric)."""
    return refusal.kind.value not in _ROUTINE_REFUSALS

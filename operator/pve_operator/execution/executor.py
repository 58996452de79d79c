"""Execute a ContainerPolicy's actions against PVE, concurrently up to the pool's bound."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from types import TracebackType
from typing import Any

from pve_operator.api.v1alpha1 import ActionKind, PolicyTask, PolicyTaskStep
from pve_operator.planning.actions import (
    Action,
    CreateContainer,
    DestroyContainer,
    HandOverVolumes,
    RecordTemplate,
    RestoreConfig,
    RestoreMarks,
    StartContainer,
)
from pve_operator.planning.ownership import (
    OFFLOADED_TAG,
    OwnershipKey,
    OwnershipRecord,
    format_description,
    is_owned,
    normalize_tags,
    ownership_tags,
    parse_record,
    remove_record,
)
from pve_operator.planning.pve_access import property_string, volume_of
from pve_operator.pve import ha
from pve_operator.pve.client import PveClient
from pve_operator.pve.errors import (
    PveAuthenticationError,
    PveConflict,
    PveError,
    PveNotFound,
    PvePermissionError,
    PveTaskFailed,
    PveTaskTimeout,
    PveUnreachable,
    is_config_lock_timeout,
)
from pve_operator.pve.ha import PveHaNotConverging
from pve_operator.pve.params import (
    ContainerBlueprint,
    clone_params,
    clone_settings,
    create_params,
    kept_volume_keys,
    mount_point_property,
)
from pve_operator.pve.tasks import Upid

log = logging.getLogger(__name__)

#: PVE task types that create a CT; while one runs, the CT is stopped on purpose.
_CREATION_TASKS = frozenset({"vzcreate", "vzrestore", "vzclone"})


@dataclass(frozen=True)
class PolicyIdentity:
    """Who the CTs belong to: written into every CT's marks, checked before destructive actions."""

    namespace: str
    name: str
    uid: str
    vmid_range: range
    #: Signs the ownership record of every CT created, verifies it before every change.
    ownership_key: OwnershipKey


@dataclass(frozen=True)
class Outcome:
    action: Action
    succeeded: bool
    #: What happened (or why not), in words for events and status.
    message: str
    error: PveError | None = None
    dry_run: bool = False
    #: Nothing was done: re-read right before acting, the CT no longer needed the action (a start
    #: planned from a snapshot taken before a restore or an offload). Not an action to announce.
    skipped: bool = False


class NotOurs(PveError):
    """The CT's own config does not prove it belongs to this policy: nothing destructive happens."""


#: PVE's ``storage_check_enabled`` answers: the template's storage exists but this node cannot use it.
_STORAGE_UNUSABLE = ("is not available on node", "is disabled")


class HandOverIncomplete(PveError):
    """A kept volume is still on the CT a handover would destroy: it is left for the next cycle."""


class TemplateNotFound(PveError):
    """The template volume is not on the target node's storage: creating there would only fail."""


@dataclass(frozen=True)
class Progress:
    """Where one action stands: ended (``outcome``), or waiting for a Proxmox VE task (``task``)."""

    outcome: Outcome | None = None
    task: PolicyTask | None = None


@dataclass(frozen=True)
class _Started:
    """A task one step of an action started: the journal follows ``upid`` on ``node``."""

    step: PolicyTaskStep
    upid: str


@dataclass
class CycleResult:
    """What one reconcile's execution did: the actions that ended, the journal to write back, the actions it
    had no task slot for (planned again by the next cycle)."""

    outcomes: list[Outcome] = field(default_factory=list)
    in_flight: list[PolicyTask] = field(default_factory=list)
    deferred: list[Action] = field(default_factory=list)

    @property
    def left(self) -> set[int]:
        """VMIDs still being acted on: a task in flight, or no task slot yet."""
        return {t.vmid for t in self.in_flight} | {a.vmid for a in self.deferred}


def action_of(task: PolicyTask) -> Action:
    """The action a journal entry carries out, as the planner wrote it (for outcomes, events, status)."""
    if task.action is ActionKind.CREATE:
        return CreateContainer(
            task.vmid, task.node, task.index or 0, task.hostname or "", task.reason, volumes_from=task.source_vmid
        )
    if task.action is ActionKind.START:
        return StartContainer(task.vmid, task.node, task.reason)
    if task.action is ActionKind.DELETE:
        return DestroyContainer(task.vmid, task.node, True, task.reason, unless_holding=task.keys)
    if task.action is ActionKind.HAND_OVER:
        return HandOverVolumes(task.vmid, task.node, task.source_vmid, task.keys, task.reason)
    return RestoreConfig(task.vmid, task.node, {}, task.reason, restart=True)


class PolicyExecutor:
    """Runs one policy's actions against PVE without waiting for their tasks.

    :meth:`run_cycle` is one reconcile's share: it looks once at each journaled task (:class:`PolicyTask`),
    starting the action's next task or reporting the action when it ended, then begins the plan's actions in
    the task slots left. :meth:`apply` drives the same steps to the end (policy deletion, tools, tests).
    ``limiter`` is shared by all policies of the same pool: it bounds their concurrent API calls."""

    def __init__(
        self,
        client: PveClient,
        identity: PolicyIdentity,
        *,
        limiter: threading.BoundedSemaphore,
        max_workers: int,
        task_timeout_seconds: float = 600.0,
        dry_run: bool = False,
        now_rfc3339: Callable[[], str],
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._identity = identity
        self._limiter = limiter
        self._max_workers = max(1, max_workers)
        self._task_timeout = task_timeout_seconds
        self._dry_run = dry_run
        self._now = now_rfc3339
        self._clock = clock
        self._sleep = sleep
        #: (node, ostemplate) -> why the template is missing there, or None when it is there; checked
        #: once per executor (one reconcile cycle), before the first creation on each node.
        self._template_checks: dict[tuple[str, str], str | None] = {}
        self._template_lock = threading.Lock()

    # -- public -----------------------------------------------------------------------------

    def apply(
        self,
        actions: Sequence[Action],
        blueprint: ContainerBlueprint,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> list[Outcome]:
        """Run ``actions`` to their end (order of the result = order of ``actions``); failures don't stop
        others. ``on_outcome`` is called with each outcome as soon as its action ends."""
        if not actions:
            return []
        if self._dry_run:
            return [Outcome(a, True, f"would {a.kind.lower()} CT {a.vmid}: {a.reason}", dry_run=True) for a in actions]
        results: dict[int, Outcome] = {}
        waiting = list(enumerate(actions))
        journal: list[PolicyTask] = []
        # By VMID, the positions of the begun actions not ended yet, oldest first (outcomes come in that order).
        by_vmid: dict[int, list[int]] = {}
        delay = 0.25
        while waiting or journal:
            cycle = self.run_cycle(journal, [a for _, a in waiting], blueprint, slots=self._max_workers)
            begun = {id(a) for a in [a for _, a in waiting]} - {id(a) for a in cycle.deferred}
            for position, action in waiting:
                if id(action) in begun:
                    by_vmid.setdefault(action.vmid, []).append(position)
            for outcome in cycle.outcomes:
                position = by_vmid[outcome.action.vmid].pop(0)
                results[position] = replace(outcome, action=actions[position])
                if on_outcome is not None:
                    _tell(on_outcome, results[position])
            # An action whose task is followed keeps its VMID's place until it ends.
            waiting = [(p, a) for p, a in waiting if id(a) not in begun]
            journal = cycle.in_flight
            if journal or waiting:
                self._sleep(delay)
                delay = min(delay * 2, 2.0)
        return [results[i] for i in range(len(actions))]

    def run_cycle(
        self,
        journal: Sequence[PolicyTask],
        actions: Sequence[Action],
        blueprint: ContainerBlueprint,
        *,
        slots: int,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> CycleResult:
        """One look at each journaled task, then begin ``actions`` while fewer than ``slots`` tasks are in
        flight. An action on a CT with a task in flight, a clone while another clone of the same template
        runs, and actions beyond the slots are deferred. Returns what ended, the new journal, the deferred."""
        result = CycleResult()
        if self._dry_run:
            result.outcomes = self.apply(actions, blueprint)
            result.in_flight = list(journal)
            return result
        for progress in self._parallel([partial(self._advance, t, blueprint) for t in journal]):
            self._collect(result, progress, on_outcome)
        busy = {t.vmid for t in result.in_flight} | {t.source_vmid for t in result.in_flight if t.source_vmid}
        tasks = len(result.in_flight)
        cloning = any(t.step is PolicyTaskStep.CLONE for t in result.in_flight)
        chosen: list[Action] = []
        for action in actions:
            is_clone = isinstance(action, CreateContainer) and blueprint.clone is not None
            # Config-only repairs finish in the cycle; these start tasks.
            takes_slot = isinstance(action, (CreateContainer, StartContainer, DestroyContainer, HandOverVolumes)) or (
                isinstance(action, RestoreConfig) and action.restart
            )
            if action.vmid in busy or (is_clone and cloning) or (takes_slot and tasks >= slots):
                result.deferred.append(action)
                continue
            busy.add(action.vmid)
            tasks += takes_slot
            cloning = cloning or is_clone
            chosen.append(action)
        for progress in self._parallel([partial(self._begin, a, blueprint) for a in chosen]):
            self._collect(result, progress, on_outcome)
        return result

    def release(self, vmid: int, node: str) -> str:
        """Remove our marks from a CT (``deletionPolicy: Retain``) so nothing will touch it again."""
        config = self._client.container_config(node, vmid)
        self._prove_ownership(vmid, config)
        tags = normalize_tags(str(config.get("tags") or "")) - ownership_tags(self._identity.uid) - {OFFLOADED_TAG}
        description = remove_record(str(config.get("description") or ""))
        changes: dict[str, Any] = {"tags": ";".join(sorted(tags))} if tags else {}
        deletions = [] if tags else ["tags"]
        if description:
            changes["description"] = description
        else:
            deletions.append("description")
        if deletions:
            changes["delete"] = ",".join(deletions)
        self._client.update_container_config(node, vmid, changes)
        return f"released CT {vmid}: ownership marks removed, CT left as it is"

    # -- the cycle's plumbing -------------------------------------------------------------------

    def _parallel(self, calls: Sequence[Callable[[], Progress]]) -> list[Progress]:
        """Run short calls (API requests, never a wait for a task) on up to ``max_workers`` threads, each in a
        copy of the caller's context (Kopf's event posting lives there)."""
        if len(calls) <= 1:
            return [call() for call in calls]
        with ThreadPoolExecutor(max_workers=min(self._max_workers, len(calls)), thread_name_prefix="pve") as pool:
            futures = [pool.submit(contextvars.copy_context().run, call) for call in calls]
            return [f.result() for f in futures]

    @staticmethod
    def _collect(result: CycleResult, progress: Progress, on_outcome: Callable[[Outcome], None] | None) -> None:
        if progress.task is not None:
            result.in_flight.append(progress.task)
        if progress.outcome is not None:
            result.outcomes.append(progress.outcome)
            if on_outcome is not None:
                _tell(on_outcome, progress.outcome)

    def _begin(self, action: Action, blueprint: ContainerBlueprint) -> Progress:
        """Do an action's first step: its synchronous part, and the start of its first task."""
        with self._guard(action) as guard:
            if isinstance(action, CreateContainer):
                guard.progress = self._begin_create(action, blueprint)
            elif isinstance(action, StartContainer):
                guard.progress = self._begin_start(action)
            elif isinstance(action, DestroyContainer):
                step, cleared = self._begin_destroy(action)
                guard.progress = self._follow(action, step, detail=cleared or None)
            elif isinstance(action, RecordTemplate):
                guard.progress = Progress(Outcome(action, True, self._record_template(action)))
            elif isinstance(action, RestoreMarks):
                guard.progress = Progress(Outcome(action, True, self._restore_marks(action)))
            elif isinstance(action, HandOverVolumes):
                task = self._new_task(action, None, source_vmid=action.source_vmid, keys=action.keys)
                guard.progress = self._hand_over_next(task, blueprint)
            else:
                guard.progress = self._begin_restore_config(action)
        return guard.progress

    def _advance(self, task: PolicyTask, blueprint: ContainerBlueprint) -> Progress:
        """One look at a journaled task: the same entry while it runs, else the action's next step."""
        action = action_of(task)
        with self._guard(action, task) as guard:
            try:
                ended = self._task_ended(task)
            except (PveTaskFailed, PveTaskTimeout, PveHaNotConverging) as exc:
                guard.progress = self._task_failed(task, exc)
                return guard.progress
            except PveError as exc:
                # PVE could not be asked (unreachable, a 5xx): the task is not affected; looked at next cycle.
                log.info("cannot look at the %s task of CT %s yet: %s", task.step, task.vmid, exc)
                guard.progress = Progress(task=task)
                return guard.progress
            if not ended:
                guard.progress = Progress(task=task)
                return guard.progress
            try:
                guard.progress = self._next_step(task, action, blueprint)
            except PveError as exc:
                if is_config_lock_timeout(exc) or isinstance(exc, PveUnreachable):
                    raise  # the guard keeps the entry: the next step is derived again next cycle
                guard.progress = self._task_failed(task, exc)
        return guard.progress

    def _next_step(self, task: PolicyTask, action: Action, blueprint: ContainerBlueprint) -> Progress:
        """What follows a task that ended OK."""
        if task.action is ActionKind.CREATE:
            return self._created(task, action, blueprint)
        if task.action is ActionKind.HAND_OVER:
            if task.step is PolicyTaskStep.RESTART_SOURCE:
                return Progress(Outcome(action, False, task.detail or f"HandOver CT {task.vmid} failed"))
            if task.step is PolicyTaskStep.MOVE_VOLUME and task.volume and task.volume not in task.moved:
                task = task.model_copy(update={"moved": (*task.moved, task.volume)})
            return self._hand_over_next(task, blueprint)
        if task.action is ActionKind.DELETE and task.step is PolicyTaskStep.STOP:
            node = Upid.parse(task.upid).node
            # A cycle or more since the proof: the CT must still prove itself ours right before the destroy.
            self._prove_ownership(task.vmid, self._client.container_config(node, task.vmid))
            return self._follow(action, self._destroy_stopped(node, task.vmid), task=task)
        return Progress(Outcome(action, True, self._finished(task)))

    def _finished(self, task: PolicyTask) -> str:
        """The message of an action whose last task ended OK."""
        if task.action is ActionKind.START:
            return f"started CT {task.vmid} on {task.node}"
        if task.action is ActionKind.DELETE:
            where = Upid.parse(task.upid).node if task.upid else task.node
            return f"stopped and destroyed CT {task.vmid} on {where}{task.detail or ''}: {task.reason}"
        return f"restored {task.detail} on CT {task.vmid} and restarted it to apply them: {task.reason}"

    def _guard(self, action: Action, task: PolicyTask | None = None) -> _ActionGuard:
        return _ActionGuard(self._limiter, action, task)

    def _new_task(self, action: Action, started: _Started | None, **fields: Any) -> PolicyTask:
        return PolicyTask(
            vmid=action.vmid,
            action=ActionKind(action.kind),
            step=started.step if started else PolicyTaskStep.START,
            node=action.node,
            upid=started.upid if started else "",
            started_at=self._now(),  # pydantic parses RFC 3339
            reason=action.reason[:1024],
            **fields,
        )

    def _follow(
        self,
        action: Action,
        step: _Started | str,
        *,
        task: PolicyTask | None = None,
        **fields: Any,
    ) -> Progress:
        """The action ended (``step`` is its message) or waits for the task ``step`` started."""
        if isinstance(step, str):
            return Progress(Outcome(action, True, step))
        if task is None:
            return Progress(task=self._new_task(action, step, **fields))
        return Progress(task=task.model_copy(update={"step": step.step, "upid": step.upid, **fields}))

    def _task_ended(self, task: PolicyTask) -> bool:
        """One look at the task (and, for an HA request, at the CT): True once the step is done; raises
        what the task failed with, :class:`PveTaskTimeout` past the task timeout, and
        :class:`PveHaNotConverging` when the HA manager did not carry out the request in time."""
        try:
            result = self._client.task_result(task.upid)
        except PveNotFound:
            raise PveTaskFailed(task.upid, "task not found (Proxmox VE no longer knows it)") from None
        started = Upid.parse(task.upid).starttime
        if result is None:
            if self._clock() - started > self._task_timeout:
                raise PveTaskTimeout(task.upid, self._clock() - started)
            return False
        wanted = {PolicyTaskStep.START: "running", PolicyTaskStep.STOP: "stopped"}.get(task.step)
        of_source = task.action is ActionKind.HAND_OVER and task.step is PolicyTaskStep.STOP
        vmid = task.source_vmid if of_source and task.source_vmid is not None else task.vmid
        return not ha.ha_request_pending(self._client, result.upid, vmid, status=wanted, now=self._clock())

    def _task_failed(self, task: PolicyTask, exc: PveError) -> Progress:
        """A journaled task failed: repair what the action changed (a clone is removed again, a handover's
        stopped source is started again) and report the failure."""
        action = action_of(task)
        message = f"{action.kind} CT {action.vmid} failed: {exc}"
        if task.step in (PolicyTaskStep.DISCARD, PolicyTaskStep.RESTART_SOURCE):
            message = task.detail or message
            log.warning("%s (and then: %s)", message, exc)
            return Progress(Outcome(action, False, message, error=exc))
        if task.action is ActionKind.HAND_OVER and task.source_stopped and task.source_vmid is not None:
            restarted = self._restart_source(task, message)
            if restarted is not None:
                return restarted
        log.warning("%s", message)
        return Progress(Outcome(action, False, message, error=exc))

    # -- Create -------------------------------------------------------------------------------

    def _begin_create(self, action: CreateContainer, blueprint: ContainerBlueprint) -> Progress:
        if blueprint.ostemplate is not None:
            self._check_template(action.node, blueprint.ostemplate)
        record = OwnershipRecord(
            policy_namespace=self._identity.namespace,
            policy_name=self._identity.name,
            policy_uid=self._identity.uid,
            index=action.index,
            created_at=self._now(),
        ).signed(action.vmid, self._identity.ownership_key)
        if blueprint.template_hash:
            record = record.with_template(action.vmid, self._identity.ownership_key, blueprint.template_hash)
        # A replacement made to receive kept volumes is created without those mount points, and stays
        # stopped until the handover gives them to it.
        omitted = kept_volume_keys(blueprint.mount_points) if action.volumes_from is not None else ()
        if action.volumes_from is not None:
            record = record.receiving_volumes_from(action.vmid, self._identity.ownership_key, action.volumes_from)
        description = format_description(record, blueprint.notes)
        tags = ownership_tags(self._identity.uid)
        fields: dict[str, Any] = {
            "hostname": action.hostname,
            "index": action.index,
            "source_vmid": action.volumes_from,
        }
        if blueprint.clone is not None:
            return self._follow(action, self._begin_clone(action, blueprint, description), **fields)
        params = create_params(
            blueprint,
            hostname=action.hostname,
            description=description,
            tags=tags,
            mac_seed=self._mac_seed(action.index),
        )
        upid = self._client.create_container(action.node, action.vmid, _without(params, omitted))
        return self._follow(action, _Started(PolicyTaskStep.CREATE, upid), **fields)

    def _mac_seed(self, index: int) -> str:
        return f"{self._identity.uid}/{index}"

    def _begin_clone(self, action: CreateContainer, blueprint: ContainerBlueprint, description: str) -> _Started:
        """Start cloning the template CT onto the node placement chose (another node than the template's only
        when its volumes are on shared storage). pve-container's clone_vm holds the template's ``disk`` lock for
        the whole vzclone task, so :meth:`run_cycle` runs one clone of a template at a time."""
        source = blueprint.clone
        assert source is not None
        if source.node != action.node and not source.shared:
            raise TemplateNotFound(
                f"template CT {source.vmid} is on {source.node}, not on {action.node}: a clone of a CT on local "
                "storage is made on its template's node"
            )
        body = clone_params(
            blueprint, newid=action.vmid, hostname=action.hostname, description=description, target=action.node
        )
        return _Started(PolicyTaskStep.CLONE, self._client.clone_container(source.node, source.vmid, body))

    def _created(self, task: PolicyTask, action: Action, blueprint: ContainerBlueprint) -> Progress:
        """The create (or clone, or a failed clone's removal) ended: write a clone's settings, then start."""
        assert isinstance(action, CreateContainer)
        what = f"CT {action.vmid} ({action.hostname}) on {action.node}"
        if task.step is PolicyTaskStep.DISCARD:
            return Progress(Outcome(action, False, task.detail or f"Create CT {task.vmid} failed"))
        if task.step is PolicyTaskStep.START:
            return Progress(Outcome(action, True, f"created and started {what}: {action.reason}"))
        if task.step is PolicyTaskStep.CLONE:
            failure = self._configure_clone(task, blueprint)
            if failure is not None:
                upid = self._client.destroy_container(task.node, task.vmid, purge=True)
                return self._follow(action, _Started(PolicyTaskStep.DISCARD, upid), task=task, detail=failure)
        if action.volumes_from is not None:
            waits = f"stopped until CT {action.volumes_from} hands over its kept volumes"
            return Progress(Outcome(action, True, f"created {what}, {waits}: {action.reason}"))
        if not blueprint.start_on_create:
            return Progress(Outcome(action, True, f"created {what}: {action.reason}"))
        started = self._start_task(task.node, task.vmid)
        if started is not None:
            return self._follow(action, started, task=task)
        return Progress(Outcome(action, True, f"created and started {what}: {action.reason}"))

    def _configure_clone(self, task: PolicyTask, blueprint: ContainerBlueprint) -> str | None:
        """Give a fresh clone the policy's settings and the ownership marks (its description, with the record,
        came with the clone request); why not, or None. A clone whose settings cannot be written is removed
        again (it is ours), so no half-made CT is counted."""
        omitted = kept_volume_keys(blueprint.mount_points) if task.source_vmid is not None else ()
        try:
            description = str(self._client.container_config(task.node, task.vmid).get("description") or "")
            settings = clone_settings(
                blueprint,
                hostname=task.hostname or "",
                description=description,
                tags=ownership_tags(self._identity.uid),
                mac_seed=self._mac_seed(task.index or 0),
            )
            self._client.update_container_config(task.node, task.vmid, _without(settings, omitted))
        except PveError as exc:
            return f"Create CT {task.vmid} failed: {exc}"
        return None

    # -- Start, Delete, Repair ------------------------------------------------------------------

    def _begin_start(self, action: StartContainer) -> Progress:
        settled = self._start_no_longer_needed(action)
        if settled is not None:
            return Progress(Outcome(action, True, settled, skipped=True))
        started = self._start_task(action.node, action.vmid)
        if started is None:
            return Progress(Outcome(action, True, f"started CT {action.vmid} on {action.node}"))
        return self._follow(action, started)

    def _start_task(self, node: str, vmid: int) -> _Started | None:
        """Start the CT (an HA-managed one answers with an hastart request, followed until it runs); None when
        it runs already."""
        try:
            return _Started(PolicyTaskStep.START, self._client.start_container(node, vmid))
        except PveConflict as exc:
            if exc.already_running:
                return None
            raise

    def _begin_destroy(self, action: DestroyContainer) -> tuple[_Started | str, str]:
        """Prove the CT ours from its own config, clear its protection flag, and start stopping it (or, when
        stopped, destroying it), or the message when it was already gone; with what was cleared first."""
        node = action.node
        try:
            config = self._client.container_config(node, action.vmid)
        except PveNotFound:
            # Gone, or moved since the snapshot: look once more before calling it gone.
            moved_to = self._client.locate_container(action.vmid)
            if moved_to is None:
                return f"CT {action.vmid} was already gone", ""
            node = moved_to
            config = self._client.container_config(node, action.vmid)
        self._prove_ownership(action.vmid, config)
        held = [key for key in action.unless_holding if key in config]
        if held:
            raise HandOverIncomplete(f"CT {action.vmid} still holds kept volume(s) {', '.join(held)}: not destroyed")
        cleared = ""
        if str(config.get("protection") or "0") not in ("0", ""):
            # Proxmox VE refuses to remove a protected CT; the policy's own deliberate removal clears it.
            self._client.update_container_config(node, action.vmid, {"delete": "protection"})
            cleared = " (its protection flag cleared first)"
        if self._client.container_status(node, action.vmid).get("status") == "running":
            try:
                # HA-managed: hastop only asks; the destroy waits until the HA manager stopped it.
                return _Started(PolicyTaskStep.STOP, self._client.stop_container(node, action.vmid)), cleared
            except PveConflict as exc:
                if "not running" not in exc.pve_message:
                    raise
        return self._destroy_stopped(node, action.vmid), cleared

    def _destroy_stopped(self, node: str, vmid: int) -> _Started | str:
        try:
            return _Started(PolicyTaskStep.DESTROY, self._client.destroy_container(node, vmid, purge=True))
        except PveNotFound:
            return f"CT {vmid} was already gone"

    def _begin_restore_config(self, action: RestoreConfig) -> Progress:
        self._prove_ownership(action.vmid, self._client.container_config(action.node, action.vmid))
        self._client.update_container_config(action.node, action.vmid, action.changes)
        changed = ", ".join(f"{k}={v}" for k, v in action.changes.items())
        if action.restart and self._client.container_status(action.node, action.vmid).get("status") == "running":
            # Pending on a running CT until it restarts (pve-container vmconfig_apply_pending at start).
            upid = self._client.reboot_container(action.node, action.vmid)
            return self._follow(action, _Started(PolicyTaskStep.REBOOT, upid), detail=changed)
        return Progress(Outcome(action, True, f"restored {changed} on CT {action.vmid}: {action.reason}"))

    # -- HandOver -------------------------------------------------------------------------------

    def _hand_over_next(self, task: PolicyTask, blueprint: ContainerBlueprint) -> Progress:
        """The handover's next step, from PVE's state now: move the replacement to its source's node, stop the
        source, move the next kept volume, write the received volumes' options, start the replacement, destroy
        the source. Each step is skipped when done, so a handover cut short is finished by a later cycle. Both
        CTs are proven ours from their own configs before each step; the source is destroyed only when none of
        the kept volumes is left on it."""
        action = action_of(task)
        vmid, node, source = task.vmid, action.node, task.source_vmid
        here = node if source is None else self._client.locate_container(vmid)  # the replacement's node
        if here is None:
            raise PveNotFound(f"CT {vmid}, which was to receive CT {source}'s kept volumes, is gone")
        target_config = self._client.container_config(here, vmid)
        self._prove_ownership(vmid, target_config)
        if source is not None and task.step is not PolicyTaskStep.DESTROY:
            source_config = self._client.container_config(node, source)
            self._prove_ownership(source, source_config)
            to_move = [k for k in task.keys if k in source_config and k not in target_config]
            if to_move:
                return self._move_next(task, action, here, to_move)
        fresh = self._settle_kept_volumes(here, vmid, target_config, blueprint, task.moved)
        if fresh:
            news = f" (new empty {', '.join(fresh)}: there was no volume to receive)"
            task = task.model_copy(update={"detail": news})
        if self._client.container_status(here, vmid).get("status") != "running":
            started = self._start_task(here, vmid)
            if started is not None:
                return self._follow(action, started, task=task)
        said = f"CT {vmid} received {', '.join(task.moved)} from CT {source}" if task.moved else f"CT {vmid}"
        said += task.detail or ""
        if source is None:
            return Progress(Outcome(action, True, f"{said} started: {action.reason}"))
        destroy = DestroyContainer(
            source, node, False, f"its kept volumes were handed over to CT {vmid}", unless_holding=task.keys
        )
        if task.step is PolicyTaskStep.DESTROY:
            done = f"stopped and destroyed CT {source} on {node}: {destroy.reason}"
            return Progress(Outcome(action, True, f"{said}, started; {done}"))
        step, _ = self._begin_destroy(destroy)
        if isinstance(step, str):
            return Progress(Outcome(action, True, f"{said}, started; {step}"))
        return self._follow(action, step, task=task)

    def _move_next(self, task: PolicyTask, action: Action, here: str, to_move: Sequence[str]) -> Progress:
        """The step that brings the next kept volume over: the replacement back to its source's node (move_volume
        needs both on one node; it is stopped, so an offline migration), the source stopped, or the move."""
        assert task.source_vmid is not None
        node, source = action.node, task.source_vmid
        if here != node:
            upid = self._client.migrate_container(here, task.vmid, target=node, restart=False)
            return self._follow(action, _Started(PolicyTaskStep.MIGRATE, upid), task=task)
        if self._client.container_status(node, source).get("status") == "running":
            upid = self._client.stop_container(node, source)
            return self._follow(action, _Started(PolicyTaskStep.STOP, upid), task=task, source_stopped=True)
        key = to_move[0]
        try:
            upid = self._client.move_volume(node, source, key, target_vmid=task.vmid, target_volume=key)
        except PveError as exc:
            return self._task_failed(task, exc)
        return self._follow(action, _Started(PolicyTaskStep.MOVE_VOLUME, upid), task=task, volume=key)

    def _restart_source(self, task: PolicyTask, message: str) -> Progress | None:
        """Start the handover's source again (this handover stopped it); None when it runs already."""
        assert task.source_vmid is not None
        try:
            if self._client.container_status(task.node, task.source_vmid).get("status") == "running":
                return None
            started = self._start_task(task.node, task.source_vmid)
        except PveError as exc:
            log.warning("CT %s stopped for a volume handover could not be started again: %s", task.source_vmid, exc)
            return None
        if started is None:
            return None
        return self._follow(
            action_of(task),
            _Started(PolicyTaskStep.RESTART_SOURCE, started.upid),
            task=task,
            detail=message[:1024],
        )

    # -- one action's helpers -------------------------------------------------------------------

    def _check_template(self, node: str, ostemplate: str) -> None:
        """Raise :class:`TemplateNotFound` unless ``ostemplate`` is on its storage as ``node`` sees it.

        Only volume IDs (``storage:vztmpl/file``) are checked; a permission error on the listing skips
        the check (creation then reports what PVE says)."""
        storage, sep, _ = ostemplate.partition(":")
        if not sep or ostemplate.startswith("/"):
            return
        key = (node, ostemplate)
        with self._template_lock:
            checked = key in self._template_checks
            problem = self._template_checks.get(key)
        if not checked:
            try:
                present = ostemplate in self._client.templates(node, storage)
                problem = None if present else f"template {ostemplate} is not on storage {storage} of node {node}"
            except PvePermissionError:
                problem = None
            except (PveUnreachable, PveAuthenticationError):
                raise
            except PveError as exc:
                if isinstance(exc, PveNotFound) or any(m in exc.pve_message for m in _STORAGE_UNUSABLE):
                    problem = f"template {ostemplate} cannot be found on node {node}: {exc.pve_message}"
                else:  # the listing itself failed (an API without it): creation will tell
                    log.debug("cannot list the templates of %s on %s: %s", storage, node, exc)
                    problem = None
            with self._template_lock:
                self._template_checks[key] = problem
        if problem is not None:
            raise TemplateNotFound(problem)

    def _start_no_longer_needed(self, action: StartContainer) -> str | None:
        """Why a repair start planned from the snapshot is no longer wanted, from PVE's own answers
        right now, or None; raises :class:`NotOurs` when the CT's config no longer proves it ours.

        The pool's balancing cycle restores and offloads CTs concurrently with policy reconciles: a
        snapshot that showed the CT stopped may predate a restore (it runs now) or an offload (it is
        stopped on purpose, tagged ``offloaded``)."""
        config = self._client.container_config(action.node, action.vmid)
        self._prove_ownership(action.vmid, config)
        status = str(self._client.container_status(action.node, action.vmid).get("status"))
        if status == "running":
            return f"CT {action.vmid} is running again: no start needed"
        if OFFLOADED_TAG in normalize_tags(str(config.get("tags") or "")):
            return f"CT {action.vmid} was offloaded by the pool's balancing: not started"
        # PVE writes a new CT's full config (our marks included) and drops `lock: create` before its
        # create task ends (pve-container API2/LXC.pm create_vm): a CT seen stopped then is not
        # "stopped outside the operator" but still being created; its creator starts it.
        creating = self._client.active_task_types(action.node, action.vmid) & _CREATION_TASKS
        if creating:
            return f"CT {action.vmid} is still being created ({', '.join(sorted(creating))} running): not started"
        return None

    def _prove_ownership(self, vmid: int, config: dict[str, Any]) -> None:
        if not is_owned(
            vmid=vmid,
            tags=normalize_tags(str(config.get("tags") or "")),
            description=str(config.get("description") or ""),
            policy_uid=self._identity.uid,
            vmid_range=self._identity.vmid_range,
            key=self._identity.ownership_key,
        ):
            raise NotOurs(f"CT {vmid} is not provably owned by this policy: left untouched")

    def _settle_kept_volumes(
        self,
        node: str,
        vmid: int,
        config: dict[str, Any],
        blueprint: ContainerBlueprint,
        moved: Sequence[str],
    ) -> list[str]:
        """Write the policy's mount options on the volumes just received (PVE keeps the source's), and create
        the kept volumes the CT still lacks (empty: their source is gone). Returns the keys created empty."""
        changes: dict[str, Any] = {}
        fresh: list[str] = []
        for i, mount_point in enumerate(blueprint.mount_points):
            key = f"mp{i}"
            if not mount_point.keep_on_recreate:
                continue
            if key in config:
                if key in moved:
                    size = property_string(config[key]).get("size")
                    changes[key] = mount_point_property(mount_point, volume_of(config[key])) + (
                        f",size={size}" if size else ""
                    )
            else:
                changes[key] = mount_point_property(mount_point)
                fresh.append(key)
        if changes:
            self._client.update_container_config(node, vmid, changes)
        return fresh

    def _record_template(self, action: RecordTemplate) -> str:
        config = self._client.container_config(action.node, action.vmid)
        self._prove_ownership(action.vmid, config)
        description = str(config.get("description") or "")
        record = parse_record(description)
        assert record is not None  # proven above
        stamped = record.with_template(action.vmid, self._identity.ownership_key, action.template_hash)
        self._client.update_container_config(
            action.node, action.vmid, {"description": format_description(stamped, description)}
        )
        return f"recorded template {action.template_hash} on CT {action.vmid}: {action.reason}"

    def _restore_marks(self, action: RestoreMarks) -> str:
        config = self._client.container_config(action.node, action.vmid)
        self._prove_ownership(action.vmid, config)
        changes: dict[str, Any] = {}
        if action.notes is not None:
            description = str(config.get("description") or "")
            record = parse_record(description)
            assert record is not None  # proven above
            changes["description"] = format_description(record, action.notes)
        if action.add_tags or action.remove_tags:
            # The ownership tags are never taken off, whatever the action says.
            removable = action.remove_tags - ownership_tags(self._identity.uid)
            tags = (normalize_tags(str(config.get("tags") or "")) | action.add_tags) - removable
            changes["tags"] = ";".join(sorted(tags))
        self._client.update_container_config(action.node, action.vmid, changes)
        return f"restored {', '.join(sorted(changes))} on CT {action.vmid}: {action.reason}"


def _without(params: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in keys}


class _ActionGuard:
    """Around one begin or advance: holds the pool's API limiter, and turns a PVE error into the action's
    failure (a config lock held by some task: not a failure; the step is tried again next cycle)."""

    def __init__(self, limiter: threading.BoundedSemaphore, action: Action, task: PolicyTask | None) -> None:
        self._limiter, self._action, self._task = limiter, action, task
        self.progress = Progress()

    def __enter__(self) -> _ActionGuard:
        self._limiter.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> bool:
        self._limiter.release()
        if not isinstance(exc, PveError):
            return False
        action = self._action
        if self._task is not None and isinstance(exc, PveUnreachable):
            log.info("%s CT %s goes on next cycle: %s", action.kind, action.vmid, exc)
            self.progress = Progress(task=self._task)
            return True
        if is_config_lock_timeout(exc):
            # A task (start, migrate, backup...) holds the CT's config lock: the CT is busy, not broken.
            log.info("%s CT %s waits: a task holds its config lock (%s)", action.kind, action.vmid, exc)
            busy = Outcome(action, True, f"CT {action.vmid} is busy with a task: {exc}", skipped=True)
            self.progress = Progress(task=self._task) if self._task is not None else Progress(busy)
            return True
        log.warning("%s CT %s failed: %s", action.kind, action.vmid, exc)
        self.progress = Progress(Outcome(action, False, f"{action.kind} CT {action.vmid} failed: {exc}", error=exc))
        return True


def _tell(on_outcome: Callable[[Outcome], None], outcome: Outcome) -> None:
    try:
        on_outcome(outcome)
    except Exception:  # reporting must never lose the outcome itself
        log.exception("reporting the outcome of %s CT %s failed", outcome.action.kind, outcome.action.vmid)

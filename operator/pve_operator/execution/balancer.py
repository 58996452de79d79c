"""Execute a balancing plan (migrate, offload, restore) with a journal, and repair after a crash.

Each action is journaled *before* it starts (``journal.begin``) and cleared when it ends
(``journal.finish``). No action is waited for: its first PVE task is started, its UPID journaled
(``journal.started``), and later cycles look at the task once each (:meth:`follow`) until the action
ends, so no cycle waits behind a long migration, a slow shutdown or a restore's copy. A restore that
moves the CT has two tasks: the stopped migration, then the start (the journal's UPID is replaced). A
restarted operator passes journal entries without a task to :meth:`repair`, which finishes or reverts
them. The invariants:

* a CT that was running before a migration is running after it, whatever failed;
* an offload marks the CT (tag) before stopping it, so drift repair never restarts it, and removes
  the mark again if the CT could not be stopped;
* a restore removes the mark only once the CT runs;
* nothing is stopped or started unless the CT's own config proves, at that moment, that it belongs to
  the policy the plan says.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pve_operator.api.v1alpha1 import ActionKind, InFlightOperation
from pve_operator.execution.executor import NotOurs, PolicyIdentity
from pve_operator.planning.actions import BalanceAction, MigrateContainer, OffloadContainer, RestoreContainer
from pve_operator.planning.ownership import OFFLOADED_TAG, is_owned, normalize_tags
from pve_operator.pve.client import PveClient
from pve_operator.pve.errors import PveConflict, PveError, PveNotFound
from pve_operator.pve.ha import (
    HA_CONVERGE_SECONDS,
    HA_REQUEST_TASKS,
    PveHaNotConverging,
    ct_resource,
    ha_request_pending,
    start_and_wait,
)
from pve_operator.pve.tasks import TaskResult, Upid

log = logging.getLogger(__name__)

#: The task types of a migration (``hamigrate``: an HA-managed CT's request): a restore's first step when it moves.
MIGRATION_TASKS = frozenset({"vzmigrate", "hamigrate"})


class Journal(Protocol):
    """Where in-flight operations are recorded (the pool's status, written through the API)."""

    def begin(self, action: BalanceAction) -> None: ...

    def started(self, vmid: int, upid: str) -> None:
        """The action's PVE task is running: record its UPID so later cycles can follow it."""

    def finish(self, vmid: int) -> None: ...


def journal_entry(action: BalanceAction, policy: str | None, started_at: datetime) -> InFlightOperation:
    """The ``status.inFlight`` entry of an action about to start (its UPID comes with ``Journal.started``)."""
    return InFlightOperation(
        vmid=action.vmid,
        action=ActionKind(action.kind),
        policy=policy,
        source_node=action.node,
        target_node=getattr(action, "target", None),
        was_running=bool(getattr(action, "running", False)),
        started_at=started_at.replace(microsecond=0),
        reason=action.reason[:1024],
    )


def journaled_action(
    entry: InFlightOperation, *, expected_memory_used_bytes: int = 0, expected_cpu_used_fraction: float = 0.0
) -> BalanceAction:
    """The action a ``status.inFlight`` entry carries out, as far as the entry tells it: for outcomes and events
    (the planner's figures are not journaled), and for the planner's projection of what is still in flight
    (a restore then with the usage expected of its CT once started)."""
    reason = entry.reason or f"journaled {entry.action.value.lower()}"
    if entry.action is ActionKind.MIGRATE:
        return MigrateContainer(
            vmid=entry.vmid,
            node=entry.source_node,
            target=entry.target_node or "",
            running=entry.was_running,
            reason=reason,
            source_percent_before=0.0,
            source_percent_after=0.0,
            target_percent_before=0.0,
            target_percent_after=0.0,
        )
    if entry.action is ActionKind.OFFLOAD:
        return OffloadContainer(
            vmid=entry.vmid, node=entry.source_node, reason=reason, source_percent_before=0.0, source_percent_after=0.0
        )
    return RestoreContainer(
        vmid=entry.vmid,
        node=entry.source_node,
        target=entry.target_node or entry.source_node,
        reason=reason,
        expected_memory_used_bytes=expected_memory_used_bytes,
        expected_cpu_used_fraction=expected_cpu_used_fraction,
        source_percent_before=0.0,
        source_percent_after=0.0,
        target_percent_before=0.0,
        target_percent_after=0.0,
    )


@dataclass(frozen=True)
class BalanceOutcome:
    action: BalanceAction
    succeeded: bool
    message: str
    error: PveError | None = None
    #: Started, not ended: its journal entry stays, and the next cycles follow its task until it ends.
    in_progress: bool = False
    #: Not started: it depends on an action still running; the next cycle plans it again.
    deferred: bool = False


def dependency_waves(
    actions: Sequence[BalanceAction], depends_on: Mapping[int, Sequence[int]]
) -> list[list[BalanceAction]]:
    """Actions grouped so that each runs after the actions it depends on (plan order within a wave)."""
    remaining = list(actions)
    done: set[int] = set()
    planned = {a.vmid for a in actions}
    waves: list[list[BalanceAction]] = []
    while remaining:
        wave = [a for a in remaining if all(d in done or d not in planned for d in depends_on.get(a.vmid, ()))]
        if not wave:  # a cycle cannot come from the planner; run the rest in order rather than stall
            wave = remaining[:1]
        waves.append(wave)
        done |= {a.vmid for a in wave}
        remaining = [a for a in remaining if a not in wave]
    return waves


class BalanceExecutor:
    def __init__(
        self,
        client: PveClient,
        owners: Mapping[int, PolicyIdentity],
        journal: Journal,
        *,
        max_parallel: int = 1,
        task_timeout_seconds: float = 600.0,
        migrate_shutdown_timeout_seconds: int = 180,
        offload_shutdown_timeout_seconds: int = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        #: Epoch seconds now, compared with a request's UPID start time (PVE's clock) for HA requests.
        self._clock = clock
        self._client = client
        self._owners = owners
        self._journal = journal
        self._max_parallel = max(1, max_parallel)
        self._task_timeout = task_timeout_seconds
        self._migrate_timeout = migrate_shutdown_timeout_seconds
        self._offload_timeout = offload_shutdown_timeout_seconds

    # -- plan -------------------------------------------------------------------------------

    def apply(self, actions: Sequence[BalanceAction], depends_on: Mapping[int, Sequence[int]]) -> list[BalanceOutcome]:
        outcomes: dict[int, BalanceOutcome] = {}
        for wave in dependency_waves(actions, depends_on):
            runnable = [
                a
                for a in wave
                if all(outcomes.get(d) is None or outcomes[d].succeeded for d in depends_on.get(a.vmid, ()))
            ]
            for skipped in (a for a in wave if a not in runnable):
                waiting = [d for d in depends_on.get(skipped.vmid, ()) if d in outcomes and outcomes[d].in_progress]
                if waiting:
                    outcomes[skipped.vmid] = BalanceOutcome(
                        skipped,
                        False,
                        f"{skipped.kind} CT {skipped.vmid} waits for the {outcomes[waiting[0]].action.kind.lower()} "
                        f"of CT {waiting[0]}",
                        deferred=True,
                    )
                    continue
                outcomes[skipped.vmid] = BalanceOutcome(
                    skipped, False, f"{skipped.kind} CT {skipped.vmid} skipped: an action it depends on failed"
                )
            with ThreadPoolExecutor(max_workers=min(self._max_parallel, max(1, len(runnable)))) as pool:
                for outcome in pool.map(self._run, runnable):
                    outcomes[outcome.action.vmid] = outcome
        return [outcomes[a.vmid] for a in actions]

    def _run(self, action: BalanceAction) -> BalanceOutcome:
        """Start the action's first task (journaled) and come back: later cycles follow it."""
        self._journal.begin(action)
        still_running = False
        try:
            if isinstance(action, MigrateContainer):
                message = self._start_migration(action)
            elif isinstance(action, OffloadContainer):
                message = self._start_offload(action)
            else:
                started = self._start_restore(action)
                if started is None:  # it was running already: nothing to follow
                    return BalanceOutcome(
                        action, True, self._restored(action.vmid, action.node, action.target, action.reason)
                    )
                message = started
            still_running = True
            return BalanceOutcome(action, False, message, in_progress=True)
        except PveError as exc:
            log.warning("%s CT %s failed: %s", action.kind, action.vmid, exc)
            return BalanceOutcome(action, False, f"{action.kind} CT {action.vmid} failed: {exc}", error=exc)
        finally:
            if not still_running:
                self._journal.finish(action.vmid)

    # -- helpers ----------------------------------------------------------------------------

    def _config_proving_ownership(self, node: str, vmid: int) -> dict[str, Any]:
        config = self._client.container_config(node, vmid)
        owner = self._owners.get(vmid)
        if owner is None or not is_owned(
            vmid=vmid,
            tags=normalize_tags(str(config.get("tags") or "")),
            description=str(config.get("description") or ""),
            policy_uid=owner.uid,
            vmid_range=owner.vmid_range,
            key=owner.ownership_key,
        ):
            raise NotOurs(f"CT {vmid} is not provably owned by the operator: left untouched")
        return config

    def _set_offloaded_tag(self, node: str, vmid: int, config: Mapping[str, Any], present: bool) -> None:
        tags = normalize_tags(str(config.get("tags") or ""))
        wanted = tags | {OFFLOADED_TAG} if present else tags - {OFFLOADED_TAG}
        if wanted != tags:
            self._client.update_container_config(node, vmid, {"tags": ";".join(sorted(wanted))})

    def _where(self, vmid: int) -> tuple[str, str] | None:
        """(node, status) of the CT from one cluster list, or None when it is gone."""
        node = self._client.locate_container(vmid)
        if node is None:
            return None
        return node, str(self._client.container_status(node, vmid).get("status"))

    def _ensure_running(self, vmid: int) -> str:
        """Start the CT wherever it is if it is stopped (and not locked by a migration still running)."""
        found = self._where(vmid)
        if found is None:
            return f"CT {vmid} is gone"
        node, status = found
        if status == "running":
            return f"CT {vmid} is running on {node}"
        start_and_wait(self._client, node, vmid, timeout_seconds=self._task_timeout)
        return f"CT {vmid} started again on {node}"

    # -- actions ----------------------------------------------------------------------------

    def _start_migration(self, action: MigrateContainer) -> str:
        self._config_proving_ownership(action.node, action.vmid)
        upid = self._client.migrate_container(
            action.node,
            action.vmid,
            target=action.target,
            restart=action.running,
            timeout_seconds=self._migrate_timeout,
        )
        self._journal.started(action.vmid, upid)
        mode = " (restart mode: the CT is down while it moves)" if action.running else ""
        return f"migration of CT {action.vmid} {action.node} → {action.target} started{mode}: {action.reason}"

    def follow(self, entries: Sequence[InFlightOperation]) -> list[BalanceOutcome]:
        """Look once at each journaled action's task: outcomes for the actions that ended, nothing for those
        still running (a restore whose migration ended starts the CT and stays in flight)."""
        outcomes: list[BalanceOutcome] = []
        for entry in entries:
            if not entry.upid:
                continue
            if entry.action == "Migrate":
                outcome = self._follow_migration(entry)
            elif entry.action == "Offload":
                outcome = self._follow_offload(entry)
            else:
                outcome = self._follow_restore(entry)
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    def _follow_migration(self, entry: InFlightOperation) -> BalanceOutcome | None:
        """The CT left running if it ran before, whatever happened."""
        if entry.upid is None:
            return None
        action = journaled_action(entry)
        try:
            task = self._client.task_status(Upid.parse(entry.upid))
        except PveNotFound:
            task = {"status": "stopped", "exitstatus": "task not found"}
        except PveError as exc:
            log.info("cannot look at the migration of CT %s yet: %s", entry.vmid, exc)
            return None
        if task.get("status") != "stopped":
            return None
        exit_status = str(task.get("exitstatus") or "")
        if exit_status == "OK" and self._ha_move_pending(entry):
            return None  # the HA manager has the request but has not moved the CT yet
        try:
            recovered = self._ensure_running(entry.vmid) if entry.was_running else ""
        except PveError as exc:
            recovered = f"CT {entry.vmid} could not be started again: {exc}"
        finally:
            self._journal.finish(entry.vmid)
        if exit_status == "OK" and entry.upid and Upid.parse(entry.upid).type in HA_REQUEST_TASKS:
            resource = ct_resource(self._client, entry.vmid)
            if resource is not None and resource.get("node") != entry.target_node:
                error = PveHaNotConverging(
                    f"CT {entry.vmid} is managed by Proxmox VE's HA stack: its hamigrate request to "
                    f"{entry.target_node} was accepted, but after {HA_CONVERGE_SECONDS:.0f} s it is still on "
                    f"{resource.get('node')} (hastate {resource.get('hastate') or 'unknown'})"
                )
                return BalanceOutcome(action, False, f"Migrate CT {entry.vmid} failed: {error}")
        if exit_status == "OK":
            message = f"migrated CT {entry.vmid} {entry.source_node} → {entry.target_node}" + (
                " (restart mode)" if entry.was_running else ""
            )
            message += f": {entry.reason}" if entry.reason else ""
            return BalanceOutcome(action, True, message)
        why = self._task_error(entry.upid, exit_status)
        message = f"Migrate CT {entry.vmid} failed: {why}" + (f"; {recovered}" if recovered else "")
        return BalanceOutcome(action, False, message)

    def _ha_move_pending(self, entry: InFlightOperation) -> bool:
        """For an ``hamigrate`` request (an HA-managed CT): True while the CT is not yet on its target and
        the HA manager still has time (``HA_CONVERGE_SECONDS`` from the request); raises
        :class:`PveHaNotConverging` through the outcome once that time is up."""
        assert entry.upid is not None
        upid = Upid.parse(entry.upid)
        if upid.type not in HA_REQUEST_TASKS or not entry.target_node:
            return False
        resource = ct_resource(self._client, entry.vmid)
        if resource is None or resource.get("node") == entry.target_node:
            return False
        return self._clock() - upid.starttime < HA_CONVERGE_SECONDS

    def _task_error(self, upid: str, exit_status: str) -> str:
        """The exit status with the task log's last ``ERROR:`` line when it says more (PVE's migrate
        task ends ``migration aborted``; the log says why, e.g. ``container did not stop``)."""
        try:
            tail = self._client.task_log_tail(Upid.parse(upid))
        except (PveError, ValueError):
            return exit_status
        # Migration logs carry a timestamp before the level ("2026-12-03 04:40:00 ERROR: ..."); the
        # log's last line, "TASK ERROR: <exit status>", says nothing new.
        errors = [
            line[line.index("ERROR:") :].strip()
            for line in tail
            if "ERROR:" in line and not line.startswith("TASK ERROR:")
        ]
        if errors and errors[-1] not in exit_status:
            return f"{exit_status} ({errors[-1]})"[:512]
        return exit_status

    def _look(
        self, entry: InFlightOperation, *, status: str | None = None, node: str | None = None
    ) -> tuple[bool, str] | None:
        """One look at the entry's task: None while it runs (or cannot be read now), else (ended OK, why not).
        An HA request's OK counts once the HA manager carried it out: the CT ``status``, or on ``node``."""
        assert entry.upid is not None
        upid = Upid.parse(entry.upid)
        try:
            task = self._client.task_status(upid)
            if task.get("status") != "stopped":
                return None
            result = TaskResult(upid, str(task.get("exitstatus") or ""), 0.0)
            if not result.ok:
                return False, self._task_error(entry.upid, result.exit_status)
            if ha_request_pending(self._client, upid, entry.vmid, status=status, node=node, now=self._clock()):
                return None
        except PveNotFound:
            return False, "task not found (Proxmox VE no longer knows it)"
        except PveHaNotConverging as exc:
            return False, str(exc)
        except PveError as exc:
            log.info("cannot look at the %s of CT %s yet: %s", entry.action, entry.vmid, exc)
            return None
        return True, ""

    def _start_offload(self, action: OffloadContainer) -> str:
        """Mark the CT offloaded, then start its shutdown (PVE forces the stop after offloadShutdownTimeout).
        A shutdown PVE refuses leaves the CT running, so the mark goes again."""
        config = self._config_proving_ownership(action.node, action.vmid)
        self._set_offloaded_tag(action.node, action.vmid, config, True)
        try:
            upid = self._client.shutdown_container(
                action.node, action.vmid, timeout_seconds=self._offload_timeout, force_stop=True
            )
        except PveError:
            self._unmark_if_running(action.node, action.vmid)
            raise
        self._journal.started(action.vmid, upid)
        return (
            f"offload of CT {action.vmid} on {action.node} started (shutdown, forced after "
            f"{self._offload_timeout} s): {action.reason}"
        )

    def _unmark_if_running(self, node: str, vmid: int) -> bool:
        """An offload that did not stop the CT: remove the offloaded mark (the CT proven ours again)."""
        if self._client.container_status(node, vmid).get("status") != "running":
            return False
        self._set_offloaded_tag(node, vmid, self._config_proving_ownership(node, vmid), False)
        return True

    def _follow_offload(self, entry: InFlightOperation) -> BalanceOutcome | None:
        """The shutdown ended: the CT stopped is offloaded (whatever the task said: a forced stop is fine);
        a CT still running is not, and loses the mark."""
        action = journaled_action(entry)
        ended = self._look(entry, status="stopped")
        if ended is None:
            return None
        why = ended[1]
        try:
            found = self._where(entry.vmid)
            if found is None:
                outcome = BalanceOutcome(action, False, f"Offload CT {entry.vmid} failed: the CT is gone")
            elif found[1] == "stopped":
                message = f"offloaded (stopped) CT {entry.vmid} on {found[0]}" + (
                    f": {entry.reason}" if entry.reason else ""
                )
                outcome = BalanceOutcome(action, True, message)
            else:
                unmarked = "; offloaded mark removed" if self._unmark_if_running(found[0], entry.vmid) else ""
                failure = why or f"CT {entry.vmid} is {found[1]}"
                outcome = BalanceOutcome(action, False, f"Offload CT {entry.vmid} failed: {failure}{unmarked}")
        except PveError as exc:
            log.info("the offload of CT %s ended, but its state cannot be read yet: %s", entry.vmid, exc)
            return None
        self._journal.finish(entry.vmid)
        return outcome

    def _start_restore(self, action: RestoreContainer) -> str | None:
        """A restore's first task: the stopped migration to the target when it moves, else the start. None when
        the CT turned out to run already (its mark is removed: nothing to follow)."""
        if action.moves:
            self._config_proving_ownership(action.node, action.vmid)
            upid = self._client.migrate_container(action.node, action.vmid, target=action.target, restart=False)
            self._journal.started(action.vmid, upid)
            return (
                f"restore of CT {action.vmid} started: moving it {action.node} → {action.target} (stopped), "
                f"then starting it: {action.reason}"
            )
        if self._begin_start(action.vmid, action.node) is None:
            return None
        return f"restore of CT {action.vmid} on {action.node} started: {action.reason}"

    def _begin_start(self, vmid: int, node: str) -> str | None:
        """Start an offloaded CT (proven ours now) and journal the task; None when it runs already (its mark
        removed then)."""
        config = self._config_proving_ownership(node, vmid)
        try:
            upid = self._client.start_container(node, vmid)
        except PveConflict as exc:
            if not exc.already_running:
                raise
            self._set_offloaded_tag(node, vmid, config, False)
            return None
        self._journal.started(vmid, upid)
        return upid

    def _follow_restore(self, entry: InFlightOperation) -> BalanceOutcome | None:
        """The migration ended: start the CT on its target (the entry stays, with the start's UPID). The start
        ended: the CT runs, and loses the offloaded mark."""
        assert entry.upid is not None
        target = entry.target_node or entry.source_node
        action = journaled_action(entry)
        moving = Upid.parse(entry.upid).type in MIGRATION_TASKS
        ended = self._look(entry, node=target) if moving else self._look(entry, status="running")
        if ended is None:
            return None
        ok, why = ended
        restored = BalanceOutcome(action, True, self._restored(entry.vmid, entry.source_node, target, entry.reason))
        try:
            if ok and moving:
                if self._begin_start(entry.vmid, target) is not None:
                    return None  # the start is followed next
                outcome = restored
            elif ok:
                self._set_offloaded_tag(target, entry.vmid, self._config_proving_ownership(target, entry.vmid), False)
                outcome = restored
            else:
                outcome = BalanceOutcome(action, False, f"Restore CT {entry.vmid} failed: {why}")
        except PveError as exc:
            outcome = BalanceOutcome(action, False, f"Restore CT {entry.vmid} failed: {exc}", error=exc)
        self._journal.finish(entry.vmid)
        return outcome

    @staticmethod
    def _restored(vmid: int, source: str, node: str, reason: str | None) -> str:
        moved = f" after moving it {source} → {node}" if source != node else ""
        return f"restored (started) CT {vmid} on {node}{moved}" + (f": {reason}" if reason else "")

    # -- crash repair -----------------------------------------------------------------------

    def repair(self, entries: Sequence[InFlightOperation], is_locked: Callable[[int], bool]) -> list[str]:
        """Finish or revert what a previous operator process left in flight.

        A migration still running in PVE (CT locked) is left to finish; the entry stays. Returns what
        was done, for events; entries not returned as pending are done with.
        """
        done: list[str] = []
        for entry in entries:
            if is_locked(entry.vmid):
                continue
            try:
                if entry.action == "Migrate":
                    if entry.was_running:
                        done.append(f"after restart: {self._ensure_running(entry.vmid)} (interrupted migration)")
                    continue
                found = self._where(entry.vmid)
                if found is None:
                    continue
                node, status = found
                config = self._config_proving_ownership(node, entry.vmid)
                if entry.action == "Offload":
                    if status == "running":  # never stopped: revert the mark
                        self._set_offloaded_tag(node, entry.vmid, config, False)
                        done.append(f"after restart: offload of CT {entry.vmid} reverted (it still runs)")
                    else:
                        self._set_offloaded_tag(node, entry.vmid, config, True)
                        done.append(f"after restart: offload of CT {entry.vmid} completed")
                elif entry.action == "Restore":
                    if status != "running":
                        done.append(f"after restart: {self._ensure_running(entry.vmid)} (interrupted restore)")
                    self._set_offloaded_tag(node, entry.vmid, self._client.container_config(node, entry.vmid), False)
            except PveError as exc:
                done.append(f"after restart: could not repair {entry.action} of CT {entry.vmid}: {exc}")
        return done

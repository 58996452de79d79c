"""Execute a ContainerPolicy's actions against PVE, concurrently up to the pool's bound."""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

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
from pve_operator.pve.client import PveClient
from pve_operator.pve.errors import (
    PveAuthenticationError,
    PveConflict,
    PveError,
    PveNotFound,
    PvePermissionError,
    PveUnreachable,
    is_config_lock_timeout,
)
from pve_operator.pve.ha import start_and_wait, wait_done
from pve_operator.pve.params import (
    ContainerBlueprint,
    clone_params,
    clone_settings,
    create_params,
    kept_volume_keys,
    mount_point_property,
)

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


_CLONE_LOCKS: dict[tuple[str, int], threading.Lock] = {}
_CLONE_LOCKS_GUARD = threading.Lock()


def _clone_source_lock(node: str, vmid: int) -> threading.Lock:
    """The process-wide lock of one template CT: its clones are made one after the other."""
    with _CLONE_LOCKS_GUARD:
        return _CLONE_LOCKS.setdefault((node, vmid), threading.Lock())


class PolicyExecutor:
    """Runs actions for one policy. ``limiter`` is shared by all policies of the same pool."""

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
    ) -> None:
        self._client = client
        self._identity = identity
        self._limiter = limiter
        self._max_workers = max(1, max_workers)
        self._task_timeout = task_timeout_seconds
        self._dry_run = dry_run
        self._now = now_rfc3339
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
        """Run ``actions`` (order of the result = order of ``actions``); failures don't stop others.

        ``on_outcome`` is called with each outcome as soon as its action ends (from the worker thread,
        in the caller's context), so events and progress are told while the rest still runs.
        """
        if not actions:
            return []
        if self._dry_run:
            return [Outcome(a, True, f"would {a.kind.lower()} CT {a.vmid}: {a.reason}", dry_run=True) for a in actions]

        def run(action: Action) -> Outcome:
            outcome = self._run(action, blueprint)
            if on_outcome is not None:
                try:
                    on_outcome(outcome)
                except Exception:  # reporting must never lose the outcome itself
                    log.exception("reporting the outcome of %s CT %s failed", action.kind, action.vmid)
            return outcome

        with ThreadPoolExecutor(max_workers=min(self._max_workers, len(actions)), thread_name_prefix="pve") as pool:
            # Each task runs in a copy of the caller's context (Kopf's event posting lives there).
            futures = [pool.submit(contextvars.copy_context().run, run, a) for a in actions]
            return [f.result() for f in futures]

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

    # -- one action -------------------------------------------------------------------------

    def _run(self, action: Action, blueprint: ContainerBlueprint) -> Outcome:
        with self._limiter:
            try:
                if isinstance(action, CreateContainer):
                    message = self._create(action, blueprint)
                elif isinstance(action, StartContainer):
                    settled = self._start_no_longer_needed(action)
                    if settled is not None:
                        return Outcome(action, True, settled, skipped=True)
                    message = self._start(action.node, action.vmid)
                elif isinstance(action, DestroyContainer):
                    message = self._destroy(action)
                elif isinstance(action, RecordTemplate):
                    message = self._record_template(action)
                elif isinstance(action, RestoreMarks):
                    message = self._restore_marks(action)
                elif isinstance(action, HandOverVolumes):
                    message = self._hand_over(action, blueprint)
                else:
                    message = self._restore_config(action)
            except PveError as exc:
                if is_config_lock_timeout(exc):
                    # A task (start, migrate, backup...) holds the CT's config lock: the CT is busy, not
                    # broken. Nothing changed; the next cycle plans it again if it is still needed.
                    log.info("%s CT %s waits: a task holds its config lock (%s)", action.kind, action.vmid, exc)
                    return Outcome(action, True, f"CT {action.vmid} is busy with a task: {exc}", skipped=True)
                log.warning("%s CT %s failed: %s", action.kind, action.vmid, exc)
                return Outcome(action, False, f"{action.kind} CT {action.vmid} failed: {exc}", error=exc)
            return Outcome(action, True, message)

    def _wait(self, upid: str) -> None:
        self._client.wait(upid, timeout_seconds=self._task_timeout)

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

    def _create(self, action: CreateContainer, blueprint: ContainerBlueprint) -> str:
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
        mac_seed = f"{self._identity.uid}/{action.index}"
        if blueprint.clone is not None:
            self._clone(action, blueprint, description, tags, mac_seed, omitted)
        else:
            params = create_params(
                blueprint, hostname=action.hostname, description=description, tags=tags, mac_seed=mac_seed
            )
            self._wait(self._client.create_container(action.node, action.vmid, _without(params, omitted)))
        if action.volumes_from is not None:
            return (
                f"created CT {action.vmid} ({action.hostname}) on {action.node}, stopped until CT "
                f"{action.volumes_from} hands over its kept volumes: {action.reason}"
            )
        if blueprint.start_on_create:
            self._start(action.node, action.vmid)
            return f"created and started CT {action.vmid} ({action.hostname}) on {action.node}: {action.reason}"
        return f"created CT {action.vmid} ({action.hostname}) on {action.node}: {action.reason}"

    def _clone(
        self,
        action: CreateContainer,
        blueprint: ContainerBlueprint,
        description: str,
        tags: frozenset[str],
        seed: str,
        omitted: tuple[str, ...] = (),
    ) -> None:
        # pve-container's clone_vm sets the source's `disk` lock for the whole vzclone task: a second clone
        # of the same template meanwhile fails with "CT is locked (disk)". Clones of one template therefore
        # run one at a time in this process (a linked clone takes seconds); other creations still overlap.
        assert blueprint.clone is not None
        with _clone_source_lock(blueprint.clone.node, blueprint.clone.vmid):
            self._clone_unlocked(action, blueprint, description, tags, seed, omitted)

    def _clone_unlocked(
        self,
        action: CreateContainer,
        blueprint: ContainerBlueprint,
        description: str,
        tags: frozenset[str],
        seed: str,
        omitted: tuple[str, ...],
    ) -> None:
        """Clone the template CT onto the node placement chose (another node than the template's only when
        its volumes are on shared storage), then give the clone the policy's settings and the ownership marks.
        A clone whose settings cannot be applied is removed again (it is ours: its record came with the clone
        request), so no half-made CT is counted."""
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
        self._wait(self._client.clone_container(source.node, source.vmid, body))
        settings = clone_settings(
            blueprint, hostname=action.hostname, description=description, tags=tags, mac_seed=seed
        )
        try:
            self._client.update_container_config(action.node, action.vmid, _without(settings, omitted))
        except PveError:
            self._wait(self._client.destroy_container(action.node, action.vmid, purge=True))
            raise

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

    def _start(self, node: str, vmid: int) -> str:
        # An HA-managed CT answers with an hastart request: this waits until the HA manager has started it.
        start_and_wait(self._client, node, vmid, timeout_seconds=self._task_timeout)
        return f"started CT {vmid} on {node}"

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

    def _destroy(self, action: DestroyContainer) -> str:
        node = action.node
        try:
            config = self._client.container_config(node, action.vmid)
        except PveNotFound:
            # Gone, or moved since the snapshot: look once more before calling it gone.
            moved_to = self._client.locate_container(action.vmid)
            if moved_to is None:
                return f"CT {action.vmid} was already gone"
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
        status = self._client.container_status(node, action.vmid)
        if status.get("status") == "running":
            try:
                # HA-managed: hastop only asks; destroying before the HA manager stopped it fails.
                wait_done(
                    self._client,
                    self._client.stop_container(node, action.vmid),
                    vmid=action.vmid,
                    timeout_seconds=self._task_timeout,
                    status="stopped",
                )
            except PveConflict as exc:
                if "not running" not in exc.pve_message:
                    raise
        try:
            self._wait(self._client.destroy_container(node, action.vmid, purge=True))
        except PveNotFound:
            return f"CT {action.vmid} was already gone"
        return f"stopped and destroyed CT {action.vmid} on {node}{cleared}: {action.reason}"

    def _hand_over(self, action: HandOverVolumes, blueprint: ContainerBlueprint) -> str:
        """Give the replacement (``action.vmid``) the source's kept volumes, start it, destroy the source.

        Each step looks at PVE first and is skipped when done, so a handover cut short (a crash, a failed
        task) is finished by the next cycle's. Both CTs are proven ours from their own configs before
        anything; the source is destroyed only when none of the kept volumes is left on it. A source this
        handover stopped is started again when moving its volumes fails (never left stopped)."""
        node, vmid = action.node, action.vmid
        moved: list[str] = []
        here = node if action.source_vmid is None else self._client.locate_container(vmid)  # the replacement's
        if here is None:
            raise PveNotFound(f"CT {vmid}, which was to receive CT {action.source_vmid}'s kept volumes, is gone")
        target_config = self._client.container_config(here, vmid)
        self._prove_ownership(vmid, target_config)
        if action.source_vmid is not None:
            source = action.source_vmid
            source_config = self._client.container_config(node, source)
            self._prove_ownership(source, source_config)
            to_move = [k for k in action.keys if k in source_config and k not in target_config]
            if to_move:
                if here != node:
                    # Moved since (the pool's balancing, an admin): move_volume needs both CTs on one node, and
                    # the replacement is stopped, so it follows its source (an offline migration).
                    self._wait(self._client.migrate_container(here, vmid, target=node, restart=False))
                    here = node
                self._move_volumes(node, source, vmid, to_move)
                moved = to_move
                target_config = self._client.container_config(here, vmid)
        fresh = self._settle_kept_volumes(here, vmid, target_config, blueprint, moved)
        if self._client.container_status(here, vmid).get("status") != "running":
            self._start(here, vmid)
        said = f"CT {vmid} received {', '.join(moved)} from CT {action.source_vmid}" if moved else f"CT {vmid}"
        if fresh:
            said += f" (new empty {', '.join(fresh)}: there was no volume to receive)"
        if action.source_vmid is None:
            return f"{said} started: {action.reason}"
        destroyed = self._destroy(
            DestroyContainer(
                action.source_vmid,
                node,
                False,
                f"its kept volumes were handed over to CT {vmid}",
                unless_holding=action.keys,
            )
        )
        return f"{said}, started; {destroyed}"

    def _move_volumes(self, node: str, source: int, target: int, keys: Sequence[str]) -> None:
        """Stop ``source`` if it runs and reassign each of ``keys`` to ``target`` (same key); on failure, start
        ``source`` again when this stopped it, and raise."""
        stopped_here = False
        if self._client.container_status(node, source).get("status") == "running":
            wait_done(
                self._client,
                self._client.stop_container(node, source),
                vmid=source,
                timeout_seconds=self._task_timeout,
                status="stopped",
            )
            stopped_here = True
        try:
            for key in keys:
                self._wait(self._client.move_volume(node, source, key, target_vmid=target, target_volume=key))
        except PveError:
            if stopped_here:
                try:
                    self._start(node, source)
                except PveError as exc:
                    log.warning("CT %s stopped for a volume handover could not be started again: %s", source, exc)
            raise

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

    def _restore_config(self, action: RestoreConfig) -> str:
        self._prove_ownership(action.vmid, self._client.container_config(action.node, action.vmid))
        self._client.update_container_config(action.node, action.vmid, action.changes)
        changed = ", ".join(f"{k}={v}" for k, v in action.changes.items())
        if action.restart and self._client.container_status(action.node, action.vmid).get("status") == "running":
            # Pending on a running CT until it restarts (pve-container vmconfig_apply_pending at start).
            wait_done(
                self._client,
                self._client.reboot_container(action.node, action.vmid),
                vmid=action.vmid,
                timeout_seconds=self._task_timeout,
                status="running",
            )
            return f"restored {changed} on CT {action.vmid} and restarted it to apply them: {action.reason}"
        return f"restored {changed} on CT {action.vmid}: {action.reason}"


def _without(params: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in keys}

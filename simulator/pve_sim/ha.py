"""The HA stack of PVE 9: the CRM's service state machine, placement under HA rules, fencing and
recovery of an offline node's services, and CRS auto-rebalancing.

Modelled on pve-ha-manager 5.2.0 (commit b71218f, April 2026), ``src/PVE/HA/Manager.pm``
(``manage``, ``next_state_*``, ``select_service_node``, ``load_balance``, ``queue_resource_motion``),
``src/PVE/HA/NodeStatus.pm`` (fence delay, ``fence_node``) and ``src/PVE/HA/Usage*.pm``; the
datacenter.cfg ``crs`` keys are pve-cluster's (``src/PVE/DataCenterConfig.pm`` at 9.1.6, commit
7091d92, May 2026).

What the simulator models, round by round (every ``Timing.ha_crm_round_seconds``, 10 s like the
CRM's loop, while HA resources exist and the cluster is quorate):

* **Service states** (``hastate`` in ``/cluster/resources``): ``started``, ``request_stop``,
  ``stopped``, ``fence``, ``recovery``, ``migrate``/``relocate``. The LRM's work (start, shutdown,
  relocation) runs as ordinary ``vzstart``/``vzshutdown``/``vzmigrate`` tasks of ``root@pam`` on the
  service's node. A requested state change or a ``migrate``/``relocate`` command is acted on one
  HA round (:data:`pve_sim.cluster.HA_ROUND_SECONDS`) after it is written, and again every round.
* **Placement** (``select_service_node``): node-affinity rules (strict = only those nodes;
  non-strict = those first), resource-affinity rules (negative = never on a node a partner uses,
  positive = with its partners), the scheduler's node score (``basic``: HA services per node;
  ``static``/``dynamic``: node load). A started service that its rules no longer allow where it is
  is relocated; ``failback`` moves it back to a higher-priority node that returns.
* **Fencing**: a node that leaves the cluster is ``unknown``; ``ha_fence_delay_seconds`` (60 s)
  later its services go to ``fence`` (the node too); once the dead node's agent lock expired
  (``ha_fence_seconds``, 120 s after it left) fencing is acknowledged and each service is
  recovered to the best allowed online node (``recovery`` -> config moved -> started there).
  ``disabled`` services are not recovered; without quorum nothing happens.
* **CRS auto-rebalance** (``crs: ha=static|dynamic,ha-auto-rebalance=1``): each round the node
  imbalance -- the coefficient of variation (population standard deviation / mean) of the nodes'
  load, a node's load being the mean of its CPU and memory fractions -- is compared with
  ``ha-auto-rebalance-threshold``; after ``ha-auto-rebalance-hold-duration`` consecutive rounds
  above it, the best single migration (bruteforce over every started HA service, or bundle of
  positively affine services, and every node its rules allow) is queued if it lowers the
  imbalance by at least ``ha-auto-rebalance-margin`` (relative). No new move while one runs.

Left out (docstrings say where): ``max_restart``/``max_relocate`` start-failure policies and the
``error`` state (starts do not fail in the simulator), maintenance mode, disarm/arm, the
``topsis`` method (scored like ``bruteforce``), ``ha-rebalance-on-start``, and the persistent
migration of HA groups to rules (groups stay groups and are read as ``ha-group-*`` rules).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pve_sim.ha_rules import CompiledRules, compile_rules, get_node_affinity

if TYPE_CHECKING:
    from pve_sim.cluster import SimCluster
    from pve_sim.state import ContainerState, HaResource
    from pve_sim.tasks import Task

MOTION_STATES = ("migrate", "relocate")


@dataclass
class ServiceStatus:
    """One entry of the manager status' ``service_status`` (``$ss->{$sid}``)."""

    state: str
    node: str
    uid: str = ""
    target: str | None = None
    cmd: tuple[str, str] | None = None
    task: str | None = None
    """UPID of the LRM task working on the service (start, stop or relocation)."""


@dataclass
class CrsSettings:
    """``update_crs_scheduler_mode``: datacenter.cfg ``crs`` with PVE's defaults, as fractions.

    pve-cluster 9.1.6 declares ``ha-auto-rebalance-threshold`` (default 30) and
    ``ha-auto-rebalance-margin`` (default 10) in percent (commit d8b4d02 "switch HA auto-rebalance
    thresholds to percent"); pve-ha-manager 5.2.0's Manager.pm still defaults them to the
    fractions 0.3 and 0.1, so the percentages are divided by 100 here.
    """

    scheduler: str = "basic"
    auto_rebalance: bool = False
    threshold: float = 0.3
    method: str = "bruteforce"
    hold_duration: float = 3.0
    margin: float = 0.1

    @classmethod
    def from_crs(cls, crs: dict[str, object]) -> CrsSettings:
        def number(key: str, default: float) -> float:
            value = crs.get(key)
            return default if value is None else float(str(value))

        return cls(
            scheduler=str(crs.get("ha") or "basic"),
            auto_rebalance=bool(crs.get("ha-auto-rebalance")),
            threshold=number("ha-auto-rebalance-threshold", 30.0) / 100.0,
            method=str(crs.get("ha-auto-rebalance-method") or "bruteforce"),
            hold_duration=number("ha-auto-rebalance-hold-duration", 3.0),
            margin=number("ha-auto-rebalance-margin", 10.0) / 100.0,
        )


@dataclass
class _Load:
    """A node's capacity and the CPU (cores) and memory (bytes) its guests use."""

    maxcpu: float
    maxmem: float
    cpu: float = 0.0
    mem: float = 0.0

    def value(self) -> float:
        cpu = self.cpu / self.maxcpu if self.maxcpu else 0.0
        mem = self.mem / self.maxmem if self.maxmem else 0.0
        return (cpu + mem) / 2


def imbalance(loads: Iterable[float]) -> float:
    """Coefficient of variation of the node loads (0 when the mean is 0).

    The computation lives in Rust (proxmox-resource-scheduling), which is not in the fetched
    sources; this formula reproduces every figure of pve-ha-manager's own regression tests, e.g.
    ``src/test/test-crs-dynamic-auto-rebalance2`` (1.41 -> 0.94 -> 0.35) and ``...-rebalance3``
    (0.85 -> 0.42, 0.81 -> 0.40, 0.40 -> 0.21).
    """
    values = list(loads)
    if not values:
        return 0.0
    mean = sum(values) / len(values)
    if mean <= 0:
        return 0.0
    variance = sum((v - mean) ** 2 for v in values) / len(values)
    return math.sqrt(variance) / mean


@dataclass
class HaLogLine:
    epoch: float
    level: str
    message: str


@dataclass
class HaManager:
    """The CRM master (one per simulated cluster), see the module docstring."""

    cluster: SimCluster
    services: dict[str, ServiceStatus] = field(default_factory=dict)
    node_status: dict[str, str] = field(default_factory=dict)
    log: list[HaLogLine] = field(default_factory=list)
    sustained_imbalance_round: int = 0
    _round_due: float | None = None
    _uid_counter: int = 0
    _compiled: CompiledRules | None = None
    _compiled_key: tuple[str, str, tuple[str, ...]] | None = None

    # ------------------------------------------------------------------ helpers

    def _log(self, level: str, message: str) -> None:
        self.log.append(HaLogLine(self.cluster.now(), level, message))

    def log_line(self, level: str, message: str) -> None:
        """A line in the CRM's log (``$haenv->log``), kept in :attr:`log`."""
        self._log(level, message)

    def _new_uid(self, state: str) -> str:
        self._uid_counter += 1
        return hashlib.md5(f"{state}{self._uid_counter}".encode()).hexdigest()[:22]

    @property
    def crs(self) -> CrsSettings:
        return CrsSettings.from_crs(self.cluster.access.datacenter.crs)

    def compiled_rules(self) -> CompiledRules:
        state = self.cluster.state
        groups = tuple(sorted(f"{g}={v}" for g, v in state.ha_groups.items()))
        key = (state.ha_rules_digest(), state.ha_resources_digest(), (*groups, *state.nodes))
        if self._compiled is None or key != self._compiled_key:
            self._compiled, messages = compile_rules(state)
            self._compiled_key = key
            for message in messages:
                self._log("info", message)
        return self._compiled

    def online_nodes(self) -> set[str]:
        return {name for name, node in self.cluster.state.nodes.items() if node.online}

    def _change(self, sid: str, status: ServiceStatus, new_state: str, **params: str) -> None:
        """``$change_service_state``: new state, keep ``node``, set the given parameters, new uid."""
        old_state = status.state
        status.state = new_state
        status.target = params.get("target")
        if "node" in params:
            status.node = params["node"]
        status.uid = self._new_uid(new_state)
        text = ", ".join(f"{k} = {v}" for k, v in sorted(params.items()))
        suffix = f"  ({text})" if text else ""
        self._log("info", f"service '{sid}': state changed from '{old_state}' to '{new_state}'{suffix}")

    def service_state(self, sid: str) -> str | None:
        """``hastate``: the manager's service state, else the configured requested state."""
        status = self.services.get(sid)
        if status is not None:
            return status.state
        resource = self.cluster.state.ha_resources.get(sid)
        return None if resource is None else resource.state

    # ------------------------------------------------------------------ rounds

    def arm(self) -> None:
        """Make sure a CRM round is scheduled while HA resources exist (rounds fall on multiples of
        the round length since simulator start, so runs are reproducible)."""
        if not self.cluster.state.ha_resources or self._round_due is not None:
            return
        period = self.cluster.state.timing.ha_crm_round_seconds
        if period <= 0:
            return
        start = self.cluster.clock.start_epoch
        now = self.cluster.now()
        due = start + (math.floor((now - start) / period) + 1) * period
        self._round_due = due
        self.cluster.scheduler.at(due, self._round)

    def _round(self) -> None:
        self._round_due = None
        self.manage()
        self.arm()

    def manage(self, only: set[str] | None = None) -> None:
        """One CRM round (``PVE::HA::Manager::manage``); ``only`` limits the state machine to some
        services (an HA request acted on between rounds)."""
        cluster = self.cluster
        if not cluster.is_quorate():
            return
        self._update_nodes()
        self._sync_services()
        if only is None:
            self._load_balance()
        for _ in range(10):  # PVE loops while states change ("for (;;) ... last if !$repeat")
            changed = False
            for sid in sorted(self.services):
                if only is not None and sid not in only:
                    continue
                before = self.services[sid].state
                self._next_state(sid)
                if sid in self.services and self.services[sid].state != before:
                    changed = True
            if self._fence_and_recover(only):
                changed = True
            if not changed:
                break

    def act_soon(self, sid: str | None = None) -> None:
        """A request or command was written: the manager acts one HA round later."""
        self.cluster.after_ha_round(lambda: self.manage(only=None if sid is None else {sid}))
        self.arm()

    def sync(self) -> None:
        """Bring node and service status up to the configuration, as the CRM's latest round would
        have (readers call it; without quorum the CRM does nothing)."""
        if self.cluster.is_quorate():
            self._update_nodes()
            self._sync_services()

    def _update_nodes(self) -> None:
        for name, node in self.cluster.state.nodes.items():
            previous = self.node_status.get(name, "unknown")
            if node.online:
                new = "online"
            elif previous == "fence":
                new = "fence"
            else:
                new = "unknown"
            if new != previous or name not in self.node_status:
                if name in self.node_status or new != "unknown":
                    self._log("info", f"node '{name}': state changed from '{previous}' => '{new}'")
                self.node_status[name] = new

    def _sync_services(self) -> None:
        """Add new services (``request_start``/``request_stop`` on their CT's node, settled at once
        as ``started``/``stopped``), drop removed and ``ignored`` ones."""
        state = self.cluster.state
        for sid in sorted(state.ha_resources):
            resource = state.ha_resources[sid]
            if sid in self.services or resource.state == "ignored":
                continue
            ct = state.containers.get(resource.vmid)
            if ct is None:
                continue
            self._log("info", f"adding new service '{sid}' on node '{ct.node}'")
            initial = "started" if resource.requested == "started" else "stopped"
            if initial == "stopped" and ct.running:
                initial = "request_stop"
            self.services[sid] = ServiceStatus(state=initial, node=ct.node, uid=self._new_uid(initial))
        for sid in list(self.services):
            configured = state.ha_resources.get(sid)
            if configured is None or configured.state == "ignored" or configured.vmid not in state.containers:
                reason = "ignored state requested" if configured is not None else "no config"
                self._log("info", f"removing stale service '{sid}' ({reason})")
                del self.services[sid]

    # ------------------------------------------------------------------ state machine

    def _offline_delayed(self, node: str) -> bool:
        """``node_is_offline_delayed``: gone for at least the fence delay."""
        target = self.cluster.state.nodes.get(node)
        if target is None or target.online or target.offline_since is None:
            return False
        return self.cluster.now() - target.offline_since >= self.cluster.state.timing.ha_fence_delay_seconds

    def _lrm_busy(self, status: ServiceStatus) -> bool:
        if status.task is None:
            return False
        task = self.cluster.tasks.get(status.task)
        return task is not None and task.running

    def _next_state(self, sid: str) -> None:
        state = self.cluster.state
        status = self.services[sid]
        resource = state.ha_resources[sid]
        ct = state.containers.get(resource.vmid)
        if ct is None:
            return
        requested = resource.requested
        current = status.state
        node_online = self.node_status.get(status.node) == "online"

        if current in MOTION_STATES:
            self._next_state_motion(sid, status, resource, ct)
            return
        if current in ("fence", "recovery"):
            return  # fencing and recovery are handled by _fence_and_recover
        if not node_online:
            if requested != "disabled" and self._offline_delayed(status.node):
                self._change(sid, status, "fence")
            return
        if current == "started":
            if requested in ("stopped", "disabled"):
                self._change(sid, status, "request_stop")
                self._lrm_stop(status, ct)
                return
            if status.cmd is not None:
                command, target = status.cmd
                status.cmd = None
                if self.node_status.get(target) != "online":
                    self._log("err", f"ignore service '{sid}' {command} request - node '{target}' not online")
                elif target == status.node:
                    self._log("info", f"ignore service '{sid}' {command} request - service already on node '{target}'")
                else:
                    self._log("info", f"{command} service '{sid}' to node '{target}'")
                    self._start_motion(sid, status, ct, command, target)
                return
            node = self.select_service_node(sid, resource, "none")
            if node is not None and node != status.node:
                self._log("info", f"relocate service '{sid}' to node '{node}'")
                self._start_motion(sid, status, ct, "relocate", node)
                return
            self._lrm_start(status, ct)
        elif current == "request_stop":
            if ct.running and not self._lrm_busy(status):
                self._lrm_stop(status, ct)
            if not ct.running and not self._lrm_busy(status):
                self._change(sid, status, "stopped")
        elif current == "stopped":
            if status.node != ct.node:
                self._log("info", f"fixup service '{sid}' location ({status.node} => {ct.node})")
                status.node = ct.node
            if status.cmd is not None:
                command, target = status.cmd
                status.cmd = None
                if self.node_status.get(target) != "online":
                    self._log("err", f"ignore service '{sid}' {command} request - node '{target}' not online")
                elif target == status.node:
                    self._log("info", f"ignore service '{sid}' {command} request - service already on node '{target}'")
                else:
                    self._start_motion(sid, status, ct, command, target)
                    return
            if requested == "started":
                self._change(sid, status, "started", node=status.node)
                self._lrm_start(status, ct)

    def _next_state_motion(self, sid: str, status: ServiceStatus, resource: HaResource, ct: ContainerState) -> None:
        """``next_state_migrate_relocate``: when the LRM's relocation ended, the service is
        ``started`` (or ``request_stop``) on the target, or back on its node if it failed."""
        if self._lrm_busy(status):
            return
        task = self.cluster.tasks.get(status.task) if status.task else None
        target = status.target or status.node
        new_state = "started" if resource.requested == "started" else "request_stop"
        status.task = None
        if task is not None and task.exitstatus == "OK" and ct.node == target:
            self._change(sid, status, new_state, node=target)
            if new_state == "started":
                self._lrm_start(status, ct)
        else:
            self._log("err", f"service '{sid}' - migration failed (exit code 1)")
            self._change(sid, status, new_state, node=ct.node)

    # ------------------------------------------------------------------ the LRM's work

    def _lrm_start(self, status: ServiceStatus, ct: ContainerState) -> None:
        """The LRM starts a ``started`` service that is not running (``vzstart`` as root@pam)."""
        if ct.running or ct.lock or self._lrm_busy(status) or self.cluster.flock_held(ct.vmid):
            return
        if self.node_status.get(ct.node) != "online":
            return
        status.task = self.cluster.ha_start_task(ct).upid

    def _lrm_stop(self, status: ServiceStatus, ct: ContainerState) -> None:
        """``request_stop``: the LRM shuts the CT down (``vzshutdown`` as root@pam)."""
        if not ct.running or self._lrm_busy(status) or self.cluster.flock_held(ct.vmid):
            return
        status.task = self.cluster.ha_stop_task(ct).upid

    def _start_motion(self, sid: str, status: ServiceStatus, ct: ContainerState, command: str, target: str) -> None:
        """State ``migrate``/``relocate`` and the LRM's relocation (a CT always moves in restart
        mode: pve-ha-manager ``src/PVE/HA/Resources/PVECT.pm`` ``migrate``)."""
        self._change(sid, status, command, node=status.node, target=target)
        task: Task = self.cluster.ha_relocate_task(ct, target)
        status.task = task.upid

    # ------------------------------------------------------------------ fencing and recovery

    def _fence_and_recover(self, only: set[str] | None) -> bool:
        """The "handle fencing" part of ``manage`` plus ``next_state_recovery``."""
        changed = False
        timing = self.cluster.state.timing
        now = self.cluster.now()
        fenced: dict[str, bool] = {}
        for sid in sorted(self.services):
            status = self.services[sid]
            if status.state != "fence" or (only is not None and sid not in only):
                continue
            node = status.node
            if node not in fenced:
                target = self.cluster.state.nodes.get(node)
                if self.node_status.get(node) != "fence":
                    self.node_status[node] = "fence"
                    self._log("info", f"node '{node}': state changed from 'unknown' => 'fence'")
                # get_ha_agent_lock succeeds once the dead node's lock expired, or at once when the
                # node is back (its LRM sees it must be fenced and releases the lock).
                if target is None or target.online or target.offline_since is None:
                    acknowledged = True
                else:
                    acknowledged = now - target.offline_since >= timing.ha_fence_seconds
                if acknowledged:
                    self._log("info", f"fencing: acknowledged - got agent lock for node '{node}'")
                    self.node_status[node] = "online" if target is not None and target.online else "unknown"
                fenced[node] = acknowledged
            if fenced[node]:
                self._change(sid, status, "recovery")
                changed = True
        for sid in sorted(self.services):
            status = self.services[sid]
            if status.state == "recovery" and (only is None or sid in only) and self._recover(sid, status):
                changed = True
        return changed

    def _recover(self, sid: str, status: ServiceStatus) -> bool:
        state = self.cluster.state
        resource = state.ha_resources[sid]
        ct = state.containers.get(resource.vmid)
        if ct is None:
            return False
        fenced_node = status.node
        node = self.select_service_node(sid, resource, "best-score")
        if node is None:
            self._log(
                "err", f"recovering service '{sid}' from fenced node '{fenced_node}' failed, no recovery node found"
            )
            if resource.requested == "disabled":
                self._change(sid, status, "stopped")
                return True
            return False
        if node == fenced_node:
            self._log("info", f"recover service '{sid}' to previous failed and fenced node '{fenced_node}' again")
        else:
            self._log("info", f"recover service '{sid}' from fenced node '{fenced_node}' to node '{node}'")
        self.cluster.ha_steal_service(ct, node)
        new_state = "started" if resource.requested == "started" else "request_stop"
        self._change(sid, status, new_state, node=node)
        if new_state == "started":
            self._lrm_start(status, ct)
        return True

    # ------------------------------------------------------------------ placement

    def _used_nodes(self, status: ServiceStatus, online: set[str]) -> tuple[str | None, str | None]:
        """``PVE::HA::Usage::get_used_service_nodes``."""
        if status.state in ("stopped", "request_start"):
            return None, None
        current = status.node if status.node in online else None
        target = status.target if status.state in MOTION_STATES and status.target in online else None
        return current, target

    def resource_affinity(self, sid: str, online: set[str]) -> tuple[dict[str, int], set[str]]:
        """``get_resource_affinity``: nodes where positive partners are (with counts), nodes where
        negative partners are or go."""
        compiled = self.compiled_rules()
        together: dict[str, int] = {}
        separate: set[str] = set()
        for csid in compiled.positive.get(sid, ()):
            status = self.services.get(csid)
            if status is None:
                continue
            current, target = self._used_nodes(status, online)
            node = target or current
            if node is not None:
                together[node] = together.get(node, 0) + 1
        for csid in compiled.negative.get(sid, ()):
            status = self.services.get(csid)
            if status is None:
                continue
            current, target = self._used_nodes(status, online)
            separate.update(n for n in (current, target) if n is not None)
        return together, separate

    def select_service_node(self, sid: str, resource: HaResource, preference: str) -> str | None:
        """``select_service_node`` for ``none`` (stay if allowed) and ``best-score``."""
        status = self.services.get(sid)
        current = status.node if status is not None else None
        online = {n for n, s in self.node_status.items() if s == "online"}
        allowed, preferred = get_node_affinity(self.compiled_rules(), sid, online)
        if not preferred:
            return None
        together, separate = self.resource_affinity(sid, online)
        if (
            preference == "none"
            and not resource.effective_failback
            and current in allowed
            and (together.get(current or "") or current not in separate)
        ):
            return current
        preferred -= separate
        together = {node: count for node, count in together.items() if node in preferred}
        if together:
            majority = sorted(sorted(together), key=lambda n: -together[n])[0]
            preferred &= {majority}
        if preference == "none" and current in preferred:
            return current
        scores = self.node_scores(sid)
        ordered = sorted(preferred, key=lambda n: (scores.get(n, 0.0), n))
        return ordered[0] if ordered else None

    def node_scores(self, sid: str) -> dict[str, float]:
        """``score_nodes_to_start_service`` (lower is better): ``basic`` counts the HA services a
        node has (as current or target node); ``static``/``dynamic`` use the node's load with the
        service added."""
        online = {n for n, s in self.node_status.items() if s == "online"}
        if self.crs.scheduler == "basic":
            counts = dict.fromkeys(online, 0.0)
            for other_sid, status in self.services.items():
                if other_sid == sid:
                    continue
                for node in self._used_nodes(status, online):
                    if node is not None:
                        counts[node] += 1
            return counts
        loads = self._node_loads(exclude=sid)
        usage = self._service_usage(sid)
        scores: dict[str, float] = {}
        for node, load in loads.items():
            trial = _Load(load.maxcpu, load.maxmem, load.cpu + usage[0], load.mem + usage[1])
            scores[node] = trial.value()
        return scores

    # ------------------------------------------------------------------ usage and rebalancing

    def _service_usage(self, sid: str) -> tuple[float, float]:
        resource = self.cluster.state.ha_resources.get(sid)
        if resource is None:
            return 0.0, 0.0
        return self._ct_usage(resource.vmid)

    def _ct_usage(self, vmid: int) -> tuple[float, float]:
        """(CPU cores, memory bytes) a CT counts with: its configured ``cores``/``memory`` for the
        ``static`` scheduler, its usage as pvestatd last broadcast it for ``dynamic``."""
        cluster = self.cluster
        ct = cluster.state.containers.get(vmid)
        if ct is None:
            return 0.0, 0.0
        if self.crs.scheduler == "dynamic":
            usage = cluster.stats_view().cts.get(vmid)
            if usage is None or not usage.running:
                return 0.0, 0.0
            return usage.cpu_fraction * usage.cpus, float(usage.mem_bytes)
        node = cluster.state.nodes.get(ct.node)
        return ct.cpus(node.cores if node is not None else 1), float(ct.maxmem_bytes)

    def _node_loads(self, exclude: str | None = None) -> dict[str, _Load]:
        """``recompute_online_node_usage``: HA services where ``get_used_service_nodes`` puts them,
        plus the running non-HA CTs (pve-ha-manager 5.1.2: "include running non-HA resources")."""
        state = self.cluster.state
        online = {n for n, s in self.node_status.items() if s == "online"}
        loads = {
            name: _Load(float(node.cores), float(node.memory_bytes))
            for name, node in state.nodes.items()
            if name in online
        }
        ha_vmids = set()
        for sid, status in self.services.items():
            resource = state.ha_resources.get(sid)
            if resource is None:
                continue
            ha_vmids.add(resource.vmid)
            if sid == exclude:
                continue
            cpu, mem = self._ct_usage(resource.vmid)
            for node in {n for n in self._used_nodes(status, online) if n is not None}:
                loads[node].cpu += cpu
                loads[node].mem += mem
        for ct in state.containers.values():
            if ct.vmid in ha_vmids or not ct.running or ct.node not in loads:
                continue
            cpu, mem = self._ct_usage(ct.vmid)
            loads[ct.node].cpu += cpu
            loads[ct.node].mem += mem
        return loads

    def node_imbalance(self) -> float:
        return imbalance(load.value() for load in self._node_loads().values())

    def _motion_pending(self) -> bool:
        """``any_resource_motion_queued_or_running``."""
        return any(
            s.state in MOTION_STATES or (s.cmd is not None and s.cmd[0] in MOTION_STATES)
            for s in self.services.values()
        )

    def _bundles(self) -> dict[str, list[str]]:
        """``get_active_stationary_resource_bundles``: started services with their started positive
        partners, all on one node, keyed by the alphabetically first."""
        compiled = self.compiled_rules()
        bundles: dict[str, list[str]] = {}
        for sid in sorted(self.services):
            status = self.services[sid]
            if status.state != "started":
                continue
            members = [sid]
            nodes = {status.node}
            moving = False
            for csid in compiled.positive.get(sid, ()):
                other = self.services.get(csid)
                if other is None:
                    continue
                if other.state in MOTION_STATES:
                    moving = True
                    break
                if other.state != "started":
                    continue
                nodes.add(other.node)
                members.append(csid)
            if moving or len(nodes) > 1:
                continue
            members.sort()
            bundles[members[0]] = members
        return bundles

    def _load_balance(self) -> None:
        """``load_balance`` (see the module docstring)."""
        crs = self.crs
        if not crs.auto_rebalance or crs.scheduler not in ("static", "dynamic"):
            return
        if self._motion_pending():
            return
        loads = self._node_loads()
        current = imbalance(load.value() for load in loads.values())
        if current <= crs.threshold:
            self.sustained_imbalance_round = 0
            return
        self.sustained_imbalance_round += 1
        if self.sustained_imbalance_round < crs.hold_duration:
            return
        self.sustained_imbalance_round = 0
        online = set(loads)
        compiled = self.compiled_rules()
        best: tuple[float, str, str, str, list[str]] | None = None
        for leader, members in sorted(self._bundles().items()):
            source = self.services[leader].node
            _allowed, targets = get_node_affinity(compiled, leader, online)
            _together, separate = self.resource_affinity(leader, online)
            targets -= separate
            targets.discard(source)
            usage = [self._service_usage(sid) for sid in members]
            cpu = sum(u[0] for u in usage)
            mem = sum(u[1] for u in usage)
            for target in sorted(targets):
                trial = {n: _Load(v.maxcpu, v.maxmem, v.cpu, v.mem) for n, v in loads.items()}
                trial[source].cpu -= cpu
                trial[source].mem -= mem
                trial[target].cpu += cpu
                trial[target].mem += mem
                value = imbalance(load.value() for load in trial.values())
                if best is None or value < best[0]:
                    best = (value, leader, source, target, members)
        if best is None:
            return
        target_imbalance, sid, _source, target, _members = best
        if (current - target_imbalance) / current < crs.margin:
            return
        resource = self.cluster.state.ha_resources[sid]
        task = "migrate" if resource.type == "vm" else "relocate"
        self._log(
            "info",
            f"auto rebalance - {task} {sid} to {target} "
            f"(expected change for imbalance from {current:.2f} to {target_imbalance:.2f})",
        )
        self.queue_motion(task, sid, target)

    # ------------------------------------------------------------------ commands

    def queue_motion(self, task: str, sid: str, target: str) -> bool:
        """``queue_resource_motion``: refused when a negatively affine service is (or goes) on the
        target; positively affine services get the same command."""
        status = self.services.get(sid)
        if status is None:
            self._log("err", f"crm command error - no such service: {task} {sid} {target}")
            return False
        cmd = f"{task} {sid} {target}"
        compiled = self.compiled_rules()
        for csid in sorted(compiled.negative.get(sid, ())):
            other = self.services.get(csid)
            if other is None:
                continue
            if other.node and other.node != target:
                continue
            if other.target and other.target != target:
                continue
            self._log(
                "err",
                f"crm command '{cmd}' error - service '{csid}' on node '{target}'"
                f" in negative affinity with service '{sid}'",
            )
            return False
        self._log("info", f"got crm command: {cmd}")
        status.cmd = (task, target)
        for csid in sorted(compiled.positive.get(sid, ())):
            other = self.services.get(csid)
            if other is None or other.node == target or other.target == target:
                continue
            self._log(
                "info",
                f"crm command '{cmd}' - {task} service '{csid}' to node '{target}'"
                f" (service '{csid}' in positive affinity with service '{sid}')",
            )
            other.cmd = (task, target)
        return True

    def command(self, task: str, sid: str, target: str) -> None:
        """A ``migrate``/``relocate`` line in ``ha/crm_commands``, read at the next HA round
        (``update_crm_commands``)."""

        def run() -> None:
            if not self.cluster.is_quorate():
                return
            self._update_nodes()
            self._sync_services()
            status = self.services.get(sid)
            if status is None:
                self._log("err", f"crm command error - no such service: {task} {sid} {target}")
            elif self.node_status.get(target) != "online":
                self._log("err", f"crm command error - node not online: {task} {sid} {target}")
            elif target == status.node:
                self._log("info", f"ignore crm command - service already on target node: {task} {sid} {target}")
            elif self.queue_motion(task, sid, target):
                self.manage(only={sid, *self.compiled_rules().positive.get(sid, set())})

        self.cluster.after_ha_round(run)
        self.arm()

    def motion_info(self, sid: str) -> tuple[list[str], dict[str, list[dict[str, str]]]]:
        """``get_resource_motion_info``: positively affine services that move along, and per online
        node the negatively affine services blocking it."""
        self._sync_services()
        compiled = self.compiled_rules()
        comigrated = [csid for csid in sorted(compiled.positive.get(sid, ())) if csid in self.services]
        blocking: dict[str, list[dict[str, str]]] = {}
        for node in sorted(self.online_nodes()):
            for csid in sorted(compiled.negative.get(sid, ())):
                other = self.services.get(csid)
                if other is None:
                    continue
                if other.node and other.node != node:
                    continue
                if other.target and other.target != node:
                    continue
                blocking.setdefault(node, []).append({"sid": csid, "cause": "resource-affinity"})
        return comigrated, blocking

    def forget(self, sid: str) -> None:
        self.services.pop(sid, None)

    def describe(self) -> dict[str, object]:
        """For ``state_dump``: node and service status and the CRM's log."""
        return {
            "node_status": dict(self.node_status),
            "service_status": {
                sid: {"state": s.state, "node": s.node, **({"target": s.target} if s.target else {})}
                for sid, s in sorted(self.services.items())
            },
            "log": [f"{line.epoch:.0f} {line.level} {line.message}" for line in self.log],
        }

"""The simulated cluster: one object that owns the state, the rules and the clock.

``SimCluster`` is the facade the HTTP layer (``protocol.py``), the admin endpoint and in-process
tests talk to. A request becomes ``handle(method, template, subject, params)``: under one lock the
cluster first lets simulated time catch up (task steps and scenario events due by ``clock.now()``,
in time order), then checks what PVE checks before a handler runs (the endpoint's declared
permission, then the proxy hop to the node in the URL: unknown node -> 500, offline node -> 595),
then runs the endpoint handler from :mod:`pve_sim.handlers`.

The pieces it wires together:

* :mod:`pve_sim.state` -- nodes, storages, templates, CT configs, HA resources;
* :mod:`pve_sim.access` -- users, tokens, roles, ACLs, pools and permission checks;
* :mod:`pve_sim.tasks` -- UPIDs, task logs and the event heap that moves time;
* :mod:`pve_sim.history` -- placement and usage over time (live, lagged and RRD views);
* :mod:`pve_sim.faults` -- injected request and task failures.

Control methods (``set_container_usage``, ``set_node_online``, ``fail_tasks``, ``advance_clock``, …)
are what scenario events, the admin endpoint and tests use to steer the simulation.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from pve_sim.access import AccessControl, DatacenterOptions, Pool
from pve_sim.clock import SimClock
from pve_sim.common import Subject
from pve_sim.errors import PveApiError, internal, not_implemented
from pve_sim.faults import FaultInjector
from pve_sim.ha import HaManager
from pve_sim.history import GIB, MIB, CtUsage, NodeCapacity, NodeUsage, Placement, Profile, UsageModel
from pve_sim.load import BaseProfile, MetricProfiles, parse_profile
from pve_sim.pressure import ct_pressure, node_pressure
from pve_sim.scenario import (
    ContainerSpec,
    FailTasksEvent,
    NodeOfflineEvent,
    NodeOnlineEvent,
    Scenario,
    ScenarioEvent,
    SetContainerUsageEvent,
    SetNodeLoadEvent,
    UsageSection,
)
from pve_sim.state import (
    ClusterState,
    ContainerState,
    HaResource,
    HaRule,
    NodeState,
    StorageState,
    TemplateVolume,
    Timing,
    format_number,
    format_size,
    print_property_string,
)
from pve_sim.tasks import Scheduler, Task, TaskError, TaskManager, Worker

FLOCK_TIMEOUT_SECONDS = 10.0
"""``lock_config``'s flock timeout: pve-guest-common ``AbstractConfig.pm`` ``lock_config`` calls
``lock_config_full($vmid, 10, ...)``; pve-common ``Tools.pm`` ``lock_file_full`` gives up with
``can't lock file '<file>' - got timeout`` (the ``die "got timeout\\n"`` of ``run_with_timeout``)."""

STATS_EXPIRE_SECONDS = 300.0
"""How long pmxcfs keeps a node's last broadcast status/RRD data once no update arrives: pve-cluster
``src/pmxcfs/status.c`` ``rrd_entry_is_old`` ("remove everything older than 5 minutes", ``diff > expire``
with ``expire = 60 * 5``), applied on every ``cfs_rrd_dump``."""

_FROZEN_CLOCK_FLOCK_WAIT_REAL_SECONDS = 30.0
"""A synchronous call waiting for a config flock while the simulated clock does not move (frozen) gives
up after this much real time, so a forgotten frozen clock cannot hang an HTTP request forever."""


def flock_timeout_message(vmid: int) -> str:
    """pve-common ``Tools.pm`` ``lock_file_full``: ``$@ = "can't lock file '$filename' - $@"`` with the
    lock file of pve-container ``src/PVE/LXC/Config.pm`` ``config_file_lock``."""
    return f"can't lock file '/run/lock/lxc/pve-config-{vmid}.lock' - got timeout"


class FlockBusy(Exception):
    """Raised by :meth:`SimCluster.sync_flock` in a synchronous handler: a task holds the CT's config
    flock. :meth:`SimCluster.handle` waits (outside the cluster lock) and runs the handler again."""

    def __init__(self, vmid: int) -> None:
        super().__init__(f"config flock of CT {vmid} is held")
        self.vmid = vmid


HA_ROUND_SECONDS = 1.0
"""Delay between an HA request task and the HA stack acting on it (the CRM/LRM loop)."""


@dataclass(frozen=True)
class Request:
    """One API call as a handler sees it: who calls, and the validated, typed parameters."""

    subject: Subject
    params: Mapping[str, object]

    @property
    def authid(self) -> str:
        """The PVE auth id: ``user@realm`` or ``user@realm!token``."""
        return self.subject.upid_user

    @property
    def is_root(self) -> bool:
        return self.subject.is_root

    def get(self, name: str, default: object = None) -> object:
        return self.params.get(name, default)

    def text(self, name: str) -> str:
        """A required string parameter."""
        return str(self.params[name])

    def opt_text(self, name: str) -> str | None:
        value = self.params.get(name)
        return None if value is None else str(value)

    def integer(self, name: str) -> int:
        """A required integer parameter."""
        value = self.params[name]
        assert isinstance(value, int | float | str)
        return int(value)

    def opt_integer(self, name: str) -> int | None:
        value = self.params.get(name)
        if value is None:
            return None
        assert isinstance(value, int | float | str)
        return int(value)

    def flag(self, name: str) -> bool:
        """A boolean parameter (absent = false)."""
        return bool(self.params.get(name))

    @property
    def node(self) -> str:
        return str(self.params["node"])

    @property
    def vmid(self) -> int:
        return self.integer("vmid")


@dataclass(frozen=True)
class StatsView:
    """What pvestatd last broadcast: usage of every CT and node at ``epoch``."""

    epoch: float
    cts: Mapping[int, CtUsage]
    nodes: Mapping[str, NodeUsage]


class SimCluster:
    """A simulated Proxmox VE cluster (see the module docstring)."""

    clock: SimClock
    faults: FaultInjector
    name: str

    def __init__(
        self,
        state: ClusterState,
        access: AccessControl,
        clock: SimClock,
        *,
        stats_lag_seconds: float = 10.0,
        usage_rules: UsageSection | None = None,
        faults: FaultInjector | None = None,
        stats_expire_seconds: float = STATS_EXPIRE_SECONDS,
    ) -> None:
        self.state = state
        self.access = access
        self.clock = clock
        self.name = state.name
        self.faults = faults or FaultInjector()
        self.stats_lag_seconds = stats_lag_seconds
        self.stats_expire_seconds = stats_expire_seconds
        """How long a node that left the cluster keeps its CTs' last status in /cluster/resources."""
        self.usage_rules = usage_rules or UsageSection()
        self.usage = UsageModel(clock.start_epoch)
        self.scheduler = Scheduler(clock.now)
        self.tasks = TaskManager(
            self.scheduler,
            instant=lambda: self.clock.instant_tasks,
            node_boot_epoch=self._node_boot_epoch,
            on_internal_error=self._record_internal_error,
        )
        self.internal_errors: list[str] = []
        self._lock = threading.RLock()
        self._flocks: dict[int, str] = {}
        self._mutations = 0
        self._stats_cache: StatsView | None = None
        self._stats_cache_key: tuple[float, int, tuple[str, ...]] | None = None
        self._ct_pid_counter = 0x3A000
        self._mac_counter = 0
        self.ha = HaManager(self)
        """The HA stack (CRM + LRMs): :mod:`pve_sim.ha`."""

    # ================================================================== construction

    @classmethod
    def from_scenario(
        cls, scenario: Scenario, *, time_scale: float | None = None, start_epoch: float | None = None
    ) -> SimCluster:
        """Build the cluster a scenario describes (nodes, storages, users, CTs, events, ...)."""
        if start_epoch is None and scenario.cluster.start_epoch is not None:
            start_epoch = float(scenario.cluster.start_epoch)
        clock = SimClock(1.0 if time_scale is None else time_scale, start_epoch=start_epoch)
        now = clock.start_epoch
        timing = scenario.timing
        state = ClusterState(
            name=scenario.cluster.name,
            pve_version=scenario.cluster.pve_version,
            repoid=hashlib.sha1(f"pve-manager {scenario.cluster.pve_version}".encode()).hexdigest()[:16],
            timing=Timing(
                create_seconds=timing.create_seconds,
                start_seconds=timing.start_seconds,
                stop_seconds=timing.stop_seconds,
                shutdown_seconds=timing.shutdown_seconds,
                reboot_seconds=timing.reboot_seconds,
                destroy_seconds=timing.destroy_seconds,
                migrate_base_seconds=timing.migrate_base_seconds,
                migrate_mib_per_second=timing.migrate_mib_per_second,
                template_seconds=timing.template_seconds,
                clone_seconds=timing.clone_seconds,
                clone_mib_per_second=timing.clone_mib_per_second,
                ha_crm_round_seconds=timing.ha_crm_round_seconds,
                ha_fence_delay_seconds=timing.ha_fence_delay_seconds,
                ha_fence_seconds=timing.ha_fence_seconds,
            ),
        )
        access = AccessControl()
        access.datacenter = DatacenterOptions.from_spec(scenario.cluster.options)
        cluster = cls(
            state,
            access,
            clock,
            stats_lag_seconds=scenario.cluster.stats_lag_seconds,
            usage_rules=scenario.usage,
            # A scenario field the scenario model may not declare (yet): the PVE default otherwise.
            stats_expire_seconds=scenario.cluster.stats_expire_seconds,
        )
        for index, spec in enumerate(scenario.nodes):
            node = NodeState(
                name=spec.name,
                nodeid=index + 1,
                ip=f"10.10.{index // 250}.{index % 250 + 11}",
                cores=spec.cores,
                memory_bytes=int(spec.memory_gib * GIB),
                rootfs_bytes=int(spec.rootfs_gib * GIB),
                swap_bytes=int(spec.swap_gib * GIB),
                online=spec.online,
                # Nodes booted a few days before the simulation; each at a slightly different time.
                boot_epoch=now - 3 * 86400 - 977 * index,
            )
            if spec.cpu_model:
                node.cpu_model = spec.cpu_model
            state.nodes[node.name] = node
            cluster.usage.add_node(
                node.name,
                NodeCapacity(node.cores, node.memory_bytes, node.rootfs_bytes),
                _profiles(spec.base_load),
                spec.online,
                now,
            )
        for storage_spec in scenario.storages:
            state.storages[storage_spec.name] = StorageState(
                sid=storage_spec.name,
                type=storage_spec.type,
                content=frozenset(storage_spec.content),
                shared=storage_spec.shared,
                capacity_bytes=int(storage_spec.capacity_gib * GIB),
                base_used_bytes=int(storage_spec.used_gib * GIB),
                enabled=storage_spec.enabled,
                nodes=frozenset(storage_spec.nodes) if storage_spec.nodes is not None else None,
            )
        for template in scenario.templates:
            state.templates[template.volid] = TemplateVolume(
                volid=template.volid,
                storage=template.storage,
                ostype=template.ostype,
                size_bytes=int(template.size_mib * MIB),
            )
        for role in scenario.roles:
            access.add_role(role.id, role.privileges)
        for group in scenario.groups:
            access.add_group(group.groupid)
        for user in scenario.users:
            access.add_user(user.userid, user.password, enabled=user.enabled, expire=user.expire, comment=user.comment)
            for groupid in user.groups:
                access.add_group(groupid, [user.userid])
            for token in user.tokens:
                access.add_token(
                    user.userid,
                    token.id,
                    token.secret,
                    privsep=token.privsep,
                    expire=token.expire,
                    comment=token.comment,
                )
        for pool in scenario.pools:
            access.pools.setdefault(pool.poolid, Pool(poolid=pool.poolid, comment=pool.comment or None))
        for entry in scenario.acl:
            access.add_acl(
                entry.path,
                entry.role,
                user=entry.user,
                token=entry.token,
                group=entry.group,
                propagate=entry.propagate,
            )
        for ct_spec in scenario.containers:
            cluster._add_scenario_container(ct_spec)
        for resource in scenario.ha.resources:
            sid = f"ct:{resource.vmid}"
            state.ha_resources[sid] = HaResource(
                sid=sid,
                state=resource.state,
                group=resource.group,
                max_restart=resource.max_restart,
                max_relocate=resource.max_relocate,
                failback=resource.failback,
                comment=resource.comment or None,
            )
        for group_spec in scenario.ha.groups:
            state.ha_groups[group_spec.group] = (tuple(group_spec.nodes), group_spec.restricted)
        for order, rule_spec in enumerate(scenario.ha.rules, start=1):
            state.ha_rules[rule_spec.rule] = HaRule(
                rule=rule_spec.rule,
                type=rule_spec.type,
                resources={f"ct:{sid.removeprefix('ct:')}" for sid in rule_spec.resources},
                order=order,
                nodes=dict(_node_priority(entry) for entry in rule_spec.nodes),
                strict=rule_spec.strict if rule_spec.type == "node-affinity" else None,
                affinity=rule_spec.affinity,
                disable=True if rule_spec.disable else None,
                comment=rule_spec.comment or None,
            )
        # The cluster has been running: the CRM already knows the nodes and services.
        cluster.ha.sync()
        cluster.ha.arm()
        for event in scenario.timeline():
            cluster.scheduler.at(now + event.at_seconds, _event_action(cluster, event))
        return cluster

    def _add_scenario_container(self, spec: ContainerSpec) -> None:
        """A CT the scenario declares: its config as pve-container would have written it."""
        now = self.clock.start_epoch
        node = self.state.nodes[spec.node]
        storage = self.state.storages[spec.rootfs.storage]
        rootfs_name = storage.volume_name(spec.vmid, 0)
        if spec.template:
            rootfs_name = storage.base_volume_name(rootfs_name)  # as POST .../template leaves it
        config: dict[str, str | int] = {
            "arch": "amd64",
            "hostname": spec.hostname or f"CT{spec.vmid}",
            "memory": spec.memory_mib,
            "swap": spec.swap_mib,
            "ostype": spec.ostype,
            "rootfs": print_property_string(
                {
                    "volume": f"{storage.sid}:{rootfs_name}",
                    "size": format_size(int(spec.rootfs.size_gib * GIB)),
                },
                "rootfs",
            ),
        }
        if spec.cores is not None:
            config["cores"] = spec.cores
        if spec.cpulimit:
            config["cpulimit"] = format_number(spec.cpulimit)
        for index, net in enumerate(spec.net):
            data = {"name": net.name, "bridge": net.bridge, "type": "veth"}
            data["hwaddr"] = net.hwaddr.upper() if net.hwaddr else self.new_mac_address()
            for key in ("ip", "gw", "ip6", "gw6"):
                value = getattr(net, key)
                if value is not None:
                    data[key] = value
            if net.tag is not None:
                data["tag"] = str(net.tag)
            if net.firewall:
                data["firewall"] = "1"
            config[f"net{index}"] = print_property_string(data, "net")
        if spec.unprivileged:
            config["unprivileged"] = 1
        if spec.onboot:
            config["onboot"] = 1
        if spec.tags:
            config["tags"] = ";".join(sorted({t.lower() for t in spec.tags}))
        if spec.description:
            config["description"] = spec.description
        if spec.lock:
            config["lock"] = spec.lock
        if spec.template:
            config["template"] = 1
        created = now + (spec.created_at_seconds or 0.0)
        ct = ContainerState(vmid=spec.vmid, node=node.name, config=config, created_epoch=min(created, now))
        ct.ignores_shutdown = spec.ignores_shutdown
        self.state.containers[spec.vmid] = ct
        running = spec.status == "running" and not spec.template and node.online
        if running:
            ct.running = True
            ct.started_epoch = min(created, now) if spec.created_at_seconds is not None else now - 3600
            ct.last_started_epoch = ct.started_epoch
            ct.pid = self._new_ct_pid()
        if spec.pool:
            self.access.add_vm_to_pool(spec.vmid, spec.pool)
        profiles = (
            _profiles(spec.usage)
            if spec.usage is not None
            else _profiles(self.usage_rules.profiles_for(str(config["hostname"]), spec.tags, node.name))
        )
        self.usage.add_ct(spec.vmid, self.placement(ct, now), profiles)

    # ================================================================== request entry point

    def handle(self, method: str, template: str, subject: Subject, params: dict[str, object]) -> object:
        """Answer one API call (see the module docstring). Raises :class:`PveApiError`."""
        from pve_sim.handlers import ROUTES

        route = ROUTES.get((method, template))
        if route is None:
            raise not_implemented(method, template)
        deadline: float | None = None
        last_now: float | None = None
        stuck_since_real = time.monotonic()
        while True:
            with self._lock, self._at_now():
                request = Request(subject, params)
                route.check_permission(self, request)
                if route.proxy:
                    self.proxy_check(str(params["node"]))
                try:
                    return route.handler(self, request)
                except FlockBusy as busy:
                    # lock_config in the API daemon: flock() blocks, run_with_timeout gives up after 10 s.
                    now = self.now()
                    if deadline is None:
                        deadline = now + FLOCK_TIMEOUT_SECONDS
                    if now != last_now:
                        last_now, stuck_since_real = now, time.monotonic()
                    stuck = time.monotonic() - stuck_since_real >= _FROZEN_CLOCK_FLOCK_WAIT_REAL_SECONDS
                    if now >= deadline or self.clock.instant_tasks or stuck:
                        raise internal(flock_timeout_message(busy.vmid)) from None
                    remaining_real = self.clock.real_seconds_for(deadline - now)
                    pause = 0.02 if self.clock.frozen else min(max(remaining_real, 0.001), 0.02)
            time.sleep(pause)

    def preflight(self, method: str, template: str, subject: Subject, params: Mapping[str, object]) -> None:
        """What PVE checks *before* validating parameters: the declared permission and the proxy hop.

        The HTTP layer may call this with the raw (unvalidated, string) parameters before it runs
        the schema validator, so a 403/500/595 wins over a 400 exactly as on a real node.
        ``handle`` repeats these checks, so calling this is optional.
        """
        from pve_sim.handlers import ROUTES

        route = ROUTES.get((method, template))
        if route is None:
            return
        with self._lock, self._at_now():
            flat = {key: (value[0] if isinstance(value, list) and value else value) for key, value in params.items()}
            request = Request(subject, flat)
            route.check_permission(self, request)
            if route.proxy and "node" in flat:
                self.proxy_check(str(flat["node"]))

    @contextmanager
    def _at_now(self) -> Iterator[None]:
        """Process everything due, and make ``now()`` one fixed instant for the rest of the call."""
        self.scheduler.run_due(self.clock.now())
        try:
            yield
        finally:
            self.scheduler.release()

    def proxy_check(self, node: str) -> None:
        """pveproxy forwarding a ``proxyto => 'node'`` call: unknown node -> 500, offline -> 595."""
        target = self.state.nodes.get(node)
        if target is None:
            raise internal(
                f"hostname lookup '{node}' failed - failed to get address info for: {node}: Name or service not known"
            )
        if not target.online:
            raise PveApiError(595, "No route to host", empty_body=True)

    # ================================================================== time and tasks

    def now(self) -> float:
        """Simulated epoch seconds of the instant being processed."""
        return self.scheduler.now()

    def elapsed(self) -> float:
        return self.now() - self.clock.start_epoch

    def _node_boot_epoch(self, node: str) -> float:
        found = self.state.nodes.get(node)
        return found.boot_epoch if found is not None else self.clock.start_epoch

    def _record_internal_error(self, task: Task, error: BaseException) -> None:
        self.internal_errors.append(f"{task.upid}: {type(error).__name__}: {error}")

    def start_task(self, node: str, task_type: str, task_id: str, user: str, body: Callable[[Task], Worker]) -> Task:
        """``fork_worker``: the UPID is returned to the caller, the worker runs on the heap."""
        return self.tasks.start(node, task_type, task_id, user, body)

    def after_ha_round(self, action: Callable[[], None]) -> None:
        """Run ``action`` when the HA manager next acts on a request: a simulated second later, or
        right away with instant tasks (a manual clock would otherwise leave HA requests pending)."""
        if self.clock.instant_tasks:
            action()
        else:
            self.scheduler.at(self.now() + HA_ROUND_SECONDS, action)

    # ================================================================== the HA stack's hands

    def flock_held(self, vmid: int) -> bool:
        """A running task holds the CT's config flock."""
        holder_upid = self._flocks.get(vmid)
        holder = self.tasks.get(holder_upid) if holder_upid is not None else None
        return holder is not None and holder.running

    def ha_start_task(self, ct: ContainerState) -> Task:
        """The LRM starts a service: ``PVE::HA::Resources::PVECT::start`` calls the API's
        ``vm_start`` on the service's node, as root@pam (a ``vzstart`` task)."""
        vmid, node = ct.vmid, ct.node

        def body(task: Task) -> Worker:
            yield from self.flock(task, vmid)
            try:
                current = self.state.load_config(vmid, node)
                self.state.check_lock(current)
                self.injected_failure(task)
                yield self.state.timing.start_seconds
                after = self.state.containers.get(vmid)
                if after is not None and after.node == node and not after.running:
                    from pve_sim.handlers.lxc import apply_pending

                    apply_pending(self, after)
                    self.set_running(after, True)
            finally:
                self.funlock(task, vmid)

        return self.start_task(node, "vzstart", str(vmid), "root@pam", body)

    def ha_stop_task(self, ct: ContainerState) -> Task:
        """The LRM stops a service: ``PVECT::shutdown`` with the default 60 s timeout, which
        ``PVE::LXC::vm_stop`` turns into a kill once it passed (a ``vzshutdown`` task)."""
        from pve_sim.handlers.lxc import stop_container

        vmid, node = ct.vmid, ct.node

        def body(task: Task) -> Worker:
            yield from self.flock(task, vmid)
            try:
                current = self.state.containers.get(vmid)
                if current is not None and current.node == node:
                    yield from stop_container(self, current, timeout=60, kill_after_timeout=True)
            finally:
                self.funlock(task, vmid)

        return self.start_task(node, "vzshutdown", str(vmid), "root@pam", body)

    def ha_relocate_task(self, ct: ContainerState, target: str) -> Task:
        """The LRM relocates a service: ``PVECT::migrate`` runs ``migrate_vm`` with ``restart``
        for a running CT (there is no online CT migration), as root@pam (a ``vzmigrate`` task)."""
        from pve_sim.handlers.migrate import relocation_task

        return relocation_task(self, ct.vmid, ct.node, target)

    def ha_steal_service(self, ct: ContainerState, node: str) -> None:
        """Recovery after fencing: ``steal_service`` moves the CT's config to the recovery node and
        ``$fence_recovery_cleanup`` drops locks that are safe to remove once the old node was reset
        (pve-ha-manager ``src/PVE/HA/Manager.pm``)."""
        if ct.lock in ("backup", "mounted", "migrate", "rollback", "snapshot", "snapshot-delete"):
            self.ha.log_line(
                "warning",
                f"removed leftover lock '{ct.lock}' from recovered service 'ct:{ct.vmid}' to allow its start.",
            )
            del ct.config["lock"]
        if ct.running:
            self.set_running(ct, False)
        ct.node = node
        self.record(ct)

    def injected_failure(self, task: Task) -> None:
        """Raise the failure a test or scenario armed for this task type, if any."""
        vmid = int(task.id) if task.id.isdigit() else None
        message = self.faults.take_task_failure(task.type, node=task.node, vmid=vmid)
        if message is not None:
            raise TaskError(message)

    def flock(self, task: Task, vmid: int) -> Iterator[float]:
        """``lock_config``'s flock, held by ``task`` until :meth:`funlock`; waits up to 10 s.

        Used as ``yield from cluster.flock(task, vmid)`` inside a worker.
        """
        waited = 0.0
        while True:
            holder_upid = self._flocks.get(vmid)
            holder = self.tasks.get(holder_upid) if holder_upid is not None else None
            if holder is None or holder is task or not holder.running:
                self._flocks[vmid] = task.upid
                return
            if waited >= FLOCK_TIMEOUT_SECONDS or self.clock.instant_tasks:
                raise TaskError(f"can't lock file '/run/lock/lxc/pve-config-{vmid}.lock' - got timeout")
            yield 1.0
            waited += 1.0

    def sync_flock(self, vmid: int, node: str) -> None:
        """``lock_config`` taken by a synchronous API call on ``node`` (``PUT …/config``): raise
        :class:`FlockBusy` while a running task of that node holds the flock; :meth:`handle` then
        waits up to 10 simulated seconds and fails with ``can't lock file … - got timeout`` (HTTP 500).
        The lock file is node-local (``/run/lock/lxc``), so a task on another node does not block.
        Call it before changing anything."""
        holder_upid = self._flocks.get(vmid)
        holder = self.tasks.get(holder_upid) if holder_upid is not None else None
        if holder is not None and holder.running and holder.node == node:
            raise FlockBusy(vmid)

    def funlock(self, task: Task, vmid: int) -> None:
        if self._flocks.get(vmid) == task.upid:
            del self._flocks[vmid]

    # ================================================================== quorum

    def is_quorate(self) -> bool:
        """Corosync quorum: more than half of the nodes' votes (one each) online."""
        online = sum(1 for node in self.state.nodes.values() if node.online)
        return online * 2 > len(self.state.nodes)

    def check_quorum(self) -> None:
        """``PVE::Cluster::check_cfs_quorum``."""
        if not self.is_quorate():
            raise internal("cluster not ready - no quorum?")

    # ================================================================== runtime state changes

    def placement(self, ct: ContainerState, epoch: float | None = None) -> Placement:
        node = self.state.nodes[ct.node]
        rootfs = ct.rootfs_volume()
        return Placement(
            since_epoch=self.now() if epoch is None else epoch,
            node=ct.node,
            running=ct.running,
            cpus=ct.cpus(node.cores),
            maxmem_bytes=ct.maxmem_bytes,
            maxdisk_bytes=rootfs.size_bytes if rootfs is not None else 0,
            storage=rootfs.storage if rootfs is not None else None,
        )

    def record(self, ct: ContainerState) -> None:
        """Record the CT's current node/run state/sizes in the history (after any change)."""
        self._mutations += 1
        if self.usage.ct_created_epoch(ct.vmid) is None or not self.usage.ct_exists_at(ct.vmid, self.now()):
            return
        self.usage.place_ct(ct.vmid, self.placement(ct))

    def register_container(self, ct: ContainerState, profiles: Mapping[str, Profile]) -> None:
        """A new CT config exists (create): it appears in lists and starts its history."""
        self.state.containers[ct.vmid] = ct
        self._mutations += 1
        self.usage.add_ct(ct.vmid, self.placement(ct), profiles)

    def unregister_container(self, vmid: int) -> None:
        """The CT's config is gone (destroy, failed create)."""
        self.state.containers.pop(vmid, None)
        self.state.forget_linked_clones_of(vmid)
        self._flocks.pop(vmid, None)
        self._mutations += 1
        self.usage.remove_ct(vmid, self.now())

    def set_running(self, ct: ContainerState, running: bool) -> None:
        ct.running = running
        if running:
            ct.started_epoch = self.now()
            ct.last_started_epoch = ct.started_epoch
            ct.pid = self._new_ct_pid()
        else:
            ct.started_epoch = None
            ct.pid = None
        self.record(ct)

    def _new_ct_pid(self) -> int:
        self._ct_pid_counter += 37
        return self._ct_pid_counter

    def new_mac_address(self) -> str:
        """A MAC with Proxmox's OUI ``BC:24:11`` (deterministic, unique per cluster)."""
        self._mac_counter += 1
        digest = hashlib.sha1(f"{self.name}/mac/{self._mac_counter}".encode()).digest()
        return "BC:24:11:" + ":".join(f"{b:02X}" for b in digest[:3])

    def profiles_for_new_ct(self, hostname: str | None, tags: list[str], node: str) -> dict[str, Profile]:
        return _profiles(self.usage_rules.profiles_for(hostname, tags, node))

    # ================================================================== usage views

    def ct_usage_now(self, vmid: int) -> CtUsage | None:
        return self.usage.ct_usage_at(vmid, self.now())

    def node_usage_now(self, node: str) -> NodeUsage:
        return self.usage.node_usage_at(node, self.now())

    def stats_epoch(self) -> float:
        """When pvestatd last broadcast (every ``stats_lag_seconds``; 0 = live)."""
        now = self.now()
        interval = self.stats_lag_seconds
        if interval <= 0:
            return now
        start = self.clock.start_epoch
        return start + (int((now - start) // interval)) * interval

    def stats_view(self) -> StatsView:
        """Usage of every CT and node as of the last broadcast (cached per broadcast).

        A node that left the cluster more than ``stats_expire_seconds`` after its last broadcast has
        no entry any more (pmxcfs dropped it: its resources entry loses ``level`` and the ``max*``
        values); CTs of offline nodes are resolved by :meth:`stale_ct_stats`.
        """
        epoch = self.stats_epoch()
        expired = tuple(
            name
            for name in self.state.nodes
            if (last := self.node_last_broadcast(name)) is not None and self.now() - last > self.stats_expire_seconds
        )
        key = (epoch, self._mutations, expired)
        if self._stats_cache is not None and self._stats_cache_key == key:
            return self._stats_cache
        cts, nodes = self.usage.nodes_usage_at(epoch, self.state.containers.keys())
        for name in expired:
            nodes.pop(name, None)
        view = StatsView(epoch=epoch, cts=cts, nodes=nodes)
        self._stats_cache, self._stats_cache_key = view, key
        return view

    def node_last_broadcast(self, node: str) -> float | None:
        """When an offline node's pvestatd last broadcast (the last broadcast instant before it left
        the cluster); None for an online node."""
        target = self.state.nodes.get(node)
        if target is None or target.online or target.offline_since is None:
            return None
        lost = target.offline_since
        interval = self.stats_lag_seconds
        if interval <= 0:
            return lost
        start = self.clock.start_epoch
        return start + int((lost - start) // interval) * interval

    def stale_ct_stats(self, ct: ContainerState) -> tuple[CtUsage, float, float | None] | None:
        """What the cluster still shows for a CT of an offline node: (its usage as last broadcast, that
        broadcast's epoch, the start time of the run it was in), or None once pmxcfs dropped the data
        (``stats_expire_seconds`` after the broadcast) or if no broadcast ever saw the CT."""
        last = self.node_last_broadcast(ct.node)
        if last is None or self.now() - last > self.stats_expire_seconds:
            return None
        target = self.state.nodes[ct.node]
        assert target.offline_since is not None
        # Evaluate just before the node was lost: the CTs stop at that very instant in the history.
        usage = self.usage.ct_usage_at(ct.vmid, min(last, target.offline_since - 1e-6))
        if usage is None or usage.node != ct.node:
            return None
        return usage, last, ct.last_started_epoch

    def storage_used_bytes(self, storage: StorageState, node: str) -> int:
        """Bytes used on ``storage`` as seen from ``node``: CT volumes (by their disk profile) + templates."""
        used = storage.base_used_bytes
        now = self.now()
        for ct in self.state.containers.values():
            if not storage.shared and ct.node != node:
                continue
            for volume in ct.volumes():
                if volume.storage != storage.sid:
                    continue
                if volume.key == "rootfs":
                    usage = self.usage.ct_usage_at(ct.vmid, now)
                    used += usage.disk_bytes if usage is not None else 0
                    base_vmid = self.state.linked_rootfs_base(ct)
                    base_usage = self.usage.ct_usage_at(base_vmid, now) if base_vmid is not None else None
                    if usage is not None and base_usage is not None:
                        used -= min(usage.disk_bytes, base_usage.disk_bytes)  # shared with the base
                else:
                    used += volume.size_bytes // 10
        for template in self.state.templates.values():
            if template.storage == storage.sid:
                used += template.size_bytes
        return min(used, storage.capacity_bytes)

    # ================================================================== auth support

    def check_password(self, userid: str, password: str) -> bool:
        with self._lock:
            return self.access.check_password(userid, password, self.clock.now())

    def check_token(self, userid: str, tokenid: str, secret: str) -> bool:
        with self._lock:
            return self.access.check_token(userid, tokenid, secret, self.clock.now())

    def user_enabled(self, userid: str) -> bool:
        with self._lock:
            return self.access.user_enabled(userid, self.clock.now())

    def api_capabilities(self, userid: str) -> dict[str, dict[str, int]]:
        """The ``cap`` map of a login answer (``compute_api_permission``)."""
        with self._lock:
            return self.access.api_capabilities(userid)

    def login_clustername(self, userid: str) -> str | None:
        """``clustername`` in a login answer: only with Sys.Audit on ``/``."""
        with self._lock:
            if self.access.allowed(userid, "/", ["Sys.Audit"]):
                return self.name
            return None

    # ================================================================== control

    def advance_clock(self, seconds: float) -> None:
        """Move simulated time forward and process everything that became due."""
        with self._lock:
            self.clock.advance(seconds)
            self.scheduler.run_due(self.clock.now())
            self.scheduler.release()

    def set_container_usage(self, vmid: int, metric: str, profile: object) -> None:
        """Replace one usage profile of a CT (``metric``: memory | cpu | disk), from now on."""
        parsed = _as_profile(profile)
        with self._lock, self._at_now():
            if vmid not in self.state.containers:
                raise KeyError(f"CT {vmid} does not exist")
            self._mutations += 1
            self.usage.set_ct_profile(vmid, metric, parsed, self.now())

    def set_node_load(self, node: str, metric: str, profile: object) -> None:
        """Replace one base-load profile of a node, from now on."""
        parsed = _as_profile(profile)
        with self._lock, self._at_now():
            if node not in self.state.nodes:
                raise KeyError(f"node '{node}' does not exist")
            self._mutations += 1
            self.usage.set_node_profile(node, metric, parsed, self.now())

    def set_node_online(self, node: str, online: bool) -> None:
        """Take a node out of the cluster or bring it back (its CTs stop; ``onboot`` CTs restart).

        As in PVE, the node is ``offline`` at once (corosync membership) while /cluster/resources keeps
        showing its CTs as pvestatd last broadcast them (``running``, frozen uptime and usage) until
        ``stats_expire_seconds`` after that broadcast; then they are ``status: unknown`` without stats.
        """
        with self._lock, self._at_now():
            self._set_node_online(node, online)

    def _set_node_online(self, node: str, online: bool) -> None:
        target = self.state.nodes.get(node)
        if target is None:
            raise KeyError(f"node '{node}' does not exist")
        if target.online == online:
            return
        self.ha.arm()
        target.online = online
        target.offline_since = None if online else self.now()
        self._mutations += 1
        self.usage.set_node_online(node, online, self.now())
        cts = [ct for ct in self.state.containers.values() if ct.node == node]
        if not online:
            for ct in cts:
                if ct.running:
                    self.set_running(ct, False)
            return
        target.boot_epoch = self.now()
        for ct in cts:
            if ct.config.get("onboot") and not ct.running and not ct.is_template and not ct.lock:
                self.set_running(ct, True)

    def set_container_ignores_shutdown(self, vmid: int, ignores: bool = True) -> None:
        """Make a CT ignore clean shutdown requests (or behave again): ``lxc-stop --nokill`` then
        times out, so shutdown without ``forceStop`` and restart-mode migration fail with
        ``container did not stop`` and leave it running."""
        with self._lock, self._at_now():
            ct = self.state.containers.get(vmid)
            if ct is None:
                raise KeyError(f"CT {vmid} does not exist")
            ct.ignores_shutdown = ignores

    def fail_tasks(
        self, task_type: str, message: str, count: int = 1, *, node: str | None = None, vmid: int | None = None
    ) -> None:
        """The next ``count`` tasks of ``task_type`` fail with ``message`` (see ``handlers`` for where)."""
        self.faults.add_task_failure(task_type, message, count, node=node, vmid=vmid)

    def node_usage(self, node: str) -> dict[str, float]:
        """Live usage of a node: cpu (fraction of its cores), mem/maxmem and disk/maxdisk in bytes,
        the uncapped demand behind them (``cpudemand`` in cores, ``memdemand`` in bytes) and the PSI
        figures the model derives from it (``pressure*``, percent; see :mod:`pve_sim.pressure`)."""
        with self._lock, self._at_now():
            if node not in self.state.nodes:
                raise KeyError(f"node '{node}' does not exist")
            now_usage = self.node_usage_now(node)
            usage = now_usage.as_dict()
            usage["online"] = 1.0 if self.state.nodes[node].online else 0.0
            usage["cpudemand"] = now_usage.cpu_demand_cores
            usage["memdemand"] = float(now_usage.mem_demand_bytes)
            usage.update(node_pressure(now_usage))
            return usage

    def container_usage(self, vmid: int) -> dict[str, float]:
        """Live usage of a CT: cpu (fraction of its cpus), cpus, mem/maxmem, disk/maxdisk, running, and
        while it runs the PSI figures of the model (``pressure*``, percent; see :mod:`pve_sim.pressure`)."""
        with self._lock, self._at_now():
            usage = self.ct_usage_now(vmid)
            if usage is None:
                raise KeyError(f"CT {vmid} does not exist")
            result = {
                "running": 1.0 if usage.running else 0.0,
                "cpu": usage.cpu_fraction,
                "cpus": usage.cpus,
                "mem": float(usage.mem_bytes),
                "maxmem": float(usage.maxmem_bytes),
                "disk": float(usage.disk_bytes),
                "maxdisk": float(usage.maxdisk_bytes),
            }
            if usage.running:
                result.update(ct_pressure(usage, self.node_usage_now(usage.node)))
            return result

    def state_dump(self) -> dict[str, object]:
        """The whole simulated state as JSON-able data (for the admin endpoint and debugging)."""
        with self._lock, self._at_now():
            now = self.now()
            nodes: dict[str, object] = {}
            for name, node in self.state.nodes.items():
                usage = self.node_usage_now(name)
                nodes[name] = {
                    "online": node.online,
                    "cores": node.cores,
                    "memory_bytes": node.memory_bytes,
                    "rootfs_bytes": node.rootfs_bytes,
                    "uptime": node.uptime_seconds(now),
                    "usage": usage.as_dict(),
                    "running_cts": usage.running_cts,
                }
            storages = {
                sid: {
                    "type": s.type,
                    "content": sorted(s.content),
                    "shared": s.shared,
                    "enabled": s.enabled,
                    "capacity_bytes": s.capacity_bytes,
                    "used_bytes": {
                        node: self.storage_used_bytes(s, node) for node in self.state.nodes if s.available_on(node)
                    },
                }
                for sid, s in self.state.storages.items()
            }
            containers: dict[str, object] = {}
            for vmid, ct in sorted(self.state.containers.items()):
                usage_now = self.ct_usage_now(vmid)
                containers[str(vmid)] = {
                    "node": ct.node,
                    "status": "running" if ct.running else "stopped",
                    "lock": ct.lock,
                    "config": dict(ct.config),
                    "pending": dict(ct.pending),
                    "pool": self.access.vm_pool.get(vmid),
                    "usage": None
                    if usage_now is None
                    else {
                        "cpu": usage_now.cpu_fraction,
                        "cpus": usage_now.cpus,
                        "mem": usage_now.mem_bytes,
                        "maxmem": usage_now.maxmem_bytes,
                        "disk": usage_now.disk_bytes,
                        "maxdisk": usage_now.maxdisk_bytes,
                    },
                    "profiles": {m: _describe_profile(p) for m, p in self.usage.ct_profiles(vmid).items()},
                }
            tasks = [{**task.list_entry(), "log": list(task.lines)} for task in self.tasks]
            return {
                "cluster": self.name,
                "clock": {
                    "now": now,
                    "elapsed": now - self.clock.start_epoch,
                    "start_epoch": self.clock.start_epoch,
                    "time_scale": self.clock.time_scale,
                    "frozen": self.clock.frozen,
                },
                "quorate": self.is_quorate(),
                "nodes": nodes,
                "storages": storages,
                "pools": {
                    poolid: {"comment": pool.comment, "vms": sorted(pool.vms), "storage": sorted(pool.storage)}
                    for poolid, pool in self.access.pools.items()
                },
                "containers": containers,
                "ha_resources": {sid: {"state": r.state} for sid, r in self.state.ha_resources.items()},
                "ha": self.ha.describe(),
                "tasks": tasks,
                "pending_events": self.scheduler.pending(),
                "faults": self.faults.describe(),
                "internal_errors": list(self.internal_errors),
            }


# ====================================================================== helpers


def _node_priority(entry: str) -> tuple[str, int]:
    node, _, priority = entry.partition(":")
    return node, int(priority) if priority else 0


def _profiles(spec: MetricProfiles) -> dict[str, Profile]:
    return {"memory": spec.memory, "cpu": spec.cpu, "disk": spec.disk}


def _as_profile(profile: object) -> Profile:
    if isinstance(profile, BaseProfile):
        return profile
    return parse_profile(profile)


def _describe_profile(profile: Profile) -> object:
    dump = getattr(profile, "model_dump", None)
    if callable(dump):
        return dump(mode="json", by_alias=True)
    return repr(profile)


def _event_action(cluster: SimCluster, event: ScenarioEvent) -> Callable[[], None]:
    """The heap action applying one scenario event at its time."""

    def apply() -> None:
        now = cluster.now()
        if isinstance(event, SetContainerUsageEvent):
            if event.vmid is not None:
                targets = [event.vmid] if event.vmid in cluster.state.containers else []
            else:
                assert event.match is not None
                targets = [
                    ct.vmid
                    for ct in cluster.state.containers.values()
                    if event.match.matches(str(ct.config.get("hostname") or ""), (ct.tags or "").split(";"), ct.node)
                ]
            for vmid in targets:
                for metric in ("memory", "cpu", "disk"):
                    profile = getattr(event, metric)
                    if profile is not None:
                        cluster.usage.set_ct_profile(vmid, metric, profile, now)
            cluster._mutations += 1
        elif isinstance(event, SetNodeLoadEvent):
            for metric in ("memory", "cpu", "disk"):
                profile = getattr(event, metric)
                if profile is not None:
                    cluster.usage.set_node_profile(event.node, metric, profile, now)
            cluster._mutations += 1
        elif isinstance(event, NodeOfflineEvent):
            cluster._set_node_online(event.node, False)
        elif isinstance(event, NodeOnlineEvent):
            cluster._set_node_online(event.node, True)
        elif isinstance(event, FailTasksEvent):
            cluster.faults.add_task_failure(
                event.task_type, event.message, event.count, node=event.node, vmid=event.vmid
            )

    return apply

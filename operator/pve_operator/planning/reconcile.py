"""Reconcile one ContainerPolicy: desired CTs versus the CTs of ours the snapshot shows.

Input is data: the policy's intent, the cluster snapshot, and the CTs proven ours (with their
ownership records). Output is a :class:`ReconcilePlan`: actions with reasons, plus what status
needs (desired count, why growth stopped, why placement failed). The rules:

* Count mode (``replicas``): create until there are ``replicas`` CTs, lowest free index first (a CT
  deleted behind our back comes back with its index and hostname); scale down removes the newest
  CTs first, from the most crowded topology domain first when the policy has spread constraints.
* Fill mode (the lab's generator made safe): grow one projected CT at a time while the pool's
  usage, counting each new CT at its configured size, stays under ``until`` and the count under
  ``max_replicas``. It never shrinks by itself: the desired count only grows (pressure is
  offload's job, not the generator's).
* Repair: a stopped CT of ours is started unless the operator offloaded it on purpose; memory or
  cores changed behind our back are put back (from the snapshot), and so are the other hot settings
  (swap, onboot, startup, protection, cpulimit, cpuunits, the NICs) of the CTs whose config this cycle read
  (``OwnedContainer.config``: a few CTs per cycle, in turn). Locked CTs, CTs PVE does not yet report
  (``unknown``) and CTs in the pool's balancing journal (being migrated, offloaded or restored) are
  left alone this cycle.
* Paused policies plan nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

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
from pve_operator.planning.model import (
    ClusterSnapshot,
    ContainerObservation,
    ContainerStatus,
    Metric,
    UsageMeasure,
    WeightedMetric,
)
from pve_operator.planning.ownership import normalize_tags, remove_record
from pve_operator.planning.placement import (
    ContainerDemand,
    NodeCandidate,
    PlacementStrategy,
    allocate_vmids,
    place,
    with_demand,
)
from pve_operator.planning.pve_access import property_string, volume_of
from pve_operator.planning.topology import TopologyRules, count_by_node

MIB = 1024 * 1024


class GrowthStop(StrEnum):
    """Why fill mode stopped adding CTs (shown in status)."""

    USAGE_LIMIT_REACHED = "UsageLimitReached"
    MAX_REPLICAS_REACHED = "MaxReplicasReached"
    POOL_FULL = "PoolFull"


#: Options whose PVE default is not 0 (swap defaults to 512 MiB): 0 is written, not the option deleted.
_ZERO_IS_NOT_DEFAULT = frozenset({"swap"})


def pve_setting(value: object) -> str:
    """A config value as the drift check compares it: PVE's JSON gives 1/0, numbers or strings; unset,
    0 and "" are all PVE's default ("" here), numbers lose a trailing ``.0``."""
    if value is None or value == "" or value == 0 or value == "0":
        return ""
    if isinstance(value, bool):
        return "1" if value else ""
    if isinstance(value, int | float):
        return f"{value:g}"
    text = str(value)
    try:
        number = float(text)
    except ValueError:
        return text
    return "" if number == 0 else f"{number:g}"


@dataclass(frozen=True)
class FillIntent:
    until_fraction: float
    max_replicas: int


@dataclass(frozen=True)
class PolicyIntent:
    """What the ContainerPolicy asks for, in planner terms."""

    policy_uid: str
    vmid_range: range
    memory_mib: int
    cores: int
    rootfs_gib: int
    hostname_for: Callable[[int], str]
    node_weights: Mapping[str, int]
    replicas: int | None = None
    fill: FillIntent | None = None
    maintenance_nodes: frozenset[str] = frozenset()
    metric: UsageMeasure = Metric.MEMORY
    ceiling_fraction: float = 0.8
    strategy: PlacementStrategy = PlacementStrategy.WEIGHTED_SPREAD
    paused: bool = False
    #: Fill mode's previously decided count (from status), so the generator never shrinks.
    previous_desired: int = 0
    #: VMIDs of the range no new CT may take: the parts other policies' ranges overlap
    #: (:mod:`pve_operator.planning.vmid_ranges`).
    reserved_vmids: frozenset[int] = frozenset()
    #: CTs the pool's balancing is migrating, offloading or restoring now (the pool's journal,
    #: ``status.inFlight``): their state is the balancer's to change until the entry is gone.
    busy_vmids: frozenset[int] = frozenset()
    #: CTs whose destruction the policy has under way (a journaled Delete: stop, then destroy, over several
    #: cycles): planned as already gone, as they will be, so scale-down does not pick another CT for them.
    leaving_vmids: frozenset[int] = frozenset()
    #: CTs a task of the policy is changing now (a creation, start, restart, handover, deletion): never counted
    #: as available, whatever the snapshot still says, so a rollout does not take a second CT down meanwhile.
    disrupted_vmids: frozenset[int] = frozenset()
    #: Hot config options compared with a CT's config when this cycle read it: PVE key -> the value the
    #: policy wants, normalised by :func:`pve_setting` ("" = unset, PVE's default).
    config_settings: Mapping[str, str] = field(default_factory=dict)
    #: The policy's spread and node affinity over the pool (``planning/topology.py``); None: no rules.
    topology: TopologyRules | None = None
    #: ``template_hash`` of the policy's template ("" = not tracked).
    template_hash: str = ""
    #: RollingUpdate's maxUnavailable; None for OnDelete (outdated CTs are left).
    rollout_max_unavailable: int | None = None
    #: RollingUpdate's maxSurge (count mode only): CTs created above ``replicas`` while CTs are outdated,
    #: each outdated CT destroyed once the others keep ``replicas - maxUnavailable`` available.
    rollout_max_surge: int = 0
    #: Creations keep failing (backoff): a rollout destroys no more CTs until they succeed (RolloutStuck).
    rollout_paused: bool = False
    #: Restart-class options compared like ``config_settings`` when a CT's config was read: written in
    #: place and, with RollingUpdate, the CT restarted within maxUnavailable to apply them.
    restart_settings: Mapping[str, str] = field(default_factory=dict)
    #: The notes (template.description) and tags (ownership + template.tags) every CT should carry: Hot,
    #: compared when a CT's config was read.
    notes: str = ""
    tags: frozenset[str] = frozenset()
    #: Tags template.tags no longer lists that CTs may still carry (status.retiredTags): taken off every CT
    #: whose snapshot shows them.
    retired_tags: frozenset[str] = frozenset()
    #: ``net0``, ``net1``, ... as the policy creates them (PVE property strings without ``hwaddr``): Hot,
    #: compared key by key (:data:`MANAGED_NET_KEYS`) when a CT's config was read; None: not compared.
    networks: tuple[str, ...] | None = None
    #: The ``mpN`` keys of the mount points with keepOnRecreate: a rolling update hands these volumes over
    #: to a replacement made for each outdated CT (:class:`HandOverVolumes`) instead of destroying them.
    kept_volumes: tuple[str, ...] = ()

    @property
    def demand(self) -> ContainerDemand:
        return ContainerDemand(
            memory_bytes=self.memory_mib * MIB, cpu_cores=self.cores, disk_bytes=self.rootfs_gib * 1024 * MIB
        )


@dataclass(frozen=True)
class OwnedContainer:
    """A CT proven ours: its latest observation (None when gone from the cluster) and its record."""

    vmid: int
    index: int
    created_at: str
    observation: ContainerObservation | None
    #: The operator stopped it on purpose (offload); repair must not start it.
    offloaded: bool = False
    #: False while its node is offline: counted (no replacement is made for it) but never acted on;
    #: ``index`` and ``created_at`` may then be inferred (VMID - range start, unknown).
    verified: bool = True
    #: Its config as PVE returned it this cycle (the drift sweep reads a few CTs' configs per cycle);
    #: None when not read this cycle.
    config: Mapping[str, object] | None = None
    #: The template hash its ownership record carries, when signed ("" = unknown: created before records
    #: carried one; stamped with the current one when its config is read).
    template_hash: str = ""
    #: The outdated CT whose kept volumes this CT was created to receive (its signed record's ``from``).
    volumes_from: int | None = None


@dataclass(frozen=True)
class VmidConflict:
    """CT number ``index`` cannot have its own VMID ``start + index``: another guest holds it, or it
    is in a part of the range another policy's range overlaps."""

    index: int
    wanted_vmid: int
    #: The VMID the CT has or is created with instead; None when it gets none this cycle.
    vmid: int | None
    #: True when the wanted VMID is in a part of the range another policy also claims.
    in_shared_range: bool


@dataclass(frozen=True)
class ReconcilePlan:
    actions: list[Action]
    desired_replicas: int
    growth_stop: GrowthStop | None = None
    #: Non-empty when CTs are missing and no node can take one: node -> why (PoolFull).
    placement_refusals: Mapping[str, str] = field(default_factory=dict)
    #: CTs wanted but not placed this cycle.
    unplaced: int = 0
    #: CTs (existing or to be created) kept off their ``start + index`` VMID, by index.
    vmid_conflicts: tuple[VmidConflict, ...] = ()
    #: Nodes with room that the policy's placement rules refused while CTs stayed unplaced.
    rule_refused: frozenset[str] = frozenset()
    #: CTs (verified) whose recorded template differs from the policy's: a rollout's work left.
    outdated: tuple[int, ...] = ()
    #: Kept-volume handovers under way: replacement VMID -> the outdated CT it receives the volumes from.
    handovers: Mapping[int, int] = field(default_factory=dict)


def pool_used_fraction(
    snapshot: ClusterSnapshot, nodes: Sequence[str], metric: UsageMeasure, extra: ContainerDemand | None = None
) -> float:
    """Usage of ``metric`` over the given nodes together (sum of use / sum of capacity)."""
    if isinstance(metric, WeightedMetric):
        return metric.combine(*(pool_used_fraction(snapshot, nodes, m, extra) for m, _ in metric.parts))
    usages = [snapshot.nodes[n] for n in nodes if n in snapshot.nodes and snapshot.nodes[n].online]
    if extra is not None and usages:
        # Where one more CT would go does not matter for the pool total; add it to the first node.
        usages = [with_demand(usages[0], extra), *usages[1:]]
    if metric is Metric.MAX:
        return max(
            (pool_used_fraction(snapshot, nodes, m, extra) for m in (Metric.MEMORY, Metric.CPU, Metric.DISK)),
            default=0.0,
        )
    if metric is Metric.CPU:
        total = sum(u.cpu_cores for u in usages)
        used = sum(u.cpu_used_fraction * u.cpu_cores for u in usages)
    elif metric is Metric.MEMORY:
        total = sum(u.memory_total_bytes for u in usages)
        used = sum(u.memory_used_bytes for u in usages)
    else:
        total = sum(u.disk_total_bytes for u in usages)
        used = sum(u.disk_used_bytes for u in usages)
    return used / total if total else 0.0


def _fill_target(
    intent: PolicyIntent, snapshot: ClusterSnapshot, existing: int, running: int
) -> tuple[int, GrowthStop | None]:
    """How many CTs fill mode wants now: grow from max(existing, previous) while the pool has room.

    Measured usage only includes CTs PVE reports running (its statistics lag creation and start),
    so every CT decided but not yet running is projected at its full configured size.
    """
    assert intent.fill is not None
    target = max(existing, intent.previous_desired)
    nodes = [n for n, w in intent.node_weights.items() if w > 0 and n not in intent.maintenance_nodes]
    pending = max(0, target - running)
    projected = ContainerDemand(
        memory_bytes=intent.demand.memory_bytes * pending,
        cpu_cores=intent.demand.cpu_cores * pending,
        disk_bytes=intent.demand.disk_bytes * pending,
    )
    while True:
        if target >= intent.fill.max_replicas:
            # Lowering maxReplicas is the user's decision, so it does shrink the policy.
            return intent.fill.max_replicas, GrowthStop.MAX_REPLICAS_REACHED
        one_more = ContainerDemand(
            projected.memory_bytes + intent.demand.memory_bytes,
            projected.cpu_cores + intent.demand.cpu_cores,
            projected.disk_bytes + intent.demand.disk_bytes,
        )
        if pool_used_fraction(snapshot, nodes, intent.metric, one_more) >= intent.fill.until_fraction:
            return target, GrowthStop.USAGE_LIMIT_REACHED
        target += 1
        projected = one_more


def plan_reconcile(intent: PolicyIntent, snapshot: ClusterSnapshot, owned: Sequence[OwnedContainer]) -> ReconcilePlan:
    present = [o for o in owned if o.observation is not None and o.vmid not in intent.leaving_vmids]
    if intent.paused:
        return ReconcilePlan(actions=[], desired_replicas=intent.previous_desired or len(present))

    growth_stop: GrowthStop | None = None
    if intent.fill is not None:
        running = sum(1 for o in present if o.observation is not None and o.observation.running)
        desired, growth_stop = _fill_target(intent, snapshot, len(present), running)
    else:
        desired = intent.replicas or 0

    actions: list[Action] = []
    outdated = [
        o for o in present if o.template_hash and intent.template_hash and o.template_hash != intent.template_hash
    ]
    rolling = intent.rollout_max_unavailable is not None and not intent.rollout_paused and intent.fill is None
    # Handovers of kept volumes: a replacement and the outdated CT it receives them from count as one CT
    # until the handover destroys the source; neither is a scale-down victim meanwhile.
    pairs = handover_pairs(present, intent)
    sources = {o.vmid for o in pairs.values()}
    # Scale down: newest first (creation time, then index); while a rollout has outdated CTs (a surge CT
    # made the surplus, or replicas went down mid-rollout), outdated CTs go first, within maxUnavailable.
    surplus = len(present) - len(pairs) - desired
    removed: set[int] = set()
    if surplus > 0:
        unpaired = [o for o in present if o.vmid not in sources and o.vmid not in pairs]
        victims = (
            _surge_victims(intent, unpaired, [o for o in outdated if o.vmid not in sources], desired, surplus)
            if intent.rollout_max_unavailable is not None and outdated
            else _scale_down_victims(intent, unpaired, surplus)
        )
        for victim, why in victims:
            obs = victim.observation
            assert obs is not None
            removed.add(victim.vmid)
            actions.append(
                DestroyContainer(
                    vmid=victim.vmid, node=obs.node, running=obs.running, reason=f"scale down to {desired}: {why}"
                )
            )

    present_vmids = {o.vmid for o in present}
    # Repairs on the CTs that stay. Restarts (restart-class drift) and recreations (rollout) share the
    # RollingUpdate budget: CTs missing or not running count against maxUnavailable.
    budget = _unavailable_budget(intent, present, desired, removed)
    for item in present:
        obs = item.observation
        assert obs is not None
        if item.vmid in removed or obs.lock or obs.status is ContainerStatus.UNKNOWN or not item.verified:
            continue
        if item.vmid in intent.busy_vmids:
            continue  # an offload or restore in flight: the balancer stops and starts it, not repair
        if obs.status is ContainerStatus.STOPPED and not item.offloaded:
            if item.vmid in pairs or (item.vmid in sources and not intent.rollout_paused):
                pass  # waiting for (or in) its handover, which starts the replacement
            elif item.volumes_from is not None and intent.kept_volumes and item.volumes_from not in present_vmids:
                # Made to receive a CT's kept volumes, and that CT is gone: new empty volumes, then start.
                actions.append(
                    HandOverVolumes(
                        item.vmid,
                        obs.node,
                        None,
                        intent.kept_volumes,
                        f"CT {item.volumes_from}, whose kept volumes this CT was made to receive, is gone: "
                        "any kept volume it lacks is created empty, then it starts",
                    )
                )
            else:
                actions.append(StartContainer(item.vmid, obs.node, "stopped outside the operator: starting it again"))
        marks = _marks_drift(intent, item, obs.node)
        if marks is not None:
            actions.append(marks)
        if item.config is not None and not item.template_hash and intent.template_hash:
            actions.append(RecordTemplate(item.vmid, obs.node, intent.template_hash))
        changes: dict[str, int | str] = {}
        if obs.memory_limit_bytes and obs.memory_limit_bytes != intent.memory_mib * MIB:
            changes["memory"] = intent.memory_mib
        if obs.cpu_cores and round(obs.cpu_cores) != intent.cores:
            changes["cores"] = intent.cores
        was = [
            f"{k} {obs.memory_limit_bytes // MIB if k == 'memory' else int(obs.cpu_cores)}→{v}"
            for k, v in changes.items()
        ]
        if item.config is not None:
            unset = []
            for key, wanted in sorted(intent.config_settings.items()):
                have = pve_setting(item.config.get(key))
                if have == wanted:
                    continue
                was.append(f"{key} {have or 'unset'}→{wanted or 'unset'}")
                if wanted:
                    changes[key] = wanted
                elif key in _ZERO_IS_NOT_DEFAULT:
                    changes[key] = "0"
                else:
                    unset.append(key)
            if intent.networks is not None:
                nets, extra_nets, net_was = network_drift(intent.networks, item.config)
                changes.update(nets)
                unset += extra_nets
                was += net_was
            if unset:
                changes["delete"] = ",".join(unset)
        if changes:
            actions.append(
                RestoreConfig(item.vmid, obs.node, changes, f"changed outside the operator: {', '.join(was)}")
            )
        if item.config is not None:
            restart_changes = {
                key: wanted
                for key, wanted in sorted(intent.restart_settings.items())
                if pve_setting(item.config.get(key)) != wanted
            }
            restart = obs.running and intent.rollout_max_unavailable is not None
            if restart_changes and (not restart or budget > 0):
                budget -= 1 if restart else 0
                listed = ", ".join(
                    f"{k} {pve_setting(item.config.get(k)) or 'unset'}→{v or 'unset'}"
                    for k, v in restart_changes.items()
                )
                unset = [k for k, v in restart_changes.items() if not v]
                writes: dict[str, int | str] = {k: v for k, v in restart_changes.items() if v}
                if unset:
                    writes["delete"] = ",".join(unset)
                when = "restart to apply" if restart else "applied at the CT's next start"
                actions.append(RestoreConfig(item.vmid, obs.node, writes, f"{listed} ({when})", restart=restart))

    if pairs and not intent.rollout_paused:
        handovers, budget = _handovers(intent, pairs, budget)
        actions += handovers
    if (
        outdated
        and intent.rollout_max_unavailable is not None
        and surplus <= 0
        and not intent.rollout_paused
        and not intent.kept_volumes
    ):
        actions += _rollout(intent, present, outdated, removed, budget)

    owned_vmids = {o.vmid for o in owned}
    held_by_others = {v for v in snapshot.used_vmids() if v not in owned_vmids}

    def conflict(index: int, vmid: int | None) -> VmidConflict | None:
        wanted = intent.vmid_range.start + index
        if vmid == wanted or (wanted not in held_by_others and wanted not in intent.reserved_vmids):
            return None
        return VmidConflict(index, wanted, vmid, in_shared_range=wanted in intent.reserved_vmids)

    conflicts = [c for item in present if item.vmid not in removed if (c := conflict(item.index, item.vmid))]

    # Creations: missing CTs get the lowest free indices. A surge (count mode, RollingUpdate) adds up to
    # maxSurge CTs above replicas while CTs are outdated, counting the CTs destroyed this cycle as present.
    surge = 0
    if rolling and intent.rollout_max_surge > 0 and not intent.kept_volumes:
        surge = min(intent.rollout_max_surge, sum(1 for o in outdated if o.vmid not in removed))
    missing = desired + surge - (len(present) - len(pairs))
    refusals: Mapping[str, str] = {}
    rule_refused: frozenset[str] = frozenset()
    unplaced = 0
    if missing > 0:
        taken_indices = {o.index for o in present}
        highest_index = max(taken_indices, default=-1)
        indices: list[int] = []
        candidate_index = 0
        while len(indices) < missing:
            if candidate_index not in taken_indices:
                indices.append(candidate_index)
            candidate_index += 1
        # An index whose CT this policy is destroying (a rollout's recreation, a deletion under way) comes
        # back once that CT is gone, with its own VMID: created now, it would take another one.
        leaving_indices = {o.index for o in owned if o.vmid in intent.leaving_vmids and o.observation is not None}
        indices = [i for i in indices if i not in leaving_indices]
        counts: dict[str, int] = {}
        for item in present:
            assert item.observation is not None
            counts[item.observation.node] = counts.get(item.observation.node, 0) + 1
        candidates = [
            NodeCandidate(
                usage=snapshot.nodes[name],
                weight=weight,
                managed_count=counts.get(name, 0),
                maintenance=name in intent.maintenance_nodes,
            )
            for name, weight in intent.node_weights.items()
            if name in snapshot.nodes
        ]
        placement = place(
            indices,
            candidates,
            intent.demand,
            metric=intent.metric,
            ceiling_fraction=intent.ceiling_fraction,
            strategy=intent.strategy,
            seed=intent.policy_uid,
            rules=intent.topology,
        )
        placed_indices = indices[: placement.placed]
        vmids = allocate_vmids(
            placed_indices, intent.vmid_range, set(snapshot.used_vmids()), reserved=intent.reserved_vmids
        )
        conflicts += [c for index in placed_indices if (c := conflict(index, vmids.get(index)))]
        for made, (index, node) in enumerate(zip(placed_indices, placement.nodes, strict=True)):
            if index not in vmids:
                break
            if len(present) + made >= desired:
                reason = (
                    f"rolling update surge: a CT with the new template before an outdated one goes "
                    f"({len(outdated)} outdated, maxSurge {intent.rollout_max_surge})"
                )
            else:
                why = "replace a missing CT" if index < highest_index else "scale up"
                reason = f"{why}: {len(present)} of {desired} exist"
            actions.append(
                CreateContainer(
                    vmid=vmids[index], node=node, index=index, hostname=intent.hostname_for(index), reason=reason
                )
            )
        unplaced = len(indices) - min(placement.placed, len(vmids))
        if placement.placed < len(indices):
            refusals = placement.refusals
            rule_refused = placement.rule_refused
            if intent.fill is not None:
                growth_stop = GrowthStop.POOL_FULL
        elif len(vmids) < placement.placed:
            shared = " outside the parts other policies' ranges overlap" if intent.reserved_vmids else ""
            refusals = {
                "vmidRange": f"no free VMID left in {intent.vmid_range.start}-{intent.vmid_range.stop - 1}{shared}"
            }
    if rolling and intent.kept_volumes:
        creating = [a for a in actions if isinstance(a, CreateContainer)]
        actions += _replacements_for_handover(
            intent,
            outdated,
            pairs,
            removed,
            taken_indices={o.index for o in present} | {a.index for a in creating},
            used_vmids=set(snapshot.used_vmids()) | {a.vmid for a in creating},
        )
    return ReconcilePlan(
        actions=actions,
        desired_replicas=desired,
        growth_stop=growth_stop,
        placement_refusals=refusals,
        unplaced=unplaced,
        vmid_conflicts=tuple(sorted(conflicts, key=lambda c: c.index)),
        rule_refused=rule_refused,
        outdated=tuple(sorted(o.vmid for o in outdated)),
        handovers={target: source.vmid for target, source in sorted(pairs.items())},
    )


MANAGED_NET_KEYS = ("name", "bridge", "ip", "gw", "tag", "firewall", "ip6", "gw6", "mtu", "rate")
"""The keys of a ``netN`` property string the policy decides; the others (``hwaddr``, ``type``, ``trunks``,
``link_down``, ...) are PVE's or the admin's and kept as they are when a NIC is repaired."""


def parse_net(value: object) -> dict[str, str]:
    """A ``netN`` property string (``name=eth0,bridge=vmbr0,...``) as key -> value, in order."""
    return {key: str(item) for key, item in property_string(value).items()}


def network_drift(wanted: Sequence[str], config: Mapping[str, object]) -> tuple[dict[str, str], list[str], list[str]]:
    """The NICs of a CT's config that differ from the policy's: (netN -> the value to write, the netN keys to
    delete, what changed, for the reason). A repaired NIC keeps its MAC and the keys the policy does not
    manage; a ``netN`` beyond the policy's NICs is removed (the policy lists every NIC of its CTs)."""
    writes: dict[str, str] = {}
    was: list[str] = []
    for i, text in enumerate(wanted):
        want = parse_net(text)
        have = parse_net(config.get(f"net{i}"))
        differing = [k for k in MANAGED_NET_KEYS if pve_setting(want.get(k)) != pve_setting(have.get(k))]
        if not differing:
            continue
        kept = {k: v for k, v in have.items() if k not in MANAGED_NET_KEYS}
        writes[f"net{i}"] = ",".join(f"{k}={v}" for k, v in {**want, **kept}.items())
        was.append(
            f"net{i} " + ", ".join(f"{k} {have.get(k) or 'unset'}→{want.get(k) or 'unset'}" for k in differing)
            if have
            else f"net{i} missing"
        )
    extra = sorted(
        (key for key in config if key.startswith("net") and key[3:].isdigit() and int(key[3:]) >= len(wanted)),
        key=lambda key: int(key[3:]),
    )
    was += [f"{key} not in the policy" for key in extra]
    return writes, extra, was


def _marks_drift(intent: PolicyIntent, item: OwnedContainer, node: str) -> RestoreMarks | None:
    """As one repair: the notes or tags of a CT whose config was read that differ from the policy's, and the
    retired tags (removed from template.tags) any CT's snapshot still shows."""
    assert item.observation is not None
    retired = frozenset(t for t in intent.retired_tags if t in item.observation.tags) - intent.tags
    notes_drift, missing = False, frozenset[str]()
    if item.config is not None:
        notes = remove_record(str(item.config.get("description") or "")).strip()
        have_tags = normalize_tags(str(item.config.get("tags") or ""))
        missing = frozenset(t for t in intent.tags if t not in have_tags)
        notes_drift = notes != intent.notes.strip()
    if not notes_drift and not missing and not retired:
        return None
    what = []
    if notes_drift:
        what.append("description notes put back")
    if missing:
        what.append(f"tag(s) {', '.join(sorted(missing))} put back")
    if retired:
        what.append(f"tag(s) {', '.join(sorted(retired))} taken off (no longer in template.tags)")
    return RestoreMarks(
        item.vmid,
        node,
        notes=intent.notes if notes_drift else None,
        add_tags=missing,
        remove_tags=retired,
        reason=f"{' and '.join(what)}, as the policy says",
    )


def _unavailable_budget(
    intent: PolicyIntent, present: Sequence[OwnedContainer], desired: int, removed: set[int]
) -> int:
    """RollingUpdate: how many more CTs may be made unavailable now (maxUnavailable minus the CTs missing
    or not running; offloaded CTs count as available: they are stopped on purpose). 0 for OnDelete."""
    if intent.rollout_max_unavailable is None:
        return 0
    available = sum(
        1
        for o in present
        if o.observation is not None
        and (o.observation.running or o.offloaded)
        and o.vmid not in removed
        and o.vmid not in intent.disrupted_vmids
    )
    return intent.rollout_max_unavailable - max(0, desired - available)


def _rollout(
    intent: PolicyIntent,
    present: Sequence[OwnedContainer],
    outdated: Sequence[OwnedContainer],
    removed: set[int],
    budget: int,
) -> list[Action]:
    """RollingUpdate: destroy outdated CTs (lowest index first) while fewer than maxUnavailable CTs are
    missing or not running; each comes back with its index, VMID and host name and the new template when
    the next cycle creates the missing ones. Busy, locked, unverified CTs and those of unknown state wait."""
    actions: list[Action] = []
    done = sum(1 for o in present if o.template_hash == intent.template_hash)
    for item in sorted(outdated, key=lambda o: o.index):
        if budget <= 0:
            break
        obs = item.observation
        assert obs is not None
        if obs.lock or item.vmid in intent.busy_vmids or not item.verified or obs.status is ContainerStatus.UNKNOWN:
            continue
        if item.vmid in removed:
            continue
        removed.add(item.vmid)
        budget -= 1
        actions.append(
            DestroyContainer(
                vmid=item.vmid,
                node=obs.node,
                running=obs.running,
                reason=(
                    f"rolling update: the template changed (ostemplate, rootfs or unprivileged; recorded "
                    f"{item.template_hash}, now {intent.template_hash}): recreate CT {item.index} with it "
                    f"({done} of {len(present)} updated, maxUnavailable {intent.rollout_max_unavailable})"
                ),
            )
        )
    return actions


def handover_pairs(present: Sequence[OwnedContainer], intent: PolicyIntent) -> dict[int, OwnedContainer]:
    """Handovers of kept volumes still to finish: replacement VMID -> the outdated CT it receives them from,
    for every CT whose record names a source that still exists (the handover destroys the source last) and
    is still outdated (a spec changed back makes the source current again: it keeps its volumes, and the
    replacement is surplus). None while the policy keeps no volume (keepOnRecreate turned off: a waiting
    replacement is then an ordinary surge CT, started, and its source an outdated CT like any other)."""
    if not intent.kept_volumes:
        return {}
    template_hash = intent.template_hash
    by_vmid = {o.vmid: o for o in present}
    pairs = {}
    for item in present:
        source = by_vmid.get(item.volumes_from) if item.volumes_from is not None else None
        if source is None or source.vmid == item.vmid:
            continue
        if source.template_hash and template_hash and source.template_hash != template_hash:
            pairs[item.vmid] = source
    return pairs


def _actionable(intent: PolicyIntent, item: OwnedContainer) -> bool:
    """Not locked, not in the pool's balancing journal, proven ours this cycle and of known state."""
    obs = item.observation
    return (
        obs is not None
        and not obs.lock
        and item.vmid not in intent.busy_vmids
        and item.verified
        and obs.status is not ContainerStatus.UNKNOWN
    )


def _handovers(intent: PolicyIntent, pairs: Mapping[int, OwnedContainer], budget: int) -> tuple[list[Action], int]:
    """A :class:`HandOverVolumes` for each pair whose CTs can be acted on, lowest source index first; stopping
    a source that is available (running, or offloaded on purpose) takes one of maxUnavailable's budget."""
    actions: list[Action] = []
    for target_vmid, source in sorted(pairs.items(), key=lambda pair: pair[1].index):
        obs = source.observation
        assert obs is not None
        if not _actionable(intent, source):
            continue
        if obs.running or source.offloaded:
            if budget <= 0:
                continue
            budget -= 1
        keys = ", ".join(intent.kept_volumes) or "none"
        actions.append(
            HandOverVolumes(
                target_vmid,
                obs.node,
                source.vmid,
                intent.kept_volumes,
                f"rolling update: CT {source.vmid} (outdated, template {source.template_hash}) hands its kept "
                f"volumes ({keys}) to CT {target_vmid}, which then starts, and is destroyed "
                f"(maxUnavailable {intent.rollout_max_unavailable})",
            )
        )
    return actions, budget


def _replacements_for_handover(
    intent: PolicyIntent,
    outdated: Sequence[OwnedContainer],
    pairs: Mapping[int, OwnedContainer],
    removed: set[int],
    *,
    taken_indices: set[int],
    used_vmids: set[int],
) -> list[Action]:
    """RollingUpdate with kept volumes: up to maxSurge replacements at a time, each made for one outdated CT
    (lowest index first) on that CT's node, stopped, to receive its volumes (``move_volume`` only reassigns
    a volume between CTs on the same node). It takes the lowest free index, like any surge CT."""
    in_handover = {o.vmid for o in pairs.values()}
    waiting = [
        o
        for o in sorted(outdated, key=lambda o: o.index)
        if o.vmid not in in_handover and o.vmid not in removed and _actionable(intent, o)
    ]
    chosen = waiting[: max(0, intent.rollout_max_surge - len(pairs))]
    indices: list[int] = []
    candidate = 0
    while len(indices) < len(chosen):
        if candidate not in taken_indices:
            indices.append(candidate)
        candidate += 1
    vmids = allocate_vmids(indices, intent.vmid_range, used_vmids, reserved=intent.reserved_vmids)
    actions: list[Action] = []
    for source, index in zip(chosen, indices, strict=True):
        if index not in vmids:
            break
        node = _node_of(source)
        actions.append(
            CreateContainer(
                vmid=vmids[index],
                node=node,
                index=index,
                hostname=intent.hostname_for(index),
                reason=(
                    f"rolling update: the replacement of CT {source.vmid} on {node}, created stopped to receive its "
                    f"kept volumes ({', '.join(intent.kept_volumes)}); {len(outdated)} outdated, "
                    f"maxSurge {intent.rollout_max_surge}"
                ),
                volumes_from=source.vmid,
            )
        )
    return actions


def _surge_victims(
    intent: PolicyIntent,
    present: Sequence[OwnedContainer],
    outdated: Sequence[OwnedContainer],
    desired: int,
    surplus: int,
) -> list[tuple[OwnedContainer, str]]:
    """A rollout's surplus (surge CTs made it, or replicas went down mid-rollout): outdated CTs go first,
    lowest index first, an available one (running, or offloaded on purpose) only while the rest keep
    ``replicas - maxUnavailable`` available; the rest of the surplus (current CTs) as scale-down chooses."""
    assert intent.rollout_max_unavailable is not None
    floor = desired - intent.rollout_max_unavailable

    def available(o: OwnedContainer) -> bool:
        return o.observation is not None and (o.observation.running or o.offloaded)

    left = sum(1 for o in present if available(o))
    chosen: list[tuple[OwnedContainer, str]] = []
    for item in sorted(outdated, key=lambda o: o.index):
        obs = item.observation
        assert obs is not None
        if len(chosen) >= surplus:
            break
        if obs.lock or item.vmid in intent.busy_vmids or not item.verified or obs.status is ContainerStatus.UNKNOWN:
            continue
        if available(item):
            if left - 1 < floor:
                continue
            left -= 1
        chosen.append(
            (
                item,
                f"rolling update: outdated (template {item.template_hash}, now {intent.template_hash}); "
                f"{left} of {desired} CTs stay available (maxUnavailable {intent.rollout_max_unavailable})",
            )
        )
    outdated_vmids = {o.vmid for o in outdated}
    current = [o for o in present if o.vmid not in outdated_vmids]
    if len(chosen) < surplus and len(current) > desired:
        # More current CTs than replicas (replicas went down mid-rollout): the usual choice among them.
        chosen += _scale_down_victims(intent, current, len(current) - desired)[: surplus - len(chosen)]
    return chosen


def _scale_down_victims(
    intent: PolicyIntent, present: Sequence[OwnedContainer], surplus: int
) -> list[tuple[OwnedContainer, str]]:
    """The CTs scale-down destroys now, with why: newest first; with spread constraints, from the most
    crowded domain first (each choice counted before the next), newest first within it. CTs that are
    busy, locked, unverified or of unknown state are skipped (tried again next cycle) and do not count."""

    def removable(o: OwnedContainer) -> bool:
        obs = o.observation
        assert obs is not None
        # Busy in PVE or in the pool's balancing, on an offline node (its status may be stale), or not
        # proven ours this cycle: left alone until next cycle.
        return not (obs.lock or o.vmid in intent.busy_vmids or not o.verified or obs.status is ContainerStatus.UNKNOWN)

    newest_first = sorted(present, key=lambda o: (o.created_at, o.index), reverse=True)
    rules = intent.topology
    if rules is None or not rules.spread:
        return [(o, "newest CTs go first") for o in newest_first[:surplus] if removable(o)]
    counts = count_by_node(o.observation.node for o in present if o.observation is not None)
    candidates = [o for o in newest_first if removable(o)]
    chosen: list[tuple[OwnedContainer, str]] = []
    for _ in range(min(surplus, len(candidates))):
        # max() keeps the first of equals: the newest among the most crowded.
        victim = max(candidates, key=lambda o: rules.crowding(counts, _node_of(o)))
        candidates.remove(victim)
        node = _node_of(victim)
        counts[node] -= 1
        chosen.append((victim, "from the most crowded topology domain first, newest first"))
    return chosen


def _node_of(owned: OwnedContainer) -> str:
    assert owned.observation is not None
    return owned.observation.node


@dataclass(frozen=True)
class FailedAttempt:
    """One earlier attempt at an action on a VMID, from the policy's recentActions (oldest first)."""

    vmid: int
    at_epoch: float
    succeeded: bool
    message: str = ""


@dataclass(frozen=True)
class Backoff:
    """A creation that failed ``failures`` times in a row is retried ``retry_in_seconds`` later."""

    vmid: int
    failures: int
    retry_in_seconds: float
    last_message: str


def creation_backoffs(
    attempts: Sequence[FailedAttempt], now: float, *, base_seconds: float, cap_seconds: float
) -> dict[int, Backoff]:
    """VMIDs whose creation keeps failing the same way, and how long to wait before trying again.

    The wait doubles with each failure in a row (``base_seconds``, 2x, 4x, ... up to ``cap_seconds``),
    so a creation that cannot work (a missing storage, a bad bridge) is not attempted, and told, at
    every cycle; a success ends the streak.
    """
    streaks: dict[int, list[FailedAttempt]] = {}
    for attempt in attempts:
        if attempt.succeeded:
            streaks.pop(attempt.vmid, None)
        else:
            streaks.setdefault(attempt.vmid, []).append(attempt)
    result = {}
    for vmid, streak in streaks.items():
        wait = min(cap_seconds, base_seconds * 2 ** (len(streak) - 1))
        left = streak[-1].at_epoch + wait - now
        if left > 0:
            result[vmid] = Backoff(vmid, len(streak), left, streak[-1].message)
    return result


def find_clone_source(snapshot: ClusterSnapshot, *, vmid: int | None, name: str | None) -> tuple[int, str]:
    """(VMID, node) of the template CT ``template.clone`` names (by VMID or by host name); ``ValueError``
    saying what is wrong when there is none, it is not a template, or the name is not unique."""
    if vmid is not None:
        ct = snapshot.containers.get(vmid)
        if ct is None:
            raise ValueError(f"clone.fromVmid {vmid}: no CT with that VMID in the cluster")
        if not ct.template:
            raise ValueError(f"clone.fromVmid {vmid}: CT {vmid} is not a template (pct template {vmid} makes it one)")
        return ct.vmid, ct.node
    found = sorted((c.vmid, c.node) for c in snapshot.containers.values() if c.template and c.name == name)
    if not found:
        raise ValueError(f"clone.fromName {name}: no template CT with that host name in the cluster")
    if len(found) > 1:
        listed = ", ".join(str(v) for v, _ in found)
        raise ValueError(f"clone.fromName {name}: several template CTs have that name ({listed}); use clone.fromVmid")
    return found[0]


def clone_volumes_shared(config: Mapping[str, object], shared_storages: frozenset[str], storage: str | None) -> bool:
    """Whether a clone of the template CT with this config may be made on any node: PVE's clone takes a
    ``target`` node only when every volume (rootfs, mpN) is on shared storage, and a full clone's
    ``storage`` is shared too (pve-container ``clone_vm``). Bind mounts and devices are never shared."""
    if storage is not None and storage not in shared_storages:
        return False
    volumes = [
        volume_of(value)
        for key, value in config.items()
        if key == "rootfs" or (key.startswith("mp") and key[2:].isdigit())
    ]
    return bool(volumes) and all(
        ":" in volume and not volume.startswith("/") and volume.split(":", 1)[0] in shared_storages
        for volume in volumes
    )

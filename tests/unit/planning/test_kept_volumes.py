"""Rolling updates with keepOnRecreate mount points: the planner pairs each outdated CT with a replacement
made stopped on its node, hands the kept volumes over (one action that stops, moves, starts, destroys), and
never proposes destroying a CT that still holds a kept volume for the rollout. A whole rollout, cycle by
cycle, keeps every volume (each ends on a current CT) within replicas - maxUnavailable available CTs."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pve_operator.planning.actions import (
    Action,
    CreateContainer,
    DestroyContainer,
    HandOverVolumes,
    StartContainer,
)
from pve_operator.planning.model import ContainerStatus
from pve_operator.planning.reconcile import OwnedContainer, PolicyIntent, plan_reconcile
from tests.unit.planning.test_reconcile import INTENT, lab, owned

KEEPING = replace(
    INTENT,
    replicas=3,
    template_hash="new",
    rollout_max_unavailable=1,
    rollout_max_surge=1,
    kept_volumes=("mp0",),
)


def _ct(vmid: int, node: str, index: int, template: str, *, stopped: bool = False, **more: object) -> OwnedContainer:
    item = owned(vmid, node, index, status=ContainerStatus.STOPPED if stopped else ContainerStatus.RUNNING)
    return replace(item, template_hash=template, **more)  # type: ignore[arg-type]


def _plan(intent: PolicyIntent, fleet: list[OwnedContainer]) -> list[Action]:
    return plan_reconcile(intent, lab(*[o.observation for o in fleet]), fleet).actions


def _of(kind: type, actions: list[Action]) -> list:  # type: ignore[type-arg]
    return [a for a in actions if isinstance(a, kind)]


def test_the_replacement_is_made_on_the_outdated_cts_node_to_receive_its_volumes_and_nothing_is_destroyed() -> None:
    fleet = [_ct(3100, "srv-px2", 0, "old"), _ct(3101, "srv-px1", 1, "old"), _ct(3102, "srv-px1", 2, "old")]
    actions = _plan(KEEPING, fleet)
    (made,) = _of(CreateContainer, actions)
    assert (made.vmid, made.index, made.node, made.volumes_from) == (3103, 3, "srv-px2", 3100), (
        "the lowest outdated index, on its node (move_volume only works within a node), lowest free index"
    )
    assert "kept volumes (mp0)" in made.reason
    assert not _of(DestroyContainer, actions), "no CT holding a kept volume is destroyed by the rollout"
    # Without kept volumes the same fleet would be rolled by destroying a CT in place (maxUnavailable 1).
    plain = _plan(replace(KEEPING, kept_volumes=()), fleet)
    assert [a.vmid for a in _of(DestroyContainer, plain)] == [3100]


def test_a_pair_gets_one_handover_the_replacement_is_not_started_on_its_own_and_nothing_else_is_made() -> None:
    fleet = [
        _ct(3100, "srv-px2", 0, "old"),
        _ct(3101, "srv-px1", 1, "old"),
        _ct(3102, "srv-px1", 2, "old"),
        _ct(3103, "srv-px2", 3, "new", stopped=True, volumes_from=3100),
    ]
    actions = _plan(KEEPING, fleet)
    (handover,) = _of(HandOverVolumes, actions)
    assert (handover.vmid, handover.node, handover.source_vmid, handover.keys) == (3103, "srv-px2", 3100, ("mp0",))
    assert not _of(StartContainer, actions), "the replacement starts only once it has the volumes"
    assert not _of(DestroyContainer, actions), "the pair counts as one CT: no surplus"
    assert not _of(CreateContainer, actions), "maxSurge 1: one handover at a time"
    plan = plan_reconcile(KEEPING, lab(*[o.observation for o in fleet]), fleet)
    assert plan.handovers == {3103: 3100} and plan.outdated == (3100, 3101, 3102)


def test_a_handover_that_would_stop_a_running_source_waits_for_the_unavailability_budget() -> None:
    fleet = [
        _ct(3100, "srv-px2", 0, "old"),
        _ct(3101, "srv-px1", 1, "old", stopped=True),  # stopped by hand: already one unavailable
        _ct(3102, "srv-px1", 2, "old"),
        _ct(3103, "srv-px2", 3, "new", stopped=True, volumes_from=3100),
    ]
    actions = _plan(KEEPING, fleet)
    assert not _of(HandOverVolumes, actions), "maxUnavailable 1 is used by the stopped CT"
    assert [a.vmid for a in _of(StartContainer, actions)] == [3101]
    # A source already stopped (a handover cut short after its stop) needs no budget: it is finished.
    cut_short = [replace(fleet[0], observation=replace(fleet[0].observation, status=ContainerStatus.STOPPED))]
    actions = _plan(KEEPING, cut_short + fleet[1:])
    assert [a.source_vmid for a in _of(HandOverVolumes, actions)] == [3100]
    assert 3100 not in [a.vmid for a in _of(StartContainer, actions)], "mid-handover: not started again"


def test_while_the_rollout_is_paused_a_stopped_source_is_started_again_and_no_handover_runs() -> None:
    fleet = [
        _ct(3100, "srv-px2", 0, "old", stopped=True),
        _ct(3101, "srv-px1", 1, "old"),
        _ct(3102, "srv-px1", 2, "old"),
        _ct(3103, "srv-px2", 3, "new", stopped=True, volumes_from=3100),
    ]
    actions = _plan(replace(KEEPING, rollout_paused=True), fleet)
    assert not _of(HandOverVolumes, actions)
    assert [a.vmid for a in _of(StartContainer, actions)] == [3100], "never left stopped while handovers wait"


def test_a_replacement_whose_source_is_gone_gets_empty_volumes_and_starts() -> None:
    fleet = [
        _ct(3101, "srv-px1", 1, "old"),
        _ct(3102, "srv-px1", 2, "old"),
        _ct(3103, "srv-px2", 3, "new", stopped=True, volumes_from=3100),
    ]
    actions = _plan(KEEPING, fleet)
    (handover,) = _of(HandOverVolumes, actions)
    assert handover.vmid == 3103 and handover.source_vmid is None and "is gone" in handover.reason
    assert not _of(StartContainer, actions)


def test_changing_the_spec_back_keeps_the_source_and_its_volumes_and_the_replacement_goes() -> None:
    fleet = [
        _ct(3100, "srv-px2", 0, "old"),
        _ct(3101, "srv-px1", 1, "old"),
        _ct(3102, "srv-px1", 2, "old"),
        _ct(3103, "srv-px2", 3, "new", stopped=True, volumes_from=3100),
    ]
    actions = _plan(replace(KEEPING, template_hash="old"), fleet)
    assert [a.vmid for a in _of(DestroyContainer, actions)] == [3103]
    assert not _of(HandOverVolumes, actions) and not _of(StartContainer, actions)


def test_lowering_replicas_mid_handover_never_destroys_the_source_or_the_replacement() -> None:
    fleet = [
        _ct(3100, "srv-px2", 0, "old"),
        _ct(3101, "srv-px1", 1, "old"),
        _ct(3102, "srv-px1", 2, "old"),
        _ct(3103, "srv-px2", 3, "new", stopped=True, volumes_from=3100),
    ]
    actions = _plan(replace(KEEPING, replicas=2), fleet)
    destroyed = {a.vmid for a in _of(DestroyContainer, actions)}
    assert destroyed and not destroyed & {3100, 3103}, destroyed


PROPERTIES = settings(
    max_examples=150, derandomize=True, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTIES
@given(
    replicas=st.integers(1, 6),
    budget=st.sampled_from([(1, 1), (2, 1), (1, 2), (3, 3)]),
    nodes=st.lists(st.sampled_from(["srv-px1", "srv-px2"]), min_size=6, max_size=6),
    interrupted=st.lists(st.booleans(), min_size=30, max_size=30),
)
def test_a_whole_rollout_with_kept_volumes_loses_no_volume_and_keeps_the_budget(
    replicas: int, budget: tuple[int, int], nodes: list[str], interrupted: list[bool]
) -> None:
    """Cycle after cycle: creations appear stopped, a handover either completes (volume moved, target runs,
    source destroyed) or is cut short after stopping its source. Every volume the fleet started with ends on a
    current CT, no CT is destroyed while it holds one, availability never drops below replicas -
    maxUnavailable, and the rollout ends."""
    max_unavailable, max_surge = budget
    intent = replace(KEEPING, replicas=replicas, rollout_max_unavailable=max_unavailable, rollout_max_surge=max_surge)
    fleet = [_ct(3100 + i, nodes[i], i, "old") for i in range(replicas)]
    volumes = {3100 + i: f"data-{i}" for i in range(replicas)}  # CT -> the kept volume it holds
    cuts = iter(interrupted)
    for cycle in range(8 * replicas + 10):
        actions = _plan(intent, fleet)
        for action in actions:
            if isinstance(action, DestroyContainer):
                assert action.vmid not in volumes, f"cycle {cycle}: CT {action.vmid} destroyed with its volume"
                fleet = [o for o in fleet if o.vmid != action.vmid]
            elif isinstance(action, CreateContainer):
                assert action.volumes_from is not None, "with kept volumes every new CT is a paired replacement"
                source = next(o for o in fleet if o.vmid == action.volumes_from)
                assert action.node == source.observation.node  # type: ignore[union-attr]
                made = _ct(
                    action.vmid, action.node, action.index, "new", stopped=True, volumes_from=action.volumes_from
                )
                fleet.append(made)
            elif isinstance(action, HandOverVolumes):
                assert action.source_vmid is not None
                fleet = [
                    replace(o, observation=replace(o.observation, status=ContainerStatus.STOPPED))  # type: ignore[type-var]
                    if o.vmid == action.source_vmid
                    else o
                    for o in fleet
                ]
                if next(cuts, False):
                    continue  # the operator died after stopping the source
                volumes[action.vmid] = volumes.pop(action.source_vmid)
                fleet = [
                    replace(o, observation=replace(o.observation, status=ContainerStatus.RUNNING))  # type: ignore[type-var]
                    if o.vmid == action.vmid
                    else o
                    for o in fleet
                    if o.vmid != action.source_vmid
                ]
            elif isinstance(action, StartContainer):
                fleet = [
                    replace(o, observation=replace(o.observation, status=ContainerStatus.RUNNING))  # type: ignore[type-var]
                    if o.vmid == action.vmid
                    else o
                    for o in fleet
                ]
        available = sum(1 for o in fleet if o.observation is not None and o.observation.running)
        assert available >= replicas - max_unavailable, f"cycle {cycle}: {available} available"
        if all(o.template_hash == "new" for o in fleet) and len(fleet) == replicas and available == replicas:
            break
    assert all(o.template_hash == "new" for o in fleet) and len(fleet) == replicas, "the rollout did not finish"
    assert sorted(volumes.values()) == sorted(f"data-{i}" for i in range(replicas)), "a volume was lost"
    assert set(volumes) == {o.vmid for o in fleet}, "every current CT holds one of the original volumes"


def test_turning_keep_on_recreate_on_recreates_no_ct_and_the_intent_lists_the_kept_keys() -> None:
    from pve_operator.api.v1alpha1 import ContainerPolicySpec, ProxmoxServerPoolSpec, template_hash
    from pve_operator.execution.policy_input import blueprint_from, intent_from
    from pve_operator.pve.params import kept_volume_keys
    from tests.fixtures.crds import load_sample

    spec = load_sample("containerpolicy-web.yaml")["spec"]
    spec["updateStrategy"] = {"maxUnavailable": 1, "maxSurge": 1}
    cache = {"storage": "local-lvm", "sizeGiB": 4, "path": "/srv/cache"}
    data = {"storage": "local-lvm", "sizeGiB": 8, "path": "/srv/data"}
    spec["template"]["mountPoints"] = [cache, data]
    plain = ContainerPolicySpec.model_validate(spec)
    spec["template"]["mountPoints"] = [cache, {**data, "keepOnRecreate": True}]
    kept = ContainerPolicySpec.model_validate(spec)
    assert template_hash(plain.template) == template_hash(kept.template), "how a volume outlives its CT is no change"
    spec["template"]["mountPoints"] = [cache, {**data, "keepOnRecreate": True, "sizeGiB": 16}]
    bigger = ContainerPolicySpec.model_validate(spec)
    assert template_hash(bigger.template) != template_hash(kept.template)
    pool = ProxmoxServerPoolSpec.model_validate(load_sample("proxmoxserverpool-lab.yaml")["spec"])
    assert intent_from(kept, pool, "uid-web", 0).kept_volumes == ("mp1",)
    assert intent_from(plain, pool, "uid-web", 0).kept_volumes == ()
    assert kept_volume_keys(blueprint_from(kept).mount_points) == ("mp1",)


def test_turning_keep_on_recreate_off_mid_handover_starts_the_waiting_replacement_as_a_surge_ct() -> None:
    fleet = [
        _ct(3100, "srv-px2", 0, "old"),
        _ct(3101, "srv-px1", 1, "old"),
        _ct(3102, "srv-px1", 2, "old"),
        _ct(3103, "srv-px2", 3, "new", stopped=True, volumes_from=3100),
    ]
    plan = plan_reconcile(replace(KEEPING, kept_volumes=()), lab(*[o.observation for o in fleet]), fleet)
    assert plan.handovers == {} and not _of(HandOverVolumes, plan.actions)
    assert [a.vmid for a in _of(StartContainer, plan.actions)] == [3103]
    assert not _of(CreateContainer, plan.actions), "replicas + maxSurge CTs exist"

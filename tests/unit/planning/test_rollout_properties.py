"""Rolling updates over random fleets (hypothesis, derandomized): whatever the mix of current, outdated,
stopped, offloaded, locked and missing CTs, a cycle's plan never takes the policy below
``replicas - maxUnavailable`` available CTs, never destroys a current CT for the rollout, never goes beyond
``replicas + maxSurge`` CTs, and destroys nothing while the rollout is paused (creations failing). A whole
rollout, cycle after cycle with CTs that take a cycle or more to start, keeps both bounds at every step and
ends with every CT current."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pve_operator.planning.actions import CreateContainer, DestroyContainer
from pve_operator.planning.model import ContainerStatus
from pve_operator.planning.reconcile import OwnedContainer, PolicyIntent, plan_reconcile
from tests.unit.planning.test_reconcile import INTENT, lab, owned

PROPERTIES = settings(
    max_examples=300, derandomize=True, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def _rolling(replicas: int, max_unavailable: int, max_surge: int, *, paused: bool = False) -> PolicyIntent:
    """The test policy rolling its CTs from template "old" to "new" with this budget."""
    return replace(
        INTENT,
        replicas=replicas,
        template_hash="new",
        rollout_max_unavailable=max_unavailable,
        rollout_max_surge=max_surge,
        rollout_paused=paused,
    )


@st.composite
def fleets(draw: st.DrawFn) -> tuple[PolicyIntent, list[OwnedContainer]]:
    replicas = draw(st.integers(1, 8))
    present: list[OwnedContainer] = []
    for index in range(replicas):
        if draw(st.integers(0, 9)) == 0:
            continue  # missing (being recreated, deleted by hand)
        status = draw(st.sampled_from([ContainerStatus.RUNNING] * 4 + [ContainerStatus.STOPPED]))
        item = owned(
            3100 + index,
            draw(st.sampled_from(["srv-px1", "srv-px2"])),
            index,
            status=status,
            lock=draw(st.sampled_from([None] * 6 + ["backup"])),
        )
        offloaded = status is ContainerStatus.STOPPED and draw(st.booleans())
        present.append(replace(item, template_hash=draw(st.sampled_from(["new", "old", "old"])), offloaded=offloaded))
    max_unavailable, max_surge = draw(st.sampled_from([(1, 0), (2, 0), (3, 0), (0, 1), (0, 2), (1, 1), (2, 3)]))
    intent = _rolling(replicas, max_unavailable, max_surge, paused=draw(st.integers(0, 4)) == 0)
    return intent, present


@PROPERTIES
@given(fleets())
def test_a_rollout_cycle_stays_within_max_unavailable(fleet: tuple[PolicyIntent, list[OwnedContainer]]) -> None:
    intent, present = fleet
    assert intent.rollout_max_unavailable is not None and intent.replicas is not None
    plan = plan_reconcile(intent, lab(*[p.observation for p in present]), present)
    destroyed = {a.vmid for a in plan.actions if isinstance(a, DestroyContainer)}
    available_before = sum(1 for o in present if o.observation is not None and (o.observation.running or o.offloaded))
    available_after = sum(
        1
        for o in present
        if o.vmid not in destroyed and o.observation is not None and (o.observation.running or o.offloaded)
    )
    floor = intent.replicas - intent.rollout_max_unavailable
    # The rollout only ever destroys while that keeps at least the floor available (or while the policy
    # was already below it, it destroys nothing).
    assert available_after >= min(floor, available_before), (available_before, available_after, floor)
    assert all(next(o for o in present if o.vmid == v).template_hash == "old" for v in destroyed)
    if intent.rollout_paused:
        assert not destroyed
    creates = [a for a in plan.actions if isinstance(a, CreateContainer)]
    # The CTs destroyed this cycle still count: they may be there until their destroy task ends.
    assert len(present) + len(creates) <= intent.replicas + intent.rollout_max_surge


def _available(o: OwnedContainer) -> bool:
    return o.observation is not None and (o.observation.running or o.offloaded)


@PROPERTIES
@given(
    replicas=st.integers(1, 7),
    budget=st.sampled_from([(1, 0), (2, 0), (0, 1), (0, 2), (1, 1), (2, 2)]),
    start_delays=st.lists(st.integers(0, 2), min_size=40, max_size=40),
)
def test_a_whole_rollout_keeps_both_bounds_at_every_cycle_and_ends_current(
    replicas: int, budget: tuple[int, int], start_delays: list[int]
) -> None:
    """Cycle after cycle (destroys take effect at once, a created CT runs 0-2 cycles later), the policy never
    has fewer than replicas - maxUnavailable CTs available nor more than replicas + maxSurge CTs, and every
    CT is current within a bounded number of cycles."""
    max_unavailable, max_surge = budget
    intent = _rolling(replicas, max_unavailable, max_surge)
    fleet = [replace(owned(3100 + i, "srv-px1", i), template_hash="old") for i in range(replicas)]
    starts_in: dict[int, int] = {}
    delays = iter(start_delays)
    for cycle in range(6 * replicas + 10):
        plan = plan_reconcile(intent, lab(*[o.observation for o in fleet]), fleet)
        destroyed = {a.vmid for a in plan.actions if isinstance(a, DestroyContainer)}
        made = [a for a in plan.actions if isinstance(a, CreateContainer)]
        assert len(fleet) + len(made) <= replicas + max_surge, f"cycle {cycle}: too many CTs"
        fleet = [o for o in fleet if o.vmid not in destroyed]
        for action in made:
            delay = next(delays, 0)
            ct = owned(action.vmid, action.node, action.index, created=f"2026-11-24T{cycle:02d}:00:00Z")
            if delay:
                ct = replace(ct, observation=replace(ct.observation, status=ContainerStatus.STOPPED))  # type: ignore[type-var]
                starts_in[action.vmid] = delay
            fleet.append(replace(ct, template_hash="new"))
        assert sum(1 for o in fleet if _available(o)) >= min(replicas - max_unavailable, replicas), (
            f"cycle {cycle}: below replicas - maxUnavailable available"
        )
        # Between cycles: CTs created stopped come up after their delay (the operator's start, PVE's boot).
        for vmid in list(starts_in):
            starts_in[vmid] -= 1
            if starts_in[vmid] <= 0:
                del starts_in[vmid]
                fleet = [
                    replace(o, observation=replace(o.observation, status=ContainerStatus.RUNNING))  # type: ignore[type-var]
                    if o.vmid == vmid
                    else o
                    for o in fleet
                ]
        if all(o.template_hash == "new" for o in fleet) and len(fleet) == replicas and not starts_in:
            break
    assert all(o.template_hash == "new" for o in fleet), "the rollout did not finish"
    assert len(fleet) == replicas

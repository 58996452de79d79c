"""Rolling updates over random fleets (hypothesis, derandomized): whatever the mix of current, outdated,
stopped, offloaded, locked and missing CTs, a cycle's plan never takes the policy below
``replicas - maxUnavailable`` available CTs, never destroys a current CT for the rollout, never goes beyond
``replicas`` CTs, and destroys nothing while the rollout is paused (creations failing)."""

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
    intent = replace(
        INTENT,
        replicas=replicas,
        template_hash="new",
        rollout_max_unavailable=draw(st.integers(1, 3)),
        rollout_paused=draw(st.integers(0, 4)) == 0,
    )
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
    assert len(present) - len(destroyed) + len(creates) <= intent.replicas

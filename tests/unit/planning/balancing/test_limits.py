"""The limits: what one cycle may do, in which order, and what each action must wait for."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from pve_operator.planning.actions import MigrateContainer, OffloadContainer, RestoreContainer
from pve_operator.planning.balancing import (
    BalancingInput,
    BalancingLimits,
    InFlight,
    ManagedCT,
    PoolNodeSpec,
    RefusalKind,
    apply_limits,
    plan_balance,
)
from pve_operator.planning.model import ClusterSnapshot, ContainerStatus
from tests.builders import build_ct, build_node

NOW = 1_000_000.0


def cluster(**limits: int) -> BalancingInput:
    """x is nearly full (74 % of 32 GiB); s is overloaded; y has room. CT 201 (4 GiB) sits on x."""
    cts = [
        build_ct(101, "s", memory_used_mib=2048),
        build_ct(201, "x", memory_used_mib=4096),
        build_ct(301, "y", memory_used_mib=1024),
        build_ct(901, "s", memory_used_mib=1024),  # foreign
        build_ct(102, "s", status=ContainerStatus.STOPPED),
    ]
    snapshot = ClusterSnapshot.of(
        NOW,
        [
            build_node("s", memory_used_gib=28),
            build_node("x", memory_used_gib=32 * 0.74),
            build_node("y", memory_used_gib=8),
        ],
        cts,
    )
    managed = {vmid: ManagedCT(vmid, "web", 100, "2026-01-01T00:00:00Z") for vmid in (101, 102, 201, 301)}
    return BalancingInput(
        snapshot=snapshot,
        pool_nodes=(PoolNodeSpec("s"), PoolNodeSpec("x"), PoolNodeSpec("y")),
        managed=managed,
        history={},
        now=NOW,
        limits=BalancingLimits(**limits),
    )


def move(vmid: int, source: str, target: str, *, evacuation: bool = False) -> MigrateContainer:
    return MigrateContainer(vmid, source, target, True, "test", 0, 0, 0, 0, evacuation=evacuation)


def test_an_arrival_waits_for_the_departure_that_makes_its_room_and_depends_on_it() -> None:
    # Listed the wrong way round: 101 into x only fits once 201 has left x.
    limited = apply_limits(cluster(max_concurrent_migrations=2), [move(101, "s", "x"), move(201, "x", "y")])
    assert [a.vmid for a in limited.actions] == [201, 101]
    assert limited.depends_on == {101: (201,)}
    assert limited.refusals == ()


def test_an_arrival_whose_room_was_held_back_is_refused_not_squeezed_in() -> None:
    # y already receives a migration, so 201 cannot leave x this cycle, so 101 has no room on x.
    inp = replace(cluster(max_concurrent_migrations=3), in_flight=InFlight(migrations=MappingProxyType({301: "y"})))
    limited = apply_limits(inp, [move(201, "x", "y"), move(101, "s", "x")])
    assert limited.actions == ()
    assert [(r.vmid, r.kind) for r in limited.refusals] == [
        (201, RefusalKind.INBOUND_LIMIT),
        (101, RefusalKind.WOULD_OVERCOMMIT),
    ]


def test_concurrency_counts_migrations_in_flight() -> None:
    inp = replace(cluster(max_concurrent_migrations=2), in_flight=InFlight(migrations=MappingProxyType({301: "s"})))
    limited = apply_limits(inp, [move(201, "x", "y"), move(102, "s", "y")])
    assert [a.vmid for a in limited.actions] == [201]
    assert limited.refusals[0].kind is RefusalKind.CONCURRENCY_LIMIT


def test_the_limits_refuse_what_no_strategy_should_propose() -> None:
    inp = cluster(max_concurrent_migrations=5, max_inbound_per_target=5)
    managed = dict(inp.managed)
    managed[101] = replace(managed[101], pinned=True)
    managed[201] = replace(managed[201], last_action_at=NOW - 60)
    inp = replace(inp, managed=managed)
    limited = apply_limits(
        inp,
        [
            move(901, "s", "y"),  # foreign
            move(101, "s", "y"),  # pinned
            move(201, "x", "y"),  # cooldown
            move(102, "x", "y"),  # stale: 102 is on s
        ],
    )
    assert limited.actions == ()
    assert [r.kind for r in limited.refusals] == [
        RefusalKind.NOT_MANAGED,
        RefusalKind.PINNED,
        RefusalKind.COOLDOWN,
        RefusalKind.IN_FLIGHT,
    ]


def test_a_drain_ignores_the_cooldown_but_not_the_pin() -> None:
    inp = cluster(max_concurrent_migrations=5, max_inbound_per_target=5)
    managed = dict(inp.managed)
    managed[201] = replace(managed[201], last_action_at=NOW - 60)
    managed[301] = replace(managed[301], pinned=True)
    limited = apply_limits(replace(inp, managed=managed), [move(201, "x", "y", evacuation=True)])
    assert [a.vmid for a in limited.actions] == [201]
    pinned = apply_limits(replace(inp, managed=managed), [move(301, "y", "s", evacuation=True)])
    assert pinned.refusals[0].kind is RefusalKind.PINNED


def test_a_pinned_offloaded_ct_may_start_where_it_lies() -> None:
    inp = cluster()
    managed = dict(inp.managed)
    managed[102] = replace(managed[102], pinned=True, offloaded=True)
    inp = replace(
        inp,
        managed=managed,
        snapshot=replace(
            inp.snapshot, nodes=MappingProxyType({**inp.snapshot.nodes, "s": build_node("s", memory_used_gib=4)})
        ),
    )
    in_place = RestoreContainer(102, "s", "s", "test", 1024**3, 0.1, 0, 0, 0, 0)
    elsewhere = replace(in_place, target="y")
    assert apply_limits(inp, [in_place]).actions == (in_place,)
    assert apply_limits(inp, [elsewhere]).refusals[0].kind is RefusalKind.PINNED


def test_an_offload_makes_room_for_a_later_arrival_on_its_node() -> None:
    inp = cluster(max_concurrent_migrations=2)
    # x at 74 % cannot take CT 301 (1 GiB: 77 %) until CT 201 (4 GiB) is stopped there.
    limited = apply_limits(inp, [move(301, "y", "x"), OffloadContainer(201, "x", "test", 0, 0)])
    assert [a.vmid for a in limited.actions] == [201, 301]
    assert limited.depends_on == {301: (201,)}


def test_first_fit_through_plan_balance_is_stopped_from_overcommitting() -> None:
    # s at 87.5 % sends its first CT to x (the first other node), which would go above 75 %: refused.
    inp = cluster(max_concurrent_migrations=2)
    inp = replace(inp, history={"s": [0.875] * 3})
    plan = plan_balance(inp, migration="firstFit")
    assert all(not isinstance(a, MigrateContainer) for a in plan.actions)
    assert any(r.kind is RefusalKind.WOULD_OVERCOMMIT and r.vmid == 101 for r in plan.refusals)

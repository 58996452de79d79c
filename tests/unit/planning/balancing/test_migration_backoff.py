"""A CT whose migration failed is not tried again every cycle (issue 15 §9).

PVE's restart migration shuts the CT down without force (pve-container ``src/PVE/LXC/Migrate.pm``,
``prepare``); a CT that ignores the shutdown fails the task with ``container did not stop`` and keeps
running on its node. Trying it again every cycle would be a loop of failed tasks, each costing the
shutdown timeout: the planner backs off (10 min, doubling per failure in a row, capped at 6 h) and says
why, and picks another CT for the relief meanwhile.
"""

from __future__ import annotations

from dataclasses import replace

from pve_operator.planning.balancing import (
    BalancingInput,
    BalancingLimits,
    ManagedCT,
    PoolNodeSpec,
    RefusalKind,
    apply_limits,
    plan_balance,
)
from pve_operator.planning.balancing.inputs import (
    MIGRATION_RETRY_BACKOFF_CAP_SECONDS,
    MigrationFailures,
    migration_failures_from,
)
from pve_operator.planning.model import ClusterSnapshot
from tests.builders import build_ct, build_node
from tests.unit.planning.balancing.test_limits import move

NOW = 2_000_000.0
DID_NOT_STOP = "migration problems: container did not stop"


def overloaded(failures: dict[int, MigrationFailures] | None = None) -> BalancingInput:
    """s is above migrateAbovePercent; moving either 101 or 102 (4 GiB each) to y relieves it."""
    failures = failures or {}
    snapshot = ClusterSnapshot.of(
        NOW,
        [build_node("s", memory_used_gib=29), build_node("y", memory_used_gib=8)],
        [build_ct(101, "s", memory_used_mib=4096), build_ct(102, "s", memory_used_mib=4096)],
    )
    managed = {
        vmid: ManagedCT(vmid, "web", 100, f"2026-01-01T00:00:0{vmid - 100}Z", migration_failures=failures.get(vmid))
        for vmid in (101, 102)
    }
    return BalancingInput(
        snapshot=snapshot,
        pool_nodes=(PoolNodeSpec("s"), PoolNodeSpec("y")),
        managed=managed,
        history={"s": [29 / 32] * 3, "y": [8 / 32] * 3},  # sustained: the relief is due now
        now=NOW,
        limits=BalancingLimits(),
    )


def test_consecutive_failures_are_counted_and_a_success_resets_them() -> None:
    recorded = [
        (101, "Migrate", "Failed", 10.0, "first"),
        (101, "Migrate", "Succeeded", 20.0, "ok"),
        (101, "Migrate", "Failed", 30.0, "again"),
        (101, "Offload", "Failed", 35.0, "not a migration"),
        (101, "Migrate", "InProgress", 38.0, "started"),
        (101, "Migrate", "Failed", 40.0, DID_NOT_STOP),
        (102, "Migrate", "Succeeded", 50.0, "ok"),
    ]
    assert migration_failures_from(recorded) == {101: MigrationFailures(2, 40.0, DID_NOT_STOP)}


def test_the_backoff_doubles_per_failure_and_is_capped() -> None:
    assert MigrationFailures(1, 0.0, "x").retry_at() == 600.0
    assert MigrationFailures(3, 0.0, "x").retry_at() == 2400.0
    assert MigrationFailures(30, 0.0, "x").retry_at() == MIGRATION_RETRY_BACKOFF_CAP_SECONDS


def test_a_ct_that_did_not_stop_is_not_proposed_again_and_the_refusal_says_why() -> None:
    inp = overloaded({101: MigrationFailures(1, NOW - 60, DID_NOT_STOP)})
    plan = plan_balance(inp)
    assert [(a.vmid, a.target) for a in plan.actions] == [(102, "y")]  # the relief takes the other CT
    refusal = next(r for r in plan.refusals if r.vmid == 101)
    assert refusal.kind is RefusalKind.MIGRATION_FAILED
    assert "ignored the shutdown" in refusal.reason and "never force-stops" in refusal.reason
    assert "9m00s" in refusal.reason and DID_NOT_STOP in refusal.reason


def test_after_the_backoff_the_ct_may_move_again() -> None:
    inp = overloaded({101: MigrationFailures(1, NOW - 601, DID_NOT_STOP), 102: MigrationFailures(1, NOW - 60, "x")})
    plan = plan_balance(inp)
    assert [(a.vmid, a.target) for a in plan.actions] == [(101, "y")]


def test_the_limits_refuse_a_migration_in_backoff_whoever_proposed_it() -> None:
    inp = overloaded({101: MigrationFailures(2, NOW - 900, DID_NOT_STOP)})
    limited = apply_limits(inp, [move(101, "s", "y")])
    assert limited.actions == ()
    assert [r.kind for r in limited.refusals] == [RefusalKind.MIGRATION_FAILED]
    # A drain (evacuation) is refused too: it would fail the same way.
    limited = apply_limits(inp, [move(101, "s", "y", evacuation=True)])
    assert [r.kind for r in limited.refusals] == [RefusalKind.MIGRATION_FAILED]
    # Offload does not migrate: a failed migration does not hold it back.
    assert replace(inp.managed[101]).migration_retry_at() == NOW - 900 + 1200

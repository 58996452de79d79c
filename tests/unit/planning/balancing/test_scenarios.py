"""Every balancing scenario in tests/scenarios/balancing/: the plan a user would see for that cluster.

Each file states the cluster and what the operator must do (and refuse, and say). Beyond what a file
lists, every scenario checks what must hold always: only our CTs are touched, the same input gives
the same plan even with CTs listed in another order, and no action takes its target above its
threshold.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pve_operator.planning.actions import MigrateContainer, RestoreContainer
from pve_operator.planning.balancing.state import WorkingState
from tests.unit.planning.balancing.scenarios import build_input, load, matches, run, scenario_paths

PATHS = scenario_paths()


def test_there_are_enough_scenarios() -> None:
    assert len(PATHS) >= 15


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_scenario(path: Path) -> None:
    scenario = load(path)
    outcome = run(scenario)
    expect = scenario.expect

    summary = [f"{a.kind} {a.vmid} {a.node}->{getattr(a, 'target', '-')}" for a in outcome.actions]
    assert len(outcome.actions) == len(expect.actions), f"{scenario.name}: got {summary}"
    for action, wanted in zip(outcome.actions, expect.actions, strict=True):
        assert matches(action, wanted), f"{scenario.name}: {action} does not match {wanted} (plan {summary})"
    for action, fragments in zip(outcome.actions, expect.reasons, strict=False):
        for fragment in fragments:
            assert fragment in action.reason, f"{scenario.name}: {fragment!r} not in {action.reason!r}"

    for wanted in expect.refusals:
        seen = [(r.kind.value, r.vmid, r.reason) for r in outcome.refusals]
        assert any(matches(r, wanted) for r in outcome.refusals), f"{scenario.name}: no refusal like {wanted} in {seen}"
    if expect.only_these_refusals:
        assert len(outcome.refusals) == len(expect.refusals), [r.reason for r in outcome.refusals]

    # Always: only our CTs, and no target above its threshold at any step of the plan.
    inp = build_input(scenario)
    assert {a.vmid for a in outcome.actions} <= set(inp.managed)
    state = WorkingState(inp.snapshot, inp.thresholds.metric)
    for action in outcome.actions:
        state.apply(action)
        if isinstance(action, MigrateContainer) and scenario.strategy != "firstFit":
            assert state.fraction(action.target) <= inp.thresholds.migrate_above_fraction + 1e-9
        if isinstance(action, RestoreContainer):
            assert state.fraction(action.target) <= inp.thresholds.restore_below_fraction + 1e-9

    # The same input gives the same plan, whatever order the snapshot lists CTs in.
    assert run(scenario) == outcome
    assert run(scenario, reverse=True) == outcome

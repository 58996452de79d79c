"""The strategy registry and the args models: names, parsing from CRD-style mappings, validation."""

from __future__ import annotations

import pytest

from pve_operator.planning.balancing import (
    BalancingInput,
    BalancingLimits,
    FirstFitArgs,
    Objective,
    OffloadArgs,
    PoolNodeSpec,
    RebalanceArgs,
    RestoreArgs,
    Thresholds,
    get_strategy,
    plan_balance,
    register,
    strategy_names,
)
from pve_operator.planning.model import ClusterSnapshot, Metric
from tests.builders import build_node


def test_the_five_strategies_are_registered_with_their_args() -> None:
    assert strategy_names() == ("firstFit", "level", "offload", "rebalance", "restore")
    assert get_strategy("level").stage == "Migrate"
    assert get_strategy("rebalance").args_type is RebalanceArgs
    assert get_strategy("offload").default_args() == OffloadArgs()
    assert get_strategy("restore").stage == "Restore"
    assert get_strategy("firstFit").args_type is FirstFitArgs


def test_an_unknown_strategy_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="known: firstFit, level, offload, rebalance, restore"):
        get_strategy("leastLoaded")


def test_a_name_registers_once() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register(get_strategy("rebalance"))


def test_args_parse_from_camel_case_and_reject_typos_and_bad_values() -> None:
    rebalance = get_strategy("rebalance")
    args = rebalance.parse_args({"restartCost": 4, "memoryCostPerGib": 0.5, "polish": False})
    assert args == RebalanceArgs(restart_cost=4, memory_cost_per_gib=0.5, polish=False)
    with pytest.raises(ValueError, match="no argument 'restartCosts'"):
        rebalance.parse_args({"restartCosts": 4})
    with pytest.raises(ValueError, match="restart_cost must not be negative"):
        rebalance.parse_args({"restartCost": -1})
    assert get_strategy("restore").parse_args({"allowMigration": False}) == RestoreArgs(allow_migration=False)


def test_a_strategy_refuses_args_of_another_strategy() -> None:
    inp = BalancingInput(
        snapshot=ClusterSnapshot.of(0.0, [build_node("a")]),
        pool_nodes=(PoolNodeSpec("a"),),
        managed={},
        history={},
        now=0,
    )
    with pytest.raises(TypeError, match="takes RebalanceArgs"):
        get_strategy("rebalance").propose(inp, OffloadArgs())
    with pytest.raises(ValueError, match="plans Offload, not Migrate"):
        plan_balance(inp, migration="offload")


def test_settings_are_validated_like_the_crd() -> None:
    with pytest.raises(ValueError, match="restore_below < migrate_above < offload_above"):
        Thresholds.from_percent(migrate_above_percent=95)
    with pytest.raises(ValueError, match="max_concurrent_migrations"):
        BalancingLimits(max_concurrent_migrations=0)
    thresholds = Thresholds.from_percent(metric=Metric.CPU, migrate_above_percent=80, sustained_samples=5)
    assert (thresholds.migrate_above_fraction, thresholds.sustained_samples) == (0.8, 5)
    assert BalancingLimits.from_percent(min_improvement_percent=5).min_improvement_fraction == 0.05


def test_the_objective_orders_overload_first_then_peak_then_spread() -> None:
    calm = Objective(nodes_above=0, peak_excess=0.0, squared_excess=0.0)
    one_high = Objective(nodes_above=1, peak_excess=0.2, squared_excess=0.04)
    two_low = Objective(nodes_above=2, peak_excess=0.01, squared_excess=0.0002)
    assert one_high.worse_than(calm) and two_low.worse_than(one_high) and not calm.worse_than(calm)
    assert not Objective(1, 0.2, 0.04 + 1e-12).worse_than(one_high), "float noise is not a loss"

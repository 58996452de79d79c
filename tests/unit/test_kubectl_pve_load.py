"""``kubectl pve status``: a node's figure in the pool's metric, weighted metrics included, computed
with the planner's own weighted mean (``WeightedMetric``) and the CRD's default weights."""

from __future__ import annotations

import pytest

from pve_operator.kubectl_plugin import _load_against

NODE = {"name": "srv-px1", "online": True, "cpuPercent": 90.0, "memoryPercent": 50.0, "diskPercent": 10.0}


def test_weighted_figures_use_the_given_and_the_default_weights() -> None:
    value, where = _load_against(NODE, {"thresholds": {"metric": "weighted", "metricWeights": {"cpu": 50}}})
    assert value == pytest.approx((100 * 50 + 50 * 90) / 150) and where == "ok"
    # Default weights: memory and CPU equally, disk not at all.
    value, where = _load_against(NODE, {"thresholds": {"metric": "weighted", "migrateAbovePercent": 65}})
    assert value == pytest.approx(70.0) and where == "above migrate (65%)"


def test_a_weighted_figure_needs_every_weighted_resource() -> None:
    without_cpu = {**NODE, "cpuPercent": None}
    assert _load_against(without_cpu, {"thresholds": {"metric": "weighted"}}) == (None, "offline")
    memory_only = {"metric": "weighted", "metricWeights": {"cpu": 0}}
    assert _load_against(without_cpu, {"thresholds": memory_only})[0] == pytest.approx(50.0)

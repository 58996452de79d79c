"""Topology spread in the balancing planner: what the rules cost in planning time, and what they buy.

Run: ``.venv/bin/python bench/spread.py [--seed 7] [--repeat 3]``

Instances (seeded): 5, 20 and 50 nodes of 64 GiB, 4 policies with 4 CTs per node each (80 to 800 CTs of
1-3 GiB), spread evenly, then a quarter of the nodes made hot (82-92 %, above the 75 % migrate line) by a
noisy neighbour's base load. Each instance is planned (``plan_balance``, limits lifted so the whole
relief is one plan) three ways:

* ``no rules``: the baseline, as before topology existed;
* ``hostname spread``: every policy ``kubernetes.io/hostname maxSkew 1 DoNotSchedule``;
* ``rack spread``: nodes in racks of 5, every policy ``topology.pve/rack maxSkew 1 DoNotSchedule`` plus a
  hostname ``maxSkew 2 ScheduleAnyway``.

Columns: planning time (median of ``--repeat`` runs, CPU seconds) and its ratio to ``no rules`` in the same
run; migrations planned; nodes still above 75 % after the plan; the worst skew of any policy over
hostnames after the plan (``maxSkew`` 1 is the rule); SpreadViolation refusals. The benchmark prints; it
asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import replace
from typing import Any

from _harness import print_table
from pve_operator.api.v1alpha1 import PlacementSpec
from pve_operator.planning.actions import MigrateContainer
from pve_operator.planning.balancing import (
    BalancingInput,
    BalancingLimits,
    ManagedCT,
    PoolNodeSpec,
    RefusalKind,
    Thresholds,
    plan_balance,
)
from pve_operator.planning.model import ClusterSnapshot, ContainerObservation, ContainerStatus, NodeUsage
from pve_operator.planning.topology import HOSTNAME_LABEL, TopologyInputs, count_by_node, rules_for

GIB = 1024**3
POLICIES = ("web", "api", "cache", "jobs")


def instance(nodes: int, seed: int) -> tuple[BalancingInput, dict[str, dict[str, str]]]:
    rng = random.Random(seed * 1000 + nodes)
    names = [f"pve{i:02d}" for i in range(nodes)]
    cts: list[ContainerObservation] = []
    managed: dict[int, ManagedCT] = {}
    vmid = 100
    for policy in POLICIES:
        for n in range(4 * nodes):
            size = rng.choice((1, 2, 3)) * GIB
            node = names[n % nodes]
            cts.append(
                ContainerObservation(
                    vmid=vmid,
                    node=node,
                    status=ContainerStatus.RUNNING,
                    cpu_cores=1,
                    cpu_used_fraction=0.1,
                    memory_limit_bytes=size * 2,
                    memory_used_bytes=size,
                    disk_limit_bytes=8 * GIB,
                    disk_used_bytes=2 * GIB,
                )
            )
            managed[vmid] = ManagedCT(vmid=vmid, policy=policy, priority=100, created_at="2026-01-01T00:00:00Z")
            vmid += 1
    hot = set(rng.sample(names, max(1, nodes // 4)))
    usage = []
    for name in names:
        ours = sum(c.memory_used_bytes for c in cts if c.node == name)
        total = 64 * GIB
        base = int(total * rng.uniform(0.82, 0.92)) - ours if name in hot else int(total * 0.2)
        usage.append(NodeUsage(name, True, 32, 0.2, total, max(ours, ours + base), 2000 * GIB, 400 * GIB))
    snapshot = ClusterSnapshot.of(1_000_000.0, usage, cts)
    thresholds = Thresholds()
    history = {u.name: [u.used_fraction(thresholds.metric)] * thresholds.sustained_samples for u in usage}
    labels = {name: {"topology.pve/rack": f"r{i // 5}", HOSTNAME_LABEL: name} for i, name in enumerate(names)}
    inp = BalancingInput(
        snapshot=snapshot,
        pool_nodes=tuple(PoolNodeSpec(n) for n in names),
        managed=managed,
        history=history,
        now=1_000_000.0,
        thresholds=thresholds,
        limits=BalancingLimits(max_concurrent_migrations=10_000, max_inbound_per_target=10_000),
    )
    return inp, labels


def with_rules(inp: BalancingInput, labels: dict[str, dict[str, str]], placement: dict[str, Any]) -> BalancingInput:
    weights = {n.name: 1 for n in inp.pool_nodes}
    rules = rules_for(PlacementSpec.model_validate(placement), labels, TopologyInputs(weights, frozenset(weights)))
    return replace(inp, topology={p: rules for p in POLICIES})


def spread(key: str, skew: int, hard: bool = True) -> dict[str, Any]:
    return {"topologyKey": key, "maxSkew": skew, "whenUnsatisfiable": "DoNotSchedule" if hard else "ScheduleAnyway"}


def worst_hostname_skew(inp: BalancingInput, moves: dict[int, str]) -> int:
    worst = 0
    nodes = [n.name for n in inp.pool_nodes]
    for policy in POLICIES:
        where = [moves.get(v, inp.snapshot.containers[v].node) for v, m in inp.managed.items() if m.policy == policy]
        counts = count_by_node(where)
        values = [counts.get(n, 0) for n in nodes]
        worst = max(worst, max(values) - min(values))
    return worst


def run(inp: BalancingInput, repeat: int) -> tuple[float, Any]:
    times = []
    plan = None
    for _ in range(repeat):
        start = time.process_time()
        plan = plan_balance(inp)
        times.append(time.process_time() - start)
    return statistics.median(times), plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for nodes in (5, 20, 50):
        base, labels = instance(nodes, args.seed)
        variants = [
            ("no rules", base),
            ("hostname spread", with_rules(base, labels, {"topologySpreadConstraints": [spread(HOSTNAME_LABEL, 1)]})),
            (
                "rack spread",
                with_rules(
                    base,
                    labels,
                    {
                        "topologySpreadConstraints": [
                            spread("topology.pve/rack", 1),
                            spread(HOSTNAME_LABEL, 2, hard=False),
                        ]
                    },
                ),
            ),
        ]
        baseline = None
        for name, inp in variants:
            seconds, plan = run(inp, args.repeat)
            baseline = baseline or seconds
            moves = {a.vmid: a.target for a in plan.actions if isinstance(a, MigrateContainer)}
            above = sum(1 for n in plan.projected.nodes.values() if n.used_fraction(inp.thresholds.metric) > 0.75)
            violations = sum(1 for r in plan.refusals if r.kind is RefusalKind.SPREAD_VIOLATION)
            rows.append(
                [
                    str(nodes),
                    str(len(inp.managed)),
                    name,
                    f"{seconds:.3f}",
                    f"{seconds / baseline:.2f}",
                    str(len(moves)),
                    str(above),
                    str(worst_hostname_skew(inp, moves)),
                    str(violations),
                ]
            )
    print_table(
        "Balancing with topology spread (plan_balance, limits lifted; time = median CPU s)",
        [
            "nodes",
            "CTs",
            "rules",
            "time s",
            "x no rules",
            "migrations",
            "nodes >75%",
            "worst host skew",
            "SpreadViolation",
        ],
        rows,
    )


if __name__ == "__main__":
    main()

"""``python -m pve_operator plan --pool NAME [-n NAMESPACE]``: the plan the operator would make now.

Reads the pool, its Secret and its policies from the current Kubernetes context, takes one snapshot of
the Proxmox cluster and runs the same planner the timers run, then prints the node table, the
actions with their reasons, and the refusals. It changes nothing, in Kubernetes or in Proxmox.

The operator acts only after a node stays over a threshold for ``sustainedSamples`` samples; a
one-off command has a single sample, so by default it treats the current figures as sustained
(``--as-sampled`` uses only the one sample, which shows what the operator would do on the first tick).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from kubernetes import client as kube_client

from pve_operator.api.v1alpha1 import GROUP, VERSION, ProxmoxServerPoolSpec
from pve_operator.execution.pool_input import collect_input, policy_summary
from pve_operator.operator_namespace import ENV_VAR as OPERATOR_NAMESPACE_ENV
from pve_operator.planning.actions import describe
from pve_operator.planning.balancing import plan_balance
from pve_operator.planning.model import Metric, UsageMeasure, pool_measure
from pve_operator.pve.errors import PveError
from pve_operator.runtime import ConfigurationError, OperatorRuntime, load_kubernetes_config


def run(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pve_operator plan",
        description="The plan the operator would make now: one snapshot of the pool's Proxmox cluster, the "
        "same planner the timers run, the actions with their reasons and the refusals. Changes nothing.",
    )
    parser.add_argument("--pool", required=True, help="ProxmoxServerPool name")
    parser.add_argument("-n", "--namespace", default="default", help="namespace of the pool (default: default)")
    parser.add_argument(
        "--operator-namespace",
        default=None,
        help="namespace the operator runs in, where its ownership key Secret is (default: $PVE_OPERATOR_NAMESPACE, "
        "else the pool's namespace, as a local `python -m pve_operator run -n NS` keeps it)",
    )
    parser.add_argument("--as-sampled", action="store_true", help="do not treat the current sample as sustained")
    args = parser.parse_args(argv)

    load_kubernetes_config()
    api = kube_client.CustomObjectsApi()
    try:
        body: dict[str, Any] = _as_dict(
            api.get_namespaced_custom_object(GROUP, VERSION, args.namespace, "proxmoxserverpools", args.pool)
        )
    except kube_client.exceptions.ApiException as exc:
        print(f"error: cannot read ProxmoxServerPool {args.namespace}/{args.pool}: {exc.reason}", file=sys.stderr)
        return 2
    pool = ProxmoxServerPoolSpec.model_validate(body["spec"])
    listed = _as_dict(api.list_namespaced_custom_object(GROUP, VERSION, args.namespace, "containerpolicies"))
    items: list[dict[str, Any]] = list(listed["items"])
    policies = [
        policy_summary(p["metadata"]["name"], p["metadata"]["uid"], p["spec"], p["metadata"].get("annotations") or {})
        for p in items
    ]
    policies = [p for p in policies if p["pool"] == args.pool]
    runtime = OperatorRuntime()
    try:
        operator_ns = args.operator_namespace or os.environ.get(OPERATOR_NAMESPACE_ENV) or args.namespace
        try:
            key = runtime.ownership_key(create=False, namespace=operator_ns)
        except ConfigurationError as exc:
            print(
                f"error: {exc.message}; plan reads the key to tell the operator's CTs from claims "
                "(pass --operator-namespace NS: the namespace the operator runs in)",
                file=sys.stderr,
            )
            return 2
        client = runtime.connection(args.namespace, args.pool, pool).client
        snapshot = client.snapshot(time.time())
        metric = pool_measure(pool.thresholds)
        samples = 1 if args.as_sampled else pool.thresholds.sustained_samples
        history = {
            n.name: [snapshot.nodes[n.name].used_fraction(metric)] * samples
            for n in pool.nodes
            if n.name in snapshot.nodes and snapshot.nodes[n.name].online
        }
        collected = collect_input(
            namespace=args.namespace,
            pool=pool,
            status=body.get("status") or {},
            records_for=lambda _uid: {},
            ownership_key=key,
            policies=policies,
            client=client,
            snapshot=snapshot,
            history=history,
            last_action_at={},
            now=time.time(),
        )
    except (ConfigurationError, PveError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        runtime.close()
    # Show the decision even where a mode is Off: that is what users run this command to see.
    plan = plan_balance(replace(collected.input, balancing_enabled=True, offload_enabled=True))
    _print_plan(args.pool, pool, collected.input.snapshot, plan, metric, len(collected.input.managed))
    return 0


def _as_dict(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"unexpected answer from the Kubernetes API: {type(value).__name__}")
    return value


def _print_plan(
    name: str, pool: ProxmoxServerPoolSpec, snapshot: Any, plan: Any, metric: UsageMeasure, managed: int
) -> None:
    t = pool.thresholds
    print(
        f"Pool {name}: {metric.value} thresholds migrate>{t.migrate_above_percent}% "
        f"offload>{t.offload_above_percent}% restore<{t.restore_below_percent}%; {managed} managed CTs"
    )
    print(
        f"modes: balancing {pool.balancing.mode.value}, offload {pool.offload.mode.value} "
        "(the plan below is computed as if both were Automatic; the operator acts only where a mode is)"
    )
    print(f"{'NODE':<16}{'ONLINE':<8}{'CPU':>6}{'MEMORY':>8}{'DISK':>6}{'CTS':>6}")
    for node in pool.nodes:
        usage = snapshot.nodes.get(node.name)
        if usage is None:
            print(f"{node.name:<16}{'missing':<8}")
            continue
        count = len(snapshot.containers_on(node.name))
        print(
            f"{node.name:<16}{'yes' if usage.online else 'no':<8}{usage.used_fraction(Metric.CPU):>6.0%}"
            f"{usage.used_fraction(Metric.MEMORY):>8.0%}{usage.used_fraction(Metric.DISK):>6.0%}{count:>6}"
        )
    print()
    if not plan.actions:
        print("Plan: nothing to do.")
    for i, action in enumerate(plan.actions, 1):
        print(f"{i}. {describe(action, metric)}\n   why: {action.reason}")
    if plan.refusals:
        print("\nNot done:")
        for refusal in plan.refusals:
            print(f"- [{refusal.kind.value}] {refusal.reason}")

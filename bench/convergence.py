"""Convergence and API cost of the operator, measured end to end. Prints tables; asserts nothing.

1. Time for 50 and 200 CTs to reach running in pve_sim with realistic task durations (create 6 s,
   start 2 s, as the lab scenario models them), accelerated 50x, at concurrency 1 (the lab's
   one-at-a-time behaviour) and at the operator's default of 4 parallel tasks per pool.
2. Proxmox API requests per reconcile cycle with 10, 100 and 1,000 managed CTs in steady state
   (target: the same number of list calls at every size), plus the operator's RSS and CPU.

Run: ``.venv/bin/python bench/convergence.py`` (needs ``make controlplane``). About 5 minutes.
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

from _harness import Cluster, SimServer, big_lab, cluster, connect, operator, policy, print_table, sim_api, wait
from pve_operator.planning.ownership import (
    MANAGED_TAG,
    OwnershipKey,
    OwnershipRecord,
    format_description,
    ownership_tags,
)
from pve_operator.runtime import OWNERSHIP_KEY_FIELD, OWNERSHIP_KEY_SECRET

TIME_SCALE = 0.02  # 50x faster than real time


def running_managed(sim: SimServer) -> int:
    api = sim_api(sim)
    return sum(
        1
        for r in api.cluster.resources.get(type="vm")
        if r.get("status") == "running" and MANAGED_TAG in str(r.get("tags", "")).split(";")
    )


def convergence(c: Cluster, logs: Path, count: int, concurrency: int) -> list[str]:
    sim = SimServer(big_lab(stats_lag_seconds=10.0), time_scale=TIME_SCALE).start()
    namespace = f"conv-{count}-{concurrency}"
    try:
        connect(c, namespace, sim)
        with operator(c, namespace, logs, PVE_OPERATOR_MAX_PARALLEL_TASKS=str(concurrency)):
            wait(lambda: _pool_ready(c, namespace), 60, "pool Ready")
            started = time.monotonic()
            c.apply(namespace, policy("web", replicas=count, memory_mib=512, vmid_start=3100, vmid_end=3999))
            wait(lambda: running_managed(sim) >= count, 1800, f"{count} CTs running", interval_s=0.2)
            seconds = time.monotonic() - started
    finally:
        sim.stop()
    return [
        str(count),
        str(concurrency),
        f"{seconds:.1f}",
        f"{seconds / TIME_SCALE / 60:.1f}",
        f"{count / seconds * 60:.0f}",
    ]


def _pool_ready(c: Cluster, namespace: str) -> bool:
    status = c.get("proxmoxserverpool", "lab", namespace).get("status", {})
    return any(x["type"] == "Ready" and x["status"] == "True" for x in status.get("conditions", []))


def seed_owned_cts(sim: SimServer, uid: str, count: int, key: OwnershipKey) -> None:
    """Create ``count`` CTs that carry the policy's ownership marks, signed with the operator's ``key``
    (as if the operator had made them)."""
    api = sim_api(sim)
    nodes = ["srv-px1", "srv-px1", "srv-px2"]  # 2:1
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for index in range(count):
        node = nodes[index % 3]
        record = OwnershipRecord("api-cost", "web", uid, index, now).signed(3100 + index, key)
        api.nodes(node).lxc.post(  # type: ignore[attr-defined]
            vmid=3100 + index,
            ostemplate="local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
            hostname=f"ct-web-{index:02d}",
            memory=512,
            swap=512,
            cores=1,
            rootfs="local-lvm:8",
            unprivileged=1,
            tags=";".join(sorted(ownership_tags(uid))),
            description=format_description(record),
            start=1,
        )


def api_cost(c: Cluster, logs: Path, count: int) -> list[str]:
    sim = SimServer(big_lab(stats_lag_seconds=0.0), time_scale=0.0).start()
    namespace = f"api-cost-{count}"
    try:
        connect(c, namespace, sim, balancing={"intervalSeconds": 3600})
        c.apply(
            namespace,
            policy("web", replicas=count, memory_mib=512, vmid_start=3100, vmid_end=4999, extra_spec={"paused": True}),
        )
        uid = c.get("containerpolicy", "web", namespace)["metadata"]["uid"]
        # The operator's ownership key, made here so the seeded records carry valid signatures (the
        # operator reads the Secret's bytes as the key: a 64-character literal is a 64-byte key).
        key_text = secrets.token_hex(32)
        c.kubectl(
            "create", "secret", "generic", OWNERSHIP_KEY_SECRET, "-n", namespace,
            f"--from-literal={OWNERSHIP_KEY_FIELD}={key_text}",
        )  # fmt: skip
        seed_owned_cts(sim, uid, count, OwnershipKey(key_text.encode()))
        with operator(c, namespace, logs, PVE_OPERATOR_NAMESPACE=namespace) as op:
            c.kubectl("patch", "ctp", "web", "-n", namespace, "--type=merge", "-p", '{"spec":{"paused":false}}')
            wait(
                lambda: c.get("containerpolicy", "web", namespace).get("status", {}).get("readyReplicas") == count,
                600,
                f"{count} CTs adopted",
            )
            adopted = op.metrics()
            process = psutil.Process(op.proc.pid)
            cpu_before = sum(process.cpu_times()[:2])
            cycles_before = _reconciles(adopted)
            wait(lambda: _reconciles(op.metrics()) >= cycles_before + 5, 300, "5 steady-state reconcile cycles")
            steady = op.metrics()
            cycles = _reconciles(steady) - cycles_before
            cpu = (sum(process.cpu_times()[:2]) - cpu_before) / cycles
            rss_mib = process.memory_info().rss / 2**20
    finally:
        sim.stop()
    calls = _calls_by_endpoint(steady)
    before = _calls_by_endpoint(adopted)
    per_cycle = {k: (calls.get(k, 0) - before.get(k, 0)) / cycles for k in calls}
    lists = per_cycle.get("GET /cluster/resources", 0.0)
    per_ct = sum(v for k, v in per_cycle.items() if "{vmid}" in k)
    total = sum(per_cycle.values())
    first_configs = before.get("GET /nodes/{node}/lxc/{vmid}/config", 0.0)
    return [
        str(count),
        f"{lists:.1f}",
        f"{per_ct:.1f}",
        f"{total:.1f}",
        f"{first_configs:.0f}",
        f"{rss_mib:.0f}",
        f"{cpu * 1000:.0f}",
    ]


def _reconciles(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return sum(
        v
        for (name, labels), v in samples.items()
        if name == "pve_operator_reconciliations_total" and ("kind", "ContainerPolicy") in labels
    )


def _calls_by_endpoint(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for (name, labels), value in samples.items():
        if name == "pve_operator_pve_request_duration_seconds_count":
            d = dict(labels)
            key = f"{d['method']} {d['endpoint']}"
            out[key] = out.get(key, 0.0) + value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="50,200", help="CT counts for the convergence table")
    parser.add_argument("--api-sizes", default="10,100,1000", help="CT counts for the API-cost table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pve-bench-") as tmp, cluster() as c:
        logs = Path(tmp)
        rows = []
        baseline: dict[int, float] = {}
        for count in [int(x) for x in args.sizes.split(",")]:
            for concurrency in (1, 4):
                row = convergence(c, logs, count, concurrency)
                seconds = float(row[2])
                baseline.setdefault(count, seconds)
                rows.append([*row, f"{baseline[count] / seconds:.2f}x"])
        print_table(
            f"Time for CTs to reach running (pve_sim, create 6 s + start 2 s simulated, time scale {TIME_SCALE})",
            ["CTs", "parallel tasks", "real s", "simulated min", "CTs/min (real)", "speed-up vs 1"],
            rows,
        )
        cost_rows = [api_cost(c, logs, int(n)) for n in args.api_sizes.split(",")]
        print_table(
            "Proxmox API requests per steady-state ContainerPolicy reconcile cycle",
            [
                "managed CTs",
                "list calls",
                "per-CT calls",
                "all calls",
                "config reads at adoption",
                "operator RSS MiB",
                "CPU ms/cycle",
            ],
            cost_rows,
        )


if __name__ == "__main__":
    main()

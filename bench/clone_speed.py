"""CT creation from an ostemplate against a linked and a full clone of a template CT (issue 11).

Run: ``.venv/bin/python bench/clone_speed.py [--cts 8] [--time-scale 0.05] [--workers 2]``

pve_sim over HTTPS with the operator's own executor (``PolicyExecutor``: create or clone, apply the policy's
settings, start), the same 8 CTs three ways on one node. pve_sim's task durations are its models of PVE's:
``vzcreate`` 6 s (unpacking a template, then the post-create hook), ``vzclone`` 1 s for a linked clone plus
the volume size at 400 MiB/s for a full clone, ``vzstart`` 2 s (``Timing`` in ``pve_sim/state.py``; PVE's own
durations vary with the storage and the template size). Columns: simulated seconds until every CT runs
(wall seconds / time scale), per CT, and the ratio to ostemplate measured in the same run. Prints; asserts
nothing.
"""

from __future__ import annotations

import argparse
import copy
import threading
import time
from typing import Any

import yaml

from _harness import LAB, print_table, sim_api
from pve_operator.execution.executor import PolicyExecutor, PolicyIdentity
from pve_operator.planning.actions import CreateContainer
from pve_operator.planning.ownership import OwnershipKey
from pve_operator.pve.client import PveClient, PveCredentials, TlsSettings
from pve_operator.pve.params import CloneFrom, ContainerBlueprint, NetworkInterface
from pve_sim.scenario import parse_scenario
from pve_sim.server import SimServer

TEMPLATE_CT = 9000
OSTEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"


def scenario() -> Any:
    data = yaml.safe_load(LAB.read_text())
    data["containers"] = [
        {
            "vmid": TEMPLATE_CT,
            "node": "srv-px1",
            "hostname": "golden",
            "status": "stopped",
            "template": True,
            "memoryMiB": 512,
            "cores": 1,
            "rootfs": {"storage": "local-lvm", "sizeGiB": 8},
        }
    ]
    for role in data["roles"]:
        if role["id"] == "CTOperator":
            role["privileges"].append("VM.Clone")
    data["storages"] = [copy.deepcopy(s) | {"capacityGiB": 10_000} for s in data["storages"]]
    return parse_scenario(data, "<clone-bench>")


def run(way: str, cts: int, time_scale: float, workers: int) -> float:
    sim = SimServer(scenario(), time_scale=time_scale).start()
    try:
        user = next(u for u in sim.scenario.users if u.userid == "ctoperator@pve")
        client = PveClient(
            sim.url,
            PveCredentials(token_id="ctoperator@pve!operator", token_secret=user.tokens[0].secret),
            TlsSettings(ca_pem=sim.ca_path.read_text()),
        )
        clone = None
        if way != "ostemplate":
            clone = CloneFrom(TEMPLATE_CT, "srv-px1", full=way == "full clone")
        blueprint = ContainerBlueprint(
            ostemplate=OSTEMPLATE if clone is None else None,
            memory_mib=512,
            swap_mib=0,
            cores=1,
            rootfs_storage="local-lvm",
            rootfs_gib=8,
            networks=(NetworkInterface(),),
            clone=clone,
        )
        executor = PolicyExecutor(
            client,
            PolicyIdentity(
                "bench", "web", "uid-bench", range(3100, 3200), OwnershipKey(b"bench-ownership-key-32-bytes!!!!")
            ),
            limiter=threading.BoundedSemaphore(workers),
            max_workers=workers,
            task_timeout_seconds=600,
            now_rfc3339=lambda: "2026-12-03T00:00:00Z",
        )
        actions = [
            CreateContainer(vmid=3100 + i, node="srv-px1", index=i, hostname=f"ct-web-{i:02d}", reason="bench")
            for i in range(cts)
        ]
        started = time.monotonic()
        outcomes = executor.apply(actions, blueprint)
        elapsed = time.monotonic() - started
        failed = [o.message for o in outcomes if not o.succeeded]
        if failed:
            raise SystemExit(f"{way}: {failed[0]}")
        running = [c for c in sim_api(sim).cluster.resources.get(type="vm") if 3100 <= c["vmid"] < 3100 + cts]
        assert len(running) == cts
        return elapsed / time_scale
    finally:
        sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cts", type=int, default=8)
    parser.add_argument("--time-scale", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    results = {
        way: run(way, args.cts, args.time_scale, args.workers) for way in ("ostemplate", "linked clone", "full clone")
    }
    base = results["ostemplate"]
    rows = [
        [way, f"{seconds:.1f}", f"{seconds / args.cts:.2f}", f"{seconds / base:.2f}"]
        for way, seconds in results.items()
    ]
    print_table(
        f"Creating {args.cts} CTs (8 GiB root volume) on one node, {args.workers} at a time, pve_sim at time scale "
        f"{args.time_scale}",
        ["source", "simulated s until all run", "s per CT", "x ostemplate"],
        rows,
    )


if __name__ == "__main__":
    main()

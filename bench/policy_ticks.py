"""A creation burst when the policy reconcile never waits for a task (issue 10 §1), against waiting for them.

Run: ``.venv/bin/python bench/policy_ticks.py [--cts 12] [--time-scale 1.0] [--slots 4]`` (about a minute)

pve_sim over HTTPS with the operator's own executor (``PolicyExecutor``), the same burst of CTs created from an
ostemplate and started, two ways, each on a fresh simulator:

* **waiting** (the baseline): ``apply()`` runs the actions to their end, polling each task until it stops
  (0.25 s doubling to 2 s, wall clock), which is what the reconcile did before: the cycle returned only when every task
  of its plan had ended;
* **ticks**: what the reconcile does now: one ``run_cycle`` per timer tick (``PVE_OPERATOR_POLICY_TICK``,
  1 s by default), each looking once at every task in flight and starting new ones in the free slots, and returning.

pve_sim's tasks take their modelled durations (``vzcreate`` 6 s, ``vzstart`` 2 s) at ``--time-scale``; the
tick is scaled the same way, so all figures are simulated seconds (wall / time scale). Columns: time until
every CT runs, its ratio to the baseline measured in the same run, the longest single call of the reconcile
(the time a cycle holds the policy, during which a spec change or a deletion waits), and task-status reads per
CT. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

import yaml

from _harness import LAB, print_table
from pve_operator.execution.executor import PolicyExecutor, PolicyIdentity
from pve_operator.planning.actions import Action, CreateContainer
from pve_operator.planning.ownership import OwnershipKey
from pve_operator.pve.client import PveClient, PveCredentials, TlsSettings
from pve_operator.pve.params import ContainerBlueprint, NetworkInterface
from pve_operator.runtime import POLICY_TICK_SECONDS
from pve_sim.scenario import parse_scenario
from pve_sim.server import SimServer

BLUEPRINT = ContainerBlueprint(
    ostemplate="local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
    memory_mib=512,
    swap_mib=0,
    cores=1,
    rootfs_storage="local-lvm",
    rootfs_gib=4,
    networks=(NetworkInterface(),),
)


IDENTITY = PolicyIdentity(
    "bench", "web", "uid-bench", range(3100, 3200), OwnershipKey(b"bench-ownership-key-32-bytes!!!!")
)


class CountingClient(PveClient):
    """The operator's client, counting task-status reads."""

    status_reads = 0

    def task_status(self, upid: Any) -> dict[str, Any]:
        CountingClient.status_reads += 1
        return super().task_status(upid)


def run(way: str, cts: int, time_scale: float, slots: int) -> tuple[float, float, float]:
    """(simulated seconds until every CT runs, the longest single call in simulated seconds, status reads/CT)."""
    data = yaml.safe_load(LAB.read_text())
    data["containers"] = []
    sim = SimServer(parse_scenario(data, "<tick-bench>"), time_scale=time_scale).start()
    try:
        user = next(u for u in sim.scenario.users if u.userid == "ctoperator@pve")
        client = CountingClient(
            sim.url,
            PveCredentials(token_id="ctoperator@pve!operator", token_secret=user.tokens[0].secret),
            TlsSettings(ca_pem=sim.ca_path.read_text()),
        )
        executor = PolicyExecutor(
            client,
            PolicyIdentity(
                "bench", "web", "uid-bench", range(3100, 3200), OwnershipKey(b"bench-ownership-key-32-bytes!!!!")
            ),
            limiter=threading.BoundedSemaphore(slots),
            max_workers=slots,
            task_timeout_seconds=600,
            now_rfc3339=lambda: "2026-12-04T00:00:00Z",
        )
        actions: list[Action] = [
            CreateContainer(
                vmid=3100 + i, node=("srv-px1", "srv-px2")[i % 2], index=i, hostname=f"ct-{i:02d}", reason="bench"
            )
            for i in range(cts)
        ]
        CountingClient.status_reads = 0
        started = time.monotonic()
        if way == "waiting":
            outcomes = executor.apply(actions, BLUEPRINT)
            longest = time.monotonic() - started
        else:
            outcomes, longest = [], 0.0
            journal, waiting = [], actions
            while journal or waiting:
                tick = time.monotonic()
                cycle = executor.run_cycle(journal, waiting, BLUEPRINT, slots=slots)
                longest = max(longest, time.monotonic() - tick)
                outcomes += cycle.outcomes
                journal, waiting = cycle.in_flight, cycle.deferred
                time.sleep(max(0.0, POLICY_TICK_SECONDS * time_scale - (time.monotonic() - tick)))
        elapsed = time.monotonic() - started
        failed = [o.message for o in outcomes if not o.succeeded]
        if failed or len(outcomes) != cts:
            raise SystemExit(f"{way}: {len(outcomes)} outcomes, failures: {failed[:1]}")
        return elapsed / time_scale, longest / time_scale, CountingClient.status_reads / cts
    finally:
        sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cts", type=int, default=12)
    # Real time: the baseline polls tasks with wall-clock delays (as the old reconcile did), so a faster
    # simulator would make it look slower than it was.
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--slots", type=int, default=4)
    args = parser.parse_args()
    results = {way: run(way, args.cts, args.time_scale, args.slots) for way in ("waiting", "ticks")}
    base = results["waiting"][0]
    rows = [
        [way, f"{burst:.0f}", f"{burst / base:.2f}", f"{longest:.1f}", f"{reads:.1f}"]
        for way, (burst, longest, reads) in results.items()
    ]
    print_table(
        f"{args.cts} CTs created and started, {args.slots} task slots, tick {POLICY_TICK_SECONDS:.0f} s "
        f"(simulated seconds, time scale {args.time_scale})",
        ["reconcile", "all running (s)", "ratio", "longest call (s)", "status reads/CT"],
        rows,
    )


if __name__ == "__main__":
    main()

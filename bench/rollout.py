"""Rolling updates by strategy: what maxUnavailable and maxSurge cost in cycles and buy in availability.

Run: ``.venv/bin/python bench/rollout.py``

The policy planner (``plan_reconcile``, the operator's own) replaces a fleet whose CTs all carry an older
template, cycle after cycle, until every CT is current. Between cycles a destroyed CT is gone and a created
CT needs ``--start-cycles`` cycles (default 2: an ostemplate create plus its start; a linked clone is about
one) before it runs; nothing fails. Strategies (maxUnavailable/maxSurge) are compared with the default,
1/0, measured in the same run.

Columns: cycles until the rollout is done (and the ratio to 1/0); the fewest CTs running at any cycle; the
CT-cycles of missing capacity (sum over cycles of replicas minus running, the "downtime" a rollout costs);
the most CTs that existed at once (the VMIDs and memory the strategy needs); and the CTs created. Rows marked
"kept volume" roll a policy with a keepOnRecreate mount point (handovers, see ``roll``); a handover's own
downtime (stop, volume rename, start: seconds in one cycle's action) does not show at cycle granularity. The
benchmark prints; it asserts nothing (tests/unit/planning/test_rollout_properties.py checks the bounds).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

from _harness import print_table
from pve_operator.planning.model import ClusterSnapshot, ContainerObservation, ContainerStatus, NodeUsage
from pve_operator.planning.reconcile import OwnedContainer, PolicyIntent, plan_reconcile

GIB = 1024**3
MIB = 1024**2
NODES = ("pve01", "pve02", "pve03")
STRATEGIES = ((1, 0), (2, 0), (3, 0), (0, 1), (1, 1), (0, 3), (2, 2))
#: Strategies with a keepOnRecreate mount point (each needs maxUnavailable >= 1 and maxSurge >= 1).
KEPT_STRATEGIES = ((1, 1), (2, 2), (3, 3))


@dataclass(frozen=True)
class Rollout:
    cycles: int
    min_running: int
    missing_ct_cycles: int
    max_cts: int
    created: int


def _ct(vmid: int, node: str, running: bool) -> ContainerObservation:
    return ContainerObservation(
        vmid=vmid,
        node=node,
        status=ContainerStatus.RUNNING if running else ContainerStatus.STOPPED,
        cpu_cores=1,
        cpu_used_fraction=0.05,
        memory_limit_bytes=2048 * MIB,
        memory_used_bytes=512 * MIB,
        disk_limit_bytes=8 * GIB,
        disk_used_bytes=2 * GIB,
    )


def roll(replicas: int, max_unavailable: int, max_surge: int, start_cycles: int, *, kept: bool = False) -> Rollout:
    """One rollout, cycle by cycle. With ``kept`` the policy has a keepOnRecreate mount point: each outdated CT
    gets a replacement created stopped on its node, and the next cycle's handover stops the old CT, moves the
    volume, starts the replacement (running from the next cycle, like a start) and destroys the old CT."""
    intent = PolicyIntent(
        policy_uid="bench",
        vmid_range=range(3100, 3100 + replicas + max_surge),
        memory_mib=2048,
        cores=1,
        rootfs_gib=8,
        hostname_for=lambda i: f"ct-{i:02d}",
        node_weights=dict.fromkeys(NODES, 1),
        replicas=replicas,
        template_hash="new",
        rollout_max_unavailable=max_unavailable,
        rollout_max_surge=max_surge,
        kept_volumes=("mp0",) if kept else (),
    )
    fleet = {
        3100 + i: OwnedContainer(
            3100 + i, i, f"2026-01-01T00:{i:02d}:00Z", _ct(3100 + i, NODES[i % 3], True), template_hash="old"
        )
        for i in range(replicas)
    }
    starts_in: dict[int, int] = {}
    min_running, missing, max_cts, created = replicas, 0, replicas, 0
    for cycle in range(1, 20 * replicas):
        nodes = [NodeUsage(n, True, 64, 0.1, 512 * GIB, 64 * GIB, 4000 * GIB, 100 * GIB) for n in NODES]
        snapshot = ClusterSnapshot.of(float(cycle), nodes, [o.observation for o in fleet.values() if o.observation])
        plan = plan_reconcile(intent, snapshot, list(fleet.values()))
        for action in plan.actions:
            kind = type(action).__name__
            if kind == "DestroyContainer":
                fleet.pop(action.vmid, None)
                starts_in.pop(action.vmid, None)
            elif kind == "CreateContainer":
                created += 1
                fleet[action.vmid] = OwnedContainer(
                    action.vmid,
                    action.index,
                    f"2026-01-02T{cycle:04d}",
                    _ct(action.vmid, action.node, False),
                    template_hash="new",
                    volumes_from=action.volumes_from,
                )
                if action.volumes_from is None:
                    starts_in[action.vmid] = start_cycles
            elif kind == "HandOverVolumes":
                fleet.pop(action.source_vmid, None)
                starts_in[action.vmid] = 1
        max_cts = max(max_cts, len(fleet))
        # Time passes: creations under way come up.
        for vmid in list(starts_in):
            starts_in[vmid] -= 1
            if starts_in[vmid] <= 0:
                del starts_in[vmid]
                item = fleet[vmid]
                assert item.observation is not None
                fleet[vmid] = replace(item, observation=replace(item.observation, status=ContainerStatus.RUNNING))
        running = sum(1 for o in fleet.values() if o.observation is not None and o.observation.running)
        min_running = min(min_running, running)
        missing += max(0, replicas - running)
        if running == replicas == len(fleet) and all(o.template_hash == "new" for o in fleet.values()):
            return Rollout(cycle, min_running, missing, max_cts, created)
    raise RuntimeError(f"rollout {max_unavailable}/{max_surge} of {replicas} did not finish")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start-cycles", type=int, default=2)
    args = parser.parse_args()
    for replicas in (9, 30):
        rows = []
        baseline = roll(replicas, 1, 0, args.start_cycles)
        runs = [(u, s, False) for u, s in STRATEGIES] + [(u, s, True) for u, s in KEPT_STRATEGIES]
        for max_unavailable, max_surge, kept in runs:
            r = roll(replicas, max_unavailable, max_surge, args.start_cycles, kept=kept)
            rows.append(
                [
                    f"{max_unavailable}/{max_surge}" + (" kept volume" if kept else ""),
                    str(r.cycles),
                    f"{r.cycles / baseline.cycles:.2f}",
                    f"{r.min_running}/{replicas}",
                    str(r.missing_ct_cycles),
                    str(r.max_cts),
                    str(r.created),
                ]
            )
        print_table(
            f"Rollout of {replicas} outdated CTs, a new CT runs {args.start_cycles} cycle(s) after its create",
            [
                "maxUnavailable/maxSurge",
                "cycles",
                "x 1/0",
                "fewest running",
                "missing CT-cycles",
                "most CTs",
                "created",
            ],
            rows,
        )


if __name__ == "__main__":
    main()

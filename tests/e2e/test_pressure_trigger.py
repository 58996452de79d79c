"""The pressure trigger end to end (issue 13 §2): a node CPU-starved by the operator's own busy CTs while
its memory is far under migrateAbovePercent. A pool balancing on memory leaves it alone; with
``thresholds.pressure: {metric: CpuPressure}`` the operator migrates busy CTs off it until its CPU use is
``reliefPercent`` points lower, and once its pressure is gone nothing more moves.

The lab: srv-px1 and srv-px2, 8 cores and 32 GiB each, 4 % base CPU and 8 % base memory; srv-px2 also
holds the lab's foreign CT (2 cores at 20 %). Ours, all created on srv-px1 by the policies' node
weights and then allowed everywhere: seven 1-core "busy" CTs made to use their whole core, and two
1-core "idle" CTs at 10 %; each 2 GiB using 55 % of it (3.4 % of a node). srv-px1's CPU demand is
then 0.32 + 7 + 0.2 = 7.52 of 8 cores (pve_sim's PSI model: ~27 % CPU "some"), its memory ~39 %.

How many CTs the relief takes, and that the node is out of pressure afterwards, is computed from the
simulator's figures (CT and node sizes, the simulator's PSI curve), not written down: one busy CT holds
12.5 points of srv-px1's CPU, so one move sheds reliefPercent 10 (shedding 10 points of memory, the pool's
metric, would take three CTs), and leaves srv-px1 at 6.52 cores (~12 %).
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from typing import Any

import pytest

from tests.e2e.conftest import Lab, migrations, ready_replicas, recent_actions, sim_state
from tests.fixtures.kube import wait_for
from tests.fixtures.operator import connect_pool

pytestmark = [pytest.mark.kube, pytest.mark.slow]

NODES = ("srv-px1", "srv-px2")
STARVED, OTHER = NODES
SUSTAINED_SAMPLES = 3  # thresholds.sustainedSamples, the default
MIGRATE_ABOVE_PERCENT = 75  # the default
INTERVAL_S = 5
COOLDOWN_S = 30
BALANCING = {"intervalSeconds": INTERVAL_S, "mode": "Automatic", "cooldownSeconds": COOLDOWN_S}
ABOVE_PERCENT = 20
RELIEF_PERCENT = 10
PRESSURE = {"metric": "CpuPressure", "abovePercent": ABOVE_PERCENT, "reliefPercent": RELIEF_PERCENT}
BUSY_REPLICAS = 7
IDLE_REPLICAS = 2
BUSY_CPU = 1.0  # of the CT's one core
# Distinct VMID ranges (inside the lab's 3100-3199; 3150 is the foreign CT).
BUSY_RANGE = (3100, 3119)
IDLE_RANGE = (3120, 3139)
PRESSURE_KEY = "pressurecpusome"
#: Real seconds per simulated second: a sample every 5 s is 50 simulated s, less than the RRD's one-minute
#: rows, so some cycles read the row an earlier cycle read, and the row read right after the migration
#: ends is one whose minute began before it. Both happen in production (intervalSeconds 30) and once
#: made the operator relieve the node a second time; the operator counts one sample per row and skips
#: rows from before a move, which this scale exercises.
TIME_SCALE = 0.1


def weights(*allowed: str) -> dict[str, Any]:
    return {"placement": {"nodeWeights": [{"name": n, "weight": 1 if n in allowed else 0} for n in NODES]}}


def apply_policies(lab: Lab, *allowed: str) -> None:
    for name, replicas, (start, end) in (("busy", BUSY_REPLICAS, BUSY_RANGE), ("idle", IDLE_REPLICAS, IDLE_RANGE)):
        lab.apply_policy(
            name, replicas=replicas, vmid_start=start, vmid_end=end, memory_mib=2048, extra_spec=weights(*allowed)
        )


def observed(lab: Lab, kind: str, name: str) -> bool:
    """The operator has handled the object's current spec."""
    obj = lab.get(kind, name)
    return bool(obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"])


def placement(state: dict[str, Any]) -> dict[int, str]:
    return {int(vmid): ct["node"] for vmid, ct in state["containers"].items()}


def vzmigrate_tasks(state: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in state["tasks"] if t["type"] == "vzmigrate"]


def live(lab: Lab, node: str) -> dict[str, float]:
    """The node's live figures in the simulator: cpu (fraction), cpudemand (cores), mem, PSI (percent)."""
    usage = lab.sim.cluster.node_usage(node)
    assert isinstance(usage, dict)
    return usage


def memory_percent(lab: Lab, node: str) -> float:
    usage = live(lab, node)
    return 100.0 * usage["mem"] / usage["maxmem"]


def rrd_newest(lab: Lab, node: str) -> dict[str, Any]:
    """The newest row of the node's RRD carrying pressure: what the operator reads each cycle."""
    rows = lab.sim.proxmox().nodes(node).rrddata.get(timeframe="hour", cf="AVERAGE")
    return dict(next(row for row in reversed(rows) if PRESSURE_KEY in row))


def rrd_pressure(lab: Lab, node: str) -> float:
    return float(rrd_newest(lab, node)[PRESSURE_KEY])


def all_running(state: dict[str, Any]) -> bool:
    return all(ct["status"] == "running" and not ct["lock"] for ct in state["containers"].values())


def wait_samples(lab: Lab, count: int, each: Any = None) -> None:
    """Wait until the operator has taken ``count`` more samples of the pool (status.lastSampleTime),
    calling ``each()`` once per new sample seen."""
    seen: list[str | None] = [lab.status("proxmoxserverpool", "lab").get("lastSampleTime")]

    def sampled() -> bool:
        now = lab.status("proxmoxserverpool", "lab").get("lastSampleTime")
        if now != seen[-1]:
            seen.append(now)
            if each is not None:
                each()
        return len(seen) > count

    wait_for(sampled, timeout_s=count * INTERVAL_S * 6 + 60, interval_s=0.5, what=f"{count} more pool samples")


def relief_moves(
    state: dict[str, Any], node: str, demand: float, cores: float, relief_fraction: float
) -> tuple[int, float]:
    """How many of the node's CTs the pressure relief moves, and the node's CPU demand (cores) after it.

    The planner sheds ``relief_fraction`` of the node's CPU (``now - reliefPercent`` points), a CT that
    clears the whole rest first: with CTs of one size, the biggest CPU users in turn until enough has
    gone. (The node's demand stays under its cores here, so the reported CPU is the demand.)"""
    used = sorted(
        (
            float(ct["usage"]["cpu"]) * float(ct["usage"]["cpus"])
            for ct in state["containers"].values()
            if ct["node"] == node and ct["status"] == "running"
        ),
        reverse=True,
    )
    shed, moves = 0.0, 0
    for ct_cores in used:
        if shed >= relief_fraction * cores - 1e-9:
            break
        shed += ct_cores
        moves += 1
    assert shed >= relief_fraction * cores - 1e-9, (used, demand)
    return moves, demand - shed


def test_cpu_pressure_moves_busy_cts_off_a_starved_node_the_memory_metric_ignores(
    kube: Any, kube_namespace: str, installed_crds: Any, pve_sim_server: Any, pve_operator_process: Any
) -> None:
    from pve_sim.pressure import CPU_SOME

    # One pool sample every 5 s = 50 simulated s, less than the RRD's 60 s rows (see TIME_SCALE).
    sim = pve_sim_server(time_scale=TIME_SCALE)
    connect_pool(kube, kube_namespace, sim, balancing=BALANCING)
    lab = Lab(kube, kube_namespace, sim, pve_operator_process(kube_namespace))
    lab.wait_condition("proxmoxserverpool", "lab", "Ready", "True", "Connected")
    apply_policies(lab, STARVED)
    lab.wait_policy("busy", ready_replicas(BUSY_REPLICAS), f"{BUSY_REPLICAS} busy CTs running", timeout_s=300)
    lab.wait_policy("idle", ready_replicas(IDLE_REPLICAS), f"{IDLE_REPLICAS} idle CTs running", timeout_s=300)
    ours = {int(ct["vmid"]): str(ct["name"]) for ct in lab.managed_cts()}
    busy = sorted(v for v, name in ours.items() if name.startswith("ct-busy-"))
    idle = sorted(v for v, name in ours.items() if name.startswith("ct-idle-"))
    assert len(busy) == BUSY_REPLICAS and len(idle) == IDLE_REPLICAS, ours
    assert Counter(placement(sim_state(lab))[v] for v in ours) == {STARVED: len(ours)}

    # The busy CTs use their whole core; everything is allowed everywhere from now on.
    for vmid in busy:
        sim.cluster.set_container_usage(vmid, "cpu", BUSY_CPU)
    apply_policies(lab, *NODES)
    for name in ("busy", "idle"):
        wait_for(lambda n=name: observed(lab, "containerpolicy", n), timeout_s=120, what=f"policy {name} observed")

    state = sim_state(lab)
    cores = float(state["nodes"][STARVED]["cores"])
    demand_before = live(lab, STARVED)["cpudemand"]
    assert demand_before < cores, "the demand stays under the cores: the reported CPU is the demand"
    pressure_model = CPU_SOME.percent(demand_before / cores)
    assert pressure_model > ABOVE_PERCENT + 5, (demand_before, pressure_model)
    assert live(lab, STARVED)[PRESSURE_KEY] == pytest.approx(pressure_model)
    assert live(lab, OTHER)[PRESSURE_KEY] < ABOVE_PERCENT
    memory_before = memory_percent(lab, STARVED)
    assert memory_before < MIGRATE_ABOVE_PERCENT - 25, memory_before
    # The RRD shows it once a whole simulated minute has passed at this load.
    wait_for(
        lambda: rrd_pressure(lab, STARVED) == pytest.approx(pressure_model, abs=0.05),
        timeout_s=60,
        what=f"{STARVED}'s RRD at the starved node's pressure",
    )

    # -- 1. No pressure trigger: Relieve on memory leaves the starved node alone, over several windows.
    phase1: list[float] = []
    wait_samples(lab, 3 * SUSTAINED_SAMPLES, each=lambda: phase1.append(rrd_pressure(lab, STARVED)))
    assert min(phase1) > ABOVE_PERCENT, phase1  # starved at every sample the operator took
    assert max(memory_percent(lab, n) for n in NODES) < MIGRATE_ABOVE_PERCENT
    assert not recent_actions(lab), "Relieve on memory plans nothing (not even a refusal) under 75 %"
    state = sim_state(lab)
    assert not vzmigrate_tasks(state)
    assert Counter(placement(state)[v] for v in ours) == {STARVED: len(ours)}

    # What the relief needs, from the sizes: enough busy CTs to take reliefPercent points of CPU off, and
    # then the node is out of pressure (no second decision).
    expected_moves, demand_after_model = relief_moves(state, STARVED, demand_before, cores, RELIEF_PERCENT / 100)
    pressure_after_model = CPU_SOME.percent(demand_after_model / cores)
    ct_memory = max(float(state["containers"][str(v)]["usage"]["mem"]) for v in ours)
    memory_moves = math.ceil(RELIEF_PERCENT / 100 * float(state["nodes"][STARVED]["usage"]["maxmem"]) / ct_memory)
    assert memory_moves > expected_moves, "the count tells CPU relief from relief in the pool's metric"
    assert pressure_after_model < ABOVE_PERCENT - 5, (demand_after_model, pressure_after_model)
    cpu_before = float(state["nodes"][STARVED]["usage"]["cpu"])
    rrd_before = rrd_newest(lab, STARVED)

    # -- 2. The pressure trigger: busy CTs leave the starved node for the node under no pressure.
    started = time.monotonic()
    connect_pool(kube, kube_namespace, sim, balancing=BALANCING, thresholds={"metric": "memory", "pressure": PRESSURE})
    wait_for(lambda: bool(migrations(lab, "InProgress")), timeout_s=120, interval_s=0.5, what="a migration started")
    first_move_s = time.monotonic() - started

    def relieved() -> bool:
        return (
            len(migrations(lab, "Succeeded")) >= expected_moves
            and not lab.status("proxmoxserverpool", "lab").get("inFlight")
            and all_running(sim_state(lab))
        )

    wait_for(relieved, timeout_s=180, interval_s=0.5, what=f"{expected_moves} migration(s) done, every CT running")
    relief_s = time.monotonic() - started
    succeeded = migrations(lab, "Succeeded")
    moved = [int(a["vmid"]) for a in succeeded]
    assert len(moved) == expected_moves, f"{len(moved)} moves where the relief needs {expected_moves}: {succeeded}"
    assert set(moved) <= set(busy), f"only busy CTs relieve CPU: moved {moved}, busy {busy}"
    assert all(a["sourceNode"] == STARVED and a["targetNode"] == OTHER for a in succeeded), succeeded
    reason = re.compile(
        rf"^{STARVED} cpu pressure (?P<pressure>[\d.]+)% > pressure\.abovePercent {ABOVE_PERCENT} for "
        rf"{SUSTAINED_SAMPLES} samples: shed {RELIEF_PERCENT} points of its cpu use "
        rf"\(cpu (?P<before>[\d.]+)% → (?P<after>[\d.]+)%\); CT (?P<vmid>\d+) "
    )
    for action in succeeded:
        match = reason.match(action["reason"])
        assert match, action["reason"]
        assert int(match["vmid"]) == action["vmid"]
        assert float(match["pressure"]) == pytest.approx(pressure_model, abs=0.1), action["reason"]
        # The reason shows the stalled resource's figures: at least reliefPercent points of CPU shed.
        assert float(match["before"]) - float(match["after"]) >= RELIEF_PERCENT - 0.05, action["reason"]
    events = [e["message"] for e in lab.events() if e["reason"] == "Migrated"]
    for vmid in moved:
        assert any(
            m.startswith(f"migrated CT {vmid} {STARVED} → {OTHER} (restart mode): {STARVED} cpu pressure ")
            and f"> pressure.abovePercent {ABOVE_PERCENT} for {SUSTAINED_SAMPLES} samples: shed {RELIEF_PERCENT} "
            "points of its cpu use"
            in m
            for m in events
        ), events
    state = sim_state(lab)
    assert all(placement(state)[v] == OTHER for v in moved)
    assert not migrations(lab, "Failed")

    # -- 3. The starved node's pressure is gone: nothing more moves over several samples (a fixed point),
    #       past the moved CTs' cooldown too.
    wait_for(
        lambda: rrd_pressure(lab, STARVED) < ABOVE_PERCENT,
        timeout_s=60,
        what=f"{STARVED}'s RRD below pressure.abovePercent",
    )
    recorded = recent_actions(lab)
    phase3: list[tuple[float, float]] = []
    wait_samples(
        lab,
        SUSTAINED_SAMPLES + 3,
        each=lambda: phase3.append((rrd_pressure(lab, STARVED), rrd_pressure(lab, OTHER))),
    )
    while time.monotonic() - started < first_move_s + COOLDOWN_S + INTERVAL_S:
        wait_samples(lab, 1, each=lambda: phase3.append((rrd_pressure(lab, STARVED), rrd_pressure(lab, OTHER))))
    assert max(p for p, _ in phase3) < ABOVE_PERCENT and max(p for _, p in phase3) < ABOVE_PERCENT, phase3
    assert recent_actions(lab) == recorded, recent_actions(lab)[len(recorded) :]
    assert not lab.status("proxmoxserverpool", "lab").get("inFlight")
    end = sim_state(lab)
    assert len(vzmigrate_tasks(end)) == expected_moves
    assert all(t["status"] == "OK" for t in vzmigrate_tasks(end)), vzmigrate_tasks(end)
    assert all(placement(end)[v] == (OTHER if v in moved else STARVED) for v in ours), placement(end)
    assert all_running(end), end["containers"]
    assert all(ct["status"] == "running" for ct in lab.managed_cts())
    assert len(lab.managed_cts()) == len(ours)
    demand_after = live(lab, STARVED)["cpudemand"]
    assert demand_after == pytest.approx(demand_after_model)
    assert live(lab, STARVED)[PRESSURE_KEY] == pytest.approx(pressure_after_model)
    rrd_after = rrd_newest(lab, STARVED)
    assert float(rrd_after[PRESSURE_KEY]) == pytest.approx(pressure_after_model, abs=0.05)
    assert max(memory_percent(lab, n) for n in NODES) < MIGRATE_ABOVE_PERCENT

    print(
        f"\npressure trigger: {STARVED} cpu demand {demand_before:.2f} → {demand_after:.2f} of {cores:.0f} cores "
        f"(cpu {100 * cpu_before:.1f} % → {100 * float(end['nodes'][STARVED]['usage']['cpu']):.1f} %; "
        f"RRD cpu {100 * float(rrd_before['cpu']):.1f} % → {100 * float(rrd_after['cpu']):.1f} %), "
        f"{PRESSURE_KEY} RRD {rrd_before[PRESSURE_KEY]} % → {rrd_after[PRESSURE_KEY]} %, "
        f"memory {memory_before:.1f} % → {memory_percent(lab, STARVED):.1f} %; "
        f"{len(moved)} move(s) {moved} (expected {expected_moves}, {memory_moves} on memory); "
        f"first move {first_move_s:.1f} s after the trigger, relieved in {relief_s:.1f} s; "
        f"phase 1 RRD pressure {phase1}; phase 3 (px1, px2) {phase3}"
    )
    print(f"reason: {succeeded[0]['reason']}")

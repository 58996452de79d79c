"""What a pool's cycle knows of its nodes' past, over real HTTPS from pve_sim (whose RRD is evaluated from
the same load model): a restarted operator is not blind (its first cycle seeds each node's samples from
the node's RRD, issue 10), and pressure is sampled once per RRD minute, never from before a move."""

from __future__ import annotations

from collections import deque
from typing import Any

from pve_operator.api.v1alpha1 import ProxmoxServerPoolSpec
from pve_operator.handlers.balancing import PoolMemory, sample_pressure, seed_from_rrd
from pve_operator.planning.balancing.state import sustained_above
from pve_operator.planning.model import Metric
from tests.integration.test_pve_client import client_for


def pool_spec(sim: Any, **thresholds: Any) -> ProxmoxServerPoolSpec:
    return ProxmoxServerPoolSpec.model_validate(
        {
            "endpoint": sim.url,
            "credentialsSecretRef": {"name": "pve"},
            "nodes": [{"name": "srv-px1"}, {"name": "srv-px2"}],
            "thresholds": thresholds,
        }
    )


def test_a_node_overloaded_for_minutes_is_sustained_on_the_first_cycle(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=0.0)
    sim.cluster.advance_clock(60)
    sim.cluster.set_node_load("srv-px1", "memory", 0.9)
    sim.cluster.advance_clock(300)  # five minutes at 90 %: the RRD has it
    now = sim.cluster.now()
    memory = PoolMemory()
    with client_for(sim) as pve:
        snapshot = pve.snapshot(now)
        seed_from_rrd(pve, pool_spec(sim), snapshot, memory, now, "test/lab")
    assert memory.seeded
    hot, calm = list(memory.history["srv-px1"]), list(memory.history["srv-px2"])
    # sustainedSamples 3: two rows from the RRD, the third is the cycle's own sample.
    assert len(hot) == 2 and all(f > 0.85 for f in hot) and all(f < 0.5 for f in calm)
    samples = [*hot, snapshot.nodes["srv-px1"].used_fraction(Metric.MEMORY)]
    assert sustained_above(samples, 3, 0.75), samples


def test_nothing_is_seeded_for_a_disk_pool_or_a_node_that_has_samples(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=0.0)
    sim.cluster.advance_clock(300)
    now = sim.cluster.now()
    with client_for(sim) as pve:
        snapshot = pve.snapshot(now)
        disk = PoolMemory()
        seed_from_rrd(pve, pool_spec(sim, metric="disk"), snapshot, disk, now, "test/lab")
        kept = PoolMemory()
        kept.history["srv-px1"] = deque([0.42])
        seed_from_rrd(pve, pool_spec(sim), snapshot, kept, now, "test/lab")
    assert disk.seeded and not disk.history
    assert list(kept.history["srv-px1"]) == [0.42] and len(kept.history["srv-px2"]) == 2


def test_pressure_samples_are_seeded_too(pve_sim_server: Any) -> None:
    sim = pve_sim_server(time_scale=0.0)
    sim.cluster.advance_clock(60)
    sim.cluster.set_node_load("srv-px2", "cpu", 1.0)  # demand above its cores: CPU pressure
    sim.cluster.advance_clock(300)
    now = sim.cluster.now()
    memory = PoolMemory()
    with client_for(sim) as pve:
        snapshot = pve.snapshot(now)
        spec = pool_spec(sim, pressure={"metric": "CpuPressure"})
        fetched = seed_from_rrd(pve, spec, snapshot, memory, now, "test/lab")
        # Two rows before the newest are seeded; the newest is the cycle's own pressure sample.
        assert len(memory.pressure.samples["srv-px2"]) == 2 and all(p > 0.2 for p in memory.pressure.samples["srv-px2"])
        assert list(memory.pressure.samples["srv-px1"]) == [0.0, 0.0]
        # The cycle's sample comes from the rows the seeding read (no second read of the RRD): sustained.
        sample_pressure(pve, spec, snapshot, memory, None, fetched)
    assert len(memory.pressure.samples["srv-px2"]) == 3 and all(p > 0.2 for p in memory.pressure.samples["srv-px2"])
    assert set(fetched) == {"srv-px1", "srv-px2"}


def test_a_pressure_sample_is_one_rrd_minute_and_minutes_from_before_a_move_do_not_count(
    pve_sim_server: Any,
) -> None:
    """Found by the pressure e2e: sampling every 20 s read the same pre-move minute again right after a
    migration ended, counted it as fresh sustained pressure, and moved a second CT that was not needed."""
    sim = pve_sim_server(time_scale=0.0)
    sim.cluster.advance_clock(60)
    sim.cluster.set_node_load("srv-px2", "cpu", 1.0)
    sim.cluster.advance_clock(120)
    spec = pool_spec(sim, pressure={"metric": "CpuPressure"})
    memory = PoolMemory(seeded=True)
    with client_for(sim) as pve:
        snapshot = pve.snapshot(sim.cluster.now())
        sample_pressure(pve, spec, snapshot, memory, body=None)
        sample_pressure(pve, spec, snapshot, memory, body=None)  # the same minute read again
        assert len(memory.pressure.samples["srv-px2"]) == 1
        sim.cluster.advance_clock(60)
        sample_pressure(pve, spec, snapshot, memory, body=None)
        assert len(memory.pressure.samples["srv-px2"]) == 2

        # A move off srv-px2 ends now: its samples go, and so does every minute that began before.
        memory.pressure.forget("srv-px2", sim.cluster.now())
        for _ in range(2):
            sim.cluster.advance_clock(30)
            sample_pressure(pve, spec, snapshot, memory, body=None)
            assert not memory.pressure.samples.get("srv-px2"), "a minute from before the move counted"
        sim.cluster.advance_clock(60)
        sample_pressure(pve, spec, snapshot, memory, body=None)
        assert len(memory.pressure.samples["srv-px2"]) == 1
    # srv-px1 has no pressure and was sampled once per RRD row all along: 6 reads, 4 distinct minutes.
    assert list(memory.pressure.samples["srv-px1"]) == [0.0] * 4

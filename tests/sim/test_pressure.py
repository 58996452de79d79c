"""Pressure stall information (PSI) in the load model (``pve_sim.pressure``) and where PVE 9 shows it:
node and CT ``rrddata`` rows, the CT list and ``status/current``; absent on PVE 8."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml

from pve_sim.cluster import SimCluster
from pve_sim.common import ApiResult, Subject
from pve_sim.history import GIB, NodeCapacity, Placement, UsageModel
from pve_sim.load import ConstantProfile
from pve_sim.pressure import (
    CPU_FULL,
    CPU_SOME,
    CT_PRESSURE_KEYS,
    MEMORY_FULL,
    MEMORY_SOME,
    NODE_PRESSURE_KEYS,
    PsiCurve,
    ct_pressure,
    node_pressure,
    truncate_percent,
)
from pve_sim.rrd import CT_RRD_KEYS_PVE8, NODE_RRD_KEYS, NODE_RRD_KEYS_PVE8
from pve_sim.scenario import parse_scenario
from tests.fixtures.sim import SimServerFactory, SimTestServer

LAB = Path(__file__).resolve().parents[2] / "examples" / "scenarios" / "two-nodes.yaml"
START = 1_749_999_960  # a multiple of 60: RRD rows line up with the scenario's seconds
ROOT = Subject("root@pam")
NODE_CT = "/nodes/{node}/lxc/{vmid}"
LEGACY = 3150  # the lab's running CT on srv-px2: 2 cores at 20 %, 4 GiB at 50 +- 10 %
CURVES = {"cpu some": CPU_SOME, "cpu full": CPU_FULL, "memory some": MEMORY_SOME, "memory full": MEMORY_FULL}
RATIOS = [i / 200 for i in range(0, 601)]  # 0 .. 3 in steps of 0.005


def constant(value: float) -> ConstantProfile:
    return ConstantProfile(value=value)


def lab_data(pve_version: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(LAB.read_text())
    data["cluster"]["startEpoch"] = START
    if pve_version is not None:
        data["cluster"]["pveVersion"] = pve_version
    return data


def make_cluster(pve_version: str | None = None) -> SimCluster:
    return SimCluster.from_scenario(parse_scenario(lab_data(pve_version), "pressure"), time_scale=0.0)


def get(cluster: SimCluster, template: str, **params: Any) -> Any:
    result = cluster.handle("GET", template, ROOT, params)
    return result.data if isinstance(result, ApiResult) else result


def newest_row(cluster: SimCluster, node: str, **params: Any) -> dict[str, Any]:
    rows = get(cluster, "/nodes/{node}/rrddata", node=node, timeframe="hour", **params)
    row: dict[str, Any] = rows[-1]
    return row


# ------------------------------------------------------------------------------ the curves


@pytest.mark.parametrize("name", CURVES)
def test_each_curve_is_zero_up_to_its_knee_half_at_half_monotone_and_bounded(name: str) -> None:
    curve = CURVES[name]
    values = [curve.percent(r) for r in RATIOS]

    assert all(v == 0.0 for r, v in zip(RATIOS, values, strict=True) if r <= curve.knee)
    assert all(v > 0.0 for r, v in zip(RATIOS, values, strict=True) if r >= curve.knee + 0.02)
    assert curve.percent(curve.half) == 50.0
    assert all(a <= b for a, b in pairwise(values))
    assert all(0.0 <= v <= 100.0 for v in values)
    assert curve.percent(10.0) == 100.0
    assert all(round(v, 2) == v for v in values)  # two decimals, like /proc/pressure


def test_full_is_never_above_some() -> None:
    for ratio in RATIOS:
        assert MEMORY_FULL.percent(ratio) <= MEMORY_SOME.percent(ratio)
        assert CPU_FULL.percent(ratio) <= CPU_SOME.percent(ratio)
    assert MEMORY_FULL.percent(0.97) < MEMORY_SOME.percent(0.97)


def test_documented_points_of_the_curves() -> None:
    assert MEMORY_SOME.percent(0.85) == 0.0
    assert MEMORY_SOME.percent(0.90) == pytest.approx(7.41)
    assert MEMORY_SOME.percent(0.97) == pytest.approx(35.82)
    assert MEMORY_SOME.percent(1.0) == 50.0
    assert MEMORY_FULL.percent(1.0) == pytest.approx(26.51)
    assert CPU_SOME.percent(0.6) == 0.0
    assert CPU_SOME.percent(1.0) == pytest.approx(35.82)
    assert CPU_SOME.percent(1.5) == pytest.approx(89.41)


def test_kernel_style_truncation_and_invalid_curves() -> None:
    assert truncate_percent(12.349) == 12.34
    assert truncate_percent(-1.0) == 0.0
    assert truncate_percent(float("nan")) == 0.0
    assert truncate_percent(250.0) == 100.0
    assert MEMORY_SOME.percent(float("nan")) == 0.0
    with pytest.raises(ValueError, match="knee < half"):
        PsiCurve(knee=0.9, half=0.9)


# ------------------------------------------------------------------------------ the load model


@pytest.fixture
def model() -> UsageModel:
    usage = UsageModel(float(START))
    usage.add_node(
        "pve1",
        NodeCapacity(cores=8, memory_bytes=32 * GIB, rootfs_bytes=100 * GIB),
        {"cpu": constant(0.05), "memory": constant(0.1), "disk": constant(0.2)},
        online=True,
        epoch=float(START),
    )
    return usage


def ct(epoch: float, cpus: float, memory_bytes: int, running: bool = True) -> Placement:
    return Placement(epoch, "pve1", running, cpus=cpus, maxmem_bytes=memory_bytes, maxdisk_bytes=GIB, storage=None)


def test_an_idle_node_has_no_pressure(model: UsageModel) -> None:
    assert node_pressure(model.node_usage_at("pve1", START + 1)) == dict.fromkeys(NODE_PRESSURE_KEYS, 0.0)


def test_cpu_demand_above_capacity_shows_as_cpu_pressure_though_cpu_is_capped(model: UsageModel) -> None:
    # 8 cores' base at 5 % (0.4 cores) plus 6 CTs of 2 cores at 80 % (9.6 cores) on 8 cores: ratio 1.25.
    for vmid in range(101, 107):
        model.add_ct(vmid, ct(START, 2.0, GIB), {"cpu": constant(0.8)})

    usage = model.node_usage_at("pve1", START + 1)
    pressure = node_pressure(usage)

    assert usage.cpu_fraction == 1.0
    assert usage.cpu_demand_cores == pytest.approx(10.0)
    assert pressure["pressurecpusome"] == CPU_SOME.percent(10.0 / 8) > 50.0
    assert pressure["pressurememorysome"] == 0.0
    assert "pressurecpufull" not in pressure  # the node RRD has no CPU full


def test_memory_demand_above_capacity_shows_as_memory_pressure(model: UsageModel) -> None:
    # 3.2 GiB base plus 30 GiB of CTs on 32 GiB: mem is capped, the demand (ratio 1.04) is not.
    model.add_ct(101, ct(START, 2.0, 30 * GIB), {"memory": constant(1.0)})

    usage = model.node_usage_at("pve1", START + 1)
    pressure = node_pressure(usage)

    assert usage.mem_bytes == 32 * GIB
    assert usage.mem_demand_bytes == int(0.1 * 32 * GIB) + 30 * GIB
    assert pressure["pressurememorysome"] == MEMORY_SOME.percent(usage.mem_demand_bytes / (32 * GIB)) > 50.0
    assert 0.0 < pressure["pressurememoryfull"] < pressure["pressurememorysome"]


def test_node_pressure_is_monotone_in_memory_and_cpu_demand(model: UsageModel) -> None:
    memory: list[float] = []
    cpu: list[float] = []
    for step in range(0, 121):
        epoch = START + 10 * step
        model.set_node_profile("pve1", "memory", constant(step / 120), epoch)
        model.set_node_profile("pve1", "cpu", constant(step / 120), epoch)
        pressure = node_pressure(model.node_usage_at("pve1", epoch))
        memory.append(pressure["pressurememorysome"])
        cpu.append(pressure["pressurecpusome"])

    assert memory == sorted(memory) and cpu == sorted(cpu)
    assert memory[:100] == [0.0] * 100  # up to 83 % of the RAM nothing stalls
    assert memory[-1] == 50.0 and cpu[-1] == CPU_SOME.percent(1.0)
    assert len(set(memory[-12:])) == 12  # steep and still rising near 100 %


def test_a_ct_stalls_on_memory_at_its_own_limit_and_on_cpu_with_its_node(model: UsageModel) -> None:
    model.add_ct(101, ct(START, 2.0, GIB), {"memory": constant(0.97), "cpu": constant(0.5)})
    model.add_ct(102, ct(START, 2.0, GIB), {"memory": constant(0.5)})  # no CPU demand
    node = model.node_usage_at("pve1", START + 1)
    busy = model.ct_usage_at(101, START + 1)
    idle = model.ct_usage_at(102, START + 1)
    assert busy is not None and idle is not None

    assert node_pressure(node)["pressurememorysome"] == 0.0
    assert ct_pressure(busy, node)["pressurememorysome"] == MEMORY_SOME.percent(0.97)
    assert ct_pressure(idle, node)["pressurememorysome"] == 0.0

    # The node gets CPU-saturated: the busy CT shares the node's CPU some, the idle one has nothing queued.
    model.set_node_profile("pve1", "cpu", constant(1.0), START + 2)
    node = model.node_usage_at("pve1", START + 3)
    busy = model.ct_usage_at(101, START + 3)
    idle = model.ct_usage_at(102, START + 3)
    assert busy is not None and idle is not None
    some = node_pressure(node)["pressurecpusome"]

    assert some == CPU_SOME.percent(9.0 / 8)
    assert ct_pressure(busy, node)["pressurecpusome"] == some
    assert 0.0 < ct_pressure(busy, node)["pressurecpufull"] < some
    assert ct_pressure(idle, node)["pressurecpusome"] == 0.0
    assert set(ct_pressure(busy, node)) == set(CT_PRESSURE_KEYS)


def test_every_ct_stalls_when_its_node_runs_out_of_memory(model: UsageModel) -> None:
    model.add_ct(101, ct(START, 1.0, GIB), {"memory": constant(0.2)})
    model.set_node_profile("pve1", "memory", constant(1.0), START + 1)
    node = model.node_usage_at("pve1", START + 2)
    usage = model.ct_usage_at(101, START + 2)
    assert usage is not None

    assert ct_pressure(usage, node)["pressurememorysome"] == node_pressure(node)["pressurememorysome"] > 50.0


def test_a_stopped_ct_has_no_pressure(model: UsageModel) -> None:
    model.add_ct(101, ct(START, 1.0, GIB, running=False), {"memory": constant(1.0)})
    usage = model.ct_usage_at(101, START + 1)
    assert usage is not None

    assert ct_pressure(usage, model.node_usage_at("pve1", START + 1)) == {}


# ------------------------------------------------------------------------------ the API, in-process


def test_lab_nodes_and_their_cts_are_pressure_free() -> None:
    cluster = make_cluster()
    cluster.advance_clock(180)

    for node in ("srv-px1", "srv-px2"):
        row = newest_row(cluster, node)
        assert {key: row[key] for key in NODE_PRESSURE_KEYS} == dict.fromkeys(NODE_PRESSURE_KEYS, 0.0)
    status = get(cluster, f"{NODE_CT}/status/current", node="srv-px2", vmid=LEGACY)
    assert {key: status[key] for key in CT_PRESSURE_KEYS} == dict.fromkeys(CT_PRESSURE_KEYS, "0.00")


def test_node_cpu_overload_raises_cpu_pressure_of_the_node_and_its_busy_cts() -> None:
    cluster = make_cluster()
    cluster.advance_clock(60)
    cluster.set_node_load("srv-px2", "cpu", 1.0)  # 8 cores busy plus the legacy CT's 0.4: ratio 1.05
    cluster.advance_clock(120)

    row = newest_row(cluster, "srv-px2")
    status = get(cluster, f"{NODE_CT}/status/current", node="srv-px2", vmid=LEGACY)
    ct_row = get(cluster, f"{NODE_CT}/rrddata", node="srv-px2", vmid=LEGACY, timeframe="hour")[-1]

    assert row["cpu"] == 1.0
    assert row["pressurecpusome"] == CPU_SOME.percent(8.4 / 8) == pytest.approx(42.96)
    assert row["pressurememorysome"] == 0.0
    assert newest_row(cluster, "srv-px1")["pressurecpusome"] == 0.0
    assert status["pressurecpusome"] == f"{CPU_SOME.percent(8.4 / 8):.2f}"
    assert float(status["pressurecpufull"]) == CPU_FULL.percent(8.4 / 8) > 0.0
    assert ct_row["pressurecpusome"] == pytest.approx(CPU_SOME.percent(8.4 / 8))


def test_a_stopped_ct_has_no_pressure_keys_in_status_or_rrd() -> None:
    cluster = make_cluster()
    cluster.advance_clock(60)
    cluster.set_node_load("srv-px2", "memory", 1.0)
    cluster.handle("POST", f"{NODE_CT}/status/stop", ROOT, {"node": "srv-px2", "vmid": LEGACY})
    cluster.advance_clock(120)

    status = get(cluster, f"{NODE_CT}/status/current", node="srv-px2", vmid=LEGACY)
    rows = get(cluster, f"{NODE_CT}/rrddata", node="srv-px2", vmid=LEGACY, timeframe="hour")

    assert status["status"] == "stopped"
    assert not set(CT_PRESSURE_KEYS) & set(status)
    assert not set(CT_PRESSURE_KEYS) & set(rows[-1])
    ran = next(row for row in rows if row["time"] == START + 60)
    assert ran["pressurememorysome"] == 0.0  # it ran then: the PSI columns were known


def test_same_scenario_and_profiles_give_the_same_figures() -> None:
    def run() -> tuple[Any, ...]:
        cluster = make_cluster()
        ramp = {"type": "ramp", "from": 0.5, "to": 1.0, "start": 0, "end": 600}
        wave = {"type": "periodic", "base": 0.85, "amplitude": 0.1, "periodSeconds": 300}
        cluster.set_container_usage(LEGACY, "memory", ramp)
        cluster.set_node_load("srv-px2", "memory", wave)
        cluster.advance_clock(900)
        return (
            get(cluster, "/nodes/{node}/rrddata", node="srv-px2", timeframe="hour", cf="MAX"),
            get(cluster, f"{NODE_CT}/rrddata", node="srv-px2", vmid=LEGACY, timeframe="hour"),
            get(cluster, "/nodes/{node}/lxc", node="srv-px2"),
        )

    first, second = run(), run()

    assert first == second
    node_rows = first[0]
    assert max(row.get("pressurememorysome", 0.0) for row in node_rows) > 20.0  # the periodic load peaks at 95 %
    assert max(row.get("pressurememoryfull", 0.0) for row in node_rows) > 0.0


def test_pve8_has_no_pressure_anywhere() -> None:
    cluster = make_cluster("8.4.1")
    cluster.advance_clock(60)
    cluster.set_node_load("srv-px2", "memory", 1.0)
    cluster.advance_clock(120)

    node_row = newest_row(cluster, "srv-px2")
    ct_row = get(cluster, f"{NODE_CT}/rrddata", node="srv-px2", vmid=LEGACY, timeframe="hour")[-1]
    listed = get(cluster, "/nodes/{node}/lxc", node="srv-px2")
    status = get(cluster, f"{NODE_CT}/status/current", node="srv-px2", vmid=LEGACY)

    assert set(node_row) == {"time", *NODE_RRD_KEYS_PVE8}
    assert set(ct_row) == {"time", *CT_RRD_KEYS_PVE8}
    assert listed and all(not any(key.startswith("pressure") for key in entry) for entry in listed)
    assert status["status"] == "running" and not any(key.startswith("pressure") for key in status)


# ------------------------------------------------------------------------------ over HTTPS


@pytest.fixture
def server(pve_sim_server: SimServerFactory) -> SimTestServer:
    return pve_sim_server(parse_scenario(lab_data(), "pressure"))


def test_a_node_pushed_to_full_memory_shows_memory_pressure_in_its_newest_hour_row(server: SimTestServer) -> None:
    api = server.proxmox("ctoperator@pve", token="operator")
    server.admin.advance_clock(60)
    before = {node: api.nodes(node).rrddata.get(timeframe="hour")[-1] for node in ("srv-px1", "srv-px2")}

    pushed = server.admin.set_node_load("srv-px1", "memory", 0.97)  # idle srv-px1: 97 % of its RAM
    server.admin.advance_clock(120)  # two whole RRD steps after the change
    px1 = api.nodes("srv-px1").rrddata.get(timeframe="hour")
    px2 = api.nodes("srv-px2").rrddata.get(timeframe="hour")

    assert before["srv-px1"]["pressurememorysome"] == before["srv-px2"]["pressurememorysome"] == 0.0
    assert pushed["pressurememorysome"] == pytest.approx(35.82, abs=0.02)
    assert px1[-1]["time"] == START + 180
    assert px1[-1]["pressurememorysome"] == pytest.approx(35.82, abs=0.02)
    assert px1[-1]["pressurememoryfull"] == pytest.approx(14.01, abs=0.02)
    assert px1[-1]["pressurecpusome"] == 0.0
    assert {key: px2[-1][key] for key in NODE_PRESSURE_KEYS} == dict.fromkeys(NODE_PRESSURE_KEYS, 0.0)
    assert set(px1[-1]) == {"time", *NODE_RRD_KEYS}
    # The row stamped at the change covers (T - 60, T] before it: still calm.
    assert next(row for row in px1 if row["time"] == START + 60)["pressurememorysome"] == 0.0


def test_ct_list_and_status_carry_pressure_as_pve9_strings(server: SimTestServer) -> None:
    api = server.proxmox("ctoperator@pve", token="operator")
    server.admin.set_container_usage(LEGACY, "memory", 1.0)  # the CT at its own memory limit

    listed = next(entry for entry in api.nodes("srv-px2").lxc.get() if entry["vmid"] == LEGACY)
    status = api.nodes("srv-px2").lxc(LEGACY).status.current.get()
    node_row = server.admin.node_usage("srv-px2")

    for entry in (listed, status):
        assert {key for key in entry if key.startswith("pressure")} == set(CT_PRESSURE_KEYS)
        assert entry["pressurememorysome"] == "50.00" and entry["pressurememoryfull"] == "26.51"
        assert entry["pressurecpusome"] == entry["pressureiofull"] == "0.00"
    assert node_row["pressurememorysome"] == 0.0  # one CT at its limit, the node has plenty
    assert server.admin.container_usage(LEGACY)["pressurememorysome"] == 50.0

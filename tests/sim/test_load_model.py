"""The load model through proxmoxer: a node's usage is its base load plus what its running CTs use,
computed here from the lab scenario's numbers, after create, start, stop, migrate and delete; the
lagged view of ``/cluster/resources``; and RRD history that follows a CT across a migration."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from proxmoxer.tools import Tasks

from pve_sim.scenario import parse_scenario
from tests.fixtures.sim import SimServerFactory, SimTestServer

LAB = Path(__file__).resolve().parents[2] / "examples" / "scenarios" / "two-nodes.yaml"
TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
GIB = 1 << 30
MIB = 1 << 20
START = 1_749_999_960  # a multiple of 60, so RRD rows line up with the scenario's seconds

LAB_DATA: dict[str, Any] = yaml.safe_load(LAB.read_text())
NODE_MEMORY = int(LAB_DATA["nodes"][0]["memoryGiB"] * GIB)
NODE_CORES = LAB_DATA["nodes"][0]["cores"]
BASE_MEMORY = int(LAB_DATA["nodes"][0]["baseLoad"]["memory"] * NODE_MEMORY)
BASE_CPU = LAB_DATA["nodes"][0]["baseLoad"]["cpu"]
RULE = LAB_DATA["usage"]["rules"][0]  # hostname ct-*: memory 0.55, cpu 0.10, disk 0.30
DEFAULT = LAB_DATA["usage"]["default"]
LEGACY = LAB_DATA["containers"][0]  # vmid 3150 on srv-px2, 4096 MiB, periodic memory


def legacy_memory(elapsed: float) -> int:
    profile = LEGACY["usage"]["memory"]
    fraction = profile["base"] + profile["amplitude"] * math.sin(2 * math.pi * elapsed / profile["periodSeconds"])
    return int(fraction * LEGACY["memoryMiB"] * MIB)


@pytest.fixture
def server(pve_sim_server: SimServerFactory) -> SimTestServer:
    data = yaml.safe_load(LAB.read_text())
    data["cluster"]["startEpoch"] = START
    return pve_sim_server(parse_scenario(data, "load"))


@pytest.fixture
def api(server: SimTestServer) -> Any:
    return server.proxmox("ctoperator@pve", token="operator")


def run(api: Any, upid: str) -> None:
    status = api.nodes(Tasks.decode_upid(upid)["node"]).tasks(upid).status.get()
    assert status["exitstatus"] == "OK", status


def create(api: Any, vmid: int, hostname: str, **params: Any) -> None:
    """Create a CT on srv-px1 (and wait: the manual clock finishes tasks at once)."""
    fields = {"rootfs": "local-lvm:8", "unprivileged": 1, **params}
    run(api, api.nodes("srv-px1").lxc.post(vmid=vmid, hostname=hostname, ostemplate=TEMPLATE, **fields))


def node_memory(api: Any, node: str) -> int:
    used: int = api.nodes(node).status.get()["memory"]["used"]
    return used


def test_node_memory_is_base_plus_running_cts_through_a_ct_lifecycle(api: Any) -> None:
    ct_memory = int(RULE["memory"]["value"] * 1024 * MIB)

    assert node_memory(api, "srv-px1") == BASE_MEMORY
    assert node_memory(api, "srv-px2") == BASE_MEMORY + legacy_memory(0)

    create(api, 201, "ct-201", memory=1024, cores=2)
    assert node_memory(api, "srv-px1") == BASE_MEMORY  # created, not running: only its disk counts

    run(api, api.nodes("srv-px1").lxc(201).status.start.post())
    assert node_memory(api, "srv-px1") == BASE_MEMORY + ct_memory

    run(api, api.nodes("srv-px1").lxc(201).migrate.post(target="srv-px2", restart=1))
    assert node_memory(api, "srv-px1") == BASE_MEMORY
    assert node_memory(api, "srv-px2") == BASE_MEMORY + legacy_memory(0) + ct_memory

    run(api, api.nodes("srv-px2").lxc(201).status.stop.post())
    assert node_memory(api, "srv-px2") == BASE_MEMORY + legacy_memory(0)

    run(api, api.nodes("srv-px2").lxc(201).delete())
    assert node_memory(api, "srv-px2") == BASE_MEMORY + legacy_memory(0)


def test_node_cpu_adds_each_running_cts_cores_times_its_cpu_fraction(api: Any) -> None:
    create(api, 201, "ct-201", cores=2, start=1)

    cpu = api.nodes("srv-px1").status.get()["cpu"]
    ct = api.nodes("srv-px1").lxc(201).status.current.get()

    assert cpu == pytest.approx(BASE_CPU + RULE["cpu"]["value"] * 2 / NODE_CORES)
    assert ct["cpu"] == pytest.approx(RULE["cpu"]["value"])


def test_ct_usage_comes_from_the_first_matching_rule_or_the_default(api: Any) -> None:
    for vmid, hostname in ((201, "ct-web"), (202, "db-1")):
        create(api, vmid, hostname, memory=2048, rootfs="local-lvm:10", start=1)

    web = api.nodes("srv-px1").lxc(201).status.current.get()
    db = api.nodes("srv-px1").lxc(202).status.current.get()

    assert web["mem"] == int(RULE["memory"]["value"] * 2048 * MIB)
    assert web["disk"] == int(RULE["disk"]["value"] * 10 * GIB)
    assert db["mem"] == int(DEFAULT["memory"]["value"] * 2048 * MIB)


def test_stopped_cts_count_only_on_their_storage(api: Any) -> None:
    before = api.nodes("srv-px1").storage.get(storage="local-lvm")[0]["used"]
    create(api, 201, "ct-201")

    after = api.nodes("srv-px1").storage.get(storage="local-lvm")[0]["used"]
    status = api.nodes("srv-px1").lxc(201).status.current.get()

    assert after - before == int(RULE["disk"]["value"] * 8 * GIB)
    assert (status["mem"], status["disk"], status["maxdisk"]) == (0, 0, 8 * GIB)


def test_admin_usage_change_shows_up_live_and_in_cluster_resources_after_the_broadcast(
    api: Any, server: SimTestServer
) -> None:
    server.cluster.advance_clock(1)
    server.cluster.set_container_usage(3150, "memory", 0.9)

    live = api.nodes("srv-px2").lxc(3150).status.current.get()["mem"]
    lagged = next(e for e in api.cluster.resources.get(type="vm") if e["vmid"] == 3150)["mem"]
    server.cluster.advance_clock(9)
    broadcast = next(e for e in api.cluster.resources.get(type="vm") if e["vmid"] == 3150)["mem"]

    assert live == int(0.9 * 4096 * MIB)
    assert lagged == legacy_memory(0)
    assert broadcast == live


def test_cluster_resources_node_entries_match_the_live_node_after_a_broadcast(api: Any, server: SimTestServer) -> None:
    server.cluster.advance_clock(10)

    entry = next(e for e in api.cluster.resources.get(type="node") if e["node"] == "srv-px2")

    assert entry["mem"] == BASE_MEMORY + legacy_memory(10)
    assert entry["maxmem"] == NODE_MEMORY and entry["maxcpu"] == NODE_CORES
    assert entry["status"] == "online"


def test_offline_node_and_its_cts_in_cluster_resources(api: Any, server: SimTestServer) -> None:
    server.cluster.set_node_online("srv-px1", False)
    resources = api.cluster.resources.get()

    node = next(e for e in resources if e.get("id") == "node/srv-px1")
    assert node["status"] == "offline" and "mem" not in node and node["maxmem"] == NODE_MEMORY


def test_node_rrd_follows_a_ct_across_its_migration(api: Any, server: SimTestServer) -> None:
    ct_memory = int(RULE["memory"]["value"] * 1024 * MIB)
    create(api, 201, "ct-201", memory=1024, start=1)
    server.cluster.advance_clock(300)
    run(api, api.nodes("srv-px1").lxc(201).migrate.post(target="srv-px2", restart=1))
    server.cluster.advance_clock(300)

    px1 = {row["time"]: row for row in api.nodes("srv-px1").rrddata.get(timeframe="hour")}
    ct_rows = {row["time"]: row for row in api.nodes("srv-px2").lxc(201).rrddata.get(timeframe="hour")}

    assert px1[START + 240]["memused"] == pytest.approx(BASE_MEMORY + ct_memory)
    assert px1[START + 480]["memused"] == pytest.approx(BASE_MEMORY)
    assert px1[START + 480]["memtotal"] == NODE_MEMORY
    assert ct_rows[START + 240]["mem"] == pytest.approx(ct_memory)
    assert "mem" not in ct_rows.get(START - 60, {})  # before the CT existed: unknown


def test_time_passing_moves_periodic_profiles(api: Any, server: SimTestServer) -> None:
    server.cluster.advance_clock(150)  # a quarter of the 600 s period: the sine's maximum

    mem = api.nodes("srv-px2").lxc(3150).status.current.get()["mem"]

    assert mem == legacy_memory(150) == int(0.6 * 4096 * MIB)

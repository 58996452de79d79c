"""The ``/_sim`` admin endpoint, driven through ``SimAdminClient``, with effects checked via proxmoxer."""

from __future__ import annotations

import pytest
from proxmoxer import ResourceException
from proxmoxer.tools import Tasks

from pve_sim.admin_client import SimAdminClient, SimAdminError
from tests.fixtures.sim import SimServerFactory, SimTestServer

MIB = 1024 * 1024
FOREIGN_CT = 3150  # running on srv-px2, 4096 MiB memory


@pytest.fixture
def sim(pve_sim_server: SimServerFactory) -> SimTestServer:
    return pve_sim_server()


def test_admin_token_is_required(sim: SimTestServer) -> None:
    session = sim.session()
    missing = session.get(f"{sim.url}/_sim/state")
    assert missing.status_code == 401
    assert missing.json()["data"] is None

    with pytest.raises(SimAdminError) as caught:
        SimAdminClient(sim.url, sim.ca_path, "not-the-admin-token-at-all").state()
    assert caught.value.status == 401

    # PVE credentials are not admin credentials
    secret = sim.token_secret("ctoperator@pve", "operator")
    with_pve_token = session.get(
        f"{sim.url}/_sim/state", headers={"Authorization": f"PVEAPIToken=ctoperator@pve!operator={secret}"}
    )
    assert with_pve_token.status_code == 401


def test_state_dump(sim: SimTestServer) -> None:
    state = sim.admin.state()
    assert state["cluster"] == "lab"
    assert set(state["nodes"]) == {"srv-px1", "srv-px2"}
    assert state["containers"][str(FOREIGN_CT)]["node"] == "srv-px2"
    assert state["containers"][str(FOREIGN_CT)]["status"] == "running"
    assert state["internal_errors"] == []


def test_container_usage_profile_shows_in_the_api(sim: SimTestServer) -> None:
    usage = sim.admin.set_container_usage(FOREIGN_CT, "memory", 0.75)
    assert usage["mem"] == pytest.approx(0.75 * 4096 * MIB, abs=1)
    status = sim.proxmox().nodes("srv-px2").lxc(FOREIGN_CT).status.current.get()
    assert status["mem"] == int(usage["mem"])

    ramp = {"type": "ramp", "from": 0.2, "to": 0.6, "start": 0, "end": 100}
    sim.admin.set_container_usage(FOREIGN_CT, "memory", ramp)
    sim.admin.advance_clock(50)
    assert sim.admin.container_usage(FOREIGN_CT)["mem"] == pytest.approx(0.4 * 4096 * MIB, rel=0.02)


def test_node_load_shows_in_node_status(sim: SimTestServer) -> None:
    before = sim.proxmox().nodes("srv-px1").status.get()["memory"]
    sim.admin.set_node_load("srv-px1", "memory", 0.5)
    after = sim.proxmox().nodes("srv-px1").status.get()["memory"]
    assert after["total"] == before["total"]
    assert after["used"] == pytest.approx(0.5 * before["total"], rel=0.01)
    assert sim.admin.node_usage("srv-px1")["mem"] == pytest.approx(after["used"], rel=0.01)


def test_node_offline_and_back(sim: SimTestServer) -> None:
    prox = sim.proxmox()
    sim.admin.set_node_offline("srv-px2")
    with pytest.raises(ResourceException) as caught:
        prox.nodes("srv-px2").lxc.get()
    assert caught.value.status_code == 595
    assert {n["node"]: n["status"] for n in prox.nodes.get()}["srv-px2"] == "offline"

    sim.admin.set_node_online("srv-px2")
    assert isinstance(prox.nodes("srv-px2").lxc.get(), list)


def test_request_faults_fire_count_times(sim: SimTestServer) -> None:
    prox = sim.proxmox()
    sim.admin.add_request_fault(
        r"^/nodes/[^/]+/lxc$", 500, "cluster not ready - no quorum?", method="GET", count=2
    )
    assert sim.admin.faults()["request_faults"][0]["remaining"] == 2
    for _ in range(2):
        with pytest.raises(ResourceException) as caught:
            prox.nodes("srv-px1").lxc.get()
        assert (caught.value.status_code, caught.value.content) == (500, "cluster not ready - no quorum?")
    assert prox.nodes("srv-px1").lxc.get() == []
    assert sim.admin.faults()["request_faults"] == []

    sim.admin.add_request_fault("^/version$", 596, "Connection timed out")  # 59x: empty body by default
    raw = sim.session().get(f"{sim.api_url}/version", headers={"Cookie": f"PVEAuthCookie={prox.get_tokens()[0]}"})
    assert (raw.status_code, raw.reason, raw.content) == (596, "Connection timed out", b"")


def test_task_faults_fail_the_next_task(sim: SimTestServer) -> None:
    prox = sim.proxmox()
    sim.admin.fail_tasks("vzstop", "simulated stop failure", count=1)
    upid = prox.nodes("srv-px2").lxc(FOREIGN_CT).status.stop.post()
    status = Tasks.blocking_status(prox, upid, polling_interval=0.01)
    assert status["exitstatus"] == "simulated stop failure"
    log = Tasks.decode_log(prox.nodes("srv-px2").tasks(upid).log.get())
    assert log.endswith("TASK ERROR: simulated stop failure")


def test_latency_rules_are_listed_and_cleared(sim: SimTestServer) -> None:
    sim.admin.set_latency(0.01, path="^/cluster/")
    assert sim.admin.faults()["latency"] == [{"seconds": 0.01, "path_regex": "^/cluster/"}]
    assert sim.proxmox().cluster.resources.get()  # still answers, just later
    sim.admin.clear_faults()
    assert sim.admin.faults() == {"request_faults": [], "latency": [], "task_faults": []}


def test_clock_control(sim: SimTestServer) -> None:
    start = sim.admin.clock()
    assert start["timeScale"] == 0 and start["frozen"] is True
    advanced = sim.admin.advance_clock(90)
    assert advanced["elapsed"] == pytest.approx(start["elapsed"] + 90)
    assert advanced["now"] == pytest.approx(start["now"] + 90)
    assert sim.proxmox().nodes("srv-px2").lxc(FOREIGN_CT).status.current.get()["uptime"] >= 90

    scaled = sim.admin.set_time_scale(0.5)
    assert (scaled["timeScale"], scaled["frozen"]) == (0.5, False)
    frozen = sim.admin.freeze_clock()
    assert frozen["frozen"] is True
    assert sim.admin.resume_clock()["frozen"] is False


@pytest.mark.parametrize(
    ("call", "status", "fragment"),
    [
        (lambda a: a.set_container_usage(FOREIGN_CT, "gpu", 0.5), 400, "metric"),
        (lambda a: a.set_container_usage(FOREIGN_CT, "memory", {"type": "wobble"}), 400, "invalid profile"),
        (lambda a: a.set_container_usage(99999, "memory", 0.5), 404, "99999"),
        (lambda a: a.set_node_offline("srv-px9"), 404, "srv-px9"),
        (lambda a: a.add_request_fault("([", 500, "x"), 400, "regular expression"),
        (lambda a: a.advance_clock(-5), 400, "seconds"),
        (lambda a: a._call("POST", "/nodes/srv-px1/explode"), 501, "no such admin endpoint"),
    ],
)
def test_bad_admin_requests(sim: SimTestServer, call: object, status: int, fragment: str) -> None:
    assert callable(call)
    with pytest.raises(SimAdminError) as caught:
        call(sim.admin)
    assert caught.value.status == status
    assert fragment in caught.value.message

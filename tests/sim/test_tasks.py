"""Tasks through proxmoxer with a running time scale and a frozen clock: UPIDs, running -> stopped
as simulated time passes, the task list's filters and paging, and who may read a task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from proxmoxer.core import ResourceException
from proxmoxer.tools import Tasks

from pve_sim.scenario import parse_scenario
from tests.fixtures.sim import SimServerFactory, SimTestServer

LAB = Path(__file__).resolve().parents[2] / "examples" / "scenarios" / "two-nodes.yaml"
TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"


@pytest.fixture
def server(pve_sim_server: SimServerFactory) -> SimTestServer:
    """Real time scale (tasks take their scenario durations), clock frozen: tests move time."""
    data: dict[str, Any] = yaml.safe_load(LAB.read_text())
    data["users"].append({"userid": "viewer@pve", "password": "viewer-password"})
    data["roles"].append({"id": "Viewer", "privileges": ["VM.Audit"]})
    data["acl"].append({"path": "/", "role": "Viewer", "user": "viewer@pve"})
    started = pve_sim_server(parse_scenario(data, "tasks"), time_scale=1.0)
    started.cluster.clock.freeze()
    return started


@pytest.fixture
def api(server: SimTestServer) -> Any:
    return server.proxmox("ctoperator@pve", token="operator")


def status(api: Any, upid: str) -> dict[str, Any]:
    result: dict[str, Any] = api.nodes(Tasks.decode_upid(upid)["node"]).tasks(upid).status.get()
    return result


def test_upid_is_pve_shaped_and_names_the_token(api: Any, server: SimTestServer) -> None:
    upid = api.nodes("srv-px2").lxc(3150).status.stop.post()

    decoded = Tasks.decode_upid(upid)
    assert upid.startswith("UPID:srv-px2:") and upid.endswith(":vzstop:3150:ctoperator@pve!operator:")
    assert decoded["starttime"] == int(server.cluster.clock.now())
    assert (decoded["type"], decoded["id"], decoded["user"]) == ("vzstop", "3150", "ctoperator@pve")


def test_task_runs_until_simulated_time_covers_its_duration(api: Any, server: SimTestServer) -> None:
    upid = api.nodes("srv-px2").lxc(3150).status.shutdown.post()  # the lab's shutdown takes 4 s

    running = status(api, upid)
    server.cluster.advance_clock(3.5)
    still_running = status(api, upid)
    ct_while_running = api.nodes("srv-px2").lxc(3150).status.current.get()["status"]
    server.cluster.advance_clock(0.5)
    done = status(api, upid)

    assert running["status"] == still_running["status"] == "running"
    assert "exitstatus" not in running
    assert ct_while_running == "running"
    assert (done["status"], done["exitstatus"]) == ("stopped", "OK")
    assert api.nodes("srv-px2").lxc(3150).status.current.get()["status"] == "stopped"


def test_create_with_start_is_two_tasks_one_after_the_other(api: Any, server: SimTestServer) -> None:
    create = api.nodes("srv-px1").lxc.post(vmid=201, ostemplate=TEMPLATE, rootfs="local-lvm:8", unprivileged=1, start=1)

    server.cluster.advance_clock(6)  # createSeconds
    after_create = [t["type"] for t in api.nodes("srv-px1").tasks.get(source="all")]
    server.cluster.advance_clock(2)  # startSeconds

    assert status(api, create)["exitstatus"] == "OK"
    assert after_create == ["vzstart", "vzcreate"]
    start = api.nodes("srv-px1").tasks.get(typefilter="vzstart")[0]
    assert start["status"] == "OK" and start["endtime"] == start["starttime"] + 2
    assert api.nodes("srv-px1").lxc(201).status.current.get()["status"] == "running"


def test_migration_takes_base_time_plus_copy_time_and_logs_each_step_at_its_time(
    api: Any, server: SimTestServer
) -> None:
    upid = api.nodes("srv-px2").lxc(3150).migrate.post(target="srv-px1", restart=1)
    # 2 s checks + 4 s shutdown + 16 GiB at 400 MiB/s (40.96 s) + 2 s cleanup + 2 s start on target
    server.cluster.advance_clock(50)
    before_end = status(api, upid)["status"]
    server.cluster.advance_clock(1)
    final = status(api, upid)
    log = [line["t"] for line in api.nodes("srv-px2").tasks(upid).log.get(limit=0)]

    assert before_end == "running"
    assert final["exitstatus"] == "OK"
    assert log[-2].endswith("migration finished successfully (duration 00:00:50)")
    assert log[0][11:19] != log[-2][11:19]  # later steps carry later times
    assert api.nodes("srv-px1").lxc(3150).status.current.get()["status"] == "running"


def test_active_and_archived_task_lists(api: Any, server: SimTestServer) -> None:
    running = api.nodes("srv-px2").lxc(3150).status.shutdown.post()

    active = api.nodes("srv-px2").tasks.get(source="active")
    archive = api.nodes("srv-px2").tasks.get()
    server.cluster.advance_clock(4)
    archived = api.nodes("srv-px2").tasks.get()

    assert [(t["upid"], t["status"]) for t in active] == [(running, "RUNNING")]
    assert archive == []
    assert [(t["upid"], t["status"]) for t in archived] == [(running, "OK")]


def test_task_list_filters_and_paging(api: Any, server: SimTestServer) -> None:
    node = api.nodes("srv-px2")
    for round_number in range(3):
        node.lxc(3150).status.stop.post()
        server.cluster.advance_clock(1)
        if round_number == 2:
            server.cluster.fail_tasks("vzstart", "startup for container '3150' failed")
        node.lxc(3150).status.start.post()
        server.cluster.advance_clock(2)

    everything = node.tasks.get()
    page = node.tasks.get(start=1, limit=2)
    errors = node.tasks.get(errors=1)
    starts = node.tasks.get(typefilter="vzstart", vmid=3150)
    by_user = node.tasks.get(userfilter="ctoperator")
    ok_only = node.tasks.get(statusfilter="ok")

    assert len(everything) == 6
    assert page == everything[1:3]
    assert [t["status"] for t in errors] == ["startup for container '3150' failed"]
    assert len(starts) == 3 and {t["type"] for t in starts} == {"vzstart"}
    assert len(by_user) == 6
    assert len(ok_only) == 5


def test_task_list_total_counts_every_match(server: SimTestServer) -> None:
    session = server.session()
    api = server.proxmox("root@pam")
    for _ in range(3):
        api.nodes("srv-px2").lxc(3150).status.stop.post()
        server.cluster.advance_clock(1)
        api.nodes("srv-px2").lxc(3150).status.start.post()
        server.cluster.advance_clock(2)
    ticket = session.post(
        f"{server.api_url}/access/ticket", data={"username": "root@pam", "password": "sim-root-password"}
    ).json()["data"]["ticket"]

    answer = session.get(
        f"{server.api_url}/nodes/srv-px2/tasks", params={"limit": 1}, cookies={"PVEAuthCookie": ticket}
    ).json()

    assert len(answer["data"]) == 1 and answer["total"] == 6


def test_task_log_paging(api: Any, server: SimTestServer) -> None:
    upid = api.nodes("srv-px2").lxc(3150).migrate.post(target="srv-px1", restart=1)
    server.cluster.advance_clock(60)

    everything = api.nodes("srv-px2").tasks(upid).log.get(limit=0)
    page = api.nodes("srv-px2").tasks(upid).log.get(start=2, limit=3)

    assert [line["n"] for line in everything] == list(range(1, len(everything) + 1))
    assert page == everything[2:5]


def test_proxmoxer_blocking_status_sees_the_task_finish(api: Any, server: SimTestServer) -> None:
    server.cluster.clock.set_time_scale(0.001)  # 4 simulated seconds pass in 4 ms of real time
    upid = api.nodes("srv-px2").lxc(3150).status.shutdown.post()

    final = Tasks.blocking_status(api, upid, timeout=30, polling_interval=0.05)

    assert final is not None and final["exitstatus"] == "OK"


def test_other_users_tasks_need_sys_audit_on_the_node(api: Any, server: SimTestServer) -> None:
    upid = api.nodes("srv-px2").lxc(3150).status.stop.post()
    viewer = server.proxmox("viewer@pve")

    with pytest.raises(ResourceException) as denied:
        viewer.nodes("srv-px2").tasks(upid).status.get()
    listed = viewer.nodes("srv-px2").tasks.get(source="all")
    root_sees = server.proxmox("root@pam").nodes("srv-px2").tasks(upid).status.get()

    assert (denied.value.status_code, denied.value.content) == (
        403,
        "Permission check failed (/nodes/srv-px2, Sys.Audit)",
    )
    assert listed == []
    assert root_sees["user"] == "ctoperator@pve" and root_sees["tokenid"] == "operator"


def test_a_upid_is_only_known_on_its_own_node(api: Any) -> None:
    upid = api.nodes("srv-px2").lxc(3150).status.stop.post()

    with pytest.raises(ResourceException) as elsewhere:
        api.nodes("srv-px1").tasks(upid).status.get()

    assert elsewhere.value.errors == {"upid": "no such task"}


def test_bandwidth_limit_slows_the_volume_copy(api: Any, server: SimTestServer) -> None:
    # 200 MiB/s instead of the lab's 400: 16 GiB take 81.92 s; plus 2 + 4 + 2 + 2 s of other steps.
    upid = api.nodes("srv-px2").lxc(3150).migrate.post(target="srv-px1", restart=1, bwlimit=200 * 1024)
    server.cluster.advance_clock(91)
    unfinished = status(api, upid)["status"]
    server.cluster.advance_clock(1)

    assert unfinished == "running"
    assert status(api, upid)["exitstatus"] == "OK"
    log = [line["t"] for line in api.nodes("srv-px2").tasks(upid).log.get(limit=0)]
    assert log[-2].endswith("migration finished successfully (duration 00:01:31)")

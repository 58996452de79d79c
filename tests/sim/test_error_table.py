"""The contract's error table through proxmoxer: every synchronous error with PVE's status and
message (proxmoxer's ``content`` is the HTTP reason phrase), and every in-task error with the task's
exit status and log."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from proxmoxer.core import ResourceException
from proxmoxer.tools import Tasks

from pve_sim.scenario import Scenario, parse_scenario
from tests.fixtures.sim import SimServerFactory, SimTestServer

LAB = Path(__file__).resolve().parents[2] / "examples" / "scenarios" / "two-nodes.yaml"
TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"


def error_scenario() -> Scenario:
    """The lab plus what the error cases need: an offline third node, a disabled storage, a storage
    on one node only, a locked CT and a template."""
    data: dict[str, Any] = yaml.safe_load(LAB.read_text())
    data["nodes"].append({**data["nodes"][0], "name": "srv-px3", "online": False})
    data["storages"] += [
        {
            "name": "nfs-off",
            "type": "nfs",
            "content": ["rootdir"],
            "shared": True,
            "capacityGiB": 100,
            "enabled": False,
        },
        {"name": "px1-only", "type": "lvmthin", "content": ["rootdir"], "capacityGiB": 100, "nodes": ["srv-px1"]},
    ]
    base = {"memoryMiB": 512, "rootfs": {"storage": "local-lvm", "sizeGiB": 4}}
    data["containers"] += [
        {**base, "vmid": 3151, "node": "srv-px1", "hostname": "locked", "lock": "backup"},
        {**base, "vmid": 3152, "node": "srv-px1", "hostname": "golden", "template": True},
    ]
    return parse_scenario(data, "errors")


@pytest.fixture
def server(pve_sim_server: SimServerFactory) -> SimTestServer:
    return pve_sim_server(error_scenario())


@pytest.fixture
def api(server: SimTestServer) -> Any:
    return server.proxmox("ctoperator@pve", token="operator")


@pytest.fixture
def root(server: SimTestServer) -> Any:
    return server.proxmox("root@pam")


def refused(action: Callable[[], object]) -> ResourceException:
    with pytest.raises(ResourceException) as caught:
        action()
    return caught.value


def task_result(api: Any, upid: str) -> tuple[str, list[str]]:
    node = Tasks.decode_upid(upid)["node"]
    status = api.nodes(node).tasks(upid).status.get()
    assert status["status"] == "stopped"
    log = [line["t"] for line in api.nodes(node).tasks(upid).log.get(limit=0)]
    return status["exitstatus"], log


def create(api: Any, vmid: int = 201, **params: Any) -> str:
    fields: dict[str, Any] = {"vmid": vmid, "ostemplate": TEMPLATE, "rootfs": "local-lvm:4", "unprivileged": 1}
    fields.update(params)
    upid: str = api.nodes(fields.pop("node", "srv-px1")).lxc.post(**fields)
    return upid


# ================================================================================== synchronous

SYNC_CASES: list[tuple[str, Callable[[Any], object], int, str]] = [
    ("start running", lambda a: a.nodes("srv-px2").lxc(3150).status.start.post(), 500, "CT 3150 already running"),
    ("stop stopped", lambda a: a.nodes("srv-px1").lxc(3151).status.stop.post(), 500, "CT 3151 not running"),
    ("shutdown stopped", lambda a: a.nodes("srv-px1").lxc(3151).status.shutdown.post(), 500, "CT 3151 not running"),
    ("reboot stopped", lambda a: a.nodes("srv-px1").lxc(3151).status.reboot.post(), 500, "VM 3151 not running"),
    (
        "destroy running",
        lambda a: a.nodes("srv-px2").lxc(3150).delete(),
        500,
        "unable to destroy CT 3150 - container is running",
    ),
    ("destroy locked", lambda a: a.nodes("srv-px1").lxc(3151).delete(), 500, "CT is locked (backup)"),
    (
        "destroy missing",
        lambda a: a.nodes("srv-px1").lxc(999).delete(),
        500,
        "Configuration file 'nodes/srv-px1/lxc/999.conf' does not exist",
    ),
    (
        "config of a CT on another node",
        lambda a: a.nodes("srv-px1").lxc(3150).config.get(),
        500,
        "Configuration file 'nodes/srv-px1/lxc/3150.conf' does not exist",
    ),
    (
        "status of a missing CT",
        lambda a: a.nodes("srv-px1").lxc(999).status.current.get(),
        500,
        "Configuration file 'nodes/srv-px1/lxc/999.conf' does not exist",
    ),
    (
        "config put on a locked CT",
        lambda a: a.nodes("srv-px1").lxc(3151).config.put(memory=1024),
        500,
        "CT is locked (backup)",
    ),
    ("config put without options", lambda a: a.nodes("srv-px2").lxc(3150).config.put(), 500, "no options specified"),
    (
        "config put stale digest",
        lambda a: a.nodes("srv-px2").lxc(3150).config.put(memory=1024, digest="0" * 40),
        500,
        "detected modified configuration - file changed by other user? Try again.",
    ),
    (
        "config put read-only",
        lambda a: a.nodes("srv-px2").lxc(3150).config.put(unprivileged=0),
        500,
        "unable to modify read-only option: 'unprivileged'",
    ),
    ("create existing vmid", lambda a: create(a, 3150), 500, "CT 3150 already exists on node 'srv-px2'"),
    (
        "create in missing pool",
        lambda a: create(a, pool="nope"),
        403,
        "Permission check failed (pool 'nope' does not exist)",
    ),
    ("create on missing storage", lambda a: create(a, rootfs="nope:4"), 500, "storage 'nope' does not exist"),
    ("create on disabled storage", lambda a: create(a, rootfs="nfs-off:4"), 500, "storage 'nfs-off' is disabled"),
    (
        "create on storage of another node",
        lambda a: create(a, node="srv-px2", rootfs="px1-only:4"),
        500,
        "storage 'px1-only' is not available on node 'srv-px2'",
    ),
    (
        "create with template on missing storage",
        lambda a: create(a, ostemplate="nope:vztmpl/x.tar.zst"),
        500,
        "storage 'nope' does not exist",
    ),
    (
        "migrate running without restart",
        lambda a: a.nodes("srv-px2").lxc(3150).migrate.post(target="srv-px1"),
        500,
        "can't migrate running container without --online or --restart",
    ),
    (
        "migrate to unknown node",
        lambda a: a.nodes("srv-px2").lxc(3150).migrate.post(target="srv-px9", restart=1),
        500,
        "no such cluster node 'srv-px9'",
    ),
    (
        "migrate missing CT",
        lambda a: a.nodes("srv-px1").lxc(999).migrate.post(target="srv-px2"),
        500,
        "Configuration file 'nodes/srv-px1/lxc/999.conf' does not exist",
    ),
    (
        "call on unknown node",
        lambda a: a.nodes("srv-px9").lxc.get(),
        500,
        "hostname lookup 'srv-px9' failed - failed to get address info for: srv-px9: Name or service not known",
    ),
]


@pytest.mark.parametrize(("case", "action", "status", "message"), SYNC_CASES, ids=[c[0] for c in SYNC_CASES])
def test_synchronous_errors(api: Any, case: str, action: Callable[[Any], object], status: int, message: str) -> None:
    error = refused(lambda: action(api))

    assert (error.status_code, error.content) == (status, message)


PARAMETER_CASES: list[tuple[str, Callable[[Any], object], dict[str, str]]] = [
    (
        "create on storage without CT dirs",
        lambda a: create(a, rootfs=None, storage="local"),
        {"storage": "storage 'local' does not support container directories"},
    ),
    (
        "migrate to the local node",
        lambda a: a.nodes("srv-px2").lxc(3150).migrate.post(target="srv-px2"),
        {"target": "target is local node."},
    ),
    (
        "migrate with a bad storage map",
        lambda a: (
            a.nodes("srv-px2").lxc(3150).migrate.post(target="srv-px1", restart=1, **{"target-storage": "1,local-lvm"})
        ),
        {"target-storage": "failed to parse storage map: identity mapping cannot be combined with other mappings\n"},
    ),
    (
        "skiplock by a non-root caller",
        lambda a: a.nodes("srv-px1").lxc(3151).status.start.post(skiplock=1),
        {"skiplock": "Only root may use this option."},
    ),
    ("next id that is taken", lambda a: a.cluster.nextid.get(vmid=3150), {"vmid": "VM 3150 already exists"}),
    (
        "status of an unknown task",
        lambda a: (
            a.nodes("srv-px1").tasks("UPID:srv-px1:00001234:00005678:6650A1B2:vzstart:101:root@pam:").status.get()
        ),
        {"upid": "no such task"},
    ),
    (
        "status of an unparsable UPID",
        lambda a: a.nodes("srv-px1").tasks("UPID:garbage").status.get(),
        {"upid": "unable to parse worker upid"},
    ),
    (
        "config put deleting and setting one option",
        lambda a: a.nodes("srv-px2").lxc(3150).config.put(delete="cores", cores=2),
        {"delete": "you can't use '-cores' and -delete cores' at the same time"},
    ),
]


@pytest.mark.parametrize(("case", "action", "errors"), PARAMETER_CASES, ids=[c[0] for c in PARAMETER_CASES])
def test_parameter_errors(api: Any, case: str, action: Callable[[Any], object], errors: dict[str, str]) -> None:
    error = refused(lambda: action(api))

    assert (error.status_code, error.content, error.errors) == (400, "Parameter verification failed.", errors)


def test_pool_errors(root: Any) -> None:
    duplicate = refused(lambda: root.pools.post(poolid="lab"))
    digit = refused(lambda: root.pools.post(poolid="9lives"))
    root.pools.post(poolid="busy")
    # Pool membership comes from creating a CT into the pool.
    upid = create(root, 202, pool="busy")
    task_result(root, upid)
    not_empty = refused(lambda: root.pools("busy").delete())

    assert (duplicate.status_code, duplicate.content) == (500, "create pool failed: pool 'lab' already exists")
    assert digit.content == "create pool failed: pool name must start with a letter"
    assert not_empty.content == "delete pool failed: pool 'busy' is not empty (contains VM 202)"


def test_offline_node_answers_595_with_an_empty_body(api: Any) -> None:
    error = refused(lambda: api.nodes("srv-px3").status.get())

    assert (error.status_code, error.content) == (595, "No route to host")
    assert error.errors == {"errors": b""}


def test_no_quorum(server: SimTestServer, api: Any) -> None:
    server.cluster.set_node_online("srv-px2", False)

    error = refused(lambda: create(api))

    assert (error.status_code, error.content) == (500, "cluster not ready - no quorum?")


# ================================================================================== inside the task


def test_start_of_a_ct_on_another_node_fails_in_the_task(api: Any) -> None:
    exitstatus, log = task_result(api, api.nodes("srv-px1").lxc(3150).status.start.post())

    assert exitstatus == "Configuration file 'nodes/srv-px1/lxc/3150.conf' does not exist"
    assert log == [f"TASK ERROR: {exitstatus}"]


def test_start_of_a_locked_ct_fails_in_the_task(api: Any) -> None:
    exitstatus, log = task_result(api, api.nodes("srv-px1").lxc(3151).status.start.post())

    assert exitstatus == "CT is locked (backup)"
    assert log[-1] == "TASK ERROR: CT is locked (backup)"


def test_start_of_a_template_fails_in_the_task(api: Any) -> None:
    exitstatus, _ = task_result(api, api.nodes("srv-px1").lxc(3152).status.start.post())

    assert exitstatus == "you can't start a CT if it's a template"


def test_shutdown_that_times_out_fails_in_the_task(pve_sim_server: SimServerFactory) -> None:
    server = pve_sim_server(error_scenario(), time_scale=1.0)
    server.cluster.clock.freeze()
    api = server.proxmox("ctoperator@pve", token="operator")

    # The CT ignores the shutdown: lxc-stop --nokill gives up after 1 s, vm_stop polls 1 + 5 s more.
    server.cluster.set_container_ignores_shutdown(3150)
    upid = api.nodes("srv-px2").lxc(3150).status.shutdown.post(timeout=1)
    server.cluster.advance_clock(7)
    exitstatus, _ = task_result(api, upid)

    assert exitstatus == "container did not stop"
    assert api.nodes("srv-px2").lxc(3150).status.current.get()["status"] == "running"


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"online": 1}, "lxc live migration is currently not implemented"),
        ({"target": "srv-px3", "restart": 1}, "Can't connect to destination address using public key"),
    ],
    ids=["online", "offline target"],
)
def test_migration_failures_abort_with_the_reason_in_the_log(api: Any, params: dict[str, Any], reason: str) -> None:
    fields = {"target": "srv-px1", **params}

    exitstatus, log = task_result(api, api.nodes("srv-px2").lxc(3150).migrate.post(**fields))

    assert exitstatus == "migration aborted"
    assert log[-2].endswith(f" ERROR: migration aborted (duration 00:00:00): {reason}")
    assert log[-1] == "TASK ERROR: migration aborted"
    assert api.nodes("srv-px2").lxc(3150).status.current.get()["status"] == "running"


def test_migration_of_a_locked_ct_aborts(api: Any) -> None:
    exitstatus, log = task_result(api, api.nodes("srv-px1").lxc(3151).migrate.post(target="srv-px2"))

    assert exitstatus == "migration aborted"
    assert log[-2].endswith("migration aborted (duration 00:00:00): CT is locked (backup)")


def test_create_with_a_missing_template_fails_in_the_task(api: Any) -> None:
    exitstatus, log = task_result(api, create(api, ostemplate="local:vztmpl/missing.tar.zst"))

    assert exitstatus == "unable to create CT 201 - can't find file 'local:vztmpl/missing.tar.zst'"
    assert log[-1] == f"TASK ERROR: {exitstatus}"
    assert 201 not in {ct["vmid"] for ct in api.nodes("srv-px1").lxc.get()}


def test_injected_task_failure(server: SimTestServer, api: Any) -> None:
    server.cluster.fail_tasks("vzstop", "unable to stop CT 3150 - got timeout")

    exitstatus, log = task_result(api, api.nodes("srv-px2").lxc(3150).status.stop.post())

    assert exitstatus == "unable to stop CT 3150 - got timeout"
    assert log == ["TASK ERROR: unable to stop CT 3150 - got timeout"]


def test_create_failure_injected_is_wrapped_like_pve(server: SimTestServer, api: Any) -> None:
    server.cluster.fail_tasks("vzcreate", "command 'tar' failed: exit code 2")

    exitstatus, _ = task_result(api, create(api))

    assert exitstatus == "unable to create CT 201 - command 'tar' failed: exit code 2"

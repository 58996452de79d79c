"""The fault matrix: the real operator against pve_sim's fault injection, and how it recovers.

Each scenario sets up the chaos lab (tests/chaos/harness.py: pve_sim with srv-px1, srv-px2 and a
witness node outside the pool, the pool `lab`, the policy `web` with 4 CTs, all ready), injects one
fault, holds it, lifts it, and checks the invariants on pve_sim's own state (as root) until they hold
and both objects say Ready=True; the time from the lift to that moment goes to the recovery table.

The fast subset (``fast=True``) runs in ``make test``; the rest only with ``make chaos``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.chaos.harness import (
    TOKEN_NAME,
    TOKEN_USER,
    ChaosLab,
    Fault,
    RecoveryRecord,
    run_fault,
    start_chaos_lab,
)
from tests.fixtures.kube import KubeCluster

# -- faults ----------------------------------------------------------------------------------------


def _faults(lab: ChaosLab) -> Any:
    return lab.sim.cluster.faults


def _request_faults_used(lab: ChaosLab) -> bool:
    return not _faults(lab).describe()["request_faults"]


def _task_faults_used(lab: ChaosLab) -> bool:
    return not _faults(lab).describe()["task_faults"]


def _clear(lab: ChaosLab) -> None:
    _faults(lab).clear()


def _then_scale(replicas: int, inject: Callable[[ChaosLab], None]) -> Callable[[ChaosLab], None]:
    def both(lab: ChaosLab) -> None:
        inject(lab)
        lab.scale(replicas)

    return both


def _http_500_on_snapshot(lab: ChaosLab) -> None:
    _faults(lab).add_request_fault(
        method="GET", path_regex=r"^/cluster/resources", status=500, message="cluster not ready - no quorum?", count=10
    )


def _http_5xx_on_create(lab: ChaosLab) -> None:
    _faults(lab).add_request_fault(
        method="POST", path_regex=r"^/nodes/[^/]+/lxc$", status=596, message="Connection timed out", count=3,
        empty_body=True,
    )


def _http_500_on_config_and_delete(lab: ChaosLab) -> None:
    faults = _faults(lab)
    faults.add_request_fault(
        method="GET", path_regex=r"^/nodes/[^/]+/lxc/\d+/config$", status=500, message="got timeout", count=4
    )
    faults.add_request_fault(
        method="DELETE", path_regex=r"^/nodes/[^/]+/lxc/\d+$", status=500,
        message="can't lock file '/run/lock/lxc/pve-config.lock' - got timeout", count=2,
    )


def _create_answer_lost(lab: ChaosLab) -> None:
    # Creations are carried out, but only after the operator's 20 s read timeout: the answer is lost.
    _faults(lab).set_latency(25.0, path_regex=r"^/nodes/[^/]+/lxc$")


def _api_hangs(lab: ChaosLab) -> None:
    _faults(lab).set_latency(600.0)


def _vzcreate_fails(lab: ChaosLab) -> None:
    _faults(lab).add_task_failure("vzcreate", "injected: unable to create CT - lvcreate failed", count=2)


def _vzstart_fails(lab: ChaosLab) -> None:
    _faults(lab).add_task_failure("vzstart", "startup for container failed", count=3)


def _node_offline(lab: ChaosLab) -> None:
    lab.sim.cluster.set_node_online("srv-px1", False)


def _node_online(lab: ChaosLab) -> None:
    lab.sim.cluster.set_node_online("srv-px1", True)


def _mid_create(replicas: int, inject: Callable[[ChaosLab], None]) -> Callable[[ChaosLab], None]:
    """Scale up, wait until pve_sim has a creation under way (a CT locked `create`), then inject."""

    def scaled_then(lab: ChaosLab) -> None:
        lab.scale(replicas)
        deadline = time.monotonic() + 60
        while not any(ct.get("lock") == "create" for ct in lab.observe().in_range):
            assert time.monotonic() < deadline, "no creation under way within 60 s"
            time.sleep(0.2)
        inject(lab)

    return scaled_then


def _kill_operator(lab: ChaosLab) -> None:
    lab.operator.kill()


def _task_status_hangs(lab: ChaosLab) -> None:
    _faults(lab).set_latency(600.0, path_regex=r"^/nodes/[^/]+/tasks/[^/]+/status$")


def _kill_mid_delete(lab: ChaosLab) -> None:
    lab.scale(3)
    deadline = time.monotonic() + 60
    while not any(
        ct["vmid"] >= 3103 and (ct.get("status") != "running" or ct.get("lock")) for ct in lab.observe().in_range
    ) and len(lab.observe().in_range) == 6:
        assert time.monotonic() < deadline, "no deletion under way within 60 s"
        time.sleep(0.1)
    lab.operator.kill()


def _restart_operator(lab: ChaosLab) -> None:
    lab.operator.start()


def _token_user(lab: ChaosLab) -> Any:
    return lab.sim.cluster.access.users[TOKEN_USER]


def _revoke_token(lab: ChaosLab) -> None:
    lab.stash["revoked"] = _token_user(lab).tokens.pop(TOKEN_NAME)


def _restore_token(lab: ChaosLab) -> None:
    _token_user(lab).tokens[TOKEN_NAME] = lab.stash.pop("revoked")


def _rotate_token(lab: ChaosLab) -> None:
    """The PVE admin issues a new secret for the token and puts it into the Secret."""
    new_secret = "7a1e9c3d-5b2f-4e6a-8d0c-1f3b5d7e9a2c"
    revoked = lab.stash.pop("revoked")
    lab.sim.cluster.access.add_token(TOKEN_USER, TOKEN_NAME, new_secret, privsep=revoked.privsep)
    lab.set_token_secret(new_secret)


def _pool_said(reason: str) -> Callable[[ChaosLab], bool]:
    return lambda lab: lab.conditions()["pool"].get("Ready", {}).get("reason") == reason


def _proxy(mode: str) -> Callable[[ChaosLab], None]:
    def switch(lab: ChaosLab) -> None:
        assert lab.proxy is not None
        lab.proxy.set_mode(mode)  # type: ignore[arg-type]

    return switch


FAULTS = [
    # -- fast subset (make test)
    Fault(
        "http500-snapshot",
        "500 no quorum on GET /cluster/resources x10, scale 4->6",
        _then_scale(6, _http_500_on_snapshot),
        _clear,
        hold_s=40,
        done=_request_faults_used,
        fast=True,
    ),
    Fault(
        "sigkill-mid-create",
        "operator SIGKILLed mid-create (4->7), down 3 s",
        _mid_create(7, _kill_operator),
        _restart_operator,
        hold_s=3,
        fast=True,
    ),
    Fault(
        "vzstart-fails",
        "task vzstart fails x3, scale 4->6",
        _then_scale(6, _vzstart_fails),
        _clear,
        hold_s=40,
        done=_task_faults_used,
        fast=True,
    ),
    # -- full matrix (make chaos)
    Fault(
        "http596-create",
        "596 empty body on POST /nodes/*/lxc x3, scale 4->6",
        _then_scale(6, _http_5xx_on_create),
        _clear,
        hold_s=40,
        done=_request_faults_used,
    ),
    Fault(
        "http500-config-delete",
        "500 on GET lxc config x4 + DELETE x2, scale 6->3",
        _then_scale(3, _http_500_on_config_and_delete),
        _clear,
        hold_s=40,
        done=_request_faults_used,
        replicas=6,
    ),
    Fault(
        "create-answer-lost",
        "POST /nodes/*/lxc answered after 25 s (> read timeout), scale 4->6, 30 s",
        _then_scale(6, _create_answer_lost),
        _clear,
        hold_s=30,
    ),
    Fault(
        "vzcreate-fails",
        "task vzcreate fails x2, scale 4->6",
        _then_scale(6, _vzcreate_fails),
        _clear,
        hold_s=40,
        done=_task_faults_used,
    ),
    Fault(
        "api-hung",
        "every request hangs (latency 600 s) for 25 s",
        _api_hangs,
        _clear,
        hold_s=25,
    ),
    Fault(
        "node-offline",
        "srv-px1 offline 20 s (its CTs stop), scale 4->6",
        _then_scale(6, _node_offline),
        _node_online,
        hold_s=20,
    ),
    Fault(
        "sigkill-mid-delete",
        "operator SIGKILLed mid-delete (6->3), down 3 s",
        _kill_mid_delete,
        _restart_operator,
        hold_s=3,
        replicas=6,
    ),
    Fault(
        "token-revoked",
        "API token revoked until the pool says so, then restored",
        _revoke_token,
        _restore_token,
        hold_s=40,
        done=_pool_said("AuthenticationFailed"),
        min_hold_s=5,
    ),
    Fault(
        "token-rotated",
        "API token revoked, then a new secret issued and put in the Secret",
        _revoke_token,
        _rotate_token,
        hold_s=40,
        done=_pool_said("AuthenticationFailed"),
        min_hold_s=5,
    ),
    Fault(
        "pve-restart",
        "pve_sim API down 10 s, back on the same port (same state, new CA)",
        lambda lab: lab.stop_sim(),
        lambda lab: lab.restart_sim(),
        hold_s=10,
    ),
    Fault(
        "pve-restart-mid-create",
        "pve_sim API down 8 s mid-create (4->7), back on the same port",
        _mid_create(7, lambda lab: lab.stop_sim()),
        lambda lab: lab.restart_sim(),
        hold_s=8,
    ),
    Fault(
        "task-status-hung",
        "GET task status hangs (latency 600 s) for 30 s, scale 4->6",
        _then_scale(6, _task_status_hangs),
        _clear,
        hold_s=30,
    ),
    Fault(
        "conn-refused",
        "connections reset at once (proxy) for 20 s",
        _proxy("refuse"),
        _proxy("forward"),
        hold_s=20,
        via_proxy=True,
    ),
    Fault(
        "blackhole",
        "connections accepted, never answered (proxy) for 25 s",
        _proxy("blackhole"),
        _proxy("forward"),
        hold_s=25,
        via_proxy=True,
    ),
    Fault(
        "blackhole-mid-create",
        "connections black-holed (proxy) mid-create (4->7) for 25 s",
        _mid_create(7, _proxy("blackhole")),
        _proxy("forward"),
        hold_s=25,
        via_proxy=True,
    ),
]


def _param(fault: Fault) -> Any:
    marks: list[Any] = [pytest.mark.chaos, pytest.mark.kube, pytest.mark.slow]
    if not fault.fast:
        marks.append(pytest.mark.chaos_full)
    if fault.xfail:
        marks.append(pytest.mark.xfail(strict=True, reason=fault.xfail))
    return pytest.param(fault, id=fault.id, marks=marks)


@pytest.mark.parametrize("fault", [_param(f) for f in FAULTS])
def test_recovers_from(
    fault: Fault,
    kube: KubeCluster,
    kube_namespace: str,
    installed_crds: Any,
    pve_sim_server: Any,
    pve_operator_process: Any,
    chaos_records: list[RecoveryRecord],
) -> None:
    lab = start_chaos_lab(
        kube,
        kube_namespace,
        pve_sim_server,
        pve_operator_process,
        replicas=fault.replicas,
        via_proxy=fault.via_proxy,
        operator_env=fault.operator_env,
    )
    record = RecoveryRecord(fault.label)
    chaos_records.append(record)
    try:
        run_fault(lab, fault, record)
    except BaseException:
        if record.outcome in ("running", "ok"):
            record.outcome = "FAILED"
        if fault.xfail:
            record.outcome = "xfail (known defect)"
        raise
    finally:
        if lab.proxy is not None:
            lab.proxy.stop()
        for server in lab.extra_servers:
            server.stop()
